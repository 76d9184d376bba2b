//! What every request handler and background job shares.

use std::sync::Arc;

use sqlx::PgPool;

use crate::domain::fingerprint::FingerprintKey;
use crate::http::extract::forwarded::TrustedProxies;
use crate::http::limits::RateLimits;
use crate::live::LiveStats;
use crate::payment::PaymentProvider;
use crate::purchase::Purchaser;

/// Rules of the sale, fixed at start-up from the configuration.
#[derive(Debug, Clone)]
pub struct SaleRules {
    pub max_tickets_per_purchase: i32,
    pub payment_recovery_seconds: u32,
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub rules: Arc<SaleRules>,
    pub fingerprint_key: FingerprintKey,
    pub payments: Arc<dyn PaymentProvider>,
    pub purchaser: Purchaser,
    pub limits: RateLimits,
    /// Proxies whose forwarding headers name the client address (rate limits, fingerprints).
    pub trusted_proxies: TrustedProxies,
    /// When set, creating an event requires this bearer token.
    pub admin_token: Option<Arc<str>>,
    pub live: LiveStats,
}
