//! SQL for the sales report: an event's orders summed per ticket type.

use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::money::Currency;
use crate::domain::report::{SalesCounts, TypeSales};

/// One type's sums as the report statement returns them.
type TypeRow = (Uuid, String, i64, i64, i64, i64, i64, i64);

/// The event's currency and each of its types' sales, in creation order (types with no
/// order included, at zero); `None` when there is no such event. Both statements run in one
/// REPEATABLE READ, read-only transaction: one snapshot of committed rows, so the figures of
/// every type (and so the totals) are of one moment. Takes no lock.
///
/// Per type: `reserved` sums the lines of live holds; `purchased` the lines of paid orders
/// (`purchased`, or `refunded` in full) less what was refunded of them, as a quota counts
/// them (`quotas::held_by_types`); `refunded` the lines' refunded tickets; `grossAmount`
/// `unit_price × quantity` over paid orders' lines; `refundedAmount` the lines of completed
/// refunds.
pub async fn sales(
    pool: &PgPool,
    event_id: Uuid,
) -> Result<Option<(Currency, Vec<TypeSales>)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // First statement of the transaction, so the snapshot is taken after it.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let currency: Option<String> = sqlx::query_scalar("SELECT currency FROM events WHERE id = $1")
        .bind(event_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(currency) = currency else {
        return Ok(None);
    };
    // `sum` of integers is bigint and of bigints numeric: every sum is cast back to bigint,
    // which it fits (at most 1,000,000 tickets at most `PRICE_MAX` each).
    let rows: Vec<TypeRow> = sqlx::query_as(
        "SELECT t.id, t.name, t.price, \
                COALESCE(s.reserved, 0), COALESCE(s.purchased, 0), COALESCE(s.refunded, 0), \
                COALESCE(s.gross, 0), COALESCE(r.amount, 0) \
         FROM ticket_types t \
         LEFT JOIN ( \
             SELECT l.ticket_type_id, \
                    sum(l.quantity) FILTER (WHERE a.status IN ('reserved', 'payment_pending')) \
                        ::bigint AS reserved, \
                    sum(l.quantity - l.refunded_quantity) \
                        FILTER (WHERE a.status IN ('purchased', 'refunded'))::bigint AS purchased, \
                    sum(l.refunded_quantity)::bigint AS refunded, \
                    sum(l.unit_price * l.quantity) \
                        FILTER (WHERE a.status IN ('purchased', 'refunded'))::bigint AS gross \
             FROM allocation_lines l JOIN ticket_allocations a ON a.id = l.allocation_id \
             WHERE a.event_id = $1 GROUP BY l.ticket_type_id) s ON s.ticket_type_id = t.id \
         LEFT JOIN ( \
             SELECT rl.ticket_type_id, sum(rl.amount)::bigint AS amount \
             FROM refund_lines rl JOIN refunds f ON f.id = rl.refund_id \
             JOIN ticket_allocations a ON a.id = f.allocation_id \
             WHERE a.event_id = $1 AND f.status = 'completed' \
             GROUP BY rl.ticket_type_id) r ON r.ticket_type_id = t.id \
         WHERE t.event_id = $1 ORDER BY t.created_at, t.id",
    )
    .bind(event_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let types = rows
        .into_iter()
        .map(
            |(id, name, price, reserved, purchased, refunded, gross, refunded_amount)| {
                let tickets = SalesCounts {
                    reserved,
                    purchased,
                    refunded,
                };
                TypeSales::new(id, name, price, tickets, gross, refunded_amount)
            },
        )
        .collect();
    Ok(Some((super::decode_currency(currency)?, types)))
}
