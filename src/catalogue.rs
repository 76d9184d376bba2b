//! The catalogue's organiser side: an event's settings, its ticket types and its quotas.
//!
//! Every write runs in one transaction that first takes the event's row lock
//! (`db::events::lock`), then, for quotas, the event's quota rows in id order
//! (`db::quotas::lock_for_event`): the lock order of the purchase path, so a change is wholly
//! before or wholly after any purchase batch and no two writers can deadlock. Holding the
//! event lock also freezes the event's allocations and their lines (every change to them
//! takes that lock first), which is what lets a quota recount what its types hold and an
//! event compare a new capacity with what is sold. Reads take no lock; they answer from one
//! snapshot (`db::events::find_with_catalogue`).

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::db;
use crate::db::events::ORGANISER_ACTOR;
use crate::db::quotas::QuotaCounts;
use crate::domain::catalogue::{
    EventDetails, Quota, QuotaPatch, QuotaSettings, QuotaView, TicketTypePatch, TicketTypeSettings,
    TicketTypeView, refuse_other_currency,
};
use crate::domain::event::{Event, EventPatch, EventSettings, NewEvent};
use crate::domain::patch::Patch;
use crate::domain::refusal::{FieldError, Refusal};
use crate::domain::report::SalesReport;
use crate::error::{Error, Result};
use crate::offers;

