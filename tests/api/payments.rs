//! Payments of one hot event at the speed of holds: a payment's first step takes only its
//! hold's row lock, and the settles of one event that arrive together share one transaction
//! under the event lock (docs/concurrency.md, "Batched payments"). Each test pins one of those
//! decisions, with the answers and the rows they must leave.

use std::time::Duration;

use boxoffice::db::allocations::TransitionRecord;
use boxoffice::db::events::CountMove;
use boxoffice::domain::stats::ChangeKind;
use boxoffice::domain::status::AllocationStatus;
use reqwest::StatusCode;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::helpers::{
    Api, Blocker, TestApp, assert_error, eventually, id_of, new_fingerprint, spawn_app,
    spawn_app_with,
};

/// A fingerprint hash for what the blocker writes itself (the schema wants 64 hex digits).
const BLOCKER_BUYER: &str = "b10c0000b10c0000b10c0000b10c0000b10c0000b10c0000b10c0000b10c0000";

/// `count` holds of `quantity` tickets on `event_id`, each by a new buyer: (id, holder).
async fn holds(
    app: &TestApp,
    event_id: &str,
    count: usize,
    quantity: i64,
) -> Vec<(String, String)> {
    let mut made = Vec::new();
    for _ in 0..count {
        let holder = new_fingerprint();
        let (status, body) = app.purchase(event_id, quantity, &holder).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        made.push((id_of(&body), holder));
    }
    made
}

/// The event's change sequence: one step per committed change of its counts.
async fn change_seq(app: &TestApp, event_id: &str) -> i64 {
    sqlx::query_scalar("SELECT change_seq FROM events WHERE id = $1")
        .bind(Uuid::parse_str(event_id).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// How many of `ids` are `payment_pending` (committed).
async fn pending(app: &TestApp, ids: &[String]) -> usize {
    let ids: Vec<Uuid> = ids.iter().map(|id| Uuid::parse_str(id).unwrap()).collect();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ticket_allocations WHERE id = ANY($1) AND status = 'payment_pending'",
    )
    .bind(&ids)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    n as usize
}

/// Waits (up to 4 s) until `count` of the holds `ids` are `payment_pending`, their payments
/// begun; fails the test, naming `what`, if they do not get there.
async fn until_pending(app: &TestApp, ids: &[String], count: usize, what: &str) {
    eventually(what, Duration::from_secs(4), || async {
        (pending(app, ids).await == count).then_some(())
    })
    .await
}

/// Sends a payment of each hold with `token`, one task each.
fn pay_all(
    app: &TestApp,
    paying: &[(String, String)],
    token: &'static str,
    into: &mut JoinSet<(String, StatusCode, serde_json::Value)>,
) {
    for (id, holder) in paying {
        let (api, id, holder) = (Api::clone(app), id.clone(), holder.clone());
        into.spawn(async move {
            let (status, body) = api.pay(&id, &holder, Some(token)).await;
            (id, status, body)
        });
    }
}

/// While the event row is locked elsewhere, payments still begin: their holds become
/// `payment_pending` (committed) without the event lock, and only their settle waits for
/// it. Then they all complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_begin_while_the_event_row_is_locked() {
    let app = spawn_app().await;
    let event = app.create_event("Begin unlocked", 100, None).await;
    let event_id = id_of(&event);
    let paying = holds(&app, &event_id, 5, 2).await;
    let ids: Vec<String> = paying.iter().map(|(id, _)| id.clone()).collect();

    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_event(&event_id).await;
    let mut payments = JoinSet::new();
    pay_all(&app, &paying, "tok_visa", &mut payments);
    until_pending(
        &app,
        &ids,
        ids.len(),
        "every payment to begin while the event row is locked",
    )
    .await;
    assert!(
        payments.try_join_next().is_none(),
        "no payment settles while the event row is locked"
    );
    assert_eq!(
        app.counts(&event_id).await,
        (90, 10, 0),
        "nothing moved yet"
    );
    blocker.commit().await;

    while let Some(answer) = payments.join_next().await {
        let (id, status, body) = answer.unwrap();
        assert_eq!(status, StatusCode::OK, "{id}: {body}");
        assert_eq!(body["status"], "purchased", "{body}");
    }
    assert_eq!(app.counts(&event_id).await, (90, 0, 10));
    app.assert_balanced(&event_id).await;
}

