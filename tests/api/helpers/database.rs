//! Databases for tests. With `DATABASE_URL` set they are made on that server; otherwise one
//! throwaway PostgreSQL cluster is started for the whole run (the same embedded mechanism the
//! binary uses) and removed when the run exits. Every test database is cloned from one
//! migrated template, built once per run. A test that must stop and restart PostgreSQL gets a
//! [`DedicatedCluster`] of its own instead.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use boxoffice::embedded_pg::EmbeddedPostgres;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The server tests create their databases on: admin connection options.
struct TestCluster {
    admin: PgConnectOptions,
}

static EMBEDDED: Mutex<Option<(EmbeddedPostgres, PathBuf)>> = Mutex::new(None);
static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// Throwaway data: durability settings off for speed.
const THROWAWAY_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
];

extern "C" fn stop_embedded_cluster() {
    if let Some((mut server, dir)) = EMBEDDED.lock().ok().and_then(|mut guard| guard.take()) {
        let _ = server.stop();
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn cluster() -> &'static TestCluster {
    CLUSTER.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            let admin = PgConnectOptions::from_str(&url).expect("DATABASE_URL parses");
            return TestCluster { admin };
        }
        let dir = std::env::temp_dir().join(format!("boxoffice-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Enough connections for parallel tests that each run a pool.
        let mut settings = THROWAWAY_SETTINGS.to_vec();
        settings.push(("max_connections", "400"));
        let server =
            EmbeddedPostgres::start(&dir, &settings).expect("the test PostgreSQL cluster starts");
        let admin = server.connect_options("postgres");
        *EMBEDDED.lock().unwrap() = Some((server, dir));
        // SAFETY: registering a plain extern "C" function; it runs once at process exit.
        unsafe { libc::atexit(stop_embedded_cluster) };
        TestCluster { admin }
    })
}

/// A migrated database that every test database is cloned from.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("boxoffice_template_{}", Uuid::new_v4().simple());
            create_database(&name, None).await;
            let pool = PgPool::connect_with(cluster().admin.clone().database(&name))
                .await
                .unwrap();
            boxoffice::db::migrate(&pool)
                .await
                .expect("migrations apply");
            pool.close().await;
            name
        })
        .await
}

async fn create_database(name: &str, template: Option<&str>) {
    let statement = match template {
        Some(template) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""),
        None => format!("CREATE DATABASE \"{name}\""),
    };
    // Cloning can fail while another clone of the same template is starting: retry.
    for attempt in 0.. {
        let mut conn = PgConnection::connect_with(&cluster().admin)
            .await
            .expect("admin connection");
        let result = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
        match result {
            Ok(_) => return,
            Err(err) if attempt < 50 => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("creating database {name}: {err}"),
        }
    }
}

/// A connection to the cluster's `postgres` database, for statements a test database cannot
/// run on itself.
pub async fn admin_connection() -> PgConnection {
    PgConnection::connect_with(&cluster().admin)
        .await
        .expect("admin connection")
}

/// A fresh database with no tables at all, as connection options (for migration tests).
pub async fn empty_database() -> PgConnectOptions {
    let name = format!("boxoffice_test_{}", Uuid::new_v4().simple());
    create_database(&name, None).await;
    cluster().admin.clone().database(&name)
}

/// A fresh, migrated database of its own, as connection options.
pub async fn fresh_database() -> PgConnectOptions {
    let name = format!("boxoffice_test_{}", Uuid::new_v4().simple());
    create_database(&name, Some(template().await)).await;
    cluster().admin.clone().database(&name)
}

/// A URL for the options (socket directory or host, port, user, database), naming the
/// application when the options do, so that a test can tell instances apart in
/// `pg_stat_activity`.
pub fn database_url(options: &PgConnectOptions) -> String {
    let url = unnamed_database_url(options);
    match options.get_application_name() {
        Some(name) => {
            let mut url = reqwest::Url::parse(&url).expect("a database URL");
            url.query_pairs_mut().append_pair("application_name", name);
            url.to_string()
        }
        None => url,
    }
}

fn unnamed_database_url(options: &PgConnectOptions) -> String {
    let db = options.get_database().expect("database set");
    let user = options.get_username();
    match options.get_socket() {
        Some(dir) => format!(
            "postgres://{user}@localhost:{}/{db}?host={}",
            options.get_port(),
            dir.display()
        ),
        None => {
            // External servers: reuse DATABASE_URL with the database swapped.
            let base = std::env::var("DATABASE_URL").expect("external cluster has DATABASE_URL");
            let mut url = reqwest::Url::parse(&base).expect("DATABASE_URL is a URL");
            url.set_path(&format!("/{db}"));
            url.to_string()
        }
    }
}

/// Deadlocks PostgreSQL has detected in `database` (`pg_stat_database.deadlocks`). Call once
/// every connection to it is closed: backends publish their statistics when they exit.
pub async fn deadlocks_detected(database: &str) -> i64 {
    let mut admin = admin_connection().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                .bind(database)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        if open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} connections to {database} still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = $1")
        .bind(database)
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

/// A PostgreSQL cluster of the test's own under a temporary directory, which it can stop and
/// start again (the shared cluster must stay up for every other test). Stopped and removed on
/// drop.
pub struct DedicatedCluster {
    dir: PathBuf,
    server: Option<EmbeddedPostgres>,
}

impl DedicatedCluster {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "bo-pgrestart-{}",
            &Uuid::new_v4().simple().to_string()[..8]
        ));
        let mut cluster = Self { dir, server: None };
        cluster.restart().await;
        cluster
    }

    /// Starts the server on the cluster's directory (creating the cluster the first time).
    pub async fn restart(&mut self) {
        assert!(self.server.is_none(), "already running");
        let dir = self.dir.clone();
        let server =
            tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir, THROWAWAY_SETTINGS))
                .await
                .unwrap()
                .expect("the dedicated PostgreSQL starts");
        self.server = Some(server);
    }

    /// Fast shutdown: every session is ended, the socket goes away.
    pub async fn stop(&mut self) {
        let mut server = self.server.take().expect("running");
        tokio::task::spawn_blocking(move || server.stop())
            .await
            .unwrap()
            .expect("the dedicated PostgreSQL stops");
    }

    /// Creates database `name` on the running cluster and returns its connection options.
    pub async fn create_database(&self, name: &str) -> PgConnectOptions {
        let server = self.server.as_ref().expect("running");
        boxoffice::db::create_database_if_missing(&server.connect_options("postgres"), name)
            .await
            .expect("database created");
        server.connect_options(name)
    }
}

impl Drop for DedicatedCluster {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
