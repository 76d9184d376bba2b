//! Request extractors that turn every kind of bad input into the API's own errors, so a
//! handler only ever sees well-formed values.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use crate::domain::fingerprint::{
    FingerprintHash, FingerprintKey, FingerprintSource, parse_client_fingerprint,
};
use crate::domain::idempotency::IdempotencyKey;
use crate::domain::refusal::FieldError;
use crate::domain::token::LiveToken;
use crate::error::Error;
use crate::http::state::AppState;

pub mod forwarded;

/// Largest request body accepted, in bytes, on every route but the batch upload.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Largest body of `POST /events/{id}/checkins/batch`: room for 1,000 scans at their largest
/// in compact JSON. One scan is at most 602 bytes: `{"code":"` (9), the code (135),
/// `","gate":"` (10), 64 characters of 4-byte UTF-8 (256), `","scannedAt":"` (15), an
/// RFC 3339 time with nanoseconds and an offset (35), `","nonce":"` (11), the nonce (128),
/// then `"}` and a comma (3). 1,000 of them and `{"scans":[]}` come to 602,012 bytes; 640
/// KiB leaves about 50 KB for whitespace.
pub const BATCH_BODY_BYTES: usize = 640 * 1024;

/// The body limit of a request to `path`: [`BATCH_BODY_BYTES`] for a batch of check-ins
/// (`/events/{id}/checkins/batch`), [`MAX_BODY_BYTES`] for everything else. Decided from the
/// path alone, before routing, so an oversized body is refused before anything reads it.
pub fn body_limit(path: &str) -> usize {
    let mut segments = path.trim_end_matches('/').split('/');
    let batch = segments.next() == Some("")
        && segments.next() == Some("events")
        && segments.next().is_some_and(|id| !id.is_empty())
        && segments.next() == Some("checkins")
        && segments.next() == Some("batch")
        && segments.next().is_none();
    if batch {
        BATCH_BODY_BYTES
    } else {
        MAX_BODY_BYTES
    }
}

/// The body limit the request was admitted under (see [`body_limit`]), carried as a request
/// extension so a body found too long while read is answered with the right number.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Whether the request's body is being read, shared by [`ApiJson`] (which reads every body)
/// and the request timeout (`http::request_deadline`, which inserts it): a request whose
/// time runs out while its body is still arriving was held up by its client (408), not by
/// the server (503).
#[derive(Debug, Clone, Default)]
pub struct BodyReading(Arc<AtomicBool>);

impl BodyReading {
    /// Whether a body read has begun and not yet ended.
    pub fn is_reading(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, reading: bool) {
        self.0.store(reading, Ordering::Release);
    }
}

/// Header that carries the buyer's device fingerprint, as errors name it (headers are matched
/// without regard to case).
pub const FINGERPRINT_HEADER: &str = "X-Device-Fingerprint";

