//! Idempotent retries: the same key and request replays the first response with no second
//! effect; another request under the key is refused; duplicates in flight wait; keys are
//! scoped to the buyer and purged after 24 hours.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{
    BATCHED, Blocker, PER_REQUEST, ServerProcess, TestApp, assert_error, database_url, eventually,
    fresh_database, id_of, spawn_app, spawn_app_with,
};
use crate::timeouts::lock_event;

async fn keyed_purchase(
    app: &TestApp,
    event: &str,
    quantity: i64,
    buyer: &str,
    key: &str,
) -> (StatusCode, Value, bool) {
    let response = app
        .request(Method::POST, &format!("/events/{event}/tickets"))
        .header("X-Device-Fingerprint", buyer)
        .header("Idempotency-Key", key)
        .json(&json!({ "quantity": quantity }))
        .send()
        .await
        .unwrap();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let status = response.status();
    (status, response.json().await.unwrap(), replayed)
}

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

/// The keyed work (claim, effect, record or release) outlives the request. `flags` set the
/// purchase mode; the request timeout is short and the database waits long, so the request
/// is cut off while its purchase waits for the event row lock.
async fn cut_off_keyed_purchase(flags: &[&str], lock_timeout_ms: &str) -> (TestApp, String) {
    let mut all = vec![
        "--request-timeout-ms",
        "1000",
        "--statement-timeout-ms",
        "60000",
        "--lock-timeout-ms",
        lock_timeout_ms,
    ];
    all.extend_from_slice(flags);
    let app = spawn_app_with(&all).await;
    let event = app.create_event("Cut off", 10, None).await;
    (app, id_of(&event))
}

