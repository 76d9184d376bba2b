//! Start-up and shutdown: open the database (external or embedded), build the state, serve
//! until a signal, then drain requests, stop the sweeper and the embedded database.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admission::checkin::Checkins;
use crate::admission::keys::AdmissionKeys;
use crate::config::{DatabaseArgs, PurchaseMode, ServeArgs};
use crate::db;
use crate::domain::fingerprint::FingerprintKey;
use crate::embedded_pg::{EmbeddedError, EmbeddedPostgres, ShuttingDown, Supervisor};
use crate::holds::Settler;
use crate::http::connections::ConnectionLimit;
use crate::http::extract::forwarded::TrustedProxies;
use crate::http::idempotent::KeyedTasks;
use crate::http::limits::RateLimits;
use crate::http::serve::ConnectionRules;
use crate::http::state::{AppState, SaleRules, Shared};
use crate::live::LiveStats;
use crate::payment::{PaymentProvider, SimulatedProvider};
use crate::purchase::lock_runtime::LockRuntime;
use crate::purchase::{Batching, Purchaser};
use crate::reads::EventReads;
use crate::sweeper::Sweeper;

pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// How long a graceful shutdown waits for keyed requests' tasks (which outlive their requests)
/// to settle their claims before it closes the pool. A task still running then fails on the
/// closed pool, and its claim stays in progress until it is taken over as stale.
const KEYED_TASKS_DRAIN: Duration = Duration::from_secs(30);

/// Name of the database the embedded server keeps Boxoffice's data in.
const EMBEDDED_DATABASE: &str = "boxoffice";

/// An open, migrated database, and the embedded server behind it (restarted by its supervisor
/// if it dies) if this process runs one.
pub struct Database {
    pub pool: PgPool,
    embedded: Option<Supervisor>,
}

/// `--database-url` as connection options; the error names the flag.
fn database_url_options(url: &str) -> Result<PgConnectOptions, StartError> {
    let postgres = ["postgres://", "postgresql://"].iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
    });
    if !postgres {
        return Err(
            "--database-url: a PostgreSQL URL starts with postgres:// or postgresql://".into(),
        );
    }
    // The driver reads the password from the query only as `password` (its key decoded);
    // any other spelling of a secret it would log, value and all, as a parameter it does not
    // know, and then ignore. Refused here, without the value.
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            let raw = pair.split_once('=').map_or(pair, |(key, _)| key);
            let key = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
            if names_a_secret(raw) && key != "password" {
                return Err(format!(
                    "--database-url: the query parameter `{key}` is not read (only `password`, \
                     in lower case, is; `sslpassword` is not supported): give the password as \
                     `password=` or as user:password@"
                )
                .into());
            }
        }
    }
    PgConnectOptions::from_str(url).map_err(|err| format!("--database-url: {err}").into())
}

/// Whether the URL query key `raw` names a password, once decoded as the driver decodes it
/// (`pass%77ord` is `password`) and in any case: `password` or `sslpassword`.
fn names_a_secret(raw: &str) -> bool {
    let key = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    ["password", "sslpassword"]
        .iter()
        .any(|name| key.eq_ignore_ascii_case(name))
}

/// The embedded server's `max_connections`: PostgreSQL's default of 100, or what this
/// instance may open (`--db-max-connections` and the pools beside it) and 20 more for
/// `boxoffice tokens`, backups and an administrator's `psql`, if that is more. The process
/// owns the embedded cluster, so a pool it is configured for is one its database takes.
fn embedded_max_connections(args: &DatabaseArgs) -> u32 {
    (args.connections_needed() + 20).max(100)
}

/// An embedded server's failure, naming the `--data-dir` it was started in.
fn data_dir_error(data_dir: &Path, err: EmbeddedError) -> StartError {
    format!("--data-dir {}: {err}", data_dir.display()).into()
}

