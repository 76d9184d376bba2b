//! SQL for the `ticket_allocations` table. Writes here run inside a transaction that already
//! holds the allocation's event row lock (see `db::events::lock`).
//!
//! The database moves each buyer's `buyer_tickets` counter with every statement that writes
//! holds (statement-level triggers, migration `20261130000003`), so no code here moves it and
//! no writer can let it drift; its CHECK (`buyer_tickets_within_cap`) is the schema's
//! backstop for the per-buyer cap. Every statement that changes a status matches only the statuses
//! `AllocationStatus::can_become` allows to precede the new one.

use std::collections::HashMap;
use std::sync::LazyLock;

use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Connection, FromRow, PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::allocation::{Allocation, PendingPayment};
use crate::domain::catalogue::AllocationLine;
use crate::domain::confirmation::OrderFilter;
use crate::domain::fingerprint::FingerprintHash;
use crate::domain::grant::{Ask, Grant};
use crate::domain::money::Currency;
use crate::domain::page::PageRequest;
use crate::domain::status::AllocationStatus;

/// The columns an [`Allocation`] is read from, without its lines and refunds, as a literal
/// for `concat!`.
macro_rules! allocation_row_columns {
    () => {
        "id, event_id, quantity, status, fingerprint_hash, expires_at, payment_pending_at, \
         purchased_at, cancelled_at, expired_at, confirmation_code, payment_reference, \
         total, refunded_quantity, refunded_amount, refunded_at, created_at, updated_at"
    };
}

/// Every column an [`Allocation`] is read from, with its lines (in the types' creation
/// order) and refunds (oldest first) as JSON, over the unaliased `ticket_allocations` (the
/// subqueries name it to tell its `id` from the types').
macro_rules! allocation_columns {
    () => {
        concat!(
            allocation_row_columns!(),
            ", (SELECT e.currency FROM events e WHERE e.id = ticket_allocations.event_id) \
               AS currency, \
             (SELECT coalesce(json_agg(json_build_object( \
                 'ticketTypeId', l.ticket_type_id, 'ticketTypeName', t.name, \
                 'quantity', l.quantity, 'unitPrice', l.unit_price, \
                 'amount', l.unit_price * l.quantity, 'refundedQuantity', l.refunded_quantity) \
                 ORDER BY t.created_at, t.id), '[]') \
               FROM allocation_lines l JOIN ticket_types t ON t.id = l.ticket_type_id \
               WHERE l.allocation_id = ticket_allocations.id) AS lines, \
             (SELECT coalesce(json_agg(json_build_object( \
                 'id', r.id, 'status', r.status, 'amount', r.amount, 'reason', r.reason, \
                 'createdAt', r.created_at, \
                 'lines', (SELECT coalesce(json_agg(json_build_object( \
                              'ticketTypeId', rl.ticket_type_id, 'quantity', rl.quantity, \
                              'amount', rl.amount) ORDER BY rl.ticket_type_id), '[]') \
                           FROM refund_lines rl WHERE rl.refund_id = r.id)) \
                 ORDER BY r.created_at, r.id), '[]') \
               FROM refunds r WHERE r.allocation_id = ticket_allocations.id) AS refunds"
        )
    };
}

/// The columns a [`PendingPayment`] is read from, as a literal for `concat!`: step one's
/// `RETURNING` reads no lines or refunds, which the payment does not use.
macro_rules! pending_payment_columns {
    () => {
        "id, event_id, total, payment_reference, payment_pending_at, \
         (SELECT e.currency FROM events e WHERE e.id = ticket_allocations.event_id) AS currency"
    };
}

impl FromRow<'_, PgRow> for PendingPayment {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            event_id: row.try_get("event_id")?,
            total: row.try_get("total")?,
            currency: super::decode_currency(row.try_get("currency")?)?,
            reference: row.try_get("payment_reference")?,
            began: row.try_get("payment_pending_at")?,
        })
    }
}

