//! Payment providers. The provider is called outside every database lock: the allocation is
//! committed as `payment_pending` first, so a slow or crashed provider call never blocks
//! other buyers and is always recoverable from the provider's own record.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db;
use crate::db::charges::{ChargeEntry, ChargeRecord, RefundRecord};
use crate::domain::money::Currency;
use crate::purchase::Batching;
use crate::purchase::coalescer::{BatchWork, Coalescer};

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

/// What the provider did with a refund reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The money went back to the card.
    Refunded,
    /// The provider refused: more than the charge has left to give back.
    Refused,
    /// Recovery voided a reference the provider never received: no refund can follow.
    Voided,
}

impl RefundOutcome {
    fn parse(text: &str) -> Result<Self, ProviderError> {
        match text {
            "refunded" => Ok(Self::Refunded),
            "refused" => Ok(Self::Refused),
            "voided" => Ok(Self::Voided),
            other => Err(ProviderError(format!("unknown refund outcome {other:?}"))),
        }
    }
}

/// The provider could not be reached or answered nonsense; the outcome is unknown.
#[derive(Debug, thiserror::Error)]
#[error("payment provider failure: {0}")]
pub struct ProviderError(pub String);

/// A payment provider with idempotent references, as real ones (Stripe, Adyen) offer.
pub trait PaymentProvider: Send + Sync + 'static {
    /// Charges `amount` (minor units of `currency`) under `reference`. Charging the same
    /// reference again returns the first outcome and takes no more money.
    fn charge<'a>(
        &'a self,
        reference: &'a str,
        token: Option<&'a str>,
        amount: i64,
        currency: Currency,
    ) -> BoxFuture<'a, Result<ChargeOutcome, ProviderError>>;

    /// Gives back `amount` (minor units of `currency`) of the charge `charge_reference`,
    /// under the refund's own `reference`: asking again returns the first outcome and gives
    /// back no more. Never gives back more than the charge took, over all its refunds.
    fn refund<'a>(
        &'a self,
        reference: &'a str,
        charge_reference: &'a str,
        amount: i64,
        currency: Currency,
    ) -> BoxFuture<'a, Result<RefundOutcome, ProviderError>>;

    /// Settles a refund reference whose request may or may not have reached the provider:
    /// returns the recorded outcome, or voids the reference so that no later refund under it
    /// can succeed.
    fn resolve_refund<'a>(
        &'a self,
        reference: &'a str,
        charge_reference: &'a str,
        currency: Currency,
    ) -> BoxFuture<'a, Result<RefundOutcome, ProviderError>>;

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

/// A token for which the simulated provider is unreachable once per hold: a charge with it
/// fails without charging until the provider's ledger holds a voided reference of the same
/// hold (recovery voids the failed one), and is charged like `tok_visa` from then on. It
/// depends on the payment only, so every instance, before and after a restart, answers it
/// alike.
pub const TOKEN_UNREACHABLE_ONCE: &str = "tok_unreachableOnce";

/// A token the simulated provider charges like `tok_visa`, and whose charge's refunds find
/// the provider unreachable (nothing is refunded) until recovery has voided one of them:
/// each stays pending until recovery voids it (it then fails); every refund of that charge
/// after the first voided one works.
pub const TOKEN_REFUND_UNREACHABLE_ONCE: &str = "tok_refundUnreachableOnce";

/// A fresh payment reference for paying `allocation`: `pay_<allocation>_<nonce>`. Like a
/// real provider's order id, the allocation part groups every payment attempt of one hold
/// (the simulated provider reads it for `tok_unreachableOnce`); the nonce makes each
/// attempt's reference unique.
pub fn new_reference(allocation: Uuid) -> String {
    attempt_reference(allocation, Uuid::new_v4())
}

/// The reference of the payment of `allocation` made by the keyed attempt `attempt` (its
/// claim's id, unique to the attempt), `pay_<allocation>_<attempt>`: an attempt that takes
/// over the claim of one that died knows that attempt's id, and so its payment's reference.
pub fn attempt_reference(allocation: Uuid, attempt: Uuid) -> String {
    format!("pay_{}_{}", allocation.simple(), attempt.simple())
}

/// The prefix of the references of a refund request for `allocation`,
/// `re_<allocation>_<32 hex>`: derived from the organiser's idempotency key when the request
/// has one, so a retry finds the refund its first attempt began (and resumes it while it is
/// pending); fresh otherwise. Each refund made under it adds a suffix of its own
/// ([`refund_attempt_reference`]), since a failed refund's reference is spent at the
/// provider.
pub fn refund_reference(allocation: Uuid, idempotency_key: Option<&str>) -> String {
    let tail = match idempotency_key {
        Some(key) => {
            let digest = Sha256::digest(key.as_bytes());
            crate::domain::hex::encode(&digest[..16])
        }
        None => Uuid::new_v4().simple().to_string(),
    };
    format!("re_{}_{tail}", allocation.simple())
}

