//! SQL for the `events` table.

use std::collections::HashMap;

use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgPool, Row};
use uuid::Uuid;

use time::OffsetDateTime;

use crate::domain::catalogue::{DEFAULT_TICKET_TYPE_NAME, Quota, SalesWindow, TicketType};
use crate::domain::event::{Event, EventSettings, NewEvent};
use crate::domain::page::PageRequest;
use crate::domain::stats::{ChangeKind, TypeAvailability, actor_tag};
use crate::domain::waiting_list::TypeLine;

/// The columns an [`Event`] is read from, as a literal so queries can be built with `concat!`.
macro_rules! event_columns {
    () => {
        "id, name, date, total_tickets, available_tickets, reserved_tickets, \
         purchased_tickets, max_tickets_per_fingerprint, currency, sales_start_at, sales_end_at, \
         waiting_list_length, set_aside_tickets, organiser_change_seq, created_at, updated_at"
    };
}

/// Most ticket types a change notification, and so a stream message, lists: the first ones
/// in creation order. `pg_notify` refuses a payload of 8,000 bytes or more, and a refused
/// notification would fail the purchase that sends it; each type is a compact array
/// (`["<36>", available, waiting], `, at most 64 bytes with 10-digit counts) and the rest of
/// the payload (with its `changedAt` timestamp) under 450, so 100 types stay below 6,850.
pub const STREAM_TICKET_TYPES_MAX: i64 = 100;

/// [`STREAM_TICKET_TYPES_MAX`] as a literal for `concat!`.
macro_rules! stream_ticket_types_max {
    () => {
        "100"
    };
}

/// The availability of each of the event's ticket types (the first
/// [`STREAM_TICKET_TYPES_MAX`] in creation order), as a JSON array of compact
/// `[id, available, waiting]` arrays (read as `TypeAvailability`): what the public can buy
/// of the type (nothing while anyone waits for it who could be served,
/// `entry_closes_its_type`; else the least of the event's available tickets and those of
/// every quota containing the type, less what each has set aside for the waiting list; the
/// rule of `domain::waiting_list::public_available`) and how many entries wait for it. SQL over an
/// `events` row; `$quotas` names a relation of the event's quotas with `id`,
/// `available_tickets` and `set_aside_tickets` (the table itself, or the quotas as a
/// statement has just moved them).
macro_rules! type_availability {
    ($quotas:literal) => {
        concat!(
            "(SELECT COALESCE(json_agg(json_build_array(t.id, \
                 CASE WHEN t.closed THEN 0 ELSE GREATEST(0, \
                 LEAST(events.available_tickets - events.set_aside_tickets, \
                       (SELECT min(q.available_tickets - q.set_aside_tickets) \
                        FROM quota_ticket_types qt JOIN ",
            $quotas,
            " q ON q.id = qt.quota_id WHERE qt.ticket_type_id = t.id))) END, \
                 t.waiting) \
                 ORDER BY t.created_at, t.id), '[]'::json) \
             FROM (SELECT tt.id, tt.created_at, \
                          (SELECT count(*) FROM waiting_list_entries w \
                           WHERE w.ticket_type_id = tt.id AND w.status = 'waiting') AS waiting, \
                          EXISTS (SELECT 1 FROM waiting_list_entries w \
                                  WHERE w.ticket_type_id = tt.id AND \
                                  ",
            entry_closes_its_type!("w", "events.total_tickets"),
            ") AS closed \
                   FROM ticket_types tt WHERE tt.event_id = events.id \
                   ORDER BY tt.created_at, tt.id LIMIT ",
            stream_ticket_types_max!(),
            ") t)"
        )
    };
}

