//! A refusal never contradicts a change the client has already seen: after a cancellation
//! (or an expiry) is acknowledged, a purchase of the freed tickets must not hear "sold out",
//! in either purchase mode, on the same instance or another one, keyed or not.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    BATCHED, PER_REQUEST, TestApp, answered, assert_error, eventually, id_of, new_fingerprint,
    spawn_app_on, spawn_app_with,
};
use crate::timeouts::lock_event;

/// Rounds per test: on the old notification-fed pre-check, 3–17 % of rounds were refused.
const ROUNDS: usize = 60;

/// A purchase of the event's one ticket, optionally under an idempotency key.
async fn buy_one(app: &TestApp, event_id: &str, buyer: &str, key: Option<&str>) -> String {
    let mut request = app
        .request(Method::POST, &format!("/events/{event_id}/tickets"))
        .header("X-Device-Fingerprint", buyer)
        .json(&json!({ "quantity": 1 }));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let (status, body) = app.send(request).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the only ticket was free when this purchase was sent: {body}"
    );
    id_of(&body)
}

/// Holds the one ticket on `holder_app`, cancels, then at once buys on `buyer_app` (the same
/// keep-alive connection when both are one app), `ROUNDS` times; then gives the last hold
/// back.
async fn cancel_then_buy(holder_app: &TestApp, buyer_app: &TestApp, event_id: &str, keyed: bool) {
    let buyer = new_fingerprint();
    let mut hold = buy_one(holder_app, event_id, &buyer, None).await;
    for round in 0..ROUNDS {
        let (status, body) = holder_app.cancel(&hold, &buyer).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "cancelled");
        let key = format!("round-{round}");
        hold = buy_one(buyer_app, event_id, &buyer, keyed.then_some(key.as_str())).await;
    }
    let event = buyer_app.assert_balanced(event_id).await;
    assert_eq!(event["reservedTickets"], 1);
    let (status, body) = buyer_app.cancel(&hold, &buyer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn on_one_instance(mode: &[&str], keyed: bool) {
    let app = spawn_app_with(mode).await;
    let event = app.create_event("One ticket", 1, None).await;
    cancel_then_buy(&app, &app, &id_of(&event), keyed).await;
}

async fn across_two_instances(mode: &[&str]) {
    let first = spawn_app_with(mode).await;
    let options = (*first.pool.connect_options()).clone();
    let second = spawn_app_on(&options, mode).await;
    let event = first
        .create_event("One ticket, two instances", 1, None)
        .await;
    let event_id = id_of(&event);
    cancel_then_buy(&first, &second, &event_id, false).await;
    cancel_then_buy(&second, &first, &event_id, false).await;
}

#[tokio::test]
async fn a_purchase_right_after_a_cancel_is_not_refused_per_request() {
    on_one_instance(PER_REQUEST, false).await;
}

#[tokio::test]
async fn a_purchase_right_after_a_cancel_is_not_refused_batched() {
    on_one_instance(BATCHED, false).await;
}

#[tokio::test]
async fn a_keyed_purchase_right_after_a_cancel_is_not_refused_per_request() {
    on_one_instance(PER_REQUEST, true).await;
}

#[tokio::test]
async fn a_keyed_purchase_right_after_a_cancel_is_not_refused_batched() {
    on_one_instance(BATCHED, true).await;
}

#[tokio::test]
async fn a_purchase_right_after_a_cancel_on_another_instance_is_not_refused_per_request() {
    across_two_instances(PER_REQUEST).await;
}

#[tokio::test]
async fn a_purchase_right_after_a_cancel_on_another_instance_is_not_refused_batched() {
    across_two_instances(BATCHED).await;
}

/// The sweeper frees the ticket; the client sees it free in `GET /events/{id}` and buys it.
async fn expire_then_buy(mode: &[&str]) {
    let mut flags = vec!["--hold-seconds", "1", "--sweep-interval-ms", "20"];
    flags.extend_from_slice(mode);
    let app = spawn_app_with(&flags).await;
    let event = app.create_event("One short ticket", 1, None).await;
    let event_id = id_of(&event);
    let buyer = new_fingerprint();
    buy_one(&app, &event_id, &buyer, None).await;
    for _ in 0..8 {
        eventually("the hold to lapse", Duration::from_secs(10), || async {
            (app.event(&event_id).await["availableTickets"] == 1).then_some(())
        })
        .await;
        buy_one(&app, &event_id, &buyer, None).await;
    }
    app.assert_balanced(&event_id).await;
}

#[tokio::test]
async fn a_purchase_right_after_an_expiry_is_not_refused_per_request() {
    expire_then_buy(PER_REQUEST).await;
}

#[tokio::test]
async fn a_purchase_right_after_an_expiry_is_not_refused_batched() {
    expire_then_buy(BATCHED).await;
}

/// A sold-out answer is still given, and still true, when nothing is free.
#[tokio::test]
async fn a_sold_out_event_is_still_refused() {
    for mode in [PER_REQUEST, BATCHED] {
        let app = spawn_app_with(mode).await;
        let event = app.create_event("Gone", 1, None).await;
        let event_id = id_of(&event);
        buy_one(&app, &event_id, &new_fingerprint(), None).await;
        for _ in 0..3 {
            let (status, body) = app.purchase(&event_id, 1, &new_fingerprint()).await;
            crate::helpers::assert_error(status, &body, StatusCode::CONFLICT, "TICKETS_SOLD_OUT");
        }
    }
}

/// The process id of the app's change listener (its `LISTEN` connection).
async fn listener_pid(app: &TestApp) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
    )
    .bind(app.database_name())
    .fetch_optional(&app.pool)
    .await
    .unwrap()
}

