//! A runtime of its own for the transactions that hold a hot event's row lock.
//!
//! Every buyer of an event waits while its batch holds the event row: the lock is held for
//! the batch's round trips to the database, and after each one the batch's task must be
//! polled again before the next statement goes out. On the server's runtime that task
//! queues behind the hundreds of request tasks it serves; on two saturated cores that wait,
//! repeated for every round trip, was most of the lock's hold time. The batches therefore
//! run on a runtime with one worker thread of its own, over connections registered with that
//! runtime's I/O driver: when the database answers, the thread wakes on its own epoll and
//! runs the batch at once, with nothing queued in front of it.
//!
//! Only the coalescers' workers run here; request handlers stay on the server's runtime and
//! hear their answers through a channel.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::runtime::{Handle, Runtime};

use crate::db;

/// The runtime and the pool its batches use. Cloning shares both; the runtime's thread
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct LockRuntime {
    /// Held for its `Drop`: the runtime stops with the last clone.
    _owner: Arc<Owner>,
    handle: Handle,
    pool: PgPool,
}

/// Shuts the runtime down without waiting, so the last clone may be dropped anywhere,
/// including inside another runtime.
struct Owner(Option<Runtime>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl LockRuntime {
    /// Starts the thread and a pool of at most `max_connections` to `pool`'s database, with
    /// the same session settings. Connections are made when first needed, from the
    /// runtime's thread.
    pub fn start(pool: &PgPool, max_connections: u32) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("boxoffice-locks")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        // Created inside the runtime, so the pool's connections and its upkeep live there.
        let pool = {
            let _inside = handle.enter();
            db::lazy_twin(pool, max_connections)
        };
        Ok(Self {
            _owner: Arc::new(Owner(Some(runtime))),
            handle,
            pool,
        })
    }

    /// Where batch workers are spawned.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The pool for the work run on this runtime; use it only from there.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::purchase::coalescer::{BatchWork, Coalescer};

    /// A coalescer made for this runtime runs its batches on the runtime's own thread, and
    /// the callers, on another runtime, hear their answers.
    #[tokio::test]
    async fn batches_run_on_the_lock_thread() {
        // Both pools are lazy: nothing connects in this test.
        let options = sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(1);
        let server_pool = sqlx::postgres::PgPoolOptions::new().connect_lazy_with(options);
        let locks = LockRuntime::start(&server_pool, 1).expect("the lock runtime starts");
        let work: BatchWork<u32, String> = Arc::new(|_, inputs| {
            Box::pin(async move {
                let thread = std::thread::current().name().unwrap_or("").to_owned();
                inputs.iter().map(|i| format!("{i} on {thread}")).collect()
            })
        });
        let batches = Coalescer::on_runtime(locks.clone(), 16, work);
        let answer = tokio::time::timeout(Duration::from_secs(5), batches.submit(Uuid::nil(), 7))
            .await
            .expect("answered")
            .expect("a batch answer");
        assert_eq!(answer, "7 on boxoffice-locks");
        assert_ne!(
            std::thread::current().name(),
            Some("boxoffice-locks"),
            "the caller runs elsewhere"
        );
    }
}
