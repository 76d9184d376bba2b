//! Money through HTTP: each order is charged exactly once for exactly its total; refunds,
//! full and partial, give back no more than was taken, never a ticket twice, and return
//! their tickets to the event's and their quotas' pools.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::helpers::{TestApp, assert_error, id_of, new_fingerprint, spawn_app_with};

const ADMIN: &str = "refund-organiser";

/// An app with an admin token whose sweeper never runs by itself, and payment recovery
/// after one second (the tests run `sweep_once` when they want recovery).
async fn app() -> TestApp {
    spawn_app_with(&[
        "--admin-token",
        ADMIN,
        "--payment-recovery-seconds",
        "1",
        "--sweep-interval-ms",
        "3600000",
    ])
    .await
}

async fn admin_post(app: &TestApp, path: &str, body: Value) -> (StatusCode, Value) {
    app.send(
        app.request(Method::POST, path)
            .header("Authorization", format!("Bearer {ADMIN}"))
            .json(&body),
    )
    .await
}

/// An event of `total` tickets in `currency`, its default type at `price`, and a second type
/// "B" at `b_price` in a quota "Q" of `quota` tickets: (event id, default type, type B,
/// quota id).
async fn priced_event(
    app: &TestApp,
    total: i64,
    currency: &str,
    price: i64,
    b_price: i64,
    quota: i64,
) -> (String, String, String, String) {
    let (status, event) = admin_post(
        app,
        "/events",
        json!({"name": format!("Priced {}", new_fingerprint()), "date": "2027-06-01T19:00:00Z",
               "totalTickets": total, "currency": currency, "price": price}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    let event_id = id_of(&event);
    let default_type = event["ticketTypes"][0]["id"].as_str().unwrap().to_owned();
    let (status, b) = admin_post(
        app,
        &format!("/events/{event_id}/ticket-types"),
        json!({"name": "B", "price": b_price}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    let b = id_of(&b);
    let (status, q) = admin_post(
        app,
        &format!("/events/{event_id}/quotas"),
        json!({"name": "Q", "size": quota, "ticketTypeIds": [b]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{q}");
    (event_id, default_type, b, id_of(&q))
}

/// Buys `lines` ((type, quantity)) for a new buyer and pays with `token`: (allocation, buyer).
async fn bought(
    app: &TestApp,
    event_id: &str,
    lines: &[(&str, i64)],
    token: Option<&str>,
) -> (Value, String) {
    let buyer = new_fingerprint();
    let lines: Vec<Value> = lines
        .iter()
        .map(|(t, q)| json!({"ticketTypeId": t, "quantity": q}))
        .collect();
    let (status, hold) = app
        .send(
            app.request(Method::POST, &format!("/events/{event_id}/tickets"))
                .header("X-Device-Fingerprint", &buyer)
                .json(&json!({ "lines": lines })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (status, paid) = app.pay(&id_of(&hold), &buyer, token).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    (paid, buyer)
}

async fn refund(app: &TestApp, id: &str, body: Value) -> (StatusCode, Value) {
    admin_post(app, &format!("/tickets/{id}/refund"), body).await
}

/// Ledger rows of the allocation's charges: (outcome, amount, currency).
async fn charges(app: &TestApp, allocation: &str) -> Vec<(String, Option<i64>, Option<String>)> {
    let prefix = format!("pay_{}_", allocation.replace('-', ""));
    sqlx::query_as(
        "SELECT outcome, amount, currency FROM payment_charges \
         WHERE starts_with(reference, $1) ORDER BY created_at",
    )
    .bind(prefix)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Money the provider gave back for the allocation's charge.
async fn refunded_by_provider(app: &TestApp, allocation: &str) -> i64 {
    let prefix = format!("pay_{}_", allocation.replace('-', ""));
    sqlx::query_scalar(
        "SELECT coalesce(sum(r.amount), 0)::bigint FROM payment_refunds r \
         WHERE starts_with(r.charge_reference, $1) AND r.outcome = 'refunded'",
    )
    .bind(prefix)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Refund rows by status, and what the provider refused: (status, count), refused as
/// "provider_refused".
async fn refund_rows(app: &TestApp) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT status, count(*) FROM refunds GROUP BY status \
         UNION ALL SELECT 'provider_refused', count(*) FROM payment_refunds \
             WHERE outcome = 'refused' HAVING count(*) > 0 \
         ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// (available, reserved, purchased) of the quota.
async fn quota_counts(app: &TestApp, quota: &str) -> (i32, i32, i32) {
    sqlx::query_as(
        "SELECT available_tickets, reserved_tickets, purchased_tickets FROM quotas WHERE id = $1",
    )
    .bind(uuid::Uuid::parse_str(quota).unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn each_order_is_charged_once_for_exactly_its_total_and_a_free_one_not_at_all() {
    let app = app().await;
    let (event_id, ga, b, _) = priced_event(&app, 100, "JPY", 1_500, 999, 50).await;

    let (paid, buyer) = bought(&app, &event_id, &[(&ga, 2), (&b, 3)], None).await;
    let total = 2 * 1_500 + 3 * 999;
    assert_eq!(paid["total"], total, "{paid}");
    assert_eq!(paid["currency"], "JPY");
    let id = id_of(&paid);
    assert_eq!(
        charges(&app, &id).await,
        [("charged".to_owned(), Some(total), Some("JPY".to_owned()))]
    );
    // Paying again takes nothing more.
    let (status, body) = app.pay(&id, &buyer, None).await;
    assert_error(status, &body, StatusCode::CONFLICT, "INVALID_STATUS");
    assert_eq!(charges(&app, &id).await.len(), 1);

    // A declined card, then a good one: one decline and one charge of the total.
    let buyer = new_fingerprint();
    let (status, hold) = app
        .send(
            app.request(Method::POST, &format!("/events/{event_id}/tickets"))
                .header("X-Device-Fingerprint", &buyer)
                .json(&json!({"ticketTypeId": b, "quantity": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let id = id_of(&hold);
    let (status, body) = app.pay(&id, &buyer, Some("tok_chargeDeclined")).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYMENT_REQUIRED,
        "PAYMENT_DECLINED",
    );
    let (status, body) = app.pay(&id, &buyer, Some("tok_visa")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ledger = charges(&app, &id).await;
    let charged: Vec<_> = ledger.iter().filter(|c| c.0 == "charged").collect();
    assert_eq!(
        charged,
        [&("charged".to_owned(), Some(999), Some("JPY".to_owned()))]
    );

    // A free order is purchased without a word to the provider.
    let (status, free) = admin_post(
        &app,
        "/events",
        json!({"name": "Free", "date": "2027-06-01T19:00:00Z", "totalTickets": 5}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{free}");
    let (status, hold) = app.purchase(&id_of(&free), 2, &buyer).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    assert_eq!(hold["total"], 0);
    let (status, paid) = app
        .pay(&id_of(&hold), &buyer, Some("tok_chargeDeclined"))
        .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["status"], "purchased");
    assert!(charges(&app, &id_of(&hold)).await.is_empty());
}

#[tokio::test]
async fn partial_then_full_refunds_give_back_tickets_and_money_once() {
    let app = app().await;
    let (event_id, ga, b, quota) = priced_event(&app, 20, "EUR", 2_000, 500, 10).await;
    let (paid, _) = bought(&app, &event_id, &[(&ga, 2), (&b, 4)], None).await;
    let id = id_of(&paid);
    let total = 2 * 2_000 + 4 * 500;
    assert_eq!(quota_counts(&app, &quota).await, (6, 0, 4));

    // Partial: one of B.
    let (status, partial) = refund(
        &app,
        &id,
        json!({"lines": [{"ticketTypeId": b, "quantity": 1}], "reason": "cannot come"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{partial}");
    assert_eq!(partial["status"], "purchased", "{partial}");
    assert_eq!(partial["refundedAmount"], 500);
    let b_line = partial["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ticketTypeId"] == b.as_str())
        .unwrap()
        .clone();
    assert_eq!(b_line["refundedQuantity"], 1, "{partial}");
    assert_eq!(partial["refunds"].as_array().unwrap().len(), 1);
    assert_eq!(partial["refunds"][0]["amount"], 500);
    assert_eq!(partial["refunds"][0]["reason"], "cannot come");
    assert_eq!(partial["refunds"][0]["lines"][0]["quantity"], 1);
    assert_eq!(quota_counts(&app, &quota).await, (7, 0, 3));
    let event = app.assert_balanced(&event_id).await;
    assert_eq!(
        (
            event["availableTickets"].as_i64(),
            event["purchasedTickets"].as_i64()
        ),
        (Some(15), Some(5))
    );

    // More of B than is left: refused, nothing moves.
    let (status, body) = refund(
        &app,
        &id,
        json!({"lines": [{"ticketTypeId": b, "quantity": 4}]}),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "REFUND_EXCEEDS_PURCHASE",
    );
    assert_eq!(body["refundable"], 3, "{body}");
    assert_eq!(body["ticketTypeId"], b.as_str());

    // Everything left, without lines, with a reason of nothing that shows: no reason, as a
    // blank one.
    let (status, full) = refund(&app, &id, json!({"reason": " \u{200b}\u{ad} "})).await;
    assert_eq!(status, StatusCode::OK, "{full}");
    assert_eq!(full["status"], "refunded", "{full}");
    assert_eq!(full["refunds"][1]["reason"], Value::Null, "{full}");
    assert_eq!(full["refundedAmount"], total);
    assert!(full["refundedAt"].is_string(), "{full}");
    assert_eq!(quota_counts(&app, &quota).await, (10, 0, 0));
    let event = app.assert_balanced(&event_id).await;
    assert_eq!(event["availableTickets"], 20);
    assert_eq!(refunded_by_provider(&app, &id).await, total);

    // Nothing is left: refused as a refund beyond the purchase, or as the wrong status.
    let (status, body) = refund(&app, &id, json!({})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "INVALID_STATUS");
    assert_eq!(body["status"], "refunded");
}

#[tokio::test]
async fn only_purchases_are_refunded_and_only_with_the_admin_token() {
    let app = app().await;
    let (event_id, ga, _, _) = priced_event(&app, 10, "EUR", 100, 100, 5).await;
    let buyer = new_fingerprint();
    let (status, hold) = app.purchase(&event_id, 1, &buyer).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (status, body) = refund(&app, &id_of(&hold), json!({})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "INVALID_STATUS");
    assert_eq!(body["status"], "reserved");

    let (paid, _) = bought(&app, &event_id, &[(&ga, 1)], None).await;
    let path = format!("/tickets/{}/refund", id_of(&paid));
    let (status, body) = app.post_json(&path, json!({})).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let (status, body) = app
        .send(
            app.request(Method::POST, &path)
                .header("Authorization", "Bearer wrong")
                .json(&json!({})),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, body) = refund(
        &app,
        &id_of(&paid),
        json!({"lines": [{"ticketTypeId": uuid::Uuid::nil(), "quantity": 1}]}),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(body["details"][0]["field"], "lines[0].ticketTypeId");
    // `"lines": null` is no refund of everything: a client that meant some tickets and sent
    // none is refused, and nothing is refunded.
    let (status, body) = refund(&app, &id_of(&paid), json!({"lines": null})).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(body["details"][0]["field"], "lines", "{body}");
    // A line is an object: serde would also build one from an array of its fields in order,
    // `[typeId, quantity]`, a shape no document names, and refund it.
    let type_id = paid["lines"][0]["ticketTypeId"].clone();
    for lines in [json!([[type_id, 1]]), json!([[type_id, 1, "x"]])] {
        let (status, body) = refund(&app, &id_of(&paid), json!({ "lines": lines })).await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        assert_eq!(body["details"][0]["field"], "lines[0]", "{lines}: {body}");
        assert_eq!(
            body["details"][0]["message"], "invalid type: sequence, expected a JSON object",
            "{lines}: {body}"
        );
    }
    assert_eq!(refund_rows(&app).await, Vec::new());
    let (status, body) = refund(&app, &uuid::Uuid::nil().to_string(), json!({})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    // The token is checked before the path's id: without the right one, a malformed id is
    // refused as any other, and only the organiser hears that it is malformed.
    let malformed = "/tickets/not-a-uuid/refund";
    let (status, body) = app.post_json(malformed, json!({})).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let (status, body) = app
        .send(
            app.request(Method::POST, malformed)
                .header("Authorization", "Bearer wrong")
                .json(&json!({})),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, body) = refund(&app, "not-a-uuid", json!({})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");

    // A server without an admin token refuses refunds, and says how to configure one.
    let open = crate::helpers::spawn_app().await;
    let (status, body) = open.post_json(&path, json!({})).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert!(
        body["error"].as_str().unwrap().contains("--admin-token"),
        "{body}"
    );
}

#[tokio::test]
async fn a_free_order_is_refunded_without_the_provider() {
    let app = app().await;
    let (event_id, ga, _, _) = priced_event(&app, 10, "EUR", 0, 0, 5).await;
    let (paid, _) = bought(&app, &event_id, &[(&ga, 3)], None).await;
    assert_eq!(paid["total"], 0);
    let (status, refunded) = refund(&app, &id_of(&paid), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    assert_eq!(refunded["status"], "refunded");
    assert_eq!(refunded["refundedAmount"], 0);
    assert_eq!(app.row_count("payment_refunds").await, 0);
    assert_eq!(app.assert_balanced(&event_id).await["availableTickets"], 10);
}

/// Ten refunds of one order at once, each asking for everything: exactly one gives anything
/// back; the order is refunded once, the provider gives back its total once, and the pools
/// get its tickets once. (With partial asks for one ticket each, as many succeed as there
/// are tickets.)
#[tokio::test]
async fn parallel_refunds_of_one_order_never_give_back_a_ticket_twice() {
    let app = app().await;
    let (event_id, ga, b, quota) = priced_event(&app, 30, "EUR", 700, 300, 10).await;
    let (paid, _) = bought(&app, &event_id, &[(&ga, 2), (&b, 3)], None).await;
    let id = id_of(&paid);
    let mut all = JoinSet::new();
    for _ in 0..10 {
        let request = app
            .request(Method::POST, &format!("/tickets/{id}/refund"))
            .header("Authorization", format!("Bearer {ADMIN}"))
            .json(&json!({}));
        all.spawn(crate::helpers::answered(request));
    }
    let mut ok = 0;
    while let Some(answer) = all.join_next().await {
        let (status, body, _) = answer.unwrap();
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => assert!(
                ["REFUND_EXCEEDS_PURCHASE", "INVALID_STATUS"]
                    .contains(&body["code"].as_str().unwrap()),
                "{body}"
            ),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(ok, 1);
    // The others were refused before the provider was asked: no second refund was ever
    // begun (the provider's own ledger would refuse one, but that is its net, not ours).
    assert_eq!(refund_rows(&app).await, [("completed".to_owned(), 1)]);
    assert_eq!(refunded_by_provider(&app, &id).await, 2 * 700 + 3 * 300);
    assert_eq!(quota_counts(&app, &quota).await, (10, 0, 0));
    assert_eq!(app.assert_balanced(&event_id).await["availableTickets"], 30);

    // One ticket each, eight asks for five tickets: five refunds.
    let (paid, _) = bought(&app, &event_id, &[(&b, 5)], None).await;
    let id = id_of(&paid);
    let mut all = JoinSet::new();
    for _ in 0..8 {
        let request = app
            .request(Method::POST, &format!("/tickets/{id}/refund"))
            .header("Authorization", format!("Bearer {ADMIN}"))
            .json(&json!({"lines": [{"ticketTypeId": b, "quantity": 1}]}));
        all.spawn(crate::helpers::answered(request));
    }
    let mut ok = 0;
    while let Some(answer) = all.join_next().await {
        let (status, body, _) = answer.unwrap();
        match status {
            StatusCode::OK => ok += 1,
            _ => assert!(
                ["REFUND_EXCEEDS_PURCHASE", "INVALID_STATUS"]
                    .contains(&body["code"].as_str().unwrap()),
                "{status}: {body}"
            ),
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(refund_rows(&app).await, [("completed".to_owned(), 6)]);
    assert_eq!(refunded_by_provider(&app, &id).await, 5 * 300);
    assert_eq!(quota_counts(&app, &quota).await, (10, 0, 0));
}

/// The provider fails the first refund of a charge made with `tok_refundUnreachableOnce`:
/// the refund stays pending (nothing moves), recovery voids it (failed, nothing moves), and
/// the next refund goes through. A keyed retry while it is pending resumes it rather than
/// starting a second one.
#[tokio::test]
async fn a_refund_the_provider_fails_is_settled_by_recovery_and_then_retried() {
    let app = app().await;
    let (event_id, ga, _, _) = priced_event(&app, 10, "EUR", 1_000, 1, 5).await;
    let (paid, buyer) = bought(
        &app,
        &event_id,
        &[(&ga, 2)],
        Some("tok_refundUnreachableOnce"),
    )
    .await;
    let id = id_of(&paid);
    let keyed = |app: &TestApp| {
        app.request(Method::POST, &format!("/tickets/{id}/refund"))
            .header("Authorization", format!("Bearer {ADMIN}"))
            .header("Idempotency-Key", "refund-once")
            .json(&json!({}))
    };
    let (status, body) = app.send(keyed(&app)).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    let (status, body) = app.send(keyed(&app)).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    assert_eq!(
        app.row_count("refunds").await,
        1,
        "the retry resumed the pending refund"
    );
    let event = app.assert_balanced(&event_id).await;
    assert_eq!(event["purchasedTickets"], 2);
    // While it is pending, its tickets count as refunded: no second refund of them.
    let (status, body) = refund(&app, &id, json!({})).await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "REFUND_EXCEEDS_PURCHASE",
    );

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    boxoffice::sweeper::sweep_once(&app.state.sweeper)
        .await
        .unwrap();
    let (status, order) = app.ticket(&id, &buyer).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["status"], "purchased");
    assert_eq!(order["refunds"][0]["status"], "failed", "{order}");
    assert_eq!(order["refundedAmount"], 0);
    assert_eq!(refunded_by_provider(&app, &id).await, 0);

    // The same key again: its refund failed, so it refunds afresh, and this time it works.
    let (status, done) = app.send(keyed(&app)).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "refunded");
    assert_eq!(refunded_by_provider(&app, &id).await, 2_000);
    assert_eq!(app.assert_balanced(&event_id).await["availableTickets"], 10);
    // And replays that answer.
    let (status, replay) = app.send(keyed(&app)).await;
    assert_eq!(
        (status, &replay["status"]),
        (StatusCode::OK, &json!("refunded"))
    );
}

/// A keyed refund left pending (the provider failed) keeps its key: the claim is parked on
/// the refund, so another request with that key, of another order or with another body, is
/// refused 422 `IDEMPOTENCY_KEY_REUSED` and refunds nothing, while the same request resumes
/// the refund and, once it goes through, is recorded under the key. Before, the failure
/// released the key: another order's refund took it and was done, and the first order's
/// retry was then refused as a reuse, its refund still pending (found by a helper probing
/// the API on 2 December 2026). Red with the refund's failure answered as a plain 503.
#[tokio::test]
async fn a_refund_left_pending_keeps_its_key_from_every_other_request() {
    let app = app().await;
    let (event_id, ga, _, _) = priced_event(&app, 10, "EUR", 1_000, 1, 5).await;
    let (first, _) = bought(
        &app,
        &event_id,
        &[(&ga, 2)],
        Some("tok_refundUnreachableOnce"),
    )
    .await;
    let (second, _) = bought(&app, &event_id, &[(&ga, 1)], Some("tok_visa")).await;
    let (first, second) = (id_of(&first), id_of(&second));
    let keyed = |order: &str, body: Value| {
        app.request(Method::POST, &format!("/tickets/{order}/refund"))
            .header("Authorization", format!("Bearer {ADMIN}"))
            .header("Idempotency-Key", "one-refund-key")
            .json(&body)
    };

    let (status, body) = app.send(keyed(&first, json!({}))).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    for (order, body) in [(&second, json!({})), (&first, json!({"reason": "other"}))] {
        let (status, answer) = app.send(keyed(order, body)).await;
        assert_error(
            status,
            &answer,
            StatusCode::UNPROCESSABLE_ENTITY,
            "IDEMPOTENCY_KEY_REUSED",
        );
    }
    let status_of = |order: &str| {
        let order = order.to_owned();
        let pool = app.pool.clone();
        async move {
            let id = uuid::Uuid::parse_str(&order).unwrap();
            sqlx::query_scalar::<_, String>("SELECT status FROM ticket_allocations WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(status_of(&second).await, "purchased", "nothing refunded");
    assert_eq!(refund_rows(&app).await, [("pending".to_owned(), 1)]);

    // Recovery fails the pending refund (the provider never did it); the same request then
    // refunds afresh, and its answer is the key's from then on.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    boxoffice::sweeper::sweep_once(&app.state.sweeper)
        .await
        .unwrap();
    let (status, done) = app.send(keyed(&first, json!({}))).await;
    assert_eq!(
        (status, &done["status"]),
        (StatusCode::OK, &json!("refunded")),
        "{done}"
    );
    let replay = keyed(&first, json!({})).send().await.unwrap();
    assert!(replay.headers().contains_key("idempotent-replayed"));
    let (status, answer) = app.send(keyed(&second, json!({}))).await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );
    assert_eq!(status_of(&second).await, "purchased");
}

/// A key lives 24 hours; after that the same key on the same order is a new request, and
/// makes its refund. The refund's provider references are derived from the key, so a
/// refund of the key's last life was found under them and answered 200 as if done, nothing
/// refunded (found by a helper probing money on 2 December 2026). Red without the key's
/// life in the search: the second refund answers the order unchanged.
#[tokio::test]
async fn a_key_used_again_after_its_24_hours_makes_a_new_refund() {
    let app = app().await;
    let (event_id, ga, _, _) = priced_event(&app, 10, "EUR", 1_000, 1, 5).await;
    let (paid, _) = bought(&app, &event_id, &[(&ga, 4)], Some("tok_visa")).await;
    let id = id_of(&paid);
    let keyed = |quantity: i64| {
        app.request(Method::POST, &format!("/tickets/{id}/refund"))
            .header("Authorization", format!("Bearer {ADMIN}"))
            .header("Idempotency-Key", "refund-of-the-day")
            .json(&json!({"lines": [{"ticketTypeId": ga, "quantity": quantity}]}))
    };
    let (status, first) = app.send(keyed(1)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["refundedAmount"], 1_000, "{first}");

    // Within its life the key is bound to its first request.
    let (status, body) = app.send(keyed(2)).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );

    sqlx::query(
        "UPDATE idempotency_keys SET created_at = created_at - interval '25 hours' \
         WHERE key = 'refund-of-the-day'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (status, second) = app.send(keyed(2)).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["refundedAmount"], 3_000, "{second}");
    assert_eq!(second["lines"][0]["refundedQuantity"], 3, "{second}");
    assert_eq!(refunded_by_provider(&app, &id).await, 3_000);
    let event = app.assert_balanced(&event_id).await;
    assert_eq!(event["purchasedTickets"], 1, "{event}");

    // And the new life's retry replays the new refund's answer.
    let replay = keyed(2).send().await.unwrap();
    assert!(replay.headers().contains_key("idempotent-replayed"));
    assert_eq!(refund_rows(&app).await, [("completed".to_owned(), 2)]);
}

/// A refund whose provider call outlives recovery is voided at the provider (recovery voids
/// the reference and fails the refund): the request must not answer 200 as if it were made.
/// Both orders of events: recovery settles the refund before the provider's answer is
/// recorded, or the provider answers `voided` while the refund is still pending. The
/// provider is held up by a lock on its ledger while the test plays recovery's part. Before,
/// both answered 200 with nothing refunded (found reading the code while probing money,
/// 2 December 2026). Red with those answers: 200 where 503 is expected.
#[tokio::test]
async fn a_refund_recovery_voided_under_way_is_not_answered_as_made() {
    let app = app().await;
    let (event_id, ga, _, _) = priced_event(&app, 10, "EUR", 1_000, 1, 5).await;
    for recovery_first in [true, false] {
        let (paid, _) = bought(&app, &event_id, &[(&ga, 1)], Some("tok_visa")).await;
        let id = id_of(&paid);
        let key = format!("voided-{recovery_first}");
        let keyed = || {
            app.request(Method::POST, &format!("/tickets/{id}/refund"))
                .header("Authorization", format!("Bearer {ADMIN}"))
                .header("Idempotency-Key", &key)
                .json(&json!({}))
        };
        let mut ledger = app.pool.begin().await.unwrap();
        sqlx::query("LOCK TABLE payment_charges IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *ledger)
            .await
            .unwrap();
        let request = tokio::spawn(keyed().send());
        let allocation = uuid::Uuid::parse_str(&id).unwrap();
        let reference: String = loop {
            let pending: Option<String> = sqlx::query_scalar(
                "SELECT reference FROM refunds WHERE allocation_id = $1 AND status = 'pending'",
            )
            .bind(allocation)
            .fetch_optional(&app.pool)
            .await
            .unwrap();
            if let Some(reference) = pending {
                break reference;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        sqlx::query(
            "INSERT INTO payment_refunds (reference, charge_reference, amount, currency, outcome) \
             SELECT $1, payment_reference, 0, 'EUR', 'voided' FROM ticket_allocations \
             WHERE id = $2",
        )
        .bind(&reference)
        .bind(allocation)
        .execute(&mut *ledger)
        .await
        .unwrap();
        if recovery_first {
            sqlx::query(
                "UPDATE refunds SET status = 'failed', settled_at = now() WHERE reference = $1",
            )
            .bind(&reference)
            .execute(&mut *ledger)
            .await
            .unwrap();
        }
        ledger.commit().await.unwrap();

        let response = request.await.unwrap().unwrap();
        assert_eq!(response.headers()["retry-after"], "1");
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
        );
        let refund_status: String =
            sqlx::query_scalar("SELECT status FROM refunds WHERE reference = $1")
                .bind(&reference)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(refund_status, "failed");

        // Nothing was refunded, and the retry refunds afresh.
        let (status, done) = app.send(keyed()).await;
        assert_eq!(status, StatusCode::OK, "{done}");
        assert_eq!(done["status"], "refunded", "{done}");
        assert_eq!(done["refundedAmount"], 1_000, "{done}");
    }
    app.assert_balanced(&event_id).await;
}

/// Two instances' recoveries racing over the same stuck payments and refunds settle each
/// once, and each is counted once over both (`sweep_once`'s second number, which is what
/// `boxoffice_payments_recovered_total` adds up): a recovery that finds one settled by the
/// other counts nothing. Red before: 8 sweeps counted 160 for the 20 payments, and with the
/// payments fixed, 95 for the 30.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recoveries_of_several_instances_count_each_stuck_payment_and_refund_once() {
    let first = app().await;
    let options = (*first.pool.connect_options()).clone();
    let second = crate::helpers::spawn_app_on(
        &options,
        &[
            "--admin-token",
            ADMIN,
            "--payment-recovery-seconds",
            "1",
            "--sweep-interval-ms",
            "3600000",
        ],
    )
    .await;
    let (event_id, general, _, _) = priced_event(&first, 100, "EUR", 500, 700, 10).await;
    // Twenty charges made and their answers lost: each payment stays `payment_pending`.
    for _ in 0..20 {
        let buyer = new_fingerprint();
        let (status, hold) = first
            .send(
                first
                    .request(Method::POST, &format!("/events/{event_id}/tickets"))
                    .header("X-Device-Fingerprint", &buyer)
                    .json(&json!({"quantity": 1, "ticketTypeId": general})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{hold}");
        let (status, body) = first
            .pay(&id_of(&hold), &buyer, Some("tok_lostAfterCharge"))
            .await;
        assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
        );
    }
    // Ten refunds the provider cannot be reached for: each stays pending.
    for _ in 0..10 {
        let (paid, _) = bought(
            &first,
            &event_id,
            &[(&general, 1)],
            Some("tok_refundUnreachableOnce"),
        )
        .await;
        let (status, body) = refund(&first, &id_of(&paid), json!({})).await;
        assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
        );
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let mut recovered = 0;
    for (expired, settled) in crate::helpers::sweep_at_once(&[&first, &second], 8).await {
        assert_eq!(expired, 0);
        recovered += settled;
    }
    assert_eq!(
        recovered, 30,
        "20 payments and 10 refunds, each counted by exactly one recovery"
    );
    assert_eq!(
        refund_rows(&first).await,
        vec![("failed".to_owned(), 10)],
        "each unreachable refund voided once"
    );
    let purchased: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ticket_allocations WHERE status = 'purchased'")
            .fetch_one(&first.pool)
            .await
            .unwrap();
    assert_eq!(purchased, 30);
    first.assert_balanced(&event_id).await;
    assert_eq!(
        boxoffice::sweeper::sweep_once(&second.state.sweeper)
            .await
            .unwrap(),
        (0, 0)
    );
}

/// A charge of 1,000 on the simulated provider's ledger under `reference`.
async fn ledger_charge(app: &TestApp, reference: &str) {
    boxoffice::db::charges::record_once(
        &app.pool,
        reference,
        "charged",
        Some(boxoffice::db::charges::ChargeRecord {
            amount: 1000,
            currency: "EUR",
            token: Some("tok_visa"),
        }),
    )
    .await
    .unwrap();
}

/// A refund of the ledger's, as the provider asks for it.
fn ledger_refund<'a>(
    reference: &'a str,
    charge: &'a str,
) -> boxoffice::db::charges::RefundRecord<'a> {
    boxoffice::db::charges::RefundRecord {
        reference,
        charge_reference: charge,
        amount: 700,
        currency: "EUR",
    }
}

/// A transaction of the test's holding the ledger row of the charge `charge`, as
/// `refund_once` does first.
async fn holding_charge(app: &TestApp, charge: &str) -> crate::helpers::Blocker {
    let mut blocker = crate::helpers::Blocker::begin(&app.pool).await;
    sqlx::query("SELECT 1 FROM payment_charges WHERE reference = $1 FOR UPDATE")
        .bind(charge)
        .execute(blocker.conn())
        .await
        .unwrap();
    blocker
}

/// The blocker records a refund of 700 under `reference` against `charge`, as `refund_once`
/// does once it holds the charge.
async fn refunded_700(
    blocker: &mut crate::helpers::Blocker,
    reference: &str,
    charge: &str,
) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
    sqlx::query(
        "INSERT INTO payment_refunds (reference, charge_reference, amount, currency, outcome) \
         VALUES ($1, $2, 700, 'EUR', 'refunded')",
    )
    .bind(reference)
    .bind(charge)
    .execute(blocker.conn())
    .await
}

/// The provider never gives back more than it took, even to a refund that waited for
/// another refund of the same charge: the room left is judged once the charge row's lock is
/// held, so it counts the refund that held it. (The app sends no two refunds of one order to
/// the provider at once; the ledger's own check is the last line.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_judges_a_refund_behind_another_on_what_that_one_gave_back() {
    let app = app().await;
    ledger_charge(&app, "pay_ledger_1").await;
    let mut blocker = holding_charge(&app, "pay_ledger_1").await;
    refunded_700(&mut blocker, "ref_ledger_first", "pay_ledger_1")
        .await
        .unwrap();
    let pool = app.pool.clone();
    let second = tokio::spawn(async move {
        boxoffice::db::charges::refund_once(
            &pool,
            ledger_refund("ref_ledger_second", "pay_ledger_1"),
        )
        .await
    });
    blocker.wait_for_waiters(1).await;
    blocker.commit().await;
    assert_eq!(
        second.await.unwrap().unwrap(),
        "refused",
        "700 of the 1,000 was given back already"
    );
    let given_back: i64 = sqlx::query_scalar(
        "SELECT sum(amount)::bigint FROM payment_refunds WHERE charge_reference = 'pay_ledger_1' \
         AND outcome = 'refunded'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(given_back, 700);
}

/// A refund of a reference and the void of it (recovery's) take the charge row, then the
/// refund row: the void never writes its refund row before it holds the charge, so the two
/// never wait for each other in a cycle (PostgreSQL would abort one as a deadlock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_and_the_void_of_its_reference_never_deadlock() {
    let app = app().await;
    ledger_charge(&app, "pay_ledger_2").await;
    // The blocker does what `refund_once` does, one step at a time: the charge row, then
    // (once the void waits) the refund row.
    let mut blocker = holding_charge(&app, "pay_ledger_2").await;
    let pool = app.pool.clone();
    let void = tokio::spawn(async move {
        boxoffice::db::charges::void_refund(&pool, "ref_ledger_void", "pay_ledger_2", "EUR").await
    });
    blocker.wait_for_waiters(1).await;
    let inserted = refunded_700(&mut blocker, "ref_ledger_void", "pay_ledger_2").await;
    assert!(inserted.is_ok(), "the refund's row: {inserted:?}");
    blocker.commit().await;
    assert_eq!(
        void.await.unwrap().unwrap(),
        "refunded",
        "the void finds the refund made and leaves it"
    );
}