impl FromRow<'_, PgRow> for Allocation {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let status: String = row.try_get("status")?;
        Ok(Self {
            id: row.try_get("id")?,
            event_id: row.try_get("event_id")?,
            quantity: row.try_get("quantity")?,
            status: status
                .parse()
                .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
            lines: row.try_get::<Json<_>, _>("lines")?.0,
            total: row.try_get("total")?,
            currency: super::decode_currency(row.try_get("currency")?)?,
            refunded_amount: row.try_get("refunded_amount")?,
            refunded_quantity: row.try_get("refunded_quantity")?,
            refunds: row.try_get::<Json<_>, _>("refunds")?.0,
            // Signed by the services, which read them with `db::admissions`.
            admissions: Vec::new(),
            refunded_at: row.try_get("refunded_at")?,
            fingerprint_hash: row.try_get("fingerprint_hash")?,
            expires_at: row.try_get("expires_at")?,
            payment_pending_at: row.try_get("payment_pending_at")?,
            purchased_at: row.try_get("purchased_at")?,
            cancelled_at: row.try_get("cancelled_at")?,
            expired_at: row.try_get("expired_at")?,
            confirmation_code: row.try_get("confirmation_code")?,
            payment_reference: row.try_get("payment_reference")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// Inserts one `reserved` hold per grant, each lapsing `hold_seconds` from now (database
/// clock), with its lines at their granted prices, in one statement for the whole batch; the
/// database adds them to their buyers' `buyer_tickets` rows. A grant above a buyer's cap
/// fails the statement on `buyer_tickets_within_cap` and nothing is written. Returned in the
/// order of `grants`.
pub async fn insert_reserved(
    conn: &mut PgConnection,
    event_id: Uuid,
    currency: Currency,
    grants: &[(&Ask, &Grant)],
    hold_seconds: u32,
) -> Result<Vec<Allocation>, sqlx::Error> {
    // Time-ordered ids (UUID v7): each new hold's entry lands on the right-most pages of the
    // primary key and of `allocation_lines`' key, which the previous batch has just touched,
    // instead of on random pages all over both indexes (random v4 ids dirtied a page, and
    // wrote it whole to the WAL after a checkpoint, per hold). This statement runs under the
    // event lock, so its cost is every buyer's wait. The ids stay unguessable (74 random
    // bits) and are no capability anyway: every route checks the holder's fingerprint.
    let ids: Vec<Uuid> = grants.iter().map(|_| Uuid::now_v7()).collect();
    let quantities: Vec<i32> = grants.iter().map(|(_, grant)| grant.quantity).collect();
    let totals: Vec<i64> = grants.iter().map(|(_, grant)| grant.total).collect();
    let buyers: Vec<&str> = grants.iter().map(|(ask, _)| ask.buyer.as_str()).collect();
    let mut line_allocations = Vec::new();
    let mut line_types = Vec::new();
    let mut line_quantities = Vec::new();
    let mut line_prices = Vec::new();
    for (id, (_, grant)) in ids.iter().zip(grants) {
        for line in &grant.lines {
            line_allocations.push(*id);
            line_types.push(line.ticket_type_id);
            line_quantities.push(line.quantity);
            line_prices.push(line.unit_price);
        }
    }
    // The lines go in with their allocations in one statement, so neither is ever stored
    // without the other. The RETURNING cannot see the lines (one snapshot for the whole
    // statement): they are filled in below from the grants.
    let mut rows: Vec<Allocation> = sqlx::query_as(concat!(
        "WITH lines AS ( \
             INSERT INTO allocation_lines (allocation_id, ticket_type_id, quantity, unit_price) \
             SELECT * FROM unnest($7::uuid[], $8::uuid[], $9::int[], $10::bigint[])) \
         INSERT INTO ticket_allocations \
             (id, event_id, quantity, status, fingerprint_hash, expires_at, total) \
         SELECT id, $1, quantity, 'reserved', buyer, now() + make_interval(secs => $5), total \
         FROM unnest($2::uuid[], $3::int[], $4::text[], $11::bigint[]) \
             AS ask(id, quantity, buyer, total) \
         RETURNING ",
        allocation_row_columns!(),
        ", '[]'::json AS lines, '[]'::json AS refunds, $6::text AS currency"
    ))
    .bind(event_id)
    .bind(&ids)
    .bind(&quantities)
    .bind(&buyers)
    .bind(f64::from(hold_seconds))
    .bind(currency.code())
    .bind(&line_allocations)
    .bind(&line_types)
    .bind(&line_quantities)
    .bind(&line_prices)
    .bind(&totals)
    .fetch_all(conn)
    .await?;
    // RETURNING order is not guaranteed: put the rows back in grant order (by an index of
    // the ids: a search per comparison cost a batch of 256 a sizeable part of its lock).
    let order: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    rows.sort_unstable_by_key(|row| order.get(&row.id).copied());
    for (row, (_, grant)) in rows.iter_mut().zip(grants) {
        row.lines = grant
            .lines
            .iter()
            .map(|line| AllocationLine {
                ticket_type_id: line.ticket_type_id,
                ticket_type_name: line.ticket_type_name.clone(),
                quantity: line.quantity,
                unit_price: line.unit_price,
                amount: line.unit_price * i64::from(line.quantity),
                refunded_quantity: 0,
            })
            .collect();
    }
    Ok(rows)
}

/// Tickets each of `buyers` holds or has bought for the event (reserved, payment_pending and
/// purchased, less what was refunded), from the database-kept `buyer_tickets` counters. Read
/// under the event lock, so no concurrent purchase can change them.
pub async fn held_by_buyers(
    conn: &mut PgConnection,
    event_id: Uuid,
    buyers: &[&str],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT fingerprint_hash, held_tickets::bigint FROM buyer_tickets \
         WHERE event_id = $1 AND fingerprint_hash = ANY($2)",
    )
    .bind(event_id)
    .bind(buyers)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The allocation as the caller's transaction sees it (after its own changes).
pub async fn find_in(conn: &mut PgConnection, id: Uuid) -> Result<Option<Allocation>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        allocation_columns!(),
        " FROM ticket_allocations WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The event an allocation belongs to. The column never changes, so reading it without a
/// lock is safe; callers use it to take the event lock before the allocation's.
pub async fn event_of(conn: &mut PgConnection, id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT event_id FROM ticket_allocations WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// An allocation read under its row lock, with whether its hold time is up by the
/// database clock (one clock for every instance).
#[derive(Debug)]
pub struct LockedAllocation {
    pub allocation: Allocation,
    pub lapsed: bool,
}

/// Locks the allocation row. Call after locking its event (lock order: event first), or in a
/// transaction that takes no other lock after it (a payment's first step, which moves no
/// count and so does without the event lock).
///
/// `lapsed` is judged by the clock once the lock is held: outside the `MATERIALIZED` CTE
/// that locks the row, since PostgreSQL computes a locking `SELECT`'s columns before it waits
/// and again after the wait only if the holder wrote a newer version of the row (a settle of
/// another reference of the hold, say, writes nothing to it).
pub async fn lock(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<LockedAllocation>, sqlx::Error> {
    let row = sqlx::query(concat!(
        "WITH locked AS MATERIALIZED (SELECT ",
        allocation_columns!(),
        " FROM ticket_allocations WHERE id = $1 FOR NO KEY UPDATE) \
         SELECT *, expires_at <= clock_timestamp() AS lapsed FROM locked"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        Ok(LockedAllocation {
            allocation: Allocation::from_row(&row)?,
            lapsed: row.try_get("lapsed")?,
        })
    })
    .transpose()
}

/// Locks the allocation rows `ids` of one event, in id order, and returns those found, in id
/// order. Call only after locking their event: every transaction that locks more than one
/// allocation holds its event's row first, so two of them never lock rows of one event at
/// once; the id order is there for any that ever would not. `lapsed` is judged once the
/// locks are held, as in [`lock`].
pub async fn lock_many(
    conn: &mut PgConnection,
    event_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<LockedAllocation>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "WITH locked AS MATERIALIZED (SELECT ",
        allocation_columns!(),
        " FROM ticket_allocations \
         WHERE id = ANY($2) AND (event_id = $1) IS TRUE ORDER BY id FOR NO KEY UPDATE) \
         SELECT *, expires_at <= clock_timestamp() AS lapsed FROM locked ORDER BY id"
    ))
    .bind(event_id)
    .bind(ids)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(LockedAllocation {
                allocation: Allocation::from_row(row)?,
                lapsed: row.try_get("lapsed")?,
            })
        })
        .collect()
}

