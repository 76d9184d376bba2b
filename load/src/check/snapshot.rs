//! [`Snapshot::load`]: the checker's own SQL. It reads rows, never the app's counters' meaning
//! nor its reports: whatever the app wrote is judged from the rows in `check`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use super::{
    AdmissionRow, AllocationRow, ChargeRow, EventRow, LineRow, Op, ProviderRefundRow, QuotaRow,
    RefundLineRow, RefundRow, ScanRow, Snapshot, WaitingEntryRow, calls,
};
use crate::history::Attempt;

/// How long to try to reach the database before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the settle wait looks again.
const SETTLE_POLL: Duration = Duration::from_millis(500);

impl Snapshot {
    /// Connects to `database_url`, waits up to `settle` for the history's events to settle
    /// (no allocation `payment_pending`, no refund `pending`), then reads everything the
    /// checker judges in one read-only repeatable-read transaction. Still unsettled after the
    /// wait is not an error: the rows are read as they are and `check` reports them.
    ///
    /// The events read: every event a path of the history names (`/events/{id}/…`), every
    /// event an answer names (`eventId`, and the `id` of a created event), and the events of
    /// the allocations paths name (`/tickets/{id}/…`).
    ///
    /// A database that cannot be reached or read (a failover in progress) is tried again,
    /// every 500 ms, until `retry` has passed since the first attempt.
    ///
    /// # Errors
    /// [`Unread::Database`] when the database still cannot be reached or read after `retry`;
    /// [`Unread::Other`] when the URL is not a PostgreSQL URL or no fingerprint secret is
    /// known (neither `fingerprint_secret` given nor one in `settings`).
    pub async fn load(
        database_url: &str,
        history: &[Attempt],
        settle: Duration,
        fingerprint_secret: Option<&str>,
        retry: Duration,
    ) -> Result<Snapshot, Unread> {
        let give_up = Instant::now() + retry;
        loop {
            let loaded = match connect(database_url, CONNECT_TIMEOUT).await {
                Ok(pool) => {
                    let loaded = load_from(&pool, history, settle, fingerprint_secret).await;
                    pool.close().await;
                    loaded
                }
                Err(err) => Err(err),
            };
            match loaded {
                Err(Unread::Database(_)) if Instant::now() < give_up => {
                    tokio::time::sleep(SETTLE_POLL).await;
                }
                loaded => return loaded,
            }
        }
    }
}

/// Why [`Snapshot::load`] read nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unread {
    /// The database could not be reached or read: nothing is known of the rows, neither
    /// lost nor kept.
    Database(String),
    /// Anything else (a URL that is not PostgreSQL's, no fingerprint secret).
    Other(String),
}

impl std::fmt::Display for Unread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unread::Database(message) | Unread::Other(message) => f.write_str(message),
        }
    }
}

/// A pool of the two connections the checker uses, its first one made within `timeout`.
///
/// # Errors
/// A message naming the database's host and port (never the URL, which may carry a
/// password) when it is not a PostgreSQL URL ([`Unread::Other`]) or no connection came in
/// time ([`Unread::Database`]).
pub(super) async fn connect(database_url: &str, timeout: Duration) -> Result<PgPool, Unread> {
    let options: PgConnectOptions = database_url
        .parse()
        .map_err(|e| Unread::Other(format!("the database URL is not a PostgreSQL URL: {e}")))?;
    let at = where_tried(&options);
    // The pool retries a refused connection until the timeout: a server still starting is
    // waited for, one that is not there is reported after `timeout`, not after 30 s.
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(timeout)
        .connect_with(options)
        .await
        .map_err(|e| {
            Unread::Database(format!(
                "cannot connect to the database at {at} within {} s: {}",
                timeout.as_secs_f64(),
                crate::with_causes(&e)
            ))
        })
}

