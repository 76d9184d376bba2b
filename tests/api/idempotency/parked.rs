//! A keyed payment whose provider outcome is unknown parks its key on the payment: a retry
//! learns the outcome from the hold and never pays twice.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Blocker, DbProxy, PER_REQUEST, TestApp, assert_error, eventually, fresh_database, id_of,
    new_fingerprint, spawn_app_on, spawn_app_with,
};

/// Payment recovery after one second; the app's own sweeper never runs during the test, so
/// the test decides when recovery happens (`sweep_once`).
const RECOVERY_BY_HAND: [&str; 4] = [
    "--payment-recovery-seconds",
    "1",
    "--sweep-interval-ms",
    "3600000",
];

/// A keyed payment of `hold` by `buyer` with `token`: (status, body, replayed, Retry-After).
async fn keyed_pay(
    app: &TestApp,
    hold: &str,
    buyer: &str,
    key: &str,
    token: &str,
) -> (StatusCode, Value, bool, Option<String>) {
    let response = app
        .request(Method::POST, &format!("/tickets/{hold}/payment"))
        .header("X-Device-Fingerprint", buyer)
        .header("Idempotency-Key", key)
        .json(&json!({ "paymentToken": token }))
        .send()
        .await
        .unwrap();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let retry_after = crate::helpers::retry_after(response.headers());
    let status = response.status();
    (
        status,
        response.json().await.unwrap(),
        replayed,
        retry_after,
    )
}

