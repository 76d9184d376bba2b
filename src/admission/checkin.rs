//! Check-in at the door: one scan (`POST /events/{id}/checkins`) and an uploaded batch of
//! offline scans (`POST /events/{id}/checkins/batch`). Neither takes the event row lock: a
//! check-in moves no sale counts. The lock order and why exactly one of simultaneous scans
//! admits are in docs/concurrency.md.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

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
use crate::purchase::Batching;
use crate::purchase::coalescer::{BatchWork, Coalescer};

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

/// Reads and verifies a code scanned in a request that `arrived` then, and checks it names
/// the event. Errors: the code is not valid (`INVALID_TICKET_CODE`) or of another event
/// (`WRONG_EVENT`), decided before any database work but a reload of the keys
/// ([`AdmissionKeys::verify`]).
async fn read_code(
    keys: &AdmissionKeys,
    event_id: Uuid,
    text: &str,
    arrived: Instant,
) -> Result<Result<AdmissionCode, ScanRefusal>, Error> {
    Ok(match keys.verify(text, arrived).await? {
        Err(_) => Err(ScanRefusal::InvalidCode),
        Ok(code) if code.event_id != event_id => Err(ScanRefusal::WrongEvent),
        Ok(code) => Ok(code),
    })
}

/// A scan whose code was verified and names an admission of the event: what the database
/// work needs.
#[derive(Debug, Clone)]
struct KnownScan {
    event_id: Uuid,
    admission_id: Uuid,
    gate: Option<String>,
    nonce: Option<Nonce>,
}

/// Sends single scans to the database: one transaction per scan, or the scans of one event
/// that arrive together in one transaction ([`Batching`], from `--purchase-mode` and
/// `--purchase-batch-max`, as for purchases). Cheap to clone; clones share the batches.
#[derive(Clone)]
pub struct Checkins {
    pool: PgPool,
    keys: Arc<AdmissionKeys>,
    batches: Option<Coalescer<KnownScan, Result<Admitted, Error>>>,
}

impl Checkins {
    /// Check-ins on `pool`, verifying codes with `keys`, batched or one by one as `batching`
    /// says.
    pub fn new(pool: PgPool, keys: Arc<AdmissionKeys>, batching: Batching) -> Self {
        let batches = match batching {
            Batching::Batched { max_batch } => {
                let pool = pool.clone();
                let work: BatchWork<KnownScan, Result<Admitted, Error>> =
                    Arc::new(move |_lane, scans| {
                        let pool = pool.clone();
                        Box::pin(async move { check_in_lane(&pool, scans).await })
                    });
                Some(Coalescer::new(max_batch, work))
            }
            Batching::PerRequest => None,
        };
        Self {
            pool,
            keys,
            batches,
        }
    }

    /// Checks in the admission `scan` names, once. Errors: every [`ScanRefusal`]; a retry
    /// with the nonce of an earlier scan of the same admission gets that scan's answer
    /// (admitted or refused), one with the nonce of a scan of another admission
    /// `NonceReused`. The code is read before the scan joins a batch: an invalid code or one
    /// of another event never reaches the database.
    pub async fn check_in(&self, event_id: Uuid, scan: Scan) -> Result<Admitted, Error> {
        let code = read_code(&self.keys, event_id, &scan.code, Instant::now()).await??;
        let scan = KnownScan {
            event_id,
            admission_id: code.admission_id,
            gate: scan.gate.map(|g| g.as_str().to_owned()),
            nonce: scan.nonce,
        };
        match &self.batches {
            Some(batches) => {
                batches
                    .submit(lane(event_id, scan.admission_id), scan)
                    .await?
            }
            None => check_in_one(&self.pool, event_id, scan).await,
        }
    }
}