/// Settles of one event that arrive while its event row is locked share one transaction:
/// one backend waits at the lock (the first settle's batch), the rest queue behind it in the
/// coalescer, and after the release they all commit in one more transaction, one count move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settles_of_one_event_share_one_transaction() {
    const PAYMENTS: usize = 20;
    let app = spawn_app().await;
    let event = app.create_event("Batched settles", 100, None).await;
    let event_id = id_of(&event);
    let paying = holds(&app, &event_id, PAYMENTS, 1).await;
    let ids: Vec<String> = paying.iter().map(|(id, _)| id.clone()).collect();

    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_event(&event_id).await;
    let before = change_seq(&app, &event_id).await;
    let mut payments = JoinSet::new();
    pay_all(&app, &paying, "tok_visa", &mut payments);
    until_pending(&app, &ids, PAYMENTS, "every payment to begin").await;
    // Every payment has begun; give their settles time to reach the lock, were they each to
    // run their own transaction.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiters = blocker.waiters().await;
    assert_eq!(
        waiters.len(),
        1,
        "one settle transaction waits: {waiters:?}"
    );
    blocker.commit().await;

    while let Some(answer) = payments.join_next().await {
        let (id, status, body) = answer.unwrap();
        assert_eq!(status, StatusCode::OK, "{id}: {body}");
        assert_eq!(body["status"], "purchased", "{body}");
        assert!(body["confirmationCode"].is_string(), "{body}");
    }
    assert_eq!(
        change_seq(&app, &event_id).await - before,
        2,
        "two settle transactions: the first alone, then the other {} together",
        PAYMENTS - 1
    );
    assert_eq!(
        app.counts(&event_id).await,
        (100 - PAYMENTS as i64, 0, PAYMENTS as i64)
    );
    app.assert_balanced(&event_id).await;
}

/// Begins of one event that arrive while an earlier begin runs share one statement: the
/// first payment's begin statement waits (the table is locked against writes elsewhere), the
/// others queue behind it in the coalescer instead of each committing its own, and after the
/// release they all become `payment_pending` in one more statement. A statement's holds
/// share its transaction's `now()` as `payment_pending_at`, so the distinct stamps count the
/// commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begins_of_one_event_share_one_statement() {
    const PAYMENTS: usize = 20;
    let app = spawn_app().await;
    let event = app.create_event("Batched begins", 100, None).await;
    let event_id = id_of(&event);
    let paying = holds(&app, &event_id, PAYMENTS, 1).await;
    let ids: Vec<String> = paying.iter().map(|(id, _)| id.clone()).collect();

    // Not one hold's row: the batched statement skips a locked row rather than wait for it.
    // SHARE mode blocks writes to the table, not the reads and row locks of the app's
    // sweepers.
    let mut blocker = Blocker::begin(&app.pool).await;
    sqlx::query("LOCK TABLE ticket_allocations IN SHARE MODE")
        .execute(blocker.conn())
        .await
        .unwrap();
    let mut payments = JoinSet::new();
    pay_all(&app, &paying[..1], "tok_visa", &mut payments);
    blocker.wait_for_waiters(1).await;
    pay_all(&app, &paying[1..], "tok_visa", &mut payments);
    // Give the other begins time to reach the lock, were they each to run their own
    // statement.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiters = blocker.waiters().await;
    assert_eq!(waiters.len(), 1, "one begin statement waits: {waiters:?}");
    blocker.commit().await;

    while let Some(answer) = payments.join_next().await {
        let (id, status, body) = answer.unwrap();
        assert_eq!(status, StatusCode::OK, "{id}: {body}");
        assert_eq!(body["status"], "purchased", "{body}");
    }
    let uuids: Vec<Uuid> = ids.iter().map(|id| Uuid::parse_str(id).unwrap()).collect();
    let stamps: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT payment_pending_at) FROM ticket_allocations WHERE id = ANY($1)",
    )
    .bind(&uuids)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        stamps,
        2,
        "two begin statements: the first alone, then the other {} together",
        PAYMENTS - 1
    );
    assert_eq!(
        app.counts(&event_id).await,
        (100 - PAYMENTS as i64, 0, PAYMENTS as i64)
    );
    app.assert_balanced(&event_id).await;
}

