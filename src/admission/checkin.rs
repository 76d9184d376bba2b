//! Check-in at the door: one scan (`POST /events/{id}/checkins`) and an uploaded batch of
//! offline scans (`POST /events/{id}/checkins/batch`). Neither takes the event row lock: a
//! check-in moves no sale counts. The lock order and why exactly one of simultaneous scans
//! admits are in docs/concurrency.md.

use std::collections::HashSet;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::keys::AdmissionKeys;
use crate::db;
use crate::db::checkins::{ScanClaim, ScanSource};
use crate::domain::admission::{AdmissionCode, StoredAdmission};
use crate::domain::checkin::{
    self, CheckedIn, DoorState, Gate, Nonce, OfflineScan, ScanOutcome, ScanRefusal, ScanResult,
};
use crate::error::Error;

/// One scan at the door, validated.
#[derive(Debug, Clone)]
pub struct Scan {
    /// The code as scanned or typed.
    pub code: String,
    pub gate: Option<Gate>,
    /// The device's name for this scan: a retry with the same nonce gets the first answer.
    pub nonce: Option<Nonce>,
}

/// A scan that admitted: the admission as it stands, and its check-in as answered (for a
/// retried scan, as first answered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub admission: StoredAdmission,
    pub first: CheckedIn,
}

/// Reads and verifies a code and checks it names the event. Errors: the code is not valid
/// (`INVALID_TICKET_CODE`) or of another event (`WRONG_EVENT`), decided before any database
/// work but a reload of the keys.
async fn read_code(
    keys: &AdmissionKeys,
    event_id: Uuid,
    text: &str,
) -> Result<Result<AdmissionCode, ScanRefusal>, Error> {
    Ok(match keys.verify(text).await? {
        Err(_) => Err(ScanRefusal::InvalidCode),
        Ok(code) if code.event_id != event_id => Err(ScanRefusal::WrongEvent),
        Ok(code) => Ok(code),
    })
}

/// Checks in the admission `scan` names, once. Errors: every [`ScanRefusal`]; a retry with
/// the nonce of an earlier scan of the same admission gets that scan's answer (admitted or
/// refused), one with the nonce of a scan of another admission `NonceReused`.
pub async fn check_in(
    pool: &PgPool,
    keys: &AdmissionKeys,
    event_id: Uuid,
    scan: Scan,
) -> Result<Admitted, Error> {
    let code = read_code(keys, event_id, &scan.code).await??;
    let gate = scan.gate.as_ref().map(Gate::as_str);
    let Some(nonce) = scan.nonce else {
        // No nonce, nothing to record: the conditional UPDATE alone, in its own transaction.
        let mut conn = pool.acquire().await?;
        return Ok(admit_or_refuse(&mut conn, event_id, code.admission_id, gate).await??);
    };
    // The nonce is claimed before the admission is touched (lock order: nonce, then
    // admission), and the answer is recorded in the same transaction as the admit, so a
    // retry sees both or neither.
    let mut tx = pool.begin().await?;
    let claim = ScanClaim {
        nonce: nonce.clone(),
        admission_id: code.admission_id,
        scanned_at: OffsetDateTime::now_utc(),
        gate: gate.map(str::to_owned),
    };
    let claimed = db::checkins::claim(&mut tx, event_id, ScanSource::Online, &[claim]).await?;
    if claimed.is_empty() {
        // Stored by an earlier scan (a concurrent one was waited for), or no admission of
        // this event has the code's id.
        let stored = db::checkins::stored_answers(&mut tx, event_id, &[nonce.as_str()]).await?;
        tx.rollback().await?;
        return match stored.get(nonce.as_str()) {
            None => Err(ScanRefusal::InvalidCode.into()),
            Some(answer) if answer.admission_id != code.admission_id => {
                Err(ScanRefusal::NonceReused.into())
            }
            Some(answer) => match replay(answer.result, answer.first.clone())? {
                Ok(first) => {
                    let admission = db::checkins::find(
                        &mut *pool.acquire().await?,
                        event_id,
                        code.admission_id,
                    )
                    .await?
                    .ok_or_else(|| Error::internal("a recorded scan's admission is gone"))?;
                    Ok(Admitted { admission, first })
                }
                Err(refusal) => Err(refusal.into()),
            },
        };
    }
    let outcome = admit_or_refuse(&mut tx, event_id, code.admission_id, gate).await?;
    let (result, first) = match &outcome {
        Ok(admitted) => (ScanResult::Admitted, Some(&admitted.first)),
        Err(ScanRefusal::AlreadyCheckedIn { first }) => (ScanResult::Duplicate, Some(first)),
        Err(ScanRefusal::Revoked) => (ScanResult::Revoked, None),
        Err(refusal) => {
            // The claim joined an admission of this event, so it exists: nothing else is
            // expected here. Nothing is recorded.
            return Err(refusal.clone().into());
        }
    };
    db::checkins::record_answers(&mut tx, event_id, &[(nonce.as_str(), result, first)]).await?;
    tx.commit().await?;
    Ok(outcome?)
}

/// The answer a scan recorded as `result` stands for, given again: the check-in it admitted
/// with, or its refusal.
fn replay(
    result: ScanResult,
    first: Option<CheckedIn>,
) -> Result<Result<CheckedIn, ScanRefusal>, Error> {
    match (result, first) {
        (ScanResult::Admitted, Some(first)) => Ok(Ok(first)),
        (ScanResult::Duplicate, Some(first)) => Ok(Err(ScanRefusal::AlreadyCheckedIn { first })),
        (ScanResult::Revoked, _) => Ok(Err(ScanRefusal::Revoked)),
        (result, first) => Err(Error::internal(format!(
            "stored scan answer {result:?} with check-in {first:?}"
        ))),
    }
}