/// A JSON body. Malformed JSON or a wrong content type is a 400 `BAD_REQUEST`; a
/// well-formed body with a field of the wrong type is a 422 `VALIDATION_ERROR` naming the
/// field. An empty body (no bytes at all) counts as `{}`, so optional bodies may be left out,
/// and so does a JSON `null` sent as JSON; a body of only whitespace is malformed JSON, as any
/// JSON parser says.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = single_header(req.headers(), "Content-Type")
            .map(|value| value.map(|v| v.to_str().unwrap_or("").to_owned()));
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(MAX_BODY_BYTES, |limit| limit.0);
        let reading = req.extensions().get::<BodyReading>().cloned();
        if let Some(reading) = &reading {
            reading.set(true);
        }
        let bytes = Bytes::from_request(req, state).await;
        if let Some(reading) = &reading {
            reading.set(false);
        }
        let bytes = bytes.map_err(|rejection: BytesRejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::bad_request("the request body could not be read")
            }
        })?;
        // No body means "no fields": optional bodies may be left out. Any bytes at all are a
        // body, which must be declared JSON: a `null` sent as text is refused like any other
        // non-JSON body, not acted on (a payment made, a PATCH answered 200).
        if bytes.is_empty() {
            return parse(b"{}").map(ApiJson);
        }
        if !content_type?.as_deref().is_some_and(is_json) {
            return Err(ApiError::bad_request(
                "the request body must be JSON (Content-Type: application/json)",
            ));
        }
        // A JSON null also means "no fields". A body of only whitespace is not JSON, so it is
        // refused like other malformed JSON rather than taken as an empty change.
        if bytes.trim_ascii() == b"null" {
            return parse(b"{}").map(ApiJson);
        }
        parse(&bytes).map(ApiJson)
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5
            && essence[..essence.len() - 5].contains('/')
            && essence.to_ascii_lowercase().ends_with("+json"))
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    // JSON text is UTF-8 (RFC 8259); serde checks only the strings it keeps, so a byte that is
    // not UTF-8 in a field the route ignores would pass.
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::bad_request(
            "malformed JSON: the request body is not UTF-8",
        ));
    }
    // serde would also build a struct from a JSON array; every body here is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path != "." => {
                Error::Validation(vec![FieldError::new(path, describe_data_error(&inner))]).into()
            }
            // At the top level of an object (the leading '{' was checked above), a data
            // error is about the object as a whole, such as a field given twice.
            serde_json::error::Category::Data => ApiError::bad_request(format!(
                "invalid JSON body: {}",
                describe_data_error(&inner)
            )),
            _ => ApiError::bad_request(format!("malformed JSON: {}", describe_data_error(&inner))),
        }
    })?;
    deserializer.end().map_err(|err| {
        ApiError::bad_request(format!("malformed JSON: {}", describe_data_error(&err)))
    })?;
    if holds_lone_surrogate(bytes) {
        return Err(ApiError::bad_request(
            "malformed JSON: a string escapes half of a UTF-16 surrogate pair (\\uD800 to \\uDFFF without its other half), which is no character",
        ));
    }
    if let Some(field) = field_holding_nul(bytes) {
        return Err(
            Error::Validation(vec![FieldError::new(field, "must not contain U+0000")]).into(),
        );
    }
    Ok(value)
}

/// Whether a string anywhere in the JSON `bytes` (an ignored field's included) escapes half
/// of a UTF-16 surrogate pair alone, such as `"\ud800"`. That is no character: serde refuses
/// it in a field it keeps but skips it in one the route ignores, so the same text was
/// malformed in one field and accepted in another; it is refused in every place, as bytes
/// that are not UTF-8 are. Call once the body has parsed: decoding it whole (only when such
/// an escape occurs in it) can then fail only on an escape that parse skipped.
fn holds_lone_surrogate(bytes: &[u8]) -> bool {
    let escapes_surrogate = bytes.windows(4).any(|window| {
        window[0] == b'\\'
            && window[1] == b'u'
            && window[2].eq_ignore_ascii_case(&b'd')
            && matches!(window[3].to_ascii_lowercase(), b'8'..=b'9' | b'a'..=b'f')
    });
    escapes_surrogate && serde_json::from_slice::<serde_json::Value>(bytes).is_err()
}

/// The path (as serde names it: `lines[0].description`) of a string in the JSON `bytes`
/// that holds U+0000, if one does. PostgreSQL's text cannot store that character, so a body
/// holding it anywhere is refused before anything is stored, in one place for every field,
/// rather than reaching the database as a 500 (or, for a payment token, a payment begun and
/// left for recovery). JSON can carry it only as the escape `\u0000`, so the body is parsed
/// again only when that text occurs in it.
fn field_holding_nul(bytes: &[u8]) -> Option<String> {
    const ESCAPE: &[u8] = b"\\u0000";
    if !bytes.windows(ESCAPE.len()).any(|window| window == ESCAPE) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    nul_path(&value, String::new())
}

fn nul_path(value: &serde_json::Value, path: String) -> Option<String> {
    match value {
        serde_json::Value::String(text) => text.contains('\0').then_some(path),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, format!("{path}[{i}]"))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(name, item)| {
            let path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            if name.contains('\0') {
                Some(path)
            } else {
                nul_path(item, path)
            }
        }),
        _ => None,
    }
}

