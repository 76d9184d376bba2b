//! Scoped API tokens: making, listing and revoking them (the `boxoffice tokens` commands),
//! and recognising the one a request presents.

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db;
use crate::db::tokens::TokenRecord;
use crate::domain::token::{
    LiveToken, TOKEN_PREFIX, TokenDigest, TokenGrant, TokenName, TokenScope, TokenSecret,
};
use crate::error::Error;

/// Why a token command failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The scope, event or name break a rule; the text says which.
    #[error("{0}")]
    Invalid(String),
    /// `--event` names no event of this database.
    #[error("no event with id {0}")]
    UnknownEvent(Uuid),
    /// `revoke` names no token of this database.
    #[error("no token with id {0}")]
    UnknownToken(Uuid),
    /// The operating system gave no random bytes.
    #[error("no randomness for a token: {0}")]
    NoRandomness(getrandom::Error),
    /// The database failed or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A token just made: its id, and its text, which exists nowhere else from now on.
#[derive(Debug)]
pub struct CreatedToken {
    /// The token's id, by which it is listed and revoked.
    pub id: Uuid,
    /// The token's text, to hand to its holder.
    pub secret: TokenSecret,
}

/// Makes a token of `scope` (a door token bound to `event_id` when one is given) and stores
/// only its digest.
pub async fn create(
    pool: &PgPool,
    scope: TokenScope,
    event_id: Option<Uuid>,
    name: Option<&str>,
) -> Result<CreatedToken, TokenError> {
    let grant = TokenGrant::new(scope, event_id).map_err(TokenError::Invalid)?;
    let name = name
        .map(TokenName::parse)
        .transpose()
        .map_err(TokenError::Invalid)?;
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(TokenError::NoRandomness)?;
    let secret = TokenSecret::from_random(random);
    let id = Uuid::now_v7();
    if !db::tokens::insert(pool, id, name.as_ref(), grant, &secret.digest()).await? {
        return Err(TokenError::UnknownEvent(
            event_id.expect("only a named event can be unknown"),
        ));
    }
    Ok(CreatedToken { id, secret })
}

/// Every token, oldest first, revoked ones included.
pub async fn list(pool: &PgPool) -> Result<Vec<TokenRecord>, TokenError> {
    Ok(db::tokens::list(pool).await?)
}

/// Revokes the token; revoking it again keeps the first time. Returns when it was revoked.
pub async fn revoke(pool: &PgPool, id: Uuid) -> Result<OffsetDateTime, TokenError> {
    db::tokens::revoke(pool, id)
        .await?
        .ok_or(TokenError::UnknownToken(id))
}

/// The live token a request presented, or `None` for any text that is not one (unknown,
/// revoked, or not a token at all). Looked up by digest in the database every time, so a
/// revocation holds at once on every instance. An unreachable database is an error
/// (answered 503), never "no token".
///
/// The lookup by digest is not a comparison of secrets: its timing could tell at most how a
/// digest sorts in the index, which says nothing about any token's text.
pub async fn authenticate(pool: &PgPool, presented: &str) -> Result<Option<LiveToken>, Error> {
    // Text without the prefix was never made by `create`: no round trip for it.
    if !presented.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    Ok(db::tokens::find_live(pool, &TokenDigest::of(presented)).await?)
}