impl FromRow<'_, PgRow> for Event {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            date: row.try_get("date")?,
            total_tickets: row.try_get("total_tickets")?,
            available_tickets: row.try_get("available_tickets")?,
            reserved_tickets: row.try_get("reserved_tickets")?,
            purchased_tickets: row.try_get("purchased_tickets")?,
            waiting_list_length: row.try_get("waiting_list_length")?,
            set_aside_tickets: row.try_get("set_aside_tickets")?,
            // events_organiser_change_seq_range: never negative.
            organiser_change_seq: unsigned(row, "organiser_change_seq")?,
            max_tickets_per_fingerprint: row.try_get("max_tickets_per_fingerprint")?,
            currency: super::decode_currency(row.try_get("currency")?)?,
            sales_start_at: row.try_get("sales_start_at")?,
            sales_end_at: row.try_get("sales_end_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// A `bigint` column that is never negative (a sequence, a count) as a `u64`; a negative
/// value fails to decode.
fn unsigned(row: &PgRow, column: &str) -> Result<u64, sqlx::Error> {
    u64::try_from(row.try_get::<i64, _>(column)?).map_err(|e| sqlx::Error::Decode(e.into()))
}

/// Inserts a new event with every ticket available, and its default ticket type ("General
/// admission", at the event's price, in no quota), in one transaction: no event is ever
/// seen without the type `{quantity}` buys. A duplicate (name, date) fails on
/// `events_name_date_key`, which the error layer turns into `EVENT_EXISTS`.
pub async fn insert(pool: &PgPool, event: &NewEvent) -> Result<Event, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let stored: Event = sqlx::query_as(concat!(
        "INSERT INTO events (id, name, date, total_tickets, available_tickets, \
         max_tickets_per_fingerprint, currency, sales_start_at, sales_end_at) \
         VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8) \
         RETURNING ",
        event_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(&event.name)
    .bind(event.date)
    .bind(event.total_tickets)
    .bind(event.max_tickets_per_fingerprint)
    .bind(event.currency.code())
    .bind(event.sales.start)
    .bind(event.sales.end)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO ticket_types (id, event_id, name, price, is_default) \
         VALUES ($1, $2, $3, $4, true)",
    )
    .bind(Uuid::now_v7())
    .bind(stored.id)
    .bind(DEFAULT_TICKET_TYPE_NAME)
    .bind(event.price)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(stored)
}

/// One page of events by date then id, and the total count.
pub async fn list(pool: &PgPool, page: PageRequest) -> Result<(Vec<Event>, i64), sqlx::Error> {
    let events = sqlx::query_as(concat!(
        "SELECT ",
        event_columns!(),
        " FROM events ORDER BY date, id LIMIT $1 OFFSET $2"
    ))
    .bind(page.limit)
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    Ok((events, total))
}

/// An event as a stream's snapshot shows it: its counts, the change sequence that numbers
/// them, and each type's availability, all read by one statement from one row version.
#[derive(Debug, Clone)]
pub struct EventSnapshot {
    pub event: Event,
    pub change_seq: u64,
    pub ticket_types: Vec<TypeAvailability>,
    /// Admissions of the event ever checked in (see `checkins::checked_in_counts`).
    pub checked_in: u64,
}

/// The event, its change sequence and its types' availability, read together by one
/// statement, so the sequence numbers exactly the counts returned (a snapshot of the live
/// statistics).
pub async fn find_with_change_seq(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<EventSnapshot>, sqlx::Error> {
    let row = sqlx::query(concat!(
        "SELECT ",
        event_columns!(),
        ", change_seq, ",
        type_availability!("quotas"),
        " AS type_availability, \
         (SELECT count(*) FROM admissions \
          WHERE event_id = events.id AND checked_in_at IS NOT NULL) AS checked_in \
         FROM events WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        let Json(ticket_types) = row.try_get("type_availability")?;
        Ok(EventSnapshot {
            event: Event::from_row(&row)?,
            // events_change_seq_nonnegative makes this conversion infallible in practice.
            change_seq: unsigned(&row, "change_seq")?,
            ticket_types,
            checked_in: unsigned(&row, "checked_in")?,
        })
    })
    .transpose()
}

/// An event's sale state as last committed, read without a lock: its available tickets,
/// its sales window, and the database clock at the read.
#[derive(Debug, Clone)]
pub struct SaleRead {
    pub available_tickets: i32,
    pub sales: SalesWindow,
    pub now: OffsetDateTime,
}

/// The event's sale state as last committed, read without a lock (`None`: no such event).
pub async fn sale_read(pool: &PgPool, id: Uuid) -> Result<Option<SaleRead>, sqlx::Error> {
    let row: Option<(
        i32,
        Option<OffsetDateTime>,
        Option<OffsetDateTime>,
        OffsetDateTime,
    )> = sqlx::query_as(
        "SELECT available_tickets, sales_start_at, sales_end_at, clock_timestamp() \
             FROM events WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(available_tickets, start, end, now)| SaleRead {
        available_tickets,
        sales: SalesWindow { start, end },
        now,
    }))
}