/// Lanes per event: the coalescer runs one batch at a time per key, and a check-in takes no
/// event lock, so an event's scans are spread over this many keys by admission and their
/// batches run side by side (one per core of the machine measured). Every scan of one
/// admission takes the same lane, so a batch still sees all of an admission's scans that
/// arrived together; batches of different lanes touch different admissions, and take nonces
/// and admissions in the one order every check-in keeps, so they cannot wait on each other in
/// a cycle (docs/concurrency.md).
const LANES: u128 = 2;

/// The coalescer key of an admission's scans: the event id with its lowest bits replaced
/// by the lane. Two events whose ids differ only in those bits may share a key; a batch then
/// holds scans of both, and [`check_in_lane`] runs each event's scans apart.
fn lane(event_id: Uuid, admission_id: Uuid) -> Uuid {
    let lane = admission_id.as_u128() % LANES;
    Uuid::from_u128((event_id.as_u128() & !(LANES - 1)) | lane)
}

/// A lane's batch: the scans of each event it holds (nearly always one) in one transaction
/// per event, answers in the batch's order.
async fn check_in_lane(pool: &PgPool, scans: Vec<KnownScan>) -> Vec<Result<Admitted, Error>> {
    let mut events: Vec<Uuid> = scans.iter().map(|s| s.event_id).collect();
    events.dedup();
    if events.len() == 1 {
        return check_in_batch(pool, events[0], scans).await;
    }
    events.sort();
    events.dedup();
    let mut answers: Vec<Option<Result<Admitted, Error>>> = scans.iter().map(|_| None).collect();
    for event_id in events {
        let (positions, of_event): (Vec<usize>, Vec<KnownScan>) = scans
            .iter()
            .enumerate()
            .filter(|(_, s)| s.event_id == event_id)
            .map(|(i, s)| (i, s.clone()))
            .unzip();
        for (i, answer) in positions
            .into_iter()
            .zip(check_in_batch(pool, event_id, of_event).await)
        {
            answers[i] = Some(answer);
        }
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(Error::internal("a scan of a lane was not answered"))))
        .collect()
}

/// One scan in its own transaction (see [`Checkins::check_in`]).
async fn check_in_one(pool: &PgPool, event_id: Uuid, scan: KnownScan) -> Result<Admitted, Error> {
    let gate = scan.gate.as_deref();
    let Some(nonce) = scan.nonce else {
        // No nonce, nothing to record: the conditional UPDATE alone, in its own transaction.
        let mut conn = pool.acquire().await?;
        return Ok(admit_or_refuse(&mut conn, event_id, scan.admission_id, gate).await??);
    };
    // The nonce is claimed before the admission is touched (lock order: nonce, then
    // admission), and the answer is recorded in the same transaction as the admit, so a
    // retry sees both or neither.
    let mut tx = pool.begin().await?;
    let claim = ScanClaim {
        nonce: nonce.clone(),
        admission_id: scan.admission_id,
        scanned_at: OffsetDateTime::now_utc(),
        gate: scan.gate.clone(),
    };
    let claimed = db::checkins::claim(&mut tx, event_id, ScanSource::Online, &[claim]).await?;
    if claimed.is_empty() {
        // Stored by an earlier scan (a concurrent one was waited for), or no admission of
        // this event has the code's id.
        let stored = db::checkins::stored_answers(&mut tx, event_id, &[nonce.as_str()]).await?;
        tx.rollback().await?;
        return match stored.get(nonce.as_str()) {
            None => Err(ScanRefusal::InvalidCode.into()),
            Some(answer) if answer.admission_id != scan.admission_id => {
                Err(ScanRefusal::NonceReused.into())
            }
            Some(answer) => match replay(answer.result, answer.first.clone())? {
                Ok(first) => {
                    let admission = db::checkins::find(
                        &mut *pool.acquire().await?,
                        event_id,
                        scan.admission_id,
                    )
                    .await?
                    .ok_or_else(|| Error::internal("a recorded scan's admission is gone"))?;
                    Ok(Admitted { admission, first })
                }
                Err(refusal) => Err(refusal.into()),
            },
        };
    }
    let outcome = admit_or_refuse(&mut tx, event_id, scan.admission_id, gate).await?;
    let Some((result, first)) = recorded(&outcome) else {
        // The claim joined an admission of this event, so it exists: nothing else is
        // expected here. Nothing is recorded.
        return Err(outcome.err().unwrap_or(ScanRefusal::InvalidCode).into());
    };
    // An admit is the claim's provisional answer already (this transaction's time, this
    // scan's gate); any other answer replaces it before the commit.
    if outcome.is_err() {
        db::checkins::record_answers(&mut tx, event_id, &[(nonce.as_str(), result, first)]).await?;
    }
    tx.commit().await?;
    Ok(outcome?)
}

