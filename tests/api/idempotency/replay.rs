//! Replays, refusals under a reused key, duplicates in flight, payments, malformed keys,
//! the key's lifetime and a crashed attempt's claim.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::keyed_purchase;
use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn a_retry_gets_the_first_response_and_no_second_hold() {
    let app = spawn_app().await;
    let event = app.create_event("Retry", 10, None).await;
    let id = event["id"].as_str().unwrap();
    let (status, first, replayed) = keyed_purchase(&app, id, 2, "retrier", "order-1").await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(!replayed);
    let (stored_status, stored_body): (i32, String) = sqlx::query_as(
        "SELECT response_status, response_body FROM idempotency_keys WHERE key = 'order-1'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored_status, 201, "recorded with the effect");
    assert_eq!(serde_json::from_str::<Value>(&stored_body).unwrap(), first);

    for _ in 0..3 {
        let (status, again, replayed) = keyed_purchase(&app, id, 2, "retrier", "order-1").await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(again, first);
        assert!(replayed);
    }
    assert_eq!(app.row_count("ticket_allocations").await, 1);
    assert_eq!(app.event(id).await["reservedTickets"], 2);

    // The same key from another buyer is another key.
    let (status, other, replayed) = keyed_purchase(&app, id, 2, "someone-else", "order-1").await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{other}");
    assert_ne!(other["id"], first["id"]);
    // A new key is a new purchase.
    let (status, fresh, replayed) = keyed_purchase(&app, id, 2, "retrier", "order-2").await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{fresh}");
    assert_eq!(fresh["quantity"], 2, "{fresh}");
    assert_ne!(fresh["id"], first["id"]);
    assert_eq!(app.row_count("ticket_allocations").await, 3);
    app.assert_balanced(id).await;
}

#[tokio::test]
async fn the_same_key_with_another_request_is_refused() {
    let app = spawn_app().await;
    let event = app.create_event("Reuse", 10, None).await;
    let id = event["id"].as_str().unwrap();
    assert_eq!(
        keyed_purchase(&app, id, 1, "b", "k").await.0,
        StatusCode::CREATED
    );
    let (status, body, _) = keyed_purchase(&app, id, 3, "b", "k").await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );
    let other = app.create_event("Reuse elsewhere", 10, None).await;
    let (status, body, _) = keyed_purchase(&app, other["id"].as_str().unwrap(), 1, "b", "k").await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );
    assert_eq!(app.row_count("ticket_allocations").await, 1);
}

#[tokio::test]
async fn concurrent_duplicates_make_one_hold() {
    let app = spawn_app().await;
    let event = app.create_event("Stampede", 100, None).await;
    let id = event["id"].as_str().unwrap().to_owned();
    let attempts = (0..20).map(|_| keyed_purchase(&app, &id, 1, "double-clicker", "click"));
    let results = futures_util::future::join_all(attempts).await;
    let created: Vec<&Value> = results
        .iter()
        .filter(|r| r.0 == StatusCode::CREATED)
        .map(|r| &r.1)
        .collect();
    assert!(!created.is_empty());
    assert!(created[0]["id"].is_string(), "{}", created[0]);
    assert!(
        created.iter().all(|body| body["id"] == created[0]["id"]),
        "one allocation id for all"
    );
    for (status, body, _) in &results {
        if *status != StatusCode::CREATED {
            assert_error(
                *status,
                body,
                StatusCode::CONFLICT,
                "IDEMPOTENCY_IN_PROGRESS",
            );
        }
    }
    assert_eq!(app.row_count("ticket_allocations").await, 1);
    assert_eq!(app.event(&id).await["availableTickets"], 99);
}

#[tokio::test]
async fn a_refusal_is_replayed_too() {
    let app = spawn_app().await;
    let event = app.create_event("Tiny", 1, None).await;
    let id = event["id"].as_str().unwrap();
    let (status, hold) = app.purchase(id, 1, "first").await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (status, body, replayed) = keyed_purchase(&app, id, 1, "late", "late-1").await;
    assert_error(status, &body, StatusCode::CONFLICT, "TICKETS_SOLD_OUT");
    assert!(!replayed);
    // The ticket comes back, but the key answers as it first did.
    assert_eq!(
        app.cancel(hold["id"].as_str().unwrap(), "first").await.0,
        StatusCode::OK
    );
    let (status, again, replayed) = keyed_purchase(&app, id, 1, "late", "late-1").await;
    assert_eq!((status, replayed), (StatusCode::CONFLICT, true));
    assert_eq!(again, body);
    assert_eq!(
        keyed_purchase(&app, id, 1, "late", "late-2").await.0,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_payment_retry_charges_once() {
    let app = spawn_app().await;
    let event = app.create_event("Pay once", 5, None).await;
    let (status, hold) = app
        .purchase(event["id"].as_str().unwrap(), 2, "payer")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let hold_id = hold["id"].as_str().unwrap();
    let pay = |token: &'static str| {
        app.request(Method::POST, &format!("/tickets/{hold_id}/payment"))
            .header("X-Device-Fingerprint", "payer")
            .header("Idempotency-Key", "pay-1")
            .json(&json!({ "paymentToken": token }))
    };
    let (status, first) = app.send(pay("tok_visa")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["status"], "purchased");
    let (status, again) = app.send(pay("tok_visa")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "not 409 INVALID_STATUS: the first answer is replayed"
    );
    assert!(first["confirmationCode"].is_string(), "{first}");
    assert_eq!(again, first, "the first answer, replayed whole");
    let charges = app.row_count("payment_charges").await;
    assert_eq!(charges, 1);
    let (status, body) = app.send(pay("tok_chargeDeclined")).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );
    assert_eq!(
        app.event(event["id"].as_str().unwrap()).await["purchasedTickets"],
        2
    );
}

