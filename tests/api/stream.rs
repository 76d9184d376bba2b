//! Live statistics over SSE: snapshot, one update per kind of change, delivery across
//! instances through LISTEN/NOTIFY, coalescing of bursts, 404 before any stream.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{
    SseMessage, SseReader, assert_error, fresh_database, spawn_app, spawn_app_on, spawn_app_with,
};

const WAIT: Duration = Duration::from_secs(10);

fn remaining(message: &SseMessage) -> i64 {
    message.data["statistics"]["remainingTickets"]
        .as_i64()
        .unwrap()
}

fn last_type(message: &SseMessage) -> Option<&str> {
    message.data["lastEvent"]["type"].as_str()
}

#[tokio::test]
async fn snapshot_on_connect() {
    let app = spawn_app().await;
    let event = app.create_event("Streamed", 7, None).await;
    let id = event["id"].as_str().unwrap();
    app.purchase(id, 2, "early-bird").await;

    let mut stream = SseReader::connect(&app, &format!("/events/{id}/stream")).await;
    let snapshot = stream.next(WAIT).await.expect("a snapshot");
    assert_eq!(snapshot.event, "stats");
    assert!(snapshot.id.is_some());
    assert_eq!(snapshot.data["eventId"], id);
    assert!(snapshot.data["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        snapshot.data["statistics"],
        serde_json::json!({"totalTickets": 7, "remainingTickets": 5, "allocatedTickets": 2, "confirmedTickets": 0})
    );
    assert!(snapshot.data["lastEvent"].is_null());
}

#[tokio::test]
async fn an_update_follows_each_kind_of_change() {
    // A 1-second hold with a fast sweeper lets the expiry happen within the test.
    let app = spawn_app_with(&["--hold-seconds", "1", "--sweep-interval-ms", "50"]).await;
    let event = app.create_event("Changes", 10, None).await;
    let id = event["id"].as_str().unwrap();
    let mut stream = SseReader::connect(&app, &format!("/events/{id}/stream")).await;
    let mut last_id = stream.next(WAIT).await.unwrap().id.unwrap();
    let mut expect = async |kind: &str, statistics: [i64; 3]| {
        let seen = stream
            .until(WAIT, |m| {
                last_type(m) == Some(kind) && remaining(m) == statistics[0]
            })
            .await;
        let message = seen.last().unwrap().clone();
        assert_eq!(
            message.data["statistics"]["allocatedTickets"], statistics[1],
            "{message:?}"
        );
        assert_eq!(
            message.data["statistics"]["confirmedTickets"], statistics[2],
            "{message:?}"
        );
        assert_eq!(
            message.data["lastEvent"]["actor"].as_str().unwrap().len(),
            8
        );
        for m in &seen {
            assert!(m.id.unwrap() > last_id, "ids increase");
            last_id = m.id.unwrap();
        }
    };

    let (_, paid) = app.purchase(id, 2, "payer").await;
    expect("ticket_allocated", [8, 2, 0]).await;
    let (status, _) = app
        .pay(paid["id"].as_str().unwrap(), "payer", Some("tok_visa"))
        .await;
    assert_eq!(status, StatusCode::OK);
    expect("ticket_purchased", [8, 0, 2]).await;

    let (_, declined) = app.purchase(id, 1, "decliner").await;
    expect("ticket_allocated", [7, 1, 2]).await;
    let (status, _) = app
        .pay(
            declined["id"].as_str().unwrap(),
            "decliner",
            Some("tok_chargeDeclined"),
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    // A decline moves no tickets but is announced: the hold is allocated again.
    expect("ticket_allocated", [7, 1, 2]).await;

    let (_, cancelled) = app.purchase(id, 1, "canceller").await;
    expect("ticket_allocated", [6, 2, 2]).await;
    let (status, _) = app
        .cancel(cancelled["id"].as_str().unwrap(), "canceller")
        .await;
    assert_eq!(status, StatusCode::OK);
    expect("ticket_cancelled", [7, 1, 2]).await;

    // The declined hold lapses and the sweeper returns it.
    expect("ticket_expired", [8, 0, 2]).await;
}

#[tokio::test]
async fn changes_reach_every_instance() {
    let options = fresh_database().await;
    let first = spawn_app_on(&options, &[]).await;
    let second = spawn_app_on(&options, &[]).await;
    let event = first.create_event("Shared", 50, None).await;
    let id = event["id"].as_str().unwrap();

    let mut on_second = SseReader::connect(&second, &format!("/events/{id}/stream")).await;
    assert_eq!(remaining(&on_second.next(WAIT).await.unwrap()), 50);
    let (status, _) = first.purchase(id, 3, "buyer-on-first").await;
    assert_eq!(status, StatusCode::CREATED);
    let seen = on_second.until(WAIT, |m| remaining(m) == 47).await;
    assert_eq!(last_type(seen.last().unwrap()), Some("ticket_allocated"));

    let mut on_first = SseReader::connect(&first, &format!("/events/{id}/stream")).await;
    assert_eq!(remaining(&on_first.next(WAIT).await.unwrap()), 47);
    let (status, _) = second.purchase(id, 4, "buyer-on-second").await;
    assert_eq!(status, StatusCode::CREATED);
    on_first.until(WAIT, |m| remaining(m) == 43).await;
}

#[tokio::test]
async fn a_burst_is_coalesced_and_ends_on_the_latest_state() {
    let app = spawn_app().await;
    let event = app.create_event("Burst", 600, None).await;
    let id = event["id"].as_str().unwrap().to_owned();
    let mut stream = SseReader::connect(&app, &format!("/events/{id}/stream")).await;
    assert_eq!(remaining(&stream.next(WAIT).await.unwrap()), 600);

    let purchases = (0..500).map(|i| {
        let request = app
            .request(Method::POST, &format!("/events/{id}/tickets"))
            .header("X-Device-Fingerprint", format!("burst-{i}"))
            .json(&serde_json::json!({"quantity": 1}));
        async move { request.send().await.unwrap().status() }
    });
    let statuses = futures_util::future::join_all(purchases).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::CREATED));

    let seen = stream
        .until(Duration::from_secs(20), |m| remaining(m) == 100)
        .await;
    assert!(
        seen.len() < 100,
        "500 purchases produced {} messages",
        seen.len()
    );
    let last = seen.last().unwrap();
    assert_eq!(last.data["statistics"]["allocatedTickets"], 500);
    // Nothing newer follows: the last message was the latest state.
    assert!(stream.next(Duration::from_millis(500)).await.is_none());
    let event: Value = app.event(&id).await;
    assert_eq!(event["availableTickets"], 100);
}

#[tokio::test]
async fn unknown_event_gets_404_before_any_stream() {
    let app = spawn_app().await;
    let (status, body) = app
        .get(&format!("/events/{}/stream", uuid::Uuid::new_v4()))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, body) = app.get("/events/nope/stream").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

#[tokio::test]
async fn streams_end_cleanly_on_shutdown() {
    let app = spawn_app().await;
    let event = app.create_event("Closing", 5, None).await;
    let id = event["id"].as_str().unwrap().to_owned();
    let mut stream = SseReader::connect(&app, &format!("/events/{id}/stream")).await;
    stream.next(WAIT).await.unwrap();
    // Graceful shutdown completes although a stream is open, and the stream then ends.
    tokio::time::timeout(WAIT, app.stop())
        .await
        .expect("shutdown is not held up by the stream");
    assert!(stream.next(WAIT).await.is_none());
}
