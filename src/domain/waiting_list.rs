//! The waiting list: who waits for which ticket type, and the one rule that decides, under the
//! event row lock, which of them tickets that came back go to ([`walk`]).
//!
//! ```text
//! waiting ──offer──▶ offered ──paid──▶ accepted
//!    │                  ├──cancelled by the holder (or DELETE)──▶ declined
//!    │                  └──lapsed──▶ expired
//!    ├──DELETE──▶ left
//!    └──passed over──▶ expired
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::catalogue::Quota;
use super::grant::within_cap;

/// Where a waiting-list entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    /// In line.
    Waiting,
    /// Offered a `reserved` hold of its quantity (`offer`), to pay before it lapses.
    Offered,
    /// The offered hold was paid.
    Accepted,
    /// The buyer gave the offer back (`DELETE`, or a cancel of the hold).
    Declined,
    /// The offer lapsed unpaid, or the entry was passed over at the front of its line (its
    /// buyer could no longer take the tickets under the per-buyer cap).
    Expired,
    /// The buyer left the line before any offer.
    Left,
}

impl EntryStatus {
    /// The status as stored and as the API spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Offered => "offered",
            Self::Accepted => "accepted",
            Self::Declined => "declined",
            Self::Expired => "expired",
            Self::Left => "left",
        }
    }

    /// Every status, in lifecycle order.
    pub const ALL: [Self; 6] = [
        Self::Waiting,
        Self::Offered,
        Self::Accepted,
        Self::Declined,
        Self::Expired,
        Self::Left,
    ];

    /// The moves the lifecycle allows; the trigger `waiting_list_entries_status_transition`
    /// holds the database to the same table.
    pub const fn can_become(self, next: Self) -> bool {
        use EntryStatus::*;
        matches!(
            (self, next),
            (Waiting, Offered)
                | (Waiting, Left)
                | (Waiting, Expired)
                | (Offered, Accepted)
                | (Offered, Declined)
                | (Offered, Expired)
        )
    }
}

impl fmt::Display for EntryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntryStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown waiting list status {s:?}"))
    }
}

/// The hold an entry was offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    /// The `reserved` hold, paid like any other (`POST /tickets/{allocationId}/payment`).
    pub allocation_id: Uuid,
    /// When the hold lapses unless paid (the hold's own `expiresAt`).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A waiting-list entry as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitingEntry {
    pub id: Uuid,
    pub event_id: Uuid,
    pub ticket_type_id: Uuid,
    /// Tickets wanted, all offered at once or none.
    pub quantity: i32,
    pub status: EntryStatus,
    /// Place in the type's line, counted from 1, while `waiting`; null otherwise.
    pub position: Option<i64>,
    /// The hold offered, once `offered` (and kept after); null before.
    pub offer: Option<Offer>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Who waits (the fingerprint's HMAC), for holder checks; never shown.
    #[serde(skip)]
    pub fingerprint_hash: String,
}

/// How one type's line stands: how many entries wait, and whether any of them could be
/// served (its quantity within the type's [`ceiling`]), which closes the type to the public.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TypeLine {
    pub waiting: i64,
    pub closed: bool,
}

/// An entry that waits, as the walk needs it: which type, how many, in join order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InLine {
    pub id: Uuid,
    pub ticket_type_id: Uuid,
    pub quantity: i32,
    pub fingerprint_hash: String,
    /// How long an offer to this entry stays reserved, fixed when it joined.
    pub offer_seconds: u32,
}

/// What a walk of the line decided: the entries to offer holds to now, in join order, those
/// passed over, and the tickets set aside for heads of lines that wait for more than is
/// there.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Walk {
    /// Indexes into the line walked, in join order.
    pub offers: Vec<usize>,
    /// Indexes of entries that reached the front of their line but whose buyer can no longer
    /// take their tickets (the per-buyer cap): they end `expired` and the line moves on.
    pub passed_over: Vec<usize>,
    /// Of the event's available tickets (after the offers), those set aside.
    pub event_set_aside: i32,
    /// Each quota's share of the set-aside tickets (every quota is listed, 0 for most).
    pub quota_set_aside: HashMap<Uuid, i32>,
}