/// Where a connection with `options` goes, as a message names it: the Unix socket, by its
/// directory and port (`/tmp/.s.PGSQL.5432`), when the URL names one (`%2Ftmp` as its host,
/// or `?host=/tmp`), where the driver leaves the host at its default, `localhost`, or a host
/// that is a directory (as the driver takes one); otherwise the host and port. Never the
/// password.
pub(super) fn where_tried(options: &PgConnectOptions) -> String {
    let host = options.get_host();
    let socket = options
        .get_socket()
        .map(PathBuf::as_path)
        .or_else(|| host.starts_with('/').then(|| Path::new(host)));
    match socket {
        Some(dir) => format!(
            "the Unix socket {} (directory {}, port {})",
            dir.join(format!(".s.PGSQL.{}", options.get_port()))
                .display(),
            dir.display(),
            options.get_port()
        ),
        None => format!("{host}:{}", options.get_port()),
    }
}

async fn load_from(
    pool: &PgPool,
    history: &[Attempt],
    settle: Duration,
    fingerprint_secret: Option<&str>,
) -> Result<Snapshot, Unread> {
    let unread = |e: sqlx::Error| {
        Unread::Database(format!(
            "cannot read the database: {}",
            crate::with_causes(&e)
        ))
    };
    let (mut events, allocations) = named_ids(history);
    let of_allocations: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT event_id::text FROM ticket_allocations WHERE id = ANY($1::uuid[])",
    )
    .bind(&allocations)
    .fetch_all(pool)
    .await
    .map_err(unread)?;
    events.extend(of_allocations);
    let events: Vec<String> = events.into_iter().collect();

    let deadline = Instant::now() + settle;
    loop {
        let unsettled: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM ticket_allocations \
                     WHERE event_id = ANY($1::uuid[]) AND status = 'payment_pending') \
                  + (SELECT count(*) FROM refunds r JOIN ticket_allocations a \
                       ON a.id = r.allocation_id \
                     WHERE a.event_id = ANY($1::uuid[]) AND r.status = 'pending')",
        )
        .bind(&events)
        .fetch_one(pool)
        .await
        .map_err(unread)?;
        if unsettled == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }

    let mut tx = pool.begin().await.map_err(unread)?;
    // One snapshot for every read: counters and the rows they must equal are compared as of
    // one moment, whatever the sweeper (expiring holds) does meanwhile.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(unread)?;
    let snapshot = read(&mut tx, &events, fingerprint_secret)
        .await
        .map_err(unread)?;
    tx.rollback().await.map_err(unread)?;
    if snapshot.fingerprint_secret.is_empty() {
        return Err(Unread::Other(
            "no fingerprint secret: the database keeps none (settings key \
                    fingerprint_secret); pass --fingerprint-secret"
                .to_owned(),
        ));
    }
    Ok(snapshot)
}

/// The event ids and allocation ids the history names, in its paths and answers.
fn named_ids(history: &[Attempt]) -> (BTreeSet<String>, Vec<String>) {
    let mut events = BTreeSet::new();
    let mut allocations = BTreeSet::new();
    for call in calls(history) {
        let path = call.attempts[0].path.split('?').next().unwrap_or_default();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            ["events", event, ..] if is_uuid(event) => {
                events.insert(event.to_string());
            }
            ["tickets", allocation, ..] if is_uuid(allocation) => {
                allocations.insert(allocation.to_string());
            }
            _ => {}
        }
        for attempt in &call.attempts {
            let Some(answer) = attempt.answer.as_ref() else {
                continue;
            };
            if let Some(event) = answer["eventId"].as_str().filter(|e| is_uuid(e)) {
                events.insert(event.to_owned());
            }
            let created = call.op == Op::CreateEvent && attempt.status == Some(201);
            if let Some(event) = answer["id"].as_str().filter(|e| created && is_uuid(e)) {
                events.insert(event.to_owned());
            }
        }
    }
    (events, allocations.into_iter().collect())
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

type Tx = Transaction<'static, Postgres>;

