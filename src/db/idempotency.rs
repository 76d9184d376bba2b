//! SQL for `idempotency_keys`.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::idempotency::KeyRef;

/// What a lookup found.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredKey {
    pub request_hash: String,
    pub completed: bool,
    pub response_status: Option<i32>,
    pub response_body: Option<String>,
    /// Seconds since the current claim was made.
    pub claim_age_seconds: f64,
    /// Whether the key is older than its 24-hour lifetime.
    pub expired: bool,
    /// The allocation whose payment a parked claim waits for (see [`park`]).
    pub awaiting_allocation: Option<Uuid>,
    /// That payment's reference.
    pub awaiting_reference: Option<String>,
}

/// Claims a new key for a first attempt; false when the key exists already.
pub async fn claim(pool: &PgPool, key: &KeyRef, request_hash: &str) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (fingerprint_hash, key, request_hash) VALUES ($1, $2, $3) \
         ON CONFLICT (fingerprint_hash, key) DO NOTHING",
    )
    .bind(&key.fingerprint_hash)
    .bind(&key.key)
    .bind(request_hash)
    .execute(pool)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn find(pool: &PgPool, key: &KeyRef) -> Result<Option<StoredKey>, sqlx::Error> {
    sqlx::query_as(
        "SELECT request_hash, state = 'completed' AS completed, response_status, response_body, \
                extract(epoch FROM clock_timestamp() - claimed_at)::float8 AS claim_age_seconds, \
                created_at < clock_timestamp() - interval '24 hours' AS expired, \
                awaiting_allocation, awaiting_reference \
         FROM idempotency_keys WHERE fingerprint_hash = $1 AND key = $2",
    )
    .bind(&key.fingerprint_hash)
    .bind(&key.key)
    .fetch_optional(pool)
    .await
}

/// Takes over a stale in-progress claim (or restarts an expired key) for a new attempt;
/// false if another attempt took it first. A parked claim is never stale: its payment may
/// have been charged, and only the allocation's settled state can free it.
pub async fn reclaim(
    pool: &PgPool,
    key: &KeyRef,
    request_hash: &str,
    stale_seconds: f64,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE idempotency_keys SET \
            request_hash = $3, state = 'in_progress', response_status = NULL, response_body = NULL, \
            completed_at = NULL, claimed_at = clock_timestamp(), \
            awaiting_allocation = NULL, awaiting_reference = NULL, \
            created_at = CASE WHEN created_at < clock_timestamp() - interval '24 hours' \
                              THEN clock_timestamp() ELSE created_at END \
         WHERE fingerprint_hash = $1 AND key = $2 \
           AND ((state = 'in_progress' AND awaiting_allocation IS NULL \
                 AND claimed_at <= clock_timestamp() - make_interval(secs => $4)) \
                OR created_at < clock_timestamp() - interval '24 hours')",
    )
    .bind(&key.fingerprint_hash)
    .bind(&key.key)
    .bind(request_hash)
    .bind(stale_seconds)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Records the responses of the attempts holding these claims, in one statement. Runs on
/// whatever connection the effect's transaction uses, so a response is stored if and only if
/// its effect commits.
pub async fn complete(
    conn: &mut PgConnection,
    keys: &[(&KeyRef, u16, &str)],
) -> Result<(), sqlx::Error> {
    let fingerprints: Vec<&str> = keys
        .iter()
        .map(|(k, _, _)| k.fingerprint_hash.as_str())
        .collect();
    let names: Vec<&str> = keys.iter().map(|(k, _, _)| k.key.as_str()).collect();
    let statuses: Vec<i32> = keys.iter().map(|(_, s, _)| i32::from(*s)).collect();
    let bodies: Vec<&str> = keys.iter().map(|(_, _, b)| *b).collect();
    sqlx::query(
        "UPDATE idempotency_keys k SET state = 'completed', response_status = r.status, \
                response_body = r.body, completed_at = clock_timestamp(), \
                awaiting_allocation = NULL, awaiting_reference = NULL \
         FROM unnest($1::text[], $2::text[], $3::int[], $4::text[]) AS r(fingerprint_hash, key, status, body) \
         WHERE k.fingerprint_hash = r.fingerprint_hash AND k.key = r.key AND k.state = 'in_progress'",
    )
    .bind(&fingerprints)
    .bind(&names)
    .bind(&statuses)
    .bind(&bodies)
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives a claim up after a failure with no effect, so a retry runs again. A parked claim
/// is not a failure with no effect: it stays (see [`unpark`]).
pub async fn release(pool: &PgPool, key: &KeyRef) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE fingerprint_hash = $1 AND key = $2 \
         AND state = 'in_progress' AND awaiting_allocation IS NULL",
    )
    .bind(&key.fingerprint_hash)
    .bind(&key.key)
    .execute(pool)
    .await?;
    Ok(())
}

/// Parks an in-progress claim on the payment `reference` of `allocation`, whose outcome is
/// unknown: the claim is neither released nor taken over until that payment is settled.
pub async fn park(
    pool: &PgPool,
    key: &KeyRef,
    allocation: Uuid,
    reference: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET awaiting_allocation = $3, awaiting_reference = $4 \
         WHERE fingerprint_hash = $1 AND key = $2 AND state = 'in_progress'",
    )
    .bind(&key.fingerprint_hash)
    .bind(&key.key)
    .bind(allocation)
    .bind(reference)
    .execute(pool)
    .await?;
    Ok(())
}

/// Turns a claim parked on `reference` back into a fresh claim of the calling attempt, once
/// that payment is known not to have been charged; false if another attempt did it first.
pub async fn unpark(pool: &PgPool, key: &KeyRef, reference: &str) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE idempotency_keys SET awaiting_allocation = NULL, awaiting_reference = NULL, \
                claimed_at = clock_timestamp() \
         WHERE fingerprint_hash = $1 AND key = $2 AND state = 'in_progress' \
           AND awaiting_reference = $3",
    )
    .bind(&key.fingerprint_hash)
    .bind(&key.key)
    .bind(reference)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Deletes up to `limit` keys older than 24 hours; returns how many.
pub async fn purge_expired(pool: &PgPool, limit: i64) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query(
        "DELETE FROM idempotency_keys WHERE (fingerprint_hash, key) IN ( \
             SELECT fingerprint_hash, key FROM idempotency_keys \
             WHERE created_at < now() - interval '24 hours' LIMIT $1)",
    )
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}
