//! Server-wide settings shared through the database by every instance.

use sqlx::PgPool;

const FINGERPRINT_SECRET: &str = "fingerprint_secret";

/// Returns the stored fingerprint secret, storing `candidate` first if there is none.
/// The insert-or-keep makes every instance agree on one secret even when they start together.
pub async fn fingerprint_secret(pool: &PgPool, candidate: &str) -> Result<String, sqlx::Error> {
    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
        .bind(FINGERPRINT_SECRET)
        .bind(candidate)
        .execute(pool)
        .await?;
    sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(FINGERPRINT_SECRET)
        .fetch_one(pool)
        .await
}

const SIGNING_KEY: &str = "ticket_signing_key";

/// Returns the stored ticket-signing key (the Ed25519 seed, 64 hex characters), storing
/// `candidate` first if there is none: every instance signs with the one key whichever
/// started first generated.
pub async fn ticket_signing_key(pool: &PgPool, candidate: &str) -> Result<String, sqlx::Error> {
    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
        .bind(SIGNING_KEY)
        .bind(candidate)
        .execute(pool)
        .await?;
    sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(SIGNING_KEY)
        .fetch_one(pool)
        .await
}
