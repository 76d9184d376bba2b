//! Short smoke runs of the load-test tool against a real server: zero oversell, every 201 read
//! back, every refusal one the documentation promises for the run, and a verdict that refuses
//! a run whose server failed. No timing thresholds: speed is measured with the tool, not in
//! tests.

use std::time::Duration;

use boxoffice_load::{
    Answer, Catalogue, Config, Journey, Report, Scanning, render, run, run_on_sale, run_scan,
};
use reqwest::StatusCode;

use crate::helpers::{BATCHED, PER_REQUEST, id_of, spawn_app_with};

fn config(url: String) -> Config {
    Config {
        urls: vec![url],
        event_id: None,
        tickets: 150,
        max_per_fingerprint: None,
        clients: 16,
        duration: None,
        requests: Some(300),
        quantity: 1,
        buyers: None,
        pay: false,
        idle_streams: 0,
        hold_streams_seconds: 0.0,
        stream_sources: 0,
        server_pid: None,
        read_only: false,
        no_verify: false,
        reconnect_streams: false,
        history: None,
        keyed: false,
        retry_seconds: 60.0,
        request_timeout: None,
    }
}

fn answer(action: &'static str, status: u16, code: Option<&str>, count: u64) -> Answer {
    Answer {
        action,
        status: Some(status),
        code: code.map(str::to_owned),
        count,
    }
}

/// The report's own verdict agrees with a fresh reading of it, and says sound.
fn assert_sound(report: &Report) {
    assert!(report.sound, "{report:#?}");
    assert!(report.verdict.is_empty(), "{report:#?}");
    assert!(report.is_sound(), "{report:#?}");
    assert_eq!(report.failed_requests, 0, "{report:#?}");
}

#[tokio::test]
async fn smoke_run_batched_sells_out_exactly() {
    let app = spawn_app_with(BATCHED).await;
    let report = run(&config(app.address.clone()))
        .await
        .expect("the run completes");
    let verification = report.verification.clone().unwrap();
    assert_sound(&report);
    assert_eq!(report.reservations, 150, "{report:#?}");
    // Every refusal is the documented one for an event that ran out, and nothing else.
    assert_eq!(
        report.answers,
        [
            answer("purchase", 201, None, 150),
            answer("purchase", 409, Some("TICKETS_SOLD_OUT"), 150),
        ],
        "{report:#?}"
    );
    assert_eq!(report.transport_errors, 0);
    assert_eq!(verification.allocations_checked, 150);
    assert_eq!(verification.available_tickets, 0);
    assert_eq!(verification.tickets_granted, verification.reserved_tickets);
    assert_eq!(verification.tickets_held, 150);
    app.assert_balanced(&report.event_id).await;
}

#[tokio::test]
async fn smoke_run_per_request_with_payment() {
    let app = spawn_app_with(PER_REQUEST).await;
    let mut config = config(app.address.clone());
    config.requests = Some(100);
    config.quantity = 2;
    config.pay = true;
    let report = run(&config).await.expect("the run completes");
    let verification = report.verification.clone().unwrap();
    assert_sound(&report);
    assert_eq!(report.reservations, 75);
    assert_eq!(
        report.statuses,
        [(201, 75), (409, 25)].into(),
        "{report:#?}"
    );
    assert_eq!(
        report.codes,
        [("TICKETS_SOLD_OUT".to_owned(), 25)].into(),
        "{report:#?}"
    );
    assert_eq!(report.transport_errors, 0);
    assert_eq!(report.payments_succeeded, 75);
    assert_eq!(
        report.answers,
        [
            answer("pay", 200, None, 75),
            answer("purchase", 201, None, 75),
            answer("purchase", 409, Some("TICKETS_SOLD_OUT"), 25),
        ],
        "{report:#?}"
    );
    // Every hold paid for was read back `purchased`.
    assert_eq!(verification.paid_checked, 75);
    assert_eq!(verification.paid_not_purchased, 0);
    assert_eq!(verification.purchased_tickets, 150);
    assert_eq!(verification.available_tickets, 0);
    app.assert_balanced(&report.event_id).await;
}