/// What a scan's nonce records of its outcome: its result and the check-in answered. `None`
/// for a refusal a claimed nonce cannot meet (its admission exists and is of the event).
fn recorded(outcome: &Result<Admitted, ScanRefusal>) -> Option<(ScanResult, Option<&CheckedIn>)> {
    match outcome {
        Ok(admitted) => Some((ScanResult::Admitted, Some(&admitted.first))),
        Err(ScanRefusal::AlreadyCheckedIn { first }) => Some((ScanResult::Duplicate, Some(first))),
        Err(ScanRefusal::Revoked) => Some((ScanResult::Revoked, None)),
        Err(_) => None,
    }
}

/// The scans of one event that arrived together, in one transaction, each answered exactly
/// as [`check_in_one`] would have answered it had they run one after another in arrival
/// order. A failed transaction answers every scan with its error (it wrote nothing).
///
/// Locks, in the order of every check-in (docs/concurrency.md, "Check-in"): the batch's
/// nonces in nonce order (one `INSERT … ORDER BY nonce`), then its admissions in id order
/// (`FOR NO KEY UPDATE`), so two batches (on two instances), a batch and an offline upload,
/// and a batch and the refund trigger (admissions in id order, after the refund's event and
/// allocation locks, which no check-in takes) never wait on each other in a cycle.
async fn check_in_batch(
    pool: &PgPool,
    event_id: Uuid,
    scans: Vec<KnownScan>,
) -> Vec<Result<Admitted, Error>> {
    match decide_scans(pool, event_id, &scans).await {
        Ok((mut answers, deferred)) => {
            // Rare: a later scan reusing, for another admission, a nonce the batch's first
            // scan of it could not claim (its code named no admission). Run alone, after the
            // batch, it claims the nonce as it would have after that first scan.
            for i in deferred {
                answers[i] = check_in_one(pool, event_id, scans[i].clone()).await;
            }
            answers
        }
        Err(err) => scans.iter().map(|_| Err(err.clone())).collect(),
    }
}

