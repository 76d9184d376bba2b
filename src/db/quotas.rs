//! SQL for `quotas` and `quota_ticket_types`. A quota's counts move only under its event's
//! row lock, in the same statement as the event's counts (`events::move_counts`).

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, Row};
use uuid::Uuid;

use crate::domain::catalogue::Quota;

/// The columns a [`Quota`] is read from (over `quotas q`), as a literal for `concat!`; the
/// type ids come aggregated in id order.
macro_rules! quota_columns {
    () => {
        "q.id, q.event_id, q.name, q.size, q.available_tickets, q.reserved_tickets, \
         q.purchased_tickets, \
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
        " FROM quotas q WHERE q.event_id = $1 ORDER BY q.id FOR UPDATE OF q"
    ))
    .bind(event_id)
    .fetch_all(conn)
    .await
}
