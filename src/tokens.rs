//! Scoped API tokens: making, listing and revoking them (the `boxoffice tokens` commands),
//! and recognising the one a request presents.

use std::sync::Arc;

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db;
use crate::db::tokens::TokenRecord;
use crate::domain::token::{
    LiveToken, TOKEN_PREFIX, TokenDigest, TokenGrant, TokenName, TokenScope, TokenSecret,
};
use crate::error::Error;
use crate::purchase::coalescer::{BatchWork, Coalescer};

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

/// Recognises the tokens requests present, sharing one database read among the concurrent
/// requests that present the same token (a door's scanners all send theirs). Cheap to clone.
///
/// Each read starts only after every request it answers arrived (the purchase path's
/// coalescer: per token, one read runs at a time and a request never joins a running one),
/// so a revocation committed before a request arrived refuses it, on every instance, as a
/// read per request would; nothing is cached between reads.
#[derive(Clone)]
pub struct TokenLookups {
    lookups: Coalescer<TokenDigest, Result<Option<LiveToken>, Error>>,
}

impl TokenLookups {
    /// Lookups reading through `pool`, any number of requests per read.
    pub fn new(pool: PgPool) -> Self {
        let read: BatchWork<TokenDigest, Result<Option<LiveToken>, Error>> =
            Arc::new(move |_, digests: Vec<TokenDigest>| {
                let pool = pool.clone();
                Box::pin(async move {
                    // Requests of one key almost always present one token; another whose
                    // digest shares the key's bytes is read in the same statement.
                    let mut distinct = digests.clone();
                    distinct.sort_unstable_by_key(|d| *d.as_bytes());
                    distinct.dedup();
                    match db::tokens::find_live_many(&pool, &distinct).await {
                        Ok(found) => digests
                            .iter()
                            .map(|digest| Ok(found.get(digest.as_bytes()).copied()))
                            .collect(),
                        Err(err) => {
                            let err = Error::from(err);
                            digests.iter().map(|_| Err(err.clone())).collect()
                        }
                    }
                })
            });
        Self {
            lookups: Coalescer::new(usize::MAX, read),
        }
    }

    /// The live token a request presented, or `None` for any text that is not one (unknown,
    /// revoked, or not a token at all). Read from the database by a read that began after
    /// this call (see [`TokenLookups`]), so a revocation holds at once on every instance. An
    /// unreachable database is an error (answered 503), never "no token".
    ///
    /// The lookup by digest is not a comparison of secrets: its timing could tell at most how
    /// a digest sorts in the index, which says nothing about any token's text.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<LiveToken>, Error> {
        // Text without the prefix was never made by `create`: no round trip for it.
        if !presented.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let digest = TokenDigest::of(presented);
        let key = Uuid::from_bytes(
            digest.as_bytes()[..16]
                .try_into()
                .expect("a SHA-256 digest has 32 bytes"),
        );
        self.lookups.submit(key, digest).await?
    }
}
