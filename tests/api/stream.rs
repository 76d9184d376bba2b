//! Live statistics over SSE: snapshot, one update per kind of change, delivery across
//! instances through LISTEN/NOTIFY, coalescing of bursts, 404 before any stream, ids that
//! count each event's changes in the database (across restarts and instances), and a stream
//! to a client that half-closed its connection (before its snapshot, or later).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    SseMessage, SseReader, TestApp, assert_error, documented_timestamp, fresh_database, id_of,
    spawn_app, spawn_app_on, spawn_app_with,
};

const WAIT: Duration = Duration::from_secs(10);

/// The documented shortest gap between two messages to one subscriber (docs/api.md).
const MIN_INTERVAL: Duration = Duration::from_millis(100);

#[tokio::test]
async fn snapshot_on_connect() {
    let app = spawn_app().await;
    let event = app.create_event("Streamed", 7, None).await;
    let id = event["id"].as_str().unwrap();
    let (status, hold) = app.purchase(id, 2, "early-bird").await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");

    let mut stream = SseReader::connect(&app, &format!("/events/{id}/stream")).await;
    let snapshot = stream.next(WAIT).await.expect("a snapshot");
    assert_eq!(snapshot.event, "stats");
    assert!(snapshot.id.is_some());
    assert_eq!(snapshot.data["eventId"], id);
    assert!(snapshot.data["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        snapshot.data["statistics"],
        serde_json::json!({"totalTickets": 7, "remainingTickets": 5, "allocatedTickets": 2, "confirmedTickets": 0, "checkedIn": 0})
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
                m.last_type() == Some(kind) && m.remaining() == statistics[0]
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

    let (status, paid) = app.purchase(id, 2, "payer").await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    expect("ticket_allocated", [8, 2, 0]).await;
    let (status, body) = app
        .pay(paid["id"].as_str().unwrap(), "payer", Some("tok_visa"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    expect("ticket_purchased", [8, 0, 2]).await;

    let (status, declined) = app.purchase(id, 1, "decliner").await;
    assert_eq!(status, StatusCode::CREATED, "{declined}");
    expect("ticket_allocated", [7, 1, 2]).await;
    let (status, body) = app
        .pay(
            declined["id"].as_str().unwrap(),
            "decliner",
            Some("tok_chargeDeclined"),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::PAYMENT_REQUIRED,
        "PAYMENT_DECLINED",
    );
    // A decline moves no tickets but is announced: the hold is allocated again.
    expect("ticket_allocated", [7, 1, 2]).await;

    let (status, cancelled) = app.purchase(id, 1, "canceller").await;
    assert_eq!(status, StatusCode::CREATED, "{cancelled}");
    expect("ticket_allocated", [6, 2, 2]).await;
    let (status, body) = app
        .cancel(cancelled["id"].as_str().unwrap(), "canceller")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
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
    assert_eq!(on_second.next(WAIT).await.unwrap().remaining(), 50);
    let (status, _) = first.purchase(id, 3, "buyer-on-first").await;
    assert_eq!(status, StatusCode::CREATED);
    let seen = on_second.until(WAIT, |m| m.remaining() == 47).await;
    assert_eq!(seen.last().unwrap().last_type(), Some("ticket_allocated"));

    let mut on_first = SseReader::connect(&first, &format!("/events/{id}/stream")).await;
    assert_eq!(on_first.next(WAIT).await.unwrap().remaining(), 47);
    let (status, _) = second.purchase(id, 4, "buyer-on-second").await;
    assert_eq!(status, StatusCode::CREATED);
    on_first.until(WAIT, |m| m.remaining() == 43).await;
}

/// How late the harness may read a message after the server sent it: the in-process server
/// and its reader share a loaded 2-core machine with the whole suite, where a read 90 ms late
/// has been seen. Message `j` is sent at least `(j - i) × 100 ms` after message `i`, so it
/// cannot arrive earlier than that less this delay of message `i`; over a run of messages a
/// shorter spacing still shows (at 50 ms, any ten messages arrive 500 ms early).
const DELIVERY_TOLERANCE: Duration = Duration::from_millis(150);

#[tokio::test]
async fn a_burst_is_coalesced_and_ends_on_the_latest_state() {
    // One transaction per purchase: 500 changes, each announced, faster than 10 a second.
    let app = spawn_app_with(&["--purchase-mode", "per-request"]).await;
    let event = app.create_event("Burst", 600, None).await;
    let id = event["id"].as_str().unwrap().to_owned();
    let mut stream = SseReader::connect(&app, &format!("/events/{id}/stream")).await;
    let snapshot = stream.next(WAIT).await.unwrap();
    assert_eq!(snapshot.remaining(), 600);

    let purchases = (0..500).map(|i| {
        let request = app
            .request(Method::POST, &format!("/events/{id}/tickets"))
            .header("X-Device-Fingerprint", format!("burst-{i}"))
            .json(&serde_json::json!({"quantity": 1}));
        async move { request.send().await.unwrap().status() }
    });
    // The stream is read while the burst runs, so each message's arrival time is its own.
    let (statuses, seen) = tokio::join!(
        futures_util::future::join_all(purchases),
        stream.until(Duration::from_secs(20), |m| m.remaining() == 100)
    );
    assert!(statuses.iter().all(|s| *s == StatusCode::CREATED));
    assert!(
        seen.len() >= 2,
        "500 purchases reached the stream as {} messages",
        seen.len()
    );
    // At most one message per 100 ms: every message arrives at least (j - i) × 100 ms after
    // any earlier one, less the delivery tolerance.
    let arrivals: Vec<_> = std::iter::once(&snapshot)
        .chain(&seen)
        .map(|m| m.received)
        .collect();
    for (i, earlier) in arrivals.iter().enumerate() {
        for (j, later) in arrivals.iter().enumerate().skip(i + 1) {
            let gap = later.duration_since(*earlier);
            let least = (MIN_INTERVAL * (j - i) as u32).saturating_sub(DELIVERY_TOLERANCE);
            assert!(
                gap >= least,
                "messages {i} and {j} arrived {gap:?} apart, less than {least:?}: {:?}",
                arrivals
                    .windows(2)
                    .map(|w| w[1].duration_since(w[0]))
                    .collect::<Vec<_>>()
            );
        }
    }
    eprintln!(
        "burst: 500 purchases in {:?}, {} messages",
        arrivals.last().unwrap().duration_since(arrivals[0]),
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

/// A client that shuts its side of the connection once its request is sent still gets its
/// stream, updates and all: the server does not read a connection while its response runs
/// (half-closed connections are allowed), which is also why a stream keeps one read buffer,
/// not two (src/http/serve.rs). Reading, it would find the end of the client's side and
/// drop the connection.
#[tokio::test]
async fn a_client_that_half_closes_still_gets_its_stream_and_its_updates() {
    let app = spawn_app().await;
    let event = app.create_event("Half-closed", 5, None).await;
    let id = event["id"].as_str().unwrap();
    let (status, hold) = app.purchase(id, 2, "first").await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");

    let address = app.socket_address();
    let mut socket = TcpStream::connect(address).await.unwrap();
    let request = format!("GET /events/{id}/stream HTTP/1.1\r\nHost: {address}\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    socket.shutdown().await.unwrap();

    let mut received = String::new();
    let mut read_until = async |wanted: &str| {
        let mut buffer = [0u8; 4096];
        tokio::time::timeout(WAIT, async {
            while !received.contains(wanted) {
                let read = socket.read(&mut buffer).await.unwrap();
                assert!(read > 0, "the connection ended; received: {received}");
                received.push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {wanted} within {WAIT:?}; received: {received}"));
        received.clone()
    };
    let snapshot = read_until("\"remainingTickets\":3").await;
    assert!(snapshot.starts_with("HTTP/1.1 200"), "{snapshot}");
    let (status, hold) = app.purchase(id, 1, "second").await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    read_until("\"remainingTickets\":2").await;
}

/// A client that shuts its sending side in the middle of a quiet stream (its FIN arrives
/// long after the request) is still served: the server, seeing the FIN, writes one
/// keep-alive comment at once to learn whether the client still reads (a closed socket
/// answers it with a reset, `http::peer`), and this one does, so its updates keep coming.
/// One comment only: the FIN stays readable for good, and a watch that took it again after
/// every write would answer each of its own writes with another comment. Red with a stream
/// that ends at the client's FIN, and with one that keeps telling the FIN.
#[tokio::test]
async fn a_client_that_half_closes_mid_stream_gets_one_comment_then_its_updates() {
    let app = spawn_app().await;
    let event = app.create_event("Half-closed later", 5, None).await;
    let id = id_of(&event);
    let address = app.socket_address();
    let mut socket = TcpStream::connect(address).await.unwrap();
    let request = format!("GET /events/{id}/stream HTTP/1.1\r\nHost: {address}\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();

    let mut received = String::new();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !received.contains("\"remainingTickets\":5") {
            let read = socket.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the connection ended; received: {received}");
            received.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no snapshot within {WAIT:?}; received: {received}"));
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");

    socket.shutdown().await.unwrap();
    // Well within the 15 s keep-alive: any comment now answers the FIN.
    let mut after_fin = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let read = socket.read(&mut buffer).await.unwrap();
            assert!(
                read > 0,
                "the connection ended after the FIN; received: {after_fin}"
            );
            after_fin.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    })
    .await;
    // One chunk of the chunked body: the comment.
    assert_eq!(
        after_fin, "3\r\n:\n\n\r\n",
        "one comment answers the FIN, and nothing else"
    );

    let (status, hold) = app.purchase(&id, 1, "after the fin").await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let mut later = String::new();
    tokio::time::timeout(WAIT, async {
        while !later.contains("\"remainingTickets\":4") {
            let read = socket.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the connection ended; received: {later}");
            later.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no update within {WAIT:?}; received: {later}"));
    // The update's write brings the FIN's readiness back; it draws no comment.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            let read = socket.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the connection ended; received: {later}");
            later.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    })
    .await;
    assert!(
        !later.contains(":\n\n"),
        "no comment after the FIN's: {later}"
    );
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

/// The event's change sequence as stored.
async fn change_seq(app: &TestApp, event_id: &str) -> u64 {
    let seq: i64 = sqlx::query_scalar("SELECT change_seq FROM events WHERE id = $1")
        .bind(uuid::Uuid::parse_str(event_id).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    u64::try_from(seq).unwrap()
}

/// The message after `last_id`, asserting its id is the next one, and advancing `last_id`.
async fn next_change(stream: &mut SseReader, last_id: &mut u64) -> SseMessage {
    let before = *last_id;
    let message = stream
        .until(WAIT, |m| m.id.unwrap() > before)
        .await
        .pop()
        .unwrap();
    assert_eq!(
        message.id,
        Some(before + 1),
        "one id per change: {message:?}"
    );
    *last_id = before + 1;
    message
}

#[tokio::test]
async fn ids_count_the_events_own_changes_and_strictly_increase() {
    let app = spawn_app().await;
    let watched = id_of(&app.create_event("Counted", 10, None).await);
    let other = id_of(&app.create_event("Counted elsewhere", 10, None).await);
    for buyer in ["before-1", "before-2"] {
        let (status, _) = app.purchase(&watched, 1, buyer).await;
        assert_eq!(status, StatusCode::CREATED);
    }

    let mut stream = SseReader::connect(&app, &format!("/events/{watched}/stream")).await;
    let mut on_other = SseReader::connect(&app, &format!("/events/{other}/stream")).await;
    let snapshot = stream.next(WAIT).await.unwrap();
    assert!(snapshot.data["lastEvent"].is_null());
    // The snapshot's id is the number of changes the event has had.
    assert_eq!(snapshot.id, Some(2));
    on_other.next(WAIT).await.unwrap();

    // Each change is awaited before the next, so none is coalesced away and each id is seen.
    // Changes to another event in between take no ids from this one.
    let mut last_id = snapshot.id.unwrap();
    let (status, hold) = app.purchase(&watched, 1, "decliner").await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let message = next_change(&mut stream, &mut last_id).await;
    assert_eq!(message.remaining(), 7);
    let (status, _) = app.purchase(&other, 3, "elsewhere").await;
    assert_eq!(status, StatusCode::CREATED);
    on_other.until(WAIT, |m| m.remaining() == 7).await;

    // A declined payment moves no tickets but is a change of its own, with its own id.
    let (status, _) = app
        .pay(&id_of(&hold), "decliner", Some("tok_chargeDeclined"))
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    let message = next_change(&mut stream, &mut last_id).await;
    assert_eq!(message.last_type(), Some("ticket_allocated"));
    assert_eq!(message.remaining(), 7);

    let (status, _) = app.cancel(&id_of(&hold), "decliner").await;
    assert_eq!(status, StatusCode::OK);
    let message = next_change(&mut stream, &mut last_id).await;
    assert_eq!(message.last_type(), Some("ticket_cancelled"));
    assert_eq!(message.remaining(), 8);

    assert_eq!(last_id, 5);
    assert_eq!(change_seq(&app, &watched).await, last_id);
}

#[tokio::test]
async fn ids_keep_growing_across_a_restart() {
    let options = fresh_database().await;
    let app = spawn_app_on(&options, &[]).await;
    let id = id_of(&app.create_event("Restarted", 20, None).await);
    let path = format!("/events/{id}/stream");
    let mut stream = SseReader::connect(&app, &path).await;
    stream.next(WAIT).await.unwrap();
    for buyer in ["first", "second", "third"] {
        let (status, _) = app.purchase(&id, 1, buyer).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let seen = stream.until(WAIT, |m| m.remaining() == 17).await;
    let last_seen = seen.last().unwrap().id.unwrap();
    drop(stream);
    app.stop().await;

    // A new process on the same database: the client resumes with the last id it saw.
    let app = spawn_app_on(&options, &[]).await;
    let mut stream = SseReader::connect_request(
        app.request(Method::GET, &path)
            .header("Last-Event-ID", last_seen.to_string()),
    )
    .await;
    let snapshot = stream.next(WAIT).await.unwrap();
    assert!(snapshot.data["lastEvent"].is_null());
    assert_eq!(snapshot.remaining(), 17);
    let first_id = snapshot.id.unwrap();
    assert!(
        first_id >= last_seen,
        "after the restart the stream starts at id {first_id}, below {last_seen}"
    );

    let (status, _) = app.purchase(&id, 1, "after-restart").await;
    assert_eq!(status, StatusCode::CREATED);
    let change = stream
        .until(WAIT, |m| m.remaining() == 16)
        .await
        .pop()
        .unwrap();
    assert!(
        change.id.unwrap() > first_id,
        "{change:?} after id {first_id}"
    );
}

#[tokio::test]
async fn instances_give_the_same_change_the_same_id() {
    let options = fresh_database().await;
    let first = spawn_app_on(&options, &[]).await;
    let second = spawn_app_on(&options, &[]).await;
    let id = id_of(&first.create_event("Numbered alike", 30, None).await);
    let path = format!("/events/{id}/stream");

    // The first instance watches from the start and hears two changes before the second
    // instance is asked at all.
    let mut on_first = SseReader::connect(&first, &path).await;
    on_first.next(WAIT).await.unwrap();
    for buyer in ["early-1", "early-2"] {
        let (status, _) = first.purchase(&id, 1, buyer).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let first_saw = on_first
        .until(WAIT, |m| m.remaining() == 28)
        .await
        .pop()
        .unwrap();
    let mut on_second = SseReader::connect(&second, &path).await;
    let second_saw = on_second.next(WAIT).await.unwrap();
    assert_eq!(second_saw.remaining(), 28);
    assert_eq!(second_saw.id, first_saw.id, "a snapshot of the same state");

    // A change made through the second instance reaches both with one id.
    let (status, _) = second.purchase(&id, 2, "late").await;
    assert_eq!(status, StatusCode::CREATED);
    let on_first_id = on_first
        .until(WAIT, |m| m.remaining() == 26)
        .await
        .pop()
        .unwrap()
        .id;
    let on_second_id = on_second
        .until(WAIT, |m| m.remaining() == 26)
        .await
        .pop()
        .unwrap()
        .id;
    assert_eq!(on_first_id, on_second_id);
    assert!(on_first_id > first_saw.id);
}

/// `ticketTypes` of a stream message as (type id, available) pairs, in the message's order.
fn type_availability(message: &SseMessage) -> Vec<(String, i64)> {
    message.data["ticketTypes"]
        .as_array()
        .unwrap_or_else(|| panic!("ticketTypes in {:?}", message.data))
        .iter()
        .map(|t| (id_of(t), t["available"].as_i64().expect("available")))
        .collect()
}

/// Adds a free ticket type named `name` to the event; returns its id.
async fn add_type(app: &TestApp, event_id: &str, name: &str) -> String {
    let (status, view) = app
        .post_json(
            &format!("/events/{event_id}/ticket-types"),
            serde_json::json!({ "name": name, "price": 0 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    id_of(&view)
}

#[tokio::test]
async fn each_types_availability_follows_orders_cancels_and_quota_changes() {
    let app = spawn_app().await;
    let event = app.create_event("Typed", 10, None).await;
    let id = id_of(&event);
    let general = id_of(&event["ticketTypes"][0]);
    let vip = add_type(&app, &id, "VIP").await;
    let (status, quota) = app
        .post_json(
            &format!("/events/{id}/quotas"),
            serde_json::json!({ "name": "Boxes", "size": 3, "ticketTypeIds": [vip] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{quota}");

    let mut stream = SseReader::connect(&app, &format!("/events/{id}/stream")).await;
    let snapshot = stream.next(WAIT).await.expect("a snapshot");
    assert_eq!(
        type_availability(&snapshot),
        [(general.clone(), 10), (vip.clone(), 3)]
    );
    // The statistics keep their four counts and the check-ins; the types sit beside them.
    assert_eq!(snapshot.data["statistics"].as_object().unwrap().len(), 5);

    // Two VIP tickets: the event has 8 left, the quota 1, and VIP sells what the quota has.
    let (status, hold) = app
        .send(
            app.request(Method::POST, &format!("/events/{id}/tickets"))
                .header("X-Device-Fingerprint", "vip-buyer")
                .json(&serde_json::json!({ "quantity": 2, "ticketTypeId": vip })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let held = stream
        .until(WAIT, |m| m.last_type() == Some("ticket_allocated"))
        .await
        .pop()
        .unwrap();
    assert_eq!(
        type_availability(&held),
        [(general.clone(), 8), (vip.clone(), 1)]
    );

    // The cancel gives both back.
    let (status, body) = app.cancel(&id_of(&hold), "vip-buyer").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cancelled = stream
        .until(WAIT, |m| m.last_type() == Some("ticket_cancelled"))
        .await
        .pop()
        .unwrap();
    assert_eq!(
        type_availability(&cancelled),
        [(general.clone(), 10), (vip.clone(), 3)]
    );

    // A bigger quota is announced too; VIP is then bounded by the event's 10.
    let (status, body) = app
        .send(
            app.request(
                Method::PATCH,
                &format!("/events/{id}/quotas/{}", id_of(&quota)),
            )
            .json(&serde_json::json!({ "size": 50 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let resized = stream
        .until(WAIT, |m| m.last_type() == Some("event_updated"))
        .await
        .pop()
        .unwrap();
    assert_eq!(type_availability(&resized), [(general, 10), (vip, 10)]);
}

#[tokio::test]
async fn a_stream_lists_the_first_hundred_types_and_sales_still_notify() {
    let app = spawn_app().await;
    let event = app.create_event("Many types", 1_000_000, None).await;
    let id = id_of(&event);
    let general = id_of(&event["ticketTypes"][0]);
    // 120 types in all: listing every one would take a change notification past
    // PostgreSQL's 8,000 bytes, and the sale that sends it would fail.
    let mut types = vec![general.clone()];
    for n in 1..120 {
        types.push(add_type(&app, &id, &format!("Type {n:03}")).await);
    }
    let mut stream = SseReader::connect(&app, &format!("/events/{id}/stream")).await;
    let snapshot = stream.next(WAIT).await.expect("a snapshot");
    let listed: Vec<(String, i64)> = types[..100]
        .iter()
        .map(|t| (t.clone(), 1_000_000))
        .collect();
    assert_eq!(type_availability(&snapshot), listed);

    let (status, hold) = app.purchase(&id, 1, "one-of-many").await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let held = stream
        .until(WAIT, |m| m.last_type() == Some("ticket_allocated"))
        .await
        .pop()
        .unwrap();
    let listed: Vec<(String, i64)> = types[..100].iter().map(|t| (t.clone(), 999_999)).collect();
    assert_eq!(type_availability(&held), listed);
}

/// Streams watching one event through a burst of holds and cancellations.
const WATCHERS: usize = 40;

#[tokio::test]
async fn every_stream_ends_on_the_final_counts_and_each_change_carries_when_it_was_made() {
    let app = spawn_app_with(&["--purchase-mode", "per-request"]).await;
    let event = app.create_event("Watched", 1_000, None).await;
    let id = id_of(&event);
    let mut streams = Vec::new();
    for _ in 0..WATCHERS {
        let mut stream = SseReader::connect(&app, &format!("/events/{id}/stream")).await;
        let snapshot = stream.next(WAIT).await.expect("a snapshot");
        assert_eq!(snapshot.remaining(), 1_000);
        assert!(
            snapshot.data["changedAt"].is_null(),
            "no change behind a snapshot: {}",
            snapshot.data
        );
        documented_timestamp(&snapshot.data["timestamp"]);
        streams.push(stream);
    }

    // 300 holds at once, then a third of them cancelled at once: two bursts of changes of
    // two kinds, far faster than one message per 100 ms.
    let holds = futures_util::future::join_all((0..300).map(|i| {
        let buyer = format!("watched-{i}");
        let app = &app;
        let id = &id;
        async move {
            let (status, body) = app.purchase(id, 1, &buyer).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            (id_of(&body), buyer)
        }
    }))
    .await;
    let app_ref = &app;
    futures_util::future::join_all(holds.iter().step_by(3).map(|(hold, buyer)| async move {
        let (status, body) = app_ref.cancel(hold, buyer).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }))
    .await;
    let event = app.event(&id).await;
    assert_eq!(event["reservedTickets"], 200);

    // Everything each stream sends until it has been quiet for a second, all read at once.
    let heard = futures_util::future::join_all(streams.iter_mut().map(|stream| async move {
        let mut messages = Vec::new();
        while let Some(message) = stream.next(Duration::from_secs(1)).await {
            messages.push(message);
        }
        messages
    }))
    .await;
    for (n, messages) in heard.iter().enumerate() {
        for message in messages {
            let changed_at = documented_timestamp(&message.data["changedAt"]);
            let sent_at = documented_timestamp(&message.data["timestamp"]);
            assert!(
                changed_at <= sent_at,
                "stream {n}: a change made at {changed_at} was sent at {sent_at}"
            );
        }
        let last = messages
            .last()
            .unwrap_or_else(|| panic!("stream {n} heard nothing of 400 changes"));
        let statistics = &last.data["statistics"];
        assert_eq!(
            (
                &statistics["totalTickets"],
                &statistics["remainingTickets"],
                &statistics["allocatedTickets"],
                &statistics["confirmedTickets"],
            ),
            (
                &event["totalTickets"],
                &event["availableTickets"],
                &event["reservedTickets"],
                &event["purchasedTickets"],
            ),
            "stream {n} ended on {}, the event is {event}",
            last.data
        );
        assert_eq!(
            last.data["ticketTypes"][0]["available"], event["availableTickets"],
            "stream {n}"
        );
    }
}