/// Takes the event's last ticket behind the app's back: a committed change that no
/// notification announces, as one made while the listener was away goes unheard.
async fn take_last_ticket_unheard(app: &TestApp, event_id: &str) {
    let event = uuid::Uuid::parse_str(event_id).unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO ticket_allocations (id, event_id, quantity, status, fingerprint_hash, expires_at) \
         VALUES (gen_random_uuid(), $1, 1, 'reserved', repeat('0', 64), now() + interval '10 minutes')",
    )
    .bind(event)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE events SET available_tickets = available_tickets - 1, \
                           reserved_tickets = reserved_tickets + 1 WHERE id = $1",
    )
    .bind(event)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// A purchase sent while another session holds the event's row lock: its answer.
async fn purchase_beside_a_held_lock(app: &TestApp, event_id: &str) -> (StatusCode, Value) {
    let blocker = lock_event(&app.pool, event_id).await;
    let (status, body, _) = answered(app.purchase_request(event_id, 1, &new_fingerprint())).await;
    blocker.rollback().await.unwrap();
    (status, body)
}

/// The availability heard from the listener is forgotten when its connection drops: changes
/// made meanwhile go unheard, and a stale count would send every buyer of a sold-out event to
/// its row lock. With the event at 0 and the lock held elsewhere, a purchase is refused from
/// a fresh read, without waiting for the lock.
#[tokio::test]
async fn the_heard_availability_is_forgotten_when_the_listener_drops() {
    for mode in [PER_REQUEST, BATCHED] {
        let mut flags = vec!["--lock-timeout-ms", "300"];
        flags.extend_from_slice(mode);
        let app = spawn_app_with(&flags).await;
        let event = app.create_event("Unheard", 2, None).await;
        let event_id = id_of(&event);
        // The listener hears this purchase: one ticket left.
        buy_one(&app, &event_id, &new_fingerprint(), None).await;
        eventually(
            "the change to be heard",
            Duration::from_secs(10),
            || async {
                let heard = app
                    .state
                    .live
                    .availability()
                    .known_available(event_id.parse().ok()?);
                (heard == Some(1)).then_some(())
            },
        )
        .await;
        take_last_ticket_unheard(&app, &event_id).await;
        // Stale: the heard count still says 1, so the purchase goes to the lock, and waits.
        let (status, body) = purchase_beside_a_held_lock(&app, &event_id).await;
        assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
        );

        let dropped = listener_pid(&app).await.expect("the app listens");
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(dropped)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert!(terminated);
        eventually(
            "the listener to reconnect",
            Duration::from_secs(10),
            || async {
                listener_pid(&app)
                    .await
                    .filter(|pid| *pid != dropped)
                    .map(|_| ())
            },
        )
        .await;
        // Forgotten: sold out is answered from a fresh read, beside the held lock.
        let (status, body) = purchase_beside_a_held_lock(&app, &event_id).await;
        assert_error(status, &body, StatusCode::CONFLICT, "TICKETS_SOLD_OUT");
        app.assert_balanced(&event_id).await;
    }
}