impl Database {
    /// Connects to `--database-url`, or starts the embedded server when there is none, and
    /// applies the migrations. The embedded server is supervised only once all that succeeded,
    /// so a failed open simply stops it again (on drop).
    pub async fn open(args: &DatabaseArgs) -> Result<Self, StartError> {
        let (options, embedded) = match &args.database_url {
            Some(url) => (database_url_options(url)?, None),
            None => {
                let data_dir = args.data_dir.clone();
                let max_connections = embedded_max_connections(args).to_string();
                let server = tokio::task::spawn_blocking(move || {
                    EmbeddedPostgres::start(&data_dir, &[("max_connections", &max_connections)])
                })
                .await?
                .map_err(|err| data_dir_error(&args.data_dir, err))?;
                db::create_database_if_missing(
                    &server.connect_options("postgres"),
                    EMBEDDED_DATABASE,
                )
                .await?;
                (server.connect_options(EMBEDDED_DATABASE), Some(server))
            }
        };
        Self::connect(args, options, embedded).await
    }

    /// As [`Database::open`], but when the embedded data directory is owned by a running
    /// Boxoffice server, connects to that server's PostgreSQL instead of refusing: for the
    /// short administrative commands (`boxoffice tokens …`) an organiser runs beside the
    /// zero-setup server.
    pub async fn open_beside_server(args: &DatabaseArgs) -> Result<Self, StartError> {
        if args.database_url.is_none() {
            let data_dir = args.data_dir.clone();
            let started =
                tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&data_dir, &[]))
                    .await?;
            let (options, embedded) = match started {
                Ok(server) => {
                    db::create_database_if_missing(
                        &server.connect_options("postgres"),
                        EMBEDDED_DATABASE,
                    )
                    .await?;
                    (server.connect_options(EMBEDDED_DATABASE), Some(server))
                }
                Err(EmbeddedError::InUse { .. }) => (
                    EmbeddedPostgres::attach(&args.data_dir, EMBEDDED_DATABASE)
                        .map_err(|err| data_dir_error(&args.data_dir, err))?,
                    None,
                ),
                Err(err) => return Err(data_dir_error(&args.data_dir, err)),
            };
            return Self::connect(args, options, embedded).await;
        }
        Self::open(args).await
    }

    /// The pool over `options`, migrated; `embedded` is supervised once all that succeeded.
    async fn connect(
        args: &DatabaseArgs,
        options: PgConnectOptions,
        embedded: Option<EmbeddedPostgres>,
    ) -> Result<Self, StartError> {
        let limits = db::SessionLimits {
            lock_timeout_ms: args.lock_timeout_ms,
            statement_timeout_ms: args.statement_timeout_ms,
        };
        // Named in the error, so that a wrong `--database-url` is told apart from a database
        // that is down (never the password).
        let at = match options.get_socket() {
            Some(directory) => format!("the socket in {}", directory.display()),
            None => format!("{} port {}", options.get_host(), options.get_port()),
        };
        let target = format!(
            "PostgreSQL at {at}, database {}",
            options.get_database().unwrap_or("(the user's)")
        );
        let pool = db::connect_pool(options, args.db_max_connections, limits)
            .await
            .map_err(|err| format!("connecting to {target}: {err}"))?;
        let allowed = db::connections_allowed(&pool)
            .await
            .map_err(|err| format!("reading max_connections of {target}: {err}"))?;
        if i64::from(args.connections_needed()) > allowed {
            let (requests, batches) = (args.db_max_connections, args.batch_connections());
            return Err(format!(
                "--db-max-connections {requests}: this instance opens up to {} connections \
                 ({requests} for requests, {batches} for purchase batches, 1 for live \
                 statistics), more than {target} takes ({allowed}: max_connections less \
                 superuser_reserved_connections); lower --db-max-connections or raise \
                 max_connections",
                args.connections_needed(),
            )
            .into());
        }
        db::migrate(&pool).await?;
        Ok(Self {
            pool,
            embedded: embedded.map(Supervisor::watch),
        })
    }

    /// The embedded cluster's directory, if this process runs the database.
    pub fn embedded_cluster(&self) -> Option<&Path> {
        self.embedded.as_ref().map(Supervisor::cluster_dir)
    }

    /// For the moment shutdown begins: from then on a dead embedded server is not restarted.
    fn shutting_down(&self) -> Option<ShuttingDown> {
        self.embedded.as_ref().map(Supervisor::shutting_down)
    }

    /// Ends restarts of the embedded server, closes the pool, then stops the embedded server
    /// (fast shutdown) if there is one.
    pub async fn close(mut self) {
        if let Some(shutting_down) = self.shutting_down() {
            shutting_down.announce();
        }
        self.pool.close().await;
        if let Some(server) = self.embedded.take() {
            match server.stop().await {
                Ok(()) => tracing::info!("embedded PostgreSQL stopped"),
                Err(err) => {
                    tracing::error!(error = %err, "stopping the embedded PostgreSQL failed")
                }
            }
        }
    }
}

