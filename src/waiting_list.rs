//! The waiting list's buyer and organiser side: join, read, list, leave. The offers
//! themselves are made by every path that returns tickets (`crate::offers`).
//!
//! A join and a leave run under the event row lock, then the event's quota locks, like
//! every writer of the event's counts: a join is judged against the same counts the purchase
//! path sees (the join order is the order that lock is granted in), and a leave of the head
//! hands what was set aside for it to the next in line in the same transaction.

use std::collections::HashMap;

use sqlx::PgPool;
use uuid::Uuid;

use crate::db;
use crate::domain::catalogue::SalesWindow;
use crate::domain::fingerprint::FingerprintHash;
use crate::domain::grant::{Ask, LineAsk, Rejection, SaleState, decide, within_cap};
use crate::domain::page::{Page, PageRequest};
use crate::domain::refusal::Refusal;
use crate::domain::stats::actor_tag;
use crate::domain::waiting_list::{EntryStatus, WaitingEntry, public_available};
use crate::error::{Error, Result};
use crate::holds;
use crate::offers;

/// `buyer` joins the line of `line`'s type (the event's default type when it names none)
/// for `line`'s quantity; offers to the entry will stay reserved `offer_seconds`. Answers
/// the new entry, `waiting`, with its position.
///
/// Decided under the event lock against the counts a purchase would see, with the same
/// checks in the same order (`domain::grant::decide`): a type that can serve the whole
/// quantity now is `TICKETS_AVAILABLE` (buy instead); a field error, a closed sales window or
/// the per-buyer cap refuse as a purchase would; only `TICKETS_SOLD_OUT` and
/// `INSUFFICIENT_TICKETS` let the buyer join, and then only within the per-buyer cap
/// (counting what the buyer holds: `FINGERPRINT_LIMIT`). A buyer with a live entry for the
/// type is `ALREADY_WAITING`. Errors also: `NotFound` (no such event).
pub async fn join(
    pool: &PgPool,
    event_id: Uuid,
    line: LineAsk,
    buyer: &FingerprintHash,
    offer_seconds: u32,
) -> Result<WaitingEntry> {
    let mut tx = pool.begin().await?;
    // The event row lock first, then its quota rows in id order (the lock order).
    let lock = db::events::lock_for_sale(&mut tx, event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    let quotas = db::quotas::lock_for_event(&mut tx, event_id).await?;
    let types = db::ticket_types::for_event(&mut tx, event_id).await?;
    let event = &lock.event;
    let waiting_types = db::waiting_list::waiting_types(&mut tx, event_id).await?;
    let held = match event.max_tickets_per_fingerprint {
        Some(_) => db::allocations::held_by_buyers(&mut tx, event_id, &[buyer.as_str()]).await?,
        None => HashMap::new(),
    };
    let ticket_type_id = match line.ticket_type_id {
        Some(id) => id,
        None => types
            .iter()
            .find(|t| t.is_default)
            .map(|t| t.id)
            .ok_or_else(|| Error::internal("an event without its default type"))?,
    };
    let quantity = line.quantity.get();
    let ask = Ask {
        lines: vec![line],
        buyer: buyer.clone(),
    };
    let sale = SaleState {
        now: lock.now,
        event_sales: SalesWindow {
            start: event.sales_start_at,
            end: event.sales_end_at,
        },
        available: event.available_tickets,
        set_aside: event.set_aside_tickets,
        cap: event.max_tickets_per_fingerprint,
        types: &types,
        quotas: &quotas,
        waiting_types: &waiting_types,
    };
    let decision = decide(sale, &held, [&ask])
        .pop()
        .ok_or_else(|| Error::internal("no decision for one order"))?;
    match decision {
        Ok(_) => {
            return Err(Refusal::TicketsAvailable {
                ticket_type_id,
                available: public_available(
                    ticket_type_id,
                    event.available_tickets,
                    event.set_aside_tickets,
                    &quotas,
                    &waiting_types,
                ),
            }
            .into());
        }
        Err(Rejection::Refused(
            Refusal::TicketsSoldOut { .. } | Refusal::InsufficientTickets { .. },
        )) => {}
        Err(other) => return Err(other.into()),
    }
    // A purchase refused as sold out never reached the cap check: a line is no way round it,
    // and an entry its buyer could not take would only be passed over at the front.
    if let Some(limit) = event.max_tickets_per_fingerprint {
        let already = held.get(buyer.as_str()).copied().unwrap_or(0);
        within_cap(limit, already, quantity)?;
    }
    let id = db::waiting_list::insert(
        &mut tx,
        event_id,
        ticket_type_id,
        buyer.as_str(),
        quantity,
        offer_seconds,
    )
    .await?;
    // Walk the line with the newcomer in it: as the head of its type's line it has what the
    // type has left set aside for it (or offered, should an entry that could never be served
    // have been keeping tickets free ahead of it); behind others nothing moves.
    offers::line_changed(&mut tx, event_id, &actor_tag(buyer.as_str())).await?;
    let entry = db::waiting_list::find(&mut tx, id)
        .await?
        .ok_or_else(|| Error::internal("a waiting list entry inserted in this transaction"))?;
    tx.commit().await?;
    Ok(entry)
}

/// One of `buyer`'s entries with its current position and offer. Errors: `NotFound`,
/// `FingerprintMismatch` (another buyer's).
pub async fn get(pool: &PgPool, id: Uuid, buyer: &FingerprintHash) -> Result<WaitingEntry> {
    let mut conn = pool.acquire().await?;
    let entry = db::waiting_list::find(&mut conn, id)
        .await?
        .ok_or(Error::NotFound("waiting list entry"))?;
    ensure_holder(&entry, buyer)?;
    Ok(entry)
}

/// One page of `buyer`'s entries, newest first.
pub async fn list(
    pool: &PgPool,
    buyer: &FingerprintHash,
    page: PageRequest,
) -> Result<Page<WaitingEntry>> {
    let (rows, total) = db::waiting_list::list_for_buyer(pool, buyer.as_str(), page).await?;
    Ok(Page::new(rows, total, page))
}

/// One page of the event's entries in join order, every status (the organiser's view).
/// Errors: `NotFound` (no such event).
pub async fn list_for_event(
    pool: &PgPool,
    event_id: Uuid,
    page: PageRequest,
) -> Result<Page<WaitingEntry>> {
    if db::events::sale_read(pool, event_id).await?.is_none() {
        return Err(Error::NotFound("event"));
    }
    let (rows, total) = db::waiting_list::list_for_event(pool, event_id, page).await?;
    Ok(Page::new(rows, total, page))
}

/// `buyer` leaves: a `waiting` entry becomes `left`; an `offered` one is declined, its hold
/// released (`holds::offers::decline`). Either way what it had, set aside or held, goes to the
/// next in line in this transaction. Answers the entry as it now is. Errors: `NotFound`,
/// `FingerprintMismatch`, `INVALID_STATUS` (the entry has ended, or its offer's payment is
/// under way).
pub async fn leave(pool: &PgPool, id: Uuid, buyer: &FingerprintHash) -> Result<WaitingEntry> {
    let mut tx = pool.begin().await?;
    // An entry's event never changes: read before any lock, then the lock order.
    let event_id = db::waiting_list::event_of(&mut tx, id)
        .await?
        .ok_or(Error::NotFound("waiting list entry"))?;
    db::events::lock(&mut tx, event_id).await?;
    db::quotas::lock_for_event(&mut tx, event_id).await?;
    let entry = db::waiting_list::lock(&mut tx, id)
        .await?
        .ok_or(Error::NotFound("waiting list entry"))?;
    ensure_holder(&entry, buyer)?;
    match (entry.status, &entry.offer) {
        (EntryStatus::Waiting, _) => {
            db::waiting_list::end_waiting(&mut tx, id, EntryStatus::Left).await?;
            offers::line_changed(&mut tx, event_id, &actor_tag(buyer.as_str())).await?;
        }
        // Cancelling the hold ends the entry (`declined`) and offers its tickets on.
        (EntryStatus::Offered, Some(offer)) => {
            holds::offers::decline(&mut tx, offer.allocation_id).await?;
        }
        (status, _) => return Err(Refusal::EntryEnded(status).into()),
    }
    let entry = db::waiting_list::find(&mut tx, id)
        .await?
        .ok_or_else(|| Error::internal("a waiting list entry locked in this transaction"))?;
    tx.commit().await?;
    Ok(entry)
}

/// Only the buyer who joined may see or leave an entry.
fn ensure_holder(entry: &WaitingEntry, buyer: &FingerprintHash) -> Result<()> {
    if entry.fingerprint_hash == buyer.as_str() {
        Ok(())
    } else {
        Err(Refusal::FingerprintMismatch.into())
    }
}