/// The simulated provider's ledger rows of charges that arrive while an earlier one is being
/// recorded share one statement: the first charge's insert waits (the ledger is locked
/// against writes elsewhere), the others queue behind it, and after the release they are
/// recorded together. Rows inserted by one transaction share its `xmin`, so the distinct
/// `xmin`s count the commits. Every charge answered is on the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_of_concurrent_payments_share_one_ledger_statement() {
    const PAYMENTS: usize = 20;
    let app = spawn_app().await;
    let event = app.create_event("Batched charges", 100, None).await;
    let event_id = id_of(&event);
    let paying = holds(&app, &event_id, PAYMENTS, 1).await;
    let ids: Vec<Uuid> = paying
        .iter()
        .map(|(id, _)| Uuid::parse_str(id).unwrap())
        .collect();

    let mut blocker = Blocker::begin(&app.pool).await;
    sqlx::query("LOCK TABLE payment_charges IN SHARE MODE")
        .execute(blocker.conn())
        .await
        .unwrap();
    let mut payments = JoinSet::new();
    pay_all(&app, &paying[..1], "tok_visa", &mut payments);
    blocker.wait_for_waiters(1).await;
    pay_all(&app, &paying[1..], "tok_visa", &mut payments);
    let paying_ids: Vec<String> = paying.iter().map(|(id, _)| id.clone()).collect();
    until_pending(&app, &paying_ids, PAYMENTS, "every payment to begin").await;
    // Every payment is at its charge; give the charges time to reach the lock, were they
    // each to run their own statement.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiters = blocker.waiters().await;
    assert_eq!(waiters.len(), 1, "one ledger statement waits: {waiters:?}");
    blocker.commit().await;

    while let Some(answer) = payments.join_next().await {
        let (id, status, body) = answer.unwrap();
        assert_eq!(status, StatusCode::OK, "{id}: {body}");
        assert_eq!(body["status"], "purchased", "{body}");
    }
    let (rows, commits): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT c.xmin::text) FROM payment_charges c \
         JOIN ticket_allocations a ON a.payment_reference = c.reference \
         WHERE a.id = ANY($1) AND c.outcome = 'charged'",
    )
    .bind(&ids)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows, PAYMENTS as i64, "every charge is on the ledger");
    assert_eq!(
        commits,
        2,
        "two ledger statements: the first alone, then the other {} together",
        PAYMENTS - 1
    );
    app.assert_balanced(&event_id).await;
}

/// A begin whose hold's row is locked elsewhere does not hold up the begins batched with it:
/// the batched statement skips that row, the others become `payment_pending` and complete,
/// and only the busy hold's payment waits for its row, alone, then completes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_hold_does_not_hold_up_its_batch_of_begins() {
    const PAYMENTS: usize = 10;
    let app = spawn_app().await;
    let event = app.create_event("Busy hold", 100, None).await;
    let event_id = id_of(&event);
    let paying = holds(&app, &event_id, PAYMENTS, 1).await;
    let ids: Vec<String> = paying.iter().map(|(id, _)| id.clone()).collect();

    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_allocation(&ids[0]).await;
    let mut payments = JoinSet::new();
    pay_all(&app, &paying, "tok_visa", &mut payments);
    let mut answered = 0;
    while answered < PAYMENTS - 1 {
        let (id, status, body) = tokio::time::timeout(Duration::from_secs(4), payments.join_next())
            .await
            .expect("the other payments complete while one hold's row is locked")
            .unwrap()
            .unwrap();
        assert_ne!(id, ids[0], "the busy hold's payment waits for its row");
        assert_eq!(status, StatusCode::OK, "{id}: {body}");
        assert_eq!(body["status"], "purchased", "{body}");
        answered += 1;
    }
    let waiters = blocker.waiters().await;
    assert_eq!(waiters.len(), 1, "the busy hold's begin waits: {waiters:?}");
    blocker.commit().await;

    let (id, status, body) = payments.join_next().await.unwrap().unwrap();
    assert_eq!(id, ids[0]);
    assert_eq!(status, StatusCode::OK, "{id}: {body}");
    assert_eq!(body["status"], "purchased", "{body}");
    assert_eq!(
        app.counts(&event_id).await,
        (100 - PAYMENTS as i64, 0, PAYMENTS as i64)
    );
    app.assert_balanced(&event_id).await;
}

