//! Each lock docs/concurrency.md credits, pinned by a test that cannot pass without it.
//!
//! A [`Blocker`] of the test's own holds the row while a request is sent, and makes a
//! consistent change before it commits. The request is seen waiting for the blocker in
//! `pg_stat_activity`, and must then act on the state the blocker committed. "It waited" alone
//! would prove little: without `FOR UPDATE`, the later `UPDATE events …` still waits for the
//! blocker's row. What these tests pin is the decision: taken under the lock, it can only see
//! the committed change; taken before the lock, it sees the old row and answers wrongly (or
//! runs into the CHECK constraints and answers 500).

use std::time::Duration;

use boxoffice::domain::stats::ChangeKind;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::{
    Api, BATCHED, Blocker, PER_REQUEST, TestApp, assert_error, id_of, new_fingerprint, spawn_app,
    spawn_app_with,
};

/// A fingerprint hash for rows the blocker writes itself (the schema wants 64 hex digits).
const BLOCKER_BUYER: &str = "b10c0000b10c0000b10c0000b10c0000b10c0000b10c0000b10c0000b10c0000";

/// The blocker sells `quantity` tickets of the event the way a purchase transaction does: a
/// `reserved` hold and the counts moved, under the event lock it already holds.
async fn sell(blocker: &mut Blocker, event_id: &str, quantity: i32) {
    let event_id = Uuid::parse_str(event_id).unwrap();
    sqlx::query(
        "INSERT INTO ticket_allocations (id, event_id, quantity, status, fingerprint_hash, expires_at) \
         VALUES ($1, $2, $3, 'reserved', $4, now() + interval '1 hour')",
    )
    .bind(Uuid::new_v4())
    .bind(event_id)
    .bind(quantity)
    .bind(BLOCKER_BUYER)
    .execute(blocker.conn())
    .await
    .unwrap();
    sqlx::query(
        "UPDATE events SET available_tickets = available_tickets - $2, \
            reserved_tickets = reserved_tickets + $2, change_seq = change_seq + 1, \
            updated_at = now() \
         WHERE id = $1",
    )
    .bind(event_id)
    .bind(quantity)
    .execute(blocker.conn())
    .await
    .unwrap();
}

