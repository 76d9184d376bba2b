//! Assertions shared by many tests (counts that balance, the error shape) and a poll for
//! what happens in the background.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Asserts an event's counts (its JSON as the API returns it) agree with its allocation rows
/// in `pool` (a purchase counts what is left of it after refunds) and with each other.
pub async fn assert_counts_match_rows(pool: &PgPool, event: &Value) {
    let id = Uuid::parse_str(event["id"].as_str().expect("event id")).unwrap();
    let (reserved, purchased): (i64, i64) = sqlx::query_as(
            "SELECT \
               COALESCE(sum(quantity) FILTER (WHERE status IN ('reserved', 'payment_pending')), 0)::bigint, \
               COALESCE(sum(quantity - refunded_quantity) FILTER (WHERE status = 'purchased'), 0)::bigint \
             FROM ticket_allocations WHERE event_id = $1",
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        event["reservedTickets"].as_i64(),
        Some(reserved),
        "reserved count vs rows: {event}"
    );
    assert_eq!(
        event["purchasedTickets"].as_i64(),
        Some(purchased),
        "purchased count vs rows: {event}"
    );
    let total = event["totalTickets"].as_i64().unwrap();
    let available = event["availableTickets"].as_i64().unwrap();
    assert_eq!(
        available + reserved + purchased,
        total,
        "counts balance: {event}"
    );
    assert!(available >= 0);
}

/// Asserts an error response: status, code, JSON body with a message.
pub fn assert_error(status: StatusCode, body: &Value, expected_status: StatusCode, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "error message: {body}"
    );
}

/// Polls `probe` every 20 ms until it yields a value; panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
