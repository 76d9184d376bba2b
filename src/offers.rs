//! The waiting list's side of every move that returns tickets: they are offered to the
//! event's line in join order, in the same transaction, under the same locks.
//!
//! Every path that makes tickets available calls [`offer_returned`] after its count move,
//! while it still holds the event row lock and the event's quota locks: a cancel or an
//! expiry of one hold (`holds::apply`), the sweeper's batch expiry, a completed refund, an
//! organiser's capacity, type or quota change, and a waiting-list join or leave; and a
//! purchase batch while tickets are set aside under a per-buyer cap (a blocked head who
//! bought elsewhere may have no room left for its entry). Nothing else can change the counts
//! or the line in between, so the walk (`domain::waiting_list::walk`) sees exactly what came
//! back, and each returned ticket is offered once. The purchase transaction, under the same
//! lock, withholds from the public the set-aside tickets this stores and every type someone
//! who could be served waits for, so no buyer, on any instance or in any purchase mode, can
//! take a ticket ahead of the line.
//!
//! Only `db` and `domain` below it: the purchase path, `holds`, the catalogue and the
//! waiting list all call it.

use std::collections::{HashMap, HashSet};

use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::events::{self, CountMove};
use crate::db::{allocations, quotas, ticket_types, waiting_list};
use crate::domain::stats::ChangeKind;
use crate::domain::waiting_list::{EntryStatus, LineState, walk};
use crate::error::{Error, Result};

/// After a join or a leave changed the event's line: walks it ([`offer_returned`]), and when
/// the walk moved nothing announces the line's new length itself, so the streams hear of
/// the change either way. Same locks as [`offer_returned`].
pub async fn line_changed(conn: &mut PgConnection, event_id: Uuid, actor_tag: &str) -> Result<()> {
    if !offer_returned(conn, event_id, actor_tag).await? {
        events::announce_waiting_list_change(conn, event_id, actor_tag).await?;
    }
    Ok(())
}

/// Offers what the event has available to its waiting lists, strictly in join order
/// (`domain::waiting_list::walk`): each entry that can be served gets a `reserved` hold of its
/// quantity, lapsing after the entry's `offer_seconds`, and becomes `offered`; what the head
/// of a blocked line cannot use yet is set aside for it (`events.set_aside_tickets`,
/// `quotas.set_aside_tickets`). An entry at the front of its line whose buyer has no room
/// under the per-buyer cap is passed over and ends `expired`; one that wants more than the
/// type can ever have at once keeps its place and blocks nothing. The line of a type off sale
/// (inactive, or its or the event's sales ended) is left waiting and keeps nothing. Announces the result to
/// the streams as the change of `actor_tag` (`stats::actor_tag` of a buyer, or
/// `events::ORGANISER_ACTOR`) and answers true; when the walk moves nothing (no offer, no
/// entry passed over, the set-aside as it was) it writes nothing and answers false, so a
/// caller whose own change the streams must hear of (a join, a leave) announces it. A no-op
/// for an event nobody waits for.
///
/// Call after the move that returned tickets, in its transaction, holding the event's row
/// lock and its quota locks (the lock order: event row, quota rows in id order, then
/// allocation and entry rows; the holds inserted here are new rows nobody else can lock).
pub async fn offer_returned(
    conn: &mut PgConnection,
    event_id: Uuid,
    actor_tag: &str,
) -> Result<bool> {
    let Some(event) = waiting_list::event_state(conn, event_id).await? else {
        return Ok(false);
    };
    if event.waiting_list_length == 0 && event.set_aside_tickets == 0 {
        return Ok(false);
    }
    let quotas = quotas::for_event(conn, event_id).await?;
    let types = ticket_types::for_event(conn, event_id).await?;
    let line = waiting_list::line(conn, event_id).await?;
    // A sale that has not started yet still serves the line (the public can buy none of a
    // type anyone waits for, so nobody is passed); one that has ended, or an inactive type,
    // does not.
    let ended = |end: Option<time::OffsetDateTime>| end.is_some_and(|end| end <= event.now);
    let off_sale: HashSet<Uuid> = types
        .iter()
        .filter(|t| !t.active || ended(t.sales.end) || ended(event.sales_end_at))
        .map(|t| t.id)
        .collect();
    let held = match event.max_tickets_per_fingerprint {
        Some(_) => {
            let buyers: Vec<&str> = line.iter().map(|e| e.fingerprint_hash.as_str()).collect();
            allocations::held_by_buyers(conn, event_id, &buyers).await?
        }
        None => HashMap::new(),
    };
    let walked = walk(
        LineState {
            event_available: event.available_tickets,
            event_total: event.total_tickets,
            quotas: &quotas,
            off_sale: &off_sale,
            cap: event.max_tickets_per_fingerprint,
            held: &held,
        },
        &line,
    );
    for index in &walked.passed_over {
        waiting_list::end_waiting(conn, line[*index].id, EntryStatus::Expired).await?;
    }
    let set_aside_moved = walked.event_set_aside != event.set_aside_tickets
        || quotas
            .iter()
            .any(|quota| walked.quota_set_aside.get(&quota.id) != Some(&quota.set_aside_tickets));
    if walked.offers.is_empty() && walked.passed_over.is_empty() && !set_aside_moved {
        // Nothing moved: no write, and no announcement to stand in for the caller's own.
        return Ok(false);
    }
    // The set-aside first, so the notification of the last offer's count move, and the
    // announcement below, carry it.
    waiting_list::store_set_aside(
        conn,
        event_id,
        walked.event_set_aside,
        &walked.quota_set_aside,
    )
    .await?;
    for index in &walked.offers {
        let entry = &line[*index];
        let price = types
            .iter()
            .find(|t| t.id == entry.ticket_type_id)
            .map(|t| t.price)
            .ok_or_else(|| Error::internal("a waiting list entry of no type of its event"))?;
        waiting_list::insert_offer(conn, event_id, entry, price).await?;
        events::move_counts(
            conn,
            event_id,
            CountMove::Reserve,
            entry.quantity,
            &[(entry.ticket_type_id, entry.quantity)],
            ChangeKind::TicketAllocated,
            &entry.fingerprint_hash,
        )
        .await?;
    }
    events::announce_waiting_list_change(conn, event_id, actor_tag).await?;
    Ok(true)
}
