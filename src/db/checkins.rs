//! SQL of check-in at the door: the admit itself, the scans recorded by nonce, offline
//! conflicts, and the event's check-in statistics and export. Lock order, for every caller:
//! `checkin_scans` rows (nonces, in nonce order) before `admissions` rows (in id order); a
//! check-in never locks the event row (it moves no sale counts). See docs/concurrency.md.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::admissions::{AdmissionRow, admission_columns};
use crate::domain::admission::StoredAdmission;
use crate::domain::checkin::{CheckedIn, Conflict, DoorState, Nonce, ScanResult};

/// Checks in one admission of the event if it is still valid, at the database's clock, in one
/// conditional `UPDATE`: of any number of simultaneous scans exactly one changes the row. The
/// others wait on its row lock and, at READ COMMITTED, re-check `status = 'valid'` against
/// the row as committed, which fails, so they update nothing. Returns the admission as
/// checked in; `None`: nothing was checked in (read [`door_state`] to say why).
pub async fn admit(
    conn: &mut PgConnection,
    event_id: Uuid,
    admission_id: Uuid,
    gate: Option<&str>,
) -> Result<Option<StoredAdmission>, sqlx::Error> {
    let row: Option<AdmissionRow> = sqlx::query_as(concat!(
        "UPDATE admissions d SET status = 'checked_in', checked_in_at = now(), gate = $3 \
         FROM ticket_types t \
         WHERE d.id = $1 AND d.event_id = $2 AND d.status = 'valid' AND t.id = d.ticket_type_id \
         RETURNING ",
        admission_columns!()
    ))
    .bind(admission_id)
    .bind(event_id)
    .bind(gate)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| row.0))
}

/// Checks in, at the transaction's time, each admission of `check_ins` (id, gate) that is
/// still valid, in one `UPDATE`: the coalesced scans of one event. The caller has locked them
/// (in id order, [`lock_states`]) and names each at most once; `status = 'valid'` is the same
/// guard as [`admit`]'s. The rows are reached by key only (see `db`): with the
/// `(event_id, status)` index, statistics older than a fast sale (many admissions made
/// moments ago) gave a walk over every valid admission of the event per batch (200–450 ms
/// for a batch of 200 with a nested loop, 15 ms with `d.id = ANY($2)` alone). Returns the
/// admissions checked in, in no particular order.
pub async fn admit_all(
    conn: &mut PgConnection,
    event_id: Uuid,
    check_ins: &[(Uuid, Option<&str>)],
) -> Result<Vec<StoredAdmission>, sqlx::Error> {
    if check_ins.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = check_ins.iter().map(|c| c.0).collect();
    let gates: Vec<Option<&str>> = check_ins.iter().map(|c| c.1).collect();
    let rows: Vec<AdmissionRow> = sqlx::query_as(concat!(
        "UPDATE admissions d SET status = 'checked_in', checked_in_at = now(), gate = c.gate \
         FROM unnest($2::uuid[], $3::text[]) AS c(id, gate), ticket_types t \
         WHERE d.id = ANY($2) AND d.id = c.id \
           AND (d.event_id = $1 AND d.status = 'valid') IS TRUE AND t.id = d.ticket_type_id \
         RETURNING ",
        admission_columns!()
    ))
    .bind(event_id)
    .bind(&ids)
    .bind(&gates)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.0).collect())
}

/// The admissions `ids` of the event, with their types' names, in one statement; an id the
/// event has no admission of adds nothing.
pub async fn find_all(
    conn: &mut PgConnection,
    event_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<StoredAdmission>, sqlx::Error> {
    let rows: Vec<AdmissionRow> = sqlx::query_as(concat!(
        "SELECT ",
        admission_columns!(),
        " FROM admissions d JOIN ticket_types t ON t.id = d.ticket_type_id \
          WHERE d.id = ANY($1) AND (d.event_id = $2) IS TRUE"
    ))
    .bind(ids)
    .bind(event_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.0).collect())
}

/// One admission of the event, with its type's name (`None`: the event has no such
/// admission).
pub async fn find(
    conn: &mut PgConnection,
    event_id: Uuid,
    admission_id: Uuid,
) -> Result<Option<StoredAdmission>, sqlx::Error> {
    let row: Option<AdmissionRow> = sqlx::query_as(concat!(
        "SELECT ",
        admission_columns!(),
        " FROM admissions d JOIN ticket_types t ON t.id = d.ticket_type_id \
          WHERE d.id = $1 AND d.event_id = $2"
    ))
    .bind(admission_id)
    .bind(event_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| row.0))
}

