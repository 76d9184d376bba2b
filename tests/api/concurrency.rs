//! Many buyers at once through `POST /events/{id}/tickets`, in both purchase modes and on one
//! or two instances of one database: the per-buyer cap, the seed's 2000-buyers-for-100-
//! tickets scenario, and mixed quantities; never more sold than exists, counts that balance.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    BATCHED, PER_REQUEST, TestApp, assert_error, new_fingerprint, spawn_app_on, spawn_app_with,
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
