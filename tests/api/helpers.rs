//! The test harness: every test gets its own database, cloned from a migrated template, and
//! its own real server on 127.0.0.1:0. With `DATABASE_URL` set the databases are made on
//! that server; otherwise one throwaway PostgreSQL cluster is started for the whole run
//! (the same embedded mechanism the binary uses) and removed when the run exits.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use boxoffice::config::{Cli, Command, ServeArgs};
use boxoffice::embedded_pg::EmbeddedPostgres;
use boxoffice::server::Server;
use clap::Parser;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{OnceCell, oneshot};
use uuid::Uuid;

/// The server tests create their databases on: admin connection options.
struct TestCluster {
    admin: PgConnectOptions,
}

static EMBEDDED: Mutex<Option<(EmbeddedPostgres, PathBuf)>> = Mutex::new(None);
static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
static TEMPLATE: OnceCell<String> = OnceCell::const_new();

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
        // Throwaway data: durability settings off for speed; enough connections for
        // parallel tests that each run a pool.
        let server = EmbeddedPostgres::start(
            &dir,
            &[
                ("fsync", "off"),
                ("synchronous_commit", "off"),
                ("full_page_writes", "off"),
                ("max_connections", "400"),
            ],
        )
        .expect("the test PostgreSQL cluster starts");
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

/// A fresh, migrated database of its own, as connection options.
pub async fn fresh_database() -> PgConnectOptions {
    let name = format!("boxoffice_test_{}", Uuid::new_v4().simple());
    create_database(&name, Some(template().await)).await;
    cluster().admin.clone().database(&name)
}

/// A running server on its own database.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// Direct access to the test's database, for asserting on rows.
    pub pool: PgPool,
    pub state: boxoffice::state::AppState,
    shutdown: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

/// Spawns a server with default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Spawns a server with extra `serve` flags, e.g. `["--hold-seconds", "1"]`.
pub async fn spawn_app_with(flags: &[&str]) -> TestApp {
    let options = fresh_database().await;
    spawn_app_on(&options, flags).await
}

/// Spawns another server on an existing database (several instances, one database).
pub async fn spawn_app_on(options: &PgConnectOptions, flags: &[&str]) -> TestApp {
    let url = database_url(options);
    let args = serve_args(&url, flags);
    let server = Server::build(&args).await.expect("server builds");
    let address = format!("http://{}", server.local_addr());
    let state = server.state().clone();
    let (shutdown, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        server
            .run(async move {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
    });
    let pool = PgPool::connect_with(options.clone())
        .await
        .expect("test pool");
    TestApp {
        address,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
        pool,
        state,
        shutdown: Some(shutdown),
        served: Some(served),
    }
}

/// A URL for the options (socket directory or host, port, user, database).
pub fn database_url(options: &PgConnectOptions) -> String {
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

fn serve_args(url: &str, flags: &[&str]) -> ServeArgs {
    let mut argv = vec![
        "boxoffice",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        url,
    ];
    argv.extend_from_slice(&["--db-max-connections", "16"]);
    argv.extend_from_slice(flags);
    match Cli::try_parse_from(argv).expect("valid flags").command {
        Some(Command::Serve(args)) => args,
        _ => unreachable!("argv names serve"),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Sends a request and returns the status and the JSON body (Null when empty).
    pub async fn send(&self, request: RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("request reaches the server");
        let status = response.status();
        let text = response.text().await.expect("body reads");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON body {text:?}: {e}"))
        };
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.request(Method::POST, path).json(&body))
            .await
    }

    /// Creates an event and returns its JSON.
    pub async fn create_event(&self, name: &str, total: i64, cap: Option<i64>) -> Value {
        let (status, body) = self
            .post_json(
                "/events",
                json!({
                    "name": name,
                    "date": "2027-06-01T19:00:00Z",
                    "totalTickets": total,
                    "maxTicketsPerFingerprint": cap,
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// A purchase by the buyer with this device fingerprint.
    pub async fn purchase(
        &self,
        event_id: &str,
        quantity: i64,
        fingerprint: &str,
    ) -> (StatusCode, Value) {
        self.send(
            self.request(Method::POST, &format!("/events/{event_id}/tickets"))
                .header("X-Device-Fingerprint", fingerprint)
                .json(&json!({ "quantity": quantity })),
        )
        .await
    }

    pub async fn pay(
        &self,
        allocation_id: &str,
        fingerprint: &str,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        self.send(
            self.request(Method::POST, &format!("/tickets/{allocation_id}/payment"))
                .header("X-Device-Fingerprint", fingerprint)
                .json(&json!({ "paymentToken": token })),
        )
        .await
    }

    pub async fn cancel(&self, allocation_id: &str, fingerprint: &str) -> (StatusCode, Value) {
        self.send(
            self.request(Method::DELETE, &format!("/tickets/{allocation_id}/payment"))
                .header("X-Device-Fingerprint", fingerprint),
        )
        .await
    }

    pub async fn event(&self, event_id: &str) -> Value {
        let (status, body) = self.get(&format!("/events/{event_id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Asserts the event's counts agree with its allocation rows and with each other.
    pub async fn assert_balanced(&self, event_id: &str) -> Value {
        let event = self.event(event_id).await;
        let id = Uuid::parse_str(event_id).unwrap();
        let (reserved, purchased): (i64, i64) = sqlx::query_as(
            "SELECT \
               COALESCE(sum(quantity) FILTER (WHERE status IN ('reserved', 'payment_pending')), 0)::bigint, \
               COALESCE(sum(quantity) FILTER (WHERE status = 'purchased'), 0)::bigint \
             FROM ticket_allocations WHERE event_id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        assert_eq!(
            event["reservedTickets"].as_i64(),
            Some(reserved),
            "reserved count vs rows: {event}"
        );
        assert_eq!(
            event["purchasedTickets"].as_i64(),
            Some(purchased),
            "purchased count vs rows: {event}"
        );
        let total = event["totalTickets"].as_i64().unwrap();
        let available = event["availableTickets"].as_i64().unwrap();
        assert_eq!(
            available + reserved + purchased,
            total,
            "counts balance: {event}"
        );
        assert!(available >= 0);
        event
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.expect("server task ends cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Asserts an error response: status, code, JSON body with a message.
pub fn assert_error(status: StatusCode, body: &Value, expected_status: StatusCode, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "error message: {body}"
    );
}