/// The batch's transaction (see [`check_in_batch`]): the answer of each scan, in arrival
/// order, and the scans left to run alone after it.
async fn decide_scans(
    pool: &PgPool,
    event_id: Uuid,
    scans: &[KnownScan],
) -> Result<(Vec<Result<Admitted, Error>>, Vec<usize>), Error> {
    let mut answers: Vec<Result<Admitted, Error>> = scans
        .iter()
        .map(|_| Err(Error::internal("a coalesced scan was not answered")))
        .collect();
    // Each nonce is claimed by its first scan in arrival order; a later scan with it follows
    // that one (deduplicated here: one statement cannot claim a key twice).
    let mut claimant: HashMap<&str, usize> = HashMap::new();
    let mut followers: Vec<(usize, usize)> = Vec::new();
    let mut claims: Vec<ScanClaim> = Vec::new();
    let now = OffsetDateTime::now_utc();
    for (i, scan) in scans.iter().enumerate() {
        let Some(nonce) = &scan.nonce else { continue };
        match claimant.get(nonce.as_str()) {
            Some(&first) => followers.push((i, first)),
            None => {
                claimant.insert(nonce.as_str(), i);
                claims.push(ScanClaim {
                    nonce: nonce.clone(),
                    admission_id: scan.admission_id,
                    scanned_at: now,
                    gate: scan.gate.clone(),
                });
            }
        }
    }
    let mut tx = pool.begin().await?;
    // Nonces first, in nonce order (the statement sorts them): see `check_in_batch`.
    let claimed = if claims.is_empty() {
        Vec::new()
    } else {
        db::checkins::claim(&mut tx, event_id, ScanSource::Online, &claims).await?
    };
    let claimed_set: HashSet<&str> = claimed.iter().map(String::as_str).collect();
    // Scans that try to admit (the claimants that claimed, and scans without a nonce) and
    // claimants that found their nonce taken, each in arrival order.
    let (mut admitting, mut replaying) = (Vec::new(), Vec::new());
    for (i, scan) in scans.iter().enumerate() {
        match &scan.nonce {
            None => admitting.push(i),
            Some(nonce) if claimant[nonce.as_str()] != i => {}
            Some(nonce) if claimed_set.contains(nonce.as_str()) => admitting.push(i),
            Some(_) => replaying.push(i),
        }
    }
    if !replaying.is_empty() {
        replay_stored(&mut tx, event_id, scans, &replaying, &mut answers).await?;
    }
    if !admitting.is_empty() {
        admit_scans(&mut tx, event_id, scans, &admitting, &claimed, &mut answers).await?;
    }
    tx.commit().await?;
    let mut deferred = Vec::new();
    for (i, first) in followers {
        if scans[i].admission_id == scans[first].admission_id {
            // A retry of the same scan: the first one's answer, as its stored answer would be.
            answers[i] = answers[first].clone();
        } else if claimed_set.contains(scans[first].nonce.as_ref().map_or("", Nonce::as_str)) {
            answers[i] = Err(ScanRefusal::NonceReused.into());
        } else {
            deferred.push(i);
        }
    }
    Ok((answers, deferred))
}

/// Answers the scans `replaying`, whose nonces were stored before, as their stored answers
/// say (see [`check_in_one`]).
async fn replay_stored(
    conn: &mut PgConnection,
    event_id: Uuid,
    scans: &[KnownScan],
    replaying: &[usize],
    answers: &mut [Result<Admitted, Error>],
) -> Result<(), Error> {
    let nonce = |i: usize| scans[i].nonce.as_ref().map_or("", Nonce::as_str);
    let nonces: Vec<&str> = replaying.iter().map(|&i| nonce(i)).collect();
    let stored = db::checkins::stored_answers(conn, event_id, &nonces).await?;
    let mut admitted: Vec<(usize, CheckedIn)> = Vec::new();
    for &i in replaying {
        answers[i] = match stored.get(nonce(i)) {
            None => Err(ScanRefusal::InvalidCode.into()),
            Some(answer) if answer.admission_id != scans[i].admission_id => {
                Err(ScanRefusal::NonceReused.into())
            }
            Some(answer) => match replay(answer.result, answer.first.clone())? {
                Ok(first) => {
                    admitted.push((i, first));
                    continue;
                }
                Err(refusal) => Err(refusal.into()),
            },
        };
    }
    if admitted.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = admitted
        .iter()
        .map(|(i, _)| scans[*i].admission_id)
        .collect();
    let found: HashMap<Uuid, StoredAdmission> = db::checkins::find_all(conn, event_id, &ids)
        .await?
        .into_iter()
        .map(|a| (a.id, a))
        .collect();
    for (i, first) in admitted {
        let admission = found
            .get(&scans[i].admission_id)
            .cloned()
            .ok_or_else(|| Error::internal("a recorded scan's admission is gone"))?;
        answers[i] = Ok(Admitted { admission, first });
    }
    Ok(())
}

