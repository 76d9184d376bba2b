//! SQL for scoped API tokens (`api_tokens`): made, listed and revoked by the CLI, looked up
//! by every request that presents one.

use std::collections::HashMap;

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::token::{LiveToken, TokenDigest, TokenGrant, TokenName, TokenScope};

/// A stored token as the listing shows it (never its digest).
#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// The token's id.
    pub id: Uuid,
    /// Its label for people (`--name`), if it has one.
    pub name: Option<String>,
    /// What it may do.
    pub scope: TokenScope,
    /// The one event a door token is bound to, if any.
    pub event_id: Option<Uuid>,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When it was revoked; `None` while it works.
    pub revoked_at: Option<OffsetDateTime>,
}

/// Stores a new token by its digest. `false` when the grant names an event that does not
/// exist: the existence check and the insert are one statement, so no second round trip.
pub async fn insert(
    pool: &PgPool,
    id: Uuid,
    name: Option<&TokenName>,
    grant: TokenGrant,
    digest: &TokenDigest,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO api_tokens (id, name, scope, event_id, token_hash) \
         SELECT $1, $2, $3, $4, $5 \
         WHERE $4::uuid IS NULL OR EXISTS (SELECT 1 FROM events WHERE id = $4)",
    )
    .bind(id)
    .bind(name.map(TokenName::as_str))
    .bind(grant.scope().as_str())
    .bind(grant.event_id())
    .bind(digest.as_bytes().as_slice())
    .execute(pool)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// A token's row as the listing statement returns it.
type TokenRow = (
    Uuid,
    Option<String>,
    String,
    Option<Uuid>,
    OffsetDateTime,
    Option<OffsetDateTime>,
);

/// Every token, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<TokenRecord>, sqlx::Error> {
    let rows: Vec<TokenRow> = sqlx::query_as(
        "SELECT id, name, scope, event_id, created_at, revoked_at \
         FROM api_tokens ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id, name, scope, event_id, created_at, revoked_at)| {
            Ok(TokenRecord {
                id,
                name,
                scope: decode_scope(&scope)?,
                event_id,
                created_at,
                revoked_at,
            })
        })
        .collect()
}

/// Marks the token revoked and returns when it was; a token revoked before keeps its first
/// time. `None` when there is no such token.
pub async fn revoke(pool: &PgPool, id: Uuid) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) \
         WHERE id = $1 RETURNING revoked_at",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The live tokens among `digests`, by digest. Read through the unique index on
/// `token_hash` and never cached, so a revocation holds on every instance from its commit
/// on.
pub async fn find_live_many(
    pool: &PgPool,
    digests: &[TokenDigest],
) -> Result<HashMap<[u8; 32], LiveToken>, sqlx::Error> {
    let hashes: Vec<&[u8]> = digests.iter().map(|d| d.as_bytes().as_slice()).collect();
    let rows: Vec<(Vec<u8>, Uuid, String, Option<Uuid>)> = sqlx::query_as(
        "SELECT token_hash, id, scope, event_id FROM api_tokens \
         WHERE token_hash = ANY($1) AND revoked_at IS NULL",
    )
    .bind(&hashes)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(hash, id, scope, event_id)| {
            let hash: [u8; 32] = hash
                .try_into()
                .map_err(|_| sqlx::Error::Decode("a token hash of other than 32 bytes".into()))?;
            Ok((
                hash,
                LiveToken {
                    id,
                    scope: decode_scope(&scope)?,
                    event_id,
                },
            ))
        })
        .collect()
}

/// A stored scope; the `api_tokens_scope` constraint admits only the two the domain knows.
fn decode_scope(text: &str) -> Result<TokenScope, sqlx::Error> {
    text.parse()
        .map_err(|message: String| sqlx::Error::Decode(message.into()))
}
