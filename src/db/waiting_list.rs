//! SQL for `waiting_list_entries`, and the offer holds the waiting list makes. Every writer
//! holds the event's row lock (the lock order is the event row, its quota rows, then
//! allocation and entry rows); the triggers of the waiting-list migration keep
//! `events.waiting_list_length` and follow offered holds.

use std::collections::{HashMap, HashSet};

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, PgPool, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::page::PageRequest;
use crate::domain::waiting_list::{EntryStatus, InLine, Offer, TypeLine, WaitingEntry};

/// The columns a [`WaitingEntry`] is read from, over `waiting_list_entries w`: its position
/// among the entries of its type that wait (counted from 1, null unless it waits) and its
/// offer's expiry.
macro_rules! entry_columns {
    () => {
        "w.id, w.event_id, w.ticket_type_id, w.quantity, w.status, w.created_at, \
         w.fingerprint_hash, w.allocation_id, \
         (SELECT a.expires_at FROM ticket_allocations a WHERE a.id = w.allocation_id) \
             AS offer_expires_at, \
         CASE WHEN w.status = 'waiting' THEN \
             (SELECT count(*) FROM waiting_list_entries ahead \
              WHERE ahead.ticket_type_id = w.ticket_type_id AND ahead.status = 'waiting' \
                AND ahead.seq <= w.seq) END AS position"
    };
}

impl FromRow<'_, PgRow> for WaitingEntry {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let status: String = row.try_get("status")?;
        let status: EntryStatus = status
            .parse()
            .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
        let allocation_id: Option<Uuid> = row.try_get("allocation_id")?;
        let expires_at: Option<OffsetDateTime> = row.try_get("offer_expires_at")?;
        Ok(Self {
            id: row.try_get("id")?,
            event_id: row.try_get("event_id")?,
            ticket_type_id: row.try_get("ticket_type_id")?,
            quantity: row.try_get("quantity")?,
            status,
            position: row.try_get("position")?,
            offer: allocation_id
                .zip(expires_at)
                .map(|(allocation_id, expires_at)| Offer {
                    allocation_id,
                    expires_at,
                }),
            created_at: row.try_get("created_at")?,
            fingerprint_hash: row.try_get("fingerprint_hash")?,
        })
    }
}

/// Adds a `waiting` entry at the back of the line. Call under the event's row lock (join
/// order is the order that lock is granted in). A buyer who already has a live entry for the
/// type fails on `waiting_list_entries_one_live_per_buyer` (`ALREADY_WAITING`).
pub async fn insert(
    conn: &mut PgConnection,
    event_id: Uuid,
    ticket_type_id: Uuid,
    fingerprint_hash: &str,
    quantity: i32,
    offer_seconds: u32,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO waiting_list_entries \
             (id, event_id, ticket_type_id, fingerprint_hash, quantity, offer_seconds) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(event_id)
    .bind(ticket_type_id)
    .bind(fingerprint_hash)
    .bind(quantity)
    .bind(i64::from(offer_seconds))
    .fetch_one(conn)
    .await
}

/// The event's row as a walk of its waiting list needs it.
#[derive(Debug, Clone, Copy, FromRow)]
pub struct LineEvent {
    pub waiting_list_length: i32,
    pub available_tickets: i32,
    pub total_tickets: i32,
    pub set_aside_tickets: i32,
    pub max_tickets_per_fingerprint: Option<i32>,
    pub sales_end_at: Option<OffsetDateTime>,
    /// The database clock, read with the row: sales windows are judged by it.
    pub now: OffsetDateTime,
}

/// The event's waiting-list state on its row, and the database clock. Call under the
/// event's row lock, in a statement after the one that took it: the clock is then read once
/// the lock is held, not before a wait for it (`clock_timestamp()`, not the transaction's
/// start, which may be earlier by the whole wait).
pub async fn event_state(
    conn: &mut PgConnection,
    event_id: Uuid,
) -> Result<Option<LineEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT waiting_list_length, available_tickets, total_tickets, set_aside_tickets, \
                max_tickets_per_fingerprint, sales_end_at, clock_timestamp() AS now \
         FROM events WHERE id = $1",
    )
    .bind(event_id)
    .fetch_optional(conn)
    .await
}