/// [`purchase_waiting`] matches only `payment_pending` rows; the status machine must allow
/// the move.
const _: () = assert!(AllocationStatus::PaymentPending.can_become(AllocationStatus::Purchased));

/// Step three for charged payments, in one statement: each allocation `ids[i]` of
/// `event_id` that is `payment_pending` under `references[i]` becomes `purchased` with its
/// confirmation code `codes[i]`. Returns the rows changed, in no particular order; a hold
/// not in that state (missing, of another event, settled by recovery first, under another
/// reference) is left alone and not returned, and the caller locks it to tell why.
///
/// The `UPDATE` takes each matched row's lock, and one that another transaction holds is
/// waited for and judged again on its newest version (READ COMMITTED re-checks an update's
/// conditions after the wait), so the decision is made under the row lock. Call holding the
/// event's and its quotas' row locks: the caller moves the counts, and every transaction
/// that locks several of the event's holds and may wait for them holds the event lock
/// first, while a payment's step one locks holds without it only to ask for nothing after
/// (one hold), or never waiting (`SKIP LOCKED`, [`begin_payments`]); so the rows need no
/// order of their own.
pub async fn purchase_waiting(
    conn: &mut PgConnection,
    event_id: Uuid,
    ids: &[Uuid],
    references: &[&str],
    codes: &[&str],
) -> Result<Vec<Allocation>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE ticket_allocations SET status = 'purchased', purchased_at = now(), \
             confirmation_code = paid.code, updated_at = now() \
         FROM unnest($2::uuid[], $3::text[], $4::text[]) AS paid(allocation_id, reference, code) \
         WHERE ticket_allocations.id = ANY($2) AND ticket_allocations.id = paid.allocation_id \
           AND (ticket_allocations.event_id = $1 \
                AND ticket_allocations.status = 'payment_pending' \
                AND ticket_allocations.payment_reference = paid.reference) IS TRUE \
         RETURNING ",
        allocation_columns!()
    ))
    .bind(event_id)
    .bind(ids)
    .bind(references)
    .bind(codes)
    .fetch_all(conn)
    .await
}