/// One batch of settles with every outcome: charged, declined, declined after the hold
/// lapsed, and one that recovery settled first. Each is decided on its own and answered as
/// its row ends; none fails the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_settle_in_a_batch_is_decided_on_its_own() {
    // No background sweep: the one lapse below is made by hand while the batch waits.
    let app = spawn_app_with(&["--sweep-interval-ms", "3600000"]).await;
    let event = app.create_event("Mixed batch", 100, None).await;
    let event_id = id_of(&event);
    let first = holds(&app, &event_id, 1, 1).await;
    let charged = holds(&app, &event_id, 6, 1).await;
    let declined = holds(&app, &event_id, 3, 1).await;
    let recovered = holds(&app, &event_id, 1, 1).await;

    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_event(&event_id).await;
    // The first settle's batch waits at the lock alone; everything after it queues for the
    // next batch.
    let mut payments = JoinSet::new();
    pay_all(&app, &first, "tok_visa", &mut payments);
    blocker.wait_for_waiters(1).await;
    pay_all(&app, &charged, "tok_visa", &mut payments);
    pay_all(&app, &declined, "tok_chargeDeclined", &mut payments);
    pay_all(&app, &recovered, "tok_visa", &mut payments);
    let queued: Vec<String> = [&charged, &declined, &recovered]
        .into_iter()
        .flatten()
        .map(|(id, _)| id.clone())
        .collect();
    until_pending(&app, &queued, queued.len(), "every payment to begin").await;
    // Time for their charges to be made and their settles to queue together.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Recovery settles one of them first (as the sweeper would, under the event lock the
    // blocker holds): purchased under its own code, its tickets moved.
    let recovered_id = Uuid::parse_str(&recovered[0].0).unwrap();
    let record = TransitionRecord {
        confirmation_code: Some("RECOVERED1"),
        ..TransitionRecord::default()
    };
    boxoffice::db::allocations::transition(
        blocker.conn(),
        recovered_id,
        AllocationStatus::Purchased,
        record,
    )
    .await
    .unwrap()
    .expect("the hold was waiting");
    boxoffice::db::events::move_counts(
        blocker.conn(),
        Uuid::parse_str(&event_id).unwrap(),
        CountMove::Pay,
        1,
        &[],
        ChangeKind::TicketPurchased,
        BLOCKER_BUYER,
    )
    .await
    .unwrap();
    // One declined payment's hold lapses while the batch waits: the decline expires it.
    let lapsing = declined[0].0.clone();
    sqlx::query(
        "UPDATE ticket_allocations SET expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(Uuid::parse_str(&lapsing).unwrap())
    .execute(blocker.conn())
    .await
    .unwrap();
    blocker.commit().await;

    let charged_ids: Vec<&String> = first.iter().chain(&charged).map(|(id, _)| id).collect();
    let declined_ids: Vec<&String> = declined.iter().map(|(id, _)| id).collect();
    while let Some(answer) = payments.join_next().await {
        let (id, status, body) = answer.unwrap();
        let row = app.allocation_row(&id).await;
        if charged_ids.contains(&&id) {
            assert_eq!(status, StatusCode::OK, "{id}: {body}");
            assert_eq!(body["status"], "purchased", "{body}");
            assert_eq!(row.status, "purchased");
            assert_eq!(
                body["confirmationCode"].as_str(),
                row.confirmation_code.as_deref()
            );
        } else if declined_ids.contains(&&id) {
            assert_error(
                status,
                &body,
                StatusCode::PAYMENT_REQUIRED,
                "PAYMENT_DECLINED",
            );
            let expected = if id == lapsing { "expired" } else { "reserved" };
            assert_eq!(row.status, expected, "{id}");
        } else {
            // Recovery's outcome stands, answered as the row is.
            assert_eq!(status, StatusCode::OK, "{id}: {body}");
            assert_eq!(body["status"], "purchased", "{body}");
            assert_eq!(body["confirmationCode"], "RECOVERED1", "{body}");
            assert_eq!(row.confirmation_code.as_deref(), Some("RECOVERED1"));
        }
    }
    // 7 bought here, 1 by recovery; 2 declined and reserved again; 1 expired and returned.
    assert_eq!(app.counts(&event_id).await, (90, 2, 8));
    app.assert_balanced(&event_id).await;
}

