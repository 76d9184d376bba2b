//! `POST /events/{id}/tickets`: the hold it returns, the counts it moves, every refusal,
//! fingerprints, the per-buyer cap and rollback. Many buyers at once: `concurrency.rs`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    BATCHED, PER_REQUEST, TestApp, assert_error, id_of, new_fingerprint, spawn_app, spawn_app_with,
    timestamp,
};

/// A purchase with an arbitrary JSON body and no fingerprint header.
async fn purchase_with_body(app: &TestApp, event_id: &str, body: Value) -> (StatusCode, Value) {
    app.send(
        app.request(Method::POST, &format!("/events/{event_id}/tickets"))
            .json(&body),
    )
    .await
}

#[tokio::test]
async fn purchase_returns_the_hold_and_deducts_the_tickets() {
    let app = spawn_app().await;
    let event = app.create_event("Deduction", 10, None).await;
    let event_id = event["id"].as_str().unwrap();
    let buyer = new_fingerprint();

    let (status, hold) = app.purchase(event_id, 3, &buyer).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    Uuid::parse_str(&id_of(&hold)).expect("id is a UUID");
    assert_eq!(hold["eventId"], event_id);
    assert_eq!(hold["quantity"], 3);
    assert_eq!(hold["status"], "reserved");
    let created = timestamp(&hold["createdAt"]);
    let expires = timestamp(&hold["expiresAt"]);
    timestamp(&hold["updatedAt"]);
    // The default hold is 600 seconds.
    let hold_length = (expires - created).whole_seconds();
    assert!((599..=601).contains(&hold_length), "hold of {hold_length}s");
    for absent in ["purchasedAt", "confirmationCode", "paymentReference"] {
        assert!(
            hold.get(absent).is_none(),
            "{absent} before payment: {hold}"
        );
    }
    let object = hold.as_object().unwrap();
    assert!(
        object
            .keys()
            .all(|key| !key.to_ascii_lowercase().contains("fingerprint")),
        "no fingerprint field: {hold}"
    );

    // What is stored is a keyed hash, never the fingerprint, and never shown.
    let row = app.allocation_row(&id_of(&hold)).await;
    assert_eq!(row.status, "reserved");
    assert_eq!(row.quantity, 3);
    assert_eq!(row.fingerprint_hash.len(), 64);
    assert!(!row.fingerprint_hash.contains(&buyer));
    let text = hold.to_string();
    assert!(!text.contains(&buyer) && !text.contains(&row.fingerprint_hash));

    assert_eq!(app.counts(event_id).await, (7, 3, 0));
    let (status, second) = app.purchase(event_id, 2, &new_fingerprint()).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(app.counts(event_id).await, (5, 5, 0));
    app.assert_balanced(event_id).await;
}

#[tokio::test]
async fn more_than_is_left_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let event = app.create_event("Scarce", 5, None).await;
    let event_id = event["id"].as_str().unwrap();

    let (status, _) = app.purchase(event_id, 3, &new_fingerprint()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = app.purchase(event_id, 3, &new_fingerprint()).await;
    assert_error(status, &body, StatusCode::CONFLICT, "INSUFFICIENT_TICKETS");
    assert_eq!(body["availableTickets"], 2, "{body}");
    assert_eq!(app.counts(event_id).await, (2, 3, 0));

    let (status, _) = app.purchase(event_id, 2, &new_fingerprint()).await;
    assert_eq!(status, StatusCode::CREATED);
    for quantity in [1, 10] {
        let (status, body) = app.purchase(event_id, quantity, &new_fingerprint()).await;
        assert_error(status, &body, StatusCode::CONFLICT, "TICKETS_SOLD_OUT");
        assert!(body.get("availableTickets").is_none(), "{body}");
    }
    assert_eq!(app.counts(event_id).await, (0, 5, 0));
    assert_eq!(app.row_count("ticket_allocations").await, 2);
    app.assert_balanced(event_id).await;
}

#[tokio::test]
async fn unknown_event_and_malformed_ids() {
    let app = spawn_app().await;
    let (status, body) = app
        .purchase(&Uuid::new_v4().to_string(), 1, &new_fingerprint())
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, body) = app.purchase("not-a-uuid", 1, &new_fingerprint()).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_eq!(body["details"][0]["field"], "id", "{body}");
    assert_eq!(app.row_count("ticket_allocations").await, 0);
}

