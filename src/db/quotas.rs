//! SQL for `quotas` and `quota_ticket_types`. A quota's counts move only under its event's
//! row lock, in the same statement as the event's counts (`events::move_counts`).

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, Row};
use uuid::Uuid;

use crate::domain::catalogue::{Quota, QuotaSettings};

/// The columns a [`Quota`] is read from (over `quotas q`), as a literal for `concat!`; the
/// type ids come aggregated in id order.
macro_rules! quota_columns {
    () => {
        "q.id, q.event_id, q.name, q.size, q.available_tickets, q.reserved_tickets, \
         q.purchased_tickets, q.set_aside_tickets, \
         ARRAY(SELECT ticket_type_id FROM quota_ticket_types m WHERE m.quota_id = q.id \
               ORDER BY ticket_type_id) AS ticket_type_ids"
    };
}

impl FromRow<'_, PgRow> for Quota {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            event_id: row.try_get("event_id")?,
            name: row.try_get("name")?,
            size: row.try_get("size")?,
            available_tickets: row.try_get("available_tickets")?,
            reserved_tickets: row.try_get("reserved_tickets")?,
            purchased_tickets: row.try_get("purchased_tickets")?,
            set_aside_tickets: row.try_get("set_aside_tickets")?,
            ticket_type_ids: row.try_get("ticket_type_ids")?,
        })
    }
}

/// Locks every quota of the event, in id order, and returns them with their types. Call only
/// while holding the event's row lock: the lock order is the event row, then its quota rows
/// in id order, then allocation rows. Every writer of quota counts holds the event lock
/// first, so the quota locks never decide who waits for whom (the event lock already did);
/// taking them in one fixed order all the same means no future writer that skipped the event
/// lock could deadlock with this one.
pub async fn lock_for_event(
    conn: &mut PgConnection,
    event_id: Uuid,
) -> Result<Vec<Quota>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        quota_columns!(),
        " FROM quotas q WHERE q.event_id = $1 ORDER BY q.id FOR NO KEY UPDATE OF q"
    ))
    .bind(event_id)
    .fetch_all(conn)
    .await
}

/// Every quota of the event in id order, read without a lock (for answers, not decisions).
pub async fn for_event(conn: &mut PgConnection, event_id: Uuid) -> Result<Vec<Quota>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        quota_columns!(),
        " FROM quotas q WHERE q.event_id = $1 ORDER BY q.id"
    ))
    .bind(event_id)
    .fetch_all(conn)
    .await
}

/// Tickets the event's orders hold of these types, as a quota containing exactly them would
/// count them: `(reserved, purchased)`, reserved being the lines of live holds (`reserved`,
/// `payment_pending`) and purchased the lines of purchased orders less what was refunded.
/// Call under the event's row lock: every change to allocations and their lines takes it
/// first, so the sums cannot move until the caller commits.
pub async fn held_by_types(
    conn: &mut PgConnection,
    event_id: Uuid,
    ticket_type_ids: &[Uuid],
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT \
           COALESCE(sum(l.quantity) \
             FILTER (WHERE a.status IN ('reserved', 'payment_pending')), 0)::bigint, \
           COALESCE(sum(l.quantity - l.refunded_quantity) \
             FILTER (WHERE a.status = 'purchased'), 0)::bigint \
         FROM allocation_lines l JOIN ticket_allocations a ON a.id = l.allocation_id \
         WHERE a.event_id = $1 AND l.ticket_type_id = ANY($2)",
    )
    .bind(event_id)
    .bind(ticket_type_ids)
    .fetch_one(conn)
    .await
}

/// What a quota's row is written with: its settings and its counts, recounted by the caller
/// under the event lock.
#[derive(Debug, Clone, Copy)]
pub struct QuotaCounts {
    pub reserved: i32,
    pub purchased: i32,
}

/// Inserts a quota of the event with its counts and its types. Call under the event's row
/// lock; `quotas_counts_balance` and the non-negative CHECKs refuse counts over the size.
pub async fn insert(
    conn: &mut PgConnection,
    event_id: Uuid,
    settings: &QuotaSettings,
    counts: QuotaCounts,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO quotas (id, event_id, name, size, available_tickets, reserved_tickets, \
         purchased_tickets) VALUES ($1, $2, $3, $4, $4 - $5 - $6, $5, $6)",
    )
    .bind(id)
    .bind(event_id)
    .bind(&settings.name)
    .bind(settings.size)
    .bind(counts.reserved)
    .bind(counts.purchased)
    .execute(&mut *conn)
    .await?;
    set_types(conn, id, event_id, &settings.ticket_type_ids).await?;
    Ok(id)
}

/// Rewrites a quota's settings, counts and types. Call under the event's row lock, holding
/// the quota's row lock (`lock_for_event`).
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    event_id: Uuid,
    settings: &QuotaSettings,
    counts: QuotaCounts,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE quotas SET name = $2, size = $3, available_tickets = $3 - $4 - $5, \
         reserved_tickets = $4, purchased_tickets = $5, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(&settings.name)
    .bind(settings.size)
    .bind(counts.reserved)
    .bind(counts.purchased)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM quota_ticket_types WHERE quota_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    set_types(conn, id, event_id, &settings.ticket_type_ids).await
}

/// Puts the types into the quota; the composite foreign keys keep them inside its event.
async fn set_types(
    conn: &mut PgConnection,
    id: Uuid,
    event_id: Uuid,
    ticket_type_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO quota_ticket_types (quota_id, ticket_type_id, event_id) \
         SELECT $1, t, $2 FROM unnest($3::uuid[]) AS t",
    )
    .bind(id)
    .bind(event_id)
    .bind(ticket_type_ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a quota (its type links go with it). Call under the event's row lock; its types
/// then count against the event and their other quotas only.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM quotas WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