/// A bound, ready-to-run server.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    database: Database,
    /// The lock-holding batches' own runtime and pool (see [`LockRuntime`]); its pool is
    /// closed with the database's.
    locks: LockRuntime,
    connections: ConnectionRules,
    cors_origins: Vec<String>,
}

impl Server {
    /// Binds the listening address, then opens the database and builds the state. Errors:
    /// the address cannot be bound, the database cannot be opened or migrated (or the
    /// embedded one started), or the fingerprint secret cannot be read or stored.
    pub async fn build(args: &ServeArgs) -> Result<Self, StartError> {
        // Bind first: a taken address is found before a database is started for nothing.
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|err| format!("cannot listen on {}: {err}", args.listen))?;
        let signing_key = args
            .signing_key_file
            .as_deref()
            .map(AdmissionKeys::read_key_file)
            .transpose()?;
        let database = Database::open(&args.database).await?;
        let which = match (database.embedded_cluster(), &args.database.database_url) {
            (Some(cluster), _) => format!("embedded PostgreSQL in {}", cluster.display()),
            (None, Some(url)) => format!("external PostgreSQL {}", redact(url)),
            (None, None) => unreachable!("no URL means embedded"),
        };
        let live = LiveStats::new();
        // Purchases, payments' begins and settles, the simulated provider's ledger and
        // single check-ins are batched (or not) alike.
        let batching = match args.purchase_mode {
            PurchaseMode::Batched => Batching::Batched {
                max_batch: args.purchase_batch_max as usize,
            },
            PurchaseMode::PerRequest => Batching::PerRequest,
        };
        // The batches' pool, counted in the connection budget (docs/operations.md).
        let locks = LockRuntime::start(&database.pool, args.database.batch_connections())
            .map_err(|err| format!("cannot start the lock runtime: {err}"))?;
        let payments: Arc<dyn PaymentProvider> =
            Arc::new(SimulatedProvider::new(database.pool.clone(), batching));
        let admission_keys =
            Arc::new(AdmissionKeys::load(database.pool.clone(), signing_key).await?);
        let state = AppState::new(Shared {
            pool: database.pool.clone(),
            rules: Arc::new(SaleRules {
                max_tickets_per_purchase: args.max_tickets_per_purchase,
                default_currency: args.default_currency,
                waiting_list_offer_seconds: args.waiting_list_offer_seconds,
                stale_claim_age: crate::idempotency::stale_claim_age(Duration::from_millis(
                    args.request_timeout_ms,
                )),
            }),
            fingerprint_key: fingerprint_key(&database.pool, args.fingerprint_secret.as_deref())
                .await?,
            sweeper: Sweeper {
                pool: database.pool.clone(),
                payments: payments.clone(),
                signer: admission_keys.signer().clone(),
                payment_recovery_seconds: args.payment_recovery_seconds,
                interval: Duration::from_millis(args.sweep_interval_ms),
            },
            payments,
            purchaser: Purchaser::new(
                database.pool.clone(),
                live.availability(),
                args.hold_seconds,
                batching,
                &locks,
            ),
            settler: Settler::new(
                database.pool.clone(),
                admission_keys.signer().clone(),
                batching,
                &locks,
            ),
            checkins: Checkins::new(database.pool.clone(), admission_keys.clone(), batching),
            admission_keys,
            reads: EventReads::new(database.pool.clone()),
            tokens: crate::tokens::TokenLookups::new(database.pool.clone()),
            live,
            keyed_tasks: KeyedTasks::default(),
            limits: RateLimits::new(args.rate_limit_per_fingerprint, args.rate_limit_per_address),
            trusted_proxies: TrustedProxies::new(args.trusted_proxies.clone()),
            // Trimmed and never blank (`config::parse_admin_token`).
            admin_token: args.admin_token.as_deref().map(Arc::from),
        });
        if state.admin_token.is_none() {
            tracing::warn!("no --admin-token: anyone may create events");
        }
        crate::metrics::handle();
        tracing::info!(address = %listener.local_addr()?, database = %which, "boxoffice listening");
        let connections = ConnectionRules {
            // The same proxies the request extractors believe: they carry many clients.
            limit: ConnectionLimit::new(
                args.max_connections_per_address,
                state.trusted_proxies.clone(),
            ),
            head_timeout: Duration::from_millis(args.request_head_timeout_ms),
            request_timeout: Duration::from_millis(args.request_timeout_ms),
        };
        Ok(Self {
            listener,
            state,
            database,
            locks,
            connections,
            cors_origins: args.cors_origins.clone(),
        })
    }

    /// The bound address (the real port when `--listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The state handlers share, for tests that reach under the HTTP surface.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets in-flight requests
    /// finish, waits (up to [`KEYED_TASKS_DRAIN`]) for keyed requests' tasks to settle their
    /// claims, stops the sweeper and closes the database.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let (stop_background, background_stopped) = watch::channel(false);
        let sweeper = tokio::spawn(crate::sweeper::run(
            self.state.sweeper.clone(),
            background_stopped.clone(),
        ));
        let live = self.state.live.clone();
        let keyed_tasks = self.state.keyed_tasks.clone();
        let database_shutting_down = self.database.shutting_down();
        let change_listener = tokio::spawn(
            live.clone()
                .listen(self.state.pool.clone(), background_stopped),
        );
        let request_timeout = self.connections.request_timeout;
        let app = crate::http::router(self.state, request_timeout, &self.cors_origins)?;
        crate::http::serve::serve(self.listener, app, self.connections, async move {
            shutdown.await;
            if let Some(database) = database_shutting_down {
                database.announce();
            }
            // Open streams never finish by themselves: end them so the drain can complete.
            live.close();
        })
        .await;
        // A keyed task of a request that was cut off is not a request the drain waits for,
        // yet it needs the pool to record or release its claim: wait for it before closing.
        if !keyed_tasks.wait(KEYED_TASKS_DRAIN).await {
            tracing::warn!(
                running = keyed_tasks.running(),
                "keyed requests still running at shutdown; their claims stay in progress until stale"
            );
        }
        let _ = stop_background.send(true);
        let _ = sweeper.await;
        let _ = change_listener.await;
        self.locks.pool().close().await;
        self.database.close().await;
        tracing::info!("boxoffice stopped");
        Ok(())
    }
}