#[tokio::test]
async fn smoke_run_on_an_existing_event_holds_to_the_per_buyer_cap() {
    let app = spawn_app_with(BATCHED).await;
    let event = app.create_event("Existing event", 100, Some(2)).await;
    let event_id = id_of(&event);
    // Tickets held by someone outside the run: the held check must leave room for them.
    let (status, body) = app.purchase(&event_id, 2, "not-in-the-run").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut config = config(app.address.clone());
    config.event_id = Some(event_id.clone());
    config.requests = Some(60);
    config.buyers = Some(10);
    let report = run(&config).await.expect("the run completes");
    let verification = report.verification.clone().unwrap();
    assert_sound(&report);
    assert_eq!(report.event_id, event_id);
    // Ten buyers, six requests each, a cap of two: two holds each, the rest refused by the cap.
    assert_eq!(
        report.answers,
        [
            answer("purchase", 201, None, 20),
            answer("purchase", 409, Some("FINGERPRINT_LIMIT"), 40),
        ],
        "{report:#?}"
    );
    assert_eq!(verification.tickets_held, 20);
    assert_eq!(verification.reserved_tickets, 22);
    assert_eq!(verification.allocations_checked, 20);
    app.assert_balanced(&event_id).await;
}

#[tokio::test]
async fn a_run_whose_server_answers_5xx_is_not_sound() {
    let app = spawn_app_with(PER_REQUEST).await;
    let event = app.create_event("Failing event", 100, None).await;
    // A constraint no new allocation can meet: every hold the server tries to store fails,
    // and it answers 500 INTERNAL_ERROR (docs/errors.md). NOT VALID leaves no row to check.
    sqlx::query(
        "ALTER TABLE ticket_allocations ADD CONSTRAINT load_test_refuses_all \
         CHECK (quantity < 0) NOT VALID",
    )
    .execute(&app.pool)
    .await
    .expect("the constraint is added");
    let mut config = config(app.address.clone());
    config.event_id = Some(id_of(&event));
    config.requests = Some(20);
    config.clients = 4;
    let report = run(&config).await.expect("the run completes");
    assert_eq!(
        report.answers,
        [answer("purchase", 500, Some("INTERNAL_ERROR"), 20)],
        "{report:#?}"
    );
    assert!(!report.sound, "{report:#?}");
    assert!(!report.is_sound());
    assert_eq!(report.verdict, ["20 answers were server errors (5xx)"]);
    // Failed requests are counted apart and left out of the latency figures.
    assert_eq!(report.failed_requests, 20);
    assert!(report.failed_latency_ms.max > 0.0, "{report:#?}");
    assert_eq!(report.latency_ms.max, 0.0, "{report:#?}");
    // Nothing was sold, so the verification itself finds nothing wrong.
    let verification = report.verification.clone().unwrap();
    assert!(!verification.oversold);
    assert_eq!(verification.available_tickets, 100);
}

#[tokio::test]
async fn a_storm_longer_than_the_holds_may_sell_lapsed_tickets_again() {
    // Holds of a second on 20 tickets for three seconds: the holds lapse and their tickets
    // are granted again, so the run is granted more than 20 without ever holding more than
    // 20 at once. A correct server, not an oversell.
    let app = spawn_app_with(&["--hold-seconds", "1", "--sweep-interval-ms", "100"]).await;
    let mut config = config(app.address.clone());
    config.tickets = 20;
    config.clients = 4;
    config.requests = None;
    config.duration = Some(3.0);
    let report = run(&config).await.expect("the run completes");
    let verification = report.verification.clone().unwrap();
    assert!(verification.tickets_granted > 20, "{report:#?}");
    assert!(verification.tickets_released > 0, "{report:#?}");
    assert!(!verification.oversold, "{report:#?}");
    assert_sound(&report);
    app.assert_balanced(&report.event_id).await;
}

/// A buggy sweeper: expires every `reserved` hold of the newest event now, whatever its
/// `expiresAt`, and moves the event's counts to match; returns how many it expired.
const EXPIRE_EVERY_HOLD_NOW: &str = "\
    WITH e AS (SELECT id FROM events ORDER BY created_at DESC LIMIT 1 FOR UPDATE), \
    x AS (UPDATE ticket_allocations a \
          SET status = 'expired', expired_at = now(), updated_at = now() \
          FROM e WHERE a.event_id = e.id AND a.status = 'reserved' RETURNING a.quantity), \
    moved AS (UPDATE events \
          SET reserved_tickets = reserved_tickets - (SELECT COALESCE(sum(quantity), 0) FROM x), \
              available_tickets = available_tickets + (SELECT COALESCE(sum(quantity), 0) FROM x) \
          WHERE id = (SELECT id FROM e)) \
    SELECT count(*) FROM x";

