//! The life of a hold: pay, decline, cancel, read, list, each transition with its
//! timestamps and counts, and every refusal on the way.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    TestApp, assert_error, id_of, new_fingerprint, spawn_app, spawn_app_with, timestamp,
};

/// A fresh event and one `reserved` hold on it: (event id, allocation id, holder).
async fn event_with_hold(app: &TestApp, total: i64, quantity: i64) -> (String, String, String) {
    app.event_with_hold(&format!("Show {}", Uuid::new_v4()), total, quantity)
        .await
}

/// Asserts that the holder can neither pay for nor cancel a hold in `status`.
async fn assert_pay_and_cancel_refused(app: &TestApp, id: &str, holder: &str, status: &str) {
    let (code, body) = app.pay(id, holder, Some("tok_visa")).await;
    assert_error(code, &body, StatusCode::CONFLICT, "INVALID_STATUS");
    assert_eq!(body["status"], status, "{body}");
    let (code, body) = app.cancel(id, holder).await;
    assert_error(code, &body, StatusCode::CONFLICT, "INVALID_STATUS");
    assert_eq!(body["status"], status, "{body}");
}

fn is_confirmation_code(code: &str) -> bool {
    let bytes = code.as_bytes();
    code.len() == 12
        && code.starts_with("BX-")
        && bytes[7] == b'-'
        && code[3..7]
            .chars()
            .chain(code[8..].chars())
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
}

#[tokio::test]
async fn payment_moves_the_hold_to_purchased_with_every_timestamp() {
    let app = spawn_app().await;
    let (event_id, id, holder) = event_with_hold(&app, 10, 2).await;
    let reserved = app.allocation_row(&id).await;
    assert_eq!(reserved.status, "reserved");
    assert_eq!(reserved.reserved_at, reserved.created_at);
    assert!(reserved.payment_pending_at.is_none());
    assert!(reserved.purchased_at.is_none());
    assert!(reserved.cancelled_at.is_none());
    assert!(reserved.expired_at.is_none());
    assert!(reserved.payment_reference.is_none());
    assert!(reserved.confirmation_code.is_none());
    assert_eq!(app.counts(&event_id).await, (8, 2, 0));

    let (status, paid) = app.pay(&id, &holder, Some("tok_visa")).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["id"], id.as_str());
    assert_eq!(paid["status"], "purchased");
    assert_eq!(paid["quantity"], 2);
    let code = paid["confirmationCode"].as_str().unwrap_or_default();
    assert!(is_confirmation_code(code), "confirmation code {code:?}");
    assert_eq!(timestamp(&paid["expiresAt"]), reserved.expires_at);
    assert!(
        paid.as_object()
            .unwrap()
            .keys()
            .all(|key| !key.to_ascii_lowercase().contains("fingerprint")
                && key != "paymentReference"),
        "{paid}"
    );

    let row = app.allocation_row(&id).await;
    assert_eq!(row.status, "purchased");
    assert_eq!(row.reserved_at, reserved.reserved_at);
    let pending_at = row.payment_pending_at.expect("payment_pending_at recorded");
    let purchased_at = row.purchased_at.expect("purchased_at recorded");
    assert!(reserved.reserved_at <= pending_at && pending_at <= purchased_at);
    assert_eq!(timestamp(&paid["purchasedAt"]), purchased_at);
    assert_eq!(row.confirmation_code.as_deref(), Some(code));
    assert!(row.cancelled_at.is_none() && row.expired_at.is_none());
    assert!(row.updated_at >= purchased_at);
    let reference = row.payment_reference.clone().expect("payment reference");
    assert_eq!(
        app.charge_outcome(&reference).await.as_deref(),
        Some("charged")
    );
    assert_eq!(app.counts(&event_id).await, (8, 0, 2));
    app.assert_balanced(&event_id).await;

    // The holder reads the same purchase back.
    let (status, read) = app.ticket(&id, &holder).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["status"], "purchased");
    assert_eq!(read["confirmationCode"], code);
    assert_eq!(timestamp(&read["purchasedAt"]), purchased_at);

    // No token pays with the default test card.
    let (status, hold) = app.purchase(&event_id, 1, &holder).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, paid) = app.pay(&id_of(&hold), &holder, None).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["status"], "purchased");
    assert_ne!(paid["confirmationCode"], code);
    assert_eq!(app.counts(&event_id).await, (7, 0, 3));
}

#[tokio::test]
async fn a_purchased_hold_cannot_be_paid_or_cancelled_again() {
    let app = spawn_app().await;
    let (event_id, id, holder) = event_with_hold(&app, 10, 2).await;
    let (status, _) = app.pay(&id, &holder, Some("tok_visa")).await;
    assert_eq!(status, StatusCode::OK);
    let before = app.allocation_row(&id).await;

    assert_pay_and_cancel_refused(&app, &id, &holder, "purchased").await;

    assert_eq!(app.allocation_row(&id).await, before);
    assert_eq!(app.counts(&event_id).await, (8, 0, 2));
    let charges = app.row_count("payment_charges").await;
    assert_eq!(charges, 1, "a refused second payment charges nothing");
}