/// Many payments of one event, each sent close to its hold's deadline (from 40 ms before to
/// 38 ms after it), while the sweeper runs every 50 ms: each payment either began before the
/// deadline and bought its hold, or was refused 410 and the hold expired (by the sweeper, or
/// by the payment that found it lapsed); no 5xx, no hold bought after it lapsed, every
/// ticket counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_race_the_sweeper_at_the_deadline() {
    const HOLDS: usize = 40;
    let app = spawn_app_with(&["--hold-seconds", "1", "--sweep-interval-ms", "50"]).await;
    let event = app.create_event("Deadline rush", 100, None).await;
    let event_id = id_of(&event);
    let paying = holds(&app, &event_id, HOLDS, 1).await;
    let mut payments = JoinSet::new();
    for (n, (id, holder)) in paying.into_iter().enumerate() {
        let deadline = app.allocation_row(&id).await.expires_at;
        let send_at = deadline + Duration::from_millis(2 * n as u64) - Duration::from_millis(40);
        let api = Api::clone(&app);
        payments.spawn(async move {
            let wait = send_at - time::OffsetDateTime::now_utc();
            if wait.is_positive() {
                tokio::time::sleep(wait.try_into().unwrap()).await;
            }
            let (status, body) = api.pay(&id, &holder, Some("tok_visa")).await;
            (id, status, body)
        });
    }

    let (mut bought, mut refused) = (0, 0);
    while let Some(answer) = payments.join_next().await {
        let (id, status, body) = answer.unwrap();
        let row = app.allocation_row(&id).await;
        match status {
            StatusCode::OK => {
                assert_eq!(body["status"], "purchased", "{body}");
                assert_eq!(row.status, "purchased");
                let began = row.payment_pending_at.expect("payment_pending_at");
                assert!(
                    began < row.expires_at,
                    "{id}: a payment that began at {began} after the hold lapsed at {} was accepted",
                    row.expires_at
                );
                bought += 1;
            }
            _ => {
                assert_error(status, &body, StatusCode::GONE, "RESERVATION_EXPIRED");
                assert_eq!(row.status, "expired", "{id}");
                assert!(row.payment_pending_at.is_none(), "{id}: never began");
                refused += 1;
            }
        }
    }
    assert_eq!(bought + refused, HOLDS);
    eventually(
        "the sweeper to expire every lapsed hold",
        Duration::from_secs(5),
        || async { (app.counts(&event_id).await.1 == 0).then_some(()) },
    )
    .await;
    assert_eq!(
        app.counts(&event_id).await,
        (100 - bought as i64, 0, bought as i64),
        "{bought} bought, {refused} refused"
    );
    assert_eq!(app.row_count("payment_charges").await, bought as i64);
    app.assert_balanced(&event_id).await;
}