/// The key fingerprints are hashed under: the configured secret, or the one kept in the
/// database (generated by whichever instance started first).
async fn fingerprint_key(
    pool: &PgPool,
    configured: Option<&str>,
) -> Result<FingerprintKey, StartError> {
    if let Some(secret) = configured {
        return Ok(FingerprintKey::new(secret));
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random)
        .map_err(|e| format!("no randomness for the fingerprint secret: {e}"))?;
    let candidate = crate::domain::hex::encode(&random);
    let secret = db::settings::fingerprint_secret(pool, &candidate).await?;
    Ok(FingerprintKey::new(secret))
}

/// The database URL for the log, without its secrets: the password of its user part
/// (`postgres://user:secret@host/db` → `postgres://…@host/db`) and the values of the query's
/// `password` and `sslpassword` parameters, which libpq and sqlx accept as well
/// (`?host=/run/pg&password=secret` → `?host=/run/pg&password=…`). The user part ends at the
/// last `@` before the path or query, so an `@` in the query moves nothing.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|at| at + 3) else {
        return url.to_owned();
    };
    let (before_query, query) = match url[scheme_end..].find('?') {
        Some(at) => url.split_at(scheme_end + at),
        None => (url, ""),
    };
    let authority_end = before_query[scheme_end..]
        .find('/')
        .map_or(before_query.len(), |at| scheme_end + at);
    let mut out = match before_query[scheme_end..authority_end].rfind('@') {
        Some(at) => format!(
            "{}…{}",
            &url[..scheme_end],
            &before_query[scheme_end + at..]
        ),
        None => before_query.to_owned(),
    };
    if let Some(parameters) = query.strip_prefix('?') {
        out.push('?');
        let redacted: Vec<String> = parameters
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if names_a_secret(key) => format!("{key}=…"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&redacted.join("&"));
    }
    out
}

