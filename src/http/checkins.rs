//! Check-in at the door (docs/admission.md): one scan, an upload of offline scans, the
//! conflicts they made, the event's check-in statistics, and the export a door device decides
//! offline from. Every route needs a door or organiser token ([`DoorAccess`]).

use std::collections::HashSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, DoorAccess};
use super::response::json;
use crate::admission::checkin::{self, BatchScan, Scan};
use crate::db;
use crate::domain::admission::{Admission, KeyId, public_key};
use crate::domain::checkin::{Gate, MAX_BATCH_SCANS, Nonce, ScanResult};
use crate::domain::event::{parse_date_time, to_stored_precision};
use crate::domain::refusal::FieldError;
use crate::error::Error;
use crate::http::state::AppState;

/// The body of `POST /events/{id}/checkins`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckinRequest {
    /// The ticket code the QR code carries (surrounding whitespace ignored).
    #[schema(example = "AQ…")]
    pub code: Option<String>,
    /// Where the scan is made: 1 to 64 characters, no control characters.
    #[schema(example = "North 1", min_length = 1, max_length = 64)]
    pub gate: Option<String>,
    /// The device's name for this scan: a retry with the same nonce gets the first answer.
    /// 1 to 128 characters of `[A-Za-z0-9._:-]`.
    #[schema(example = "gate-n1:0001", pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub nonce: Option<String>,
}

/// A check-in as answered: `result` is always `admitted`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckinResponse {
    #[schema(example = "admitted")]
    pub result: &'static str,
    pub admission: Admission,
    /// When the admission was checked in (for a retried scan, as first answered).
    #[serde(with = "time::serde::rfc3339")]
    pub checked_in_at: OffsetDateTime,
    /// Where (null: no gate given).
    pub gate: Option<String>,
}

/// A field error for `field`, as a 422.
fn invalid(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError::new(field, message)
}

/// A gate as sent: absent or null is none.
fn gate(field: &str, raw: Option<&str>, errors: &mut Vec<FieldError>) -> Option<Gate> {
    raw.and_then(|raw| {
        Gate::parse(raw)
            .map_err(|message| errors.push(invalid(field, message)))
            .ok()
    })
}

/// Check in the admission a ticket code names, once. The first scan gets 200; every later
/// scan 409 `ALREADY_CHECKED_IN` with the first check-in's time and gate, however many gates
/// and instances scan at once. A scan retried with the same `nonce` gets the same answer as
/// the first time. Needs `Authorization: Bearer <token>`: a door token (of this event, when
/// bound to one), an organiser token, or the admin token.
#[utoipa::path(
    post, path = "/events/{id}/checkins", tag = "checkin",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Event id")),
    request_body = CheckinRequest,
    responses(
        (status = 200, description = "Admitted: this scan checked the admission in (or is a retry of the scan that did)", body = CheckinResponse),
        (status = 400, description = "BAD_REQUEST: malformed JSON; id is not a UUID", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: no bearer token", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: not a door, organiser or admin token, or a door token of another event", body = ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT: the body stopped arriving within the request timeout; the connection is closed", body = ErrorBody),
        (status = 409, description = "ALREADY_CHECKED_IN (with `checkedInAt` and `gate` of the first check-in); WRONG_EVENT: a valid code of another event; TICKET_REVOKED: refunded", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 422, description = "INVALID_TICKET_CODE: malformed, forged, unknown key, or no such admission; NONCE_REUSED: the nonce named a scan of another ticket; VALIDATION_ERROR: code missing, gate or nonce malformed", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn check_in(
    State(state): State<AppState>,
    door: DoorAccess,
    ApiJson(body): ApiJson<CheckinRequest>,
) -> ApiResult<Response> {
    let mut errors = Vec::new();
    if body.code.is_none() {
        errors.push(invalid("code", "is required"));
    }
    let gate = gate("gate", body.gate.as_deref(), &mut errors);
    let nonce = body.nonce.as_deref().and_then(|raw| {
        Nonce::parse(raw)
            .map_err(|message| errors.push(invalid("nonce", message)))
            .ok()
    });
    let (Some(code), true) = (body.code, errors.is_empty()) else {
        return Err(Error::Validation(errors).into());
    };
    let scan = Scan { code, gate, nonce };
    let admitted = state.checkins.check_in(door.event_id(), scan).await?;
    json(
        StatusCode::OK,
        &CheckinResponse {
            result: "admitted",
            admission: Admission::signed(admitted.admission, state.admission_keys.signer()),
            checked_in_at: to_stored_precision(admitted.first.at),
            gate: admitted.first.gate,
        },
    )
}

/// One scan of a batch as sent.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchScanRequest {
    /// The ticket code the device scanned.
    pub code: Option<String>,
    /// Where: 1 to 64 characters, no control characters; null for none.
    #[schema(min_length = 1, max_length = 64)]
    pub gate: Option<String>,
    /// When the device scanned it: RFC 3339 with an offset, from 1970-01-01T00:00:00Z to
    /// 9999-12-31T23:59:59.999999Z once converted to UTC, like every date-time the API takes.
    /// A time after the upload counts as the upload's.
    #[schema(value_type = String, format = DateTime)]
    pub scanned_at: Option<String>,
    /// The device's name for this scan, unique within the batch: 1 to 128 characters of
    /// `[A-Za-z0-9._:-]`. Uploading it again gets the first answer.
    #[schema(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub nonce: Option<String>,
}

/// The body of `POST /events/{id}/checkins/batch`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchRequest {
    /// 1 to 1,000 scans.
    #[serde(default, deserialize_with = "super::wire::objects")]
    #[schema(min_items = 1, max_items = 1000)]
    pub scans: Option<Vec<BatchScanRequest>>,
}

/// The answer to one scan of a batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchResult {
    pub nonce: String,
    pub result: ScanResult,
    /// With `admitted` and `duplicate`: the admission's check-in time as answered.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    pub first_checked_in_at: Option<OffsetDateTime>,
    /// With `admitted` and `duplicate`: its gate (absent when none was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub first_gate: Option<String>,
}