/// Takes the event's row lock for the rest of the transaction and returns the row as it is
/// now. Every transaction that changes an event's counts or its allocations calls this
/// first: one lock order (event, then allocations) everywhere is what rules out deadlocks.
///
/// The lock is `FOR NO KEY UPDATE`, like every row lock the app takes: it excludes every
/// other writer of the row as `FOR UPDATE` would, but not the
/// `FOR KEY SHARE` that PostgreSQL takes on it to check a foreign key. A transaction that
/// inserts a row referencing the event (a check-in's conflict, say) while holding locks of
/// its own therefore never waits for an event's lock holder, which could be waiting for
/// those very locks (a refund revoking the admissions an upload has locked): a cycle the
/// lock order cannot see, since that lock is taken by the database, not by our code.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<Event>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        event_columns!(),
        " FROM events WHERE id = $1 FOR NO KEY UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The event row as the purchase transaction locked it.
#[derive(Debug, Clone)]
pub struct SaleLock {
    pub event: Event,
    /// The database clock once the lock was held: the instant sales windows are judged at
    /// (one clock for every instance).
    pub now: OffsetDateTime,
    /// Changes so far to the event's ticket types and set of quotas (kept by triggers, see
    /// the `catalogue_version` migration): types read at this version are still current.
    pub catalogue_version: i64,
    /// Quotas the event has: with none, there is no quota row to lock or read.
    pub quota_count: i32,
}

/// [`lock`] for the purchase transaction: the locked row with the database clock, the
/// catalogue version and the quota count, read in the same statement under the lock.
///
/// The clock is read outside the `MATERIALIZED` CTE that locks the row, so once the lock is
/// held: PostgreSQL computes a locking `SELECT`'s columns before it waits for the row, and
/// evaluates them again after the wait only if the holder wrote a newer version of the row.
/// A holder that writes nothing (a refund's first step, an expiry round that found no
/// lapsed hold) would leave `locked_at` at the instant the purchase began to wait, and a
/// sale that closed during the wait would still be judged open.
pub async fn lock_for_sale(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<SaleLock>, sqlx::Error> {
    let row = sqlx::query(concat!(
        "WITH locked AS MATERIALIZED (SELECT ",
        event_columns!(),
        ", catalogue_version, quota_count FROM events WHERE id = $1 FOR NO KEY UPDATE) \
         SELECT *, clock_timestamp() AS locked_at FROM locked"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        Ok(SaleLock {
            event: Event::from_row(&row)?,
            now: row.try_get("locked_at")?,
            catalogue_version: row.try_get("catalogue_version")?,
            quota_count: row.try_get("quota_count")?,
        })
    })
    .transpose()
}

/// How an allocation's transition moves tickets between the counts of the event and of its
/// quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountMove {
    /// available → reserved (a new hold).
    Reserve,
    /// reserved → available (cancel or expiry).
    Release,
    /// reserved → purchased (payment captured).
    Pay,
    /// purchased → available (a completed refund).
    Refund,
}

/// The channel name, as a literal so the notifying SQL below can be built with `concat!`.
macro_rules! changes_channel {
    () => {
        "boxoffice_event_changes"
    };
}

/// The channel every instance LISTENs on for count changes.
pub const CHANGES_CHANNEL: &str = changes_channel!();

/// The `pg_notify` call that announces an event's counts after a change, as SQL over the
/// `events` row, given the parameters holding the change kind and the actor tag and the
/// relation the quotas' availability is read from (see [`type_availability`]). A
/// notification is sent at commit and dropped on rollback, and all are delivered in commit
/// order. It carries the row's `change_seq`, which the announcing `UPDATE` has just bumped
/// under the event row lock, so an event's notifications carry increasing sequences in
/// commit order, and `changedAt`, the statement's clock (`clock_timestamp()`, not the
/// transaction's start), so a subscriber can tell how long the change took to reach it.
macro_rules! notify_counts {
    ($kind:literal, $actor:literal, $quotas:literal) => {
        concat!(
            "pg_notify('",
            changes_channel!(),
            "', json_build_object(\
               'eventId', id, 'total', total_tickets, 'available', available_tickets, \
               'reserved', reserved_tickets, 'purchased', purchased_tickets, \
               'waitingListLength', waiting_list_length, 'setAside', set_aside_tickets, \
               'seq', change_seq, 'organiserChangeSeq', organiser_change_seq, \
               'changedAt', clock_timestamp(), 'type', ",
            $kind,
            "::text, 'actor', ",
            $actor,
            "::text, 'ticketTypes', ",
            type_availability!($quotas),
            ")::text)"
        )
    };
}