#[tokio::test]
async fn a_declined_payment_returns_the_hold_to_reserved_with_its_expiry() {
    let app = spawn_app().await;
    let (event_id, id, holder) = event_with_hold(&app, 10, 3).await;
    let reserved = app.allocation_row(&id).await;

    let (status, body) = app.pay(&id, &holder, Some("tok_chargeDeclined")).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYMENT_REQUIRED,
        "PAYMENT_DECLINED",
    );
    let declined = app.allocation_row(&id).await;
    assert_eq!(declined.status, "reserved");
    assert_eq!(
        declined.expires_at, reserved.expires_at,
        "original expiry kept"
    );
    assert!(
        declined.payment_pending_at.is_some(),
        "the attempt is recorded"
    );
    assert!(declined.purchased_at.is_none() && declined.confirmation_code.is_none());
    assert!(declined.updated_at > reserved.updated_at);
    let declined_reference = declined.payment_reference.clone().expect("reference");
    assert_eq!(
        app.charge_outcome(&declined_reference).await.as_deref(),
        Some("declined")
    );
    assert_eq!(app.counts(&event_id).await, (7, 3, 0));
    let (status, read) = app.ticket(&id, &holder).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["status"], "reserved");
    assert_eq!(timestamp(&read["expiresAt"]), reserved.expires_at);
    assert!(read.get("purchasedAt").is_none() && read.get("confirmationCode").is_none());

    // Declined again, then paid with a good card.
    let (status, body) = app.pay(&id, &holder, Some("tok_chargeDeclined")).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYMENT_REQUIRED,
        "PAYMENT_DECLINED",
    );
    let (status, paid) = app.pay(&id, &holder, Some("tok_visa")).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["status"], "purchased");
    assert_eq!(timestamp(&paid["expiresAt"]), reserved.expires_at);
    let row = app.allocation_row(&id).await;
    assert_ne!(
        row.payment_reference.as_deref(),
        Some(declined_reference.as_str()),
        "each attempt has its own reference"
    );
    assert_eq!(app.counts(&event_id).await, (7, 0, 3));
    app.assert_balanced(&event_id).await;
}

#[tokio::test]
async fn cancel_returns_the_tickets_and_is_final() {
    let app = spawn_app().await;
    let (event_id, id, holder) = event_with_hold(&app, 10, 3).await;
    assert_eq!(app.counts(&event_id).await, (7, 3, 0));

    let (status, cancelled) = app.cancel(&id, &holder).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["id"], id.as_str());
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled.get("purchasedAt").is_none());
    assert!(cancelled.get("confirmationCode").is_none());
    let row = app.allocation_row(&id).await;
    assert_eq!(row.status, "cancelled");
    let cancelled_at = row.cancelled_at.expect("cancelled_at recorded");
    assert!(cancelled_at >= row.reserved_at);
    assert!(row.payment_pending_at.is_none() && row.purchased_at.is_none());
    assert!(row.expired_at.is_none());
    assert_eq!(app.counts(&event_id).await, (10, 0, 0));

    let (status, body) = app.cancel(&id, &holder).await;
    assert_error(status, &body, StatusCode::CONFLICT, "INVALID_STATUS");
    assert_eq!(body["status"], "cancelled", "{body}");
    let (status, body) = app.pay(&id, &holder, Some("tok_visa")).await;
    assert_error(status, &body, StatusCode::CONFLICT, "INVALID_STATUS");
    assert_eq!(body["status"], "cancelled", "{body}");
    assert_eq!(
        app.allocation_row(&id).await,
        row,
        "refusals change nothing"
    );
    assert_eq!(
        app.counts(&event_id).await,
        (10, 0, 0),
        "tickets returned once"
    );
    let (status, read) = app.ticket(&id, &holder).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["status"], "cancelled");
    app.assert_balanced(&event_id).await;
}