/// The answer of `POST /events/{id}/checkins/batch`: one result per scan, in order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResponse {
    pub results: Vec<BatchResult>,
}

/// Validates a batch: 1 to 1,000 scans, each with a code, a time and a nonce unique in the
/// batch.
fn batch_scans(body: BatchRequest) -> Result<Vec<BatchScan>, Error> {
    let Some(scans) = body.scans else {
        return Err(Error::Validation(vec![invalid("scans", "is required")]));
    };
    if scans.is_empty() || scans.len() > MAX_BATCH_SCANS {
        return Err(Error::Validation(vec![invalid(
            "scans",
            format!("must hold 1 to {MAX_BATCH_SCANS} scans"),
        )]));
    }
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let mut valid = Vec::with_capacity(scans.len());
    for (i, scan) in scans.into_iter().enumerate() {
        let field = |name: &str| format!("scans[{i}].{name}");
        let gate = gate(&field("gate"), scan.gate.as_deref(), &mut errors);
        let nonce = match scan.nonce.as_deref().map(Nonce::parse) {
            None => {
                errors.push(invalid(field("nonce"), "is required"));
                None
            }
            Some(Err(message)) => {
                errors.push(invalid(field("nonce"), message));
                None
            }
            Some(Ok(nonce)) if !seen.insert(nonce.clone()) => {
                errors.push(invalid(field("nonce"), "appears twice in the batch"));
                None
            }
            Some(Ok(nonce)) => Some(nonce),
        };
        if scan.code.is_none() {
            errors.push(invalid(field("code"), "is required"));
        }
        let scanned_at = match scan.scanned_at.as_deref().map(parse_date_time) {
            None => {
                errors.push(invalid(field("scannedAt"), "is required"));
                None
            }
            Some(Err(message)) => {
                errors.push(invalid(field("scannedAt"), message));
                None
            }
            Some(Ok(at)) => Some(at),
        };
        if let (Some(code), Some(scanned_at), Some(nonce)) = (scan.code, scanned_at, nonce) {
            valid.push(BatchScan {
                code,
                gate,
                scanned_at,
                nonce,
            });
        }
    }
    if errors.is_empty() {
        Ok(valid)
    } else {
        Err(Error::Validation(errors))
    }
}

