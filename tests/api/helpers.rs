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

/// A running server on its own database.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// Direct access to the test's database, for asserting on rows.
    pub pool: PgPool,
    pub state: boxoffice::http::state::AppState,
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
        assert_counts_match_rows(&self.pool, &event).await;
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

/// Asserts an event's counts (its JSON as the API returns it) agree with its allocation rows
/// in `pool` and with each other.
pub async fn assert_counts_match_rows(pool: &PgPool, event: &Value) {
    let id = Uuid::parse_str(event["id"].as_str().expect("event id")).unwrap();
    let (reserved, purchased): (i64, i64) = sqlx::query_as(
            "SELECT \
               COALESCE(sum(quantity) FILTER (WHERE status IN ('reserved', 'payment_pending')), 0)::bigint, \
               COALESCE(sum(quantity) FILTER (WHERE status = 'purchased'), 0)::bigint \
             FROM ticket_allocations WHERE event_id = $1",
        )
        .bind(id)
        .fetch_one(pool)
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

/// The `id` of a created resource's JSON.
pub fn id_of(body: &Value) -> String {
    body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("id in {body}"))
        .to_owned()
}

/// A device fingerprint no other buyer in the run uses.
pub fn new_fingerprint() -> String {
    format!("device-{}", Uuid::new_v4().simple())
}

/// An RFC 3339 timestamp from a JSON field.
pub fn timestamp(value: &Value) -> time::OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp expected, got {value}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
}

/// Polls `probe` every 20 ms until it yields a value; panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An allocation row as stored, every lifecycle column included.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AllocationRow {
    pub event_id: Uuid,
    pub quantity: i32,
    pub status: String,
    pub fingerprint_hash: String,
    pub expires_at: time::OffsetDateTime,
    pub reserved_at: time::OffsetDateTime,
    pub payment_pending_at: Option<time::OffsetDateTime>,
    pub purchased_at: Option<time::OffsetDateTime>,
    pub cancelled_at: Option<time::OffsetDateTime>,
    pub expired_at: Option<time::OffsetDateTime>,
    pub payment_reference: Option<String>,
    pub confirmation_code: Option<String>,
    pub created_at: time::OffsetDateTime,
    pub updated_at: time::OffsetDateTime,
}

/// An event's counts: (available, reserved, purchased).
pub type Counts = (i64, i64, i64);

impl TestApp {
    /// The stored row of an allocation.
    pub async fn allocation_row(&self, allocation_id: &str) -> AllocationRow {
        sqlx::query_as(
            "SELECT event_id, quantity, status, fingerprint_hash, expires_at, reserved_at, \
                    payment_pending_at, purchased_at, cancelled_at, expired_at, \
                    payment_reference, confirmation_code, created_at, updated_at \
             FROM ticket_allocations WHERE id = $1",
        )
        .bind(Uuid::parse_str(allocation_id).expect("allocation id is a UUID"))
        .fetch_one(&self.pool)
        .await
        .expect("the allocation row exists")
    }

    /// The outcome the payment ledger recorded for a reference, if any.
    pub async fn charge_outcome(&self, reference: &str) -> Option<String> {
        sqlx::query_scalar("SELECT outcome FROM payment_charges WHERE reference = $1")
            .bind(reference)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
    }

    /// A fresh event named `name` and one `reserved` hold of `quantity` on it, by a new buyer:
    /// (event id, allocation id, holder).
    pub async fn event_with_hold(
        &self,
        name: &str,
        total: i64,
        quantity: i64,
    ) -> (String, String, String) {
        let event = self.create_event(name, total, None).await;
        let event_id = id_of(&event);
        let holder = new_fingerprint();
        let (status, hold) = self.purchase(&event_id, quantity, &holder).await;
        assert_eq!(status, StatusCode::CREATED, "{hold}");
        (event_id, id_of(&hold), holder)
    }

    /// Rows in `table` (events, ticket_allocations, payment_charges...).
    pub async fn row_count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// `GET /tickets/{id}` as the buyer with this fingerprint.
    pub async fn ticket(&self, allocation_id: &str, fingerprint: &str) -> (StatusCode, Value) {
        self.send(
            self.request(Method::GET, &format!("/tickets/{allocation_id}"))
                .header("X-Device-Fingerprint", fingerprint),
        )
        .await
    }

    /// The event's counts as the API reports them.
    pub async fn counts(&self, event_id: &str) -> Counts {
        let event = self.event(event_id).await;
        let count = |field: &str| {
            event[field]
                .as_i64()
                .unwrap_or_else(|| panic!("{field} in {event}"))
        };
        (
            count("availableTickets"),
            count("reservedTickets"),
            count("purchasedTickets"),
        )
    }

    /// Name of the test's database.
    pub fn database_name(&self) -> String {
        self.pool
            .connect_options()
            .get_database()
            .expect("test pool names its database")
            .to_owned()
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

/// One Server-Sent Events message.
#[derive(Debug, Clone)]
pub struct SseMessage {
    pub event: String,
    pub id: Option<u64>,
    pub data: Value,
}

/// A minimal SSE reader over a streaming response: enough to check what the server sends.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub async fn connect(app: &TestApp, path: &str) -> Self {
        Self::connect_url(&app.client, &app.url(path)).await
    }

    /// Opens a stream at a full URL, e.g. on a server running as a separate process.
    pub async fn connect_url(client: &reqwest::Client, url: &str) -> Self {
        Self::connect_request(client.get(url)).await
    }

    /// Opens a stream with a request of the caller's, e.g. one carrying `Last-Event-ID`.
    pub async fn connect_request(request: RequestBuilder) -> Self {
        let response = request.send().await.expect("stream connects");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next message (comments skipped), or `None` if the stream ended or `timeout` passed.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        event = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("id:") {
                        id = value.trim().parse().ok();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a comment (keep-alive) block
                }
                let data = serde_json::from_str(&data).expect("stream data is JSON");
                return Some(SseMessage { event, id, data });
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?;
            match chunk.expect("stream reads") {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }

    /// Reads messages until one satisfies `done`, returning all read (the last matching).
    pub async fn until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&SseMessage) -> bool,
    ) -> Vec<SseMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("no matching message within {timeout:?}; saw {seen:#?}"));
            let finished = done(&message);
            seen.push(message);
            if finished {
                return seen;
            }
        }
    }
}
