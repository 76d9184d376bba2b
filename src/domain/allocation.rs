//! A stored allocation (a hold) as its holder sees it.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::status::AllocationStatus;

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