/// Upload scans a door device decided offline, at most 1,000 at a time. The earliest scan of
/// an admission, online or offline, is its check-in (an offline scan earlier than the online
/// check-in moves it back); every other scan a device let in is recorded as a conflict (see
/// `GET /events/{id}/checkins/conflicts`). Uploading the same scans again changes nothing and
/// gets the same results. This route accepts bodies up to 640 KiB (every other, 16 KiB).
#[utoipa::path(
    post, path = "/events/{id}/checkins/batch", tag = "checkin",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Event id")),
    request_body = BatchRequest,
    responses(
        (status = 200, description = "One result per scan, in order", body = BatchResponse),
        (status = 400, description = "BAD_REQUEST: malformed JSON; id is not a UUID", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: no bearer token", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: not a door, organiser or admin token, or a door token of another event", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event", body = ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT: the body stopped arriving within the request timeout; the connection is closed", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE: over 640 KiB", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: no scans or more than 1,000; a scan without code, scannedAt or nonce; a nonce twice in the batch; a malformed gate or nonce", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn upload_batch(
    State(state): State<AppState>,
    door: DoorAccess,
    ApiJson(body): ApiJson<BatchRequest>,
) -> ApiResult<Response> {
    let scans = batch_scans(body)?;
    let nonces: Vec<String> = scans.iter().map(|s| s.nonce.as_str().to_owned()).collect();
    let outcomes =
        checkin::upload(&state.pool, &state.admission_keys, door.event_id(), scans).await?;
    let results = nonces
        .into_iter()
        .zip(outcomes)
        .map(|(nonce, outcome)| {
            let (at, gate) = match outcome.first {
                Some(first) if outcome.result != ScanResult::Revoked => {
                    (Some(to_stored_precision(first.at)), first.gate)
                }
                _ => (None, None),
            };
            BatchResult {
                nonce,
                result: outcome.result,
                first_checked_in_at: at,
                first_gate: gate,
            }
        })
        .collect();
    json(StatusCode::OK, &BatchResponse { results })
}

/// One scan of a conflict.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConflictScan {
    #[serde(with = "time::serde::rfc3339")]
    pub scanned_at: OffsetDateTime,
    pub gate: Option<String>,
    /// The scan's nonce (null: an online scan sent without one).
    pub nonce: Option<String>,
}

/// Two scans that both let the same person in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConflictView {
    pub admission_id: Uuid,
    pub ticket_type_id: Uuid,
    /// The earlier scan: the admission's check-in.
    pub admitted: ConflictScan,
    /// The later scan, which let the same ticket in again.
    pub conflicting: ConflictScan,
    /// When the server learnt of the conflict.
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}

/// The answer of `GET /events/{id}/checkins/conflicts`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConflictsResponse {
    pub conflicts: Vec<ConflictView>,
}

/// The event's check-in conflicts, oldest recorded first: each is one ticket let in twice, at
/// least once by a device deciding offline (docs/admission.md says what to do about them).
#[utoipa::path(
    get, path = "/events/{id}/checkins/conflicts", tag = "checkin",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Event id")),
    responses(
        (status = 200, description = "The conflicts", body = ConflictsResponse),
        (status = 400, description = "BAD_REQUEST: id is not a UUID", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: no bearer token", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: not a door, organiser or admin token, or a door token of another event", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn list_conflicts(
    State(state): State<AppState>,
    door: DoorAccess,
) -> ApiResult<Response> {
    let scan = |at: OffsetDateTime, gate, nonce| ConflictScan {
        scanned_at: to_stored_precision(at),
        gate,
        nonce,
    };
    let conflicts = db::checkins::conflicts(&state.pool, door.event_id())
        .await?
        .ok_or(Error::NotFound("event"))?
        .into_iter()
        .map(|c| ConflictView {
            admission_id: c.admission_id,
            ticket_type_id: c.ticket_type_id,
            admitted: scan(c.admitted.at, c.admitted.gate, c.admitted_nonce),
            conflicting: scan(c.conflicting.at, c.conflicting.gate, c.conflicting_nonce),
            recorded_at: to_stored_precision(c.recorded_at),
        })
        .collect();
    json(StatusCode::OK, &ConflictsResponse { conflicts })
}

/// One ticket type's admissions by status.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeCheckins {
    pub ticket_type_id: Uuid,
    pub name: String,
    pub admitted: i64,
    pub valid: i64,
    pub revoked: i64,
}

/// The checked-in admissions of one gate.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GateCheckins {
    /// The gate (null: scans that named none).
    pub gate: Option<String>,
    pub admitted: i64,
}

