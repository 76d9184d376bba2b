//! Ticket codes: the text a ticket's QR code carries, signed so that a door device can tell a
//! real code from a forged one without asking the server (docs/admission.md).
//!
//! A code is base64url without padding of 101 bytes: the format version `1`, the signing key's
//! id (4 bytes), the event id and the admission id (16 bytes each, UUIDs), then the Ed25519
//! signature (64 bytes) of those first 37 bytes. 135 characters, all of `[A-Za-z0-9_-]`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use super::event::to_stored_precision;

/// The format version, the first byte of every code.
pub const CODE_VERSION: u8 = 1;
/// The signed part: version, key id, event id, admission id.
const SIGNED_LEN: usize = 1 + 4 + 16 + 16;
/// The whole code before encoding: the signed part and the signature.
const CODE_BYTES: usize = SIGNED_LEN + 64;
/// Characters of a code: base64 of 101 bytes without padding.
pub const CODE_LENGTH: usize = (CODE_BYTES * 4).div_ceil(3);

/// A signing key's id: the first 4 bytes of SHA-256 of its raw 32-byte public key, written
/// as 8 lowercase hex characters. Derived, never chosen, so every instance agrees on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 4]);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &VerifyingKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        KeyId([digest[0], digest[1], digest[2], digest[3]])
    }

    /// The 8 lowercase hex characters the API and the database show.
    pub fn to_hex(self) -> String {
        crate::domain::hex::encode(&self.0)
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// What a code names: the admission, its event, and the key that signed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionCode {
    pub key_id: KeyId,
    pub event_id: Uuid,
    pub admission_id: Uuid,
}

/// Why a text is not a valid code. All three answer 422 `INVALID_TICKET_CODE`; the cause is
/// kept for logs and statistics, never shown in detail to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCode {
    /// Not base64url of 101 bytes of format version 1.
    #[error("the ticket code is malformed")]
    Malformed,
    /// Signed by a key this server does not know.
    #[error("the ticket code's key {0} is unknown")]
    UnknownKey(KeyId),
    /// The signature does not match the content.
    #[error("the ticket code's signature is wrong")]
    BadSignature,
}

/// The key that signs new codes, with its id.
#[derive(Clone)]
pub struct CodeSigner {
    key: SigningKey,
    id: KeyId,
}

impl std::fmt::Debug for CodeSigner {
    // The private key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeSigner").field("id", &self.id).finish()
    }
}

impl CodeSigner {
    /// A signer from the 32-byte private key (the Ed25519 seed).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let id = KeyId::of(&key.verifying_key());
        CodeSigner { key, id }
    }

    /// A signer from a PKCS#8 PEM private key, as `openssl genpkey -algorithm ed25519` writes.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, String> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let key = SigningKey::from_pkcs8_pem(pem)
            .map_err(|err| format!("not a PKCS#8 PEM Ed25519 private key: {err}"))?;
        Ok(Self::from_seed(&key.to_bytes()))
    }

    /// The id of this key.
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// The public half, which verifies this signer's codes.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The code of `admission_id` of `event_id`, signed now. Ed25519 signatures are
    /// deterministic, so one admission always gets the same code from one key.
    pub fn code(&self, event_id: Uuid, admission_id: Uuid) -> String {
        let mut bytes = [0u8; CODE_BYTES];
        bytes[0] = CODE_VERSION;
        bytes[1..5].copy_from_slice(&self.id.0);
        bytes[5..21].copy_from_slice(event_id.as_bytes());
        bytes[21..37].copy_from_slice(admission_id.as_bytes());
        let signature = self.key.sign(&bytes[..SIGNED_LEN]);
        bytes[SIGNED_LEN..].copy_from_slice(&signature.to_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

/// Reads and verifies `text` (surrounding whitespace ignored, as a scanner may add a newline),
/// finding the public key by its id through `key_for`.
pub fn verify_code(
    text: &str,
    key_for: impl FnOnce(KeyId) -> Option<VerifyingKey>,
) -> Result<AdmissionCode, InvalidCode> {
    let text = text.trim();
    if text.len() != CODE_LENGTH {
        return Err(InvalidCode::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| InvalidCode::Malformed)?;
    let bytes: [u8; CODE_BYTES] = bytes.try_into().map_err(|_| InvalidCode::Malformed)?;
    if bytes[0] != CODE_VERSION {
        return Err(InvalidCode::Malformed);
    }
    let key_id = KeyId([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let key = key_for(key_id).ok_or(InvalidCode::UnknownKey(key_id))?;
    let signature =
        Signature::from_slice(&bytes[SIGNED_LEN..]).map_err(|_| InvalidCode::Malformed)?;
    // `verify_strict` refuses the malleable and small-order forms plain `verify` accepts, so
    // one admission has exactly one valid code per key.
    key.verify_strict(&bytes[..SIGNED_LEN], &signature)
        .map_err(|_| InvalidCode::BadSignature)?;
    let uuid_at = |at: usize| {
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[at..at + 16]);
        Uuid::from_bytes(id)
    };
    Ok(AdmissionCode {
        key_id,
        event_id: uuid_at(5),
        admission_id: uuid_at(21),
    })
}

/// Reads a public key from its 32 raw bytes, as stored and exported.
pub fn public_key(raw: &[u8]) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(raw.try_into().ok()?).ok()
}

/// Where an admission is: `valid` (not used yet), `checked_in` (admitted once, for good) or
/// `revoked` (refunded; never admits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdmissionStatus {
    Valid,
    CheckedIn,
    Revoked,
}

impl AdmissionStatus {
    /// The status as stored and as the API spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::CheckedIn => "checked_in",
            Self::Revoked => "revoked",
        }
    }
}

