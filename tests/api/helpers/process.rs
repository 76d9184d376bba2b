//! The real binary as a separate process: `boxoffice serve` on an existing database, or with
//! its embedded PostgreSQL in a data directory. A [`ServerProcess`] is stopped on drop
//! (SIGTERM, then SIGKILL), so a failing assertion leaves nothing serving, and its log
//! (standard error) is printed when the test is failing.

use std::io::Read;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use super::{Api, bounded_client};

/// How long a start may take to answer `/ready` (an embedded cluster's first `initdb`
/// included).
const READY_LIMIT: Duration = Duration::from_secs(60);

/// The boxoffice binary of this build, logging warnings and up without colours.
pub fn boxoffice_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_boxoffice"));
    command
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// The binary serving on 127.0.0.1:`port` with its embedded PostgreSQL under `data_dir`
/// (`DATABASE_URL` removed from its environment), not yet started.
pub fn serve_in_data_dir(data_dir: &Path, port: u16) -> Command {
    let mut command = boxoffice_command();
    command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL");
    command
}

/// A TCP port nothing listens on right now (another process may take it before the server
/// binds it: [`ServerProcess::start`] then tries another).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A new empty directory under the system's temporary directory.
pub fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "bo-{tag}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running `boxoffice serve` of the real binary. Its requests ([`Api`], with a
/// [`bounded_client`]) are reached through `Deref`.
pub struct ServerProcess {
    api: Api,
    child: Child,
    log: Arc<Mutex<Vec<u8>>>,
}

impl Deref for ServerProcess {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl ServerProcess {
    /// Starts the binary on an existing database with rate limits off and `flags`, and waits
    /// until `/ready` says 200. Retries on another port if the chosen one was taken.
    pub async fn start(database_url: &str, flags: &[&str]) -> Self {
        for _attempt in 0..5 {
            let port = free_port();
            let mut command = boxoffice_command();
            command
                .arg("serve")
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--database-url", database_url])
                .args(["--rate-limit-per-address", "0"])
                .args(["--rate-limit-per-fingerprint", "0"])
                .args(["--db-max-connections", "8"])
                .args(flags);
            let mut server = Self::spawn(command, port);
            if server.wait_ready().await {
                return server;
            }
            let log = server.log_text();
            if !log.contains("in use") {
                panic!("boxoffice exited before it was ready; its log:\n{log}");
            }
            // The port was taken meanwhile: try another.
        }
        panic!("no free port for boxoffice after 5 attempts");
    }

    /// Starts the binary with its embedded PostgreSQL under `data_dir` on `port` (see
    /// [`serve_in_data_dir`]) and waits until `/ready` says 200.
    pub async fn start_in_data_dir(data_dir: &Path, port: u16) -> Self {
        Self::start_in_data_dir_with(data_dir, port, &[]).await
    }

    /// [`ServerProcess::start_in_data_dir`] with `flags` added.
    pub async fn start_in_data_dir_with(data_dir: &Path, port: u16, flags: &[&str]) -> Self {
        let mut command = serve_in_data_dir(data_dir, port);
        command.args(flags);
        let mut server = Self::spawn(command, port);
        if !server.wait_ready().await {
            panic!(
                "boxoffice exited early with {:?}; its log:\n{}",
                server.child.try_wait(),
                server.log_text()
            );
        }
        server
    }

    /// Spawns the binary with its embedded PostgreSQL under `data_dir` on `port`, without
    /// waiting for it to be ready (a test that acts during start-up).
    pub fn spawn_in_data_dir(data_dir: &Path, port: u16) -> Self {
        Self::spawn(serve_in_data_dir(data_dir, port), port)
    }

    /// Spawns `command` (which listens on `port`), collecting its standard error.
    fn spawn(mut command: Command, port: u16) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the boxoffice binary starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Self {
            api: Api::new(format!("http://127.0.0.1:{port}"), bounded_client()),
            child,
            log,
        }
    }

    /// True once `/ready` answers 200; false if the process exited first.
    async fn wait_ready(&mut self) -> bool {
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if self.has_exited() {
                return false;
            }
            let ready = probe.get(self.url("/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "boxoffice not ready within {READY_LIMIT:?}; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("waiting on boxoffice")
            .is_some()
    }

    /// What it has written to standard error so far.
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// `kill -9`: no shutdown handler runs, in-flight requests and transactions are cut off.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (at most 60 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the binary did not exit after SIGTERM; its log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGTERM first, so a binary with an embedded PostgreSQL stops it too (a SIGKILL
        // would leave that cluster running); SIGKILL if it has not exited within 10 s.
        let running = |child: &mut Child| matches!(child.try_wait(), Ok(None));
        if running(&mut self.child) {
            // SAFETY: sending a signal to our own child process, which has not been reaped.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while running(&mut self.child) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- log of boxoffice at {} ---\n{}",
                self.address,
                self.log_text()
            );
        }
    }
}

/// Runs a start that must fail and returns what it wrote to stderr; panics if it is still
/// running after `limit` (a start that succeeded would serve forever).
pub fn failed_start(mut command: Command, limit: Duration) -> String {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the start did not fail: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "the start failed, but exited {status}");
    stderr
}
