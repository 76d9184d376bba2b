//! The purchase transaction, for one order or a batch of them:
//!
//! 1. begin;
//! 2. lock the event row (`SELECT … FOR NO KEY UPDATE`): purchases of one event queue here, so
//!    each transaction sees the counts the previous one committed; then lock the event's
//!    quota rows in id order, and read its ticket types (their writers take the event lock
//!    too, so neither can change until commit). The types come from the instance's
//!    [`CatalogueCache`] when the event's `catalogue_version`, read with the locked row, is
//!    the one they were read at, and an event without quotas (`quota_count` 0) has no quota
//!    row to lock: on a hot event this step costs no round trip. Lock order: the event row, then quota rows in
//!    id order, then allocation rows, in every transaction that takes more than one; since
//!    every writer of an event's quotas or allocations takes the event row first, no two
//!    transactions can each hold a lock the other waits for;
//! 3. lock the claims of keyed requests (their `idempotency_keys` rows), and leave out the
//!    requests whose claim another attempt took over as stale: they make nothing and answer
//!    409 `IDEMPOTENCY_IN_PROGRESS`, and the rest of the batch goes on; then decide each
//!    order, in arrival order, against running counts of the event and of every quota
//!    (`domain::grant::decide`): all its lines, or nothing. The counts are less what is set
//!    aside for the head of a waiting list, and a type anyone waits for sells nothing to
//!    the public: tickets that come back go to its line, in order (`waiting_list`);
//! 4. insert the `reserved` allocations with their lines at the prices read in step 2 (one
//!    statement for the whole batch; the database's trigger adds them to their buyers'
//!    `buyer_tickets` counters);
//! 5. move the tickets from available to reserved on the event and on every quota the
//!    granted lines count against (one statement, which also announces the change through
//!    `pg_notify`, delivered at commit);
//! 6. record the answers of keyed requests under their idempotency keys (one statement, only
//!    when the batch has keyed requests; their JSON is rendered here, under the lock);
//! 7. commit, which releases the locks.
//!
//! While the lock is held: the quota locks, the types read, the claims' lock, the cap
//! counters (when the event has a cap), the insert, the update, the keyed record and the
//! commit, plus the in-memory decision and rendering; never a call to anything but the
//! database. Isolation is READ COMMITTED: the row locks, not the snapshot, serialize buyers,
//! and a row lock always returns the latest committed row; every statement after it takes
//! a fresh snapshot. Were the code ever wrong, the CHECK constraints on `events` and `quotas`
//! still refuse a count below zero or a total that does not balance,
//! `buyer_tickets_within_cap` refuses a buyer above the cap, and the transaction fails
//! instead of overselling.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use sqlx::PgPool;
use uuid::Uuid;

use super::HoldRequest;
use super::catalogue_cache::CatalogueCache;
use crate::db::events::CountMove;
use crate::db::{allocations, events, waiting_list};
use crate::domain::allocation::Allocation;
use crate::domain::catalogue::SalesWindow;
use crate::domain::grant::{Ask, Grant, SaleState, decide};
use crate::domain::stats::{ChangeKind, actor_tag};
use crate::error::{Error, Result};
use crate::idempotency;
use crate::metrics;
use crate::offers;