impl std::fmt::Display for AdmissionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AdmissionStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "valid" => Ok(Self::Valid),
            "checked_in" => Ok(Self::CheckedIn),
            "revoked" => Ok(Self::Revoked),
            other => Err(format!("unknown admission status {other:?}")),
        }
    }
}

/// An admission as stored: one ticket of a purchased allocation. Its code is not stored but
/// signed when the admission is shown ([`Admission::signed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAdmission {
    pub id: Uuid,
    pub event_id: Uuid,
    pub allocation_id: Uuid,
    pub ticket_type_id: Uuid,
    /// The ticket type's name now (a renamed type shows its new name).
    pub ticket_type_name: String,
    /// The ticket's number within its allocation, from 1.
    pub position: i32,
    pub status: AdmissionStatus,
    pub checked_in_at: Option<OffsetDateTime>,
    pub gate: Option<String>,
}

/// An admission as its holder (and a door) sees it: one ticket's right to enter, with the
/// signed code its QR code carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Admission {
    pub id: Uuid,
    pub ticket_type_id: Uuid,
    pub ticket_type_name: String,
    /// The text of the ticket's QR code: 135 characters of `[A-Za-z0-9_-]`, signed
    /// (docs/admission.md).
    #[schema(min_length = 135, max_length = 135)]
    pub code: String,
    pub status: AdmissionStatus,
    /// When it was checked in; null until then. A revoked admission keeps the time of a
    /// check-in it had.
    #[serde(with = "time::serde::rfc3339::option")]
    pub checked_in_at: Option<OffsetDateTime>,
    /// The gate it was checked in at, if the scan named one.
    pub gate: Option<String>,
}

impl Admission {
    /// The admission as shown, its code signed by `signer`.
    pub fn signed(stored: StoredAdmission, signer: &CodeSigner) -> Self {
        Admission {
            code: signer.code(stored.event_id, stored.id),
            id: stored.id,
            ticket_type_id: stored.ticket_type_id,
            ticket_type_name: stored.ticket_type_name,
            status: stored.status,
            checked_in_at: stored.checked_in_at.map(to_stored_precision),
            gate: stored.gate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer_of(n: u8) -> CodeSigner {
        CodeSigner::from_seed(&[n; 32])
    }

    #[test]
    fn a_code_is_135_url_safe_characters_and_reads_back() {
        let signer = signer_of(7);
        let (event, admission) = (Uuid::new_v4(), Uuid::new_v4());
        let code = signer.code(event, admission);
        assert_eq!(code.len(), CODE_LENGTH);
        assert!(code.len() <= 160);
        assert!(
            code.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        let read = verify_code(&format!("{code}\n"), |id| {
            (id == signer.key_id()).then(|| signer.verifying_key())
        })
        .unwrap();
        assert_eq!(
            read,
            AdmissionCode {
                key_id: signer.key_id(),
                event_id: event,
                admission_id: admission
            }
        );
    }

    #[test]
    fn a_changed_byte_or_another_key_is_refused() {
        let signer = signer_of(7);
        let code = signer.code(Uuid::new_v4(), Uuid::new_v4());
        let known = |id: KeyId| (id == signer.key_id()).then(|| signer.verifying_key());
        let mut bytes = URL_SAFE_NO_PAD.decode(&code).unwrap();
        bytes[30] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(verify_code(&forged, known), Err(InvalidCode::BadSignature));

        // The same content signed by a key that claims the known key's id.
        let other = signer_of(9);
        let mut bytes = URL_SAFE_NO_PAD
            .decode(other.code(Uuid::nil(), Uuid::nil()))
            .unwrap();
        bytes[1..5].copy_from_slice(&signer.key_id().0);
        let impostor = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(
            verify_code(&impostor, known),
            Err(InvalidCode::BadSignature)
        );

        let unknown = other.code(Uuid::nil(), Uuid::nil());
        assert_eq!(
            verify_code(&unknown, known),
            Err(InvalidCode::UnknownKey(other.key_id()))
        );
    }

    #[test]
    fn malformed_texts_are_refused_before_any_key_is_looked_up() {
        let code = signer_of(1).code(Uuid::new_v4(), Uuid::new_v4());
        let mut version_two = URL_SAFE_NO_PAD.decode(&code).unwrap();
        version_two[0] = 2;
        for text in [
            String::new(),
            "x".repeat(CODE_LENGTH),
            format!("{}=", &code[1..]),
            code[..CODE_LENGTH - 1].to_owned(),
            format!("{code}A"),
            URL_SAFE_NO_PAD.encode(&version_two),
            code.replace(|c: char| c.is_ascii_digit(), "+"),
        ] {
            if text == code {
                continue;
            }
            assert_eq!(
                verify_code(&text, |_| panic!("no key lookup for {text:?}")),
                Err(InvalidCode::Malformed),
                "{text:?}"
            );
        }
    }

    #[test]
    fn statuses_read_back_as_stored() {
        for status in [
            AdmissionStatus::Valid,
            AdmissionStatus::CheckedIn,
            AdmissionStatus::Revoked,
        ] {
            assert_eq!(status.as_str().parse(), Ok(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
        assert!("checked-in".parse::<AdmissionStatus>().is_err());
    }

    #[test]
    fn the_key_id_is_the_start_of_the_public_keys_sha256() {
        let signer = signer_of(3);
        let digest = Sha256::digest(signer.verifying_key().as_bytes());
        assert_eq!(
            signer.key_id().to_hex(),
            crate::domain::hex::encode(&digest[..4])
        );
        assert_eq!(signer.key_id().to_hex().len(), 8);
    }
}