/// A payment's first step for several holds in one statement (one hold when unbatched;
/// see `holds::payment`): each hold `ids[i]` that is `reserved`, unlapsed and `buyers[i]`'s
/// becomes `payment_pending` under `references[i]`. Returns the payments begun, in no
/// particular order; a hold not in that state is left alone and not returned. If an id is
/// asked twice, at most one of its references is recorded: the returned row says which.
///
/// The `reserved` holds asked for are locked first (the `MATERIALIZED` CTE), skipping any
/// row another transaction holds: the statement never waits for a lock, so it is in no cycle
/// of waits, and one busy hold does not hold up the batch. A skipped hold is not returned,
/// and its caller waits for that row alone (`holds::payment::begin_alone`). `FOR NO KEY
/// UPDATE`, the lock the `UPDATE` itself takes (no key column changes), so it needs no
/// other. Never waiting is also what judges the deadline by the clock at the lock: an
/// `UPDATE` that waited for a row whose holder wrote nothing to it would keep the condition
/// it evaluated before the wait (PostgreSQL re-checks only a row a concurrent commit
/// changed), and could begin paying for a hold that lapsed meanwhile. A row locked after a
/// concurrent commit is judged on its newest version (READ COMMITTED re-checks the
/// conditions of both the lock and the `UPDATE`), so every decision is made under the row's
/// lock. No count moves, so no event lock.
pub async fn begin_payments(
    conn: &mut PgConnection,
    ids: &[Uuid],
    buyers: &[&str],
    references: &[&str],
) -> Result<Vec<PendingPayment>, sqlx::Error> {
    sqlx::query_as(concat!(
        "WITH locked AS MATERIALIZED ( \
             SELECT id AS locked_id FROM ticket_allocations \
             WHERE id = ANY($1) AND (status = 'reserved') IS TRUE \
             FOR NO KEY UPDATE SKIP LOCKED) \
         UPDATE ticket_allocations SET status = 'payment_pending', payment_pending_at = now(), \
             payment_reference = asked.asked_reference, updated_at = now() \
         FROM unnest($1::uuid[], $2::text[], $3::text[]) \
                  AS asked(asked_id, asked_buyer, asked_reference), \
              locked \
         WHERE ticket_allocations.id = ANY($1) AND ticket_allocations.id = asked.asked_id \
           AND locked.locked_id = ticket_allocations.id \
           AND (ticket_allocations.fingerprint_hash = asked.asked_buyer \
                AND ticket_allocations.status = 'reserved' \
                AND ticket_allocations.expires_at > clock_timestamp()) IS TRUE \
         RETURNING ",
        pending_payment_columns!()
    ))
    .bind(ids)
    .bind(buyers)
    .bind(references)
    .fetch_all(conn)
    .await
}

