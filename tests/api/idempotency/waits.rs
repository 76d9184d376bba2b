//! The protocol's waits and takeovers: a duplicate waits for a slow first attempt, a completed
//! key replays however old its claim, an expired key runs again exactly once. Written for
//! mutants of `src/idempotency.rs` that the rest of the suite let survive: each test names
//! the mutant it kills (docs/testing.md, "Mutation testing").

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::keyed_purchase;
use crate::helpers::{TestApp, eventually, id_of, spawn_app};

/// A keyed purchase by this file's one buyer.
async fn keyed(app: &TestApp, event: &str, quantity: i64, key: &str) -> (StatusCode, Value, bool) {
    keyed_purchase(app, event, quantity, "mutant-hunter", key).await
}

/// Makes the stored key look 25 hours old: past its lifetime, so the next request under it
/// is a new request.
async fn expire_key(pool: &PgPool, key: &str) {
    let updated = sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = $1",
    )
    .bind(key)
    .execute(pool)
    .await
    .unwrap();
    assert_eq!(updated.rows_affected(), 1);
}

/// Kills `replace + with - in begin` (the wait's deadline in the past) and `replace >= with <
/// in begin` (the deadline test inverted): either answers a duplicate 409 at its first look
/// instead of waiting for a first attempt that finishes well within the 5 s wait.
#[tokio::test]
async fn a_duplicate_waits_for_a_slow_first_attempt_and_replays_its_answer() {
    let app = spawn_app().await;
    let event = app.create_event("Slow first", 10, None).await;
    let id = id_of(&event);
    // The first attempt claims its key, then queues for the event row lock this transaction
    // holds: it stays in progress until the blocker rolls back.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM events WHERE id = $1 FOR UPDATE")
        .bind(Uuid::parse_str(&id).unwrap())
        .execute(&mut *blocker)
        .await
        .unwrap();
    let first = keyed(&app, &id, 2, "slow");
    let duplicate_then_release = async {
        eventually(
            "the first attempt's claim",
            Duration::from_secs(10),
            || async {
                let claimed: Option<String> =
                    sqlx::query_scalar("SELECT state FROM idempotency_keys WHERE key = 'slow'")
                        .fetch_optional(&app.pool)
                        .await
                        .unwrap();
                claimed.filter(|state| state == "in_progress")
            },
        )
        .await;
        let duplicate = keyed(&app, &id, 2, "slow");
        let release = async {
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            blocker.rollback().await.unwrap();
        };
        tokio::join!(duplicate, release).0
    };
    let ((status, body, replayed), (dup_status, dup_body, dup_replayed)) =
        tokio::join!(first, duplicate_then_release);
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{body}");
    assert_eq!(
        (dup_status, dup_replayed),
        (StatusCode::CREATED, true),
        "the duplicate waited for the first answer: {dup_body}"
    );
    assert_eq!(dup_body, body);
    assert_eq!(app.row_count("ticket_allocations").await, 1);
}

/// Kills `replace && with || in begin` (in `!s.completed && claim_age >= STALE`): a completed
/// key whose claim is older than the stale age would count as abandoned, never be replayed,
/// and end in 409 after the wait.
#[tokio::test]
async fn a_completed_key_is_replayed_however_long_ago_it_was_claimed() {
    let app = spawn_app().await;
    let event = app.create_event("Old claim", 10, None).await;
    let id = id_of(&event);
    let (status, first, _) = keyed(&app, &id, 1, "done-long-ago").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    // Within the key's 24 hours, but claimed long before any attempt could still run.
    sqlx::query(
        "UPDATE idempotency_keys SET claimed_at = now() - interval '10 minutes' \
         WHERE key = 'done-long-ago'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (status, again, replayed) = keyed(&app, &id, 1, "done-long-ago").await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true), "{again}");
    assert_eq!(again, first);
    assert_eq!(app.row_count("ticket_allocations").await, 1);
}

/// Kills `replace && with || in begin` (in `abandoned && reclaim(..)`): an expired key would
/// run again without being claimed anew, so its new answer is never recorded and the next
/// retry makes yet another hold.
#[tokio::test]
async fn an_expired_key_runs_again_once_and_then_replays_the_new_answer() {
    let app = spawn_app().await;
    let event = app.create_event("Renewed key", 10, None).await;
    let id = id_of(&event);
    let (status, old, _) = keyed(&app, &id, 1, "renewed").await;
    assert_eq!(status, StatusCode::CREATED, "{old}");
    expire_key(&app.pool, "renewed").await;

    let (status, new, replayed) = keyed(&app, &id, 1, "renewed").await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{new}");
    assert_ne!(new["id"], old["id"]);
    let (status, again, replayed) = keyed(&app, &id, 1, "renewed").await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true), "{again}");
    assert_eq!(again, new);
    assert_eq!(app.row_count("ticket_allocations").await, 2);
}

