//! A stored allocation (a hold) as its holder sees it.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::admission::Admission;
use super::catalogue::AllocationLine;
use super::money::Currency;
use super::status::AllocationStatus;

/// A stored allocation as its holder sees it. The fingerprint hash is never serialized.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub id: Uuid,
    pub event_id: Uuid,
    /// Tickets over all lines.
    pub quantity: i32,
    pub status: AllocationStatus,
    /// One line per ticket type, at the price each had when the order was made.
    pub lines: Vec<AllocationLine>,
    /// Sum of the lines' amounts, in the currency's minor unit: what the payment charges.
    pub total: i64,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    /// Money given back so far, in minor units.
    pub refunded_amount: i64,
    /// Tickets given back so far (the sum of the lines' `refundedQuantity`).
    #[serde(skip)]
    pub refunded_quantity: i32,
    /// The order's refunds, oldest first.
    pub refunds: Vec<Refund>,
    /// One admission per ticket, in ticket order, once the order is purchased (a refund
    /// revokes some and keeps them listed); empty before. Filled by the services, which sign
    /// the codes: the allocation's own reads leave it empty.
    pub admissions: Vec<Admission>,
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
    /// Present once refunded in full.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(nullable = false)]
    pub refunded_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Allocation {
    /// Whether the allocation has admissions: it was purchased (and may since have been
    /// refunded, its admissions then revoked).
    pub fn has_admissions(&self) -> bool {
        matches!(
            self.status,
            AllocationStatus::Purchased | AllocationStatus::Refunded
        )
    }

    /// Tickets of each type the allocation holds now (each line less what was refunded of
    /// it), as the counts of the event and its quotas carry them.
    pub fn tickets_by_type(&self) -> Vec<(Uuid, i32)> {
        self.lines
            .iter()
            .filter(|line| line.quantity > line.refunded_quantity)
            .map(|line| (line.ticket_type_id, line.quantity - line.refunded_quantity))
            .collect()
    }
}

/// A payment that step one has begun: its hold `payment_pending` under `reference` since
/// `began`, for `total` minor units of `currency`. All that the provider's call and the
/// settle after it need of the hold, so the first step returns no lines, refunds or
/// admissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPayment {
    /// The hold's id.
    pub id: Uuid,
    /// Its event: the settle runs in that event's batch.
    pub event_id: Uuid,
    /// What the provider is asked to charge, in minor units of `currency`.
    pub total: i64,
    /// The order's currency, the event's.
    pub currency: Currency,
    /// The reference the payment waits under.
    pub reference: String,
    /// When the hold became `payment_pending`: recovery settles it by this time plus the
    /// recovery window.
    pub began: OffsetDateTime,
}

impl PendingPayment {
    /// The payment `allocation` waits for, if it is `payment_pending`.
    pub fn of(allocation: &Allocation) -> Option<Self> {
        if allocation.status != AllocationStatus::PaymentPending {
            return None;
        }
        Some(Self {
            id: allocation.id,
            event_id: allocation.event_id,
            total: allocation.total,
            currency: allocation.currency,
            reference: allocation.payment_reference.clone()?,
            began: allocation.payment_pending_at?,
        })
    }
}

/// Where a refund is: asked of the provider (`pending`), done (`completed`, its tickets back
/// in the pools) or refused by the provider (`failed`, nothing returned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Completed,
    Failed,
}

/// A refund of some of an order's tickets, as the holder and the organiser see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Refund {
    pub id: Uuid,
    pub status: RefundStatus,
    /// Money given back, in minor units.
    pub amount: i64,
    pub lines: Vec<RefundLine>,
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The tickets of one type a refund gives back, and their money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundLine {
    pub ticket_type_id: Uuid,
    pub quantity: i32,
    /// `quantity × unit price` of the order's line, in minor units.
    pub amount: i64,
}
