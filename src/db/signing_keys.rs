//! The public keys ticket codes are signed with (`signing_keys`), shared by every instance.

use sqlx::PgPool;

/// A stored public key: its id (8 hex characters) and its 32 raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub id: String,
    pub public_key: Vec<u8>,
}

/// Registers a public key, keeping the row if another instance registered it first. The id
/// is derived from the key, so any conflict (on the id or on the key) is the same row: instances
/// starting at once on a fresh database race here, and a conflict on the key's own unique
/// index, which `ON CONFLICT (id)` does not arbitrate, failed the loser's start.
pub async fn register(pool: &PgPool, id: &str, public_key: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO signing_keys (id, public_key) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(id)
        .bind(public_key)
        .execute(pool)
        .await?;
    Ok(())
}

/// Every registered key, oldest first.
pub async fn all(pool: &PgPool) -> Result<Vec<StoredKey>, sqlx::Error> {
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT id, public_key FROM signing_keys ORDER BY created_at, id")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, public_key)| StoredKey { id, public_key })
        .collect())
}