#[tokio::test]
async fn holds_that_lapse_before_their_expires_at_make_the_run_unsound() {
    // Holds of ten minutes; while the storm runs, every hold made so far lapses seconds into
    // it, its tickets given back: each such 201 is an acknowledgement lost.
    let app = spawn_app_with(BATCHED).await;
    let pool = app.pool.clone();
    let sweeper = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let expired: i64 = sqlx::query_scalar(EXPIRE_EVERY_HOLD_NOW)
                .fetch_one(&pool)
                .await
                .expect("the holds are expired");
            if expired > 0 {
                return expired as u64;
            }
        }
    });
    let mut config = config(app.address.clone());
    config.tickets = 100_000;
    config.clients = 2;
    config.requests = None;
    config.duration = Some(2.0);
    let report = run(&config).await.expect("the run completes");
    let expired = sweeper.await.unwrap();
    let verification = report.verification.clone().unwrap();
    assert_eq!(verification.expired_early, expired, "{report:#?}");
    assert!(!verification.oversold, "{report:#?}");
    assert!(!report.sound, "{report:#?}");
    assert_eq!(report.verdict.len(), 1, "{report:#?}");
    assert!(
        report.verdict[0].contains("holds read back expired before the expiresAt their 201 named"),
        "{report:#?}"
    );
}

#[tokio::test]
async fn spans_out_of_range_are_refused_before_anything_is_sent() {
    // A `Config` built without the parser: each value used to panic converting to a
    // `Duration`, some after the event was created or the whole run was done.
    let app = spawn_app_with(BATCHED).await;
    type Doctor = fn(&mut Config);
    let cases: [(&str, Doctor); 5] = [
        ("--duration", |c| c.duration = Some(f64::INFINITY)),
        ("--duration", |c| c.duration = Some(1e20)),
        ("--hold-streams-seconds", |c| {
            c.idle_streams = 1;
            c.hold_streams_seconds = f64::INFINITY;
        }),
        ("--retry-seconds", |c| c.retry_seconds = 1e20),
        ("--request-timeout", |c| c.request_timeout = Some(f64::NAN)),
    ];
    for (flag, doctor) in cases {
        let mut config = config(app.address.clone());
        config.requests = Some(2);
        doctor(&mut config);
        let err = run(&config).await.expect_err("refused");
        assert!(err.starts_with(&format!("{flag} must be")), "{err}");
    }
    assert_eq!(app.row_count("events").await, 0);
}

#[tokio::test]
async fn a_protected_server_without_the_token_is_refused_before_the_load() {
    // Holds need no token, but the verification reads the organiser's quotas route: the run
    // says so before it buys anything, not after.
    let app = spawn_app_with(&["--admin-token", "load-organiser"]).await;
    let create = app
        .request(reqwest::Method::POST, "/events")
        .bearer_auth("load-organiser")
        .json(&serde_json::json!({
            "name": "Protected", "date": "2030-01-01T20:00:00Z", "totalTickets": 10,
        }));
    let (status, event) = app.send(create).await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    let mut config = config(app.address.clone());
    config.event_id = Some(id_of(&event));
    config.requests = Some(4);
    let err = run(&config).await.expect_err("refused");
    assert!(err.starts_with("before the run: "), "{err}");
    assert!(err.contains("--admin-token"), "{err}");
    assert_eq!(app.row_count("ticket_allocations").await, 0);
    // Without verification there is nothing to refuse.
    config.no_verify = true;
    let report = run(&config).await.expect("the run completes");
    assert_eq!(report.reservations, 4, "{report:#?}");
}

#[tokio::test]
async fn flags_that_cannot_make_a_useful_run_are_refused_before_anything_is_sent() {
    let app = spawn_app_with(BATCHED).await;
    type Doctor = fn(&mut Config);
    let cases: [(&str, Doctor); 7] = [
        ("--url \"foo\" is not a URL", |c| {
            c.urls = vec!["foo".into()]
        }),
        ("--url \"\" is not a URL", |c| c.urls = vec![String::new()]),
        ("--url \"ftp://x\" is not an http", |c| {
            c.urls = vec!["ftp://x".into()]
        }),
        ("--quantity and --requests must be 1 or more", |c| {
            c.quantity = 0
        }),
        ("--quantity and --requests must be 1 or more", |c| {
            c.requests = Some(0)
        }),
        ("--read-only times reads", |c| {
            c.read_only = true;
            c.pay = true;
        }),
        // The parser refuses it first; a `Config` built without it is refused by the run.
        (
            "--max-per-fingerprint shapes the event the tool creates",
            |c| {
                c.event_id = Some("00000000-0000-0000-0000-000000000000".into());
                c.max_per_fingerprint = Some(2);
            },
        ),
    ];
    for (message, doctor) in cases {
        let mut config = config(app.address.clone());
        doctor(&mut config);
        let err = run(&config).await.expect_err("refused");
        assert!(err.starts_with(message), "{err}");
    }
    assert_eq!(app.row_count("events").await, 0);
}