/// The answer of `GET /events/{id}/checkins/stats`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckinStats {
    /// Admissions checked in (status `checked_in`).
    pub admitted: i64,
    /// Admissions not used yet.
    pub valid: i64,
    /// Admissions revoked by refunds (including any revoked after entry).
    pub revoked: i64,
    /// Every ticket type of the event, in creation order.
    pub by_ticket_type: Vec<TypeCheckins>,
    /// Checked-in admissions by gate, null gate first, then by name.
    pub by_gate: Vec<GateCheckins>,
}

/// The event's admissions by status, per ticket type and per gate, from one snapshot.
#[utoipa::path(
    get, path = "/events/{id}/checkins/stats", tag = "checkin",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Event id")),
    responses(
        (status = 200, description = "The statistics", body = CheckinStats),
        (status = 400, description = "BAD_REQUEST: id is not a UUID", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: no bearer token", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: not a door, organiser or admin token, or a door token of another event", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn checkin_stats(State(state): State<AppState>, door: DoorAccess) -> ApiResult<Response> {
    let (types, gates) = db::checkins::stats(&state.pool, door.event_id())
        .await?
        .ok_or(Error::NotFound("event"))?;
    let sum = |f: fn(&db::checkins::TypeCounts) -> i64| types.iter().map(f).sum();
    json(
        StatusCode::OK,
        &CheckinStats {
            admitted: sum(|t| t.admitted),
            valid: sum(|t| t.valid),
            revoked: sum(|t| t.revoked),
            by_ticket_type: types
                .iter()
                .map(|t| TypeCheckins {
                    ticket_type_id: t.ticket_type_id,
                    name: t.name.clone(),
                    admitted: t.admitted,
                    valid: t.valid,
                    revoked: t.revoked,
                })
                .collect(),
            by_gate: gates
                .into_iter()
                .map(|(gate, admitted)| GateCheckins { gate, admitted })
                .collect(),
        },
    )
}

/// A public key a device verifies codes with.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportKey {
    /// The key id: 8 lowercase hex characters, bytes 1–4 of a code.
    #[schema(example = "1a2b3c4d")]
    pub id: String,
    #[schema(example = "Ed25519")]
    pub algorithm: &'static str,
    /// The 32 raw bytes of the public key, base64url without padding.
    pub public_key: String,
}

/// A checked-in admission in the export.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportAdmitted {
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub checked_in_at: OffsetDateTime,
    pub gate: Option<String>,
}

/// The answer of `GET /events/{id}/checkin/export`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckinExport {
    pub event_id: Uuid,
    /// The database clock at the read: check-ins and refunds after it are not included.
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// Every registered key, so codes signed before a rotation verify too.
    pub keys: Vec<ExportKey>,
    /// The ids of revoked admissions: never admit.
    pub revoked: Vec<Uuid>,
    /// The checked-in admissions: a scan of one is a duplicate.
    pub admitted: Vec<ExportAdmitted>,
}

/// What a door device needs to decide alone: the public keys, the revoked admissions and the
/// checked-in ones (docs/admission.md, "Offline scanning").
#[utoipa::path(
    get, path = "/events/{id}/checkin/export", tag = "checkin",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Event id")),
    responses(
        (status = 200, description = "The export", body = CheckinExport),
        (status = 400, description = "BAD_REQUEST: id is not a UUID", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: no bearer token", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: not a door, organiser or admin token, or a door token of another event", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn checkin_export(
    State(state): State<AppState>,
    door: DoorAccess,
) -> ApiResult<Response> {
    let event_id = door.event_id();
    let read = db::checkins::export(&state.pool, event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    let keys = db::signing_keys::all(&state.pool)
        .await?
        .into_iter()
        .filter_map(|stored| public_key(&stored.public_key))
        .map(|key| ExportKey {
            id: KeyId::of(&key).to_hex(),
            algorithm: "Ed25519",
            public_key: URL_SAFE_NO_PAD.encode(key.as_bytes()),
        })
        .collect();
    json(
        StatusCode::OK,
        &CheckinExport {
            event_id,
            generated_at: to_stored_precision(read.generated_at),
            keys,
            revoked: read.revoked,
            admitted: read
                .admitted
                .into_iter()
                .map(|(id, first)| ExportAdmitted {
                    id,
                    checked_in_at: to_stored_precision(first.at),
                    gate: first.gate,
                })
                .collect(),
        },
    )
}