/// serde's message without its "at line 1 column 9" suffix, and without the names of the
/// app's own Rust types, which mean nothing to a client: "expected struct BatchScanRequest"
/// says "expected a JSON object", "did not match any variant of untagged enum …" says it
/// matches none of the documented shapes.
fn describe_data_error(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let text = match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    if text.starts_with("data did not match any variant of untagged enum") {
        return "does not match any of the documented shapes".to_owned();
    }
    without_type_names(text)
}

/// `text` with each "struct Name" made "a JSON object" and each "enum Name" "one of the
/// documented values".
fn without_type_names(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = [
            ("struct ", "a JSON object"),
            ("enum ", "one of the documented values"),
        ]
        .into_iter()
        .filter_map(|(marker, phrase)| rest.find(marker).map(|at| (at, marker, phrase)))
        .min_by_key(|(at, _, _)| *at);
        let Some((at, marker, phrase)) = next else {
            out.push_str(rest);
            return out;
        };
        let after = &rest[at + marker.len()..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        out.push_str(&rest[..at]);
        if name_len == 0 {
            out.push_str(marker);
        } else {
            out.push_str(phrase);
        }
        rest = &after[name_len..];
    }
}

/// The `{id}` path parameter of a resource, which must be a UUID (400 otherwise).
#[derive(Debug, Clone, Copy)]
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad_parameter("id", "must be a UUID"))?;
        Uuid::parse_str(&raw)
            .map(IdPath)
            .map_err(|_| ApiError::bad_parameter("id", "must be a UUID"))
    }
}

/// The path parameters of an item of an event (`/events/{id}/ticket-types/{typeId}`,
/// `/events/{id}/quotas/{quotaId}`): the event's id and the item's, both UUIDs (400
/// otherwise, naming the parameter).
#[derive(Debug, Clone, Copy)]
pub struct EventItemPath {
    pub event_id: Uuid,
    pub item_id: Uuid,
}

impl<S: Send + Sync> FromRequestParts<S> for EventItemPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (event_id, item_id) = two_ids(parts, state).await?;
        Ok(Self { event_id, item_id })
    }
}

/// The path parameters of one admission of an allocation
/// (`/tickets/{id}/admissions/{admissionId}/…`): both UUIDs (400 otherwise, naming the
/// parameter).
#[derive(Debug, Clone, Copy)]
pub struct AdmissionPath {
    pub allocation_id: Uuid,
    pub admission_id: Uuid,
}

impl<S: Send + Sync> FromRequestParts<S> for AdmissionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (allocation_id, admission_id) = two_ids(parts, state).await?;
        Ok(Self {
            allocation_id,
            admission_id,
        })
    }
}

/// The two UUID path parameters of an item route, in path order; a 400 names the first that
/// is not a UUID.
async fn two_ids<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<(Uuid, Uuid), ApiError> {
    let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::bad_parameter("id", "must be a UUID"))?;
    let uuid = |(name, raw): &(String, String)| {
        Uuid::parse_str(raw).map_err(|_| ApiError::bad_parameter(name.clone(), "must be a UUID"))
    };
    match params.as_slice() {
        [parent, item] => Ok((uuid(parent)?, uuid(item)?)),
        _ => Err(ApiError::internal("an item route has two path parameters")),
    }
}

/// Query parameters; an undecodable query string is a 400. Every parameter is read as one
/// value, so one the client repeats (`?page=1&page=2`) is refused, named in `details` as a
/// repeated header is: which value counts would be a guess.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(_) => Err(query_error::<T>(parts.uri.query().unwrap_or_default())),
        }
    }
}

/// The 400 for a query string that `T` cannot be read from. The parameters are all text, read
/// one value each, so the one cause is a parameter of `T` given more than once: the first
/// repeated name that `T` refuses alone, given twice, is named. Parameters `T` does not read
/// are ignored, repeated or not.
fn query_error<T: DeserializeOwned>(query: &str) -> ApiError {
    let mut seen = std::collections::HashSet::new();
    let repeated = form_urlencoded::parse(query.as_bytes())
        .map(|(name, _)| name)
        .filter(|name| !seen.insert(name.clone()));
    for name in repeated {
        let twice = form_urlencoded::Serializer::new(String::new())
            .append_pair(&name, "")
            .append_pair(&name, "")
            .finish();
        let uri = format!("/?{twice}").parse::<axum::http::Uri>();
        if uri.is_ok_and(|uri| Query::<T>::try_from_uri(&uri).is_err()) {
            return ApiError::bad_parameter(name.into_owned(), "must be given once, not repeated");
        }
    }
    ApiError::bad_request("the query string cannot be read")
}

