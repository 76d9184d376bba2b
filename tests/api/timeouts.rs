//! Every wait is bounded: a row lock held elsewhere (`--lock-timeout-ms`), a statement over
//! its time (`--statement-timeout-ms`), a request over its time (`--request-timeout-ms`) and
//! a pool with no free connection (5 s) each end in a prompt 503 with `Retry-After`, and
//! leave the counts balanced; a body that stops arriving is the client's 408, not a 503; a
//! request never finished does not hold up shutdown. The
//! session settings behind them, and READ COMMITTED, are pinned on every pooled connection
//! whatever the database's own defaults.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{
    PER_REQUEST, TestApp, admin_connection, answered, assert_error, fresh_database, id_of,
    new_fingerprint, spawn_app_on, spawn_app_with,
};

/// Holds the event's row lock in a transaction of its own until dropped or rolled back.
pub(crate) async fn lock_event(
    pool: &PgPool,
    event_id: &str,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
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

#[tokio::test]
async fn no_free_pooled_connection_within_5_s_gives_503() {
    let app = spawn_app_with(&[]).await;
    let event = app.create_event("Pool", 10, None).await;
    let path = format!("/events/{}", id_of(&event));
    // Take every connection of the app's own pool, and keep them.
    let mut taken = Vec::new();
    while let Ok(Ok(conn)) =
        tokio::time::timeout(Duration::from_secs(1), app.state.pool.acquire()).await
    {
        taken.push(conn);
    }
    // All 16 are in use: ours, and the change listener's.
    let pool = &app.state.pool;
    assert_eq!(
        (pool.size(), pool.num_idle()),
        (16, 0),
        "{} taken",
        taken.len()
    );
    let started = Instant::now();
    let (status, body, retry_after) = answered(app.request(reqwest::Method::GET, &path)).await;
    let took = started.elapsed();
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    assert_eq!(retry_after.as_deref(), Some("1"));
    // The pool's wait (5 s), not the request timeout (30 s), ended it.
    assert!(
        (Duration::from_millis(4500)..Duration::from_secs(10)).contains(&took),
        "answered after {took:?}"
    );
    drop(taken);
    assert_eq!(app.get(&path).await.0, StatusCode::OK);
}

#[tokio::test]
async fn sessions_stay_read_committed_on_a_database_whose_default_is_serializable() {
    let options = fresh_database().await;
    let database = options.get_database().unwrap().to_owned();
    let mut admin = admin_connection().await;
    for setting in [
        "default_transaction_isolation = 'serializable'",
        "lock_timeout = '1min'",
        "statement_timeout = '2min'",
        "jit = on",
    ] {
        let statement = format!("ALTER DATABASE \"{database}\" SET {setting}");
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let mut flags = vec![
        "--lock-timeout-ms",
        "4321",
        "--statement-timeout-ms",
        "12345",
    ];
    flags.extend_from_slice(PER_REQUEST);
    let app = spawn_app_on(&options, &flags).await;
    // The test's own pool is not pinned: it shows the database's default took effect.
    let default: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(default, "serializable");
    // Every connection of the app's pool, each opened fresh, is pinned.
    let mut connections = Vec::new();
    for _ in 0..8 {
        connections.push(app.state.pool.acquire().await.unwrap());
    }
    for conn in &mut connections {
        let settings: (String, String, String, String) = sqlx::query_as(
            "SELECT current_setting('transaction_isolation'), \
                    current_setting('lock_timeout'), current_setting('statement_timeout'), \
                    current_setting('jit')",
        )
        .fetch_one(&mut **conn)
        .await
        .unwrap();
        let expected = ("read committed", "4321ms", "12345ms", "off");
        assert_eq!(
            (
                settings.0.as_str(),
                settings.1.as_str(),
                settings.2.as_str(),
                settings.3.as_str()
            ),
            expected
        );
    }
    drop(connections);

    // Buyers queue on one event row: under SERIALIZABLE every one that waited for a
    // purchase's commit would fail (40001, a 500); pinned, each is answered by the rules.
    let event = app.create_event("Serializable default", 30, None).await;
    let id = id_of(&event);
    let buyers: Vec<String> = (0..60).map(|_| new_fingerprint()).collect();
    let answers = join_all(buyers.iter().map(|buyer| app.purchase(&id, 1, buyer))).await;
    let mut granted = 0;
    for (status, body) in &answers {
        if *status == StatusCode::CREATED {
            granted += 1;
        } else {
            assert_error(*status, body, StatusCode::CONFLICT, "TICKETS_SOLD_OUT");
        }
    }
    assert_eq!(granted, 30);
    let event = app.assert_balanced(&id).await;
    assert_eq!(event["availableTickets"], 0, "{event}");
}

/// A connection that sends half a request and then nothing does not hold a graceful shutdown
/// up: the drain waits for it at most the request timeout plus a margin (src/http/serve.rs),
/// while hyper would wait for the rest of its request until the head timeout (30 s here).
#[tokio::test]
async fn a_request_never_finished_does_not_hold_up_shutdown() {
    let app = spawn_app_with(&["--request-timeout-ms", "500"]).await;
    let address = app.socket_address();
    let mut stalled = tokio::net::TcpStream::connect(address).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stalled, b"GET /health HTTP/1.1\r\n")
        .await
        .unwrap();
    // The server has read the first line before shutdown begins.
    let (status, _) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK);

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), app.stop())
        .await
        .expect("shutdown ends although a request was never finished");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the drain gave the connection its request timeout first ({:?})",
        started.elapsed()
    );
    drop(stalled);
}

/// A request whose body stops arriving is held up by its client: when the request timeout
/// ends it, the answer is 408 `REQUEST_TIMEOUT` (not the server's 503), the connection is
/// closed, and nothing was made. A body that arrives whole keeps the 503 of a slow server
/// (`a_request_over_its_timeout_gives_503_instead_of_waiting`).
#[tokio::test]
async fn a_body_that_stops_arriving_is_a_408_and_makes_nothing() {
    let app = spawn_app_with(&["--request-timeout-ms", "500"]).await;
    let address = app.socket_address();
    let body = r#"{"name":"Never sent whole","date":"2030-01-01T20:00:00Z","totalTickets":5}"#;
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let stalled = [head.as_bytes(), &body.as_bytes()[..20]].concat();

    // The server answers and closes (within the request timeout and a margin), so reading
    // to the end finishes.
    let answer = app.raw_answer(&stalled).await;
    let (head, json) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let json: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_error(
        StatusCode::REQUEST_TIMEOUT,
        &json,
        StatusCode::REQUEST_TIMEOUT,
        "REQUEST_TIMEOUT",
    );

    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        events, 0,
        "a request whose body never arrived made an event"
    );
    app.stop().await;
}