/// The stored key: (state, parked on allocation, parked on reference).
async fn parked_key(app: &TestApp, key: &str) -> (String, Option<uuid::Uuid>, Option<String>) {
    sqlx::query_as(
        "SELECT state, awaiting_allocation, awaiting_reference FROM idempotency_keys WHERE key = $1",
    )
    .bind(key)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// The hold is `payment_pending` under a reference the provider charged, and `key` is parked
/// on that payment, not released: (the reference, the stored key).
async fn assert_charged_and_parked(
    app: &TestApp,
    hold: &str,
    key: &str,
) -> (String, (String, Option<uuid::Uuid>, Option<String>)) {
    let pending = app.allocation_row(hold).await;
    assert_eq!(pending.status, "payment_pending");
    let reference = pending.payment_reference.clone().unwrap();
    assert_eq!(
        app.charge_outcome(&reference).await.as_deref(),
        Some("charged")
    );
    let parked = parked_key(app, key).await;
    assert_eq!(
        parked,
        (
            "in_progress".to_owned(),
            Some(uuid::Uuid::parse_str(hold).unwrap()),
            Some(reference.clone())
        ),
        "parked on the payment, not released"
    );
    (reference, parked)
}

/// Settles stale payments the way the sweeper does, once they are older than the recovery
/// age of one second; returns how many were settled.
async fn recover_payments(app: &TestApp) -> usize {
    tokio::time::sleep(Duration::from_millis(1200)).await;
    boxoffice::sweeper::sweep_once(&app.state.sweeper)
        .await
        .unwrap()
        .1
}

async fn charged(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM payment_charges WHERE outcome = 'charged'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Seconds after a payment begins by which recovery will have settled it under
/// `RECOVERY_BY_HAND`: the recovery age (1 s) plus one sweep interval (an hour).
const RECOVERY_WINDOW_SECONDS: u64 = 1 + 3600;

/// The answer is 503, not a replay, and its `Retry-After` is the seconds left until
/// recovery will have settled the payment: within `seconds`.
fn assert_unavailable_for(
    answer: &(StatusCode, Value, bool, Option<String>),
    seconds: std::ops::RangeInclusive<u64>,
) {
    let (status, body, replayed, retry_after) = answer;
    assert_error(
        *status,
        body,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    assert!(!replayed, "{body}");
    let retry_after: u64 = retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After in whole seconds: {retry_after:?}; {body}"));
    assert!(
        seconds.contains(&retry_after),
        "Retry-After {retry_after} s, expected {seconds:?}; {body}"
    );
}

/// A 503 for a payment that began moments ago (well within a minute): `Retry-After` is
/// nearly the whole recovery window.
fn assert_unavailable(answer: &(StatusCode, Value, bool, Option<String>)) {
    assert_unavailable_for(
        answer,
        RECOVERY_WINDOW_SECONDS - 60..=RECOVERY_WINDOW_SECONDS,
    );
}

#[tokio::test]
async fn a_payment_charged_but_unanswered_keeps_its_key_until_recovery_gives_the_purchase() {
    let app = spawn_app_with(&RECOVERY_BY_HAND).await;
    let (event_id, hold, buyer) = app.event_with_hold("Lost after charge", 10, 2).await;
    let first = keyed_pay(&app, &hold, &buyer, "pay-lost", "tok_lostAfterCharge").await;
    assert_unavailable(&first);
    // Not released: parked on the payment whose outcome the request could not learn.
    let (reference, parked) = assert_charged_and_parked(&app, &hold, "pay-lost").await;

    // Before recovery the outcome is still unknown: 503 again, and no second payment begins.
    for _ in 0..2 {
        let again = keyed_pay(&app, &hold, &buyer, "pay-lost", "tok_lostAfterCharge").await;
        assert_unavailable(&again);
    }
    let still = app.allocation_row(&hold).await;
    assert_eq!(
        (still.status.as_str(), still.payment_reference.as_deref()),
        ("payment_pending", Some(reference.as_str()))
    );
    assert_eq!(app.row_count("payment_charges").await, 1);
    assert_eq!(parked_key(&app, "pay-lost").await, parked, "still parked");

    assert_eq!(recover_payments(&app).await, 1);
    let settled = app.allocation_row(&hold).await;
    assert_eq!(settled.status, "purchased");

    // The retry learns the purchase; from then on it is replayed.
    let (status, paid, replayed, _) =
        keyed_pay(&app, &hold, &buyer, "pay-lost", "tok_lostAfterCharge").await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{paid}");
    assert_eq!(paid["id"], hold.as_str(), "{paid}");
    assert_eq!(paid["status"], "purchased", "{paid}");
    assert_eq!(
        paid["confirmationCode"].as_str(),
        settled.confirmation_code.as_deref(),
        "{paid}"
    );
    let (state, awaiting, awaiting_reference) = parked_key(&app, "pay-lost").await;
    assert_eq!(
        (state.as_str(), awaiting, awaiting_reference),
        ("completed", None, None)
    );
    for _ in 0..2 {
        let (status, again, replayed, _) =
            keyed_pay(&app, &hold, &buyer, "pay-lost", "tok_lostAfterCharge").await;
        assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
        assert_eq!(again, paid, "the purchase, replayed whole");
    }
    assert_eq!(app.row_count("payment_charges").await, 1);
    assert_eq!(charged(&app).await, 1, "one charge");
    assert_eq!(app.event(&event_id).await["purchasedTickets"], 2);
}

#[tokio::test]
async fn a_payment_that_never_reached_the_provider_is_paid_afresh_by_its_retry_after_recovery() {
    let app = spawn_app_with(&RECOVERY_BY_HAND).await;
    let (event_id, hold, buyer) = app.event_with_hold("Unreachable once", 10, 2).await;
    let token = "tok_unreachableOnce";
    assert_unavailable(&keyed_pay(&app, &hold, &buyer, "pay-unreached", token).await);
    let first_reference = app.allocation_row(&hold).await.payment_reference.unwrap();
    assert_eq!(app.charge_outcome(&first_reference).await, None);
    let (_, awaiting, _) = parked_key(&app, "pay-unreached").await;
    assert_eq!(awaiting, Some(uuid::Uuid::parse_str(&hold).unwrap()));

    // Unknown until recovery: the retry neither pays nor frees the key.
    assert_unavailable(&keyed_pay(&app, &hold, &buyer, "pay-unreached", token).await);
    assert_eq!(app.row_count("payment_charges").await, 0);

    assert_eq!(recover_payments(&app).await, 1);
    let voided = app.allocation_row(&hold).await;
    assert_eq!(voided.status, "reserved");
    assert_eq!(
        app.charge_outcome(&first_reference).await.as_deref(),
        Some("voided")
    );

    // Nothing happened, so the retry runs afresh: a new payment, charged once.
    let (status, paid, replayed, _) = keyed_pay(&app, &hold, &buyer, "pay-unreached", token).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{paid}");
    assert_eq!(paid["status"], "purchased", "{paid}");
    let row = app.allocation_row(&hold).await;
    assert_eq!(row.status, "purchased");
    assert_ne!(
        row.payment_reference.as_deref(),
        Some(first_reference.as_str())
    );
    let (status, again, replayed, _) = keyed_pay(&app, &hold, &buyer, "pay-unreached", token).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again, paid);
    assert_eq!(charged(&app).await, 1, "one charge");
    assert_eq!(
        app.row_count("payment_charges").await,
        2,
        "the void and the charge"
    );
    assert_eq!(app.event(&event_id).await["purchasedTickets"], 2);
}

#[tokio::test]
async fn a_parked_claim_is_never_taken_over_as_stale() {
    let app = spawn_app_with(&RECOVERY_BY_HAND).await;
    let (_, hold, buyer) = app.event_with_hold("Parked and old", 10, 1).await;
    let token = "tok_lostAfterCharge";
    assert_unavailable(&keyed_pay(&app, &hold, &buyer, "pay-old", token).await);
    let parked = parked_key(&app, "pay-old").await;
    assert!(parked.1.is_some(), "{parked:?}");
    // Older than any attempt could run: an unparked claim this old would be taken over.
    sqlx::query(
        "UPDATE idempotency_keys SET claimed_at = now() - interval '10 minutes' WHERE key = 'pay-old'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // Taken over, the retry would run the payment again and find the hold payment_pending:
    // 409 INVALID_STATUS recorded for good. Parked, it still waits for the outcome.
    assert_unavailable(&keyed_pay(&app, &hold, &buyer, "pay-old", token).await);
    assert_eq!(parked_key(&app, "pay-old").await, parked);
    assert_eq!(app.allocation_row(&hold).await.status, "payment_pending");

    assert_eq!(recover_payments(&app).await, 1);
    let (status, paid, _, _) = keyed_pay(&app, &hold, &buyer, "pay-old", token).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["status"], "purchased", "{paid}");
}

#[tokio::test]
async fn two_retries_of_a_voided_payment_pay_once_and_the_key_keeps_the_purchase() {
    let app = spawn_app_with(&RECOVERY_BY_HAND).await;
    let (event_id, hold, buyer) = app.event_with_hold("Two retries", 10, 2).await;
    let token = "tok_unreachableOnce";
    assert_unavailable(&keyed_pay(&app, &hold, &buyer, "pay-twice", token).await);
    assert_eq!(recover_payments(&app).await, 1);
    assert_eq!(app.allocation_row(&hold).await.status, "reserved");

    // Both retries find the claim parked and the payment voided; the key row is held, so
    // both then wait to take the claim over (`unpark`), and only one can.
    let mut blocker = Blocker::begin(&app.pool).await;
    sqlx::query("SELECT 1 FROM idempotency_keys WHERE key = 'pay-twice' FOR UPDATE")
        .fetch_one(blocker.conn())
        .await
        .unwrap();
    let release = async {
        let waiters = blocker.wait_for_waiters(2).await;
        assert!(
            waiters
                .iter()
                .all(|q| q.contains("awaiting_allocation = NULL")),
            "both retries wait to take the parked claim: {waiters:?}"
        );
        blocker.release().await;
    };
    let (first, second, ()) = tokio::join!(
        keyed_pay(&app, &hold, &buyer, "pay-twice", token),
        keyed_pay(&app, &hold, &buyer, "pay-twice", token),
        release
    );
    let (winner, loser) = if first.0 == StatusCode::OK {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(
        (winner.0, winner.2),
        (StatusCode::OK, false),
        "{}",
        winner.1
    );
    assert_eq!(winner.1["status"], "purchased", "{}", winner.1);
    assert_error(
        loser.0,
        &loser.1,
        StatusCode::CONFLICT,
        "IDEMPOTENCY_IN_PROGRESS",
    );
    // The loser left the winner's claim alone: the key holds the purchase.
    let (status, again, replayed, _) = keyed_pay(&app, &hold, &buyer, "pay-twice", token).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again, winner.1);
    assert_eq!(charged(&app).await, 1, "one charge");
    assert_eq!(app.event(&event_id).await["purchasedTickets"], 2);
}

#[tokio::test]
async fn a_parked_payment_is_told_to_retry_when_recovery_will_have_settled_it() {
    let app = spawn_app_with(&RECOVERY_BY_HAND).await;
    let (_, hold, buyer) = app.event_with_hold("Retry after recovery", 10, 1).await;
    let token = "tok_lostAfterCharge";
    // The first answer, and a retry that finds the claim parked: the whole window is left.
    let first = keyed_pay(&app, &hold, &buyer, "pay-when", token).await;
    assert_unavailable_for(
        &first,
        RECOVERY_WINDOW_SECONDS - 5..=RECOVERY_WINDOW_SECONDS,
    );
    let again = keyed_pay(&app, &hold, &buyer, "pay-when", token).await;
    assert_unavailable_for(
        &again,
        RECOVERY_WINDOW_SECONDS - 5..=RECOVERY_WINDOW_SECONDS,
    );

    // The payment began 1000 s earlier: 1000 s less to wait.
    let age = |seconds: i64| {
        let pool = app.pool.clone();
        let hold = uuid::Uuid::parse_str(&hold).unwrap();
        async move {
            sqlx::query(
                "UPDATE ticket_allocations \
                 SET payment_pending_at = payment_pending_at - make_interval(secs => $2) \
                 WHERE id = $1",
            )
            .bind(hold)
            .bind(seconds as f64)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    age(1000).await;
    let later = keyed_pay(&app, &hold, &buyer, "pay-when", token).await;
    assert_unavailable_for(
        &later,
        RECOVERY_WINDOW_SECONDS - 1000 - 5..=RECOVERY_WINDOW_SECONDS - 1000,
    );

    // Past the window, the sweeper has not come by (it is run by hand here): at least 1 s.
    age(3000).await;
    let overdue = keyed_pay(&app, &hold, &buyer, "pay-when", token).await;
    assert_unavailable_for(&overdue, 1..=1);
    assert_eq!(app.allocation_row(&hold).await.status, "payment_pending");
    assert_eq!(app.row_count("payment_charges").await, 1, "one charge only");
}

/// `tok_unreachableOnce` depends on the payment, not on the process: each hold's first
/// payment fails, whichever instance sees the token first, and a later payment of that hold
/// is charged, even on an instance that never saw the token (as after a restart).
#[tokio::test]
async fn tok_unreachable_once_fails_each_holds_first_payment_on_every_instance() {
    let app = spawn_app_with(&RECOVERY_BY_HAND).await;
    let options = (*app.pool.connect_options()).clone();
    let fresh = spawn_app_on(&options, &RECOVERY_BY_HAND).await;
    let token = "tok_unreachableOnce";
    let (_, first, first_buyer) = app.event_with_hold("Unreachable, first", 10, 1).await;
    let (_, second, second_buyer) = app.event_with_hold("Unreachable, second", 10, 1).await;
    assert_unavailable(&keyed_pay(&app, &first, &first_buyer, "pay-first", token).await);
    // The same instance has seen the token fail; another hold's first payment fails too.
    assert_unavailable(&keyed_pay(&app, &second, &second_buyer, "pay-second", token).await);
    assert_eq!(app.row_count("payment_charges").await, 0, "nothing charged");

    assert_eq!(recover_payments(&app).await, 2);
    let retries = [
        (&fresh, &first, &first_buyer, "pay-first"),
        (&app, &second, &second_buyer, "pay-second"),
    ];
    for (instance, hold, buyer, key) in retries {
        let (status, paid, replayed, _) = keyed_pay(instance, hold, buyer, key, token).await;
        assert_eq!((status, replayed), (StatusCode::OK, false), "{paid}");
        assert_eq!(paid["status"], "purchased", "{paid}");
    }
    assert_eq!(charged(&app).await, 2, "one charge per hold");
}

/// The database connection of a payment's step three dies while it waits to record the
/// charge (as when the primary dies mid-commit in a failover): the provider has charged, the
/// request cannot know whether its record committed. Its key is parked on the payment, as
/// for a provider failure, so a retry with the key gets the purchase once recovery has
/// settled it, exactly once: not a fresh payment refused `INVALID_STATUS`, as when such a
/// failure released the key.
#[tokio::test]
async fn a_payment_whose_record_was_cut_off_gives_its_retry_the_purchase_exactly_once() {
    let app = spawn_app_with(&RECOVERY_BY_HAND).await;
    let (event_id, hold, buyer) = app.event_with_hold("Cut off mid-record", 10, 2).await;
    // Step three takes the event row lock: held here, the payment waits after its charge.
    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_event(&event_id).await;
    let cut_off = async {
        blocker.wait_for_waiters(1).await;
        let mut admin = crate::helpers::admin_connection().await;
        let cut: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE $1 = ANY (pg_blocking_pids(pid)) AND wait_event_type = 'Lock'",
        )
        .bind(blocker.pid)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert_eq!(cut, [true], "the payment's step three was cut off");
    };
    let (first, ()) = tokio::join!(
        keyed_pay(&app, &hold, &buyer, "pay-cut", "tok_visa"),
        cut_off
    );
    blocker.release().await;
    assert_unavailable(&first);
    assert_charged_and_parked(&app, &hold, "pay-cut").await;
    // Until recovery, the retry learns that the outcome is unknown, and pays nothing.
    assert_unavailable(&keyed_pay(&app, &hold, &buyer, "pay-cut", "tok_visa").await);
    assert_eq!(charged(&app).await, 1);

    assert_eq!(recover_payments(&app).await, 1);
    let (status, paid, replayed, _) = keyed_pay(&app, &hold, &buyer, "pay-cut", "tok_visa").await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{paid}");
    assert_eq!(paid["id"], hold.as_str(), "{paid}");
    assert_eq!(paid["status"], "purchased", "{paid}");
    let (status, again, replayed, _) = keyed_pay(&app, &hold, &buyer, "pay-cut", "tok_visa").await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again, paid, "the purchase, replayed whole");
    assert_eq!(charged(&app).await, 1, "one charge");
    assert_eq!(app.event(&event_id).await["purchasedTickets"], 2);
}

/// Makes `key`'s claim look like one whose process died before it could park it on its
/// payment: in progress, unparked, claimed ten minutes ago (so stale).
async fn as_if_its_process_died(app: &TestApp, key: &str) {
    sqlx::query(
        "UPDATE idempotency_keys SET awaiting_allocation = NULL, awaiting_reference = NULL, \
         claimed_at = now() - interval '10 minutes' WHERE key = $1",
    )
    .bind(key)
    .execute(&app.pool)
    .await
    .unwrap();
}

/// A keyed payment's reference is derived from its claim's attempt, so a retry that takes
/// over the claim of an attempt whose process died (stale, never parked) resolves that
/// attempt's payment first, as a parked one is: charged and settled by recovery, the retry
/// gets the purchase (not 409 `INVALID_STATUS` from paying again); still pending, 503 and
/// the key parked on it, then the purchase once recovery settles it. One charge each.
#[tokio::test]
async fn a_retry_that_takes_over_the_key_of_a_payment_whose_process_died_gets_its_purchase() {
    let app = spawn_app_with(&RECOVERY_BY_HAND).await;
    let token = "tok_lostAfterCharge";
    let (settled_event, settled_hold, settled_buyer) =
        app.event_with_hold("Died, then settled", 10, 2).await;
    let (pending_event, pending_hold, pending_buyer) =
        app.event_with_hold("Died, still pending", 10, 1).await;
    for (hold, buyer, key) in [
        (&settled_hold, &settled_buyer, "died-settled"),
        (&pending_hold, &pending_buyer, "died-pending"),
    ] {
        assert_unavailable(&keyed_pay(&app, hold, buyer, key, token).await);
        let (reference, _) = assert_charged_and_parked(&app, hold, key).await;
        let attempt: uuid::Uuid =
            sqlx::query_scalar("SELECT attempt FROM idempotency_keys WHERE key = $1")
                .bind(key)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        let hold_id = uuid::Uuid::parse_str(hold).unwrap();
        assert_eq!(
            reference,
            format!("pay_{}_{}", hold_id.simple(), attempt.simple()),
            "the reference names the attempt"
        );
    }

    // Abandoned while its payment is still pending: the retry that takes the claim over
    // does not pay again; it answers 503 and parks the key on the dead attempt's payment.
    as_if_its_process_died(&app, "died-pending").await;
    let pending_reference = app.allocation_row(&pending_hold).await.payment_reference;
    assert_unavailable(
        &keyed_pay(&app, &pending_hold, &pending_buyer, "died-pending", token).await,
    );
    let (state, awaiting, awaiting_reference) = parked_key(&app, "died-pending").await;
    assert_eq!(
        (state.as_str(), awaiting, awaiting_reference),
        (
            "in_progress",
            Some(uuid::Uuid::parse_str(&pending_hold).unwrap()),
            pending_reference.clone()
        ),
        "parked on the dead attempt's payment"
    );
    let still = app.allocation_row(&pending_hold).await;
    assert_eq!(
        (still.status.as_str(), still.payment_reference),
        ("payment_pending", pending_reference)
    );

    // Recovery settles both payments charged.
    assert_eq!(recover_payments(&app).await, 2);
    let (status, paid, replayed, _) =
        keyed_pay(&app, &pending_hold, &pending_buyer, "died-pending", token).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{paid}");
    assert_eq!(paid["status"], "purchased", "{paid}");

    // Abandoned after recovery bought its hold: the retry that takes the claim over gets
    // the purchase, and later retries its replay.
    let settled = app.allocation_row(&settled_hold).await;
    assert_eq!(settled.status, "purchased");
    as_if_its_process_died(&app, "died-settled").await;
    let (status, paid, replayed, _) =
        keyed_pay(&app, &settled_hold, &settled_buyer, "died-settled", token).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{paid}");
    assert_eq!(paid["status"], "purchased", "{paid}");
    assert_eq!(
        paid["confirmationCode"].as_str(),
        settled.confirmation_code.as_deref(),
        "{paid}"
    );
    let (status, again, replayed, _) =
        keyed_pay(&app, &settled_hold, &settled_buyer, "died-settled", token).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again, paid, "the purchase, replayed whole");

    assert_eq!(app.event(&settled_event).await["purchasedTickets"], 2);
    assert_eq!(app.event(&pending_event).await["purchasedTickets"], 1);
    assert_eq!(charged(&app).await, 2, "one charge per payment");
}

/// Step one of a keyed payment commits (`payment_pending` under the reference derived from
/// its attempt), and the database goes away before the answer reaches the app, as when a
/// primary dies just after a commit. The request cannot know whether its step committed, so
/// its key is parked on that payment, as for a provider failure: a retry learns that the
/// outcome is unknown (503), not 409 `INVALID_STATUS` from beginning afresh while this
/// payment is pending (as the failover run of 2 December found, when such a failure released
/// the key). Once recovery has settled the payment (never charged), a retry pays, once.
#[tokio::test]
async fn a_payment_whose_first_step_was_cut_off_after_its_commit_parks_its_key() {
    let options = fresh_database().await;
    let proxy = DbProxy::start(&options).await;
    // One payment at a time: step one is then one statement, and one round trip. One
    // connection, on which a first payment has prepared that statement: a statement still
    // to be prepared would wait for the table lock below while being prepared, and the
    // held-back answer to that would keep it from ever running.
    let flags = [
        PER_REQUEST,
        &RECOVERY_BY_HAND[..],
        &["--db-max-connections", "1"],
    ]
    .concat();
    let app = spawn_app_on(&proxy.options(&options), &flags).await;
    let direct = sqlx::PgPool::connect_with(options.clone()).await.unwrap();
    let (event_id, hold, buyer) = app.event_with_hold("Cut off after step one", 10, 2).await;
    let earlier = new_fingerprint();
    let (status, earlier_hold) = app.purchase(&event_id, 1, &earlier).await;
    assert_eq!(status, StatusCode::CREATED, "{earlier_hold}");
    let (status, paid) = app
        .pay(&id_of(&earlier_hold), &earlier, Some("tok_visa"))
        .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let charged_before = charged(&app).await;

    // Step one's statement waits to open the table for writing (a `SHARE` lock, held here,
    // lets the request's reads through), so the test knows when that statement is in
    // flight, before it has judged anything: waiting for the hold's row instead, it would
    // skip the row and take the hold's lock in a transaction of several statements. The
    // database's answers are then held back, the lock let go, and once the statement has
    // committed its connection is cut.
    let mut blocker = Blocker::begin(&direct).await;
    sqlx::query("LOCK TABLE ticket_allocations IN SHARE MODE")
        .execute(blocker.conn())
        .await
        .unwrap();
    let hold_id = uuid::Uuid::parse_str(&hold).unwrap();
    let cut_off = async {
        blocker.wait_for_waiters(1).await;
        proxy.freeze_answers();
        blocker.release().await;
        eventually("step one commits", Duration::from_secs(10), || async {
            let status: String =
                sqlx::query_scalar("SELECT status FROM ticket_allocations WHERE id = $1")
                    .bind(hold_id)
                    .fetch_one(&direct)
                    .await
                    .unwrap();
            (status == "payment_pending").then_some(())
        })
        .await;
        proxy.cut_and_thaw();
    };
    let (first, ()) = tokio::join!(
        keyed_pay(&app, &hold, &buyer, "pay-step-one", "tok_visa"),
        cut_off
    );
    assert_unavailable(&first);
    let begun = app.allocation_row(&hold).await.payment_reference.unwrap();
    let parked = parked_key(&app, "pay-step-one").await;
    assert_eq!(
        parked,
        ("in_progress".to_owned(), Some(hold_id), Some(begun)),
        "parked on the payment step one began"
    );

    // Until recovery, the retry learns that the outcome is unknown, and begins nothing.
    assert_unavailable(&keyed_pay(&app, &hold, &buyer, "pay-step-one", "tok_visa").await);
    assert_eq!(charged(&app).await, charged_before);

    assert_eq!(recover_payments(&app).await, 1);
    let (status, paid, replayed, _) =
        keyed_pay(&app, &hold, &buyer, "pay-step-one", "tok_visa").await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{paid}");
    assert_eq!(paid["status"], "purchased", "{paid}");
    assert_eq!(charged(&app).await, charged_before + 1, "one charge");
}

/// A keyed payment whose step one the database refused did nothing, so its key is not
/// parked: here the hold's row is locked elsewhere past `--lock-timeout-ms`, the statement
/// fails with a lock timeout, and the answer is the plain 503 (`Retry-After: 1`, not the
/// recovery window), the key released. The retry, once the lock is gone, pays at once. (Red
/// when every failure of step one parks the key, as the fix of 2 December first did: its
/// retry was told to wait a minute for a payment that never began.)
#[tokio::test]
async fn a_payment_whose_first_step_the_database_refused_releases_its_key() {
    let flags = [
        PER_REQUEST,
        &RECOVERY_BY_HAND[..],
        &["--lock-timeout-ms", "200"],
    ]
    .concat();
    let app = spawn_app_with(&flags).await;
    let (_, hold, buyer) = app.event_with_hold("Refused at step one", 10, 2).await;

    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_allocation(&hold).await;
    let first = keyed_pay(&app, &hold, &buyer, "pay-refused", "tok_visa").await;
    assert_unavailable_for(&first, 1..=1);
    let stored: Option<String> =
        sqlx::query_scalar("SELECT state FROM idempotency_keys WHERE key = $1")
            .bind("pay-refused")
            .fetch_optional(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, None, "the key released");
    let row = app.allocation_row(&hold).await;
    assert_eq!(
        (row.status.as_str(), row.payment_reference),
        ("reserved", None),
        "step one did nothing"
    );
    assert_eq!(charged(&app).await, 0);

    blocker.release().await;
    let (status, paid, replayed, _) =
        keyed_pay(&app, &hold, &buyer, "pay-refused", "tok_visa").await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{paid}");
    assert_eq!(paid["status"], "purchased", "{paid}");
    assert_eq!(charged(&app).await, 1, "one charge");
}