/// The optional `Idempotency-Key` header; a malformed key is a 400.
#[derive(Debug, Clone)]
pub struct IdempotencyHeader(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = single_header(&parts.headers, "Idempotency-Key")? else {
            return Ok(Self(None));
        };
        let text = value.to_str().map_err(|_| {
            ApiError::bad_parameter(
                "Idempotency-Key",
                "must contain only printable ASCII characters",
            )
        })?;
        IdempotencyKey::parse(text)
            .map(|key| Self(Some(key)))
            .map_err(|message| ApiError::bad_parameter("Idempotency-Key", message))
    }
}

/// The bearer token a request sends (`Authorization: Bearer <token>`), if any. The scheme's
/// name is matched without regard to case (RFC 9110, 11.1): `bearer` is `Bearer`. Two
/// `Authorization` headers are a 400 ([`single_header`]).
fn bearer(parts: &Parts) -> ApiResult<Option<&str>> {
    let Some(value) = single_header(&parts.headers, "Authorization")? else {
        return Ok(None);
    };
    let Some((scheme, token)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
        return Ok(None);
    };
    Ok(scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim()))
}

/// The one value of the header `name`, if it is sent. The headers this API reads as one value
/// (the buyer's `X-Device-Fingerprint`, `Idempotency-Key`, `Authorization`, the body's
/// `Content-Type`) are refused when sent twice (400 naming the header), not read as their
/// first: a proxy that joins repeated headers into one line would hand the next hop another
/// value, a buyer's identity among them.
/// `name` is matched without regard to case, and named in the error as given.
fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> ApiResult<Option<&'a HeaderValue>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::bad_parameter(
            name,
            "must be sent once, not repeated",
        ));
    }
    Ok(first)
}

/// Who a presented bearer token proves the caller to be.
enum Credential {
    /// The `--admin-token`.
    Admin,
    /// A live token from `api_tokens`.
    Token(LiveToken),
    /// Neither: unknown, revoked, or not a token at all.
    Unknown,
}

/// Recognises `presented`: the admin token first (compared as SHA-256 digests in constant
/// time, so neither its content nor its length leaks through timing), then the live tokens in
/// the database, read for every request (concurrent ones presenting one token share a read
/// that began after they arrived, `tokens::TokenLookups`) so that a revocation holds at once
/// on every instance.
/// A database failure is an error (503 or 500 as elsewhere), never a refusal.
async fn recognise(state: &AppState, presented: &str) -> ApiResult<Credential> {
    if let Some(expected) = &state.admin_token {
        let matches: bool = Sha256::digest(presented.as_bytes())
            .ct_eq(&Sha256::digest(expected.as_bytes()))
            .into();
        if matches {
            return Ok(Credential::Admin);
        }
    }
    Ok(match state.tokens.authenticate(presented).await? {
        Some(token) => Credential::Token(token),
        None => Credential::Unknown,
    })
}

/// An organiser allowed to create and change events: anyone when no `--admin-token` is
/// configured, otherwise a request with `Authorization: Bearer <token>` carrying the admin
/// token or a live organiser token (401 when missing; 403 for any other token, a door token
/// included).
#[derive(Debug, Clone, Copy)]
pub struct Organiser;

impl FromRequestParts<AppState> for Organiser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Without an admin token these routes are open, as they were before tokens existed:
        // nothing presented is looked at.
        if state.admin_token.is_none() {
            return Ok(Organiser);
        }
        let presented = bearer(parts)?.ok_or(ApiError::Unauthorized)?;
        match recognise(state, presented).await? {
            Credential::Admin => Ok(Organiser),
            Credential::Token(token) if token.is_organiser() => Ok(Organiser),
            Credential::Token(_) | Credential::Unknown => Err(ApiError::Forbidden),
        }
    }
}

