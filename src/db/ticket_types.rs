//! SQL for `ticket_types`. Every write runs under the event's row lock (the purchase
//! transaction reads the types under it, so a change is either wholly before or wholly after
//! a given batch).

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, Row};
use uuid::Uuid;

use crate::domain::catalogue::{SalesWindow, TicketType, TicketTypeSettings};

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

/// One type of the event (`None`: no such type, or it belongs to another event).
pub async fn find(
    conn: &mut PgConnection,
    event_id: Uuid,
    id: Uuid,
) -> Result<Option<TicketType>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        ticket_type_columns!(),
        " FROM ticket_types WHERE id = $1 AND event_id = $2"
    ))
    .bind(id)
    .bind(event_id)
    .fetch_optional(conn)
    .await
}

/// Inserts a type of the event. Call under the event's row lock. A second type of the same
/// name in the event fails on `ticket_types_event_name_key` (`TICKET_TYPE_EXISTS`).
pub async fn insert(
    conn: &mut PgConnection,
    event_id: Uuid,
    settings: &TicketTypeSettings,
) -> Result<TicketType, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO ticket_types (id, event_id, name, description, price, max_per_order, \
         sales_start_at, sales_end_at, active) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         RETURNING ",
        ticket_type_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(event_id)
    .bind(&settings.name)
    .bind(&settings.description)
    .bind(settings.price)
    .bind(settings.max_per_order)
    .bind(settings.sales.start)
    .bind(settings.sales.end)
    .bind(settings.active)
    .fetch_one(conn)
    .await
}

/// Writes a type's settings. Call under the event's row lock. Orders already made keep the
/// unit price stored on their lines, so a price change applies to new orders only.
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    settings: &TicketTypeSettings,
) -> Result<TicketType, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE ticket_types SET name = $2, description = $3, price = $4, max_per_order = $5, \
         sales_start_at = $6, sales_end_at = $7, active = $8, updated_at = now() \
         WHERE id = $1 RETURNING ",
        ticket_type_columns!()
    ))
    .bind(id)
    .bind(&settings.name)
    .bind(&settings.description)
    .bind(settings.price)
    .bind(settings.max_per_order)
    .bind(settings.sales.start)
    .bind(settings.sales.end)
    .bind(settings.active)
    .fetch_one(conn)
    .await
}
