//! Payment providers. The provider is called outside every database lock: the allocation is
//! committed as `payment_pending` first, so a slow or crashed provider call never blocks
//! other buyers and is always recoverable from the provider's own record.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::PgPool;

use crate::db;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the provider did with a payment reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Money was taken: the allocation must become `purchased`.
    Charged,
    /// The card was refused.
    Declined,
    /// Recovery voided a reference that was never charged: no charge can follow.
    Voided,
}

impl ChargeOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Charged => "charged",
            Self::Declined => "declined",
            Self::Voided => "voided",
        }
    }

    fn parse(text: &str) -> Result<Self, ProviderError> {
        match text {
            "charged" => Ok(Self::Charged),
            "declined" => Ok(Self::Declined),
            "voided" => Ok(Self::Voided),
            other => Err(ProviderError(format!("unknown charge outcome {other:?}"))),
        }
    }
}

/// The provider could not be reached or answered nonsense; the outcome is unknown.
#[derive(Debug, thiserror::Error)]
#[error("payment provider failure: {0}")]
pub struct ProviderError(pub String);

/// A payment provider with idempotent references, as real ones (Stripe, Adyen) offer.
pub trait PaymentProvider: Send + Sync + 'static {
    /// Charges `quantity` tickets under `reference`. Charging the same reference again
    /// returns the first outcome and takes no more money.
    fn charge<'a>(
        &'a self,
        reference: &'a str,
        token: Option<&'a str>,
        quantity: i32,
    ) -> BoxFuture<'a, Result<ChargeOutcome, ProviderError>>;

    /// Settles a reference whose charge request may or may not have happened: returns the
    /// recorded outcome, or voids the reference so that no later charge can succeed.
    fn resolve<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<ChargeOutcome, ProviderError>>;
}

/// The test-card token the simulated provider charges, named as Stripe's is; any other token
/// (clients use `tok_chargeDeclined`) is declined, except the two below.
pub const TOKEN_SUCCEEDS: &str = "tok_visa";

/// A token the simulated provider charges and then fails to answer for, every time: the
/// caller sees a provider failure, though the charge is on the ledger. Recovery settles the
/// payment as charged.
pub const TOKEN_LOST_AFTER_CHARGE: &str = "tok_lostAfterCharge";

/// A token for which the simulated provider is unreachable once: the first charge with it
/// that a running instance sees fails without charging (recovery voids the reference);
/// every later one is charged like `tok_visa`.
pub const TOKEN_UNREACHABLE_ONCE: &str = "tok_unreachableOnce";

/// The built-in provider: no money moves; `tok_visa` (or no token) is charged,
/// `tok_lostAfterCharge` and `tok_unreachableOnce` fail as their constants say, anything
/// else is declined. Its ledger lives in the `payment_charges` table.
#[derive(Debug, Clone)]
pub struct SimulatedProvider {
    pool: PgPool,
    /// Whether `tok_unreachableOnce` has had its one failure in this instance.
    unreachable_spent: Arc<AtomicBool>,
}

impl SimulatedProvider {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            unreachable_spent: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl PaymentProvider for SimulatedProvider {
    fn charge<'a>(
        &'a self,
        reference: &'a str,
        token: Option<&'a str>,
        _quantity: i32,
    ) -> BoxFuture<'a, Result<ChargeOutcome, ProviderError>> {
        Box::pin(async move {
            if token == Some(TOKEN_UNREACHABLE_ONCE)
                && !self.unreachable_spent.swap(true, Ordering::SeqCst)
            {
                return Err(ProviderError("simulated: provider unreachable".into()));
            }
            let outcome = match token {
                None | Some(TOKEN_SUCCEEDS | TOKEN_LOST_AFTER_CHARGE | TOKEN_UNREACHABLE_ONCE) => {
                    ChargeOutcome::Charged
                }
                Some(_) => ChargeOutcome::Declined,
            };
            let recorded = db::charges::record_once(&self.pool, reference, outcome.as_str())
                .await
                .map_err(|e| ProviderError(e.to_string()))?;
            if token == Some(TOKEN_LOST_AFTER_CHARGE) {
                return Err(ProviderError(
                    "simulated: connection lost after the charge".into(),
                ));
            }
            ChargeOutcome::parse(&recorded)
        })
    }

    fn resolve<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<ChargeOutcome, ProviderError>> {
        Box::pin(async move {
            let recorded =
                db::charges::record_once(&self.pool, reference, ChargeOutcome::Voided.as_str())
                    .await
                    .map_err(|e| ProviderError(e.to_string()))?;
            ChargeOutcome::parse(&recorded)
        })
    }
}
