//! SQL for `idempotency_keys`.

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::idempotency::{Claim, KeyRef};

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
    /// The attempt holding the claim (see [`Claim`]).
    pub attempt: Uuid,
}

/// Claims a new key for a first attempt; false when the key exists already.
pub async fn claim(pool: &PgPool, claim: &Claim, request_hash: &str) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (fingerprint_hash, key, request_hash, attempt) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (fingerprint_hash, key) DO NOTHING",
    )
    .bind(&claim.key.fingerprint_hash)
    .bind(&claim.key.key)
    .bind(request_hash)
    .bind(claim.attempt)
    .execute(pool)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn find(pool: &PgPool, key: &KeyRef) -> Result<Option<StoredKey>, sqlx::Error> {
    sqlx::query_as(
        "SELECT request_hash, state = 'completed' AS completed, response_status, response_body, \
                extract(epoch FROM clock_timestamp() - claimed_at)::float8 AS claim_age_seconds, \
                created_at < clock_timestamp() - interval '24 hours' AS expired, \
                awaiting_allocation, awaiting_reference, attempt \
         FROM idempotency_keys WHERE fingerprint_hash = $1 AND key = $2",
    )
    .bind(&key.fingerprint_hash)
    .bind(&key.key)
    .fetch_optional(pool)
    .await
}

/// When `key`'s present life began (its first claim, or the claim that restarted it after
/// its 24 hours), on the database clock; `None` when it has no row.
pub async fn lifetime_start(
    conn: &mut PgConnection,
    key: &KeyRef,
) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT created_at FROM idempotency_keys WHERE fingerprint_hash = $1 AND key = $2",
    )
    .bind(&key.fingerprint_hash)
    .bind(&key.key)
    .fetch_optional(conn)
    .await
}

/// Takes over a stale in-progress claim (or restarts an expired key) for the attempt of
/// `claim`; false if another attempt took it first. A parked claim is never stale: its
/// payment may have been charged, and only the allocation's settled state can free it.
pub async fn reclaim(
    pool: &PgPool,
    claim: &Claim,
    request_hash: &str,
    stale_seconds: f64,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE idempotency_keys SET \
            request_hash = $3, state = 'in_progress', response_status = NULL, response_body = NULL, \
            completed_at = NULL, claimed_at = clock_timestamp(), attempt = $5, \
            awaiting_allocation = NULL, awaiting_reference = NULL, \
            created_at = CASE WHEN created_at < clock_timestamp() - interval '24 hours' \
                              THEN clock_timestamp() ELSE created_at END \
         WHERE fingerprint_hash = $1 AND key = $2 \
           AND ((state = 'in_progress' AND awaiting_allocation IS NULL \
                 AND claimed_at <= clock_timestamp() - make_interval(secs => $4)) \
                OR created_at < clock_timestamp() - interval '24 hours')",
    )
    .bind(&claim.key.fingerprint_hash)
    .bind(&claim.key.key)
    .bind(request_hash)
    .bind(stale_seconds)
    .bind(claim.attempt)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Locks the rows of those `claims` still held, in progress, by their attempt, and returns
/// their indexes in `claims`; a claim taken over by another attempt (or settled) is left out.
/// Runs in the effect's transaction, before the effect is written: a locked claim cannot be
/// taken over until that transaction ends, so its [`complete`] then records it. Rows are
/// locked in key order, so two transactions locking several never wait on each other in a
/// cycle.
pub async fn lock_held(
    conn: &mut PgConnection,
    claims: &[&Claim],
) -> Result<Vec<usize>, sqlx::Error> {
    let (fingerprints, names, attempts) = columns(claims);
    let held: Vec<i64> = sqlx::query_scalar(
        "SELECT r.ord FROM idempotency_keys k \
         JOIN unnest($1::text[], $2::text[], $3::uuid[]) WITH ORDINALITY \
              AS r(fingerprint_hash, key, attempt, ord) \
           ON k.fingerprint_hash = r.fingerprint_hash AND k.key = r.key AND k.attempt = r.attempt \
         WHERE k.state = 'in_progress' \
         ORDER BY k.fingerprint_hash, k.key FOR UPDATE OF k",
    )
    .bind(&fingerprints)
    .bind(&names)
    .bind(&attempts)
    .fetch_all(conn)
    .await?;
    let mut held: Vec<usize> = held
        .into_iter()
        .filter_map(|ord| usize::try_from(ord - 1).ok())
        .collect();
    held.sort_unstable();
    Ok(held)
}

