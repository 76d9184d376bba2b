//! The real binary: zero-setup embedded database, persistence across restarts, graceful
//! SIGTERM, a killed run's leftovers, and the `migrate` subcommand.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{database_url, fresh_database};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_binary(data_dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts")
}

async fn wait_healthy(client: &reqwest::Client, base: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = client.get(format!("{base}/ready")).send().await;
        if response.is_ok_and(|r| r.status() == StatusCode::OK) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the binary exited early with {status}");
        }
        assert!(Instant::now() < deadline, "the binary did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the binary did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn postmaster_pid(cluster: &Path) -> Option<i32> {
    std::fs::read_to_string(cluster.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next().and_then(|l| l.trim().parse().ok()))
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
}

#[tokio::test]
async fn embedded_database_survives_restart_and_sigterm_leaves_nothing_running() {
    let data_dir = tempdir("restart");
    let cluster = data_dir.join("postgres");
    let client = reqwest::Client::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");

    let mut first = start_binary(&data_dir, port);
    wait_healthy(&client, &base, &mut first).await;
    let postgres_pid = postmaster_pid(&cluster).expect("the embedded server runs");
    assert!(alive(postgres_pid));
    let created: Value = client
        .post(format!("{base}/events"))
        .json(&json!({"name": "Persistent", "date": "2027-05-05T20:00:00Z", "totalTickets": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    let status = terminate(&mut first);
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    assert!(!alive(postgres_pid), "the embedded PostgreSQL was stopped");
    assert!(
        postmaster_pid(&cluster).is_none(),
        "no postmaster.pid left behind"
    );

    let mut second = start_binary(&data_dir, port);
    wait_healthy(&client, &base, &mut second).await;
    let fetched: Value = client
        .get(format!("{base}/events/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["name"], "Persistent");
    assert!(terminate(&mut second).success());
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn a_killed_run_does_not_stop_the_next_start() {
    let data_dir = tempdir("killed");
    let cluster = data_dir.join("postgres");
    let client = reqwest::Client::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");

    let mut first = start_binary(&data_dir, port);
    wait_healthy(&client, &base, &mut first).await;
    let orphan = postmaster_pid(&cluster).unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(alive(orphan), "kill -9 leaves the embedded server running");

    let mut second = start_binary(&data_dir, port);
    wait_healthy(&client, &base, &mut second).await;
    assert!(!alive(orphan), "the orphaned server was replaced");
    assert!(terminate(&mut second).success());

    // A stale pid file whose process is gone must not block a start either.
    std::fs::write(cluster.join("postmaster.pid"), "999999\n").unwrap();
    let mut third = start_binary(&data_dir, port);
    wait_healthy(&client, &base, &mut third).await;
    assert!(terminate(&mut third).success());
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn migrate_subcommand_applies_migrations_and_exits() {
    let options = fresh_database().await;
    // A fresh database cloned from the template is already migrated; run it on an empty one.
    let empty = format!("boxoffice_empty_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect_with(&options).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{empty}\"")))
        .execute(&mut admin)
        .await
        .unwrap();
    let target = options.clone().database(&empty);
    let output = Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .args(["migrate", "--database-url", &database_url(&target)])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut conn = sqlx::PgConnection::connect_with(&target).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('events', 'ticket_allocations')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 2);
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "bo-{tag}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

use sqlx::Connection;
