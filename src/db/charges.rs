//! SQL for `payment_charges`, the ledger of the built-in simulated payment provider.

use sqlx::PgPool;

/// Records `outcome` for `reference` unless an outcome is already recorded, and returns
/// the recorded one. This makes a charge idempotent: retrying a reference, or voiding it
/// during crash recovery, can never produce two different outcomes.
pub async fn record_once(
    pool: &PgPool,
    reference: &str,
    outcome: &str,
) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO payment_charges (reference, outcome) VALUES ($1, $2) \
         ON CONFLICT (reference) DO UPDATE SET outcome = payment_charges.outcome \
         RETURNING outcome",
    )
    .bind(reference)
    .bind(outcome)
    .fetch_one(pool)
    .await
}

/// Whether a reference starting with `prefix` was voided. The simulated provider asks this
/// with a hold's reference prefix (`pay_<allocation>_`) to tell that hold's first payment
/// from a later one; only `tok_unreachableOnce` asks, so a scan of the ledger is fine.
pub async fn any_voided_with_prefix(pool: &PgPool, prefix: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM payment_charges \
         WHERE outcome = 'voided' AND starts_with(reference, $1))",
    )
    .bind(prefix)
    .fetch_one(pool)
    .await
}