#[tokio::test]
async fn smoke_run_with_streams_from_two_source_addresses() {
    let app = spawn_app_with(BATCHED).await;
    let mut config = config(app.address.clone());
    config.idle_streams = 20;
    config.stream_sources = 2;
    // The server runs in this process: its memory is this process's.
    config.server_pid = Some(std::process::id());
    let report = run(&config).await.expect("the run completes");
    assert_sound(&report);
    let streams = report.streams.clone().expect("a stream report");
    assert_eq!(streams.opened, 20, "{streams:#?}");
    assert_eq!(streams.sources, 2);
    assert_eq!(streams.last_message_matches, 20, "{streams:#?}");
    assert_eq!(streams.last_message_mismatches, 0);
    assert_eq!(streams.ended_early, 0);
    // A snapshot each, and at least one change each after it.
    assert!(streams.messages >= 40, "{streams:#?}");
    assert!(streams.commit_to_message_ms.max > 0.0, "{streams:#?}");
    assert!(streams.server_kib_per_stream.is_some(), "{streams:#?}");
}

#[tokio::test]
async fn streams_are_compared_with_counts_read_once_they_went_quiet() {
    // Holds of a second: they lapse after the run, while the streams are read to their end.
    // The streams show the lapses; the counts they are compared with must too.
    let app = spawn_app_with(&["--hold-seconds", "1", "--sweep-interval-ms", "100"]).await;
    let mut config = config(app.address.clone());
    config.tickets = 100_000;
    config.clients = 2;
    config.requests = None;
    config.duration = Some(1.0);
    config.idle_streams = 3;
    let report = run(&config).await.expect("the run completes");
    let streams = report.streams.clone().expect("a stream report");
    assert_eq!(streams.last_message_mismatches, 0, "{report:#?}");
    assert_eq!(streams.last_message_matches, 3, "{report:#?}");
    // Every hold lapsed before the streams were closed, and the counts compared say so.
    let [total, available, reserved, purchased] = streams.final_counts;
    assert_eq!(
        (total, available, reserved, purchased),
        (100_000, 100_000, 0, 0),
        "{report:#?}"
    );
    assert_sound(&report);
}

#[tokio::test]
async fn smoke_scan_admits_every_ticket_exactly_once() {
    let app = spawn_app_with(&["--admin-token", "scan-organiser"]).await;
    let mut config = config(app.address.clone());
    config.clients = 8;
    // Two passes over 60 codes: the first admits, the second is answered as a duplicate.
    config.requests = Some(120);
    let scanning = Scanning {
        scan: true,
        scan_tickets: 60,
        gates: 4,
        door_token: None,
    };
    let report = run_scan(&config, &scanning, Some("scan-organiser"))
        .await
        .expect("the scan run completes");
    assert!(report.sound, "{report:#?}");
    assert_eq!(report.codes, 60);
    assert_eq!(
        (report.scans, report.admitted, report.duplicates),
        (120, 60, 60)
    );
    assert_eq!(report.stats_admitted, 60);
    assert_eq!(
        (report.admitted_twice, report.never_admitted, report.failed),
        (0, 0, 0)
    );
}

/// How a front fails a read.
#[derive(Clone, Copy)]
enum Failing {
    /// Answered 503 at once.
    Refused,
    /// Never answered.
    Hung,
    /// Answered with this status (a 4xx: an answer the server stands by).
    Answered(StatusCode),
}

/// Which requests a front fails, and how.
#[derive(Clone, Copy)]
struct Fault {
    /// The requests it may fail: a GET of a path for which this is true.
    reads: fn(&str) -> bool,
    /// Requests passed on before any fails: the number of purchases (`POST
    /// /events/{id}/tickets`) to let through first, so that the run's own reads pass and only
    /// the reads after it fail.
    after_purchases: u64,
    /// How many of the chosen reads fail (`u64::MAX`: all).
    failing: u64,
    how: Failing,
}

/// An allocation's read-back, `GET /tickets/{id}`.
fn ticket_read(path: &str) -> bool {
    path.starts_with("/tickets/")
}

/// The event's read, `GET /events/{id}`.
fn event_read(path: &str) -> bool {
    path.strip_prefix("/events/")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
}

/// The sales report's read, `GET /events/{id}/report` (the row check's).
fn report_read(path: &str) -> bool {
    path.starts_with("/events/") && path.ends_with("/report")
}

/// A front for the server at `target`, as a proxy in front of a database failover looks to
/// the tool: the first `failing` reads of an allocation (`GET /tickets/{id}`) are answered
/// 503, everything else is passed on. Its address.
async fn front_failing_reads(target: String, failing: u64) -> String {
    front_failing_reads_as(target, failing, Failing::Refused).await
}

