//! SQL for `refunds` and `refund_lines`, and the order's refunded counts. Every statement
//! here runs inside a transaction that holds the order's event lock, its quota locks and its
//! allocation lock (`holds::lock_hold`), so refunds of one order are judged one at a time.

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::allocation::{RefundLine, RefundStatus};
use crate::domain::money::Currency;
use crate::domain::status::AllocationStatus;

/// A refund still waiting for (or on) the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRefund {
    pub id: Uuid,
    pub allocation_id: Uuid,
    pub reference: String,
    pub amount: i64,
    pub lines: Vec<RefundLine>,
}

/// The refund made under `reference`, if any, with its status; the row is locked until the
/// transaction ends.
pub async fn lock_by_reference(
    conn: &mut PgConnection,
    reference: &str,
) -> Result<Option<(PendingRefund, RefundStatus)>, sqlx::Error> {
    let row: Option<(Uuid, Uuid, i64, String)> = sqlx::query_as(
        "SELECT id, allocation_id, amount, status FROM refunds WHERE reference = $1 FOR UPDATE",
    )
    .bind(reference)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, allocation_id, amount, status)) = row else {
        return Ok(None);
    };
    let status = match status.as_str() {
        "pending" => RefundStatus::Pending,
        "completed" => RefundStatus::Completed,
        "failed" => RefundStatus::Failed,
        other => {
            return Err(sqlx::Error::Decode(
                format!("unknown refund status {other:?}").into(),
            ));
        }
    };
    let lines: Vec<(Uuid, i32, i64)> = sqlx::query_as(
        "SELECT ticket_type_id, quantity, amount FROM refund_lines WHERE refund_id = $1 \
         ORDER BY ticket_type_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let refund = PendingRefund {
        id,
        allocation_id,
        reference: reference.to_owned(),
        amount,
        lines: lines
            .into_iter()
            .map(|(ticket_type_id, quantity, amount)| RefundLine {
                ticket_type_id,
                quantity,
                amount,
            })
            .collect(),
    };
    Ok(Some((refund, status)))
}

/// The order's latest refund whose reference starts with `prefix` (one refund request's
/// references, see `payment::refund_reference`) made at or after `since` (when given), with
/// its status; locked until the transaction ends.
pub async fn lock_latest_with_prefix(
    conn: &mut PgConnection,
    allocation_id: Uuid,
    prefix: &str,
    since: Option<OffsetDateTime>,
) -> Result<Option<(PendingRefund, RefundStatus)>, sqlx::Error> {
    let reference: Option<String> = sqlx::query_scalar(
        "SELECT reference FROM refunds WHERE allocation_id = $1 AND starts_with(reference, $2) \
           AND ($3::timestamptz IS NULL OR created_at >= $3) \
         ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(allocation_id)
    .bind(prefix)
    .bind(since)
    .fetch_optional(&mut *conn)
    .await?;
    match reference {
        Some(reference) => lock_by_reference(conn, &reference).await,
        None => Ok(None),
    }
}

/// Tickets of each type that the order's pending refunds are giving back: they count as
/// refunded when a new refund is judged.
pub async fn pending_by_type(
    conn: &mut PgConnection,
    allocation_id: Uuid,
) -> Result<Vec<(Uuid, i32)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT rl.ticket_type_id, sum(rl.quantity)::int FROM refund_lines rl \
         JOIN refunds r ON r.id = rl.refund_id \
         WHERE r.allocation_id = $1 AND r.status = 'pending' GROUP BY rl.ticket_type_id",
    )
    .bind(allocation_id)
    .fetch_all(conn)
    .await
}

