//! Idempotency keys: what a valid key is, and how "the same request" is recognised.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::fingerprint::FingerprintHash;

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A client's `Idempotency-Key`: 1 to 255 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_KEY_LEN {
            return Err(format!("must be 1 to {MAX_KEY_LEN} characters"));
        }
        if !raw.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err("must contain only printable ASCII characters".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key as it is stored: scoped to the buyer who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    pub fingerprint_hash: String,
    pub key: String,
}

impl KeyRef {
    pub fn new(buyer: &FingerprintHash, key: &IdempotencyKey) -> Self {
        Self {
            fingerprint_hash: buyer.as_str().to_owned(),
            key: key.as_str().to_owned(),
        }
    }
}

/// A key as claimed by one attempt: the attempt id is a fencing token. A claim taken over as
/// stale gets a new one, so the attempt it was taken from can no longer record, release or
/// park it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The claimed key.
    pub key: KeyRef,
    /// The attempt holding the claim.
    pub attempt: Uuid,
}

/// SHA-256 of the method, path and canonical body (hex): equal exactly for the same request.
pub fn request_hash(method: &str, path: &str, canonical_body: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [method, path, canonical_body] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    super::hex::encode(&hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rules() {
        assert!(IdempotencyKey::parse("a").is_ok());
        assert!(IdempotencyKey::parse("order 42 / retry ~ok").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(IdempotencyKey::parse("tab\there").is_err());
        assert!(IdempotencyKey::parse("é").is_err());
    }

    /// The stored key is the client's key as sent, scoped by the buyer's hash.
    #[test]
    fn a_stored_key_is_the_buyers_hash_and_the_key_as_sent() {
        use crate::domain::fingerprint::{FingerprintKey, FingerprintSource};
        let buyer = FingerprintKey::new("k").hash(&FingerprintSource::Client("b".into()));
        let key = IdempotencyKey::parse("order 42").expect("a valid key");
        assert_eq!(key.as_str(), "order 42");
        let stored = KeyRef::new(&buyer, &key);
        assert_eq!(stored.key, "order 42");
        assert_eq!(stored.fingerprint_hash, buyer.as_str());
    }

    #[test]
    fn hash_separates_the_parts() {
        let a = request_hash("POST", "/events/1/tickets", "{\"quantity\":1}");
        assert_eq!(
            a,
            request_hash("POST", "/events/1/tickets", "{\"quantity\":1}")
        );
        assert_ne!(
            a,
            request_hash("POST", "/events/1/tickets", "{\"quantity\":2}")
        );
        assert_ne!(
            a,
            request_hash("POST", "/events/2/tickets", "{\"quantity\":1}")
        );
        assert_ne!(request_hash("a", "b", ""), request_hash("a", "", "b"));
    }
}