/// The assignment that keeps `organiser_change_seq` at the change sequence of the event's
/// latest `event_updated`, given the parameter holding the change kind: in the statement
/// that bumps `change_seq`, whose right-hand sides all read the row before it, so an
/// organiser's change records the sequence it is announced with, whatever path announced it.
macro_rules! follow_organiser_change {
    ($kind:literal) => {
        concat!(
            "organiser_change_seq = CASE WHEN ",
            $kind,
            "::text = 'event_updated' THEN change_seq + 1 ELSE organiser_change_seq END"
        )
    };
}

/// The statement of [`move_counts`] for one move between two count columns. The quota update
/// is a data-modifying CTE, inside the same statement and transaction as the event's. Every
/// part of one statement reads the same snapshot, which does not show the CTE's own update:
/// the notification reads each quota's availability from `quota_now`, the moved value where
/// the CTE moved it and the stored one elsewhere.
macro_rules! move_counts_sql {
    ($from:literal, $to:literal) => {
        concat!(
            "WITH moved AS ( \
                 SELECT qt.quota_id, sum(m.tickets)::int AS tickets \
                 FROM unnest($5::uuid[], $6::int[]) AS m(ticket_type_id, tickets) \
                 JOIN quota_ticket_types qt ON qt.ticket_type_id = m.ticket_type_id \
                 GROUP BY qt.quota_id), \
             quota_moves AS ( \
                 UPDATE quotas q SET ",
            $from,
            " = q.",
            $from,
            " - moved.tickets, ",
            $to,
            " = q.",
            $to,
            " + moved.tickets, updated_at = now() \
                 FROM moved WHERE q.id = moved.quota_id \
                 RETURNING q.id, q.available_tickets), \
             quota_now AS ( \
                 SELECT q.id, COALESCE(m.available_tickets, q.available_tickets) \
                     AS available_tickets, q.set_aside_tickets \
                 FROM quotas q LEFT JOIN quota_moves m ON m.id = q.id WHERE q.event_id = $1) \
             UPDATE events SET ",
            $from,
            " = ",
            $from,
            " - $2, ",
            $to,
            " = ",
            $to,
            " + $2, \
                 change_seq = change_seq + 1, ",
            follow_organiser_change!("$3"),
            ", updated_at = now() \
             WHERE id = $1 RETURNING ",
            notify_counts!("$3", "$4", "quota_now")
        )
    };
}

/// Moves tickets between counts, on the event and on every quota that contains their types,
/// bumps the event's change sequence and announces the change, in one statement. `tickets`
/// is the number the event's counts move by (the allocations' own quantities); `by_type`
/// gives the same tickets by ticket type, for the quotas (types in no quota move only the
/// event's counts). Call only while holding the event's row lock (see [`lock`]) and, when the event
/// has quotas, their row locks (`quotas::lock_for_event`): the event lock is what makes
/// sequence order commit order, and lock order event → quotas → allocations is kept by every
/// caller. The CHECK constraints on `events` and `quotas` refuse any result that would
/// oversell.
pub async fn move_counts(
    conn: &mut PgConnection,
    id: Uuid,
    movement: CountMove,
    tickets: i32,
    by_type: &[(Uuid, i32)],
    change: ChangeKind,
    actor: &str,
) -> Result<(), sqlx::Error> {
    let types: Vec<Uuid> = by_type.iter().map(|(id, _)| *id).collect();
    let counts: Vec<i32> = by_type.iter().map(|(_, n)| *n).collect();
    let sql = match movement {
        CountMove::Reserve => move_counts_sql!("available_tickets", "reserved_tickets"),
        CountMove::Release => move_counts_sql!("reserved_tickets", "available_tickets"),
        CountMove::Pay => move_counts_sql!("reserved_tickets", "purchased_tickets"),
        CountMove::Refund => move_counts_sql!("purchased_tickets", "available_tickets"),
    };
    sqlx::query(sql)
        .bind(id)
        .bind(tickets)
        .bind(change.as_str())
        .bind(actor_tag(actor))
        .bind(&types)
        .bind(&counts)
        .execute(conn)
        .await?;
    Ok(())
}

/// Announces a change that moved no counts (a declined payment back to reserved), with its
/// own change sequence number. An `UPDATE` rather than a `SELECT`, since the sequence must
/// move; call only while holding the event's row lock (see [`lock`]), like [`move_counts`].
/// `updated_at` stays: the event's counts did not change.
pub async fn announce(
    conn: &mut PgConnection,
    id: Uuid,
    change: ChangeKind,
    actor: &str,
) -> Result<(), sqlx::Error> {
    announce_as(conn, id, change, &actor_tag(actor)).await
}