/// A fresh reference for one refund under `prefix` (see [`refund_reference`]).
pub fn refund_attempt_reference(prefix: &str) -> String {
    format!("{prefix}_{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// The prefix every reference of `reference`'s hold shares (`pay_<allocation>_`), if it has
/// the shape [`new_reference`] gives.
fn hold_prefix(reference: &str) -> Option<&str> {
    let rest = reference.strip_prefix("pay_")?;
    let (allocation, _nonce) = rest.split_once('_')?;
    Uuid::try_parse(allocation).ok()?;
    Some(&reference[..4 + allocation.len() + 1])
}

/// The charges of all payments share one queue of the ledger's coalescer: a charge names
/// no event, and its ledger row locks nothing of anyone's event.
const CHARGE_QUEUE: Uuid = Uuid::nil();

/// The built-in provider: no money moves; `tok_visa` (or no token) is charged,
/// `tok_lostAfterCharge`, `tok_unreachableOnce` and `tok_refundUnreachableOnce` behave as
/// their constants say, anything else is declined. Its ledger lives in the
/// `payment_charges` and `payment_refunds` tables.
///
/// It stands in for a remote provider, which costs a payment latency but no commit of this
/// database; so that it does not cost one commit per charge either, the charges that arrive
/// together are recorded in one statement ([`db::charges::record_many`]), batched or not as
/// purchases are. A charge answers only once its row is committed, so an answered charge is
/// on the ledger; if the statement fails, each of its charges fails with an unknown outcome,
/// and recovery settles it from what the ledger holds (voiding a reference it lacks).
#[derive(Clone)]
pub struct SimulatedProvider {
    pool: PgPool,
    ledger: Option<Coalescer<ChargeEntry, Result<String, String>>>,
}

impl SimulatedProvider {
    /// The simulated provider, keeping its ledger in `pool`'s `payment_charges`, recording
    /// charges batched or one by one as `batching` says.
    pub fn new(pool: PgPool, batching: Batching) -> Self {
        let ledger = match batching {
            Batching::Batched { max_batch } => {
                let batch_pool = pool.clone();
                let work: BatchWork<ChargeEntry, Result<String, String>> =
                    Arc::new(move |_, entries| {
                        let pool = batch_pool.clone();
                        Box::pin(async move { record_batch(&pool, entries).await })
                    });
                Some(Coalescer::new(max_batch, work))
            }
            Batching::PerRequest => None,
        };
        Self { pool, ledger }
    }

    /// Records a charge's outcome unless its reference has one, and returns the recorded
    /// one: alone, or in the next batch of charges.
    async fn record_charge(&self, entry: ChargeEntry) -> Result<String, ProviderError> {
        match &self.ledger {
            Some(ledger) => ledger
                .submit(CHARGE_QUEUE, entry)
                .await
                .map_err(|e| ProviderError(e.to_string()))?
                .map_err(ProviderError),
            None => {
                let took = ChargeRecord {
                    amount: entry.amount,
                    currency: entry.currency,
                    token: entry.token.as_deref(),
                };
                db::charges::record_once(&self.pool, &entry.reference, entry.outcome, Some(took))
                    .await
                    .map_err(|e| ProviderError(e.to_string()))
            }
        }
    }

    /// Whether an earlier payment of `reference`'s hold was voided: `tok_unreachableOnce`'s
    /// one failure is spent. Read from the ledger, so it is the same on every instance.
    async fn unreachable_spent(&self, reference: &str) -> Result<bool, ProviderError> {
        let Some(prefix) = hold_prefix(reference) else {
            return Ok(false);
        };
        db::charges::any_voided_with_prefix(&self.pool, prefix)
            .await
            .map_err(|e| ProviderError(e.to_string()))
    }
}

impl PaymentProvider for SimulatedProvider {
    fn charge<'a>(
        &'a self,
        reference: &'a str,
        token: Option<&'a str>,
        amount: i64,
        currency: Currency,
    ) -> BoxFuture<'a, Result<ChargeOutcome, ProviderError>> {
        Box::pin(async move {
            if token == Some(TOKEN_UNREACHABLE_ONCE) && !self.unreachable_spent(reference).await? {
                return Err(ProviderError("simulated: provider unreachable".into()));
            }
            let outcome = match token {
                None
                | Some(
                    TOKEN_SUCCEEDS
                    | TOKEN_LOST_AFTER_CHARGE
                    | TOKEN_UNREACHABLE_ONCE
                    | TOKEN_REFUND_UNREACHABLE_ONCE,
                ) => ChargeOutcome::Charged,
                Some(_) => ChargeOutcome::Declined,
            };
            let entry = ChargeEntry {
                reference: reference.to_owned(),
                outcome: outcome.as_str(),
                amount,
                currency: currency.code(),
                token: token.map(str::to_owned),
            };
            let recorded = self.record_charge(entry).await?;
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
            let recorded = db::charges::record_once(
                &self.pool,
                reference,
                ChargeOutcome::Voided.as_str(),
                None,
            )
            .await
            .map_err(|e| ProviderError(e.to_string()))?;
            ChargeOutcome::parse(&recorded)
        })
    }

    fn refund<'a>(
        &'a self,
        reference: &'a str,
        charge_reference: &'a str,
        amount: i64,
        currency: Currency,
    ) -> BoxFuture<'a, Result<RefundOutcome, ProviderError>> {
        Box::pin(async move {
            let fail = |e: sqlx::Error| ProviderError(e.to_string());
            let token = db::charges::token_of(&self.pool, charge_reference)
                .await
                .map_err(fail)?;
            if token.as_deref() == Some(TOKEN_REFUND_UNREACHABLE_ONCE)
                && !db::charges::any_refund_voided(&self.pool, charge_reference)
                    .await
                    .map_err(fail)?
            {
                return Err(ProviderError("simulated: provider unreachable".into()));
            }
            let refund = RefundRecord {
                reference,
                charge_reference,
                amount,
                currency: currency.code(),
            };
            let recorded = db::charges::refund_once(&self.pool, refund)
                .await
                .map_err(fail)?;
            RefundOutcome::parse(&recorded)
        })
    }

    fn resolve_refund<'a>(
        &'a self,
        reference: &'a str,
        charge_reference: &'a str,
        currency: Currency,
    ) -> BoxFuture<'a, Result<RefundOutcome, ProviderError>> {
        Box::pin(async move {
            let recorded =
                db::charges::void_refund(&self.pool, reference, charge_reference, currency.code())
                    .await
                    .map_err(|e| ProviderError(e.to_string()))?;
            RefundOutcome::parse(&recorded)
        })
    }
}