/// The conditional admit, and when it changed nothing, why: the admission as committed after
/// the row lock it waited for (if any) was released.
async fn admit_or_refuse(
    conn: &mut PgConnection,
    event_id: Uuid,
    admission_id: Uuid,
    gate: Option<&str>,
) -> Result<Result<Admitted, ScanRefusal>, Error> {
    if let Some(admission) = db::checkins::admit(conn, event_id, admission_id, gate).await? {
        let at = admission
            .checked_in_at
            .ok_or_else(|| Error::internal("a checked-in admission without its time"))?;
        let first = CheckedIn {
            at,
            gate: admission.gate.clone(),
        };
        return Ok(Ok(Admitted { admission, first }));
    }
    Ok(Err(
        match db::checkins::door_state(conn, event_id, admission_id).await? {
            None => ScanRefusal::InvalidCode,
            Some(DoorState::CheckedIn { first, .. }) => ScanRefusal::AlreadyCheckedIn { first },
            Some(DoorState::Revoked { .. }) => ScanRefusal::Revoked,
            Some(DoorState::Valid) => {
                return Err(Error::internal(format!(
                    "admission {admission_id} stayed valid after a conditional check-in"
                )));
            }
        },
    ))
}

/// One scan of an uploaded batch, validated.
#[derive(Debug, Clone)]
pub struct BatchScan {
    pub code: String,
    pub gate: Option<Gate>,
    /// When the device scanned it.
    pub scanned_at: OffsetDateTime,
    pub nonce: Nonce,
}

/// Decides and records a batch of offline scans (nonces unique within the batch) in one
/// transaction; the outcome of each scan, in the order given. See [`checkin::decide_batch`]
/// for the rule; a nonce already recorded gets its recorded answer (`invalid` if it was for
/// another admission), so uploading a batch again changes nothing.
pub async fn upload(
    pool: &PgPool,
    keys: &AdmissionKeys,
    event_id: Uuid,
    scans: Vec<BatchScan>,
) -> Result<Vec<ScanOutcome>, Error> {
    let mut tx = pool.begin().await?;
    // The upload's time is the database's (as every time the API records), and an unknown
    // event is a 404 rather than a batch of `invalid`s.
    let now = db::checkins::event_clock(&mut tx, event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    let mut outcomes = vec![
        ScanOutcome {
            result: ScanResult::Invalid,
            first: None,
        };
        scans.len()
    ];
    let mut candidates: Vec<(usize, OfflineScan)> = Vec::new();
    for (i, scan) in scans.into_iter().enumerate() {
        match read_code(keys, event_id, &scan.code).await? {
            Err(ScanRefusal::WrongEvent) => outcomes[i].result = ScanResult::WrongEvent,
            Err(_) => {}
            Ok(code) => candidates.push((
                i,
                OfflineScan {
                    admission_id: code.admission_id,
                    nonce: scan.nonce,
                    gate: scan.gate.map(|g| g.as_str().to_owned()),
                    at: checkin::clamp_scanned_at(scan.scanned_at, now),
                },
            )),
        }
    }
    if candidates.is_empty() {
        return Ok(outcomes);
    }
    // Nonces first (claimed in nonce order), then the admissions (locked in id order): every
    // scan and batch takes them in this order, so none waits on another in a cycle.
    let claims: Vec<ScanClaim> = candidates
        .iter()
        .map(|(_, s)| ScanClaim {
            nonce: s.nonce.clone(),
            admission_id: s.admission_id,
            scanned_at: s.at,
            gate: s.gate.clone(),
        })
        .collect();
    let claimed = db::checkins::claim(&mut tx, event_id, ScanSource::Offline, &claims).await?;
    let claimed_set: HashSet<&str> = claimed.iter().map(String::as_str).collect();
    let (fresh, seen): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .partition(|(_, s)| claimed_set.contains(s.nonce.as_str()));
    if !seen.is_empty() {
        let nonces: Vec<&str> = seen.iter().map(|(_, s)| s.nonce.as_str()).collect();
        let stored = db::checkins::stored_answers(&mut tx, event_id, &nonces).await?;
        for (i, scan) in &seen {
            // Not stored: the code's id names no admission of the event.
            if let Some(answer) = stored
                .get(scan.nonce.as_str())
                .filter(|a| a.admission_id == scan.admission_id)
            {
                outcomes[*i] = ScanOutcome {
                    result: answer.result,
                    first: answer.first.clone(),
                };
            }
        }
    }
    if !fresh.is_empty() {
        let mut ids: Vec<Uuid> = fresh.iter().map(|(_, s)| s.admission_id).collect();
        ids.sort();
        ids.dedup();
        let states = db::checkins::lock_states(&mut tx, event_id, &ids, &claimed).await?;
        let offline: Vec<OfflineScan> = fresh.iter().map(|(_, s)| s.clone()).collect();
        let decision = checkin::decide_batch(&offline, &states);
        db::checkins::set_check_ins(&mut tx, event_id, &decision.check_ins).await?;
        db::checkins::insert_conflicts(&mut tx, event_id, &decision.conflicts).await?;
        let answers: Vec<(&str, ScanResult, Option<&CheckedIn>)> = fresh
            .iter()
            .zip(&decision.outcomes)
            .map(|((_, s), o)| (s.nonce.as_str(), o.result, o.first.as_ref()))
            .collect();
        db::checkins::record_answers(&mut tx, event_id, &answers).await?;
        for ((i, _), outcome) in fresh.iter().zip(decision.outcomes) {
            outcomes[*i] = outcome;
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}