/// The admission of the event as last committed, without a lock (`None`: the event has no
/// such admission). The nonce of its check-in is not read.
pub async fn door_state(
    conn: &mut PgConnection,
    event_id: Uuid,
    admission_id: Uuid,
) -> Result<Option<DoorState>, sqlx::Error> {
    let row: Option<(String, Option<OffsetDateTime>, Option<String>)> = sqlx::query_as(
        "SELECT status, checked_in_at, gate FROM admissions WHERE id = $1 AND event_id = $2",
    )
    .bind(admission_id)
    .bind(event_id)
    .fetch_optional(conn)
    .await?;
    row.map(|(status, at, gate)| door_state_of(&status, at, gate, None))
        .transpose()
}

fn door_state_of(
    status: &str,
    at: Option<OffsetDateTime>,
    gate: Option<String>,
    nonce: Option<String>,
) -> Result<DoorState, sqlx::Error> {
    let first = at.map(|at| CheckedIn { at, gate });
    match (status, first) {
        ("valid", _) => Ok(DoorState::Valid),
        ("checked_in", Some(first)) => Ok(DoorState::CheckedIn { first, nonce }),
        ("revoked", first) => Ok(DoorState::Revoked { first }),
        (other, _) => Err(sqlx::Error::Decode(
            format!("admission status {other:?} without its check-in").into(),
        )),
    }
}

/// A scan to record by its nonce.
#[derive(Debug, Clone)]
pub struct ScanClaim {
    pub nonce: Nonce,
    pub admission_id: Uuid,
    pub scanned_at: OffsetDateTime,
    pub gate: Option<String>,
}

/// Where a recorded scan came from (`checkin_scans.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanSource {
    /// `POST /events/{id}/checkins`, decided by the server.
    Online,
    /// An uploaded batch, decided by a door device.
    Offline,
}

impl ScanSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
        }
    }
}

/// Claims the nonces of `scans` that name an admission of the event, inserting their rows in
/// nonce order, and returns the nonces claimed. A nonce already stored is not claimed; one
/// being inserted by a transaction still open is waited for (the primary key), then not
/// claimed if that transaction commits. Nonce order is the lock order of every claimer, so two
/// batches sharing nonces cannot wait on each other in a cycle. Each row is written with a
/// provisional answer: `admitted`, at the transaction's time (`now()`, the time the online
/// check-in's `UPDATE` gives), with the scan's gate, which is exactly the answer of an online
/// scan that checks its admission in within this transaction. The same transaction writes
/// any other answer ([`record_answers`]) before it commits, so no other transaction ever
/// reads a provisional answer that is not the real one; an online batch of first scans, the
/// common case at a door, then records nothing more.
pub async fn claim(
    conn: &mut PgConnection,
    event_id: Uuid,
    source: ScanSource,
    scans: &[ScanClaim],
) -> Result<Vec<String>, sqlx::Error> {
    let nonces: Vec<&str> = scans.iter().map(|s| s.nonce.as_str()).collect();
    let admissions: Vec<Uuid> = scans.iter().map(|s| s.admission_id).collect();
    let times: Vec<OffsetDateTime> = scans.iter().map(|s| s.scanned_at).collect();
    let gates: Vec<Option<&str>> = scans.iter().map(|s| s.gate.as_deref()).collect();
    sqlx::query_scalar(
        "INSERT INTO checkin_scans \
             (event_id, nonce, admission_id, source, scanned_at, gate, result, \
              first_checked_in_at, first_gate) \
         SELECT $1, s.nonce, s.admission_id, $2, s.scanned_at, s.gate, 'admitted', now(), \
             s.gate \
         FROM unnest($3::text[], $4::uuid[], $5::timestamptz[], $6::text[]) \
             AS s(nonce, admission_id, scanned_at, gate) \
         JOIN admissions d ON d.id = s.admission_id \
         WHERE d.id = ANY($4) AND (d.event_id = $1) IS TRUE \
         ORDER BY s.nonce \
         ON CONFLICT (event_id, nonce) DO NOTHING \
         RETURNING nonce",
    )
    .bind(event_id)
    .bind(source.as_str())
    .bind(&nonces)
    .bind(&admissions)
    .bind(&times)
    .bind(&gates)
    .fetch_all(conn)
    .await
}

/// A scan's answer as recorded under its nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub admission_id: Uuid,
    pub result: ScanResult,
    pub first: Option<CheckedIn>,
}