/// Registers for SIGINT and SIGTERM now, and returns what resolves on the first of them.
///
/// Registering before start-up, not when the server first polls the future, is the point: a
/// signal that arrives while the database starts, or in the moment between the server
/// answering `/ready` and its shutdown future being polled, would otherwise meet the default
/// disposition and end the process at once (exit by signal, an embedded PostgreSQL left
/// running). Registered, it is kept, and the server shuts down gracefully once it runs.
/// Errors: the signal handlers could not be installed.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received; shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn database_urls_are_logged_without_their_passwords() {
        for (url, logged) in [
            (
                "postgres://app:s3cret@db.example:5432/boxoffice",
                "postgres://…@db.example:5432/boxoffice",
            ),
            (
                "postgres://postgres@localhost/boxoffice?host=/tmp/d/postgres&password=TopSecret",
                "postgres://…@localhost/boxoffice?host=/tmp/d/postgres&password=…",
            ),
            (
                "postgresql://localhost/db?PASSWORD=x&sslmode=require&sslpassword=y",
                "postgresql://localhost/db?PASSWORD=…&sslmode=require&sslpassword=…",
            ),
            // An `@` in the query is not the end of a user part.
            (
                "postgres://localhost/db?application_name=a@b&password=p@q",
                "postgres://localhost/db?application_name=a@b&password=…",
            ),
            (
                "postgres://u:p@host?password=q",
                "postgres://…@host?password=…",
            ),
            // Its key percent-encoded, as the driver decodes it.
            (
                "postgres://localhost/db?pass%77ord=secret",
                "postgres://localhost/db?pass%77ord=…",
            ),
            ("postgres://localhost/db", "postgres://localhost/db"),
        ] {
            assert_eq!(redact(url), logged, "{url}");
            assert!(!redact(url).contains("ecret"), "{url}");
        }
    }

    #[test]
    fn a_secret_the_driver_would_not_read_is_refused_without_its_value() {
        for url in [
            "postgres://localhost/db?Password=secret",
            "postgres://localhost/db?sslpassword=secret",
            "postgres://localhost/db?PASS%57ORD=secret",
        ] {
            let Err(err) = super::database_url_options(url) else {
                panic!("{url} was accepted");
            };
            let err = err.to_string();
            assert!(err.contains("--database-url"), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
        for url in [
            "postgres://localhost/db?password=secret",
            "postgres://localhost/db?pass%77ord=secret",
            "postgres://u:secret@localhost/db",
        ] {
            assert!(super::database_url_options(url).is_ok(), "{url}");
        }
    }
}