/// Kills `replace match guard abandoned with false in begin`: a retry that saw the expired
/// key but lost the takeover to a concurrent retry would judge the key by its stale copy
/// (the old request) and answer 422 `IDEMPOTENCY_KEY_REUSED`, instead of looking again and
/// replaying the winner's answer. The race is made certain, not hoped for: a blocker holds
/// the key's row lock until every retry has read the expired key and queued on that lock in
/// its takeover, so one takes over and all the others lose with a stale copy in hand.
#[tokio::test]
async fn concurrent_retries_of_an_expired_key_all_get_the_one_new_answer() {
    const RETRIES: i64 = 8;
    let app = spawn_app().await;
    let event = app.create_event("Renewed at once", 100, None).await;
    let id = id_of(&event);
    let (status, old, _) = keyed(&app, &id, 1, "stampede").await;
    assert_eq!(status, StatusCode::CREATED, "{old}");
    expire_key(&app.pool, "stampede").await;

    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM idempotency_keys WHERE key = 'stampede' FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    // Another request under the expired key: quantity 2 instead of 1.
    let retries =
        futures_util::future::join_all((0..RETRIES).map(|_| keyed(&app, &id, 2, "stampede")));
    let release = async {
        eventually(
            "every retry queued on the key's row lock",
            Duration::from_secs(10),
            || async {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock' \
                       AND query LIKE 'UPDATE idempotency_keys%'",
                )
                .fetch_one(&app.pool)
                .await
                .unwrap();
                (waiting == RETRIES).then_some(())
            },
        )
        .await;
        blocker.rollback().await.unwrap();
    };
    let (answers, ()) = tokio::join!(retries, release);

    for (status, body, _) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
        assert_eq!(body["id"], answers[0].1["id"], "one new hold for all");
    }
    assert_ne!(answers[0].1["id"], old["id"]);
    assert_eq!(
        answers.iter().filter(|(_, _, replayed)| !replayed).count(),
        1,
        "one attempt ran, the others replayed it"
    );
    assert_eq!(app.row_count("ticket_allocations").await, 2);
}

/// The sweeper's purge of keys past their 24 hours skips a key row another transaction holds
/// (a batch recording its claim), and so never waits for one: deleting several rows in scan
/// order while a batch locks its claims in key order could close a cycle of waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_of_old_keys_skips_a_key_in_use_and_never_waits() {
    // A database of its own and no app: an app's sweeper purges too, at times of its own.
    let pool = PgPool::connect_with(crate::helpers::fresh_database().await)
        .await
        .unwrap();
    for key in ["old-a", "old-b", "old-c"] {
        sqlx::query(
            "INSERT INTO idempotency_keys (fingerprint_hash, key, request_hash, created_at) \
             VALUES ($1, $2, 'hash', now() - interval '25 hours')",
        )
        .bind("a".repeat(64))
        .bind(key)
        .execute(&pool)
        .await
        .unwrap();
    }
    let mut blocker = crate::helpers::Blocker::begin(&pool).await;
    sqlx::query("SELECT 1 FROM idempotency_keys WHERE key = 'old-b' FOR UPDATE")
        .execute(blocker.conn())
        .await
        .unwrap();
    let purged = tokio::time::timeout(
        Duration::from_secs(2),
        boxoffice::db::idempotency::purge_expired(&pool, 100),
    )
    .await
    .expect("the purge does not wait for the held key")
    .unwrap();
    assert_eq!(purged, 2, "the two keys no one holds");
    blocker.commit().await;
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, ["old-b"], "the held key, for a later round");
}