/// The recorded answers of the event's scans with these nonces.
pub async fn stored_answers(
    conn: &mut PgConnection,
    event_id: Uuid,
    nonces: &[&str],
) -> Result<HashMap<String, StoredAnswer>, sqlx::Error> {
    type Row = (String, Uuid, String, Option<OffsetDateTime>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT nonce, admission_id, result, first_checked_in_at, first_gate \
         FROM checkin_scans WHERE nonce = ANY($2) AND event_id = $1",
    )
    .bind(event_id)
    .bind(nonces)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|(nonce, admission_id, result, at, gate)| {
            let result = ScanResult::parse(&result).ok_or_else(|| {
                sqlx::Error::Decode(format!("unknown scan result {result:?}").into())
            })?;
            let first = at.map(|at| CheckedIn { at, gate });
            Ok((
                nonce,
                StoredAnswer {
                    admission_id,
                    result,
                    first,
                },
            ))
        })
        .collect()
}

/// Writes the answers of claimed scans: (nonce, result, the check-in as answered).
pub async fn record_answers(
    conn: &mut PgConnection,
    event_id: Uuid,
    answers: &[(&str, ScanResult, Option<&CheckedIn>)],
) -> Result<(), sqlx::Error> {
    let nonces: Vec<&str> = answers.iter().map(|a| a.0).collect();
    let results: Vec<&str> = answers.iter().map(|a| a.1.as_str()).collect();
    let times: Vec<Option<OffsetDateTime>> = answers.iter().map(|a| a.2.map(|f| f.at)).collect();
    let gates: Vec<Option<&str>> = answers
        .iter()
        .map(|a| a.2.and_then(|f| f.gate.as_deref()))
        .collect();
    sqlx::query(
        "UPDATE checkin_scans s SET result = a.result, first_checked_in_at = a.at, \
             first_gate = a.gate \
         FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::text[]) \
             AS a(nonce, result, at, gate) \
         WHERE s.nonce = ANY($2) AND s.event_id = $1 AND s.nonce = a.nonce",
    )
    .bind(event_id)
    .bind(&nonces)
    .bind(&results)
    .bind(&times)
    .bind(&gates)
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks the event's admissions `ids` in id order and reads them, each checked-in one with the
/// nonce of the scan that checked it in (when one was recorded, other than the scans of
/// `claimed`, this transaction's own). Id order is the lock order of every batch and of the
/// refund trigger, so none of them can wait on another in a cycle. The lock is FOR NO KEY
/// UPDATE, the one the check-in's `UPDATE` of the row takes (no lock is ever upgraded), and
/// one that a key share (a `checkin_conflicts` row referencing the admission) never waits
/// for.
///
/// The nonces are read by a second statement, once the locks are held. The locking
/// statement reads each admission row as its holder left it, but anything else it reads is
/// from before it waited: behind an online check-in of the ticket it saw the check-in but
/// not its scan, and took the nonce for missing.
pub async fn lock_states(
    conn: &mut PgConnection,
    event_id: Uuid,
    ids: &[Uuid],
    claimed: &[String],
) -> Result<HashMap<Uuid, DoorState>, sqlx::Error> {
    type Row = (Uuid, String, Option<OffsetDateTime>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, status, checked_in_at, gate FROM admissions \
         WHERE id = ANY($2) AND (event_id = $1) IS TRUE ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(event_id)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let checked_in: Vec<Uuid> = rows
        .iter()
        .filter(|(_, _, at, _)| at.is_some())
        .map(|(id, ..)| *id)
        .collect();
    let mut nonces: HashMap<Uuid, String> = if checked_in.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as(
            "SELECT DISTINCT ON (d.id) d.id, s.nonce FROM admissions d \
             JOIN checkin_scans s ON s.admission_id = d.id AND s.result = 'admitted' \
                 AND s.first_checked_in_at = d.checked_in_at AND NOT s.nonce = ANY($2) \
             WHERE d.id = ANY($1) ORDER BY d.id, s.recorded_at DESC",
        )
        .bind(&checked_in)
        .bind(claimed)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect()
    };
    rows.into_iter()
        .map(|(id, status, at, gate)| {
            let nonce = nonces.remove(&id);
            Ok((id, door_state_of(&status, at, gate, nonce)?))
        })
        .collect()
}

/// Sets the check-in of admissions already locked by [`lock_states`]: valid ones become
/// checked in, checked-in ones move to an earlier scan.
pub async fn set_check_ins(
    conn: &mut PgConnection,
    event_id: Uuid,
    check_ins: &[(Uuid, CheckedIn)],
) -> Result<(), sqlx::Error> {
    if check_ins.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = check_ins.iter().map(|c| c.0).collect();
    let times: Vec<OffsetDateTime> = check_ins.iter().map(|c| c.1.at).collect();
    let gates: Vec<Option<&str>> = check_ins.iter().map(|c| c.1.gate.as_deref()).collect();
    sqlx::query(
        "UPDATE admissions d SET status = 'checked_in', checked_in_at = c.at, gate = c.gate \
         FROM unnest($2::uuid[], $3::timestamptz[], $4::text[]) AS c(id, at, gate) \
         WHERE d.id = ANY($2) AND d.id = c.id \
           AND (d.event_id = $1 AND d.status <> 'revoked') IS TRUE",
    )
    .bind(event_id)
    .bind(&ids)
    .bind(&times)
    .bind(&gates)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records conflicts between scans that both admitted one person.
pub async fn insert_conflicts(
    conn: &mut PgConnection,
    event_id: Uuid,
    conflicts: &[Conflict],
) -> Result<(), sqlx::Error> {
    if conflicts.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = conflicts.iter().map(|c| c.admission_id).collect();
    let admitted_at: Vec<OffsetDateTime> = conflicts.iter().map(|c| c.admitted.at).collect();
    let admitted_gate: Vec<Option<&str>> = conflicts
        .iter()
        .map(|c| c.admitted.gate.as_deref())
        .collect();
    let admitted_nonce: Vec<Option<&str>> = conflicts
        .iter()
        .map(|c| c.admitted_nonce.as_deref())
        .collect();
    let conflicting_at: Vec<OffsetDateTime> = conflicts.iter().map(|c| c.conflicting.at).collect();
    let conflicting_gate: Vec<Option<&str>> = conflicts
        .iter()
        .map(|c| c.conflicting.gate.as_deref())
        .collect();
    let conflicting_nonce: Vec<Option<&str>> = conflicts
        .iter()
        .map(|c| c.conflicting_nonce.as_deref())
        .collect();
    sqlx::query(
        "INSERT INTO checkin_conflicts (event_id, admission_id, admitted_at, admitted_gate, \
             admitted_nonce, conflicting_at, conflicting_gate, conflicting_nonce) \
         SELECT $1, * FROM unnest($2::uuid[], $3::timestamptz[], $4::text[], $5::text[], \
             $6::timestamptz[], $7::text[], $8::text[])",
    )
    .bind(event_id)
    .bind(&ids)
    .bind(&admitted_at)
    .bind(&admitted_gate)
    .bind(&admitted_nonce)
    .bind(&conflicting_at)
    .bind(&conflicting_gate)
    .bind(&conflicting_nonce)
    .execute(conn)
    .await?;
    Ok(())
}

/// A recorded conflict, with the admission's ticket type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConflict {
    pub admission_id: Uuid,
    pub ticket_type_id: Uuid,
    pub admitted: CheckedIn,
    pub admitted_nonce: Option<String>,
    pub conflicting: CheckedIn,
    pub conflicting_nonce: Option<String>,
    pub recorded_at: OffsetDateTime,
}

/// The event's conflicts, oldest recorded first. `None`: no such event (events are never
/// deleted, so the check needs no snapshot shared with the read).
pub async fn conflicts(
    pool: &PgPool,
    event_id: Uuid,
) -> Result<Option<Vec<StoredConflict>>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE id = $1)")
        .bind(event_id)
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(None);
    }
    type Row = (
        Uuid,
        Uuid,
        OffsetDateTime,
        Option<String>,
        Option<String>,
        OffsetDateTime,
        Option<String>,
        Option<String>,
        OffsetDateTime,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT c.admission_id, d.ticket_type_id, c.admitted_at, c.admitted_gate, \
             c.admitted_nonce, c.conflicting_at, c.conflicting_gate, c.conflicting_nonce, \
             c.recorded_at \
         FROM checkin_conflicts c JOIN admissions d ON d.id = c.admission_id \
         WHERE c.event_id = $1 ORDER BY c.recorded_at, c.id",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    Ok(Some(
        rows.into_iter()
            .map(|r| StoredConflict {
                admission_id: r.0,
                ticket_type_id: r.1,
                admitted: CheckedIn { at: r.2, gate: r.3 },
                admitted_nonce: r.4,
                conflicting: CheckedIn { at: r.5, gate: r.6 },
                conflicting_nonce: r.7,
                recorded_at: r.8,
            })
            .collect(),
    ))
}

