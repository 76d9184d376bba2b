//! The purchase transaction's read of an event's catalogue under its lock: every quota row
//! locked in id order, and every ticket type, in one round trip.

use serde::Deserialize;
use sqlx::PgConnection;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::catalogue::{Quota, SalesWindow, TicketType};

/// A type as the statement below renders it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeRow {
    id: Uuid,
    name: String,
    description: Option<String>,
    price: i64,
    max_per_order: Option<i32>,
    #[serde(with = "time::serde::rfc3339::option")]
    sales_start_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    sales_end_at: Option<OffsetDateTime>,
    active: bool,
    is_default: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

/// A quota as the statement below renders it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QuotaRow {
    id: Uuid,
    name: String,
    size: i32,
    available: i32,
    reserved: i32,
    purchased: i32,
    set_aside: i32,
    ticket_type_ids: Vec<Uuid>,
}

/// Locks every quota of the event in id order and reads them with every ticket type of the
/// event (types in creation order), in one statement. Call only while holding the event's
/// row lock (`events::lock_for_sale`): the lock order is the event row, then its quota rows
/// in id order, then allocation rows. The `locked` CTE takes the quota locks (a `SELECT …
/// ORDER BY id FOR NO KEY UPDATE` locks rows in its sort order); the values are read in the
/// same statement, and no writer can have changed them since its snapshot, since every
/// writer of quotas or types holds the event lock this transaction holds.
pub async fn lock_catalogue(
    conn: &mut PgConnection,
    event_id: Uuid,
) -> Result<(Vec<TicketType>, Vec<Quota>), sqlx::Error> {
    let (types, quotas): (Json<Vec<TypeRow>>, Json<Vec<QuotaRow>>) = sqlx::query_as(
        "WITH locked AS ( \
             SELECT id FROM quotas WHERE event_id = $1 ORDER BY id FOR NO KEY UPDATE) \
         SELECT \
           coalesce((SELECT json_agg(json_build_object( \
               'id', t.id, 'name', t.name, 'description', t.description, 'price', t.price, \
               'maxPerOrder', t.max_per_order, 'salesStartAt', t.sales_start_at, \
               'salesEndAt', t.sales_end_at, 'active', t.active, 'isDefault', t.is_default, \
               'createdAt', t.created_at) ORDER BY t.created_at, t.id) \
             FROM ticket_types t WHERE t.event_id = $1), '[]'), \
           coalesce((SELECT json_agg(json_build_object( \
               'id', q.id, 'name', q.name, 'size', q.size, 'available', q.available_tickets, \
               'reserved', q.reserved_tickets, 'purchased', q.purchased_tickets, 'setAside', q.set_aside_tickets, \
               'ticketTypeIds', ARRAY(SELECT m.ticket_type_id FROM quota_ticket_types m \
                                      WHERE m.quota_id = q.id ORDER BY m.ticket_type_id)) \
               ORDER BY q.id) \
             FROM quotas q JOIN locked ON locked.id = q.id), '[]')",
    )
    .bind(event_id)
    .fetch_one(conn)
    .await?;
    let types = types
        .0
        .into_iter()
        .map(|t| TicketType {
            id: t.id,
            event_id,
            name: t.name,
            description: t.description,
            price: t.price,
            max_per_order: t.max_per_order,
            sales: SalesWindow {
                start: t.sales_start_at,
                end: t.sales_end_at,
            },
            active: t.active,
            is_default: t.is_default,
            created_at: t.created_at,
        })
        .collect();
    let quotas = quotas
        .0
        .into_iter()
        .map(|q| Quota {
            id: q.id,
            event_id,
            name: q.name,
            size: q.size,
            available_tickets: q.available,
            reserved_tickets: q.reserved,
            purchased_tickets: q.purchased,
            set_aside_tickets: q.set_aside,
            ticket_type_ids: q.ticket_type_ids,
        })
        .collect();
    Ok((types, quotas))
}
