//! A proxy between an app and its PostgreSQL that a test can freeze and cut, to lose the
//! answer to a statement the database has already committed: what a failover does to the
//! statement in flight when the primary dies after its commit.

use std::path::PathBuf;

use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Listens on a socket directory of its own, under the database's port, and forwards each
/// connection to the database's socket.
pub struct DbProxy {
    dir: PathBuf,
    /// True while the database's answers are held back (nothing forwarded to the app).
    frozen: watch::Sender<bool>,
    /// Raised to close every connection open now.
    cut: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl DbProxy {
    /// Starts a proxy for the database `options` names (a socket directory); the options to
    /// give the app instead are [`DbProxy::options`].
    pub async fn start(options: &PgConnectOptions) -> Self {
        let target_dir = options
            .get_socket()
            .expect("the test cluster is on a socket");
        let port = options.get_port();
        let target = target_dir.join(format!(".s.PGSQL.{port}"));
        let dir = std::env::temp_dir().join(format!("boxoffice-db-proxy-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let listener = UnixListener::bind(dir.join(format!(".s.PGSQL.{port}"))).unwrap();
        let (frozen, _) = watch::channel(false);
        let (cut, _) = watch::channel(0u64);
        let accept = tokio::spawn(accept_loop(listener, target, frozen.clone(), cut.clone()));
        Self {
            dir,
            frozen,
            cut,
            accept,
        }
    }

    /// `options` with the proxy's socket directory in place of the database's.
    pub fn options(&self, options: &PgConnectOptions) -> PgConnectOptions {
        options.clone().socket(&self.dir)
    }

    /// From now on, what the database sends is held back, not forwarded.
    pub fn freeze_answers(&self) {
        self.frozen.send_replace(true);
    }

    /// Closes every open connection (the app sees its connection end, as in a failover),
    /// dropping whatever was held back, and forwards freely again for new connections.
    pub fn cut_and_thaw(&self) {
        self.cut.send_modify(|round| *round += 1);
        self.frozen.send_replace(false);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn accept_loop(
    listener: UnixListener,
    target: PathBuf,
    frozen: watch::Sender<bool>,
    cut: watch::Sender<u64>,
) {
    let mut connections = JoinSet::new();
    while let Ok((app_side, _)) = listener.accept().await {
        let (target, frozen, cut) = (target.clone(), frozen.subscribe(), cut.subscribe());
        connections.spawn(forward(app_side, target, frozen, cut));
    }
}

/// Forwards one connection both ways until either side closes or the proxy cuts it.
async fn forward(
    app_side: UnixStream,
    target: PathBuf,
    mut frozen: watch::Receiver<bool>,
    mut cut: watch::Receiver<u64>,
) {
    let Ok(database_side) = UnixStream::connect(&target).await else {
        return;
    };
    cut.mark_unchanged();
    let (mut app_read, mut app_write) = app_side.into_split();
    let (mut database_read, mut database_write) = database_side.into_split();
    let to_database = async {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = app_read.read(&mut buffer).await {
            if database_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
    };
    let to_app = async {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = database_read.read(&mut buffer).await {
            // Held back while frozen: until the cut drops it, or a thaw lets it through.
            if frozen.wait_for(|frozen| !frozen).await.is_err() {
                break;
            }
            if app_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
    };
    // The cut first: it comes with the thaw, and what was held back must not get through.
    tokio::select! {
        biased;
        _ = cut.changed() => {}
        () = to_database => {}
        () = to_app => {}
    }
}
