//! Scoped API tokens: what an organiser or a door device presents instead of the admin token.
//! A token is 256 random bits as text; only its SHA-256 digest is ever stored.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::event_name::is_blank;

/// What every token's text starts with, so a leaked one is recognisable (in logs, in secret
/// scanners) as a Boxoffice token.
pub const TOKEN_PREFIX: &str = "bo_";

/// Longest token name, in characters.
pub const MAX_TOKEN_NAME_CHARS: usize = 100;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScope {
    /// Everything the admin token may do.
    Organiser,
    /// Only the check-in routes (of one event when the token is bound to one).
    Door,
}

impl TokenScope {
    /// The stored and printed name: `organiser` or `door`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Organiser => "organiser",
            TokenScope::Door => "door",
        }
    }
}

impl FromStr for TokenScope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "organiser" => Ok(TokenScope::Organiser),
            "door" => Ok(TokenScope::Door),
            other => Err(format!("unknown token scope `{other}` (organiser or door)")),
        }
    }
}

impl fmt::Display for TokenScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a new token is allowed: its scope, and for a door token optionally the one event it
/// admits to. An organiser token acts on every event, so it is never bound to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenGrant {
    scope: TokenScope,
    event_id: Option<Uuid>,
}

impl TokenGrant {
    /// The grant, unless it binds an organiser token to an event.
    pub fn new(scope: TokenScope, event_id: Option<Uuid>) -> Result<Self, String> {
        if scope == TokenScope::Organiser && event_id.is_some() {
            return Err(
                "an organiser token acts on every event: --event is for door tokens".into(),
            );
        }
        Ok(Self { scope, event_id })
    }

    /// What the token may do.
    pub fn scope(self) -> TokenScope {
        self.scope
    }

    /// The one event a door token is bound to, if any.
    pub fn event_id(self) -> Option<Uuid> {
        self.event_id
    }
}

/// A token's label for people (`--name`): 1 to [`MAX_TOKEN_NAME_CHARS`] characters after
/// trimming, at least one of them visible, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenName(String);

impl TokenName {
    /// The trimmed name, or why it is refused.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        // Blank as an event name is blank: nothing that shows (a zero-width space alone).
        if is_blank(name) {
            Err("a token name must not be blank".into())
        } else if name.chars().count() > MAX_TOKEN_NAME_CHARS {
            Err(format!(
                "a token name must be at most {MAX_TOKEN_NAME_CHARS} characters"
            ))
        } else if name.chars().any(char::is_control) {
            Err("a token name must not contain control characters".into())
        } else {
            Ok(Self(name.to_owned()))
        }
    }

    /// The name as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A token's text as handed to its holder once: [`TOKEN_PREFIX`] and 256 random bits in
/// base64url without padding (46 characters in all).
pub struct TokenSecret(String);

impl TokenSecret {
    /// The token made of `random`, which must come from a cryptographic source.
    pub fn from_random(random: [u8; 32]) -> Self {
        Self(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(random)))
    }

    /// The text to print for the holder.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The digest kept in the database.
    pub fn digest(&self) -> TokenDigest {
        TokenDigest::of(&self.0)
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(…)")
    }
}

/// SHA-256 of a token's text: what is stored, and what a presented token is looked up by.
/// The token's 256 random bits make a plain digest safe: it cannot be reversed or guessed,
/// so neither a salt nor a slow hash would add anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest of whatever text a client presented (it may be no token at all).
    pub fn of(presented: &str) -> Self {
        Self(Sha256::digest(presented.as_bytes()).into())
    }

    /// The 32 bytes of the digest, as stored in `api_tokens.token_hash`.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A live (unrevoked) token as a request proves it: who it is and what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveToken {
    /// The token's id (as `boxoffice tokens list` shows it).
    pub id: Uuid,
    /// What it may do.
    pub scope: TokenScope,
    /// The one event a door token admits to; `None` for every event.
    pub event_id: Option<Uuid>,
}

impl LiveToken {
    /// Whether the token may act as the organiser.
    pub fn is_organiser(&self) -> bool {
        self.scope == TokenScope::Organiser
    }

    /// Whether the token may check people in at `event_id`: an organiser token anywhere, a
    /// door token at its own event, or anywhere when it is bound to none.
    pub fn admits_at(&self, event_id: Uuid) -> bool {
        match self.scope {
            TokenScope::Organiser => true,
            TokenScope::Door => self.event_id.is_none_or(|bound| bound == event_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_the_prefix_and_43_base64url_characters() {
        let secret = TokenSecret::from_random([0xfb; 32]);
        let text = secret.expose();
        assert_eq!(text.len(), 46);
        assert!(text.starts_with("bo_"));
        assert!(
            text[3..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(secret.digest(), TokenDigest::of(text));
        assert_ne!(
            TokenSecret::from_random([0; 32]).digest(),
            TokenSecret::from_random([1; 32]).digest()
        );
        assert_eq!(format!("{secret:?}"), "TokenSecret(…)");
    }

    #[test]
    fn only_a_door_token_is_bound_to_an_event() {
        let event = Uuid::new_v4();
        assert!(TokenGrant::new(TokenScope::Organiser, Some(event)).is_err());
        assert!(TokenGrant::new(TokenScope::Organiser, None).is_ok());
        assert_eq!(
            TokenGrant::new(TokenScope::Door, Some(event))
                .unwrap()
                .event_id(),
            Some(event)
        );
    }

    #[test]
    fn a_bound_door_token_admits_at_its_event_only() {
        let (event, other) = (Uuid::new_v4(), Uuid::new_v4());
        let token = |scope, event_id| LiveToken {
            id: Uuid::nil(),
            scope,
            event_id,
        };
        assert!(token(TokenScope::Door, Some(event)).admits_at(event));
        assert!(!token(TokenScope::Door, Some(event)).admits_at(other));
        assert!(token(TokenScope::Door, None).admits_at(other));
        assert!(token(TokenScope::Organiser, None).admits_at(other));
        assert!(!token(TokenScope::Door, None).is_organiser());
    }

    #[test]
    fn names_are_trimmed_bounded_and_printable() {
        assert_eq!(TokenName::parse("  Gate A ").unwrap().as_str(), "Gate A");
        assert!(TokenName::parse("   ").is_err());
        // Nothing that shows is blank too, whatever the characters.
        assert!(TokenName::parse("\u{200b}").is_err());
        assert!(TokenName::parse(" \u{ad}\u{2060}\u{feff} ").is_err());
        assert!(TokenName::parse(&"x".repeat(101)).is_err());
        assert!(TokenName::parse(&"é".repeat(100)).is_ok());
        assert!(TokenName::parse("a\nb").is_err());
        assert_eq!("door".parse::<TokenScope>(), Ok(TokenScope::Door));
        assert!("admin".parse::<TokenScope>().is_err());
    }
}
