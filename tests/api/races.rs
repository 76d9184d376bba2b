//! The three races the seed system lost, each repeated many times, and pay against expiry:
//! exactly one winner per hold, answers that agree with the rows, balanced counts, no 5xx
//! and no deadlock. The mixed storm of every operation at once is `mixed_storm.rs`.
//!
//! The two-request races start behind a barrier and are made to overlap every round: a
//! blocker holds the hold's allocation row until both requests are seen waiting behind it, so
//! each round one request waits for the other's locks. These tests check outcomes, whichever
//! lock serializes the two; which lock decides each race, and the tests that pin it, are in
//! `locks.rs`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::helpers::{
    Blocker, TestApp, assert_error, id_of, new_fingerprint, spawn_app, spawn_app_on,
    spawn_app_with, timestamp,
};

const ROUNDS: usize = 30;

async fn hold(app: &TestApp, event_id: &str, quantity: i64, holder: &str) -> String {
    let (status, body) = app.purchase(event_id, quantity, holder).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    id_of(&body)
}

/// Runs `first` and `second` (requests on the hold `allocation_id`) at once: both start behind
/// a barrier while a blocker holds the allocation row, which it releases, unchanged, only once
/// both are seen waiting behind it (one for the row, the other for the event row the first
/// holds, or for its place in the row's queue). So the two overlap every round: after the
/// release, one of them waits for the other's locks.
async fn overlapping<A: Future, B: Future>(
    app: &TestApp,
    allocation_id: &str,
    first: A,
    second: B,
) -> (A::Output, B::Output) {
    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_allocation(allocation_id).await;
    let start = Barrier::new(2);
    let (first, second, ()) = tokio::join!(
        async {
            start.wait().await;
            first.await
        },
        async {
            start.wait().await;
            second.await
        },
        async move {
            blocker.wait_for_waiters(2).await;
            blocker.release().await;
        }
    );
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_cancels_of_one_hold_have_exactly_one_winner() {
    let app = spawn_app().await;
    // Half the rounds send the two cancels to two instances on one database.
    let options = (*app.pool.connect_options()).clone();
    let other = spawn_app_on(&options, &[]).await;
    let event = app.create_event("Double cancel", 20, None).await;
    let event_id = event["id"].as_str().unwrap();

    for round in 0..ROUNDS {
        let holder = new_fingerprint();
        let id = hold(&app, event_id, 2, &holder).await;
        let second = if round % 2 == 0 { &app } else { &other };
        let (a, b) = overlapping(
            &app,
            &id,
            app.cancel(&id, &holder),
            second.cancel(&id, &holder),
        )
        .await;
        let mut winners = 0;
        for (status, body) in [a, b] {
            if status == StatusCode::OK {
                assert_eq!(body["status"], "cancelled", "{body}");
                winners += 1;
            } else {
                assert_error(status, &body, StatusCode::CONFLICT, "INVALID_STATUS");
                assert_eq!(body["status"], "cancelled", "{body}");
            }
        }
        assert_eq!(winners, 1, "round {round}: exactly one cancel wins");
        assert_eq!(app.allocation_row(&id).await.status, "cancelled");
        assert_eq!(
            app.counts(event_id).await,
            (20, 0, 0),
            "round {round}: tickets returned exactly once"
        );
    }
    app.assert_balanced(event_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_against_cancel_has_exactly_one_winner() {
    let app = spawn_app().await;
    let event = app.create_event("Pay or cancel", 100, None).await;
    let event_id = event["id"].as_str().unwrap();
    let (mut paid, mut cancelled) = (0, 0);

    for round in 0..ROUNDS {
        let holder = new_fingerprint();
        let id = hold(&app, event_id, 2, &holder).await;
        let (payment, cancel) = overlapping(
            &app,
            &id,
            app.pay(&id, &holder, Some("tok_visa")),
            app.cancel(&id, &holder),
        )
        .await;
        let row = app.allocation_row(&id).await;
        match (payment.0, cancel.0) {
            (StatusCode::OK, _) => {
                assert_eq!(payment.1["status"], "purchased", "{}", payment.1);
                assert_error(cancel.0, &cancel.1, StatusCode::CONFLICT, "INVALID_STATUS");
                let seen = cancel.1["status"].as_str().unwrap_or_default();
                assert!(
                    seen == "payment_pending" || seen == "purchased",
                    "round {round}: cancel saw {seen}"
                );
                assert_eq!(row.status, "purchased", "round {round}");
                assert!(row.confirmation_code.is_some());
                paid += 2;
            }
            (_, StatusCode::OK) => {
                assert_eq!(cancel.1["status"], "cancelled", "{}", cancel.1);
                assert_error(
                    payment.0,
                    &payment.1,
                    StatusCode::CONFLICT,
                    "INVALID_STATUS",
                );
                assert_eq!(payment.1["status"], "cancelled", "{}", payment.1);
                assert_eq!(row.status, "cancelled", "round {round}");
                assert!(
                    row.payment_reference.is_none(),
                    "round {round}: no payment began"
                );
                cancelled += 2;
            }
            _ => panic!(
                "round {round}: no winner: pay {} {}, cancel {} {}",
                payment.0, payment.1, cancel.0, cancel.1
            ),
        }
        assert_eq!(
            app.counts(event_id).await,
            (100 - paid, 0, paid),
            "round {round}"
        );
    }
    assert_eq!(paid + cancelled, 2 * ROUNDS as i64);
    println!(
        "payment against cancel: the payment won {} rounds, the cancel {}",
        paid / 2,
        cancelled / 2
    );
    app.assert_balanced(event_id).await;
}

/// How one payment at the deadline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum AtTheBell {
    Paid,
    /// The payment found the hold lapsed and expired it itself.
    ExpiredByThePayment,
    /// The sweeper had expired it before the payment was sent.
    ExpiredByTheSweeper,
}

/// How long a payment takes from sending to its answer here, now: the median of a few
/// payments of fresh holds (on an event of their own).
async fn payment_latency(app: &TestApp) -> time::Duration {
    let event = app.create_event("Calibration", 100, None).await;
    let event_id = id_of(&event);
    let mut latencies = Vec::new();
    for _ in 0..7 {
        let holder = new_fingerprint();
        let id = hold(app, &event_id, 1, &holder).await;
        let sent = time::OffsetDateTime::now_utc();
        let (status, body) = app.pay(&id, &holder, Some("tok_visa")).await;
        latencies.push(time::OffsetDateTime::now_utc() - sent);
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    latencies.sort();
    latencies[latencies.len() / 2]
}

/// Sleeps until `moment` by the test's clock: the timer for all but the last 2 ms (it may
/// wake a millisecond late), then yields until the moment, so sends land where aimed.
async fn until(moment: time::OffsetDateTime) {
    let wait = moment - time::Duration::milliseconds(2) - time::OffsetDateTime::now_utc();
    if wait.is_positive() {
        tokio::time::sleep(wait.try_into().unwrap()).await;
    }
    while time::OffsetDateTime::now_utc() < moment {
        tokio::task::yield_now().await;
    }
}

/// Payments sent just before their hold's deadline, while the sweeper expires lapsed holds
/// every 10 ms: each ends paid or expired, never both, never paid after the deadline. Most
/// rounds land in the race window: the payment request is in flight across the deadline
/// (sent at or before it, answered after it), so the deadline passes while the payment is
/// on its way to, or inside, its lapse check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_against_expiry_ends_one_way_or_the_other() {
    const ROUNDS: u32 = 31;
    let app = Arc::new(spawn_app_with(&["--hold-seconds", "1", "--sweep-interval-ms", "10"]).await);
    // Aim from the measured latency: round r sends at deadline - latency * (0.6 - 0.55 r / 30),
    // from 0.6 to 0.05 of a payment's latency before the deadline, so its answer is due after
    // the deadline with room for jitter. Rounds start 40 ms apart, so their payments do not
    // queue behind each other.
    let latency = payment_latency(&app).await;
    let event = app.create_event("Pay at the bell", 100, None).await;
    let event_id = event["id"].as_str().unwrap().to_owned();
    let mut rounds = JoinSet::new();
    for round in 0..ROUNDS {
        let (app, event_id) = (app.clone(), event_id.clone());
        let ahead = latency * (0.6 - 0.55 * f64::from(round) / f64::from(ROUNDS - 1));
        rounds.spawn(async move {
            tokio::time::sleep(Duration::from_millis(40 * u64::from(round))).await;
            let holder = new_fingerprint();
            let (status, held) = app.purchase(&event_id, 1, &holder).await;
            assert_eq!(status, StatusCode::CREATED, "{held}");
            let id = id_of(&held);
            let deadline = timestamp(&held["expiresAt"]);
            until(deadline - ahead).await;
            // One clock: the database's lapse check runs after this instant.
            let sent = time::OffsetDateTime::now_utc();
            let (status, body) = app.pay(&id, &holder, Some("tok_visa")).await;
            let answered = time::OffsetDateTime::now_utc();
            let row = app.allocation_row(&id).await;
            let offset_us = (sent - deadline).whole_microseconds();
            let in_flight_at_deadline = sent <= deadline && deadline < answered;
            let outcome = if status == StatusCode::OK {
                assert_eq!(body["status"], "purchased", "{body}");
                assert_eq!(row.status, "purchased", "offset {offset_us} us");
                assert!(row.confirmation_code.is_some(), "offset {offset_us} us");
                let began = row.payment_pending_at.expect("payment_pending_at");
                assert!(
                    began < row.expires_at,
                    "offset {offset_us} us: a payment that began at {began} after the hold lapsed at {} was accepted",
                    row.expires_at
                );
                AtTheBell::Paid
            } else {
                assert_error(status, &body, StatusCode::GONE, "RESERVATION_EXPIRED");
                assert_eq!(row.status, "expired", "offset {offset_us} us");
                assert!(row.purchased_at.is_none() && row.payment_pending_at.is_none());
                let expired_at = row.expired_at.expect("expired_at");
                assert!(expired_at >= row.expires_at, "offset {offset_us} us: {row:?}");
                if expired_at < sent {
                    AtTheBell::ExpiredByTheSweeper
                } else {
                    AtTheBell::ExpiredByThePayment
                }
            };
            assert!(
                sent <= deadline || outcome != AtTheBell::Paid,
                "offset {offset_us} us: a payment sent after the deadline was accepted"
            );
            (offset_us, outcome, in_flight_at_deadline)
        });
    }
    let mut outcomes = std::collections::BTreeMap::<AtTheBell, Vec<i128>>::new();
    let mut in_flight = 0;
    while let Some(round) = rounds.join_next().await {
        let (offset_us, outcome, in_flight_at_deadline) = round.unwrap();
        outcomes.entry(outcome).or_default().push(offset_us);
        in_flight += u32::from(in_flight_at_deadline);
    }
    for offsets in outcomes.values_mut() {
        offsets.sort();
    }
    println!(
        "payment latency {latency}; sends in us from the deadline by outcome: {outcomes:?}; {in_flight} of {ROUNDS} in flight across the deadline"
    );
    assert!(
        in_flight * 2 > ROUNDS,
        "most rounds land in the race window: only {in_flight} of {ROUNDS} payments were in flight across the deadline ({outcomes:?})"
    );
    let purchased = outcomes.get(&AtTheBell::Paid).map_or(0, Vec::len);
    assert!(
        purchased > 0 && purchased < ROUNDS as usize,
        "both outcomes occur: {outcomes:?}"
    );
    let event = app.assert_balanced(&event_id).await;
    assert_eq!(event["purchasedTickets"], purchased);
    assert_eq!(event["reservedTickets"], 0);
    assert_eq!(event["availableTickets"], 100 - purchased as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_payments_of_one_hold_charge_once() {
    let app = spawn_app().await;
    let event = app.create_event("Double click", 100, None).await;
    let event_id = event["id"].as_str().unwrap();

    for round in 0..ROUNDS {
        let holder = new_fingerprint();
        let id = hold(&app, event_id, 1, &holder).await;
        let (a, b) = overlapping(
            &app,
            &id,
            app.pay(&id, &holder, Some("tok_visa")),
            app.pay(&id, &holder, Some("tok_visa")),
        )
        .await;
        let mut winners = 0;
        for (status, body) in [a, b] {
            if status == StatusCode::OK {
                assert_eq!(body["status"], "purchased", "{body}");
                winners += 1;
            } else {
                assert_error(status, &body, StatusCode::CONFLICT, "INVALID_STATUS");
                let seen = body["status"].as_str().unwrap_or_default();
                assert!(seen == "payment_pending" || seen == "purchased", "{body}");
            }
        }
        assert_eq!(winners, 1, "round {round}: exactly one payment wins");
        assert_eq!(app.allocation_row(&id).await.status, "purchased");
        let charges = app.row_count("payment_charges").await;
        assert_eq!(
            charges,
            round as i64 + 1,
            "round {round}: the loser never reached the provider"
        );
    }
    assert_eq!(
        app.counts(event_id).await,
        (100 - ROUNDS as i64, 0, ROUNDS as i64)
    );
    app.assert_balanced(event_id).await;
}