#[tokio::test]
async fn bad_quantities_are_validation_errors() {
    let app = spawn_app().await;
    let event = app.create_event("Validated", 50, None).await;
    let event_id = event["id"].as_str().unwrap();
    let fingerprint = new_fingerprint();
    let cases = [
        json!({"quantity": 0}),
        json!({"quantity": 11}),
        json!({"quantity": -1}),
        json!({"quantity": 1.5}),
        json!({"quantity": "2"}),
        json!({"quantity": null}),
        json!({"quantity": true}),
        json!({"quantity": u64::MAX}),
        json!({"quantity": 10_000_000_000_i64}),
        json!({}),
    ];
    for body in cases {
        let (status, response) = app
            .send(
                app.request(Method::POST, &format!("/events/{event_id}/tickets"))
                    .header("X-Device-Fingerprint", &fingerprint)
                    .json(&body),
            )
            .await;
        assert_error(
            status,
            &response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        assert_eq!(
            response["details"][0]["field"], "quantity",
            "for {body}: {response}"
        );
    }
    // An empty body is an empty object: quantity is missing.
    let (status, response) = app
        .send(app.request(Method::POST, &format!("/events/{event_id}/tickets")))
        .await;
    assert_error(
        status,
        &response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(app.counts(event_id).await, (50, 0, 0));
    assert_eq!(app.row_count("ticket_allocations").await, 0);
    // A body of only whitespace is malformed JSON, not an empty body.
    for body in ["\n", " ", "\r\n\t"] {
        let (status, response) = app
            .send(
                app.request(Method::POST, &format!("/events/{event_id}/tickets"))
                    .header("Content-Type", "application/json")
                    .body(body),
            )
            .await;
        assert_error(status, &response, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    assert_eq!(app.row_count("ticket_allocations").await, 0);

    // The boundaries themselves are accepted.
    for quantity in [1, 10] {
        let (status, body) = app.purchase(event_id, quantity, &fingerprint).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    assert_eq!(app.counts(event_id).await, (39, 11, 0));
}

#[tokio::test]
async fn the_per_purchase_maximum_is_configurable() {
    let app = spawn_app_with(&["--max-tickets-per-purchase", "3"]).await;
    let event = app.create_event("Small orders", 20, None).await;
    let event_id = event["id"].as_str().unwrap();
    let (status, body) = app.purchase(event_id, 4, &new_fingerprint()).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(body["details"][0]["field"], "quantity", "{body}");
    assert_eq!(app.counts(event_id).await, (20, 0, 0));
    let (status, body) = app.purchase(event_id, 3, &new_fingerprint()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(app.counts(event_id).await, (17, 3, 0));
}

#[tokio::test]
async fn body_fingerprint_is_used_when_there_is_no_header() {
    let app = spawn_app().await;
    let event = app.create_event("Seed clients", 20, None).await;
    let event_id = event["id"].as_str().unwrap();
    let device = new_fingerprint();

    let (status, hold) = purchase_with_body(
        &app,
        event_id,
        json!({"quantity": 1, "userFingerprint": device}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    assert!(!hold.to_string().contains(&device));
    // The body fingerprint is the same identity as that fingerprint sent in the header.
    let (status, read) = app.ticket(&id_of(&hold), &device).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["id"], hold["id"]);
    let (status, body) = app.ticket(&id_of(&hold), &new_fingerprint()).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");
    // Without any fingerprint the caller is the derived (connection) identity: not the
    // body fingerprint's owner.
    let (status, body) = app.get(&format!("/tickets/{}", id_of(&hold))).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");

    // A body fingerprint is held to the same rules as the header.
    let (status, body) = purchase_with_body(
        &app,
        event_id,
        json!({"quantity": 1, "userFingerprint": "x".repeat(257)}),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(body["details"][0]["field"], "userFingerprint", "{body}");
    assert_eq!(app.counts(event_id).await, (19, 1, 0));

    let (status, by_header) = app.purchase(event_id, 1, &device).await;
    assert_eq!(status, StatusCode::CREATED, "{by_header}");
    assert_eq!(
        app.allocation_row(&id_of(&hold)).await.fingerprint_hash,
        app.allocation_row(&id_of(&by_header))
            .await
            .fingerprint_hash,
        "body and header fingerprints hash alike"
    );
}

#[tokio::test]
async fn header_fingerprint_wins_over_the_body() {
    let app = spawn_app().await;
    let event = app.create_event("Both", 20, Some(2)).await;
    let event_id = event["id"].as_str().unwrap();
    let header = new_fingerprint();
    let body_fingerprint = new_fingerprint();

    let (status, hold) = app
        .send(
            app.request(Method::POST, &format!("/events/{event_id}/tickets"))
                .header("X-Device-Fingerprint", &header)
                .json(&json!({"quantity": 2, "userFingerprint": body_fingerprint})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (status, _) = app.ticket(&id_of(&hold), &header).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.ticket(&id_of(&hold), &body_fingerprint).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");

    // The cap is charged to the header's identity, not the body's.
    let (status, body) = app.purchase(event_id, 1, &header).await;
    assert_error(status, &body, StatusCode::CONFLICT, "FINGERPRINT_LIMIT");
    let (status, body) = purchase_with_body(
        &app,
        event_id,
        json!({"quantity": 2, "userFingerprint": body_fingerprint}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(app.counts(event_id).await, (16, 4, 0));
}

#[tokio::test]
async fn derived_fingerprint_identifies_a_client_without_one() {
    let app = spawn_app().await;
    let event = app.create_event("Anonymous", 20, None).await;
    let event_id = event["id"].as_str().unwrap();
    let browser = |builder: reqwest::RequestBuilder| {
        builder
            .header("User-Agent", "Mozilla/5.0 test")
            .header("Accept-Language", "nl-BE")
    };

    let (status, hold) = app
        .send(browser(
            app.request(Method::POST, &format!("/events/{event_id}/tickets"))
                .json(&json!({"quantity": 1})),
        ))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let path = format!("/tickets/{}", id_of(&hold));
    let (status, _) = app.send(browser(app.request(Method::GET, &path))).await;
    assert_eq!(status, StatusCode::OK, "same address, agent and language");
    let (status, body) = app
        .send(
            app.request(Method::GET, &path)
                .header("User-Agent", "curl/8")
                .header("Accept-Language", "nl-BE"),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");
    let (status, body) = app
        .send(
            app.request(Method::GET, &path)
                .header("User-Agent", "Mozilla/5.0 test")
                .header("Accept-Language", "en-US"),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");
}

#[tokio::test]
async fn per_fingerprint_cap() {
    let app = spawn_app().await;
    let event = app.create_event("Capped", 20, Some(4)).await;
    let event_id = event["id"].as_str().unwrap();
    let alice = new_fingerprint();
    let bob = new_fingerprint();

    let (status, first) = app.purchase(event_id, 3, &alice).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = app.purchase(event_id, 2, &alice).await;
    assert_error(status, &body, StatusCode::CONFLICT, "FINGERPRINT_LIMIT");
    assert_eq!(body["limit"], 4, "{body}");
    assert_eq!(body["held"], 3, "{body}");
    // Another buyer is not affected.
    let (status, _) = app.purchase(event_id, 4, &bob).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, second) = app.purchase(event_id, 1, &alice).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = app.purchase(event_id, 1, &alice).await;
    assert_error(status, &body, StatusCode::CONFLICT, "FINGERPRINT_LIMIT");
    assert_eq!(app.counts(event_id).await, (12, 8, 0));

    // Purchased tickets still count; cancelled ones no longer do.
    let (status, _) = app.pay(&id_of(&second), &alice, Some("tok_visa")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.cancel(&id_of(&first), &alice).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.purchase(event_id, 4, &alice).await;
    assert_error(status, &body, StatusCode::CONFLICT, "FINGERPRINT_LIMIT");
    assert_eq!(body["held"], 1, "{body}");
    let (status, _) = app.purchase(event_id, 3, &alice).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(app.counts(event_id).await, (12, 7, 1));
    app.assert_balanced(event_id).await;
}

/// A failure after the allocation INSERT and before the count UPDATE must leave no trace.
#[tokio::test]
async fn a_failure_inside_the_purchase_transaction_rolls_everything_back_per_request() {
    failure_rolls_back(PER_REQUEST).await;
}

#[tokio::test]
async fn a_failure_inside_the_purchase_transaction_rolls_everything_back_batched() {
    failure_rolls_back(BATCHED).await;
}

async fn failure_rolls_back(mode: &[&str]) {
    let app = spawn_app_with(mode).await;
    let event = app.create_event("Fragile", 10, None).await;
    let event_id = event["id"].as_str().unwrap();

    // Sequences are not transactional: the counter proves the INSERT ran before the
    // failure, even though its row is rolled back.
    sqlx::raw_sql(
        "CREATE SEQUENCE allocation_inserts_seen; \
         CREATE FUNCTION count_insert() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN PERFORM nextval('allocation_inserts_seen'); RETURN NEW; END $$; \
         CREATE TRIGGER count_insert AFTER INSERT ON ticket_allocations \
           FOR EACH ROW EXECUTE FUNCTION count_insert(); \
         CREATE FUNCTION fail_count_update() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN RAISE EXCEPTION 'injected failure in the count update'; END $$; \
         CREATE TRIGGER fail_count_update BEFORE UPDATE ON events \
           FOR EACH ROW EXECUTE FUNCTION fail_count_update();",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let (status, body) = app.purchase(event_id, 2, &new_fingerprint()).await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
    );
    assert!(
        !body.to_string().contains("injected"),
        "internal detail leaked: {body}"
    );
    let inserts: i64 = sqlx::query_scalar("SELECT last_value FROM allocation_inserts_seen")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let called: bool = sqlx::query_scalar("SELECT is_called FROM allocation_inserts_seen")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(called && inserts == 1, "the INSERT ran before the failure");
    assert_eq!(
        app.row_count("ticket_allocations").await,
        0,
        "the INSERT was rolled back"
    );
    assert_eq!(app.counts(event_id).await, (10, 0, 0));

    // The failed transaction released the event lock: once the fault is gone, buying works.
    sqlx::raw_sql("DROP TRIGGER fail_count_update ON events")
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, body) = app.purchase(event_id, 2, &new_fingerprint()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(app.counts(event_id).await, (8, 2, 0));
    assert_eq!(app.row_count("ticket_allocations").await, 1);
    app.assert_balanced(event_id).await;
}