/// Announces an organiser's change to the catalogue that moved no event counts but may have
/// moved what a type can sell or cost (a quota made, resized, retyped or deleted; a type
/// added or changed), as
/// `event_updated` by [`ORGANISER_ACTOR`], so every stream sees the types' new availability.
/// Call while holding the event's row lock, after the change, in its transaction: the
/// notification reads the quotas as the change left them, and is sent only if it commits.
pub async fn announce_catalogue_change(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<(), sqlx::Error> {
    announce_as(conn, id, ChangeKind::EventUpdated, ORGANISER_ACTOR).await
}

/// Announces a change to the event's waiting list (an entry joined, left or was offered
/// tickets; what is set aside moved), as `waiting_list_changed` by `actor_tag` (a buyer's
/// [`actor_tag`] or [`ORGANISER_ACTOR`]), so every stream sees `waitingListLength`, the
/// set-aside tickets and each type's `waiting` as the change left them. Call while holding
/// the event's row lock, after the change, in its transaction.
pub async fn announce_waiting_list_change(
    conn: &mut PgConnection,
    id: Uuid,
    actor_tag: &str,
) -> Result<(), sqlx::Error> {
    announce_as(conn, id, ChangeKind::WaitingListChanged, actor_tag).await
}

async fn announce_as(
    conn: &mut PgConnection,
    id: Uuid,
    change: ChangeKind,
    actor_tag: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(concat!(
        "UPDATE events SET change_seq = change_seq + 1, ",
        follow_organiser_change!("$2"),
        " WHERE id = $1 RETURNING ",
        notify_counts!("$2", "$3", "quotas")
    ))
    .bind(id)
    .bind(change.as_str())
    .bind(actor_tag)
    .execute(conn)
    .await?;
    Ok(())
}

/// The actor an organiser's change is announced with (a buyer's is a fingerprint tag).
pub const ORGANISER_ACTOR: &str = "organiser";

/// Writes an organiser's changes to the event, in one statement that also moves
/// `available_tickets` by the change of `total_tickets`, bumps the change sequence and
/// announces the new counts (`event_updated`, actor [`ORGANISER_ACTOR`]), so every stream
/// sees the new total. Call only while holding the event's row lock (see [`lock`]), having
/// checked the new total covers the tickets held; the CHECK constraints refuse it otherwise.
/// A clash of name and date fails on `events_name_date_key` (`EVENT_EXISTS`). A change of
/// name or date changes that unique key, so PostgreSQL takes the row `FOR UPDATE` until
/// commit: an insert referencing the event (a check-in conflict) waits for this transaction
/// meanwhile, which locks nothing such an insert's transaction holds (docs/concurrency.md).
pub async fn update_settings(
    conn: &mut PgConnection,
    id: Uuid,
    settings: &EventSettings,
) -> Result<Event, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE events SET name = $2, date = $3, \
         available_tickets = available_tickets + ($4 - total_tickets), total_tickets = $4, \
         max_tickets_per_fingerprint = $5, sales_start_at = $6, sales_end_at = $7, \
         change_seq = change_seq + 1, ",
        follow_organiser_change!("$8"),
        ", updated_at = now() WHERE id = $1 RETURNING ",
        event_columns!(),
        ", ",
        notify_counts!("$8", "$9", "quotas")
    ))
    .bind(id)
    .bind(&settings.name)
    .bind(settings.date)
    .bind(settings.total_tickets)
    .bind(settings.max_tickets_per_fingerprint)
    .bind(settings.sales.start)
    .bind(settings.sales.end)
    .bind(ChangeKind::EventUpdated.as_str())
    .bind(ORGANISER_ACTOR)
    .fetch_one(conn)
    .await
}

/// The most tickets one buyer holds for the event (0 when none does). Call under the event's
/// row lock: every change to a buyer's counter comes from an allocation change, which takes
/// that lock first.
pub async fn most_held_by_one_buyer(conn: &mut PgConnection, id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(max(held_tickets), 0)::bigint FROM buyer_tickets WHERE event_id = $1",
    )
    .bind(id)
    .fetch_one(conn)
    .await
}