#[tokio::test]
async fn malformed_keys_are_bad_requests() {
    let app = spawn_app().await;
    let event = app.create_event("Keys", 5, None).await;
    let id = event["id"].as_str().unwrap();
    for key in ["".to_owned(), "k".repeat(256), "tab\tkey".to_owned()] {
        let (status, body, _) = keyed_purchase(&app, id, 1, "b", &key).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    assert_eq!(
        keyed_purchase(&app, id, 1, "b", &"k".repeat(255)).await.0,
        StatusCode::CREATED
    );
    assert_eq!(app.row_count("ticket_allocations").await, 1);
}

#[tokio::test]
async fn keys_expire_after_24_hours() {
    let app = spawn_app().await;
    let event = app.create_event("Old keys", 5, None).await;
    let id = event["id"].as_str().unwrap();
    assert_eq!(
        keyed_purchase(&app, id, 1, "b", "old").await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        keyed_purchase(&app, id, 1, "b", "older").await.0,
        StatusCode::CREATED
    );
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // An expired key is a new key: the request runs again.
    let (status, body, replayed) = keyed_purchase(&app, id, 1, "b", "old").await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{body}");
    assert_eq!(app.row_count("ticket_allocations").await, 3);

    sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'older'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    boxoffice::sweeper::sweep_once(&app.state.sweeper)
        .await
        .unwrap();
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys ORDER BY key")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(keys, ["old"], "the sweeper purged the expired key");
}

#[tokio::test]
async fn a_claim_left_by_a_crashed_attempt_is_taken_over() {
    let app = spawn_app().await;
    let event = app.create_event("Crashed claim", 5, None).await;
    let id = event["id"].as_str().unwrap();
    let (status, body, _) = keyed_purchase(&app, id, 1, "b", "crashy").await;
    assert_eq!(status, StatusCode::CREATED);
    // Make the stored key look like an attempt that claimed it long ago and never finished
    // (its effect never committed, so there is nothing to replay).
    sqlx::query(
        "UPDATE idempotency_keys SET state = 'in_progress', response_status = NULL, response_body = NULL, \
         completed_at = NULL, claimed_at = now() - interval '10 minutes' WHERE key = 'crashy'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (status, again, replayed) = keyed_purchase(&app, id, 1, "b", "crashy").await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{again}");
    // A new hold, not the first one replayed: an error body (no id) must not pass for it.
    assert_eq!(again["quantity"], 1, "{again}");
    assert!(again["id"].is_string(), "{again}");
    assert_ne!(again["id"], body["id"]);
    // A fresh in-progress claim is waited for, then reported as in progress.
    sqlx::query(
        "UPDATE idempotency_keys SET state = 'in_progress', response_status = NULL, response_body = NULL, \
         completed_at = NULL, claimed_at = now() WHERE key = 'crashy'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (status, body, _) = keyed_purchase(&app, id, 1, "b", "crashy").await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "IDEMPOTENCY_IN_PROGRESS",
    );
}

/// A claim is abandoned once older than the request timeout plus a margin (no client still
/// waits for its attempt): with the default 30 s timeout, a claim 36 s old is taken over at
/// once, so a retry after a failover is answered within seconds; one 25 s old is still
/// waited for (5 s) and reported in progress.
#[tokio::test]
async fn a_claim_older_than_the_request_timeout_and_a_margin_is_taken_over() {
    let app = spawn_app().await;
    let event = app.create_event("Timed-out claim", 5, None).await;
    let id = event["id"].as_str().unwrap();
    let (status, _, _) = keyed_purchase(&app, id, 1, "b", "cut").await;
    assert_eq!(status, StatusCode::CREATED);
    let unsettle = |age: &'static str| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE idempotency_keys SET state = 'in_progress', response_status = NULL, \
             response_body = NULL, completed_at = NULL, \
             claimed_at = now() - interval '{age}' WHERE key = 'cut'"
        )))
        .execute(&app.pool)
    };
    unsettle("25 seconds").await.unwrap();
    let (status, body, _) = keyed_purchase(&app, id, 1, "b", "cut").await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "IDEMPOTENCY_IN_PROGRESS",
    );
    unsettle("36 seconds").await.unwrap();
    let started = std::time::Instant::now();
    let (status, again, replayed) = keyed_purchase(&app, id, 1, "b", "cut").await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{again}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "taken over at once, not after the 5 s wait: {:?}",
        started.elapsed()
    );
}
