//! SQL for `payment_charges`, the ledger of the built-in simulated payment provider.

use sqlx::PgPool;

/// What a charge took: the amount in minor units, its currency and the card token used.
#[derive(Debug, Clone, Copy)]
pub struct ChargeRecord<'a> {
    pub amount: i64,
    pub currency: &'a str,
    pub token: Option<&'a str>,
}

/// Records `outcome` for `reference` (with what it took, for a charge; nothing for a void)
/// unless an outcome is already recorded, and returns the recorded one. This makes a charge
/// idempotent: retrying a reference, or voiding it during crash recovery, can never produce
/// two different outcomes or two amounts.
pub async fn record_once(
    pool: &PgPool,
    reference: &str,
    outcome: &str,
    charge: Option<ChargeRecord<'_>>,
) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO payment_charges (reference, outcome, amount, currency, token) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (reference) DO UPDATE SET outcome = payment_charges.outcome \
         RETURNING outcome",
    )
    .bind(reference)
    .bind(outcome)
    .bind(charge.map(|c| c.amount))
    .bind(charge.map(|c| c.currency))
    .bind(charge.and_then(|c| c.token))
    .fetch_one(pool)
    .await
}

/// One charge's entry for [`record_many`]: its reference, outcome, and what it took.
#[derive(Debug, Clone)]
pub struct ChargeEntry {
    pub reference: String,
    pub outcome: &'static str,
    pub amount: i64,
    pub currency: &'static str,
    pub token: Option<String>,
}

/// [`record_once`] for several charges in one statement, and so one commit: each entry's
/// outcome is recorded unless its reference already has one. Returns `(reference, recorded
/// outcome)` for every distinct reference, in no particular order. The references must be
/// distinct (one `INSERT … ON CONFLICT DO UPDATE` may touch a row only once).
///
/// Takes no lock but the rows it inserts or finds, in reference order: a reference already
/// recorded by a transaction still open (a void, a refund's check of its charge) is waited
/// for, and those wait for nothing this statement holds; two batches sharing references
/// (a retry of a batch's charge beside it) take them in one order, so no cycle can form.
pub async fn record_many(
    pool: &PgPool,
    entries: &[ChargeEntry],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let references: Vec<&str> = entries.iter().map(|e| e.reference.as_str()).collect();
    let outcomes: Vec<&str> = entries.iter().map(|e| e.outcome).collect();
    let amounts: Vec<i64> = entries.iter().map(|e| e.amount).collect();
    let currencies: Vec<&str> = entries.iter().map(|e| e.currency).collect();
    let tokens: Vec<Option<&str>> = entries.iter().map(|e| e.token.as_deref()).collect();
    sqlx::query_as(
        "INSERT INTO payment_charges (reference, outcome, amount, currency, token) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[]) \
             AS entry(reference, outcome, amount, currency, token) \
         ORDER BY entry.reference \
         ON CONFLICT (reference) DO UPDATE SET outcome = payment_charges.outcome \
         RETURNING reference, outcome",
    )
    .bind(references)
    .bind(outcomes)
    .bind(amounts)
    .bind(currencies)
    .bind(tokens)
    .fetch_all(pool)
    .await
}

/// What a refund asks of the ledger: give back `amount` of the charge `charge_reference`,
/// under the refund's own `reference`.
#[derive(Debug, Clone, Copy)]
pub struct RefundRecord<'a> {
    pub reference: &'a str,
    pub charge_reference: &'a str,
    pub amount: i64,
    pub currency: &'a str,
}

/// Records a refund against a charge, once per refund reference, and returns its outcome:
/// `refunded`; or `refused` when the charge is not a charge of at least the amount already
/// refunded plus this one, in this currency (the provider never gives back more than it
/// took); or the outcome already recorded for the reference.
///
/// The charge row is locked first, and everything is judged by a statement after the lock:
/// a second refund of the charge, or a void of this reference ([`void_refund`], which locks
/// the charge row first too), that held the lock has committed its refund row by then. The
/// sum read in the locking statement itself would be from before the wait (the holder
/// inserts a refund row but writes nothing to the charge row, so PostgreSQL does not read it
/// again), and a refund that waited behind another could give back more than was charged.
pub async fn refund_once(pool: &PgPool, refund: RefundRecord<'_>) -> Result<String, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let charge: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM payment_charges WHERE reference = $1 FOR UPDATE")
            .bind(refund.charge_reference)
            .fetch_optional(&mut *tx)
            .await?;
    if charge.is_none() {
        // No charge, so no refund of it can be recorded either (the foreign key).
        tx.rollback().await?;
        return Ok("refused".to_owned());
    }
    let (recorded, room): (Option<String>, bool) = sqlx::query_as(
        "SELECT (SELECT outcome FROM payment_refunds WHERE reference = $4), \
                (c.outcome = 'charged' AND c.currency = $2 \
                 AND c.amount >= $3 + coalesce((SELECT sum(r.amount) FROM payment_refunds r \
                     WHERE r.charge_reference = c.reference AND r.outcome = 'refunded'), 0)) \
                IS TRUE \
         FROM payment_charges c WHERE c.reference = $1",
    )
    .bind(refund.charge_reference)
    .bind(refund.currency)
    .bind(refund.amount)
    .bind(refund.reference)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(outcome) = recorded {
        tx.rollback().await?;
        return Ok(outcome);
    }
    let outcome = if room { "refunded" } else { "refused" };
    sqlx::query(
        "INSERT INTO payment_refunds (reference, charge_reference, amount, currency, outcome) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(refund.reference)
    .bind(refund.charge_reference)
    .bind(refund.amount)
    .bind(refund.currency)
    .bind(outcome)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(outcome.to_owned())
}

/// Voids a refund reference the provider may never have received, unless an outcome is
/// recorded for it, and returns the recorded outcome (`voided` if none was).
///
/// Locks the charge row before it writes the refund row (the `MATERIALIZED` CTE), the order
/// [`refund_once`] takes them in. Inserting first, the foreign key's check of the charge
/// would wait for a [`refund_once`] of the same reference holding the charge, which in turn
/// waits for the uncommitted refund row: a deadlock.
pub async fn void_refund(
    pool: &PgPool,
    reference: &str,
    charge_reference: &str,
    currency: &str,
) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "WITH charge AS MATERIALIZED ( \
             SELECT reference FROM payment_charges WHERE reference = $2 FOR UPDATE) \
         INSERT INTO payment_refunds (reference, charge_reference, amount, currency, outcome) \
         SELECT $1, charge.reference, 0, $3, 'voided' FROM charge \
         ON CONFLICT (reference) DO UPDATE SET outcome = payment_refunds.outcome \
         RETURNING outcome",
    )
    .bind(reference)
    .bind(charge_reference)
    .bind(currency)
    .fetch_optional(pool)
    .await
    .map(|outcome| outcome.unwrap_or_else(|| "voided".to_owned()))
}

/// The card token the charge `reference` was made with, if it is on the ledger.
pub async fn token_of(pool: &PgPool, reference: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT token FROM payment_charges WHERE reference = $1")
        .bind(reference)
        .fetch_optional(pool)
        .await
        .map(Option::flatten)
}

/// Whether a refund of the charge `charge_reference` was voided (the simulated provider's
/// one failure for `tok_refundUnreachableOnce` is spent).
pub async fn any_refund_voided(pool: &PgPool, charge_reference: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM payment_refunds \
         WHERE charge_reference = $1 AND outcome = 'voided')",
    )
    .bind(charge_reference)
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