/// The event with the public view of each of its types, from one snapshot.
pub async fn event_details(pool: &PgPool, id: Uuid) -> Result<EventDetails> {
    let catalogue = db::events::find_with_catalogue(pool, id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    let ticket_types = TicketTypeView::all(
        &catalogue.event,
        &catalogue.ticket_types,
        &catalogue.quotas,
        &catalogue.waiting,
    );
    Ok(EventDetails {
        event: catalogue.event,
        ticket_types,
    })
}

/// The event's sales report (`GET /events/{id}/report`), from one snapshot of committed
/// rows; takes no lock.
pub async fn sales_report(pool: &PgPool, id: Uuid) -> Result<SalesReport> {
    let (currency, ticket_types) = db::report::sales(pool, id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    Ok(SalesReport::new(currency, ticket_types))
}

/// Creates an event with its default type, and answers it as `GET /events/{id}` would: read
/// back from one snapshot right after the creating transaction committed.
pub async fn create_event(pool: &PgPool, new_event: &NewEvent) -> Result<EventDetails> {
    let event = db::events::insert(pool, new_event).await?;
    event_details(pool, event.id).await
}

/// The public view of the event's types, in creation order.
pub async fn ticket_types(pool: &PgPool, event_id: Uuid) -> Result<Vec<TicketTypeView>> {
    Ok(event_details(pool, event_id).await?.ticket_types)
}

/// One of the event's types, exactly as [`ticket_types`] lists it: filtered from the same
/// one-snapshot read, so it reflects every change committed before the call. 404 for an
/// unknown event, then for a type that is not the event's.
pub async fn ticket_type(pool: &PgPool, event_id: Uuid, type_id: Uuid) -> Result<TicketTypeView> {
    ticket_types(pool, event_id)
        .await?
        .into_iter()
        .find(|view| view.id == type_id)
        .ok_or(Error::NotFound("ticket type"))
}

/// Changes the event's settings (`PATCH /events/{id}`). Under the event lock: the new total
/// must cover the tickets reserved and purchased (else `CAPACITY_BELOW_SOLD`, nothing
/// changed), and a lower per-buyer cap must cover what each buyer already holds (checked
/// here so the answer is a refusal, not the `buyer_tickets_within_cap` backstop's 500).
pub async fn update_event(pool: &PgPool, id: Uuid, patch: EventPatch) -> Result<Event> {
    let mut tx = pool.begin().await?;
    let event = locked_event(&mut tx, id).await?;
    let settings = EventSettings::of(&event)
        .apply(patch)
        .map_err(Error::Validation)?;
    if settings.total_tickets < event.reserved_tickets + event.purchased_tickets {
        return Err(Refusal::CapacityBelowSold {
            reserved: event.reserved_tickets,
            purchased: event.purchased_tickets,
        }
        .into());
    }
    // A buyer with no cap of the event's own is held to its total (`events.buyer_cap`).
    let buyer_cap = settings
        .max_tickets_per_fingerprint
        .unwrap_or(settings.total_tickets);
    let held = db::events::most_held_by_one_buyer(&mut tx, id).await?;
    if i64::from(buyer_cap) < held {
        return Err(Refusal::CapBelowHeld { held }.into());
    }
    let mut event = db::events::update_settings(&mut tx, id, &settings).await?;
    if event.waiting_list_length > 0 || event.set_aside_tickets > 0 {
        // A raised capacity gives its tickets to the waiting list first; a lowered one may
        // shrink what is set aside. Offers move quota counts: their locks, in the lock order.
        db::quotas::lock_for_event(&mut tx, id).await?;
        offers::offer_returned(&mut tx, id, ORGANISER_ACTOR).await?;
        event = locked_event(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(event)
}

/// Adds a ticket type to the event; a name the event already uses is `TICKET_TYPE_EXISTS`.
pub async fn create_ticket_type(
    pool: &PgPool,
    event_id: Uuid,
    settings: TicketTypeSettings,
    currency: Patch<String>,
) -> Result<TicketTypeView> {
    let mut tx = pool.begin().await?;
    let event = locked_event(&mut tx, event_id).await?;
    refuse_other_currency(currency, event.currency).map_err(|e| Error::Validation(vec![e]))?;
    let ticket_type = db::ticket_types::insert(&mut tx, event_id, &settings).await?;
    // A new type is in no quota yet and nobody waits for it: it has what the event has for
    // the public.
    let quotas = db::quotas::for_event(&mut tx, event_id).await?;
    let view = TicketTypeView::of(&ticket_type, &event, &quotas, &HashMap::new());
    // Streams list every type: they learn of the new one.
    db::events::announce_catalogue_change(&mut tx, event_id).await?;
    tx.commit().await?;
    Ok(view)
}

/// Changes a type of the event (absent fields unchanged, null clears the nullable ones).
/// Orders already made keep the price stored on their lines.
pub async fn update_ticket_type(
    pool: &PgPool,
    event_id: Uuid,
    type_id: Uuid,
    patch: TicketTypePatch,
    currency: Patch<String>,
) -> Result<TicketTypeView> {
    let mut tx = pool.begin().await?;
    let mut event = locked_event(&mut tx, event_id).await?;
    let current = db::ticket_types::find(&mut tx, event_id, type_id)
        .await?
        .ok_or(Error::NotFound("ticket type"))?;
    // Every problem at once: the currency's beside the settings'.
    let settings = match (
        TicketTypeSettings::of(&current).apply(patch),
        refuse_other_currency(currency, event.currency),
    ) {
        (Ok(settings), Ok(())) => settings,
        (Err(mut errors), currency) => {
            errors.extend(currency.err());
            return Err(Error::Validation(errors));
        }
        (Ok(_), Err(error)) => return Err(Error::Validation(vec![error])),
    };
    let ticket_type = db::ticket_types::update(&mut tx, type_id, &settings).await?;
    if event.waiting_list_length > 0 {
        // A type taken off sale (inactive, sales ended) stops being served and keeps no
        // set-aside; one put back on sale is served again, from what is there now. Offers move
        // quota counts: their locks, in the lock order.
        db::quotas::lock_for_event(&mut tx, event_id).await?;
        if offers::offer_returned(&mut tx, event_id, ORGANISER_ACTOR).await? {
            // Offers moved the counts the view is computed from.
            event = locked_event(&mut tx, event_id).await?;
        }
    }
    // A new price, a type off sale or a moved window changes what buyers may order: streams
    // hear it as `event_updated`, announced last so that it is the change their message names.
    db::events::announce_catalogue_change(&mut tx, event_id).await?;
    let quotas = db::quotas::for_event(&mut tx, event_id).await?;
    let waiting = db::waiting_list::waiting_by_type(&mut tx, event_id).await?;
    let view = TicketTypeView::of(&ticket_type, &event, &quotas, &waiting);
    tx.commit().await?;
    Ok(view)
}

/// The event's quotas in id order, from one snapshot.
pub async fn quotas(pool: &PgPool, event_id: Uuid) -> Result<Vec<QuotaView>> {
    let catalogue = db::events::find_with_catalogue(pool, event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    Ok(catalogue.quotas.into_iter().map(QuotaView::from).collect())
}

/// One of the event's quotas, exactly as [`quotas`] lists it: filtered from the same
/// one-snapshot read, so it reflects every change committed before the call. 404 for an
/// unknown event, then for a quota that is not the event's.
pub async fn quota(pool: &PgPool, event_id: Uuid, quota_id: Uuid) -> Result<QuotaView> {
    quotas(pool, event_id)
        .await?
        .into_iter()
        .find(|view| view.id == quota_id)
        .ok_or(Error::NotFound("quota"))
}

/// Adds a quota, counting what its types already hold: refused with `CAPACITY_BELOW_SOLD`
/// when that is more than its size.
pub async fn create_quota(
    pool: &PgPool,
    event_id: Uuid,
    settings: QuotaSettings,
) -> Result<QuotaView> {
    let mut tx = pool.begin().await?;
    locked_event(&mut tx, event_id).await?;
    // The lock order: event, then quotas in id order (docs/concurrency.md).
    db::quotas::lock_for_event(&mut tx, event_id).await?;
    let counts = recount(&mut tx, event_id, &settings).await?;
    let id = db::quotas::insert(&mut tx, event_id, &settings, counts).await?;
    db::events::announce_catalogue_change(&mut tx, event_id).await?;
    // A new quota may shrink what a waiting list's head can have set aside.
    offers::offer_returned(&mut tx, event_id, ORGANISER_ACTOR).await?;
    let view = quota_view(&mut tx, event_id, id).await?;
    tx.commit().await?;
    Ok(view)
}

/// Changes a quota (name, size, types), recounting what its types hold: refused with
/// `CAPACITY_BELOW_SOLD` when the new size is below that.
pub async fn update_quota(
    pool: &PgPool,
    event_id: Uuid,
    quota_id: Uuid,
    patch: QuotaPatch,
) -> Result<QuotaView> {
    let mut tx = pool.begin().await?;
    locked_event(&mut tx, event_id).await?;
    let current = locked_quota(&mut tx, event_id, quota_id).await?;
    let settings = QuotaSettings::of(&current)
        .apply(patch)
        .map_err(Error::Validation)?;
    let counts = recount(&mut tx, event_id, &settings).await?;
    db::quotas::update(&mut tx, quota_id, event_id, &settings, counts).await?;
    db::events::announce_catalogue_change(&mut tx, event_id).await?;
    // A raised size or a type taken out gives tickets to the waiting list first.
    offers::offer_returned(&mut tx, event_id, ORGANISER_ACTOR).await?;
    let view = quota_view(&mut tx, event_id, quota_id).await?;
    tx.commit().await?;
    Ok(view)
}

/// Deletes a quota; its types then sell against the event and their other quotas only.
/// Like every quota write, it is announced to the streams (`event_updated`), since what its
/// types can sell may have moved.
pub async fn delete_quota(pool: &PgPool, event_id: Uuid, quota_id: Uuid) -> Result<()> {
    let mut tx = pool.begin().await?;
    locked_event(&mut tx, event_id).await?;
    locked_quota(&mut tx, event_id, quota_id).await?;
    db::quotas::delete(&mut tx, quota_id).await?;
    db::events::announce_catalogue_change(&mut tx, event_id).await?;
    // Its types' tickets may now reach a waiting list.
    offers::offer_returned(&mut tx, event_id, ORGANISER_ACTOR).await?;
    tx.commit().await?;
    Ok(())
}

/// Takes the event's row lock (first, always) and returns the event; 404 when there is none.
async fn locked_event(tx: &mut PgConnection, id: Uuid) -> Result<Event> {
    db::events::lock(tx, id)
        .await?
        .ok_or(Error::NotFound("event"))
}

/// Locks the event's quotas in id order (the event lock already held) and returns the one
/// asked for; 404 when the event has no such quota.
async fn locked_quota(tx: &mut PgConnection, event_id: Uuid, quota_id: Uuid) -> Result<Quota> {
    db::quotas::lock_for_event(tx, event_id)
        .await?
        .into_iter()
        .find(|quota| quota.id == quota_id)
        .ok_or(Error::NotFound("quota"))
}

/// What a quota with these settings holds now, under the event lock: its types must be the
/// event's (else a field error on `ticketTypeIds`), and what they hold must fit its size.
async fn recount(
    tx: &mut PgConnection,
    event_id: Uuid,
    settings: &QuotaSettings,
) -> Result<QuotaCounts> {
    let known = db::ticket_types::for_event(tx, event_id).await?;
    let unknown: Vec<String> = settings
        .ticket_type_ids
        .iter()
        .filter(|id| !known.iter().any(|t| t.id == **id))
        .map(Uuid::to_string)
        .collect();
    if !unknown.is_empty() {
        return Err(Error::Validation(vec![FieldError::new(
            "ticketTypeIds",
            format!("not ticket types of this event: {}", unknown.join(", ")),
        )]));
    }
    let (reserved, purchased) =
        db::quotas::held_by_types(tx, event_id, &settings.ticket_type_ids).await?;
    // Both sums are bounded by the event's total (at most 1,000,000).
    let reserved = i32::try_from(reserved).map_err(Error::internal)?;
    let purchased = i32::try_from(purchased).map_err(Error::internal)?;
    if reserved + purchased > settings.size {
        return Err(Refusal::CapacityBelowSold {
            reserved,
            purchased,
        }
        .into());
    }
    Ok(QuotaCounts {
        reserved,
        purchased,
    })
}

/// The quota as answered after a write, from what was written.
/// The quota as this transaction left it (after any offer to the waiting list).
async fn quota_view(tx: &mut PgConnection, event_id: Uuid, quota_id: Uuid) -> Result<QuotaView> {
    db::quotas::for_event(tx, event_id)
        .await?
        .into_iter()
        .find(|quota| quota.id == quota_id)
        .map(QuotaView::from)
        .ok_or_else(|| Error::internal("a quota written in this transaction is gone"))
}