async fn read(
    tx: &mut Tx,
    events: &[String],
    fingerprint_secret: Option<&str>,
) -> Result<Snapshot, sqlx::Error> {
    let stored_secret: Option<String> =
        sqlx::query_scalar("SELECT value FROM settings WHERE key = 'fingerprint_secret'")
            .fetch_optional(&mut **tx)
            .await?;
    let fingerprint_secret = fingerprint_secret
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .or(stored_secret)
        .unwrap_or_default();

    let events_read: Vec<EventRow> = sqlx::query_as::<_, (String, i64, i64, i64, i64, i64, i64)>(
        "SELECT id::text, total_tickets::bigint, available_tickets::bigint, \
                reserved_tickets::bigint, purchased_tickets::bigint, set_aside_tickets::bigint, \
                waiting_list_length::bigint \
         FROM events WHERE id = ANY($1::uuid[]) ORDER BY id",
    )
    .bind(events)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(
        |(id, total, available, reserved, purchased, set_aside, waiting_list_length)| EventRow {
            id,
            total,
            available,
            reserved,
            purchased,
            set_aside,
            waiting_list_length,
        },
    )
    .collect();

    let quotas = sqlx::query_as::<_, (String, String, i64, i64, i64, i64, i64, Vec<String>)>(
        "SELECT q.id::text, q.event_id::text, q.size::bigint, q.available_tickets::bigint, \
                q.reserved_tickets::bigint, q.purchased_tickets::bigint, \
                q.set_aside_tickets::bigint, \
                COALESCE(array_agg(qt.ticket_type_id::text ORDER BY qt.ticket_type_id) \
                         FILTER (WHERE qt.ticket_type_id IS NOT NULL), '{}') \
         FROM quotas q LEFT JOIN quota_ticket_types qt ON qt.quota_id = q.id \
         WHERE q.event_id = ANY($1::uuid[]) \
         GROUP BY q.id ORDER BY q.id",
    )
    .bind(events)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(
        |(id, event_id, size, available, reserved, purchased, set_aside, ticket_type_ids)| {
            QuotaRow {
                id,
                event_id,
                size,
                available,
                reserved,
                purchased,
                set_aside,
                ticket_type_ids,
            }
        },
    )
    .collect();

    type AllocationTuple = (
        String,
        String,
        String,
        i64,
        i64,
        i64,
        i64,
        bool,
        String,
        Option<String>,
        Option<time::OffsetDateTime>,
    );
    let mut allocations: Vec<AllocationRow> = sqlx::query_as::<_, AllocationTuple>(
        "SELECT id::text, event_id::text, status, quantity::bigint, total, \
                refunded_quantity::bigint, refunded_amount, waiting_list_offer, \
                fingerprint_hash, payment_reference, expired_at \
         FROM ticket_allocations WHERE event_id = ANY($1::uuid[]) ORDER BY id",
    )
    .bind(events)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(
        |(
            id,
            event_id,
            status,
            quantity,
            total,
            refunded_quantity,
            refunded_amount,
            waiting_list_offer,
            fingerprint_hash,
            payment_reference,
            expired_at,
        )| AllocationRow {
            id,
            event_id,
            status,
            quantity,
            total,
            refunded_quantity,
            refunded_amount,
            waiting_list_offer,
            fingerprint_hash,
            payment_reference,
            expired_at: expired_at.and_then(|at| {
                at.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            }),
            lines: Vec::new(),
        },
    )
    .collect();
    let mut lines: HashMap<String, Vec<LineRow>> = HashMap::new();
    // Lines have no foreign key: read through their allocations, as every reader does.
    for (allocation, ticket_type_id, quantity, unit_price, refunded_quantity) in
        sqlx::query_as::<_, (String, String, i64, i64, i64)>(
            "SELECT l.allocation_id::text, l.ticket_type_id::text, l.quantity::bigint, \
                    l.unit_price, l.refunded_quantity::bigint \
             FROM allocation_lines l JOIN ticket_allocations a ON a.id = l.allocation_id \
             WHERE a.event_id = ANY($1::uuid[]) ORDER BY l.allocation_id, l.ticket_type_id",
        )
        .bind(events)
        .fetch_all(&mut **tx)
        .await?
    {
        lines.entry(allocation).or_default().push(LineRow {
            ticket_type_id,
            quantity,
            unit_price,
            refunded_quantity,
        });
    }
    for a in &mut allocations {
        a.lines = lines.remove(&a.id).unwrap_or_default();
    }

    let mut refunds: Vec<RefundRow> = sqlx::query_as::<_, (String, String, String, i64, String)>(
        "SELECT r.id::text, r.allocation_id::text, r.status, r.amount, r.reference \
         FROM refunds r JOIN ticket_allocations a ON a.id = r.allocation_id \
         WHERE a.event_id = ANY($1::uuid[]) ORDER BY r.created_at, r.id",
    )
    .bind(events)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|(id, allocation_id, status, amount, reference)| RefundRow {
        id,
        allocation_id,
        status,
        amount,
        reference,
        lines: Vec::new(),
    })
    .collect();
    let mut refund_lines: HashMap<String, Vec<RefundLineRow>> = HashMap::new();
    for (refund, ticket_type_id, quantity, amount) in
        sqlx::query_as::<_, (String, String, i64, i64)>(
            "SELECT rl.refund_id::text, rl.ticket_type_id::text, rl.quantity::bigint, rl.amount \
             FROM refund_lines rl JOIN refunds r ON r.id = rl.refund_id \
             JOIN ticket_allocations a ON a.id = r.allocation_id \
             WHERE a.event_id = ANY($1::uuid[])",
        )
        .bind(events)
        .fetch_all(&mut **tx)
        .await?
    {
        refund_lines.entry(refund).or_default().push(RefundLineRow {
            ticket_type_id,
            quantity,
            amount,
        });
    }
    for r in &mut refunds {
        r.lines = refund_lines.remove(&r.id).unwrap_or_default();
    }

    // A charge names its allocation in its reference (`pay_<allocation>_<nonce>`), not by a
    // key: those of the events' allocations, and those naming no allocation at all.
    let charges: Vec<ChargeRow> = sqlx::query_as::<_, (String, String, Option<i64>)>(
        "SELECT c.reference, c.outcome, c.amount \
         FROM payment_charges c \
         LEFT JOIN ticket_allocations a ON a.id = \
              CASE WHEN c.reference ~ '^pay_[0-9a-f]{32}_' \
                   THEN substr(c.reference, 5, 32)::uuid END \
         WHERE a.id IS NULL OR a.event_id = ANY($1::uuid[]) \
         ORDER BY c.reference",
    )
    .bind(events)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|(reference, outcome, amount)| ChargeRow {
        reference,
        outcome,
        amount,
    })
    .collect();
    let references: Vec<&str> = charges.iter().map(|c| c.reference.as_str()).collect();
    let provider_refunds = sqlx::query_as::<_, (String, String, String, i64)>(
        "SELECT reference, charge_reference, outcome, amount FROM payment_refunds \
         WHERE charge_reference = ANY($1) ORDER BY reference",
    )
    .bind(&references)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(
        |(reference, charge_reference, outcome, amount)| ProviderRefundRow {
            reference,
            charge_reference,
            outcome,
            amount,
        },
    )
    .collect();

    let admissions = sqlx::query_as::<_, (String, String, String, bool)>(
        "SELECT id::text, allocation_id::text, status, checked_in_at IS NOT NULL \
         FROM admissions WHERE event_id = ANY($1::uuid[]) ORDER BY id",
    )
    .bind(events)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|(id, allocation_id, status, checked_in)| AdmissionRow {
        id,
        allocation_id,
        status,
        checked_in,
    })
    .collect();
    let admitted_scans = sqlx::query_as::<_, (String, String, String)>(
        "SELECT event_id::text, nonce, admission_id::text FROM checkin_scans \
         WHERE event_id = ANY($1::uuid[]) AND result = 'admitted' ORDER BY event_id, nonce",
    )
    .bind(events)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|(event_id, nonce, admission_id)| ScanRow {
        event_id,
        nonce,
        admission_id,
    })
    .collect();
    let waiting_list =
        sqlx::query_as::<_, (String, String, String, String, String, Option<String>)>(
            "SELECT id::text, event_id::text, ticket_type_id::text, fingerprint_hash, status, \
                allocation_id::text \
         FROM waiting_list_entries WHERE event_id = ANY($1::uuid[]) ORDER BY seq",
        )
        .bind(events)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(
            |(id, event_id, ticket_type_id, fingerprint_hash, status, allocation_id)| {
                WaitingEntryRow {
                    id,
                    event_id,
                    ticket_type_id,
                    fingerprint_hash,
                    status,
                    allocation_id,
                }
            },
        )
        .collect();

    Ok(Snapshot {
        fingerprint_secret,
        events: events_read,
        quotas,
        allocations,
        refunds,
        charges,
        provider_refunds,
        admissions,
        admitted_scans,
        waiting_list,
    })
}