/// Records the responses of the attempts holding these claims, in one statement, and returns
/// how many were recorded: a claim no longer held by its attempt (taken over, or settled
/// already) is not. Runs on whatever connection the effect's transaction uses, so a response
/// is stored if and only if its effect commits.
pub async fn complete(
    conn: &mut PgConnection,
    responses: &[(&Claim, u16, &str)],
) -> Result<u64, sqlx::Error> {
    let claims: Vec<&Claim> = responses.iter().map(|(c, _, _)| *c).collect();
    let (fingerprints, names, attempts) = columns(&claims);
    let statuses: Vec<i32> = responses.iter().map(|(_, s, _)| i32::from(*s)).collect();
    let bodies: Vec<&str> = responses.iter().map(|(_, _, b)| *b).collect();
    let updated = sqlx::query(
        "UPDATE idempotency_keys k SET state = 'completed', response_status = r.status, \
                response_body = r.body, completed_at = clock_timestamp(), \
                awaiting_allocation = NULL, awaiting_reference = NULL \
         FROM unnest($1::text[], $2::text[], $3::uuid[], $4::int[], $5::text[]) \
              AS r(fingerprint_hash, key, attempt, status, body) \
         WHERE k.fingerprint_hash = r.fingerprint_hash AND k.key = r.key \
           AND k.attempt = r.attempt AND k.state = 'in_progress'",
    )
    .bind(&fingerprints)
    .bind(&names)
    .bind(&attempts)
    .bind(&statuses)
    .bind(&bodies)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected())
}

/// The claims as the columns `unnest` takes.
fn columns<'a>(claims: &[&'a Claim]) -> (Vec<&'a str>, Vec<&'a str>, Vec<Uuid>) {
    (
        claims
            .iter()
            .map(|c| c.key.fingerprint_hash.as_str())
            .collect(),
        claims.iter().map(|c| c.key.key.as_str()).collect(),
        claims.iter().map(|c| c.attempt).collect(),
    )
}

/// Gives a claim up after a failure with no effect, so a retry runs again; only while its
/// attempt still holds it. A parked claim is not a failure with no effect: it stays (see
/// [`unpark`]).
pub async fn release(pool: &PgPool, claim: &Claim) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE fingerprint_hash = $1 AND key = $2 \
         AND attempt = $3 AND state = 'in_progress' AND awaiting_allocation IS NULL",
    )
    .bind(&claim.key.fingerprint_hash)
    .bind(&claim.key.key)
    .bind(claim.attempt)
    .execute(pool)
    .await?;
    Ok(())
}

/// Parks an in-progress claim on the payment `reference` of `allocation`, whose outcome is
/// unknown: the claim is neither released nor taken over until that payment is settled.
/// Only while its attempt still holds it.
pub async fn park(
    pool: &PgPool,
    claim: &Claim,
    allocation: Uuid,
    reference: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET awaiting_allocation = $3, awaiting_reference = $4 \
         WHERE fingerprint_hash = $1 AND key = $2 AND attempt = $5 AND state = 'in_progress'",
    )
    .bind(&claim.key.fingerprint_hash)
    .bind(&claim.key.key)
    .bind(allocation)
    .bind(reference)
    .bind(claim.attempt)
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

/// Deletes up to `limit` keys older than 24 hours; returns how many. A key row another
/// transaction holds (a batch locking its claims, in key order, to record them) is skipped
/// for a later round: the purge never waits, so deleting several rows in no order of its own
/// cannot close a cycle of waits with that batch.
pub async fn purge_expired(pool: &PgPool, limit: i64) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query(
        "DELETE FROM idempotency_keys WHERE (fingerprint_hash, key) IN ( \
             SELECT fingerprint_hash, key FROM idempotency_keys \
             WHERE created_at < now() - interval '24 hours' LIMIT $1 \
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}
