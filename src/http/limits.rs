//! Abuse limits on the buying endpoints: per buyer fingerprint and per client address, as
//! token buckets (GCRA) that refill at the configured rate and allow bursts of three times it.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::error::{ApiError, ApiResult};
use crate::domain::fingerprint::FingerprintHash;

/// Entries kept before idle keys are dropped.
const PRUNE_ABOVE: usize = 100_000;

/// The two limiters, shared by every request (each is an `Arc`); `None` is a limit turned
/// off. `Default` turns both off.
#[derive(Clone, Default)]
pub struct RateLimits {
    per_fingerprint: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    per_address: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(
    per_second: u32,
) -> Option<Arc<DefaultKeyedRateLimiter<K>>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(3)).unwrap_or(rate);
    Some(Arc::new(governor::RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    )))
}

impl RateLimits {
    /// `0` turns a limit off.
    pub fn new(per_fingerprint: u32, per_address: u32) -> Self {
        Self {
            per_fingerprint: limiter(per_fingerprint),
            per_address: limiter(per_address),
        }
    }

    /// Takes one request from both buckets, or answers 429 with when to retry.
    pub fn check(&self, buyer: &FingerprintHash, address: Option<IpAddr>) -> ApiResult<()> {
        if let (Some(limiter), Some(address)) = (&self.per_address, address) {
            admit(limiter, &address)?;
        }
        if let Some(limiter) = &self.per_fingerprint {
            admit(limiter, &buyer.as_str().to_owned())?;
        }
        Ok(())
    }
}

fn admit<K: std::hash::Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> ApiResult<()> {
    if limiter.len() > PRUNE_ABOVE {
        limiter.retain_recent();
    }
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::RateLimited {
            retry_after_seconds: wait.as_secs() + 1,
        }
    })
}
