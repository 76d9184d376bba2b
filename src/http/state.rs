//! What every request handler shares. Background jobs get their own, smaller sets of
//! dependencies (see `sweeper::Sweeper`), so they do not depend on the HTTP layer.

use std::sync::Arc;

use sqlx::PgPool;

use crate::admission::checkin::Checkins;
use crate::admission::keys::AdmissionKeys;
use crate::domain::fingerprint::FingerprintKey;
use crate::domain::money::Currency;
use crate::holds::Settler;
use crate::http::extract::forwarded::TrustedProxies;
use crate::http::idempotent::KeyedTasks;
use crate::http::limits::RateLimits;
use crate::live::LiveStats;
use crate::payment::PaymentProvider;
use crate::purchase::Purchaser;
use crate::reads::EventReads;
use crate::sweeper::Sweeper;
use crate::tokens::TokenLookups;

/// Rules of the sale, fixed at start-up from the configuration.
#[derive(Debug, Clone)]
pub struct SaleRules {
    /// Most tickets one purchase request may ask for (`--max-tickets-per-purchase`).
    pub max_tickets_per_purchase: i32,
    /// Currency of events created without one (`--default-currency`).
    pub default_currency: Currency,
    /// How long a hold offered to a waiting-list entry lasts (`--waiting-list-offer-seconds`).
    pub waiting_list_offer_seconds: u32,
    /// Age after which an unsettled idempotency claim is taken over as abandoned: the request
    /// timeout plus a margin (`idempotency::stale_claim_age`).
    pub stale_claim_age: std::time::Duration,
}

/// What every request handler shares, behind one `Arc`: every request clones the state
/// (each extractor of `State`, each middleware that takes it), and cloning the fields one by
/// one cost a few dozen atomic increments and as many decrements per request. Reads go
/// through to [`Shared`]'s fields (`state.pool`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state handlers share.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`]: cheap to clone one by one too (pools, `Arc`s and handles).
pub struct Shared {
    /// The database pool every handler and service runs its statements on.
    pub pool: PgPool,
    /// The sale's rules from the configuration.
    pub rules: Arc<SaleRules>,
    /// The secret buyer fingerprints are hashed under.
    pub fingerprint_key: FingerprintKey,
    /// Signs ticket codes and verifies scanned ones.
    pub admission_keys: Arc<AdmissionKeys>,
    /// Checks in single scans (`POST /events/{id}/checkins`), batched per event like
    /// purchases.
    pub checkins: Checkins,
    /// Charges payments (the simulated provider unless a test swaps it).
    pub payments: Arc<dyn PaymentProvider>,
    /// Makes holds: the purchase path.
    pub purchaser: Purchaser,
    /// Settles payments (their last step), batched per event like purchases.
    pub settler: Settler,
    /// The expiry sweeper's dependencies, so a test can run a sweep round against this app.
    pub sweeper: Sweeper,
    /// Per-buyer and per-address request budgets on the buying endpoints.
    pub limits: RateLimits,
    /// Proxies whose forwarding headers name the client address (rate limits, fingerprints).
    pub trusted_proxies: TrustedProxies,
    /// When set, the organiser routes require this bearer token or a live organiser token.
    pub admin_token: Option<Arc<str>>,
    /// Reads of one event, coalesced (`GET /events/{id}`).
    pub reads: EventReads,
    /// Recognises scoped API tokens, one database read per token for concurrent requests.
    pub tokens: TokenLookups,
    /// The live statistics hub the event streams subscribe to.
    pub live: LiveStats,
    /// The keyed requests' tasks, which outlive their requests: shutdown waits for them.
    pub keyed_tasks: KeyedTasks,
}
