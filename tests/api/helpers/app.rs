//! The in-process app: the real router and server of the library, on 127.0.0.1:0 and a
//! database of its own, run on the test's runtime, plus direct access to that database for
//! assertions on rows.

use std::ops::Deref;

use std::time::Duration;

use boxoffice::config::{Cli, Command, ServeArgs};
use boxoffice::http::connections::ConnectionLimit;
use boxoffice::http::extract::forwarded::TrustedProxies;
use boxoffice::http::serve::ConnectionRules;
use boxoffice::server::Server;
use clap::Parser;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{Api, assert_counts_match_rows, database_url, fresh_database, id_of, new_fingerprint};

/// `serve` flags for the two ways purchases reach the database: one transaction per request,
/// and concurrent requests for one event coalesced into one transaction (the default).
pub const PER_REQUEST: &[&str] = &["--purchase-mode", "per-request"];
pub const BATCHED: &[&str] = &["--purchase-mode", "batched"];

/// A running server on its own database. Its requests ([`Api`]) are reached through `Deref`:
/// `app.purchase(..)`, `app.address`.
pub struct TestApp {
    api: Api,
    /// Direct access to the test's database, for asserting on rows.
    pub pool: PgPool,
    pub state: boxoffice::http::state::AppState,
    shutdown: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
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
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    TestApp {
        api: Api::new(address, client),
        pool,
        state,
        shutdown: Some(shutdown),
        served: Some(served),
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
    // A pool of 16 unless the test sizes it.
    if !flags.contains(&"--db-max-connections") {
        argv.extend_from_slice(&["--db-max-connections", "16"]);
    }
    argv.extend_from_slice(flags);
    match Cli::try_parse_from(argv).expect("valid flags").command {
        Some(Command::Serve(args)) => args,
        _ => unreachable!("argv names serve"),
    }
}

impl TestApp {
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

    /// Name of the test's database.
    pub fn database_name(&self) -> String {
        self.pool
            .connect_options()
            .get_database()
            .expect("test pool names its database")
            .to_owned()
    }
}

/// The accept loop's rules for a router a test serves itself (`http::serve::serve`): no limit
/// per address, the default head timeout, and `request_timeout`.
pub fn unlimited_connections(request_timeout: Duration) -> ConnectionRules {
    ConnectionRules {
        limit: ConnectionLimit::new(0, TrustedProxies::default()),
        head_timeout: Duration::from_secs(30),
        request_timeout,
    }
}

/// Runs `sweeps` rounds of the real sweep (`sweeper::sweep_once`) at once, alternating between
/// the `instances`' sweepers (several instances on one database, as in production): each
/// round's (holds expired, payments and refunds recovered), in the order they ended. Panics
/// if a round fails.
pub async fn sweep_at_once(instances: &[&TestApp], sweeps: usize) -> Vec<(i64, usize)> {
    let mut running = tokio::task::JoinSet::new();
    for i in 0..sweeps {
        let state = instances[i % instances.len()].state.clone();
        running.spawn(async move { boxoffice::sweeper::sweep_once(&state.sweeper).await });
    }
    let mut rounds = Vec::with_capacity(sweeps);
    while let Some(outcome) = running.join_next().await {
        rounds.push(outcome.unwrap().expect("a sweep succeeds"));
    }
    rounds
}