/// A settle buys a hold only while it waits under the settle's own reference: a charged
/// outcome for an earlier reference of the hold (here a free order's recovery, which counts
/// as charged without asking the provider) leaves the payment now waiting under another
/// reference alone, and moves no count.
#[tokio::test]
async fn a_settle_under_a_reference_the_hold_no_longer_waits_for_buys_nothing() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Stale reference", 10, None).await);
    let (hold, _) = holds(&app, &event_id, 1, 2).await.remove(0);
    let id = Uuid::parse_str(&hold).unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    let buyer: String =
        sqlx::query_scalar("SELECT fingerprint_hash FROM ticket_allocations WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    // A first payment under `pay_old`, declined (back to reserved), then a second one that
    // waits under `pay_new`.
    for (reference, next) in [("pay_old", true), ("pay_new", false)] {
        let begun =
            boxoffice::db::allocations::begin_payments(&mut conn, &[id], &[&buyer], &[reference])
                .await
                .unwrap();
        assert_eq!(begun.len(), 1, "{reference} began");
        if next {
            boxoffice::db::allocations::transition(
                &mut conn,
                id,
                AllocationStatus::Reserved,
                TransitionRecord::default(),
            )
            .await
            .unwrap()
            .expect("declined back to reserved");
        }
    }
    drop(conn);
    let counts = || async {
        sqlx::query_as::<_, (i32, i32, i32)>(
            "SELECT available_tickets, reserved_tickets, purchased_tickets FROM events \
             WHERE id = $1",
        )
        .bind(Uuid::parse_str(&event_id).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    let before = counts().await;
    assert_eq!(before, (8, 2, 0));

    let answer = boxoffice::holds::payment::recover_payment(
        &app.pool,
        app.state.admission_keys.signer(),
        app.state.payments.as_ref(),
        id,
        "pay_old",
        0,
    )
    .await
    .expect("answered as the hold stands");
    // Settled nothing, so no recovery counts it.
    assert!(answer.is_none(), "{answer:?}");
    let stored: (String, Option<String>) =
        sqlx::query_as("SELECT status, confirmation_code FROM ticket_allocations WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, ("payment_pending".to_owned(), None));
    assert_eq!(counts().await, before);
}

/// A settle whose hold the same batch buys for a later payment of that hold is answered as
/// the hold stands, not failed: its reference (here declined) is an earlier one, which
/// recovery returned to `reserved` before the buyer paid again.
#[tokio::test]
async fn a_settle_of_a_hold_its_batch_bought_for_a_later_payment_is_answered_as_it_stands() {
    let app = spawn_app_with(&["--sweep-interval-ms", "3600000"]).await;
    let event_id = id_of(&app.create_event("Stale and fresh", 10, None).await);
    let first = holds(&app, &event_id, 1, 1).await;
    let (hold, holder) = holds(&app, &event_id, 1, 1).await.remove(0);

    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_event(&event_id).await;
    // The first settle's batch waits at the lock alone; the two below queue for the next.
    let mut payments = JoinSet::new();
    pay_all(&app, &first, "tok_visa", &mut payments);
    blocker.wait_for_waiters(1).await;

    // A payment that the card declines: it begins, and its settle queues.
    let stale = (hold.clone(), holder.clone());
    pay_all(
        &app,
        std::slice::from_ref(&stale),
        "tok_chargeDeclined",
        &mut payments,
    );
    let ids = [hold.clone()];
    until_pending(&app, &ids, 1, "the first payment to begin").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Recovery put the hold back meanwhile (as after voiding that reference), and the buyer
    // pays again: that payment begins under a new reference and its settle queues too.
    boxoffice::db::allocations::transition(
        &mut app.pool.acquire().await.unwrap(),
        Uuid::parse_str(&hold).unwrap(),
        AllocationStatus::Reserved,
        TransitionRecord::default(),
    )
    .await
    .unwrap()
    .expect("the hold was payment_pending");
    let (api, again) = (Api::clone(&app), stale.clone());
    let fresh = tokio::spawn(async move { api.pay(&again.0, &again.1, Some("tok_visa")).await });
    until_pending(&app, &ids, 1, "the second payment to begin").await;
    // Time for its charge to be made and its settle to queue beside the first one's.
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocker.commit().await;

    let (status, body) = fresh.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "purchased", "{body}");
    while let Some(answer) = payments.join_next().await {
        let (id, status, body) = answer.unwrap();
        // The declined one included: its hold is bought, and it hears so.
        assert_eq!(status, StatusCode::OK, "{id}: {body}");
        assert_eq!(body["status"], "purchased", "{id}: {body}");
    }
    let row = app.allocation_row(&hold).await;
    assert_eq!(row.status, "purchased");
    let purchased: i32 = sqlx::query_scalar("SELECT purchased_tickets FROM events WHERE id = $1")
        .bind(Uuid::parse_str(&event_id).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(purchased, 2);
}
