//! The zero-setup database: a private PostgreSQL cluster under the data directory, started
//! from the server binaries installed on this machine and stopped with the process.
//!
//! The server listens only on a Unix socket inside the cluster directory (mode 0700), so no
//! other local user can reach it and no TCP port is taken. PostgreSQL refuses to run as root,
//! so when this process is root, `initdb` and `postgres` run as the `postgres` system user.
//!
//! One process owns a data directory: it holds an advisory lock on `<data-dir>/boxoffice.lock`
//! for its whole life, and the kernel releases the lock when the process dies, however it
//! dies. A server found running without a lock holder is therefore a leftover. While the
//! owner runs, a [`Supervisor`] starts the server again if it dies.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

mod cluster;
mod supervisor;

pub use supervisor::{ShuttingDown, Supervisor};

use cluster::*;

/// The port only names the socket file (`.s.PGSQL.5432`); nothing listens on TCP.
const SOCKET_PORT: u16 = 5432;
/// Unix socket paths are limited to 107 bytes on Linux.
const MAX_SOCKET_PATH: usize = 100;
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The file in the data directory whose lock marks its owner (and holds the owner's pid).
const LOCK_FILE: &str = "boxoffice.lock";
/// How often the supervisor checks that the server is still there.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// Longest pause between attempts to start a server that keeps failing to start.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// Why the embedded server could not start or stop; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries (initdb, postgres) found on PATH or under \
         /usr/lib/postgresql/*/bin. Install the PostgreSQL server package (for example \
         `apt-get install postgresql`), or pass --database-url (DATABASE_URL) to use an \
         existing server"
    )]
    BinariesNotFound,
    #[error(
        "the data directory path {0} is too long for a Unix socket; choose a shorter --data-dir"
    )]
    PathTooLong(PathBuf),
    #[error("running as root but there is no `postgres` system user to run PostgreSQL as")]
    NoPostgresUser,
    #[error(
        "the data directory {data_dir} is in use by Boxoffice process {owner}, which runs its \
         embedded PostgreSQL; one data directory has one owner. To run several instances, run \
         one PostgreSQL server and start every instance with --database-url (DATABASE_URL) \
         pointing at it"
    )]
    InUse { data_dir: PathBuf, owner: String },
    #[error("{action} failed: {detail}")]
    Failed {
        action: &'static str,
        detail: String,
    },
    #[error("{action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    move |source| EmbeddedError::Io { action, source }
}

/// A running private PostgreSQL server; stopped (fast shutdown) by `stop` or on drop.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    cluster_dir: PathBuf,
    bin_dir: PathBuf,
    log_path: PathBuf,
    run_as: Option<RunAs>,
    settings: Vec<(String, String)>,
    child: Option<Child>,
    /// The data directory's lock, held until this value is dropped (after the server stopped).
    /// Opened close-on-exec, so the server does not inherit it and keep it after we die.
    _owner_lock: File,
}

/// The system account the server runs as when this process is root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

impl EmbeddedPostgres {
    /// Takes ownership of the data directory, creates the cluster on first use (kept across
    /// runs), clears what a killed run left behind, starts the server and waits until it
    /// accepts connections. `settings` are extra `-c name=value` server settings.
    pub fn start(data_dir: &Path, settings: &[(&str, &str)]) -> Result<Self, EmbeddedError> {
        if data_dir.exists() && !data_dir.is_dir() {
            return Err(io("creating the data directory")(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "it is a file, not a directory",
            )));
        }
        fs::create_dir_all(data_dir).map_err(io("creating the data directory"))?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(io("resolving the data directory"))?;
        // First, before anything in the directory is touched: a live owner's cluster is not
        // ours to clear or start.
        let owner_lock = lock_data_dir(&data_dir)?;
        let bin_dir = find_bin_dir().ok_or(EmbeddedError::BinariesNotFound)?;
        let run_as = run_as()?;
        let cluster_dir = cluster_location(&data_dir, run_as)?;
        if cluster_dir
            .join(format!(".s.PGSQL.{SOCKET_PORT}"))
            .as_os_str()
            .len()
            > MAX_SOCKET_PATH
        {
            return Err(EmbeddedError::PathTooLong(cluster_dir));
        }

        if !cluster_dir.join("PG_VERSION").exists() {
            init_cluster(&bin_dir, &data_dir, &cluster_dir, run_as)?;
        }
        let mut server = Self {
            cluster_dir,
            bin_dir,
            log_path: data_dir.join("postgres.log"),
            run_as,
            settings: settings
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            child: None,
            _owner_lock: owner_lock,
        };
        server.spawn()?;
        Ok(server)
    }

    /// Clears what a dead server left behind (we own the directory, so any server still
    /// running on the cluster is a leftover), starts the server and waits until it is ready.
    fn spawn(&mut self) -> Result<(), EmbeddedError> {
        clear_leftovers(&self.cluster_dir)?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(io("opening the PostgreSQL log"))?;
        if let Some(user) = self.run_as {
            chown(&self.log_path, user)?;
        }

        let mut command = Command::new(self.bin_dir.join("postgres"));
        command
            .arg("-D")
            .arg(&self.cluster_dir)
            .arg("-c")
            .arg("listen_addresses=")
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.cluster_dir.display()
            ))
            .arg("-c")
            .arg(format!("port={SOCKET_PORT}"));
        for (name, value) in &self.settings {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("opening the PostgreSQL log"))?)
            .stderr(log)
            // Own process group: a Ctrl-C in the terminal reaches only us, and we shut the
            // server down after the last request has finished.
            .process_group(0);
        if let Some(user) = self.run_as {
            command.uid(user.uid).gid(user.gid);
        }
        self.child = Some(command.spawn().map_err(io("starting postgres"))?);
        self.wait_until_ready()
    }

    /// Whether the server is up. A server that has exited is reaped here and its exit logged.
    fn is_running(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        let pid = child.id();
        match child.try_wait() {
            Ok(Some(status)) => {
                tracing::warn!(pid, %status, "the embedded PostgreSQL exited unexpectedly");
                self.child = None;
                false
            }
            // An error means the child cannot be waited for; it has not been seen to exit.
            Ok(None) | Err(_) => true,
        }
    }

    /// Connection options for `database` on the server another Boxoffice process runs under
    /// `data_dir` (the owner named by [`EmbeddedError::InUse`]), for a short administrative
    /// command such as `boxoffice tokens` while that server runs. Nothing in the directory is
    /// touched. Errors: the directory has no cluster, or its server is not accepting
    /// connections (its socket is missing).
    pub fn attach(data_dir: &Path, database: &str) -> Result<PgConnectOptions, EmbeddedError> {
        let data_dir = data_dir
            .canonicalize()
            .map_err(io("resolving the data directory"))?;
        let cluster_dir = cluster_location(&data_dir, run_as()?)?;
        if !cluster_dir.join(format!(".s.PGSQL.{SOCKET_PORT}")).exists() {
            return Err(EmbeddedError::Failed {
                action: "connecting to the running embedded PostgreSQL",
                detail: format!("no server socket in {}", cluster_dir.display()),
            });
        }
        Ok(PgConnectOptions::new()
            .socket(&cluster_dir)
            .port(SOCKET_PORT)
            .username("postgres")
            .database(database))
    }

    /// Connection options for one database on this server (over the Unix socket).
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.cluster_dir)
            .port(SOCKET_PORT)
            .username("postgres")
            .database(database)
    }

    pub fn cluster_dir(&self) -> &Path {
        &self.cluster_dir
    }

    /// The server's process id while it runs, for the log.
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fast shutdown (in-flight sessions are ended) and wait for the server to exit.
    pub fn stop(&mut self) -> Result<(), EmbeddedError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(child.id() as i32, libc::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child
                .try_wait()
                .map_err(io("waiting for postgres to stop"))?
            {
                Some(_) => return Ok(()),
                None if Instant::now() > deadline => {
                    signal(child.id() as i32, libc::SIGQUIT);
                    child.wait().map_err(io("waiting for postgres to stop"))?;
                    return Ok(());
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Polls `postmaster.pid`, whose last line reads `ready` once connections are accepted
    /// (the same signal `pg_ctl -w` waits for).
    fn wait_until_ready(&mut self) -> Result<(), EmbeddedError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let pid_file = self.cluster_dir.join("postmaster.pid");
        loop {
            let child = self.child.as_mut().expect("started");
            if let Some(status) = child.try_wait().map_err(io("watching postgres start"))? {
                self.child = None;
                return Err(EmbeddedError::Failed {
                    action: "starting postgres",
                    detail: format!(
                        "it exited with {status}; its log says:\n{}",
                        log_tail(&self.log_path)
                    ),
                });
            }
            let ready = fs::read_to_string(&pid_file)
                .map(|text| text.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EmbeddedError::Failed {
                    action: "starting postgres",
                    detail: format!(
                        "not ready after {START_TIMEOUT:?}; log:\n{}",
                        log_tail(&self.log_path)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            eprintln!("stopping the embedded PostgreSQL: {err}");
        }
    }
}
