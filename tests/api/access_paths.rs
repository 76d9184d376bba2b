//! The batch statements that run under the event lock (or in a check-in batch) reach their
//! rows by key, whatever the planner's statistics say (the `db` module's rule). The event
//! here is made in the test's own database with autovacuum off for its tables, so the
//! planner has statistics older than the sale, as at the start of a real on-sale; each
//! statement then runs through its real `db` function inside a transaction, and the
//! transaction's own statistics (`pg_stat_get_xact_tuples_returned` of each index,
//! `pg_stat_xact_user_tables`)
//! say which indexes and scans it used. Walking the event (an index other than the key, or a
//! sequential scan) fails the test.

use reqwest::StatusCode;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use boxoffice::db::checkins::{ScanClaim, ScanSource};
use boxoffice::db::{admissions, allocations, checkins};
use boxoffice::domain::checkin::{Nonce, ScanResult};
use boxoffice::domain::confirmation::{ConfirmationCode, OrderFilter};
use boxoffice::domain::page::PageRequest;
use boxoffice::domain::status::AllocationStatus;

use crate::helpers::{Api, id_of, new_fingerprint, spawn_app};

/// Holds made for the event, how many of them are paid, and the tickets of each: enough
/// rows that reading a table whole is not the planner's cheapest way to find five.
const HOLDS: usize = 1_200;
const PAID: usize = 300;
const TICKETS: usize = 8;

/// How a table was read so far in the current transaction: index entries read per index,
/// and rows read by sequential scans.
struct Reads {
    indexes: Vec<(String, i64)>,
    sequential: i64,
}

impl Reads {
    /// The entries of `index` read so far.
    fn of(&self, index: &str) -> i64 {
        self.indexes
            .iter()
            .find(|(name, _)| name == index)
            .map_or(0, |(_, n)| *n)
    }
}

async fn reads(conn: &mut PgConnection, table: &str) -> Reads {
    let indexes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT i.relname::text, pg_stat_get_xact_tuples_returned(i.oid) \
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             JOIN pg_class t ON t.oid = x.indrelid \
         WHERE t.relname = $1 ORDER BY 1",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let sequential: i64 =
        sqlx::query_scalar("SELECT seq_tup_read FROM pg_stat_xact_user_tables WHERE relname = $1")
            .bind(table)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    Reads {
        indexes,
        sequential,
    }
}

/// Asserts that since `before` the transaction read `table` through the `keys` only (what
/// ran in between is `what`), and returns the reads as they stand now.
async fn by_key_only(
    conn: &mut PgConnection,
    what: &str,
    table: &str,
    keys: &[&str],
    before: Reads,
) -> Reads {
    let after = reads(conn, table).await;
    assert_eq!(
        after.sequential - before.sequential,
        0,
        "{what}: a sequential scan"
    );
    for ((index, was), (_, is)) in before.indexes.iter().zip(&after.indexes) {
        if !keys.contains(&index.as_str()) {
            assert_eq!(is - was, 0, "{what}: read {} entries of {index}", is - was);
        }
    }
    after
}

/// [`by_key_only`], and the entries of `key` read since `before` are at most `most`: a key
/// searched value by value, not walked.
async fn by_key_only_within(
    conn: &mut PgConnection,
    what: &str,
    table: &str,
    keys: &[&str],
    (key, most): (&str, i64),
    before: Reads,
) -> Reads {
    let key_before = before.of(key);
    let after = by_key_only(conn, what, table, keys, before).await;
    let read = after.of(key) - key_before;
    assert!(read <= most, "{what}: read {read} entries of {key}");
    after
}

/// An event of `HOLDS` holds of `TICKETS` tickets, `PAID` of them paid: (event id, the paid holds'
/// ids, the reserved holds' ids with their buyers' hashes).
async fn sale(api: &Api, pool: &PgPool) -> (Uuid, Vec<Uuid>, Vec<(Uuid, String)>) {
    sqlx::raw_sql(
        "ALTER TABLE ticket_allocations SET (autovacuum_enabled = false); \
         ALTER TABLE admissions SET (autovacuum_enabled = false); \
         ALTER TABLE checkin_scans SET (autovacuum_enabled = false); \
         ALTER TABLE allocation_lines SET (autovacuum_enabled = false);",
    )
    .execute(pool)
    .await
    .unwrap();
    let event = api.create_event("Access paths", 10_000, None).await;
    let event_id = id_of(&event);
    let mut buyers = tokio::task::JoinSet::new();
    for client in 0..24 {
        let (api, event_id) = (api.clone(), event_id.clone());
        buyers.spawn(async move {
            let mut paid = Vec::new();
            for n in (client..HOLDS).step_by(24) {
                let buyer = new_fingerprint();
                let (status, hold) = api.purchase(&event_id, TICKETS as i64, &buyer).await;
                assert_eq!(status, StatusCode::CREATED, "{hold}");
                if n < PAID {
                    let (status, body) = api.pay(&id_of(&hold), &buyer, None).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                    paid.push(id_of(&hold).parse::<Uuid>().unwrap());
                }
            }
            paid
        });
    }
    let paid: Vec<Uuid> = buyers.join_all().await.into_iter().flatten().collect();
    let event_id: Uuid = event_id.parse().unwrap();
    let reserved: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, fingerprint_hash FROM ticket_allocations \
         WHERE event_id = $1 AND status = 'reserved' ORDER BY id LIMIT 5",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(reserved.len(), 5);
    (event_id, paid, reserved)
}