/// Runs the purchase transaction for `requests` (in arrival order) and returns one answer
/// per request. `catalogue` supplies the event's types when they are unchanged since it
/// last read them (checked under the event lock). The outer error means the transaction itself failed, and nothing was written.
pub async fn reserve(
    pool: &PgPool,
    event_id: Uuid,
    all: &[HoldRequest],
    hold_seconds: u32,
    catalogue: &CatalogueCache,
) -> Result<Vec<Result<Allocation>>> {
    // Step 1.
    let mut tx = pool.begin().await?;

    // Step 2: the event row lock, held until commit or rollback; then the quota rows in id
    // order, and the types (unchanging while the event row is locked).
    let waiting = Instant::now();
    let Some(lock) = events::lock_for_sale(&mut tx, event_id).await? else {
        tx.rollback().await?;
        return Ok(all.iter().map(|_| Err(Error::NotFound("event"))).collect());
    };
    let locked = Instant::now();
    metrics::lock_waited(locked - waiting);
    let (types, quotas) = catalogue.under_lock(&mut tx, &lock).await?;
    let (event, now) = (lock.event, lock.now);

    // Step 3: the keyed requests whose claim is still theirs, locked until commit so that no
    // takeover can come between this check and the record in step 6; then decide, for the
    // requests that still run, against the locked counts.
    let claims: Vec<_> = all
        .iter()
        .map(|request| request.record.as_ref().map(|r| r.claim()))
        .collect();
    let lost = idempotency::lost_claims(&mut tx, &claims).await?;
    let requests: Vec<&HoldRequest> = all
        .iter()
        .zip(&lost)
        .filter(|(_, lost)| !**lost)
        .map(|(request, _)| request)
        .collect();
    let asks: Vec<&Ask> = requests.iter().map(|r| &r.ask).collect();
    let held = match event.max_tickets_per_fingerprint {
        Some(_) => {
            let buyers: Vec<&str> = asks.iter().map(|a| a.buyer.as_str()).collect();
            allocations::held_by_buyers(&mut tx, event_id, &buyers).await?
        }
        None => HashMap::new(),
    };
    // The waiting list's claim, under the same lock: the set-aside tickets came with the
    // locked rows; the types someone waits for are read only when anyone waits (on a hot
    // event without a line this costs no round trip).
    let waiting_types = match event.waiting_list_length {
        0 => HashSet::new(),
        _ => waiting_list::waiting_types(&mut tx, event_id).await?,
    };
    let sale = SaleState {
        now,
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
    let decisions = decide(sale, &held, asks.iter().copied());
    let granted: Vec<(&HoldRequest, &Grant)> = requests
        .iter()
        .zip(&decisions)
        .filter_map(|(request, decision)| Some((*request, decision.as_ref().ok()?)))
        .collect();
    let Some((last, _)) = granted.last() else {
        // Nothing to write: release the locks at once.
        tx.rollback().await?;
        metrics::lock_held(locked.elapsed());
        let answers = decisions.into_iter().map(|d| match d {
            Ok(_) => Err(Error::internal("a grant without a row")),
            Err(rejection) => Err(rejection.into()),
        });
        return Ok(with_lost(&lost, answers));
    };

    // Steps 4 and 5: the holds with their lines (and the buyers' counters), and the counts
    // of the event and its quotas, under the same locks and transaction.
    let pairs: Vec<(&Ask, &Grant)> = granted
        .iter()
        .map(|(request, grant)| (&request.ask, *grant))
        .collect();
    let rows =
        allocations::insert_reserved(&mut tx, event_id, event.currency, &pairs, hold_seconds)
            .await?;
    events::move_counts(
        &mut tx,
        event_id,
        CountMove::Reserve,
        // Cannot overflow: the grants together fit in the event's available tickets.
        granted.iter().map(|(_, grant)| grant.quantity).sum(),
        &tickets_by_type(granted.iter().map(|(_, grant)| *grant)),
        ChangeKind::TicketAllocated,
        last.ask.buyer.as_str(),
    )
    .await?;
    // A buyer at the head of a line with tickets set aside for it may have just bought
    // others up to the per-buyer cap, leaving no room for its entry: walk the line again, in
    // this transaction, so it is passed over and what was set aside moves on now rather
    // than at the next return. Only while something is set aside under a cap: a hot event
    // without a line pays nothing.
    if event.set_aside_tickets > 0 && event.max_tickets_per_fingerprint.is_some() {
        offers::offer_returned(&mut tx, event_id, &actor_tag(last.ask.buyer.as_str())).await?;
    }
    // Step 6: keyed requests' answers are recorded with the holds they report, in the same
    // transaction (one statement, and only when the batch has keyed requests), rendered as
    // the HTTP layer asked.
    let keyed = granted
        .iter()
        .zip(&rows)
        .filter_map(|((request, _), row)| {
            let recorder = request.record.as_ref()?;
            Some((recorder.claim(), recorder.render(row).ok()?))
        })
        .collect::<Vec<_>>();
    idempotency::record_in(&mut tx, &keyed).await?;
    let mut rows = rows.into_iter();

    // Step 7.
    tx.commit().await?;
    metrics::lock_held(locked.elapsed());
    metrics::batch_committed(granted.len());

    let answers = decisions.into_iter().map(|decision| {
        decision.map_err(Error::from).and_then(|_| {
            rows.next()
                .ok_or_else(|| Error::internal("fewer rows than grants"))
        })
    });
    Ok(with_lost(&lost, answers))
}

/// The tickets of each type the grants take, summed over the batch (types in id order).
fn tickets_by_type<'a>(grants: impl Iterator<Item = &'a Grant>) -> Vec<(Uuid, i32)> {
    let mut by_type: std::collections::BTreeMap<Uuid, i32> = std::collections::BTreeMap::new();
    for line in grants.flat_map(|grant| &grant.lines) {
        // Cannot overflow: the grants together fit in the event's available tickets.
        *by_type.entry(line.ticket_type_id).or_default() += line.quantity;
    }
    by_type.into_iter().collect()
}

/// The answers of all requests in arrival order: 409 `IDEMPOTENCY_IN_PROGRESS` for those whose
/// claim was lost, and `answers` (one per other request, in order) for the rest.
fn with_lost(
    lost: &[bool],
    mut answers: impl Iterator<Item = Result<Allocation>>,
) -> Vec<Result<Allocation>> {
    lost.iter()
        .map(|lost| match lost {
            true => Err(Error::IdempotencyInProgress),
            false => answers
                .next()
                .unwrap_or_else(|| Err(Error::internal("fewer answers than requests"))),
        })
        .collect()
}