/// An event with its catalogue, from one snapshot (see [`find_with_catalogue`]).
pub struct Catalogue {
    pub event: Event,
    /// In creation order.
    pub ticket_types: Vec<TicketType>,
    /// In id order.
    pub quotas: Vec<Quota>,
    /// Each type's line: how many wait, and whether that closes the type (absent: nobody).
    pub waiting: HashMap<Uuid, TypeLine>,
}

/// The event with its ticket types, quotas and waiting-list lengths, read in one REPEATABLE
/// READ, read-only transaction: all from one snapshot, so the types' availability is never
/// computed from counts of two different moments. Takes no lock.
pub async fn find_with_catalogue(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<Catalogue>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // First statement of the transaction, so the snapshot is taken after it.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let event: Option<Event> = sqlx::query_as(concat!(
        "SELECT ",
        event_columns!(),
        " FROM events WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(event) = event else {
        return Ok(None);
    };
    let ticket_types = super::ticket_types::for_event(&mut tx, id).await?;
    let quotas = super::quotas::for_event(&mut tx, id).await?;
    let waiting = super::waiting_list::waiting_by_type(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Some(Catalogue {
        event,
        ticket_types,
        quotas,
        waiting,
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::domain::stats::{ChangeKind, CountsChanged, TypeAvailability};

    /// The keys of the `n`th `json_build_object` call in `sql`, read from the SQL itself: its
    /// arguments are split at the commas outside parentheses and quotes, and the keys are the
    /// quoted literals in even positions ('key', value, 'key', value, ...).
    fn sql_keys(sql: &str, n: usize) -> BTreeSet<String> {
        let args = sql
            .split("json_build_object(")
            .nth(n + 1)
            .expect("the notification builds a JSON object");
        let (mut depth, mut quoted, mut start) = (0, false, 0);
        let mut pieces = Vec::new();
        for (i, c) in args.char_indices() {
            match c {
                '\'' => quoted = !quoted,
                '(' if !quoted => depth += 1,
                ')' if !quoted && depth == 0 => {
                    pieces.push(&args[start..i]);
                    break;
                }
                ')' if !quoted => depth -= 1,
                ',' if !quoted && depth == 0 => {
                    pieces.push(&args[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        pieces
            .into_iter()
            .step_by(2)
            .filter_map(|key| {
                let key = key.trim();
                Some(key.strip_prefix('\'')?.strip_suffix('\'')?.to_owned())
            })
            .collect()
    }

    /// The keys serde writes for `value`.
    fn serde_keys(value: impl serde::Serialize) -> BTreeSet<String> {
        let json = serde_json::to_value(value).expect("serializable");
        json.as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect()
    }

    /// The notification is parsed as a `CountsChanged`: the SQL must write exactly the names
    /// serde reads, in every statement that notifies. Each type's entry is a compact array
    /// (see `TypeAvailability`'s wire forms), so it has no names to match.
    #[test]
    fn the_notification_sql_uses_the_serde_names() {
        let change = CountsChanged {
            event_id: uuid::Uuid::nil(),
            total: 1,
            available: 1,
            reserved: 0,
            purchased: 0,
            waiting_list_length: 0,
            set_aside: 0,
            seq: 1,
            organiser_change_seq: 0,
            kind: ChangeKind::TicketAllocated,
            actor: "0011aabb".into(),
            ticket_types: Vec::new(),
            changed_at: None,
        };
        for sql in [
            notify_counts!("$3", "$4", "quotas"),
            move_counts_sql!("available_tickets", "reserved_tickets"),
        ] {
            assert_eq!(sql_keys(sql, 0), serde_keys(&change), "{sql}");
        }
        assert!(type_availability!("quotas").contains("json_build_array(t.id, "));
    }

    /// A type's compact entry reads as its id, what the public can buy and how many wait;
    /// the named form (an older instance's notification) still reads.
    #[test]
    fn a_types_entry_reads_in_both_wire_forms() {
        let id = uuid::Uuid::nil();
        let compact: TypeAvailability =
            serde_json::from_str(&format!(r#"["{id}", 3, 7]"#)).unwrap();
        assert_eq!(
            compact,
            TypeAvailability {
                id,
                available: 3,
                waiting: 7
            }
        );
        let named: TypeAvailability =
            serde_json::from_str(&format!(r#"{{"id" : "{id}", "available" : 3}}"#)).unwrap();
        assert_eq!(
            named,
            TypeAvailability {
                id,
                available: 3,
                waiting: 0
            }
        );
    }
}
