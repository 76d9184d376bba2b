//! The state machine of a hold (an allocation): its statuses and the moves between them.
//!
//! ```text
//! reserved ──pay──▶ payment_pending ──charged──▶ purchased
//!    ▲  │                 │
//!    │  │                 └──declined──▶ reserved (same expiry)
//!    │  ├──cancel──▶ cancelled
//!    │  └──lapse───▶ expired ◀──lapse (after recovery)── payment_pending
//!
//! purchased ──refund of every ticket left──▶ refunded
//! ```
//!
//! A partial refund leaves a purchase `purchased`; the last ticket refunded makes it
//! `refunded`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a hold is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AllocationStatus {
    Reserved,
    PaymentPending,
    Purchased,
    Cancelled,
    Expired,
    Refunded,
}

impl AllocationStatus {
    /// The status as stored and as the API spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::PaymentPending => "payment_pending",
            Self::Purchased => "purchased",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Refunded => "refunded",
        }
    }

    /// Every status, in lifecycle order.
    pub const ALL: [Self; 6] = [
        Self::Reserved,
        Self::PaymentPending,
        Self::Purchased,
        Self::Cancelled,
        Self::Expired,
        Self::Refunded,
    ];

    /// The transitions the lifecycle allows: the one rule. `holds::apply` refuses any other
    /// move before writing, every SQL that changes a status matches only the predecessors
    /// this allows (see [`Self::predecessors`]), and the trigger
    /// `ticket_allocations_status_transition` holds the database to the same table.
    pub const fn can_become(self, next: Self) -> bool {
        use AllocationStatus::*;
        matches!(
            (self, next),
            (Reserved, PaymentPending)
                | (Reserved, Cancelled)
                | (Reserved, Expired)
                | (PaymentPending, Purchased)
                | (PaymentPending, Reserved)
                | (PaymentPending, Expired)
                | (Purchased, Refunded)
        )
    }

    /// The statuses that may become `next`, as stored: the `WHERE status = ANY(…)` of the
    /// statement that makes the change.
    pub fn predecessors(next: Self) -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .filter(|from| from.can_become(next))
            .map(Self::as_str)
            .collect()
    }
}

impl fmt::Display for AllocationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AllocationStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "reserved" => Self::Reserved,
            "payment_pending" => Self::PaymentPending,
            "purchased" => Self::Purchased,
            "cancelled" => Self::Cancelled,
            "expired" => Self::Expired,
            "refunded" => Self::Refunded,
            other => return Err(format!("unknown allocation status {other:?}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_text() {
        for status in AllocationStatus::ALL {
            assert_eq!(status.as_str().parse::<AllocationStatus>(), Ok(status));
        }
        assert!("sold".parse::<AllocationStatus>().is_err());
    }

    /// Every pair of statuses, against the diagram at the top of this file. cargo-mutants
    /// does not mutate inside `matches!`, so a lost or added arm of `can_become` is caught
    /// here or nowhere.
    #[test]
    fn the_allowed_moves_are_exactly_the_diagrams() {
        use AllocationStatus::*;
        let all = [
            Reserved,
            PaymentPending,
            Purchased,
            Cancelled,
            Expired,
            Refunded,
        ];
        let diagram = [
            (Reserved, PaymentPending),
            (Reserved, Cancelled),
            (Reserved, Expired),
            (PaymentPending, Purchased),
            (PaymentPending, Reserved),
            (PaymentPending, Expired),
            (Purchased, Refunded),
        ];
        for from in all {
            for to in all {
                assert_eq!(
                    from.can_become(to),
                    diagram.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    /// Logs and error messages print a status through `Display`: the stored spelling.
    #[test]
    fn status_displays_as_stored() {
        assert_eq!(
            AllocationStatus::PaymentPending.to_string(),
            "payment_pending"
        );
        assert_eq!(format!("{}", AllocationStatus::Expired), "expired");
    }

    #[test]
    fn only_lifecycle_transitions_are_allowed() {
        use AllocationStatus::*;
        assert!(Reserved.can_become(PaymentPending));
        assert!(PaymentPending.can_become(Reserved));
        assert!(PaymentPending.can_become(Purchased));
        assert!(!Reserved.can_become(Purchased));
        assert!(!Purchased.can_become(Cancelled));
        assert!(!Cancelled.can_become(Reserved));
        assert!(!Expired.can_become(Reserved));
        assert!(!PaymentPending.can_become(Cancelled));
    }

    #[test]
    fn predecessors_are_read_from_the_rule() {
        use AllocationStatus::*;
        assert_eq!(
            AllocationStatus::predecessors(Expired),
            ["reserved", "payment_pending"]
        );
        assert_eq!(AllocationStatus::predecessors(Cancelled), ["reserved"]);
        assert_eq!(
            AllocationStatus::predecessors(Purchased),
            ["payment_pending"]
        );
        assert_eq!(
            AllocationStatus::predecessors(Reserved),
            ["payment_pending"]
        );
        assert_eq!(AllocationStatus::predecessors(PaymentPending), ["reserved"]);
        assert_eq!(AllocationStatus::predecessors(Refunded), ["purchased"]);
    }
}