/// Records a batch of charges in one statement; one answer per entry, in order: the outcome
/// recorded for its reference, or the statement's error (then nothing of it was recorded).
/// A reference asked twice in one batch is recorded once, and both hear the recorded
/// outcome, as a retried reference does.
async fn record_batch(pool: &PgPool, entries: Vec<ChargeEntry>) -> Vec<Result<String, String>> {
    let mut distinct: Vec<ChargeEntry> = Vec::with_capacity(entries.len());
    for entry in &entries {
        if !distinct.iter().any(|d| d.reference == entry.reference) {
            distinct.push(entry.clone());
        }
    }
    match db::charges::record_many(pool, &distinct).await {
        Ok(rows) => {
            let recorded: HashMap<String, String> = rows.into_iter().collect();
            entries
                .iter()
                .map(|entry| {
                    recorded.get(&entry.reference).cloned().ok_or_else(|| {
                        format!("no ledger row returned for charge {}", entry.reference)
                    })
                })
                .collect()
        }
        Err(err) => entries.iter().map(|_| Err(err.to_string())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyed_refund_reference_is_the_same_on_every_retry() {
        let order = Uuid::now_v7();
        let keyed = refund_reference(order, Some("k-1"));
        assert_eq!(keyed, refund_reference(order, Some("k-1")));
        assert_ne!(keyed, refund_reference(order, Some("k-2")));
        assert_ne!(keyed, refund_reference(Uuid::now_v7(), Some("k-1")));
        assert_ne!(refund_reference(order, None), refund_reference(order, None));
        assert!(keyed.starts_with(&format!("re_{}_", order.simple())));
        assert_eq!(keyed.len(), 3 + 32 + 1 + 32);
        let attempt = refund_attempt_reference(&keyed);
        assert!(attempt.starts_with(&format!("{keyed}_")));
        assert_ne!(attempt, refund_attempt_reference(&keyed));
    }

    #[test]
    fn references_of_one_hold_share_its_prefix_and_no_other() {
        let hold = Uuid::now_v7();
        let (first, later) = (new_reference(hold), new_reference(hold));
        assert_ne!(first, later);
        let prefix = format!("pay_{}_", hold.simple());
        assert_eq!(hold_prefix(&first), Some(prefix.as_str()));
        assert_eq!(hold_prefix(&later), Some(prefix.as_str()));
        assert_ne!(
            hold_prefix(&new_reference(Uuid::now_v7())),
            Some(prefix.as_str())
        );
        for foreign in ["pay_blocker", "pay_in_flight", "pay_", "ch_123", ""] {
            assert_eq!(hold_prefix(foreign), None, "{foreign:?}");
        }
    }
}
