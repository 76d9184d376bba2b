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
/// Takes no lock but the rows it inserts or finds: a reference already recorded by a
/// transaction still open (a void, a refund's check of its charge) is waited for, and those
/// wait for nothing this statement holds, so no cycle can form.
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
/// took); or the outcome already recorded for the reference. The charge row is locked while
/// its refunds are summed, so two refunds of one charge are judged one after the other.
pub async fn refund_once(pool: &PgPool, refund: RefundRecord<'_>) -> Result<String, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let recorded: Option<String> =
        sqlx::query_scalar("SELECT outcome FROM payment_refunds WHERE reference = $1")
            .bind(refund.reference)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(outcome) = recorded {
        tx.rollback().await?;
        return Ok(outcome);
    }
    let room: Option<bool> = sqlx::query_scalar(
        "SELECT c.outcome = 'charged' AND c.currency = $2 \
                AND c.amount >= $3 + coalesce((SELECT sum(r.amount) FROM payment_refunds r \
                    WHERE r.charge_reference = c.reference AND r.outcome = 'refunded'), 0) \
         FROM payment_charges c WHERE c.reference = $1 FOR UPDATE",
    )
    .bind(refund.charge_reference)
    .bind(refund.currency)
    .bind(refund.amount)
    .fetch_optional(&mut *tx)
    .await?;
    let outcome = if room == Some(true) {
        "refunded"
    } else {
        "refused"
    };
    if room.is_some() {
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
    }
    tx.commit().await?;
    Ok(outcome.to_owned())
}

/// Voids a refund reference the provider may never have received, unless an outcome is
/// recorded for it, and returns the recorded outcome (`voided` if none was).
pub async fn void_refund(
    pool: &PgPool,
    reference: &str,
    charge_reference: &str,
    currency: &str,
) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO payment_refunds (reference, charge_reference, amount, currency, outcome) \
         SELECT $1, $2, 0, $3, 'voided' WHERE EXISTS \
             (SELECT 1 FROM payment_charges WHERE reference = $2) \
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