/// While the blocker holds the event row and sells its last tickets, purchases of one ticket
/// each are sent; each must wait, then hear the committed sale: 409 `TICKETS_SOLD_OUT`,
/// never 201 and never 500. `waiting` is how many backends the purchases occupy at the lock
/// (one per request, or one for a whole batch).
async fn purchase_waits_for_the_event_lock(mode: &[&str], waiting: usize) {
    let app = spawn_app_with(mode).await;
    let event = app.create_event("Locked sale", 5, None).await;
    let event_id = id_of(&event);

    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_event(&event_id).await;
    sell(&mut blocker, &event_id, 5).await;

    let mut purchases = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let (api, event_id) = (Api::clone(&app), event_id.clone());
        purchases.spawn(async move { api.purchase(&event_id, 1, &new_fingerprint()).await });
    }
    let waiters = blocker.wait_for_waiters(waiting).await;
    // The app's lock timeout is 5 s: still waiting after this long means waiting on the lock.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        blocker.waiters().await.len(),
        waiting,
        "still waiting: {waiters:?}"
    );
    assert!(
        purchases.try_join_next().is_none(),
        "no purchase was answered while the blocker held the event row"
    );
    blocker.commit().await;

    while let Some(answer) = purchases.join_next().await {
        let (status, body) = answer.unwrap();
        assert_error(status, &body, StatusCode::CONFLICT, "TICKETS_SOLD_OUT");
    }
    assert_eq!(app.counts(&event_id).await, (0, 5, 0));
    assert_eq!(
        app.row_count("ticket_allocations").await,
        1,
        "only the blocker's hold"
    );
    app.assert_balanced(&event_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_decides_under_the_event_lock_per_request() {
    // Each request is its own transaction, and each waits at the lock.
    purchase_waits_for_the_event_lock(PER_REQUEST, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_decides_under_the_event_lock_batched() {
    // The requests share batches, and an instance runs one batch per event at a time: one
    // backend waits at the lock, any later batch queues in the coalescer behind it.
    purchase_waits_for_the_event_lock(BATCHED, 1).await;
}

/// Sleeps until just past the hold's `expires_at` (one clock: same machine as the database).
async fn sleep_until_lapsed(app: &TestApp, id: &str) {
    let deadline = app.allocation_row(id).await.expires_at + Duration::from_millis(50);
    let left = deadline - time::OffsetDateTime::now_utc();
    if left.is_positive() {
        tokio::time::sleep(left.try_into().unwrap()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_expires_under_the_event_lock() {
    // Background sweeps off: the test runs one itself.
    let app = spawn_app_with(&["--hold-seconds", "1", "--sweep-interval-ms", "3600000"]).await;
    let event = app.create_event("Locked sweep", 10, None).await;
    let event_id = id_of(&event);
    let (status, late_cancel) = app.purchase(&event_id, 2, &new_fingerprint()).await;
    assert_eq!(status, StatusCode::CREATED, "{late_cancel}");
    let (status, swept) = app.purchase(&event_id, 3, &new_fingerprint()).await;
    assert_eq!(status, StatusCode::CREATED, "{swept}");
    let (late_cancel, swept) = (id_of(&late_cancel), id_of(&swept));
    sleep_until_lapsed(&app, &swept).await;
    assert_eq!(
        app.counts(&event_id).await,
        (5, 5, 0),
        "both lapsed, neither swept"
    );

    // The blocker plays a late cancel: the event row first, as every writer does.
    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_event(&event_id).await;
    let sweeper = app.state.sweeper.clone();
    let sweep = tokio::spawn(async move { boxoffice::sweeper::sweep_once(&sweeper).await });
    let waiters = blocker.wait_for_waiters(1).await;
    assert!(!sweep.is_finished(), "the sweep waits: {waiters:?}");

    // Then the allocation row, and the expiry that a late cancel writes. Were the sweep
    // already holding that row (it locked allocations before the event), this would deadlock.
    blocker.lock_allocation(&late_cancel).await;
    sqlx::query(
        "UPDATE ticket_allocations SET status = 'expired', expired_at = now(), updated_at = now() \
         WHERE id = $1",
    )
    .bind(Uuid::parse_str(&late_cancel).unwrap())
    .execute(blocker.conn())
    .await
    .unwrap();
    sqlx::query(
        "UPDATE events SET available_tickets = available_tickets + 2, \
            reserved_tickets = reserved_tickets - 2, change_seq = change_seq + 1, \
            updated_at = now() \
         WHERE id = $1",
    )
    .bind(Uuid::parse_str(&event_id).unwrap())
    .execute(blocker.conn())
    .await
    .unwrap();
    blocker.commit().await;

    let (expired, settled) = sweep
        .await
        .unwrap()
        .expect("the sweep succeeds (no deadlock)");
    assert_eq!(
        (expired, settled),
        (1, 0),
        "the sweep expired only the hold the blocker left reserved"
    );
    assert_eq!(app.allocation_row(&late_cancel).await.status, "expired");
    assert_eq!(app.allocation_row(&swept).await.status, "expired");
    assert_eq!(
        app.counts(&event_id).await,
        (10, 0, 0),
        "each hold returned once"
    );
    app.assert_balanced(&event_id).await;
}

/// The blocker takes only the allocation row (not its event's) and begins a payment on it,
/// as payment step 1 does: `payment_pending` under its own reference, no count moved, so the
/// event row stays free and only the allocation lock can make a request wait.
async fn begin_payment_under_allocation_lock(app: &TestApp, id: &str) -> Blocker {
    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_allocation(id).await;
    sqlx::query(
        "UPDATE ticket_allocations SET status = 'payment_pending', payment_pending_at = now(), \
            payment_reference = 'pay_blocker', updated_at = now() \
         WHERE id = $1",
    )
    .bind(Uuid::parse_str(id).unwrap())
    .execute(blocker.conn())
    .await
    .unwrap();
    blocker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_decides_under_the_allocation_lock() {
    let app = spawn_app().await;
    let (event_id, id, holder) = app.event_with_hold("Locked cancel", 10, 2).await;
    let blocker = begin_payment_under_allocation_lock(&app, &id).await;

    let (api, cancelled) = (Api::clone(&app), id.clone());
    let cancel = tokio::spawn(async move { api.cancel(&cancelled, &holder).await });
    let waiters = blocker.wait_for_waiters(1).await;
    assert!(!cancel.is_finished(), "the cancel waits: {waiters:?}");
    blocker.commit().await;

    let (status, body) = cancel.await.unwrap();
    assert_error(status, &body, StatusCode::CONFLICT, "INVALID_STATUS");
    assert_eq!(body["status"], "payment_pending", "{body}");
    let row = app.allocation_row(&id).await;
    assert_eq!(row.status, "payment_pending");
    assert_eq!(row.payment_reference.as_deref(), Some("pay_blocker"));
    assert!(row.cancelled_at.is_none());
    assert_eq!(app.counts(&event_id).await, (8, 2, 0));
    app.assert_balanced(&event_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_decides_under_the_allocation_lock() {
    let app = spawn_app().await;
    let (event_id, id, holder) = app.event_with_hold("Locked payment", 10, 2).await;
    let blocker = begin_payment_under_allocation_lock(&app, &id).await;

    let (api, paid) = (Api::clone(&app), id.clone());
    let payment = tokio::spawn(async move { api.pay(&paid, &holder, Some("tok_visa")).await });
    let waiters = blocker.wait_for_waiters(1).await;
    assert!(!payment.is_finished(), "the payment waits: {waiters:?}");
    blocker.commit().await;

    let (status, body) = payment.await.unwrap();
    assert_error(status, &body, StatusCode::CONFLICT, "INVALID_STATUS");
    assert_eq!(body["status"], "payment_pending", "{body}");
    let row = app.allocation_row(&id).await;
    assert_eq!(row.status, "payment_pending");
    assert_eq!(row.payment_reference.as_deref(), Some("pay_blocker"));
    assert_eq!(
        app.row_count("payment_charges").await,
        0,
        "the refused payment never reached the provider"
    );
    assert_eq!(app.counts(&event_id).await, (8, 2, 0));
    app.assert_balanced(&event_id).await;
}

/// The blocker runs an expiry batch by hand, with the sweeper's own statements: the event row
/// first; then, once a cancel or payment of the lapsed hold `id` (spawned by `send`) is seen
/// waiting, the batch's pick of lapsed holds (`FOR UPDATE SKIP LOCKED`) and the count move.
/// The request must be waiting for the event row and hold no allocation row, so the pick
/// finds the hold; a request that locked the allocation first would make the sweep skip it.
async fn expiry_batch_while_waiting(
    app: &TestApp,
    event_id: &str,
    id: &str,
    send: impl FnOnce() -> tokio::task::JoinHandle<(StatusCode, serde_json::Value)>,
) -> (StatusCode, serde_json::Value) {
    let event = Uuid::parse_str(event_id).unwrap();
    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_event(event_id).await;
    let request = send();
    let waiters = blocker.wait_for_waiters(1).await;
    assert!(!request.is_finished(), "the request waits: {waiters:?}");
    let expired = boxoffice::db::allocations::expire_lapsed(blocker.conn(), event, 500)
        .await
        .unwrap();
    assert_eq!(
        (expired.holds, expired.tickets),
        (1, 2),
        "the expiry batch found the lapsed hold {id} unlocked"
    );
    boxoffice::db::events::move_counts(
        blocker.conn(),
        event,
        boxoffice::db::events::CountMove::Release,
        2,
        &expired.by_type,
        ChangeKind::TicketExpired,
        BLOCKER_BUYER,
    )
    .await
    .unwrap();
    blocker.commit().await;
    request.await.unwrap()
}

/// A fresh app with its background sweeper off, and a lapsed, unswept hold of 2 tickets out
/// of 10: (app, event id, allocation id, holder).
async fn lapsed_hold(name: &str) -> (TestApp, String, String, String) {
    let app = spawn_app_with(&["--hold-seconds", "1", "--sweep-interval-ms", "3600000"]).await;
    let (event_id, id, holder) = app.event_with_hold(name, 10, 2).await;
    sleep_until_lapsed(&app, &id).await;
    assert_eq!(app.counts(&event_id).await, (8, 2, 0), "lapsed, not swept");
    (app, event_id, id, holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_takes_the_event_lock_before_the_allocation_lock() {
    let (app, event_id, id, holder) = lapsed_hold("Cancel in line").await;
    let (api, cancelled) = (Api::clone(&app), id.clone());
    let cancel = || tokio::spawn(async move { api.cancel(&cancelled, &holder).await });

    let (status, body) = expiry_batch_while_waiting(&app, &event_id, &id, cancel).await;
    assert_error(status, &body, StatusCode::CONFLICT, "INVALID_STATUS");
    assert_eq!(body["status"], "expired", "{body}");
    assert_eq!(app.allocation_row(&id).await.status, "expired");
    assert_eq!(app.counts(&event_id).await, (10, 0, 0), "returned once");
    app.assert_balanced(&event_id).await;
}

/// A payment of the 2 tickets of hold `id`, out of the event's 10, refused as expired: the
/// hold expired, never paid or charged, its tickets back once.
async fn assert_refused_as_expired(
    app: &TestApp,
    event_id: &str,
    id: &str,
    status: StatusCode,
    body: &serde_json::Value,
) {
    assert_error(status, body, StatusCode::GONE, "RESERVATION_EXPIRED");
    let row = app.allocation_row(id).await;
    assert_eq!(row.status, "expired");
    assert!(row.payment_pending_at.is_none());
    assert_eq!(app.row_count("payment_charges").await, 0);
    assert_eq!(app.counts(event_id).await, (10, 0, 0), "returned once");
    app.assert_balanced(event_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_takes_the_event_lock_before_the_allocation_lock() {
    let (app, event_id, id, holder) = lapsed_hold("Payment in line").await;
    let (api, paid) = (Api::clone(&app), id.clone());
    let payment = || tokio::spawn(async move { api.pay(&paid, &holder, Some("tok_visa")).await });

    let (status, body) = expiry_batch_while_waiting(&app, &event_id, &id, payment).await;
    assert_refused_as_expired(&app, &event_id, &id, status, &body).await;
}

/// Ends the event's sales a second from now by the database clock; returns that instant.
async fn end_sales_in_a_second(app: &TestApp, event_id: &str) -> time::OffsetDateTime {
    sqlx::query_scalar(
        "UPDATE events SET sales_end_at = clock_timestamp() + interval '1 second' \
         WHERE id = $1 RETURNING sales_end_at",
    )
    .bind(Uuid::parse_str(event_id).unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Once a request waits behind `blocker` (before `sales_end`), lets the sales end while it
/// waits, then commits without having written anything (one clock: same machine as the
/// database).
async fn commit_once_sales_ended(blocker: Blocker, sales_end: time::OffsetDateTime) {
    let waiters = blocker.wait_for_waiters(1).await;
    assert!(
        time::OffsetDateTime::now_utc() < sales_end,
        "the request waits before the sales end: {waiters:?}"
    );
    let left = sales_end + Duration::from_millis(100) - time::OffsetDateTime::now_utc();
    if left.is_positive() {
        tokio::time::sleep(left.try_into().unwrap()).await;
    }
    blocker.commit().await;
}

/// A lock holder that writes nothing (a refund's first step, an expiry round that found no
/// lapsed hold, a purchase batch that granted nothing) leaves no newer version of the row, so
/// PostgreSQL does not evaluate a waiting statement again once it gets the lock: a clock read
/// in the locking statement itself is the one from before the wait. The sales window must be
/// judged by the clock once the event lock is held.
async fn sales_window_judged_once_the_event_lock_is_held(mode: &[&str]) {
    let app = spawn_app_with(mode).await;
    let event = app.create_event("Closing sale", 10, None).await;
    let event_id = id_of(&event);
    let sales_end = end_sales_in_a_second(&app, &event_id).await;

    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_event(&event_id).await;
    let (api, sold) = (Api::clone(&app), event_id.clone());
    let purchase = tokio::spawn(async move { api.purchase(&sold, 1, &new_fingerprint()).await });
    commit_once_sales_ended(blocker, sales_end).await;

    let (status, body) = purchase.await.unwrap();
    assert_error(status, &body, StatusCode::CONFLICT, "SALES_CLOSED");
    assert_eq!(app.counts(&event_id).await, (10, 0, 0));
    assert_eq!(app.row_count("ticket_allocations").await, 0);
    app.assert_balanced(&event_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sales_window_is_judged_once_the_event_lock_is_held_per_request() {
    sales_window_judged_once_the_event_lock_is_held(PER_REQUEST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sales_window_is_judged_once_the_event_lock_is_held_batched() {
    sales_window_judged_once_the_event_lock_is_held(BATCHED).await;
}

/// As for the sales window: a payment waiting for a hold's row lock, whose holder writes
/// nothing, must judge the hold's time by the clock once it holds the lock, not before.
async fn hold_time_judged_once_the_hold_lock_is_held(mode: &[&str]) {
    let flags = [
        mode,
        &["--hold-seconds", "2", "--sweep-interval-ms", "3600000"],
    ]
    .concat();
    let app = spawn_app_with(&flags).await;
    let (event_id, id, holder) = app.event_with_hold("Lapsing payment", 10, 2).await;

    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_allocation(&id).await;
    let (api, paid) = (Api::clone(&app), id.clone());
    let payment = tokio::spawn(async move { api.pay(&paid, &holder, Some("tok_visa")).await });
    let waiters = blocker.wait_for_waiters(1).await;
    assert!(
        time::OffsetDateTime::now_utc() < app.allocation_row(&id).await.expires_at,
        "the payment waits before the hold lapses: {waiters:?}"
    );
    sleep_until_lapsed(&app, &id).await;
    blocker.commit().await;

    let (status, body) = payment.await.unwrap();
    assert_refused_as_expired(&app, &event_id, &id, status, &body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_time_is_judged_once_the_hold_lock_is_held_per_request() {
    hold_time_judged_once_the_hold_lock_is_held(PER_REQUEST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_time_is_judged_once_the_hold_lock_is_held_batched() {
    hold_time_judged_once_the_hold_lock_is_held(BATCHED).await;
}

/// The waiting list's walk judges the sales window by the clock under the event lock too: a
/// ticket a cancel returns after the sale closed, while the cancel waited for the lock, is
/// offered to nobody in line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_ticket_is_offered_only_while_the_sale_is_open_once_the_event_lock_is_held() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Closing line", 1, None).await);
    let holder = new_fingerprint();
    let (status, held) = app.purchase(&event_id, 1, &holder).await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    let waiter = new_fingerprint();
    let (status, entry) = app
        .send(
            app.request(
                reqwest::Method::POST,
                &format!("/events/{event_id}/waiting-list"),
            )
            .header("X-Device-Fingerprint", &waiter)
            .json(&serde_json::json!({"quantity": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{entry}");
    let sales_end = end_sales_in_a_second(&app, &event_id).await;

    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_event(&event_id).await;
    let (api, cancelled) = (Api::clone(&app), id_of(&held));
    let cancel = tokio::spawn(async move { api.cancel(&cancelled, &holder).await });
    commit_once_sales_ended(blocker, sales_end).await;

    let (status, body) = cancel.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, entry) = app
        .send(
            app.request(
                reqwest::Method::GET,
                &format!("/waiting-list/{}", id_of(&entry)),
            )
            .header("X-Device-Fingerprint", &waiter),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{entry}");
    assert_ne!(entry["status"], "offered", "{entry}");
    let offers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ticket_allocations WHERE status = 'reserved'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(offers, 0, "no offer hold after the sale closed");
    app.assert_balanced(&event_id).await;
}