/// One ticket type's admissions by status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeCounts {
    pub ticket_type_id: Uuid,
    pub name: String,
    pub admitted: i64,
    pub valid: i64,
    pub revoked: i64,
}

/// The event's check-in statistics: its types' admissions by status (every type, in creation
/// order) and its checked-in admissions by gate (null gate first, then by name), read in one
/// REPEATABLE READ, read-only transaction so both come from one snapshot. `None`: no such
/// event.
pub async fn stats(
    pool: &PgPool,
    event_id: Uuid,
) -> Result<Option<(Vec<TypeCounts>, Vec<(Option<String>, i64)>)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // First statement of the transaction, so the snapshot is taken after it.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE id = $1)")
        .bind(event_id)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Ok(None);
    }
    let types: Vec<(Uuid, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT t.id, t.name, \
             count(d.id) FILTER (WHERE d.status = 'checked_in'), \
             count(d.id) FILTER (WHERE d.status = 'valid'), \
             count(d.id) FILTER (WHERE d.status = 'revoked') \
         FROM ticket_types t LEFT JOIN admissions d ON d.ticket_type_id = t.id \
         WHERE t.event_id = $1 GROUP BY t.id ORDER BY t.created_at, t.id",
    )
    .bind(event_id)
    .fetch_all(&mut *tx)
    .await?;
    let gates: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT gate, count(*) FROM admissions WHERE event_id = $1 AND status = 'checked_in' \
         GROUP BY gate ORDER BY gate NULLS FIRST",
    )
    .bind(event_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let types = types
        .into_iter()
        .map(
            |(ticket_type_id, name, admitted, valid, revoked)| TypeCounts {
                ticket_type_id,
                name,
                admitted,
                valid,
                revoked,
            },
        )
        .collect();
    Ok(Some((types, gates)))
}