/// The number of `idempotency_keys` rows under `key`, and whether one is completed.
async fn key_state(app: &TestApp, key: &str) -> (i64, bool) {
    sqlx::query_as(
        "SELECT count(*), coalesce(bool_or(state = 'completed'), false) \
         FROM idempotency_keys WHERE key = $1",
    )
    .bind(key)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_keyed_purchase_cut_off_by_the_request_timeout_is_replayed_to_its_retry() {
    for mode in [PER_REQUEST, BATCHED] {
        let (app, id) = cut_off_keyed_purchase(mode, "60000").await;
        let blocker = lock_event(&app.pool, &id).await;
        let (status, body, _) = keyed_purchase(&app, &id, 2, "cut-off", "order").await;
        assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
        );
        // The request is gone; its purchase still waits for the lock, under its claim.
        assert_eq!(key_state(&app, "order").await, (1, false), "{mode:?}");
        blocker.rollback().await.unwrap();
        // The work goes on without its request: it commits the hold and its response.
        eventually(
            "the cut-off purchase to commit",
            Duration::from_secs(10),
            || async { (key_state(&app, "order").await == (1, true)).then_some(()) },
        )
        .await;
        // The retry replays the hold that work made.
        let (status, hold, replayed) = keyed_purchase(&app, &id, 2, "cut-off", "order").await;
        assert_eq!(
            (status, replayed),
            (StatusCode::CREATED, true),
            "{mode:?}: {hold}"
        );
        assert_eq!(hold["quantity"], 2, "{hold}");
        assert_eq!(app.row_count("ticket_allocations").await, 1, "{mode:?}");
        let event = app.assert_balanced(&id).await;
        assert_eq!(event["reservedTickets"], 2, "{mode:?}: {event}");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_keyed_purchase_that_fails_after_its_request_was_cut_off_releases_its_key() {
    for mode in [PER_REQUEST, BATCHED] {
        // The lock wait ends in failure (lock timeout), after the request timeout.
        let (app, id) = cut_off_keyed_purchase(mode, "2500").await;
        let blocker = lock_event(&app.pool, &id).await;
        let (status, body, _) = keyed_purchase(&app, &id, 1, "unlucky", "order").await;
        assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
        );
        // Nothing was made, and the failure gives the claim up: not 120 s of
        // IDEMPOTENCY_IN_PROGRESS.
        eventually(
            "the failed attempt to release its key",
            Duration::from_secs(10),
            || async { (key_state(&app, "order").await.0 == 0).then_some(()) },
        )
        .await;
        blocker.rollback().await.unwrap();
        let (status, hold, replayed) = keyed_purchase(&app, &id, 1, "unlucky", "order").await;
        assert_eq!(
            (status, replayed),
            (StatusCode::CREATED, false),
            "{mode:?}: {hold}"
        );
        assert_eq!(app.row_count("ticket_allocations").await, 1, "{mode:?}");
        app.assert_balanced(&id).await;
        app.stop().await;
    }
}

/// Makes every keyed purchase's transaction fail at `point`: when its 201 is recorded, or at
/// its commit (a deferred trigger on the hold's row, run after every statement succeeded).
async fn fail_keyed_purchases(app: &TestApp, point: &str) {
    let statements: &[&str] = match point {
        "record" => &[
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
            "CREATE TRIGGER refuse BEFORE UPDATE ON idempotency_keys FOR EACH ROW \
             WHEN (NEW.response_status = 201) EXECUTE FUNCTION refuse()",
        ],
        _ => &[
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
            "CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON ticket_allocations \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()",
        ],
    };
    for statement in statements {
        sqlx::query(*statement).execute(&app.pool).await.unwrap();
    }
}

#[tokio::test]
async fn a_keyed_hold_and_its_recorded_response_commit_together_or_not_at_all() {
    for (mode, point) in [
        (BATCHED, "record"),
        (BATCHED, "commit"),
        (PER_REQUEST, "record"),
        (PER_REQUEST, "commit"),
    ] {
        let app = spawn_app_with(mode).await;
        let event = app.create_event("All or nothing", 10, None).await;
        let id = id_of(&event);
        fail_keyed_purchases(&app, point).await;
        let (status, body, _) = keyed_purchase(&app, &id, 3, "buyer", "order").await;
        assert_error(
            status,
            &body,
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
        );
        // Neither the hold nor its response: the key was given up, the counts never moved.
        assert_eq!(app.row_count("ticket_allocations").await, 0, "{point}");
        assert_eq!(key_state(&app, "order").await, (0, false), "{point}");
        let event = app.assert_balanced(&id).await;
        assert_eq!(event["availableTickets"], 10, "{point}: {event}");
        // Both, once the write can succeed: a fresh attempt, not a replay.
        sqlx::query("DROP FUNCTION refuse() CASCADE")
            .execute(&app.pool)
            .await
            .unwrap();
        let (status, hold, replayed) = keyed_purchase(&app, &id, 3, "buyer", "order").await;
        assert_eq!((status, replayed), (StatusCode::CREATED, false), "{hold}");
        assert_eq!(key_state(&app, "order").await, (1, true), "{point}");
        assert_eq!(app.row_count("ticket_allocations").await, 1, "{point}");
        app.stop().await;
    }
}

/// Whether a backend of `database` is waiting for a row lock.
async fn waits_for_a_lock(pool: &PgPool, database: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
                        WHERE datname = $1 AND wait_event_type = 'Lock')",
    )
    .bind(database)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_keyed_retry_after_a_kill_replays_a_committed_hold_and_never_one_that_was_not() {
    let options = fresh_database().await;
    let url = database_url(&options);
    let pool = PgPool::connect_with(options.clone()).await.unwrap();
    let database = options.get_database().unwrap().to_owned();
    let mut server = ServerProcess::start(&url, &[]).await;
    let event = server.create_event("Killed", 10, None).await;
    let id = id_of(&event);
    let keyed = |server: &ServerProcess, key: &str| {
        server
            .purchase_request(&id, 1, "survivor")
            .header("Idempotency-Key", key)
    };

    // Committed, then killed: the retry on the next process replays the hold.
    let (status, first) = server.send(keyed(&server, "done")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    server.kill();

    // Killed while its purchase waits for the event lock: nothing commits.
    server = ServerProcess::start(&url, &[]).await;
    let blocker = lock_event(&pool, &id).await;
    let cut = tokio::spawn(keyed(&server, "cut").send());
    eventually(
        "the purchase to wait for the lock",
        Duration::from_secs(10),
        || async { waits_for_a_lock(&pool, &database).await.then_some(()) },
    )
    .await;
    server.kill();
    assert!(cut.await.unwrap().is_err(), "the killed server answered");
    blocker.rollback().await.unwrap();

    server = ServerProcess::start(&url, &[]).await;
    let (status, again) = server.send(keyed(&server, "done")).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again, first, "the first hold, replayed");
    let holds: i64 = sqlx::query_scalar("SELECT count(*) FROM ticket_allocations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(holds, 1, "the killed attempt made no hold");
    // Its claim has no response and no effect: in progress until stale, then taken over.
    let (status, body) = server.send(keyed(&server, "cut")).await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "IDEMPOTENCY_IN_PROGRESS",
    );
    sqlx::query(
        "UPDATE idempotency_keys SET claimed_at = now() - interval '10 minutes' WHERE key = 'cut'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (status, fresh) = server.send(keyed(&server, "cut")).await;
    assert_eq!(status, StatusCode::CREATED, "{fresh}");
    assert_ne!(fresh["id"], first["id"]);
    let event = server.get(&format!("/events/{id}")).await.1;
    assert_eq!(event["reservedTickets"], 2, "{event}");
}

/// Payment recovery after one second; the app's own sweeper never runs during the test, so
/// the test decides when recovery happens (`sweep_once`).
const RECOVERY_BY_HAND: [&str; 4] = [
    "--payment-recovery-seconds",
    "1",
    "--sweep-interval-ms",
    "3600000",
];

/// A keyed payment of `hold` by `buyer` with `token`: (status, body, replayed, Retry-After).
async fn keyed_pay(
    app: &TestApp,
    hold: &str,
    buyer: &str,
    key: &str,
    token: &str,
) -> (StatusCode, Value, bool, Option<String>) {
    let response = app
        .request(Method::POST, &format!("/tickets/{hold}/payment"))
        .header("X-Device-Fingerprint", buyer)
        .header("Idempotency-Key", key)
        .json(&json!({ "paymentToken": token }))
        .send()
        .await
        .unwrap();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let retry_after = crate::helpers::retry_after(response.headers());
    let status = response.status();
    (
        status,
        response.json().await.unwrap(),
        replayed,
        retry_after,
    )
}

/// The stored key: (state, parked on allocation, parked on reference).
async fn parked_key(app: &TestApp, key: &str) -> (String, Option<uuid::Uuid>, Option<String>) {
    sqlx::query_as(
        "SELECT state, awaiting_allocation, awaiting_reference FROM idempotency_keys WHERE key = $1",
    )
    .bind(key)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Settles stale payments the way the sweeper does, once they are older than the recovery
/// age of one second; returns how many were settled.
async fn recover_payments(app: &TestApp) -> usize {
    tokio::time::sleep(Duration::from_millis(1200)).await;
    boxoffice::sweeper::sweep_once(&app.state.sweeper)
        .await
        .unwrap()
        .1
}

async fn charged(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM payment_charges WHERE outcome = 'charged'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

fn assert_unavailable(answer: &(StatusCode, Value, bool, Option<String>)) {
    let (status, body, replayed, retry_after) = answer;
    assert_error(
        *status,
        body,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    assert!(!replayed, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
}

#[tokio::test]
async fn a_payment_charged_but_unanswered_keeps_its_key_until_recovery_gives_the_purchase() {
    let app = spawn_app_with(&RECOVERY_BY_HAND).await;
    let (event_id, hold, buyer) = app.event_with_hold("Lost after charge", 10, 2).await;
    let first = keyed_pay(&app, &hold, &buyer, "pay-lost", "tok_lostAfterCharge").await;
    assert_unavailable(&first);
    let pending = app.allocation_row(&hold).await;
    assert_eq!(pending.status, "payment_pending");
    let reference = pending.payment_reference.clone().unwrap();
    assert_eq!(
        app.charge_outcome(&reference).await.as_deref(),
        Some("charged")
    );
    // Not released: parked on the payment whose outcome the request could not learn.
    let parked = parked_key(&app, "pay-lost").await;
    assert_eq!(
        parked,
        (
            "in_progress".to_owned(),
            Some(uuid::Uuid::parse_str(&hold).unwrap()),
            Some(reference.clone())
        )
    );

    // Before recovery the outcome is still unknown: 503 again, and no second payment begins.
    for _ in 0..2 {
        let again = keyed_pay(&app, &hold, &buyer, "pay-lost", "tok_lostAfterCharge").await;
        assert_unavailable(&again);
    }
    let still = app.allocation_row(&hold).await;
    assert_eq!(
        (still.status.as_str(), still.payment_reference.as_deref()),
        ("payment_pending", Some(reference.as_str()))
    );
    assert_eq!(app.row_count("payment_charges").await, 1);
    assert_eq!(parked_key(&app, "pay-lost").await, parked, "still parked");

    assert_eq!(recover_payments(&app).await, 1);
    let settled = app.allocation_row(&hold).await;
    assert_eq!(settled.status, "purchased");

    // The retry learns the purchase; from then on it is replayed.
    let (status, paid, replayed, _) =
        keyed_pay(&app, &hold, &buyer, "pay-lost", "tok_lostAfterCharge").await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{paid}");
    assert_eq!(paid["id"], hold.as_str(), "{paid}");
    assert_eq!(paid["status"], "purchased", "{paid}");
    assert_eq!(
        paid["confirmationCode"].as_str(),
        settled.confirmation_code.as_deref(),
        "{paid}"
    );
    let (state, awaiting, awaiting_reference) = parked_key(&app, "pay-lost").await;
    assert_eq!(
        (state.as_str(), awaiting, awaiting_reference),
        ("completed", None, None)
    );
    for _ in 0..2 {
        let (status, again, replayed, _) =
            keyed_pay(&app, &hold, &buyer, "pay-lost", "tok_lostAfterCharge").await;
        assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
        assert_eq!(again, paid, "the purchase, replayed whole");
    }
    assert_eq!(app.row_count("payment_charges").await, 1);
    assert_eq!(charged(&app).await, 1, "one charge");
    assert_eq!(app.event(&event_id).await["purchasedTickets"], 2);
}

#[tokio::test]
async fn a_payment_that_never_reached_the_provider_is_paid_afresh_by_its_retry_after_recovery() {
    let app = spawn_app_with(&RECOVERY_BY_HAND).await;
    let (event_id, hold, buyer) = app.event_with_hold("Unreachable once", 10, 2).await;
    let token = "tok_unreachableOnce";
    assert_unavailable(&keyed_pay(&app, &hold, &buyer, "pay-unreached", token).await);
    let first_reference = app.allocation_row(&hold).await.payment_reference.unwrap();
    assert_eq!(app.charge_outcome(&first_reference).await, None);
    let (_, awaiting, _) = parked_key(&app, "pay-unreached").await;
    assert_eq!(awaiting, Some(uuid::Uuid::parse_str(&hold).unwrap()));

    // Unknown until recovery: the retry neither pays nor frees the key.
    assert_unavailable(&keyed_pay(&app, &hold, &buyer, "pay-unreached", token).await);
    assert_eq!(app.row_count("payment_charges").await, 0);

    assert_eq!(recover_payments(&app).await, 1);
    let voided = app.allocation_row(&hold).await;
    assert_eq!(voided.status, "reserved");
    assert_eq!(
        app.charge_outcome(&first_reference).await.as_deref(),
        Some("voided")
    );

    // Nothing happened, so the retry runs afresh: a new payment, charged once.
    let (status, paid, replayed, _) = keyed_pay(&app, &hold, &buyer, "pay-unreached", token).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{paid}");
    assert_eq!(paid["status"], "purchased", "{paid}");
    let row = app.allocation_row(&hold).await;
    assert_eq!(row.status, "purchased");
    assert_ne!(
        row.payment_reference.as_deref(),
        Some(first_reference.as_str())
    );
    let (status, again, replayed, _) = keyed_pay(&app, &hold, &buyer, "pay-unreached", token).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again, paid);
    assert_eq!(charged(&app).await, 1, "one charge");
    assert_eq!(
        app.row_count("payment_charges").await,
        2,
        "the void and the charge"
    );
    assert_eq!(app.event(&event_id).await["purchasedTickets"], 2);
}

#[tokio::test]
async fn a_parked_claim_is_never_taken_over_as_stale() {
    let app = spawn_app_with(&RECOVERY_BY_HAND).await;
    let (_, hold, buyer) = app.event_with_hold("Parked and old", 10, 1).await;
    let token = "tok_lostAfterCharge";
    assert_unavailable(&keyed_pay(&app, &hold, &buyer, "pay-old", token).await);
    let parked = parked_key(&app, "pay-old").await;
    assert!(parked.1.is_some(), "{parked:?}");
    // Older than any attempt could run: an unparked claim this old would be taken over.
    sqlx::query(
        "UPDATE idempotency_keys SET claimed_at = now() - interval '10 minutes' WHERE key = 'pay-old'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // Taken over, the retry would run the payment again and find the hold payment_pending:
    // 409 INVALID_STATUS recorded for good. Parked, it still waits for the outcome.
    assert_unavailable(&keyed_pay(&app, &hold, &buyer, "pay-old", token).await);
    assert_eq!(parked_key(&app, "pay-old").await, parked);
    assert_eq!(app.allocation_row(&hold).await.status, "payment_pending");

    assert_eq!(recover_payments(&app).await, 1);
    let (status, paid, _, _) = keyed_pay(&app, &hold, &buyer, "pay-old", token).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["status"], "purchased", "{paid}");
}

#[tokio::test]
async fn two_retries_of_a_voided_payment_pay_once_and_the_key_keeps_the_purchase() {
    let app = spawn_app_with(&RECOVERY_BY_HAND).await;
    let (event_id, hold, buyer) = app.event_with_hold("Two retries", 10, 2).await;
    let token = "tok_unreachableOnce";
    assert_unavailable(&keyed_pay(&app, &hold, &buyer, "pay-twice", token).await);
    assert_eq!(recover_payments(&app).await, 1);
    assert_eq!(app.allocation_row(&hold).await.status, "reserved");

    // Both retries find the claim parked and the payment voided; the key row is held, so
    // both then wait to take the claim over (`unpark`), and only one can.
    let mut blocker = Blocker::begin(&app.pool).await;
    sqlx::query("SELECT 1 FROM idempotency_keys WHERE key = 'pay-twice' FOR UPDATE")
        .fetch_one(blocker.conn())
        .await
        .unwrap();
    let release = async {
        let waiters = blocker.wait_for_waiters(2).await;
        assert!(
            waiters
                .iter()
                .all(|q| q.contains("awaiting_allocation = NULL")),
            "both retries wait to take the parked claim: {waiters:?}"
        );
        blocker.release().await;
    };
    let (first, second, ()) = tokio::join!(
        keyed_pay(&app, &hold, &buyer, "pay-twice", token),
        keyed_pay(&app, &hold, &buyer, "pay-twice", token),
        release
    );
    let (winner, loser) = if first.0 == StatusCode::OK {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(
        (winner.0, winner.2),
        (StatusCode::OK, false),
        "{}",
        winner.1
    );
    assert_eq!(winner.1["status"], "purchased", "{}", winner.1);
    assert_error(
        loser.0,
        &loser.1,
        StatusCode::CONFLICT,
        "IDEMPOTENCY_IN_PROGRESS",
    );
    // The loser left the winner's claim alone: the key holds the purchase.
    let (status, again, replayed, _) = keyed_pay(&app, &hold, &buyer, "pay-twice", token).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again, winner.1);
    assert_eq!(charged(&app).await, 1, "one charge");
    assert_eq!(app.event(&event_id).await["purchasedTickets"], 2);
}
