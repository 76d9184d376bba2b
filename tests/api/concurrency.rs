//! Many buyers at once through `POST /events/{id}/tickets`, in both purchase modes and on one
//! or two instances of one database: the per-buyer cap, the seed's 2000-buyers-for-100-
//! tickets scenario, and mixed quantities; never more sold than exists, counts that balance.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{
    BATCHED, PER_REQUEST, TestApp, assert_error, id_of, new_fingerprint, spawn_app_on,
    spawn_app_with,
};

/// `count` instances on one fresh database, and an event created on the first: (instances,
/// event id). Batches coalesce only inside one instance, so with two, requests for one event
/// also meet at the database's row lock.
async fn instances_with_event(
    mode: &[&str],
    count: usize,
    name: &str,
    total: i64,
    cap: Option<i64>,
) -> (Vec<Arc<TestApp>>, String) {
    let first = spawn_app_with(mode).await;
    let options = (*first.pool.connect_options()).clone();
    let mut apps = vec![Arc::new(first)];
    for _ in 1..count {
        apps.push(Arc::new(spawn_app_on(&options, mode).await));
    }
    let event = apps[0].create_event(name, total, cap).await;
    let event_id = event["id"].as_str().unwrap().to_owned();
    (apps, event_id)
}

/// `buyers` purchases by new buyers, spread over the instances and released together by a
/// barrier, buyer `i` asking for `quantity(i)` tickets. Each yields its quantity and answer.
fn rush(
    apps: &[Arc<TestApp>],
    event_id: &str,
    buyers: usize,
    quantity: impl Fn(usize) -> i64,
) -> tokio::task::JoinSet<(i64, (StatusCode, Value))> {
    let start = Arc::new(tokio::sync::Barrier::new(buyers));
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..buyers {
        let app = apps[i % apps.len()].clone();
        let (event_id, start) = (event_id.to_owned(), start.clone());
        let quantity = quantity(i);
        requests.spawn(async move {
            let buyer = new_fingerprint();
            start.wait().await;
            (quantity, app.purchase(&event_id, quantity, &buyer).await)
        });
    }
    requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_fingerprint_cap_holds_under_20_concurrent_requests_per_request() {
    cap_under_concurrency(PER_REQUEST, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_fingerprint_cap_holds_under_20_concurrent_requests_batched() {
    cap_under_concurrency(BATCHED, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_fingerprint_cap_holds_under_20_concurrent_requests_batched_on_two_instances() {
    cap_under_concurrency(BATCHED, 2).await;
}

async fn cap_under_concurrency(mode: &[&str], count: usize) {
    let (apps, event_id) = instances_with_event(mode, count, "Capped rush", 100, Some(5)).await;
    let app = &apps[0];
    let buyer = new_fingerprint();

    let mut requests = tokio::task::JoinSet::new();
    for i in 0..20 {
        let app = apps[i % count].clone();
        let (event_id, buyer) = (event_id.clone(), buyer.clone());
        requests.spawn(async move { app.purchase(&event_id, 1, &buyer).await });
    }
    let mut granted = 0;
    while let Some(result) = requests.join_next().await {
        let (status, body) = result.unwrap();
        if status == StatusCode::CREATED {
            granted += 1;
        } else {
            assert_error(status, &body, StatusCode::CONFLICT, "FINGERPRINT_LIMIT");
        }
    }
    assert_eq!(granted, 5, "exactly the cap is granted");
    assert_eq!(app.counts(&event_id).await, (95, 5, 0));
    assert_eq!(app.row_count("ticket_allocations").await, 5);
    app.assert_balanced(&event_id).await;
}

/// The seed system's measured scenario: 2000 buyers at once for 100 tickets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_buyers_for_one_hundred_tickets_per_request() {
    seed_scenario(PER_REQUEST, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_buyers_for_one_hundred_tickets_batched() {
    seed_scenario(BATCHED, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_buyers_for_one_hundred_tickets_batched_on_two_instances() {
    seed_scenario(BATCHED, 2).await;
}

async fn seed_scenario(mode: &[&str], count: usize) {
    let (apps, event_id) = instances_with_event(mode, count, "Seed rush", 100, None).await;
    let app = &apps[0];

    let mut requests = rush(&apps, &event_id, 2000, |_| 1);
    let (mut created, mut sold_out) = (0, 0);
    while let Some(result) = requests.join_next().await {
        let (_, (status, body)) = result.unwrap();
        if status == StatusCode::CREATED {
            assert_eq!(body["status"], "reserved", "{body}");
            created += 1;
        } else {
            assert_error(status, &body, StatusCode::CONFLICT, "TICKETS_SOLD_OUT");
            sold_out += 1;
        }
    }
    assert_eq!((created, sold_out), (100, 1900));
    let event = app.assert_balanced(&event_id).await;
    assert_eq!(event["availableTickets"], 0);
    assert_eq!(event["reservedTickets"], 100);
    let (rows, buyers): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT fingerprint_hash) FROM ticket_allocations")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((rows, buyers), (100, 100));
}

/// Concurrent requests of mixed sizes for a few tickets: never more granted than exist, and
/// every refusal tells the truth about what was left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_quantities_at_once_never_oversell_per_request() {
    mixed_quantities(PER_REQUEST, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_quantities_at_once_never_oversell_batched() {
    mixed_quantities(BATCHED, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_quantities_at_once_never_oversell_batched_on_two_instances() {
    mixed_quantities(BATCHED, 2).await;
}

async fn mixed_quantities(mode: &[&str], count: usize) {
    let (apps, event_id) = instances_with_event(mode, count, "Mixed sizes", 25, None).await;
    let app = &apps[0];
    let mut requests = rush(&apps, &event_id, 60, |i| 1 + (i % 4) as i64);
    let mut granted = 0;
    let mut sold_out = false;
    let mut reported_left = Vec::new();
    while let Some(result) = requests.join_next().await {
        let (quantity, (status, body)) = result.unwrap();
        match status {
            StatusCode::CREATED => {
                assert_eq!(body["quantity"], quantity, "{body}");
                granted += quantity;
            }
            _ if body["code"] == "INSUFFICIENT_TICKETS" => {
                assert_eq!(status, StatusCode::CONFLICT);
                let left = body["availableTickets"].as_i64().unwrap_or_default();
                assert!(0 < left && left < quantity, "{quantity} refused: {body}");
                reported_left.push(left);
            }
            _ => {
                assert_error(status, &body, StatusCode::CONFLICT, "TICKETS_SOLD_OUT");
                sold_out = true;
            }
        }
    }
    let event = app.assert_balanced(&event_id).await;
    assert!(granted <= 25);
    assert_eq!(event["reservedTickets"], granted);
    let left = 25 - granted;
    assert_eq!(event["availableTickets"], left);
    // Tickets only ever went down here, so every refusal saw at least what is left now.
    assert!(
        !sold_out || left == 0,
        "sold out was answered with {left} left"
    );
    assert!(reported_left.iter().all(|&reported| reported >= left));
    assert!(
        sold_out || !reported_left.is_empty(),
        "150 tickets asked for 25"
    );
}

/// Two batched instances sell out one event, round after round. One coalescer runs one batch
/// per event at a time, so only a second instance makes two batches meet at the event row
/// lock. The meeting is shown, not assumed: in enough rounds both instances granted tickets
/// within the last second before the sell-out, and their last granting transactions were open
/// at once (each began before the other's answer arrived), so one waited for the other's lock
/// at the very moment the tickets ran out. No round oversells, and every round balances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_batched_instances_meet_at_the_sell_out_and_never_oversell() {
    const ROUNDS: usize = 16;
    const TICKETS: i64 = 40;
    const BUYERS: usize = 120;
    const MIN_MEETINGS: usize = ROUNDS / 2;
    // Batches of at most 8: selling 40 tickets takes each instance several batches, so
    // neither sells out alone with its first one.
    let mode = [BATCHED, &["--purchase-batch-max", "8"]].concat();
    let first = spawn_app_with(&mode).await;
    let options = (*first.pool.connect_options()).clone();
    let apps = [
        Arc::new(first),
        Arc::new(spawn_app_on(&options, &mode).await),
    ];

    let (mut meetings, mut missed) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let event = apps[0]
            .create_event(&format!("Meeting {round}"), TICKETS, None)
            .await;
        let event_id = id_of(&event);
        let start = Arc::new(tokio::sync::Barrier::new(BUYERS));
        let mut requests = tokio::task::JoinSet::new();
        for i in 0..BUYERS {
            let instance = i % apps.len();
            let (app, event_id, start) = (apps[instance].clone(), event_id.clone(), start.clone());
            requests.spawn(async move {
                let buyer = new_fingerprint();
                start.wait().await;
                let answer = app.purchase(&event_id, 1, &buyer).await;
                (instance, answer, OffsetDateTime::now_utc())
            });
        }
        // Per instance: the holds it granted, and when its last grant was answered.
        let mut granted: [Vec<Uuid>; 2] = Default::default();
        let mut last_answer = [OffsetDateTime::UNIX_EPOCH; 2];
        while let Some(result) = requests.join_next().await {
            let (instance, (status, body), answered) = result.unwrap();
            if status == StatusCode::CREATED {
                granted[instance].push(Uuid::parse_str(&id_of(&body)).unwrap());
                last_answer[instance] = last_answer[instance].max(answered);
            } else {
                assert_error(status, &body, StatusCode::CONFLICT, "TICKETS_SOLD_OUT");
            }
        }
        let sold = (granted[0].len() + granted[1].len()) as i64;
        assert_eq!(
            sold, TICKETS,
            "round {round}: every ticket sold, none twice"
        );
        assert_eq!(
            apps[0].counts(&event_id).await,
            (0, TICKETS, 0),
            "round {round}"
        );
        apps[0].assert_balanced(&event_id).await;
        let rows: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ticket_allocations WHERE event_id = $1")
                .bind(Uuid::parse_str(&event_id).unwrap())
                .fetch_one(&apps[0].pool)
                .await
                .unwrap();
        assert_eq!(rows, TICKETS, "round {round}");
        if granted.iter().any(Vec::is_empty) {
            missed.push((round, "one instance granted nothing"));
            continue;
        }

        // A hold's created_at is now(), its transaction's start: the latest one per instance
        // is when that instance's last granting transaction began.
        let mut last_start = [OffsetDateTime::UNIX_EPOCH; 2];
        for (instance, ids) in granted.iter().enumerate() {
            last_start[instance] = sqlx::query_scalar(
                "SELECT max(created_at) FROM ticket_allocations WHERE id = ANY ($1)",
            )
            .bind(ids)
            .fetch_one(&apps[0].pool)
            .await
            .unwrap();
        }
        let sold_out = last_answer[0].max(last_answer[1]);
        let within_last_second = last_answer
            .iter()
            .all(|&answer| sold_out - answer < time::Duration::SECOND);
        let open_at_once = last_start[0] < last_answer[1] && last_start[1] < last_answer[0];
        match (within_last_second, open_at_once) {
            (true, true) => meetings.push(round),
            (false, _) => missed.push((round, "one instance's last grant came earlier")),
            (true, false) => missed.push((round, "the last transactions did not overlap")),
        }
    }
    println!(
        "both instances' batches met at the sell-out in rounds {meetings:?}; missed {missed:?}"
    );
    assert!(
        meetings.len() >= MIN_MEETINGS,
        "the instances met at the sell-out in only {meetings:?} of {ROUNDS} rounds: {missed:?}"
    );
}