#[tokio::test]
async fn batch_statements_reach_their_rows_by_key_with_statistics_older_than_the_sale() {
    let app = spawn_app().await;
    let (event_id, paid, reserved) = sale(&app, &app.pool).await;
    let mut tx = app.pool.begin().await.unwrap();

    // A settle batch: lock the holds, step one, make them purchased, read their admissions.
    const HOLDS_TABLE: &str = "ticket_allocations";
    const HOLDS_KEY: &[&str] = &["ticket_allocations_pkey"];
    let ids: Vec<Uuid> = reserved.iter().map(|(id, _)| *id).collect();
    let seen = reads(&mut tx, HOLDS_TABLE).await;
    let locked = allocations::lock_many(&mut tx, event_id, &ids)
        .await
        .unwrap();
    assert_eq!(locked.len(), ids.len());
    let seen = by_key_only(&mut tx, "lock_many", HOLDS_TABLE, HOLDS_KEY, seen).await;

    let buyers: Vec<&str> = reserved.iter().map(|(_, b)| b.as_str()).collect();
    let references: Vec<String> = ids.iter().map(|id| format!("ref-{id}")).collect();
    let references: Vec<&str> = references.iter().map(String::as_str).collect();
    let begun = allocations::begin_payments(&mut tx, &ids, &buyers, &references)
        .await
        .unwrap();
    assert_eq!(begun.len(), ids.len());
    let seen = by_key_only(&mut tx, "begin_payments", HOLDS_TABLE, HOLDS_KEY, seen).await;

    let codes: Vec<String> = ids.iter().map(|id| format!("C{}", id.simple())).collect();
    let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
    let lines_seen = reads(&mut tx, "allocation_lines").await;
    let purchased = allocations::purchase_waiting(&mut tx, event_id, &ids, &references, &codes)
        .await
        .unwrap();
    assert_eq!(purchased.len(), ids.len());
    by_key_only(&mut tx, "purchase_waiting", HOLDS_TABLE, HOLDS_KEY, seen).await;
    // Its trigger makes the admissions from the lines of these holds alone, searched by
    // allocation (one line each here, read once by the trigger and once by the answer), not
    // by a walk of every line of the sale.
    by_key_only_within(
        &mut tx,
        "purchase_waiting",
        "allocation_lines",
        &["allocation_lines_pkey"],
        ("allocation_lines_pkey", 4 * ids.len() as i64),
        lines_seen,
    )
    .await;

    // The admissions of five holds, and of a hundred, as a settle batch reads them.
    let seen = reads(&mut tx, "admissions").await;
    let made = admissions::of_allocations(&mut tx, &ids).await.unwrap();
    assert_eq!(made.len(), ids.len() * TICKETS);
    let hundred = admissions::of_allocations(&mut tx, &paid[..100])
        .await
        .unwrap();
    assert_eq!(hundred.len(), 100 * TICKETS);
    by_key_only(
        &mut tx,
        "of_allocations",
        "admissions",
        &["admissions_allocation_position_key"],
        seen,
    )
    .await;
    tx.rollback().await.unwrap();

    // A check-in batch, on an event with a few thousand scans recorded already.
    let admitted: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM admissions WHERE allocation_id = ANY($1) ORDER BY id")
            .bind(&paid)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(admitted.len(), PAID * TICKETS);
    let claim = |n: usize, admission_id: Uuid| ScanClaim {
        nonce: Nonce::parse(&format!("gate-1:{n}")).unwrap(),
        admission_id,
        scanned_at: OffsetDateTime::now_utc(),
        gate: Some("Gate 1".into()),
    };
    let earlier: Vec<ScanClaim> = admitted[5..]
        .iter()
        .enumerate()
        .map(|(n, id)| claim(n, *id))
        .collect();
    let mut setup = app.pool.begin().await.unwrap();
    checkins::claim(&mut setup, event_id, ScanSource::Online, &earlier)
        .await
        .unwrap();
    setup.commit().await.unwrap();

    let batch: Vec<ScanClaim> = admitted[..5]
        .iter()
        .enumerate()
        .map(|(n, id)| claim(10_000 + n, *id))
        .collect();
    let batch_ids: Vec<Uuid> = admitted[..5].to_vec();
    let mut tx = app.pool.begin().await.unwrap();
    let (scans, admissions_seen) = (
        reads(&mut tx, "checkin_scans").await,
        reads(&mut tx, "admissions").await,
    );
    let claimed = checkins::claim(&mut tx, event_id, ScanSource::Online, &batch)
        .await
        .unwrap();
    assert_eq!(claimed.len(), batch.len());
    let states = checkins::lock_states(&mut tx, event_id, &batch_ids, &claimed)
        .await
        .unwrap();
    assert_eq!(states.len(), batch_ids.len());
    let check_ins: Vec<(Uuid, Option<&str>)> =
        batch_ids.iter().map(|id| (*id, Some("Gate 1"))).collect();
    let checked_in = checkins::admit_all(&mut tx, event_id, &check_ins)
        .await
        .unwrap();
    assert_eq!(checked_in.len(), batch_ids.len());
    let answers: Vec<(&str, ScanResult, Option<_>)> = claimed
        .iter()
        .map(|nonce| (nonce.as_str(), ScanResult::Revoked, None))
        .collect();
    checkins::record_answers(&mut tx, event_id, &answers)
        .await
        .unwrap();
    // The primary key is searched nonce by nonce: its entries read are the batch's own (the
    // claim's conflict checks, the answers' update), not the event's thousands of scans.
    by_key_only_within(
        &mut tx,
        "the check-in batch",
        "checkin_scans",
        // The lock's look-up of the scan that checked each admission in, by admission.
        &["checkin_scans_pkey", "checkin_scans_admission_idx"],
        ("checkin_scans_pkey", 4 * batch.len() as i64),
        scans,
    )
    .await;
    by_key_only(
        &mut tx,
        "the check-in batch",
        "admissions",
        &["admissions_pkey"],
        admissions_seen,
    )
    .await;
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn the_organisers_order_list_reads_the_event_by_key_with_statistics_older_than_the_sale() {
    let app = spawn_app().await;
    let (event_id, paid, _) = sale(&app, &app.pool).await;
    // Another event's orders beside them, which no statement of the list may walk.
    let other = id_of(
        &app.create_event("Access paths elsewhere", 1_000, None)
            .await,
    );
    for _ in 0..20 {
        let buyer = new_fingerprint();
        let (status, hold) = app.purchase(&other, 2, &buyer).await;
        assert_eq!(status, StatusCode::CREATED, "{hold}");
        let (status, body) = app.pay(&id_of(&hold), &buyer, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    const TABLE: &str = "ticket_allocations";
    const BY_EVENT: &[&str] = &["ticket_allocations_event_status_created_idx"];
    let page = PageRequest { page: 2, limit: 10 };
    let mut tx = app.pool.begin().await.unwrap();

    // A page of every order: the event's entries only (the page in index order, the count),
    // never a sequential scan nor another index.
    let seen = reads(&mut tx, TABLE).await;
    let (rows, total) =
        allocations::list_for_event(&mut tx, event_id, &OrderFilter::default(), page)
            .await
            .unwrap();
    assert_eq!((rows.len(), total), (10, HOLDS as i64));
    let event_entries = |reads: &Reads| BY_EVENT.iter().map(|index| reads.of(index)).sum::<i64>();
    let before = event_entries(&seen);
    let seen = by_key_only(&mut tx, "the order list", TABLE, BY_EVENT, seen).await;
    // The count reads each of the event's index entries once, the dead versions' too (every
    // paid hold left two: reserved and payment_pending); the page only its own and those
    // before it, in index order. Reading the event again to sort it for the page read about
    // twice as many (2,600 to 2,850 here, with statistics older than the sale).
    let read = event_entries(&seen) - before;
    assert!(
        read <= (HOLDS + 2 * PAID + 200) as i64,
        "the order list read {read} entries of the event's indexes"
    );

    // By status: the same.
    let purchased = OrderFilter {
        status: Some(AllocationStatus::Purchased),
        ..OrderFilter::default()
    };
    let (rows, total) = allocations::list_for_event(&mut tx, event_id, &purchased, page)
        .await
        .unwrap();
    assert_eq!((rows.len(), total), (10, PAID as i64));
    by_key_only(&mut tx, "the order list by status", TABLE, BY_EVENT, seen).await;

    // By confirmation code: one entry of the code's key per statement, nothing of the event.
    let code: String =
        sqlx::query_scalar("SELECT confirmation_code FROM ticket_allocations WHERE id = $1")
            .bind(paid[0])
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    let by_code = OrderFilter {
        confirmation_code: Some(ConfirmationCode::parse(&code).unwrap()),
        status: Some(AllocationStatus::Purchased),
    };
    let seen = reads(&mut tx, TABLE).await;
    let first = PageRequest { page: 1, limit: 10 };
    let (rows, total) = allocations::list_for_event(&mut tx, event_id, &by_code, first)
        .await
        .unwrap();
    assert_eq!((rows.len(), total), (1, 1));
    assert_eq!(rows[0].id, paid[0]);
    by_key_only_within(
        &mut tx,
        "the order list by code",
        TABLE,
        &["ticket_allocations_confirmation_code_key"],
        ("ticket_allocations_confirmation_code_key", 2),
        seen,
    )
    .await;
    tx.rollback().await.unwrap();
}