/// What a door device needs to decide alone, read from one snapshot: the database clock at
/// the read, the revoked admissions, and the checked-in ones with their check-in. `None`: no
/// such event.
pub struct ExportRead {
    pub generated_at: OffsetDateTime,
    pub revoked: Vec<Uuid>,
    pub admitted: Vec<(Uuid, CheckedIn)>,
}

/// The database's clock at the start of the transaction, read from the event's row:
/// `None` when there is no such event. A batch upload judges "later than the upload" by it,
/// as every other time the API takes comes from the database clock.
pub async fn event_clock(
    conn: &mut PgConnection,
    event_id: Uuid,
) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    sqlx::query_scalar("SELECT now() FROM events WHERE id = $1")
        .bind(event_id)
        .fetch_optional(conn)
        .await
}

/// Reads the event's export (see [`ExportRead`]) in one REPEATABLE READ, read-only
/// transaction.
pub async fn export(pool: &PgPool, event_id: Uuid) -> Result<Option<ExportRead>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // First statement of the transaction, so the snapshot is taken after it.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let generated_at: Option<OffsetDateTime> =
        sqlx::query_scalar("SELECT now() FROM events WHERE id = $1")
            .bind(event_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(generated_at) = generated_at else {
        return Ok(None);
    };
    let revoked: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM admissions WHERE event_id = $1 AND status = 'revoked' ORDER BY id",
    )
    .bind(event_id)
    .fetch_all(&mut *tx)
    .await?;
    let admitted: Vec<(Uuid, OffsetDateTime, Option<String>)> = sqlx::query_as(
        "SELECT id, checked_in_at, gate FROM admissions \
         WHERE event_id = $1 AND status = 'checked_in' ORDER BY id",
    )
    .bind(event_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(ExportRead {
        generated_at,
        revoked,
        admitted: admitted
            .into_iter()
            .map(|(id, at, gate)| (id, CheckedIn { at, gate }))
            .collect(),
    }))
}

/// How many admissions of each of `events` were ever checked in (a refund after entry keeps
/// its check-in), as committed now: the live statistics' `checkedIn`. An index-only count
/// (`admissions_event_checked_in_idx`).
pub async fn checked_in_counts(
    pool: &PgPool,
    events: &[Uuid],
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event_id, count(*) FROM admissions \
         WHERE event_id = ANY($1) AND checked_in_at IS NOT NULL GROUP BY event_id",
    )
    .bind(events)
    .fetch_all(pool)
    .await
}