/// The organiser, proven by a token in every case: unlike [`Organiser`], a route behind this
/// extractor (refunds, the sales report) is never open. It accepts the admin token or a live
/// organiser token, the latter also on a server started without `--admin-token`. 401
/// `UNAUTHORIZED` when no token is sent, and on a server without an admin token also for a
/// token it does not know (the message says how to configure one); 403 `FORBIDDEN` for a
/// wrong token otherwise, and for a door token always.
#[derive(Debug, Clone, Copy)]
pub struct AdminOnly;

impl FromRequestParts<AppState> for AdminOnly {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let configured = state.admin_token.is_some();
        let missing = if configured {
            ApiError::Unauthorized
        } else {
            ApiError::AdminTokenNotConfigured
        };
        let presented = bearer(parts)?.ok_or(missing.clone())?;
        match recognise(state, presented).await? {
            Credential::Admin => Ok(AdminOnly),
            Credential::Token(token) if token.is_organiser() => Ok(AdminOnly),
            Credential::Token(_) => Err(ApiError::Forbidden),
            Credential::Unknown if configured => Err(ApiError::Forbidden),
            Credential::Unknown => Err(missing),
        }
    }
}

/// Who reads one allocation (`GET /tickets/{id}`), and which: its holder, as on every buyer
/// route, or the organiser, who may read any. A request without an `Authorization` header is
/// the buyer's and extracts exactly as the buyer's routes do (the path's id, then the
/// [`Caller`]). One with the header must carry the admin token or a live organiser token
/// (the latter also on a server without `--admin-token`); any other (unknown, revoked, a door
/// token, not a bearer token at all) is 403 `FORBIDDEN`, decided before the path is read so
/// that a caller without the right token learns nothing of ids.
#[derive(Debug, Clone)]
pub enum AllocationReader {
    /// The holder, identified by fingerprint, reading allocation `id`.
    Buyer { id: Uuid, caller: Caller },
    /// The organiser, proven by a token, reading allocation `id`.
    Organiser { id: Uuid },
}

impl FromRequestParts<AppState> for AllocationReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            let IdPath(id) = IdPath::from_request_parts(parts, state).await?;
            let caller = Caller::from_request_parts(parts, state).await?;
            return Ok(Self::Buyer { id, caller });
        }
        let presented = bearer(parts)?.ok_or(ApiError::Forbidden)?;
        match recognise(state, presented).await? {
            Credential::Admin => {}
            Credential::Token(token) if token.is_organiser() => {}
            Credential::Token(_) | Credential::Unknown => return Err(ApiError::Forbidden),
        }
        let IdPath(id) = IdPath::from_request_parts(parts, state).await?;
        Ok(Self::Organiser { id })
    }
}

/// A door device (or the organiser) allowed to check people in at the event of the path's
/// `{id}`: the extractor for the check-in routes (`/events/{id}/checkins…`,
/// `/events/{id}/checkin/export`). It always needs `Authorization: Bearer <token>`, whether
/// or not the server runs with `--admin-token` (401 `UNAUTHORIZED` without one), and accepts
/// the admin token, a live organiser token, or a live door token: one bound to an event only
/// for that event. Any other token is 403 `FORBIDDEN`, as is a door token of another event.
/// The token is checked before the path, so an unauthenticated caller learns nothing about
/// ids; a path `{id}` that is not a UUID is then a 400.
///
/// A handler takes it in place of `IdPath` and reads the event from it:
/// `async fn check_in(door: DoorAccess, ApiJson(body): ApiJson<Scan>)` then
/// `door.event_id()`.
#[derive(Debug, Clone, Copy)]
pub struct DoorAccess {
    event_id: Uuid,
}

impl DoorAccess {
    /// The event of the path, which the token was found allowed at.
    pub fn event_id(&self) -> Uuid {
        self.event_id
    }
}

