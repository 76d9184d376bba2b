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

use std::ffi::CString;
use std::fs::{self, File, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use tokio::sync::watch;

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

/// Takes the data directory's lock without waiting and writes our pid into the lock file, or
/// names the live owner. The lock is an advisory `flock`: it belongs to the open file, so it
/// lasts exactly as long as the owning process keeps the file open, and no longer.
fn lock_data_dir(data_dir: &Path) -> Result<File, EmbeddedError> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(data_dir.join(LOCK_FILE))
        .map_err(io("opening the data directory's lock file"))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut owner = String::new();
            let _ = file.read_to_string(&mut owner);
            let owner = owner.trim();
            return Err(EmbeddedError::InUse {
                data_dir: data_dir.to_owned(),
                owner: if owner.is_empty() {
                    "(pid not yet written)".to_owned()
                } else {
                    owner.to_owned()
                },
            });
        }
        Err(TryLockError::Error(err)) => {
            return Err(io("locking the data directory")(err));
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(io("writing the lock file"))?;
    Ok(file)
}

/// Where the cluster lives. Normally `<data-dir>/postgres`. When this process is root and the
/// `postgres` user cannot reach the data directory (it sits under `/root`, say), the cluster
/// is kept under `/var/lib/boxoffice/<hash of the data directory>/postgres` instead, and
/// `<data-dir>/postgres` is a symbolic link to it, so the next run finds it again.
fn cluster_location(data_dir: &Path, run_as: Option<RunAs>) -> Result<PathBuf, EmbeddedError> {
    let local = data_dir.join("postgres");
    if fs::symlink_metadata(&local).is_ok_and(|m| m.file_type().is_symlink()) {
        return fs::read_link(&local).map_err(io("reading the cluster link"));
    }
    let Some(user) = run_as else { return Ok(local) };
    if local.exists()
        || data_dir
            .ancestors()
            .skip(1)
            .all(|dir| traversable(dir, user))
    {
        return Ok(local);
    }
    let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let tag = crate::domain::hex::encode(&digest[..8]);
    let home = Path::new(RELOCATED_ROOT).join(tag);
    fs::create_dir_all(&home).map_err(io("creating the relocated cluster directory"))?;
    let cluster = home.join("postgres");
    std::os::unix::fs::symlink(&cluster, &local).map_err(io("linking the relocated cluster"))?;
    tracing::info!(
        cluster = %cluster.display(),
        "the postgres user cannot reach the data directory; the cluster is kept here instead"
    );
    Ok(cluster)
}

/// Where clusters go whose data directory the `postgres` user cannot reach.
const RELOCATED_ROOT: &str = "/var/lib/boxoffice";

/// Whether `user` may pass through `dir` (the execute bit that applies to it; ACLs aside).
fn traversable(dir: &Path, user: RunAs) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(dir) else {
        return false;
    };
    let mode = meta.mode();
    if meta.uid() == user.uid {
        mode & 0o100 != 0
    } else if meta.gid() == user.gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// `initdb` on PATH, else the newest `/usr/lib/postgresql/<version>/bin`.
fn find_bin_dir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|d| has_server(d)))
    {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn run_as() -> Result<Option<RunAs>, EmbeddedError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns null or a pointer to a static record we read at once.
    let record = unsafe { libc::getpwnam(name.as_ptr()) };
    if record.is_null() {
        return Err(EmbeddedError::NoPostgresUser);
    }
    // SAFETY: non-null pointer from getpwnam, read before any other passwd call.
    let (uid, gid) = unsafe { ((*record).pw_uid, (*record).pw_gid) };
    Ok(Some(RunAs { uid, gid }))
}

fn chown(path: &Path, user: RunAs) -> Result<(), EmbeddedError> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .map_err(io("handing a file to the postgres user"))
}

fn init_cluster(
    bin_dir: &Path,
    data_dir: &Path,
    cluster_dir: &Path,
    run_as: Option<RunAs>,
) -> Result<(), EmbeddedError> {
    // A half-made cluster from an interrupted initdb has no PG_VERSION: start it over.
    if cluster_dir.exists() {
        fs::remove_dir_all(cluster_dir).map_err(io("removing an unfinished cluster"))?;
    }
    fs::create_dir_all(cluster_dir).map_err(io("creating the cluster directory"))?;
    fs::set_permissions(cluster_dir, fs::Permissions::from_mode(0o700))
        .map_err(io("securing the cluster directory"))?;
    if let Some(user) = run_as {
        // The postgres user must be able to reach the cluster through the data directory.
        let mode = fs::metadata(data_dir)
            .map_err(io("reading the data directory"))?
            .permissions()
            .mode();
        fs::set_permissions(data_dir, fs::Permissions::from_mode(mode | 0o011))
            .map_err(io("opening the data directory to the postgres user"))?;
        chown(cluster_dir, user)?;
    }
    let mut command = Command::new(bin_dir.join("initdb"));
    command
        .arg("-D")
        .arg(cluster_dir)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ])
        .stdin(Stdio::null());
    if let Some(user) = run_as {
        command.uid(user.uid).gid(user.gid);
    }
    let output = command.output().map_err(io("running initdb"))?;
    if !output.status.success() {
        return Err(EmbeddedError::Failed {
            action: "initdb",
            detail: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(())
}

/// A run that was killed leaves `postmaster.pid` behind, and maybe its server still running.
/// Called only while holding the data directory's lock, so such a server has no live owner:
/// it is shut down (fast) so this process owns the next one. A dead one's pid file is removed
/// so the start is not refused.
fn clear_leftovers(cluster_dir: &Path) -> Result<(), EmbeddedError> {
    let pid_file = cluster_dir.join("postmaster.pid");
    let Ok(text) = fs::read_to_string(&pid_file) else {
        return Ok(());
    };
    let pid = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok());
    if let Some(pid) = pid.filter(|&pid| is_postgres_of(pid, cluster_dir)) {
        signal(pid, libc::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if process_alive(pid) {
            return Err(EmbeddedError::Failed {
                action: "stopping a PostgreSQL left running by an earlier run",
                detail: format!("process {pid} did not exit"),
            });
        }
    }
    match fs::remove_file(&pid_file) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(io("removing a stale postmaster.pid")(err))
        }
        _ => Ok(()),
    }
}

/// Whether `pid` is a live postmaster serving this cluster (not a recycled pid).
fn is_postgres_of(pid: i32, cluster_dir: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let is_postgres = args.first().is_some_and(|a| a.ends_with(b"postgres"));
    let dir = cluster_dir.as_os_str().as_encoded_bytes();
    is_postgres && args.contains(&dir)
}

fn process_alive(pid: i32) -> bool {
    // Zombies count as gone: they no longer hold the cluster.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; a vanished pid only returns ESRCH.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
