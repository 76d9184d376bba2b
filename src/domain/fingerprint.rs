//! Buyer identity without accounts: a device fingerprint, stored only as an HMAC.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Longest fingerprint accepted from a client, in characters (after trimming).
pub const MAX_FINGERPRINT_LEN: usize = 256;

/// Where a buyer's identity came from. A derived identity is weaker: buyers behind one
/// NAT with the same browser share it, and a buyer who changes network loses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FingerprintSource {
    /// Sent by the client (`X-Device-Fingerprint` header or `userFingerprint` field).
    Client(String),
    /// Derived from the client address, User-Agent and Accept-Language.
    Derived {
        address: String,
        user_agent: String,
        accept_language: String,
    },
    /// The organiser (admin token holder): the scope of the organiser's idempotency keys,
    /// apart from every buyer's.
    Organiser,
}

/// Checks a client-supplied fingerprint: blank counts as absent.
pub fn parse_client_fingerprint(raw: &str) -> Result<Option<String>, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.chars().count() > MAX_FINGERPRINT_LEN {
        return Err(format!("must be at most {MAX_FINGERPRINT_LEN} characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(Some(trimmed.to_owned()))
}

/// The server-side key every fingerprint is hashed under.
#[derive(Clone)]
pub struct FingerprintKey(Vec<u8>);

impl FingerprintKey {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into())
    }

    /// HMAC-SHA256 of the fingerprint, as 64 lower-case hex characters. The two sources are
    /// domain-separated so a client cannot forge a derived identity by sending its text.
    pub fn hash(&self, source: &FingerprintSource) -> FingerprintHash {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        match source {
            FingerprintSource::Client(value) => {
                mac.update(b"client\0");
                mac.update(value.as_bytes());
            }
            FingerprintSource::Derived {
                address,
                user_agent,
                accept_language,
            } => {
                mac.update(b"derived\0");
                for part in [address, user_agent, accept_language] {
                    mac.update(part.as_bytes());
                    mac.update(b"\0");
                }
            }
            FingerprintSource::Organiser => mac.update(b"organiser\0"),
        }
        let digest = mac.finalize().into_bytes();
        FingerprintHash(super::hex::encode(&digest))
    }
}

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(..)")
    }
}

/// A hashed fingerprint: the only form in which a buyer's identity is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintHash(String);

impl FingerprintHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_keyed_and_stable() {
        let a = FingerprintKey::new("secret-a");
        let b = FingerprintKey::new("secret-b");
        let device = FingerprintSource::Client("device-1".into());
        assert_eq!(a.hash(&device), a.hash(&device));
        assert_ne!(a.hash(&device), b.hash(&device));
        assert_eq!(a.hash(&device).as_str().len(), 64);
        assert!(!a.hash(&device).as_str().contains("device"));
    }

    #[test]
    fn client_and_derived_sources_never_collide() {
        let key = FingerprintKey::new("k");
        let derived = FingerprintSource::Derived {
            address: "127.0.0.1".into(),
            user_agent: "ua".into(),
            accept_language: "en".into(),
        };
        let forged = FingerprintSource::Client("127.0.0.1\0ua\0en\0".into());
        assert_ne!(key.hash(&derived), key.hash(&forged));
    }

    #[test]
    fn client_fingerprint_rules() {
        assert_eq!(parse_client_fingerprint("  abc "), Ok(Some("abc".into())));
        assert_eq!(parse_client_fingerprint("   "), Ok(None));
        assert!(parse_client_fingerprint(&"x".repeat(MAX_FINGERPRINT_LEN + 1)).is_err());
        assert!(parse_client_fingerprint("a\nb").is_err());
    }
}
