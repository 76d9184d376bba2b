//! A transaction of the test's own that holds row locks while requests are sent, so a test
//! can show what waits for which lock, and what a request decides once the lock is released.

use std::time::Duration;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::eventually;

/// An open transaction on a connection of the test's pool (not the app's), and its backend.
pub struct Blocker {
    tx: Transaction<'static, Postgres>,
    /// The blocker's backend process id, as `pg_blocking_pids` names it.
    pub pid: i32,
    pool: PgPool,
}

impl Blocker {
    /// Begins a transaction on `pool`'s database.
    pub async fn begin(pool: &PgPool) -> Self {
        let mut tx = pool.begin().await.expect("the blocker begins");
        let pid = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        Self {
            tx,
            pid,
            pool: pool.clone(),
        }
    }

    /// The blocker's connection, for the changes it makes before it commits.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Takes the event row lock, in the mode every writing transaction takes it first.
    pub async fn lock_event(&mut self, event_id: &str) {
        sqlx::query("SELECT 1 FROM events WHERE id = $1 FOR NO KEY UPDATE")
            .bind(Uuid::parse_str(event_id).unwrap())
            .fetch_one(&mut *self.tx)
            .await
            .expect("the blocker locks the event row");
    }

    /// Takes an allocation's row lock, and only it (not its event's).
    pub async fn lock_allocation(&mut self, allocation_id: &str) {
        sqlx::query("SELECT 1 FROM ticket_allocations WHERE id = $1 FOR NO KEY UPDATE")
            .bind(Uuid::parse_str(allocation_id).unwrap())
            .fetch_one(&mut *self.tx)
            .await
            .expect("the blocker locks the allocation row");
    }

    /// Backends of this database waiting behind the blocker, with the statement each waits
    /// in: waiting for a lock it holds, or queued behind such a waiter (the second waiter
    /// for a row waits for the first, which holds the row's place in line).
    pub async fn waiters(&self) -> Vec<String> {
        sqlx::query_scalar(
            "WITH RECURSIVE behind (pid) AS ( \
                 SELECT pid FROM pg_stat_activity \
                 WHERE datname = current_database() AND $1 = ANY (pg_blocking_pids(pid)) \
                 UNION \
                 SELECT waiter.pid FROM pg_stat_activity waiter JOIN behind \
                   ON behind.pid = ANY (pg_blocking_pids(waiter.pid)) \
                 WHERE waiter.datname = current_database()) \
             SELECT query FROM pg_stat_activity \
             WHERE pid IN (SELECT pid FROM behind) AND wait_event_type = 'Lock'",
        )
        .bind(self.pid)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Waits until at least `count` backends wait behind the blocker; returns their
    /// statements. Polled every 20 ms, so the caller acts well within the app's 5 s lock
    /// timeout, which counts from when a waiter began to wait.
    pub async fn wait_for_waiters(&self, count: usize) -> Vec<String> {
        eventually(
            &format!("{count} backend(s) to wait behind the blocker"),
            Duration::from_secs(10),
            || async {
                let waiters = self.waiters().await;
                (waiters.len() >= count).then_some(waiters)
            },
        )
        .await
    }

    /// Commits the blocker's changes, releasing its locks.
    pub async fn commit(self) {
        self.tx.commit().await.expect("the blocker commits");
    }

    /// Rolls the blocker back: its locks go, and nothing it did stays.
    pub async fn release(self) {
        self.tx.rollback().await.expect("the blocker rolls back");
    }
}
