//! All SQL lives under this module: one file per table or concern. Callers own transactions;
//! functions take `&mut PgConnection` so they run inside whichever transaction holds the locks.
//!
//! **Statements that name their rows by key reach them by key only.** A statement given a
//! list of ids (`id = ANY($n)`) keeps every other condition on the same rows out of the
//! planner's reach with `(…) IS TRUE`, which no index can serve and which proves no partial
//! index's predicate. Without it, statistics older than a fast sale (a new event, tables not
//! analysed since its first minute) made the planner AND the key with an index on
//! `(event_id, status)` or the live-holds index, walking every row of the event (dead ones
//! included) to find a batch of sixty: 7–16 ms per statement under the event lock, growing
//! with the sale. The condition still holds row by row; only the access path is fixed.
//! A list of values of a column that is not unique on its own (`admissions.allocation_id`,
//! the first column of a two-column key) is estimated at a share of the table per value, so
//! its rows are looked up value by value instead (`LATERAL … OFFSET 0`, which the planner
//! cannot merge into one scan: `admissions::of_allocations`).

/// The SQL condition under which the waiting-list entry `$w` (a `waiting_list_entries`
/// alias) closes its type to the public: it waits, and its quantity is within what the type
/// can ever have at once, the least of the event's capacity (`$total`, an SQL expression)
/// and the size of every quota containing the type (`domain::waiting_list::ceiling`). An
/// entry above that can never be served, so it keeps its place but closes nothing: one
/// buyer asking for more than exists cannot stop a type's sale.
macro_rules! entry_closes_its_type {
    ($w:literal, $total:literal) => {
        concat!(
            $w,
            ".status = 'waiting' AND ",
            $w,
            ".quantity <= LEAST(",
            $total,
            ", COALESCE((SELECT min(cq.size) FROM quota_ticket_types cqt \
                JOIN quotas cq ON cq.id = cqt.quota_id \
                WHERE cqt.ticket_type_id = ",
            $w,
            ".ticket_type_id), 2147483647))"
        )
    };
}

pub mod admissions;
pub mod allocations;
pub mod charges;
pub mod checkins;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod quotas;
pub mod refunds;
pub mod report;
pub mod sale;
pub mod settings;
pub mod signing_keys;
pub mod ticket_types;
pub mod tokens;
pub mod waiting_list;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use sqlx::migrate::Migrator;

/// The schema migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Session settings every pooled connection starts with.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub lock_timeout_ms: u32,
    pub statement_timeout_ms: u32,
}

/// A pool whose waits are bounded: a request that cannot get a connection, a lock or a
/// statement result in time fails with 503 instead of hanging. Every session runs at READ
/// COMMITTED whatever the server's default: the purchase path relies on row locks, and a
/// stricter level would only turn contention into serialization failures. JIT compilation
/// is off: every statement here is short, and a statement over many rows whose estimate
/// crossed `jit_above_cost` (an expiry sweep's trigger, a settle batch's) spent 100-350 ms
/// compiling, holding the event lock, to run for a few milliseconds.
pub async fn connect_pool(
    options: PgConnectOptions,
    max_connections: u32,
    limits: SessionLimits,
) -> Result<PgPool, sqlx::Error> {
    let options = options.options([
        ("default_transaction_isolation", "read committed".to_owned()),
        ("lock_timeout", limits.lock_timeout_ms.to_string()),
        ("statement_timeout", limits.statement_timeout_ms.to_string()),
        ("jit", "off".to_owned()),
    ]);
    pool_options(max_connections).connect_with(options).await
}

/// A second pool to `pool`'s database with its sessions' settings, of at most
/// `max_connections`, connecting only when a connection is first needed, from the runtime
/// current at that time (see `purchase::lock_runtime`). Must be called inside a runtime:
/// the pool's upkeep task is spawned there.
pub fn lazy_twin(pool: &PgPool, max_connections: u32) -> PgPool {
    pool_options(max_connections).connect_lazy_with((*pool.connect_options()).clone())
}

/// How many connections the database takes from users like this one: `max_connections` less
/// `superuser_reserved_connections` (kept for superusers; counted out even when connected as
/// one, so that an administrator can still get in).
pub async fn connections_allowed(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT current_setting('max_connections')::bigint \
              - current_setting('superuser_reserved_connections')::bigint",
    )
    .fetch_one(pool)
    .await
}

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    // sqlx takes an advisory lock, so several instances starting at once migrate once.
    MIGRATOR.run(pool).await
}

/// Creates `database` on the server unless it exists. `admin` points at a database that
/// already exists (normally `postgres`).
pub async fn create_database_if_missing(
    admin: &PgConnectOptions,
    database: &str,
) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect_with(admin).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let statement = format!("CREATE DATABASE {}", quote_identifier(database));
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await
}

/// Quotes an SQL identifier (doubling embedded quotes).
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether the database answers a trivial query.
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}

/// A stored currency code as the domain's [`Currency`](crate::domain::money::Currency); the
/// `*_currency_code` constraints store only three capitals, and the app writes only ISO codes.
pub(crate) fn decode_currency(code: String) -> Result<crate::domain::money::Currency, sqlx::Error> {
    code.parse().map_err(|message: String| {
        sqlx::Error::Decode(format!("currency {code:?}: {message}").into())
    })
}
