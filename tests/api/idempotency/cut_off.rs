//! A keyed request cut off (by the request timeout, a late failure or a kill) settles its
//! claim by what happened; a hold and its recorded response commit together or not at all.

use std::time::Duration;

use reqwest::StatusCode;
use sqlx::PgPool;

use super::keyed_purchase;
use crate::helpers::{
    BATCHED, PER_REQUEST, ServerProcess, TestApp, assert_error, database_url, eventually,
    fresh_database, id_of, spawn_app_on, spawn_app_with,
};
use crate::timeouts::lock_event;

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
        // Nothing was made, and the failure gives the claim up: not the stale age of
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

/// The reviewer's probe for shutdown: a keyed purchase cut off by the request timeout fails
/// (lock timeout) only after a graceful shutdown began. The shutdown waits for its task, so
/// the failure gives the claim up before the pool closes, and a retry on a new instance runs
/// afresh instead of getting 409 `IDEMPOTENCY_IN_PROGRESS` until the claim is stale.
#[tokio::test]
async fn a_graceful_shutdown_waits_for_a_cut_off_keyed_purchase_to_settle_its_claim() {
    let options = fresh_database().await;
    let flags = ["--request-timeout-ms", "1000", "--lock-timeout-ms", "3000"];
    let app = spawn_app_on(&options, &flags).await;
    let id = id_of(&app.create_event("Shut down", 10, None).await);
    let pool = app.pool.clone();
    let blocker = lock_event(&pool, &id).await;
    let (status, body, _) = keyed_purchase(&app, &id, 1, "buyer", "order").await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    assert_eq!(key_state(&app, "order").await, (1, false));
    // Shut down while the purchase still waits for the lock; it fails after that.
    app.stop().await;
    blocker.rollback().await.unwrap();
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 0, "the claim outlived the shutdown");

    let app = spawn_app_on(&options, &[]).await;
    let (status, hold, replayed) = keyed_purchase(&app, &id, 1, "buyer", "order").await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{hold}");
    app.assert_balanced(&id).await;
    app.stop().await;
}

/// A release that fails once (a statement error, as in a short database outage) is tried
/// again: the claim is given up, not left in progress until stale.
#[tokio::test]
async fn a_release_that_fails_once_is_tried_again() {
    let app = spawn_app_with(&["--lock-timeout-ms", "300"]).await;
    let id = id_of(&app.create_event("Flaky release", 10, None).await);
    for statement in [
        "CREATE SEQUENCE release_tries",
        "CREATE FUNCTION refuse_first() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF nextval('release_tries') = 1 THEN RAISE EXCEPTION 'refused once'; END IF; \
         RETURN OLD; END $$",
        "CREATE TRIGGER refuse_first BEFORE DELETE ON idempotency_keys \
         FOR EACH ROW EXECUTE FUNCTION refuse_first()",
    ] {
        sqlx::query(statement).execute(&app.pool).await.unwrap();
    }
    let blocker = lock_event(&app.pool, &id).await;
    // The lock timeout fails the purchase (503), with no effect: its claim is released.
    let (status, body, _) = keyed_purchase(&app, &id, 1, "buyer", "order").await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    blocker.rollback().await.unwrap();
    let tries: i64 = sqlx::query_scalar("SELECT last_value FROM release_tries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(tries, 2, "the release was tried twice");
    assert_eq!(key_state(&app, "order").await, (0, false));
    app.stop().await;
}

/// A keyed purchase whose request was cut off, and which then fails with a 500, logs its
/// cause from its own task: no response reaches the request log to carry it.
#[tokio::test]
async fn a_cut_off_keyed_purchase_that_fails_logs_its_cause() {
    let options = fresh_database().await;
    let url = database_url(&options);
    let pool = PgPool::connect_with(options.clone()).await.unwrap();
    let server = ServerProcess::start(
        &url,
        &["--request-timeout-ms", "1000", "--lock-timeout-ms", "60000"],
    )
    .await;
    let id = id_of(&server.create_event("Unlogged", 10, None).await);
    let blocker = lock_event(&pool, &id).await;
    let (status, body) = server
        .send(
            server
                .purchase_request(&id, 1, "buyer")
                .header("Idempotency-Key", "order"),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    // The record of its 201 will fail: a 500 nobody waits for.
    for statement in [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
        "CREATE TRIGGER refuse BEFORE UPDATE ON idempotency_keys FOR EACH ROW \
         WHEN (NEW.response_status = 201) EXECUTE FUNCTION refuse()",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    blocker.rollback().await.unwrap();
    eventually(
        "the cut-off purchase's failure in the log",
        Duration::from_secs(10),
        || async {
            let log = server.log_text();
            log.lines()
                .any(|line| {
                    line.contains("refused by the test")
                        && line.contains("ERROR")
                        && line.contains(&format!("/events/{id}/tickets"))
                        && line.contains("500")
                })
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM ticket_allocations")
            .fetch_one(&pool)
            .await
            .unwrap(),
        0
    );
}