/// Records a `pending` refund of `lines` (its amount their sum) under `reference`.
pub async fn insert_pending(
    conn: &mut PgConnection,
    allocation_id: Uuid,
    reference: &str,
    currency: Currency,
    lines: &[RefundLine],
    reason: Option<&str>,
) -> Result<PendingRefund, sqlx::Error> {
    let id = Uuid::now_v7();
    // At most 20 lines of at most PRICE_MAX × 1,000,000 each: far inside i64.
    let amount: i64 = lines.iter().map(|line| line.amount).sum();
    let types: Vec<Uuid> = lines.iter().map(|l| l.ticket_type_id).collect();
    let quantities: Vec<i32> = lines.iter().map(|l| l.quantity).collect();
    let amounts: Vec<i64> = lines.iter().map(|l| l.amount).collect();
    sqlx::query(
        "WITH refund AS ( \
             INSERT INTO refunds (id, allocation_id, amount, currency, reason, reference) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id) \
         INSERT INTO refund_lines (refund_id, ticket_type_id, quantity, amount) \
         SELECT refund.id, l.ticket_type_id, l.quantity, l.amount FROM refund, \
             unnest($7::uuid[], $8::int[], $9::bigint[]) AS l(ticket_type_id, quantity, amount)",
    )
    .bind(id)
    .bind(allocation_id)
    .bind(amount)
    .bind(currency.code())
    .bind(reason)
    .bind(reference)
    .bind(&types)
    .bind(&quantities)
    .bind(&amounts)
    .execute(conn)
    .await?;
    Ok(PendingRefund {
        id,
        allocation_id,
        reference: reference.to_owned(),
        amount,
        lines: lines.to_vec(),
    })
}

/// Completes a pending refund: its lines' tickets and its amount are added to the order's
/// refunded counts, and an order with nothing left becomes `refunded` (a second statement:
/// the transition trigger refuses any update that names `status` without changing it, so a
/// partial refund must not name it). The counts change only on a `purchased` order, and the
/// status change matches only the statuses `refunded` may follow. Returns whether the order
/// was found purchased (it always is, under the allocation lock, unless the code is wrong).
pub async fn complete(
    conn: &mut PgConnection,
    refund: &PendingRefund,
) -> Result<bool, sqlx::Error> {
    let tickets: i32 = refund.lines.iter().map(|l| l.quantity).sum();
    let types: Vec<Uuid> = refund.lines.iter().map(|l| l.ticket_type_id).collect();
    let quantities: Vec<i32> = refund.lines.iter().map(|l| l.quantity).collect();
    let all_refunded: Option<bool> = sqlx::query_scalar(
        "WITH done AS ( \
             UPDATE refunds SET status = 'completed', settled_at = now() \
             WHERE id = $1 AND status = 'pending'), \
         lines AS ( \
             UPDATE allocation_lines l SET refunded_quantity = l.refunded_quantity + r.quantity \
             FROM unnest($5::uuid[], $6::int[]) AS r(ticket_type_id, quantity) \
             WHERE l.allocation_id = $2 AND l.ticket_type_id = r.ticket_type_id) \
         UPDATE ticket_allocations SET \
             refunded_quantity = refunded_quantity + $3, \
             refunded_amount = refunded_amount + $4, updated_at = now() \
         WHERE id = $2 AND status = 'purchased' \
         RETURNING refunded_quantity = quantity",
    )
    .bind(refund.id)
    .bind(refund.allocation_id)
    .bind(tickets)
    .bind(refund.amount)
    .bind(&types)
    .bind(&quantities)
    .fetch_optional(&mut *conn)
    .await?;
    if all_refunded == Some(true) {
        sqlx::query(
            "UPDATE ticket_allocations SET status = $2, refunded_at = now(), updated_at = now() \
             WHERE id = $1 AND status = ANY($3)",
        )
        .bind(refund.allocation_id)
        .bind(AllocationStatus::Refunded.as_str())
        .bind(AllocationStatus::predecessors(AllocationStatus::Refunded))
        .execute(conn)
        .await?;
    }
    Ok(all_refunded.is_some())
}

/// Marks a pending refund `failed`: nothing was given back.
pub async fn fail(conn: &mut PgConnection, refund_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refunds SET status = 'failed', settled_at = now() \
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(refund_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Refunds left `pending` for longer than `older_than_seconds`, as (allocation, refund
/// reference): their request crashed or the provider failed, and the sweeper settles them.
pub async fn stale(
    pool: &PgPool,
    older_than_seconds: u32,
    limit: i64,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT allocation_id, reference FROM refunds \
         WHERE status = 'pending' AND created_at <= now() - make_interval(secs => $1) \
         ORDER BY created_at LIMIT $2",
    )
    .bind(f64::from(older_than_seconds))
    .bind(limit)
    .fetch_all(pool)
    .await
}
