//! SQL for `ticket_types`. Every write runs under the event's row lock (the purchase
//! transaction reads the types under it, so a change is either wholly before or wholly after
//! a given batch).

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, Row};
use uuid::Uuid;

use crate::domain::catalogue::{SalesWindow, TicketType};

/// The columns a [`TicketType`] is read from, as a literal for `concat!`.
macro_rules! ticket_type_columns {
    () => {
        "id, event_id, name, description, price, max_per_order, sales_start_at, sales_end_at, \
         active, is_default, created_at"
    };
}

impl FromRow<'_, PgRow> for TicketType {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            event_id: row.try_get("event_id")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            price: row.try_get("price")?,
            max_per_order: row.try_get("max_per_order")?,
            sales: SalesWindow {
                start: row.try_get("sales_start_at")?,
                end: row.try_get("sales_end_at")?,
            },
            active: row.try_get("active")?,
            is_default: row.try_get("is_default")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// The event's ticket types in creation order (the default type first: it is made with the
/// event).
pub async fn for_event(
    conn: &mut PgConnection,
    event_id: Uuid,
) -> Result<Vec<TicketType>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        ticket_type_columns!(),
        " FROM ticket_types WHERE event_id = $1 ORDER BY created_at, id"
    ))
    .bind(event_id)
    .fetch_all(conn)
    .await
}