/// The event as a walk of its line sees it, read under the event row lock.
#[derive(Debug, Clone, Copy)]
pub struct LineState<'a> {
    /// The event's available tickets, as counted (before any set-aside).
    pub event_available: i32,
    /// The event's capacity (`totalTickets`).
    pub event_total: i32,
    /// The event's quotas, as counted.
    pub quotas: &'a [Quota],
    /// Types whose line is not served now: inactive, or their own or the event's sales have
    /// ended. Their entries keep waiting and block nothing.
    pub off_sale: &'a HashSet<Uuid>,
    /// The event's per-buyer cap, if any.
    pub cap: Option<i32>,
    /// What each capped buyer in the line holds of the event now (absent means none).
    pub held: &'a HashMap<String, i64>,
}

/// The most tickets of `ticket_type` the event could ever have available at once: the least
/// of its capacity and the size of every quota containing the type. A quantity above it can
/// never be served.
pub fn ceiling(ticket_type: Uuid, event_total: i32, quotas: &[Quota]) -> i32 {
    quotas
        .iter()
        .filter(|quota| quota.ticket_type_ids.contains(&ticket_type))
        .map(|quota| quota.size)
        .fold(event_total, i32::min)
}

/// Walks the line of an event, strictly in join order, against its available tickets and
/// its quotas' (as counted, before any set-aside): an entry whose type can serve its whole
/// quantity is offered it, and those tickets are taken; the first entry of a type that
/// cannot be served blocks its type, and what the type can still sell is set aside for it,
/// taken from the event and from every quota containing the type, so nothing behind it, of
/// its type or of another sharing its pools, can have it. Later entries of a blocked type
/// wait behind its head (strict order: a group of 3 at the head keeps the 2 that came back).
///
/// Nothing at the front of a line holds it up forever. An entry whose quantity is above its
/// type's [`ceiling`] (more than the event's capacity or a quota's size) cannot be served
/// however many come back: it keeps its place, waiting, and blocks nothing, until a raised
/// capacity makes it servable. An entry whose buyer would go over the per-buyer cap with it,
/// counting what they hold and the offers this walk makes them before it, is passed over
/// (`passed_over`, to end `expired`). Entries of a type in `off_sale` are skipped: nobody can
/// buy the type, so nothing is offered or set aside for it until it is back on sale (the
/// organiser's change walks the line again).
///
/// The result depends only on the state and the line, so every transaction that runs it
/// under the event lock agrees: the set-aside it stores is what the purchase path withholds.
pub fn walk(state: LineState<'_>, line: &[InLine]) -> Walk {
    let quotas = state.quotas;
    let mut event = state.event_available;
    let mut quota_counts: HashMap<Uuid, i32> = quotas
        .iter()
        .map(|quota| (quota.id, quota.available_tickets))
        .collect();
    let quotas_of = |ticket_type: Uuid| -> Vec<Uuid> {
        quotas
            .iter()
            .filter(|quota| quota.ticket_type_ids.contains(&ticket_type))
            .map(|quota| quota.id)
            .collect()
    };
    let mut held = state.held.clone();
    let mut blocked: HashSet<Uuid> = HashSet::new();
    let mut walk = Walk {
        quota_set_aside: quotas.iter().map(|quota| (quota.id, 0)).collect(),
        ..Walk::default()
    };
    for (index, entry) in line.iter().enumerate() {
        if blocked.contains(&entry.ticket_type_id) || state.off_sale.contains(&entry.ticket_type_id)
        {
            continue;
        }
        if entry.quantity > ceiling(entry.ticket_type_id, state.event_total, quotas) {
            continue;
        }
        let holds = held.get(&entry.fingerprint_hash).copied().unwrap_or(0);
        if state
            .cap
            .is_some_and(|cap| within_cap(cap, holds, entry.quantity).is_err())
        {
            walk.passed_over.push(index);
            continue;
        }
        let pools = quotas_of(entry.ticket_type_id);
        let available = pools
            .iter()
            .map(|quota| quota_counts[quota])
            .fold(event, i32::min)
            .max(0);
        let (taken, offered) = if available >= entry.quantity {
            (entry.quantity, true)
        } else {
            blocked.insert(entry.ticket_type_id);
            (available, false)
        };
        event -= taken;
        for quota in &pools {
            if let Some(count) = quota_counts.get_mut(quota) {
                *count -= taken;
            }
        }
        if offered {
            walk.offers.push(index);
            *held.entry(entry.fingerprint_hash.clone()).or_default() += i64::from(taken);
        } else {
            walk.event_set_aside += taken;
            for quota in &pools {
                if let Some(set_aside) = walk.quota_set_aside.get_mut(quota) {
                    *set_aside += taken;
                }
            }
        }
    }
    walk
}

