//! The supervisor: starts the embedded server again when it dies, until shutdown.

use std::path::{Path, PathBuf};

use tokio::sync::watch;

use super::*;

/// Watches an embedded server from a background task and starts it again on the same cluster
/// when it dies (killed, crashed), so the service recovers without a restart; requests meanwhile
/// fail with 503 and the pool reconnects by itself.
#[derive(Debug)]
pub struct Supervisor {
    cluster_dir: PathBuf,
    shutting_down: watch::Sender<bool>,
    task: tokio::task::JoinHandle<EmbeddedPostgres>,
}

/// Tells a [`Supervisor`] that shutdown has begun: a server that dies from then on stays down.
#[derive(Debug, Clone)]
pub struct ShuttingDown(watch::Sender<bool>);

impl ShuttingDown {
    pub fn announce(&self) {
        self.0.send_replace(true);
    }
}

impl Supervisor {
    /// Hands `server` to a new background task on the current Tokio runtime.
    pub fn watch(server: EmbeddedPostgres) -> Self {
        let cluster_dir = server.cluster_dir.clone();
        let (shutting_down, stop) = watch::channel(false);
        let task = tokio::spawn(supervise(server, stop));
        Self {
            cluster_dir,
            shutting_down,
            task,
        }
    }

    pub fn cluster_dir(&self) -> &Path {
        &self.cluster_dir
    }

    /// A handle to announce shutdown with, from wherever shutdown begins.
    pub fn shutting_down(&self) -> ShuttingDown {
        ShuttingDown(self.shutting_down.clone())
    }

    /// Ends supervision, then stops the server (fast shutdown) and waits for it to exit.
    pub async fn stop(self) -> Result<(), EmbeddedError> {
        self.shutting_down.send_replace(true);
        let failed = |detail: tokio::task::JoinError| EmbeddedError::Failed {
            action: "stopping postgres",
            detail: detail.to_string(),
        };
        let mut server = self.task.await.map_err(failed)?;
        tokio::task::spawn_blocking(move || server.stop())
            .await
            .map_err(failed)?
    }
}

/// The supervisor's loop: checks the server every [`WATCH_INTERVAL`] and starts it again when
/// it has exited, backing off while starts fail (for example while the dead server's backends
/// still hold its shared memory). Returns the server once shutdown is announced, or once the
/// [`Supervisor`] is gone.
async fn supervise(
    mut server: EmbeddedPostgres,
    mut shutting_down: watch::Receiver<bool>,
) -> EmbeddedPostgres {
    let mut delay = WATCH_INTERVAL;
    loop {
        let stop = tokio::select! {
            changed = shutting_down.changed() => changed.is_err() || *shutting_down.borrow(),
            () = tokio::time::sleep(delay) => false,
        };
        // Checked again after the sleep: shutdown may have begun while a start was under way.
        if stop || *shutting_down.borrow() {
            return server;
        }
        if server.is_running() {
            delay = WATCH_INTERVAL;
            continue;
        }
        tracing::warn!(cluster = %server.cluster_dir.display(), "starting the embedded PostgreSQL again");
        let started;
        (server, started) = tokio::task::spawn_blocking(move || {
            let started = server.spawn();
            (server, started)
        })
        .await
        .expect("starting postgres does not panic");
        match started {
            Ok(()) => {
                tracing::info!(
                    pid = server.pid(),
                    "the embedded PostgreSQL is running again"
                );
                delay = WATCH_INTERVAL;
            }
            Err(err) => {
                delay = (delay * 2).min(MAX_RETRY_DELAY);
                tracing::warn!(error = %err, retry_in = ?delay, "starting the embedded PostgreSQL again failed");
            }
        }
    }
}