impl FromRequestParts<AppState> for DoorAccess {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = bearer(parts)?.ok_or(ApiError::Unauthorized)?;
        let credential = recognise(state, presented).await?;
        // An unknown (or revoked) token is refused before the path is read, so its holder
        // learns nothing of ids, not even which are well-formed.
        if matches!(credential, Credential::Unknown) {
            return Err(ApiError::Forbidden);
        }
        let IdPath(event_id) = IdPath::from_request_parts(parts, state).await?;
        let allowed = match credential {
            Credential::Admin => true,
            Credential::Token(token) => token.admits_at(event_id),
            Credential::Unknown => false,
        };
        if allowed {
            Ok(Self { event_id })
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// The buyer's identifying header, as the OpenAPI document describes it.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct BuyerHeaders {
    /// The buyer's device fingerprint: up to 256 characters (Unicode scalar values, sent as
    /// UTF-8) after trimming, no control characters. Without it the buyer is identified
    /// from the connection (see docs/fingerprinting.md).
    #[param(
        rename = "X-Device-Fingerprint",
        nullable = false,
        max_length = 256,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub fingerprint: Option<String>,
}

/// The buyer's headers on requests that take an idempotency key.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct KeyedBuyerHeaders {
    /// The buyer's device fingerprint: up to 256 characters (Unicode scalar values, sent as
    /// UTF-8) after trimming, no control characters. Without it the buyer is identified
    /// from the request body's `userFingerprint`, else the connection.
    #[param(
        rename = "X-Device-Fingerprint",
        nullable = false,
        max_length = 256,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub fingerprint: Option<String>,
    /// 1 to 255 printable ASCII characters; a retry with the same key and request within 24
    /// hours gets the first response and has no second effect.
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        min_length = 1,
        max_length = 255,
        pattern = "^[\\x20-\\x7E]+$"
    )]
    pub idempotency_key: Option<String>,
}

/// Who is calling: the device fingerprint the client sent, and the signals a fingerprint is
/// derived from when it sent none.
#[derive(Debug, Clone)]
pub struct Caller {
    header_fingerprint: Option<String>,
    derived: FingerprintSource,
    address: Option<IpAddr>,
}

impl Caller {
    /// The client's IP address: the TCP peer's, or the one a trusted proxy forwarded
    /// (`--trusted-proxy`, see [`forwarded::TrustedProxies`]).
    pub fn address(&self) -> Option<IpAddr> {
        self.address
    }

    /// The caller's stored identity. Preference: the `X-Device-Fingerprint` header, then a
    /// fingerprint from the request body, then one derived from the connection (weaker).
    pub fn identify(
        &self,
        key: &FingerprintKey,
        body_fingerprint: Option<&str>,
    ) -> Result<FingerprintHash, Error> {
        if let Some(fingerprint) = &self.header_fingerprint {
            return Ok(key.hash(&FingerprintSource::Client(fingerprint.clone())));
        }
        let from_body = body_fingerprint
            .map(parse_client_fingerprint)
            .transpose()
            .map_err(|message| {
                Error::Validation(vec![FieldError::new("userFingerprint", message)])
            })?
            .flatten();
        Ok(match from_body {
            Some(fingerprint) => key.hash(&FingerprintSource::Client(fingerprint)),
            None => key.hash(&self.derived),
        })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header_text = |name: header::HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let header_fingerprint = match single_header(&parts.headers, FINGERPRINT_HEADER)? {
            None => None,
            Some(value) => {
                // The same rule as the body's `userFingerprint`: text of up to 256
                // characters, no control characters. HTTP carries it as UTF-8 bytes.
                let text = std::str::from_utf8(value.as_bytes()).map_err(|_| {
                    ApiError::bad_parameter(FINGERPRINT_HEADER, "must be UTF-8 text")
                })?;
                parse_client_fingerprint(text)
                    .map_err(|message| ApiError::bad_parameter(FINGERPRINT_HEADER, message))?
            }
        };
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| {
                state
                    .trusted_proxies
                    .client_address(peer.ip(), &parts.headers)
            });
        Ok(Self {
            header_fingerprint,
            address: ip,
            derived: FingerprintSource::Derived {
                address: ip.map(|ip| ip.to_string()).unwrap_or_default(),
                user_agent: header_text(header::USER_AGENT),
                accept_language: header_text(header::ACCEPT_LANGUAGE),
            },
        })
    }
}
