//! SQL for the `admissions` table. Admissions are made and revoked by the database's own
//! triggers (`admissions_follow_purchase`, `admissions_follow_refund`), in the transaction
//! that purchases or refunds; nothing here writes them.

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, Row};
use uuid::Uuid;

use crate::domain::admission::StoredAdmission;

/// The columns a [`StoredAdmission`] is read from, over `admissions d` joined with its type
/// `ticket_types t`, as a literal for `concat!`.
macro_rules! admission_columns {
    () => {
        "d.id, d.event_id, d.allocation_id, d.ticket_type_id, t.name AS ticket_type_name, \
         d.position, d.status, d.checked_in_at, d.gate"
    };
}
// Check-in's statements (`db::checkins`) return admissions too.
pub(super) use admission_columns;

/// A stored admission as a row, for `query_as` (`FromRow` cannot be implemented on the
/// domain type, which knows nothing of the database). `db::checkins` reads admissions with it
/// too.
pub(super) struct AdmissionRow(pub(super) StoredAdmission);

impl FromRow<'_, PgRow> for AdmissionRow {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let status: String = row.try_get("status")?;
        Ok(AdmissionRow(StoredAdmission {
            id: row.try_get("id")?,
            event_id: row.try_get("event_id")?,
            allocation_id: row.try_get("allocation_id")?,
            ticket_type_id: row.try_get("ticket_type_id")?,
            ticket_type_name: row.try_get("ticket_type_name")?,
            position: row.try_get("position")?,
            status: status
                .parse()
                .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
            checked_in_at: row.try_get("checked_in_at")?,
            gate: row.try_get("gate")?,
        }))
    }
}

/// The admissions of the allocations `allocation_ids`, with their types' names, ordered by
/// allocation, then by position (ticket order), in one statement. An allocation that has none
/// (not purchased) adds nothing. Runs on the caller's connection, so inside a transaction it
/// sees the admissions that transaction's purchase just made (a settle batch's, under the
/// event lock).
///
/// Each allocation's admissions are looked up on their own (`LATERAL … OFFSET 0`, which the
/// planner cannot merge into one scan), so the read costs the same however many admissions
/// the event has: with statistics older than the sale, `allocation_id = ANY($1)` over a
/// batch of 100 was estimated at half the table and read by a sequential scan of every
/// admission (see `db`).
pub async fn of_allocations(
    conn: &mut PgConnection,
    allocation_ids: &[Uuid],
) -> Result<Vec<StoredAdmission>, sqlx::Error> {
    let rows: Vec<AdmissionRow> = sqlx::query_as(concat!(
        "SELECT ",
        admission_columns!(),
        " FROM (SELECT DISTINCT unnest($1::uuid[])) AS k(allocation_id) \
          CROSS JOIN LATERAL ( \
              SELECT * FROM admissions a WHERE a.allocation_id = k.allocation_id OFFSET 0) d \
          JOIN ticket_types t ON t.id = d.ticket_type_id \
          ORDER BY d.allocation_id, d.position"
    ))
    .bind(allocation_ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.0).collect())
}

/// One admission of one allocation, or `None` if the allocation has no admission of that id.
pub async fn find_of_allocation(
    conn: &mut PgConnection,
    allocation_id: Uuid,
    admission_id: Uuid,
) -> Result<Option<StoredAdmission>, sqlx::Error> {
    let row: Option<AdmissionRow> = sqlx::query_as(concat!(
        "SELECT ",
        admission_columns!(),
        " FROM admissions d JOIN ticket_types t ON t.id = d.ticket_type_id \
          WHERE d.allocation_id = $1 AND d.id = $2"
    ))
    .bind(allocation_id)
    .bind(admission_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| row.0))
}