/// Decides and records the scans `admitting` (their nonces claimed by this transaction, or
/// none): the first of them in arrival order to name a valid admission checks it in, at the
/// transaction's time with its gate; the later ones of that admission are duplicates of it.
async fn admit_scans(
    conn: &mut PgConnection,
    event_id: Uuid,
    scans: &[KnownScan],
    admitting: &[usize],
    claimed: &[String],
    answers: &mut [Result<Admitted, Error>],
) -> Result<(), Error> {
    let mut ids: Vec<Uuid> = admitting.iter().map(|&i| scans[i].admission_id).collect();
    ids.sort();
    ids.dedup();
    // Admissions in id order, after the nonces, FOR NO KEY UPDATE (the mode of the UPDATE
    // that follows; `db::checkins::lock_states` says why).
    let states = db::checkins::lock_states(conn, event_id, &ids, claimed).await?;
    // The rows are locked and read as committed: a valid one is checked in by this
    // transaction alone, by the first scan of it in arrival order.
    let mut admitter: HashMap<Uuid, usize> = HashMap::new();
    for &i in admitting {
        let id = scans[i].admission_id;
        if states.get(&id) == Some(&DoorState::Valid) {
            admitter.entry(id).or_insert(i);
        }
    }
    let check_ins: Vec<(Uuid, Option<&str>)> = admitter
        .iter()
        .map(|(&id, &i)| (id, scans[i].gate.as_deref()))
        .collect();
    let checked_in: HashMap<Uuid, Admitted> = db::checkins::admit_all(conn, event_id, &check_ins)
        .await?
        .into_iter()
        .map(|admission| {
            let at = admission
                .checked_in_at
                .ok_or_else(|| Error::internal("a checked-in admission without its time"))?;
            let first = CheckedIn {
                at,
                gate: admission.gate.clone(),
            };
            Ok((admission.id, Admitted { admission, first }))
        })
        .collect::<Result<_, Error>>()?;
    let mut outcomes: Vec<(usize, Result<Admitted, ScanRefusal>)> = Vec::new();
    for &i in admitting {
        let id = scans[i].admission_id;
        let outcome = match states.get(&id) {
            None => Err(ScanRefusal::InvalidCode),
            Some(DoorState::Revoked { .. }) => Err(ScanRefusal::Revoked),
            Some(DoorState::CheckedIn { first, .. }) => Err(ScanRefusal::AlreadyCheckedIn {
                first: first.clone(),
            }),
            Some(DoorState::Valid) => {
                let admitted = checked_in.get(&id).ok_or_else(|| {
                    Error::internal(format!(
                        "admission {id} stayed valid under the batch's lock"
                    ))
                })?;
                if admitter.get(&id) == Some(&i) {
                    Ok(admitted.clone())
                } else {
                    Err(ScanRefusal::AlreadyCheckedIn {
                        first: admitted.first.clone(),
                    })
                }
            }
        };
        outcomes.push((i, outcome));
    }
    let mut records = Vec::new();
    for (i, outcome) in &outcomes {
        let Some(nonce) = &scans[*i].nonce else {
            continue;
        };
        // A claim joined an admission of this event, so every claimed scan's admission was
        // locked and read: an unrecordable outcome would leave a provisional answer behind.
        let (result, first) = recorded(outcome)
            .ok_or_else(|| Error::internal("a claimed scan's admission is gone"))?;
        // The scan that checked its admission in here got the claim's provisional answer
        // (this transaction's time, its own gate): nothing to write.
        if outcome.is_err() {
            records.push((nonce.as_str(), result, first));
        }
    }
    if !records.is_empty() {
        db::checkins::record_answers(conn, event_id, &records).await?;
    }
    for (i, outcome) in outcomes {
        answers[i] = outcome.map_err(Error::from);
    }
    Ok(())
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
    // Every scan of the batch is of this request: codes of keys unknown to this instance
    // share at most one reload of the keys.
    let arrived = Instant::now();
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
        match read_code(keys, event_id, &scan.code, arrived).await? {
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