/// [`begin_payments`] matches only `reserved` rows; the status machine
/// must allow the move.
const _: () = assert!(AllocationStatus::Reserved.can_become(AllocationStatus::PaymentPending));

/// What a transition records besides the new status and its timestamp.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransitionRecord<'a> {
    /// Set when entering `payment_pending`.
    pub payment_reference: Option<&'a str>,
    /// Set when entering `purchased`.
    pub confirmation_code: Option<&'a str>,
}

/// Moves the allocation to `next`, stamping the time of the change (the database moves the
/// buyer's `buyer_tickets` row when `next` ends the hold). The statement matches the row only in a status that may become `next`
/// (`AllocationStatus::predecessors`): `None` means it was in no such status and nothing
/// changed. Call while holding the allocation's lock, and its event's for every move but
/// `reserved` → `payment_pending` (which moves no count; see `holds::payment`).
///
/// `expired_at` is the statement's own clock, not the transaction's start (`now()`): a payment
/// or cancel finds a hold lapsed by `clock_timestamp()` once it holds the locks, and its
/// transaction may have begun before the deadline; `now()` would record an expiry earlier
/// than the `expires_at` it followed.
pub async fn transition(
    conn: &mut PgConnection,
    id: Uuid,
    next: AllocationStatus,
    record: TransitionRecord<'_>,
) -> Result<Option<Allocation>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE ticket_allocations SET \
            status = $2, \
            payment_pending_at = CASE WHEN $2 = 'payment_pending' THEN now() ELSE payment_pending_at END, \
            payment_reference = CASE WHEN $2 = 'payment_pending' THEN $3 ELSE payment_reference END, \
            purchased_at = CASE WHEN $2 = 'purchased' THEN now() ELSE purchased_at END, \
            confirmation_code = CASE WHEN $2 = 'purchased' THEN $4 ELSE confirmation_code END, \
            cancelled_at = CASE WHEN $2 = 'cancelled' THEN now() ELSE cancelled_at END, \
            expired_at = CASE WHEN $2 = 'expired' THEN clock_timestamp() ELSE expired_at END, \
            updated_at = now() \
         WHERE id = $1 AND status = ANY($5) RETURNING ",
        allocation_columns!()
    ))
    .bind(id)
    .bind(next.as_str())
    .bind(record.payment_reference)
    .bind(record.confirmation_code)
    .bind(AllocationStatus::predecessors(next))
    .fetch_optional(conn)
    .await
}

/// One page of a buyer's allocations, newest first, and their total count.
pub async fn list_for_fingerprint(
    pool: &PgPool,
    fingerprint: &FingerprintHash,
    page: PageRequest,
) -> Result<(Vec<Allocation>, i64), sqlx::Error> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        allocation_columns!(),
        " FROM ticket_allocations WHERE fingerprint_hash = $1 \
          ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(fingerprint.as_str())
    .bind(page.limit)
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let total =
        sqlx::query_scalar("SELECT count(*) FROM ticket_allocations WHERE fingerprint_hash = $1")
            .bind(fingerprint.as_str())
            .fetch_one(pool)
            .await?;
    Ok((rows, total))
}