/// One entry, as committed (or as this transaction wrote it).
pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<WaitingEntry>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        entry_columns!(),
        " FROM waiting_list_entries w WHERE w.id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The event of an entry (it never changes, so it may be read before any lock).
pub async fn event_of(conn: &mut PgConnection, id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT event_id FROM waiting_list_entries WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// One page of a buyer's entries, newest first, and their total count.
pub async fn list_for_buyer(
    pool: &PgPool,
    fingerprint_hash: &str,
    page: PageRequest,
) -> Result<(Vec<WaitingEntry>, i64), sqlx::Error> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        entry_columns!(),
        " FROM waiting_list_entries w WHERE w.fingerprint_hash = $1 \
          ORDER BY w.seq DESC LIMIT $2 OFFSET $3"
    ))
    .bind(fingerprint_hash)
    .bind(page.limit)
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let total =
        sqlx::query_scalar("SELECT count(*) FROM waiting_list_entries WHERE fingerprint_hash = $1")
            .bind(fingerprint_hash)
            .fetch_one(pool)
            .await?;
    Ok((rows, total))
}

/// One page of an event's entries in join order (every status), and their total count.
pub async fn list_for_event(
    pool: &PgPool,
    event_id: Uuid,
    page: PageRequest,
) -> Result<(Vec<WaitingEntry>, i64), sqlx::Error> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        entry_columns!(),
        " FROM waiting_list_entries w WHERE w.event_id = $1 \
          ORDER BY w.seq LIMIT $2 OFFSET $3"
    ))
    .bind(event_id)
    .bind(page.limit)
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar("SELECT count(*) FROM waiting_list_entries WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(pool)
        .await?;
    Ok((rows, total))
}

/// Locks an entry's row (after its event's lock and quota locks) and returns it.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<WaitingEntry>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        entry_columns!(),
        " FROM waiting_list_entries w WHERE w.id = $1 FOR UPDATE OF w"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The entries of the event that wait, in join order. Call under the event's row lock: only
/// transactions holding it add, offer or end entries, so the line cannot move until commit.
pub async fn line(conn: &mut PgConnection, event_id: Uuid) -> Result<Vec<InLine>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid, i32, String, i32)> = sqlx::query_as(
        "SELECT id, ticket_type_id, quantity, fingerprint_hash, offer_seconds \
         FROM waiting_list_entries \
         WHERE event_id = $1 AND status = 'waiting' ORDER BY seq",
    )
    .bind(event_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, ticket_type_id, quantity, fingerprint_hash, offer_seconds)| InLine {
                id,
                ticket_type_id,
                quantity,
                fingerprint_hash,
                offer_seconds: u32::try_from(offer_seconds).unwrap_or(1),
            },
        )
        .collect())
}

/// The event's types that someone waits for.
pub async fn waiting_types(
    conn: &mut PgConnection,
    event_id: Uuid,
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let types: Vec<Uuid> = sqlx::query_scalar(concat!(
        "SELECT DISTINCT w.ticket_type_id FROM waiting_list_entries w \
         JOIN events e ON e.id = w.event_id \
         WHERE w.event_id = $1 AND ",
        entry_closes_its_type!("w", "e.total_tickets")
    ))
    .bind(event_id)
    .fetch_all(conn)
    .await?;
    Ok(types.into_iter().collect())
}