#[tokio::test]
async fn another_fingerprint_may_not_read_pay_or_cancel() {
    let app = spawn_app().await;
    let (event_id, id, holder) = event_with_hold(&app, 10, 2).await;
    let before = app.allocation_row(&id).await;
    let stranger = new_fingerprint();

    let (status, body) = app.ticket(&id, &stranger).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");
    assert!(body.get("status").is_none() && body.get("quantity").is_none());
    let (status, body) = app.pay(&id, &stranger, Some("tok_visa")).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");
    let (status, body) = app.cancel(&id, &stranger).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");
    // No fingerprint at all is a derived identity, also not the holder.
    let (status, body) = app
        .send(
            app.request(Method::POST, &format!("/tickets/{id}/payment"))
                .json(&json!({})),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");
    let (status, body) = app
        .send(app.request(Method::DELETE, &format!("/tickets/{id}/payment")))
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");

    assert_eq!(app.allocation_row(&id).await, before, "nothing changed");
    assert_eq!(app.counts(&event_id).await, (8, 2, 0));
    let charges = app.row_count("payment_charges").await;
    assert_eq!(
        charges, 0,
        "a stranger's payment never reaches the provider"
    );

    // The holder is unaffected, and a purchased hold stays private too.
    let (status, _) = app.pay(&id, &holder, Some("tok_visa")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.ticket(&id, &stranger).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");
    assert!(!body.to_string().contains("BX-"), "{body}");
    let (status, body) = app.cancel(&id, &stranger).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");
    assert_eq!(app.counts(&event_id).await, (8, 0, 2));
}

#[tokio::test]
async fn a_payment_in_progress_refuses_pay_and_cancel_and_is_left_alone() {
    // A fast sweeper with the default recovery delay: an in-flight payment is not settled.
    let app = spawn_app_with(&["--sweep-interval-ms", "20"]).await;
    let (event_id, id, holder) = event_with_hold(&app, 10, 2).await;
    sqlx::query(
        "UPDATE ticket_allocations SET status = 'payment_pending', payment_pending_at = now(), \
         payment_reference = 'pay_in_flight', updated_at = now() WHERE id = $1",
    )
    .bind(Uuid::parse_str(&id).unwrap())
    .execute(&app.pool)
    .await
    .unwrap();
    let pending = app.allocation_row(&id).await;

    assert_pay_and_cancel_refused(&app, &id, &holder, "payment_pending").await;

    // Many sweeps later it is still waiting for its own payment request.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.allocation_row(&id).await, pending);
    assert_eq!(app.charge_outcome("pay_in_flight").await, None);
    assert_eq!(app.counts(&event_id).await, (8, 2, 0));
}

#[tokio::test]
async fn the_list_shows_only_the_callers_allocations_newest_first() {
    let app = spawn_app().await;
    let first = app.create_event("First show", 10, None).await;
    let second = app.create_event("Second show", 10, None).await;
    let (alice, bob) = (new_fingerprint(), new_fingerprint());

    let mut alice_ids = Vec::new();
    for (event, quantity) in [(&first, 1), (&second, 2), (&first, 3)] {
        let (status, hold) = app
            .purchase(event["id"].as_str().unwrap(), quantity, &alice)
            .await;
        assert_eq!(status, StatusCode::CREATED);
        alice_ids.push(id_of(&hold));
        let (status, _) = app.purchase(event["id"].as_str().unwrap(), 1, &bob).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, _) = app.cancel(&alice_ids[1], &alice).await;
    assert_eq!(status, StatusCode::OK);

    let list = |fingerprint: String, query: &'static str| {
        let app = &app;
        async move {
            app.send(
                app.request(Method::GET, &format!("/tickets{query}"))
                    .header("X-Device-Fingerprint", fingerprint),
            )
            .await
        }
    };
    let ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap_or_else(|| panic!("data in {page}"))
            .iter()
            .map(id_of)
            .collect()
    };

    let (status, page) = list(alice.clone(), "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let newest_first: Vec<String> = alice_ids.iter().rev().cloned().collect();
    assert_eq!(ids(&page), newest_first);
    assert_eq!(
        page["meta"],
        json!({"total": 3, "page": 1, "limit": 10, "pages": 1})
    );
    assert_eq!(page["data"][1]["status"], "cancelled");
    assert_eq!(page["data"][0]["quantity"], 3);
    assert!(
        !page
            .to_string()
            .to_ascii_lowercase()
            .contains("fingerprint")
    );

    let (status, page) = list(alice.clone(), "?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), newest_first[..2]);
    assert_eq!(
        page["meta"],
        json!({"total": 3, "page": 1, "limit": 2, "pages": 2})
    );
    let (status, page) = list(alice.clone(), "?page=2&limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), newest_first[2..]);

    let (status, page) = list(bob, "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["meta"]["total"], 3);
    assert!(ids(&page).iter().all(|id| !alice_ids.contains(id)));

    let (status, page) = list(new_fingerprint(), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        page,
        json!({"data": [], "meta": {"total": 0, "page": 1, "limit": 10, "pages": 0}})
    );

    let (status, body) = list(alice, "?limit=0").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

#[tokio::test]
async fn unknown_and_malformed_allocation_ids() {
    let app = spawn_app().await;
    let buyer = new_fingerprint();
    let unknown = Uuid::new_v4().to_string();
    let (status, body) = app.ticket(&unknown, &buyer).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, body) = app.pay(&unknown, &buyer, Some("tok_visa")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, body) = app.cancel(&unknown, &buyer).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");

    let (status, body) = app.ticket("nope", &buyer).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let (status, body) = app.pay("nope", &buyer, None).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let (status, body) = app.cancel("nope", &buyer).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let charges = app.row_count("payment_charges").await;
    assert_eq!(charges, 0);
}