/// The order list's page of an event's allocations in every status, newest first (`$1` the
/// event, `$2` the limit, `$3` the offset): one `SELECT` per status over
/// `ticket_allocations_event_status_created_idx`, each in page order and stopped after the
/// offset and the limit, merged by a `UNION ALL` with the page's `ORDER BY`, which
/// PostgreSQL reads as a Merge Append that stops at the page's end. Made once, so that it is
/// one prepared statement.
static EVERY_STATUS_NEWEST_FIRST: LazyLock<String> = LazyLock::new(|| {
    let by_status: Vec<String> = AllocationStatus::ALL
        .iter()
        .map(|status| {
            format!(
                concat!(
                    "(SELECT ",
                    allocation_columns!(),
                    " FROM ticket_allocations WHERE event_id = $1 AND status = '{}' \
                      ORDER BY created_at DESC, id DESC LIMIT $2 + $3)"
                ),
                status.as_str()
            )
        })
        .collect();
    format!(
        "SELECT * FROM ({}) AS orders ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
        by_status.join(" UNION ALL ")
    )
});

/// One page of an event's allocations (every buyer's), newest first (`created_at`, then `id`,
/// descending), as `filter` narrows them, and their total count. Each case reaches its rows
/// by key: a confirmation code by `ticket_allocations_confirmation_code_key` (one row at
/// most; the event and status are checked on that row only, out of the planner's reach, see
/// the module's rules); otherwise the event's rows in page order by
/// `ticket_allocations_event_status_created_idx`: one status's entries walked in page order,
/// or, without a status, the walks of every status merged (each stops where the page ends),
/// and the count by the same index.
pub async fn list_for_event(
    conn: &mut PgConnection,
    event_id: Uuid,
    filter: &OrderFilter,
    page: PageRequest,
) -> Result<(Vec<Allocation>, i64), sqlx::Error> {
    let status = filter.status.map(AllocationStatus::as_str);
    // Statistics older than the event's sale (a new event, a table not analysed since) made
    // the planner read every row of the event through a bitmap and sort them for one page.
    // With sorting priced out for this read-only transaction alone, the page is walked in
    // `ticket_allocations_event_status_created_idx`'s order (merged over the statuses) and
    // stops at its end whatever the statistics say (tests/api/access_paths.rs). Inside a
    // caller's transaction this is a savepoint, and the setting lasts until that transaction
    // ends.
    let mut tx = conn.begin().await?;
    sqlx::query("SET LOCAL enable_sort = off")
        .execute(&mut *tx)
        .await?;
    let conn = &mut *tx;
    if let Some(code) = &filter.confirmation_code {
        let rows: Vec<Allocation> = sqlx::query_as(concat!(
            "SELECT ",
            allocation_columns!(),
            " FROM ticket_allocations WHERE confirmation_code = $1 \
               AND (event_id = $2 AND ($3::text IS NULL OR status = $3)) IS TRUE \
             ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
        ))
        .bind(code.as_str())
        .bind(event_id)
        .bind(status)
        .bind(page.limit)
        .bind(page.offset())
        .fetch_all(&mut *conn)
        .await?;
        let total = sqlx::query_scalar(
            "SELECT count(*) FROM ticket_allocations WHERE confirmation_code = $1 \
               AND (event_id = $2 AND ($3::text IS NULL OR status = $3)) IS TRUE",
        )
        .bind(code.as_str())
        .bind(event_id)
        .bind(status)
        .fetch_one(&mut *conn)
        .await?;
        tx.commit().await?;
        return Ok((rows, total));
    }
    let Some(status) = status else {
        // The index orders an event's entries by status first, so every status's walk in
        // page order is merged (a Merge Append over one index scan per status). Each walk
        // has its own ORDER BY and LIMIT: PostgreSQL 15 neither pulls a branch with a WHERE
        // into the merge nor orders a branch for it, and sorted the whole event instead.
        let rows = sqlx::query_as(EVERY_STATUS_NEWEST_FIRST.as_str())
            .bind(event_id)
            .bind(page.limit)
            .bind(page.offset())
            .fetch_all(&mut *conn)
            .await?;
        let total =
            sqlx::query_scalar("SELECT count(*) FROM ticket_allocations WHERE event_id = $1")
                .bind(event_id)
                .fetch_one(&mut *conn)
                .await?;
        tx.commit().await?;
        return Ok((rows, total));
    };
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        allocation_columns!(),
        " FROM ticket_allocations WHERE event_id = $1 AND status = $2 \
          ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(event_id)
    .bind(status)
    .bind(page.limit)
    .bind(page.offset())
    .fetch_all(&mut *conn)
    .await?;
    let total = sqlx::query_scalar(
        "SELECT count(*) FROM ticket_allocations WHERE event_id = $1 AND status = $2",
    )
    .bind(event_id)
    .bind(status)
    .fetch_one(&mut *conn)
    .await?;
    tx.commit().await?;
    Ok((rows, total))
}

