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