/// What the public can buy of a type: nothing while anyone who could be served waits for it
/// (`waiting_types`, as `db::entry_closes_its_type` chose them),
/// else the least of the event's and its quotas' available tickets less what is set aside
/// in each for the waiting list.
pub fn public_available(
    ticket_type: Uuid,
    event_available: i32,
    event_set_aside: i32,
    quotas: &[Quota],
    waiting_types: &HashSet<Uuid>,
) -> i32 {
    if waiting_types.contains(&ticket_type) {
        return 0;
    }
    quotas
        .iter()
        .filter(|quota| quota.ticket_type_ids.contains(&ticket_type))
        .map(|quota| quota.available_tickets - quota.set_aside_tickets)
        .fold(event_available - event_set_aside, i32::min)
        .max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ticket_type: Uuid, quantity: i32) -> InLine {
        InLine {
            id: Uuid::new_v4(),
            ticket_type_id: ticket_type,
            quantity,
            fingerprint_hash: "0".repeat(64),
            offer_seconds: 60,
        }
    }

    /// Walks `line` against an event of `available` tickets out of 100, no cap, all on sale.
    fn walk_free(available: i32, quotas: &[Quota], line: &[InLine]) -> Walk {
        super::walk(
            LineState {
                event_available: available,
                event_total: 100,
                quotas,
                off_sale: &HashSet::new(),
                cap: None,
                held: &HashMap::new(),
            },
            line,
        )
    }

    fn quota(available: i32, types: &[Uuid]) -> Quota {
        Quota {
            id: Uuid::new_v4(),
            event_id: Uuid::nil(),
            name: "q".into(),
            size: 100,
            available_tickets: available,
            reserved_tickets: 0,
            purchased_tickets: 0,
            set_aside_tickets: 0,
            ticket_type_ids: types.to_vec(),
        }
    }

    #[test]
    fn entries_are_offered_in_join_order_while_tickets_last() {
        let t = Uuid::new_v4();
        let line = [entry(t, 2), entry(t, 1), entry(t, 1)];
        let walk = walk_free(3, &[], &line);
        assert_eq!(walk.offers, vec![0, 1]);
        assert_eq!(walk.event_set_aside, 0);
    }

    #[test]
    fn a_group_at_the_head_keeps_what_came_back_and_nobody_behind_it_is_served() {
        let t = Uuid::new_v4();
        let line = [entry(t, 3), entry(t, 1), entry(t, 2)];
        let walk = walk_free(2, &[], &line);
        assert!(walk.offers.is_empty());
        assert_eq!(walk.event_set_aside, 2);
        let after_a_third = walk_free(3, &[], &line);
        assert_eq!(after_a_third.offers, vec![0]);
        assert_eq!(after_a_third.event_set_aside, 0);
    }

    #[test]
    fn a_blocked_head_keeps_its_tickets_from_other_types_of_the_same_pool() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        // A waits for 3 and 2 are free in the event: B behind it gets nothing of them.
        let walk = walk_free(2, &[], &[entry(a, 3), entry(b, 1)]);
        assert!(walk.offers.is_empty());
        assert_eq!(walk.event_set_aside, 2);
        // With 4 free, A's head is offered its 3 and B gets the one left.
        let walk = walk_free(4, &[], &[entry(a, 3), entry(b, 1)]);
        assert_eq!(walk.offers, vec![0, 1]);
    }

    #[test]
    fn set_aside_tickets_are_counted_in_every_quota_of_the_type() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let saturday = quota(2, &[a, b]);
        let sunday = quota(5, &[a]);
        let walk = walk_free(
            10,
            &[saturday.clone(), sunday.clone()],
            &[entry(a, 3), entry(b, 1)],
        );
        assert!(
            walk.offers.is_empty(),
            "B shares Saturday, all of it set aside for A"
        );
        assert_eq!(walk.event_set_aside, 2);
        assert_eq!(walk.quota_set_aside[&saturday.id], 2);
        assert_eq!(walk.quota_set_aside[&sunday.id], 2);
    }

    #[test]
    fn a_head_above_what_the_type_can_ever_have_keeps_its_place_and_blocks_nothing() {
        let t = Uuid::new_v4();
        let line = [entry(t, 5), entry(t, 2)];
        let mut small = quota(3, &[t]);
        small.size = 4;
        // The quota holds 4 at most: the head's 5 can never come back, so it blocks nothing.
        let walked = walk_free(3, &[small.clone()], &line);
        assert!(walked.passed_over.is_empty(), "it keeps waiting");
        assert_eq!(walked.offers, vec![1]);
        assert_eq!(walked.event_set_aside, 0);
        // Over the event's capacity likewise; once the quota has room it is served first.
        let state = LineState {
            event_available: 3,
            event_total: 4,
            quotas: &[],
            off_sale: &HashSet::new(),
            cap: None,
            held: &HashMap::new(),
        };
        assert_eq!(super::walk(state, &line).offers, vec![1]);
        small.size = 5;
        small.available_tickets = 5;
        assert_eq!(walk_free(5, &[small], &line).offers, vec![0]);
    }

    #[test]
    fn a_buyer_the_cap_leaves_no_room_for_is_passed_over_counting_this_walks_offers() {
        let t = Uuid::new_v4();
        let mut line = [entry(t, 2), entry(t, 2), entry(t, 1)];
        line[0].fingerprint_hash = "a".into();
        line[1].fingerprint_hash = "a".into();
        line[2].fingerprint_hash = "b".into();
        let held: HashMap<String, i64> = [("a".to_string(), 1)].into();
        let state = LineState {
            event_available: 10,
            event_total: 100,
            quotas: &[],
            off_sale: &HashSet::new(),
            cap: Some(4),
            held: &held,
        };
        // A holds 1: the first offer of 2 fits (3), the second would make 5.
        let walked = super::walk(state, &line);
        assert_eq!(walked.offers, vec![0, 2]);
        assert_eq!(walked.passed_over, vec![1]);
        // A blocked head over the cap is passed over too, and sets nothing aside.
        let walked = super::walk(
            LineState {
                event_available: 1,
                held: &[("a".to_string(), 3)].into(),
                ..state
            },
            &line,
        );
        assert_eq!(walked.passed_over, vec![0, 1]);
        assert_eq!(walked.offers, vec![2]);
        assert_eq!(walked.event_set_aside, 0);
    }

    #[test]
    fn a_type_off_sale_is_skipped_and_keeps_nothing_from_the_others() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let off: HashSet<Uuid> = [a].into();
        let walked = super::walk(
            LineState {
                event_available: 2,
                event_total: 100,
                quotas: &[],
                off_sale: &off,
                cap: None,
                held: &HashMap::new(),
            },
            &[entry(a, 3), entry(b, 1)],
        );
        assert_eq!(walked.offers, vec![1]);
        assert!(
            walked.passed_over.is_empty(),
            "an off-sale line keeps waiting"
        );
        assert_eq!(walked.event_set_aside, 0);
    }

    #[test]
    fn the_public_sees_nothing_of_a_type_with_a_line_and_less_of_the_pools_it_shares() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let waiting: HashSet<Uuid> = [a].into();
        assert_eq!(public_available(a, 10, 2, &[], &waiting), 0);
        assert_eq!(public_available(b, 10, 2, &[], &waiting), 8);
        let mut shared = quota(3, &[a, b]);
        shared.set_aside_tickets = 2;
        assert_eq!(public_available(b, 10, 2, &[shared], &waiting), 1);
    }

    #[test]
    fn only_the_lifecycle_moves_are_allowed() {
        use EntryStatus::*;
        assert!(Waiting.can_become(Offered));
        assert!(Offered.can_become(Accepted));
        assert!(!Accepted.can_become(Waiting));
        assert!(!Left.can_become(Offered));
        for status in EntryStatus::ALL {
            assert_eq!(status.as_str().parse::<EntryStatus>(), Ok(status));
            assert!(!status.can_become(status));
        }
    }
}
