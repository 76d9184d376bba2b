//! Ticket allocations (holds) and their state machine.
//!
//! ```text
//! reserved ──pay──▶ payment_pending ──charged──▶ purchased
//!    ▲  │                 │
//!    │  │                 └──declined──▶ reserved (same expiry)
//!    │  ├──cancel──▶ cancelled
//!    │  └──lapse───▶ expired ◀──lapse (after recovery)── payment_pending
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AllocationStatus {
    Reserved,
    PaymentPending,
    Purchased,
    Cancelled,
    Expired,
}

impl AllocationStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::PaymentPending => "payment_pending",
            Self::Purchased => "purchased",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    /// Whether the allocation still holds tickets out of the pool.
    pub const fn holds_tickets(self) -> bool {
        matches!(
            self,
            Self::Reserved | Self::PaymentPending | Self::Purchased
        )
    }

    /// The transitions the lifecycle allows; every write path checks against this.
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
        )
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
            other => return Err(format!("unknown allocation status {other:?}")),
        })
    }
}

/// A number of tickets one request may ask for: 1 to the configured maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i32);

impl Quantity {
    pub fn parse(value: Option<i64>, max: i32) -> Result<Self, String> {
        match value {
            None => Err("is required".into()),
            Some(n) if n >= 1 && n <= i64::from(max) => Ok(Self(n as i32)),
            Some(_) => Err(format!("must be between 1 and {max}")),
        }
    }

    pub const fn get(self) -> i32 {
        self.0
    }
}

/// A stored allocation as its holder sees it. The fingerprint hash is never serialized.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub id: Uuid,
    pub event_id: Uuid,
    pub quantity: i32,
    pub status: AllocationStatus,
    #[serde(skip)]
    pub fingerprint_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(nullable = false)]
    pub payment_pending_at: Option<OffsetDateTime>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(nullable = false)]
    pub purchased_at: Option<OffsetDateTime>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(nullable = false)]
    pub cancelled_at: Option<OffsetDateTime>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(nullable = false)]
    pub expired_at: Option<OffsetDateTime>,
    /// Present once purchased: the code the buyer shows at the door.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "BX-7K3M-Q9TZ")]
    pub confirmation_code: Option<String>,
    #[serde(skip)]
    pub payment_reference: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Allocation {
    /// A reserved hold whose time is up, whether or not the sweeper has marked it yet.
    pub fn has_lapsed(&self, now: OffsetDateTime) -> bool {
        self.status == AllocationStatus::Reserved && self.expires_at <= now
    }
}

/// A short code a person can read out: `BX-` and two groups of four characters from an
/// alphabet without look-alikes (no 0/O, 1/I/L).
pub fn confirmation_code(random: [u8; 8]) -> String {
    const ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ-";
    let mut code = String::from("BX-");
    for (i, byte) in random.iter().enumerate() {
        if i == 4 {
            code.push('-');
        }
        // 31 usable symbols: the last alphabet entry is the separator.
        code.push(ALPHABET[usize::from(*byte) % 31] as char);
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_text() {
        for status in [
            AllocationStatus::Reserved,
            AllocationStatus::PaymentPending,
            AllocationStatus::Purchased,
            AllocationStatus::Cancelled,
            AllocationStatus::Expired,
        ] {
            assert_eq!(status.as_str().parse::<AllocationStatus>(), Ok(status));
        }
        assert!("sold".parse::<AllocationStatus>().is_err());
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
    fn quantity_bounds() {
        assert_eq!(Quantity::parse(Some(1), 10).map(Quantity::get), Ok(1));
        assert_eq!(Quantity::parse(Some(10), 10).map(Quantity::get), Ok(10));
        assert!(Quantity::parse(Some(0), 10).is_err());
        assert!(Quantity::parse(Some(11), 10).is_err());
        assert!(Quantity::parse(None, 10).is_err());
    }

    #[test]
    fn confirmation_codes_are_readable() {
        let code = confirmation_code([0, 1, 2, 3, 250, 251, 252, 255]);
        assert_eq!(code.len(), 12);
        assert!(code.starts_with("BX-"));
        assert_eq!(code.as_bytes()[7], b'-');
        assert!(!code[3..].contains(['0', 'O', '1', 'I', 'L']));
    }
}