/// Each of the event's types someone waits for: how many wait, and whether that closes the
/// type to the public (as [`waiting_types`]). Types nobody waits for are absent.
pub async fn waiting_by_type(
    conn: &mut PgConnection,
    event_id: Uuid,
) -> Result<HashMap<Uuid, TypeLine>, sqlx::Error> {
    let rows: Vec<(Uuid, i64, bool)> = sqlx::query_as(concat!(
        "SELECT w.ticket_type_id, count(*), bool_or(",
        entry_closes_its_type!("w", "e.total_tickets"),
        ") FROM waiting_list_entries w JOIN events e ON e.id = w.event_id \
         WHERE w.event_id = $1 AND w.status = 'waiting' GROUP BY w.ticket_type_id"
    ))
    .bind(event_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, waiting, closed)| (id, TypeLine { waiting, closed }))
        .collect())
}

/// Makes the hold offered to an entry: `reserved`, for the entry's buyer, of its quantity of
/// its type at `unit_price` (minor units), lapsing the entry's `offer_seconds` from now, with
/// its line, in one statement (like `allocations::insert_reserved`); then marks the entry
/// `offered` with it. Returns the hold's id. Call under the event's row lock and its quota
/// locks, then move the counts (`events::move_counts`, `Reserve`).
pub async fn insert_offer(
    conn: &mut PgConnection,
    event_id: Uuid,
    entry: &InLine,
    unit_price: i64,
) -> Result<Uuid, sqlx::Error> {
    let allocation_id = Uuid::now_v7();
    sqlx::query(
        "WITH line AS ( \
             INSERT INTO allocation_lines (allocation_id, ticket_type_id, quantity, unit_price) \
             VALUES ($2, $3, $4, $5)) \
         INSERT INTO ticket_allocations \
             (id, event_id, quantity, status, fingerprint_hash, expires_at, total, \
              waiting_list_offer) \
         VALUES ($2, $1, $4, 'reserved', $6, now() + make_interval(secs => $7), $5 * $4, true)",
    )
    .bind(event_id)
    .bind(allocation_id)
    .bind(entry.ticket_type_id)
    .bind(entry.quantity)
    .bind(unit_price)
    .bind(&entry.fingerprint_hash)
    .bind(f64::from(entry.offer_seconds))
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE waiting_list_entries SET status = 'offered', allocation_id = $2, \
             offered_at = clock_timestamp() \
         WHERE id = $1",
    )
    .bind(entry.id)
    .bind(allocation_id)
    .execute(conn)
    .await?;
    Ok(allocation_id)
}

/// Ends a waiting entry without an offer: `left` (the buyer left) or `expired` (passed
/// over). Returns whether it was still waiting.
pub async fn end_waiting(
    conn: &mut PgConnection,
    id: Uuid,
    status: EntryStatus,
) -> Result<bool, sqlx::Error> {
    let ended = sqlx::query(
        "UPDATE waiting_list_entries SET status = $2, ended_at = clock_timestamp() \
         WHERE id = $1 AND status = 'waiting'",
    )
    .bind(id)
    .bind(status.as_str())
    .execute(conn)
    .await?;
    Ok(ended.rows_affected() == 1)
}

/// Stores what the event and each of its quotas set aside for waiting lists (only the rows
/// whose figure changed are written). Call under the event's row lock and its quota locks.
pub async fn store_set_aside(
    conn: &mut PgConnection,
    event_id: Uuid,
    event_set_aside: i32,
    quota_set_aside: &HashMap<Uuid, i32>,
) -> Result<(), sqlx::Error> {
    let (quotas, counts): (Vec<Uuid>, Vec<i32>) = quota_set_aside.iter().unzip();
    sqlx::query(
        "WITH quota_moves AS ( \
             UPDATE quotas q SET set_aside_tickets = m.tickets \
             FROM unnest($3::uuid[], $4::int[]) AS m(id, tickets) \
             WHERE q.id = m.id AND q.event_id = $1 AND q.set_aside_tickets <> m.tickets) \
         UPDATE events SET set_aside_tickets = $2 \
         WHERE id = $1 AND set_aside_tickets <> $2",
    )
    .bind(event_id)
    .bind(event_set_aside)
    .bind(&quotas)
    .bind(&counts)
    .execute(conn)
    .await?;
    Ok(())
}
