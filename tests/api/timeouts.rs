//! Every wait is bounded: a row lock held elsewhere (`--lock-timeout-ms`), a statement over
//! its time (`--statement-timeout-ms`) and a request over its time (`--request-timeout-ms`)
//! each end in a prompt 503 with `Retry-After`, and leave the counts balanced.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, answered, assert_error, spawn_app_with};

/// Holds the event's row lock in a transaction of its own until dropped or rolled back.
async fn lock_event(pool: &PgPool, event_id: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM events WHERE id = $1 FOR UPDATE")
        .bind(Uuid::parse_str(event_id).unwrap())
        .execute(&mut *blocker)
        .await
        .unwrap();
    blocker
}

/// A purchase sent while another transaction holds the event's row lock, which is released
/// once the answer is in. Asserts the answer is a 503; returns whether it carried the
/// documented `Retry-After: 1` and how long it took.
async fn purchase_behind_a_held_lock(
    app: &TestApp,
    event_id: &str,
    fingerprint: &str,
) -> (bool, Duration) {
    let blocker = lock_event(&app.pool, event_id).await;
    let started = Instant::now();
    let (status, body, retry_after) =
        answered(app.purchase_request(event_id, 1, fingerprint)).await;
    let took = started.elapsed();
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    blocker.rollback().await.unwrap();
    (retry_after.as_deref() == Some("1"), took)
}

#[tokio::test]
async fn a_held_lock_times_out_with_503_instead_of_hanging() {
    let app = spawn_app_with(&["--lock-timeout-ms", "200", "--purchase-mode", "per-request"]).await;
    let event = app.create_event("Locked", 10, None).await;
    let id = event["id"].as_str().unwrap();
    // Another session holds the event row lock and does not let go.
    let (retry_after, took) = purchase_behind_a_held_lock(&app, id, "waiting").await;
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert!(retry_after);
    assert_eq!(app.purchase(id, 1, "waiting").await.0, StatusCode::CREATED);
    app.assert_balanced(id).await;
}

#[tokio::test]
async fn a_statement_over_its_timeout_gives_503_instead_of_waiting() {
    // The lock timeout is far away: only the statement timeout can end the wait early.
    let app = spawn_app_with(&[
        "--statement-timeout-ms",
        "500",
        "--lock-timeout-ms",
        "60000",
        "--purchase-mode",
        "per-request",
    ])
    .await;
    let event = app.create_event("Slow statement", 10, None).await;
    let id = event["id"].as_str().unwrap();
    let (retry_after, took) = purchase_behind_a_held_lock(&app, id, "patient").await;
    assert!(retry_after);
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    // The cancelled statement's transaction left nothing behind.
    let event = app.assert_balanced(id).await;
    assert_eq!(event["availableTickets"], 10, "{event}");
    assert_eq!(app.purchase(id, 1, "patient").await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn a_request_over_its_timeout_gives_503_instead_of_waiting() {
    for mode in ["per-request", "batched"] {
        let app = spawn_app_with(&[
            "--request-timeout-ms",
            "500",
            "--statement-timeout-ms",
            "60000",
            "--lock-timeout-ms",
            "60000",
            "--purchase-mode",
            mode,
        ])
        .await;
        let event = app.create_event("Slow request", 10, None).await;
        let id = event["id"].as_str().unwrap();
        let (retry_after, took) = purchase_behind_a_held_lock(&app, id, "impatient").await;
        assert!(retry_after, "{mode}");
        assert!(
            took < Duration::from_secs(10),
            "{mode}: answered after {took:?}"
        );
        // The next purchase locks the same row, or (batched) queues behind the batch the
        // abandoned request joined: once it is answered, the abandoned work has settled.
        assert_eq!(
            app.purchase(id, 1, "impatient").await.0,
            StatusCode::CREATED
        );
        let event = app.assert_balanced(id).await;
        let held = 10 - event["availableTickets"].as_i64().unwrap();
        if mode == "per-request" {
            // Its transaction was dropped with the request and rolled back.
            assert_eq!(held, 1, "a timed-out purchase had an effect: {event}");
        } else {
            // The batch runs on without the request that left it and may still commit its
            // hold: a 503 is not a refusal, which is why clients retry with an
            // Idempotency-Key.
            assert!((1..=2).contains(&held), "{event}");
        }
        app.stop().await;
    }
}