/// Events that have at least one lapsed `reserved` hold (read without locks: the sweeper
/// re-checks under the event lock).
pub async fn events_with_lapsed_holds(pool: &PgPool, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT event_id FROM ticket_allocations \
         WHERE status = 'reserved' AND expires_at <= now() LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The sweeper expires only `reserved` holds (a `payment_pending` one is left to its
/// payment or to recovery); the status machine must allow that move.
const _: () = assert!(AllocationStatus::Reserved.can_become(AllocationStatus::Expired));

/// Marks up to `limit` lapsed `reserved` holds of one event `expired` (the database takes
/// their tickets off their buyers' `buyer_tickets` rows) and returns the tickets they held,
/// in one statement. Each hold is locked before it changes, so two sweepers (on two
/// instances) never expire one twice. Call while holding the event lock: taking these rows
/// before it would invert the lock order and deadlock with a late cancel or payment. `SKIP LOCKED` only
/// keeps the sweep from ever waiting on a row, should a future writer lock one without its
/// event.
pub async fn expire_lapsed(
    conn: &mut PgConnection,
    event_id: Uuid,
    limit: i64,
) -> Result<ExpiredHolds, sqlx::Error> {
    let (holds, tickets, last_holder, types, counts): (
        i64,
        i64,
        Option<String>,
        Vec<Uuid>,
        Vec<i32>,
    ) = sqlx::query_as(
        "WITH lapsed AS ( \
             SELECT id FROM ticket_allocations \
             WHERE event_id = $1 AND status = $3 AND expires_at <= now() \
             ORDER BY expires_at LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED), \
         expired AS ( \
             UPDATE ticket_allocations a \
             SET status = $4, expired_at = now(), updated_at = now() \
             FROM lapsed WHERE a.id = lapsed.id AND a.status = $3 \
             RETURNING a.id, a.quantity, a.fingerprint_hash), \
         by_type AS ( \
             SELECT l.ticket_type_id, sum(l.quantity - l.refunded_quantity)::int AS tickets \
             FROM allocation_lines l JOIN expired ON expired.id = l.allocation_id \
             GROUP BY l.ticket_type_id) \
         SELECT (SELECT count(*) FROM expired)::bigint, \
                (SELECT COALESCE(sum(quantity), 0) FROM expired)::bigint, \
                (SELECT max(fingerprint_hash) FROM expired), \
                ARRAY(SELECT ticket_type_id FROM by_type ORDER BY ticket_type_id), \
                ARRAY(SELECT tickets FROM by_type ORDER BY ticket_type_id)",
    )
    .bind(event_id)
    .bind(limit)
    .bind(AllocationStatus::Reserved.as_str())
    .bind(AllocationStatus::Expired.as_str())
    .fetch_one(conn)
    .await?;
    Ok(ExpiredHolds {
        holds,
        tickets,
        last_holder,
        by_type: types.into_iter().zip(counts).collect(),
    })
}

/// What one expiry batch did.
#[derive(Debug)]
pub struct ExpiredHolds {
    pub holds: i64,
    /// The tickets they held.
    pub tickets: i64,
    /// One of the expired holds' buyers, for the change notification.
    pub last_holder: Option<String>,
    /// The tickets returned, by ticket type, for the counts of the event and its quotas.
    pub by_type: Vec<(Uuid, i32)>,
}

/// Allocations left in `payment_pending` for longer than `older_than_seconds`, with their
/// payment reference and total: their payment request crashed or hung, and the sweeper
/// resolves them.
pub async fn stale_payments(
    pool: &PgPool,
    older_than_seconds: u32,
    limit: i64,
) -> Result<Vec<(Uuid, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, payment_reference, total FROM ticket_allocations \
         WHERE status = 'payment_pending' \
           AND payment_pending_at <= now() - make_interval(secs => $1) \
         ORDER BY payment_pending_at LIMIT $2",
    )
    .bind(f64::from(older_than_seconds))
    .bind(limit)
    .fetch_all(pool)
    .await
}