/// As [`front_failing_reads`], the failing reads failed as `how` says.
async fn front_failing_reads_as(target: String, failing: u64, how: Failing) -> String {
    front_failing(
        target,
        Fault {
            reads: ticket_read,
            after_purchases: 0,
            failing,
            how,
        },
    )
    .await
}

/// A front for the server at `target` that fails the reads `fault` chooses and passes
/// everything else on. Its address.
async fn front_failing(target: String, fault: Fault) -> String {
    use axum::response::IntoResponse;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let failing = Arc::new(AtomicU64::new(fault.failing));
    let purchases = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let forward = move |request: axum::extract::Request| {
        let (failing, purchases, client, target) = (
            failing.clone(),
            purchases.clone(),
            client.clone(),
            target.clone(),
        );
        async move {
            let (parts, body) = request.into_parts();
            let path = parts.uri.path();
            let armed = purchases.load(Ordering::Relaxed) >= fault.after_purchases;
            if parts.method == reqwest::Method::POST
                && path.starts_with("/events/")
                && path.ends_with("/tickets")
            {
                purchases.fetch_add(1, Ordering::Relaxed);
            }
            let chosen = armed && parts.method == reqwest::Method::GET && (fault.reads)(path);
            if chosen
                && failing
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
            {
                let status = match fault.how {
                    Failing::Hung => std::future::pending().await,
                    Failing::Refused => StatusCode::SERVICE_UNAVAILABLE,
                    Failing::Answered(status) => status,
                };
                return (
                    status,
                    [("content-type", "application/json")],
                    r#"{"error":"failed by the test's front","code":"FRONT"}"#,
                )
                    .into_response();
            }
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let mut headers = parts.headers.clone();
            headers.remove("host");
            let answer = client
                .request(parts.method, format!("{target}{}", parts.uri))
                .headers(headers)
                .body(body)
                .send()
                .await
                .expect("the server answers");
            let status = answer.status();
            let mut headers = answer.headers().clone();
            // Passed on as it arrives, so a stream (`GET /events/{id}/stream`) streams
            // through; the length is the body's framing, which axum makes again.
            headers.remove("content-length");
            headers.remove("transfer-encoding");
            let body = futures_util::stream::unfold(answer, |mut answer| async move {
                match answer.chunk().await {
                    Ok(Some(chunk)) => Some((Ok::<_, reqwest::Error>(chunk), answer)),
                    _ => None,
                }
            });
            (status, headers, axum::body::Body::from_stream(body)).into_response()
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new().fallback(forward);
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

#[tokio::test]
async fn a_read_back_that_fails_for_a_while_is_retried_within_the_retry_window() {
    // The first five read-backs meet a failover (503): retried, every hold is found.
    let app = spawn_app_with(BATCHED).await;
    let front = front_failing_reads(app.address.clone(), 5).await;
    let mut config = config(front);
    config.requests = Some(20);
    config.clients = 4;
    config.retry_seconds = 30.0;
    let report = run(&config).await.expect("the run completes");
    let verification = report.verification.clone().unwrap();
    assert_eq!(verification.allocations_checked, 20, "{report:#?}");
    assert_eq!(verification.allocations_missing, 0, "{report:#?}");
    assert_eq!(verification.allocations_unverified, 0, "{report:#?}");
    assert_eq!(verification.tickets_held, 20, "{report:#?}");
    assert_sound(&report);
}

#[tokio::test]
async fn a_read_back_that_keeps_failing_could_not_be_verified_and_is_not_missing() {
    // Every read-back answered 503 past --retry-seconds: the holds were not found lost, only
    // not read; the run is not verified, and says so apart from a lost acknowledgement.
    let app = spawn_app_with(BATCHED).await;
    let front = front_failing_reads(app.address.clone(), u64::MAX).await;
    let mut config = config(front);
    config.requests = Some(20);
    config.clients = 4;
    config.retry_seconds = 1.0;
    let report = run(&config).await.expect("the run completes");
    let verification = report.verification.clone().unwrap();
    assert_eq!(verification.allocations_checked, 20, "{report:#?}");
    assert_eq!(verification.allocations_missing, 0, "{report:#?}");
    assert_eq!(verification.allocations_unverified, 20, "{report:#?}");
    assert!(!report.sound, "{report:#?}");
    assert!(report.incomplete_only(), "{report:#?}");
    assert_eq!(report.verdict.len(), 1, "{report:#?}");
    assert!(
        report.verdict[0].starts_with("verification incomplete: 20 of 20"),
        "{report:#?}"
    );
    let text = render(&report);
    assert!(text.contains("(missing 0, could not verify 20)"), "{text}");
    app.assert_balanced(&report.event_id).await;
}

#[tokio::test]
async fn a_read_back_that_hangs_is_given_up_and_not_verified_rather_than_waited_for() {
    // Every read-back hangs and the run names no --request-timeout: each read is given up
    // after the tool's own read timeout, and the holds count as not verified, not missing.
    let app = spawn_app_with(BATCHED).await;
    let front = front_failing_reads_as(app.address.clone(), u64::MAX, Failing::Hung).await;
    let mut config = config(front);
    config.requests = Some(20);
    config.clients = 20;
    config.request_timeout = None;
    config.retry_seconds = 1.0;
    let report = tokio::time::timeout(Duration::from_secs(60), run(&config))
        .await
        .expect("the verification gives up on reads that hang")
        .expect("the run completes");
    let verification = report.verification.clone().unwrap();
    assert_eq!(verification.allocations_missing, 0, "{report:#?}");
    assert_eq!(verification.allocations_unverified, 20, "{report:#?}");
    assert!(report.incomplete_only(), "{report:#?}");
}

#[tokio::test]
async fn a_row_check_the_server_fails_leaves_the_run_incomplete_with_its_report() {
    // The sales report fails (503) for good once the run is over: everything else was read,
    // the row check could not be made. The run's results are kept: a report, incomplete,
    // not an error that loses them.
    let app = spawn_app_with(&["--admin-token", "load-organiser"]).await;
    let fault = Fault {
        reads: report_read,
        after_purchases: 0,
        failing: u64::MAX,
        how: Failing::Refused,
    };
    let front = front_failing(app.address.clone(), fault).await;
    let mut config = config(front);
    config.requests = Some(20);
    config.clients = 4;
    config.retry_seconds = 1.0;
    let journey = Journey {
        admin_token: Some("load-organiser".into()),
        ..Journey::default()
    };
    let report = run_on_sale(&config, &Catalogue::default(), &journey)
        .await
        .expect("the run completes with its report");
    let verification = report.verification.clone().unwrap();
    assert_eq!(verification.allocations_checked, 20, "{report:#?}");
    assert_eq!(verification.allocations_unverified, 0, "{report:#?}");
    assert_eq!(verification.tickets_held, 20, "{report:#?}");
    assert!(verification.rows.is_none(), "{report:#?}");
    assert!(!report.sound, "{report:#?}");
    assert!(report.incomplete_only(), "{report:#?}");
    assert_eq!(report.verdict.len(), 1, "{report:#?}");
    assert!(
        report.verdict[0].contains("the row check could not be made"),
        "{report:#?}"
    );
    let text = render(&report);
    assert!(text.contains("the row check could not be made"), "{text}");
}

#[tokio::test]
async fn event_counts_never_answered_after_the_run_leave_it_incomplete_with_its_report() {
    // The event's read hangs once the purchases are done (a server stopped mid-verification):
    // after the retry window the server is taken as gone. Nothing is judged by counts that
    // were not read; the run is incomplete, with its report, not an error.
    let app = spawn_app_with(BATCHED).await;
    let fault = Fault {
        reads: event_read,
        after_purchases: 20,
        failing: u64::MAX,
        how: Failing::Hung,
    };
    let front = front_failing(app.address.clone(), fault).await;
    let mut config = config(front);
    config.requests = Some(20);
    config.clients = 4;
    config.retry_seconds = 1.0;
    config.request_timeout = Some(1.0);
    let report = tokio::time::timeout(Duration::from_secs(30), run(&config))
        .await
        .expect("the verification gives up")
        .expect("the run completes with its report");
    let verification = report.verification.clone().unwrap();
    assert!(!verification.oversold, "{report:#?}");
    assert_eq!(verification.allocations_missing, 0, "{report:#?}");
    assert_eq!(verification.allocations_unverified, 20, "{report:#?}");
    assert!(!report.sound, "{report:#?}");
    assert!(report.incomplete_only(), "{report:#?}");
    assert!(
        report
            .verdict
            .iter()
            .any(|r| r.contains("the event's counts could not be read")),
        "{report:#?}"
    );
    let text = render(&report);
    assert!(
        text.contains("the event's counts could not be read"),
        "{text}"
    );
}

#[tokio::test]
async fn an_event_read_refused_after_the_run_is_not_retried_and_the_rest_is_judged() {
    // The server answers the event's read 404 after the run: an answer it stands by, not a
    // failover, so it is not retried for --retry-seconds. The holds are still read back and
    // judged; the counts are not judged, and the run is not sound (not merely incomplete).
    let app = spawn_app_with(BATCHED).await;
    let fault = Fault {
        reads: event_read,
        after_purchases: 20,
        failing: u64::MAX,
        how: Failing::Answered(StatusCode::NOT_FOUND),
    };
    let front = front_failing(app.address.clone(), fault).await;
    let mut config = config(front);
    config.requests = Some(20);
    config.clients = 4;
    config.retry_seconds = 30.0;
    let report = tokio::time::timeout(Duration::from_secs(15), run(&config))
        .await
        .expect("a 404 is not retried")
        .expect("the run completes with its report");
    let verification = report.verification.clone().unwrap();
    assert_eq!(verification.allocations_checked, 20, "{report:#?}");
    assert_eq!(verification.allocations_missing, 0, "{report:#?}");
    assert_eq!(verification.allocations_unverified, 0, "{report:#?}");
    assert_eq!(verification.tickets_held, 20, "{report:#?}");
    assert!(!verification.oversold, "{report:#?}");
    assert!(!report.sound, "{report:#?}");
    assert!(!report.incomplete_only(), "{report:#?}");
    assert!(
        report
            .verdict
            .iter()
            .any(|r| r.starts_with("the event's counts could not be read") && r.contains("404")),
        "{report:#?}"
    );
}

#[tokio::test]
async fn once_the_window_closed_on_a_hung_server_the_reads_left_are_not_attempted() {
    // Every read-back hangs. Two readers, forty holds: once a read fails with the window
    // closed, the server is taken as gone and the holds left are counted unverified at once,
    // rather than given a read timeout each (twenty more seconds here).
    let app = spawn_app_with(BATCHED).await;
    let front = front_failing_reads_as(app.address.clone(), u64::MAX, Failing::Hung).await;
    let mut config = config(front);
    config.requests = Some(40);
    config.clients = 2;
    config.retry_seconds = 1.0;
    config.request_timeout = Some(1.0);
    let report = tokio::time::timeout(Duration::from_secs(12), run(&config))
        .await
        .expect("the reads left are not attempted")
        .expect("the run completes");
    let verification = report.verification.clone().unwrap();
    assert_eq!(verification.allocations_checked, 40, "{report:#?}");
    assert_eq!(verification.allocations_missing, 0, "{report:#?}");
    assert_eq!(verification.allocations_unverified, 40, "{report:#?}");
    assert!(report.incomplete_only(), "{report:#?}");
}

#[tokio::test]
async fn a_server_that_recovered_within_the_window_is_read_to_the_end_after_it_closed() {
    // The first read-back meets a blip (503); its retry, 500 ms later, comes after the
    // window of 0.2 s closed and is answered. The server recovered: every hold is read,
    // though the window closed long before the last of them.
    let app = spawn_app_with(BATCHED).await;
    let front = front_failing_reads(app.address.clone(), 1).await;
    let mut config = config(front);
    config.requests = Some(10);
    config.clients = 1;
    config.retry_seconds = 0.2;
    let report = run(&config).await.expect("the run completes");
    let verification = report.verification.clone().unwrap();
    assert_eq!(verification.allocations_checked, 10, "{report:#?}");
    assert_eq!(verification.allocations_unverified, 0, "{report:#?}");
    assert_eq!(verification.tickets_held, 10, "{report:#?}");
    assert_sound(&report);
}

#[tokio::test]
async fn an_event_id_the_server_does_not_have_is_refused_before_the_load() {
    let app = spawn_app_with(BATCHED).await;
    let mut config = config(app.address.clone());
    config.requests = Some(4);
    config.retry_seconds = 1.0;
    let missing = "7d4c3c1e-1b5f-4e58-9a59-3f4f0b1e2a6d";
    config.event_id = Some(missing.into());
    let err = run(&config).await.expect_err("refused");
    assert!(
        err.starts_with(&format!("--event-id {missing}: no such event")),
        "{err}"
    );
    // A `Config` built without the parser (which refuses it) is refused by the run.
    config.event_id = Some("not-a-uuid".into());
    let err = run(&config).await.expect_err("refused");
    assert!(err.starts_with("--event-id "), "{err}");
    assert!(err.contains("not-a-uuid"), "{err}");
}

#[tokio::test]
async fn the_streams_final_counts_are_read_through_a_blip_after_the_run() {
    // The first reads of the event after the run (the streams' final counts) meet a failover
    // (503): retried within --retry-seconds as the verification's reads are, not the end of
    // the run.
    let app = spawn_app_with(BATCHED).await;
    let fault = Fault {
        reads: event_read,
        after_purchases: 20,
        failing: 3,
        how: Failing::Refused,
    };
    let front = front_failing(app.address.clone(), fault).await;
    let mut config = config(front);
    config.requests = Some(20);
    config.clients = 4;
    config.idle_streams = 3;
    config.retry_seconds = 30.0;
    let report = run(&config).await.expect("the run completes");
    assert_sound(&report);
    let streams = report.streams.clone().expect("a stream report");
    assert_eq!(streams.last_message_matches, 3, "{streams:#?}");
}

#[tokio::test]
async fn a_declining_card_on_an_existing_free_event_is_refused_before_the_load() {
    // A free order is confirmed whatever the card: the run would call the server unsound for
    // the 200s its declining cards got.
    let app = spawn_app_with(BATCHED).await;
    let (status, free) = app
        .post_json(
            "/events",
            serde_json::json!({
                "name": "Free event", "date": "2030-01-01T20:00:00Z", "totalTickets": 50,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{free}");
    let mut config = config(app.address.clone());
    config.event_id = Some(id_of(&free));
    config.requests = Some(10);
    config.pay = true;
    let journey = Journey {
        decline_share: 0.5,
        ..Journey::default()
    };
    let err = run_on_sale(&config, &Catalogue::default(), &journey)
        .await
        .expect_err("refused");
    assert!(
        err.starts_with("--decline-share needs every ticket type priced above 0"),
        "{err}"
    );
    assert!(err.contains("General admission"), "{err}");
    assert_eq!(app.row_count("ticket_allocations").await, 0);
    // A priced event is run as before.
    let priced = app.create_event("Priced event", 50, None).await;
    config.event_id = Some(id_of(&priced));
    let report = run_on_sale(&config, &Catalogue::default(), &journey)
        .await
        .expect("the run completes");
    assert_sound(&report);
}

#[tokio::test]
async fn a_line_above_an_existing_type_s_own_limit_is_refused_before_the_load() {
    // The server refuses a line above its type's maxPerOrder with 422: every hold of the
    // run would be refused, the tool's own doing, not the server's fault.
    let app = spawn_app_with(BATCHED).await;
    let event = app.create_event("Limited per order", 50, None).await;
    let event_id = id_of(&event);
    let default_type = event["ticketTypes"][0]["id"]
        .as_str()
        .expect("a default type");
    let (status, changed) = app
        .send(
            app.request(
                reqwest::Method::PATCH,
                &format!("/events/{event_id}/ticket-types/{default_type}"),
            )
            .json(&serde_json::json!({ "maxPerOrder": 2 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let mut config = config(app.address.clone());
    config.event_id = Some(event_id);
    config.requests = Some(4);
    config.quantity = 3;
    let err = run(&config).await.expect_err("refused");
    assert!(
        err.starts_with("--quantity 3 is above the maxPerOrder 2"),
        "{err}"
    );
    assert_eq!(app.row_count("ticket_allocations").await, 0);
    // At the type's limit, the run goes.
    config.quantity = 2;
    assert_sound(&run(&config).await.expect("the run completes"));
}

#[tokio::test]
async fn a_token_the_report_route_refuses_is_refused_before_the_load() {
    // A server without --admin-token takes any token on the organiser's routes, but never on
    // the sales report the row check reads: a wrong token is the run's fault, found before
    // anything is bought, not a server called unsound after the load.
    let app = spawn_app_with(BATCHED).await;
    let mut config = config(app.address.clone());
    config.requests = Some(4);
    let journey = Journey {
        admin_token: Some("wrong".into()),
        ..Journey::default()
    };
    let err = run_on_sale(&config, &Catalogue::default(), &journey)
        .await
        .expect_err("refused");
    assert!(err.starts_with("before the run: "), "{err}");
    assert!(
        err.contains("401") && err.contains("--admin-token"),
        "{err}"
    );
    assert_eq!(app.row_count("ticket_allocations").await, 0);
}

#[tokio::test]
async fn orders_larger_than_the_server_takes_are_refused_before_the_load() {
    // The server takes at most --max-tickets-per-purchase (10) tickets in one purchase: every
    // hold of the run would be answered 422, the tool's own doing, not the server's fault.
    let app = spawn_app_with(BATCHED).await;
    let mut config = config(app.address.clone());
    config.requests = Some(4);
    config.quantity = 11;
    let err = run(&config).await.expect_err("refused");
    assert!(err.starts_with("before the run: "), "{err}");
    assert!(err.contains("--quantity 11"), "{err}");
    assert_eq!(app.row_count("ticket_allocations").await, 0);
    // Three lines of 4 tickets: 12 in one purchase.
    config.quantity = 4;
    let catalogue = Catalogue {
        ticket_types: 3,
        max_lines: 3,
        ..Catalogue::default()
    };
    let err = run_on_sale(&config, &catalogue, &Journey::default())
        .await
        .expect_err("refused");
    assert!(err.contains("--max-lines 3"), "{err}");
    assert_eq!(app.row_count("ticket_allocations").await, 0);
    // Within the limit, the run goes.
    config.quantity = 10;
    assert_sound(&run(&config).await.expect("the run completes"));
}
