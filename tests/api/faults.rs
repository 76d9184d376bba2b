//! Faults: a server killed with SIGKILL in the middle of a purchase storm, a database that
//! stops and comes back under load, and three server processes on one database with racing
//! sweepers. The harnesses (the server process, the storm driver, the dedicated cluster) are
//! in `helpers/`.
//!
//! Every process a test starts is owned by a guard that kills it on drop, so a failing
//! assertion leaves nothing running; temporary directories are removed the same way.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxoffice_load::{Observer, Outcome, Plan, Stop, drive};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{
    Api, Buyer, DedicatedCluster, ServerProcess, SseReader, StormLog, admin_connection, answered,
    assert_counts_match_rows, assert_error, assert_promises_kept, bounded_client, database_url,
    eventually, exchange, fresh_database, id_of, new_fingerprint, spawn_app_on, storm,
    tickets_by_status,
};

/// How long a stream or a recovery may take to show what a test waits for.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_storm_loses_no_promised_allocation_and_sells_nothing_twice() {
    const TOTAL: i64 = 400;
    // Each storm buyer asks for 4 or 5 tickets in three racing requests (batched, the
    // default: often in one batch); none may be promised more than this.
    const CAP: i64 = 3;
    let options = fresh_database().await;
    let url = database_url(&options);
    let pool = PgPool::connect_with(options.clone()).await.unwrap();

    let mut first = ServerProcess::start(&url, &[]).await;
    let event_id = id_of(&first.create_event("Crash", TOTAL, Some(CAP)).await);
    let log = Arc::new(StormLog::default());
    let buyer = Buyer {
        instances: Arc::new(vec![Api::clone(&first)]),
        event_id: event_id.clone(),
        log: log.clone(),
        pay_every: Some(3),
        stop_on_transport_error: true,
        stop_when_sold_out: true,
        max_requests: 1_000,
        pause: Duration::ZERO,
    };
    let storm_one = tokio::spawn(storm(buyer.clone(), 24, Duration::from_secs(60)));

    // Kill it a quarter of the way through the stock, with purchases and payments in flight.
    let log_ = log.clone();
    eventually("a quarter of the tickets granted", WAIT, || {
        let log = log_.clone();
        async move {
            (log.tickets_granted.load(Ordering::Relaxed) >= TOTAL as u64 / 4
                && log.in_flight.load(Ordering::SeqCst) > 0)
                .then_some(())
        }
    })
    .await;
    let in_flight = log.in_flight.load(Ordering::SeqCst);
    first.kill();
    storm_one.await.unwrap();
    let before_restart = log.granted();
    assert!(
        log.transport_errors.load(Ordering::Relaxed) > 0,
        "the kill cut requests off"
    );
    assert!(
        (before_restart.iter().map(|g| g.quantity).sum::<i64>()) < TOTAL,
        "the storm was still selling when the server died"
    );

    // The same database, a new process: payments the kill left in `payment_pending` are
    // settled by its sweeper after a second.
    let second = ServerProcess::start(
        &url,
        &[
            "--payment-recovery-seconds",
            "1",
            "--sweep-interval-ms",
            "50",
        ],
    )
    .await;
    let sold = |counts: &BTreeMap<String, i64>| {
        ["reserved", "payment_pending", "purchased"]
            .iter()
            .map(|s| counts.get(*s).copied().unwrap_or(0))
            .sum::<i64>()
    };
    let after_crash = tickets_by_status(&pool, &event_id).await;
    let promised: i64 = before_restart.iter().map(|g| g.quantity).sum();
    assert!(
        sold(&after_crash) >= promised,
        "rows {after_crash:?} hold fewer tickets than the {promised} promised"
    );

    // Sell the rest on the restarted server.
    let buyer = Buyer {
        instances: Arc::new(vec![Api::clone(&second)]),
        stop_on_transport_error: false,
        ..buyer
    };
    storm(buyer, 16, Duration::from_secs(60)).await;
    eventually("no payment left pending", WAIT, || {
        let pool = pool.clone();
        let event_id = event_id.clone();
        async move {
            let counts = tickets_by_status(&pool, &event_id).await;
            (!counts.contains_key("payment_pending")).then_some(())
        }
    })
    .await;

    let granted = log.granted();
    assert_promises_kept(
        &pool,
        &second,
        &event_id,
        &granted,
        &["reserved", "purchased"],
    )
    .await;
    let event = second.event(&event_id).await;
    assert_counts_match_rows(&pool, &event).await;
    assert_eq!(event["availableTickets"], 0, "sold out: {event}");
    let counts = tickets_by_status(&pool, &event_id).await;
    assert_eq!(
        sold(&counts),
        TOTAL,
        "exactly the stock is sold: {counts:?}"
    );
    let promised: i64 = granted.iter().map(|g| g.quantity).sum();
    assert!(promised <= TOTAL, "{promised} tickets promised of {TOTAL}");
    // No hold ends unpaid here (no cancel, no expiry): every promise still counts.
    log.assert_cap_kept(CAP);
    log.assert_buyers_overlapped();
    for ((action, status, code), count) in log.answers() {
        assert!(
            matches!(
                (action, status, code.as_str()),
                ("purchase", 201, "")
                    | (
                        "purchase",
                        409,
                        "TICKETS_SOLD_OUT" | "INSUFFICIENT_TICKETS" | "FINGERPRINT_LIMIT"
                    )
                    | ("pay", 200, "")
            ),
            "{count} × {action} answered {status} {code}"
        );
    }
    eprintln!(
        "crash: killed with {in_flight} requests in flight after {} holds; rows then {after_crash:?}; \
         {} holds granted in all, finally {counts:?}",
        before_restart.len(),
        granted.len()
    );
}

/// One answer to a buyer: status, body, its `Retry-After` value, how long it took.
type Answer = (StatusCode, Value, Option<String>, Duration);

/// Buyers that keep coming through a database outage: every answer with its status, body,
/// its `Retry-After` value, and how long it took, until `stop` is set.
struct Through {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
}

impl Observer for Through {
    fn observe(&self, outcome: &Outcome) -> ControlFlow<Stop> {
        let status = outcome
            .status
            .expect("the server answers (no transport error)");
        self.answers.lock().unwrap().push((
            status,
            outcome.body.clone(),
            outcome.retry_after.clone(),
            outcome.latency,
        ));
        if self.stop.load(Ordering::Relaxed) {
            ControlFlow::Break(Stop::Run)
        } else {
            ControlFlow::Continue(())
        }
    }
}

impl Through {
    /// Four buyers, one ticket per purchase, a new buyer per purchase, 20 ms apart.
    fn drive(self, api: &Api, event_id: &str) -> impl Future<Output = ()> + Send + 'static {
        let plan = Plan {
            clients: 4,
            requests: u64::MAX,
            buyer_prefix: format!("device-{}-", Uuid::new_v4().simple()),
            pause: Duration::from_millis(20),
            // The bounded client: a hang is a failure, not a stuck run.
            client: Some(api.client.clone()),
            ..Plan::new(vec![api.address.clone()], event_id.to_owned())
        };
        async move {
            drive(&plan, Arc::new(self))
                .await
                .expect("the buyers run (every request answered)");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restart_gives_503_with_retry_after_then_recovers_without_a_restart() {
    let mut cluster = DedicatedCluster::start().await;
    let options = cluster.create_database("boxoffice").await;
    let app = spawn_app_on(&options, &[]).await;
    // Requests bounded in time: a hang is a failure, not a stuck run.
    let api = Api::new(app.address.clone(), bounded_client());
    let event_id = id_of(&api.create_event("Restart", 100_000, None).await);
    let mut stream = SseReader::connect(&api, &format!("/events/{event_id}/stream")).await;
    assert_eq!(
        stream.next(WAIT).await.expect("snapshot").remaining(),
        100_000
    );

    // Buyers keep coming through the outage; every answer is timed.
    let load_stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let load = tokio::spawn(
        Through {
            stop: load_stop.clone(),
            answers: answers.clone(),
        }
        .drive(&api, &event_id),
    );
    let count = |status: StatusCode| {
        let answers = answers.clone();
        move || {
            answers
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.0 == status)
                .count()
        }
    };
    let created = count(StatusCode::CREATED);
    let unavailable = count(StatusCode::SERVICE_UNAVAILABLE);
    eventually("purchases before the outage", WAIT, || async {
        (created() >= 5).then_some(())
    })
    .await;

    cluster.stop().await;
    // A request waits up to the pool's 5 s for a connection; readiness answers within 1 s,
    // so a probe with a 1 s timeout hears 503 rather than nothing. The first request finds
    // the pool's connections dead at once; later ones wait for a new connection.
    for (path, within) in [
        (format!("/events/{event_id}"), Duration::from_secs(10)),
        ("/ready".to_owned(), Duration::from_secs(3)),
        ("/ready".to_owned(), Duration::from_secs(3)),
    ] {
        let started = Instant::now();
        let (status, body, retry_after) = answered(api.client.get(api.url(&path))).await;
        assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
        );
        assert_eq!(
            retry_after.as_deref(),
            Some("1"),
            "{path}: a 503 carries Retry-After: 1"
        );
        assert!(
            started.elapsed() < within,
            "{path} took {:?}",
            started.elapsed()
        );
    }
    // Liveness does not depend on the database: the process is up.
    let (status, body, _) = answered(api.client.get(api.url("/health"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body, retry_after) =
        answered(api.purchase_request(&event_id, 1, &new_fingerprint())).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    assert_eq!(retry_after.as_deref(), Some("1"));
    let outage_answers = unavailable();
    eventually("buyers answered 503 during the outage", WAIT, || async {
        (unavailable() >= outage_answers + 40).then_some(())
    })
    .await;

    // The database returns; the same server process finds it again by itself.
    cluster.restart().await;
    let started = Instant::now();
    eventually("/ready is 200 again", WAIT, || {
        let request = api.client.get(api.url("/ready"));
        async move { (exchange(request).await?.0 == StatusCode::OK).then_some(()) }
    })
    .await;
    let recovered_after = started.elapsed();
    let before = created();
    eventually("purchases succeed again", WAIT, || async {
        (created() >= before + 5).then_some(())
    })
    .await;
    load_stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    // The stream opened before the outage carries changes again once the change listener
    // has reconnected: a message announcing a purchase made after the recovery.
    let deadline = Instant::now() + WAIT;
    loop {
        let available = api.event(&event_id).await["availableTickets"]
            .as_i64()
            .unwrap();
        let (status, body, _) =
            answered(api.purchase_request(&event_id, 2, &new_fingerprint())).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let seen = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                let message = stream.next(WAIT).await.expect("the stream stays open");
                if message.remaining() == available - 2
                    && message.last_type() == Some("ticket_allocated")
                {
                    return;
                }
            }
        })
        .await;
        if seen.is_ok() {
            break;
        }
        // The listener reconnects once a second: not back yet, try again.
        assert!(
            Instant::now() < deadline,
            "the stream saw no change after the recovery"
        );
    }

    let answers = answers.lock().unwrap().clone();
    for (status, body, retry_after, took) in &answers {
        assert!(
            *took < Duration::from_secs(10),
            "an answer took {took:?}: {status} {body}"
        );
        match *status {
            StatusCode::CREATED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["code"], "SERVICE_UNAVAILABLE", "{body}");
                assert_eq!(
                    retry_after.as_deref(),
                    Some("1"),
                    "a 503 carries Retry-After: 1: {body}"
                );
            }
            other => panic!("during the outage a purchase got {other}: {body}"),
        }
    }
    app.assert_balanced(&event_id).await;
    eprintln!(
        "database restart: {} answers ({} × 201, {} × 503), ready {recovered_after:?} after the restart",
        answers.len(),
        answers
            .iter()
            .filter(|a| a.0 == StatusCode::CREATED)
            .count(),
        answers
            .iter()
            .filter(|a| a.0 == StatusCode::SERVICE_UNAVAILABLE)
            .count(),
    );
    drop(stream);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_database_never_oversell_and_expire_each_hold_once() {
    // Little stock for the demand: it sells out, and lapsed holds are sold again and again.
    const TOTAL: i64 = 120;
    let options = fresh_database().await;
    let url = database_url(&options);
    let pool = PgPool::connect_with(options.clone()).await.unwrap();
    // One-second holds and 50 ms sweeps on every instance: the three sweepers race for the
    // same lapsed holds all through the run.
    let flags = ["--hold-seconds", "1", "--sweep-interval-ms", "50"];
    let (a, b, c) = tokio::join!(
        ServerProcess::start(&url, &flags),
        ServerProcess::start(&url, &flags),
        ServerProcess::start(&url, &flags),
    );
    let servers = [a, b, c];
    let instances: Vec<Api> = servers.iter().map(|s| Api::clone(s)).collect();
    let event_id = id_of(&instances[0].create_event("Scale-out", TOTAL, None).await);

    // A stream on each instance sees a purchase made on the next one.
    for (i, instance) in instances.iter().enumerate() {
        let mut stream = SseReader::connect(instance, &format!("/events/{event_id}/stream")).await;
        stream.next(WAIT).await.expect("snapshot");
        let other = &instances[(i + 1) % instances.len()];
        let (status, body, _) =
            answered(other.purchase_request(&event_id, 2, &new_fingerprint())).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        stream
            .until(WAIT, |m| m.last_type() == Some("ticket_allocated"))
            .await;
    }

    // Buyers spread over the three, paying every fourth hold on another instance.
    let log = Arc::new(StormLog::default());
    let buyer = Buyer {
        instances: Arc::new(instances.clone()),
        event_id: event_id.clone(),
        log: log.clone(),
        pay_every: Some(4),
        stop_on_transport_error: false,
        stop_when_sold_out: false,
        max_requests: 80,
        pause: Duration::from_millis(25),
    };
    let mut watcher =
        SseReader::connect(&instances[2], &format!("/events/{event_id}/stream")).await;
    watcher.next(WAIT).await.expect("snapshot");
    let run = tokio::spawn(storm(buyer, 24, Duration::from_secs(60)));
    // Meanwhile, never more held and sold than exists, and the counts always match the rows
    // (one statement: one snapshot of both).
    let mut samples = 0;
    while !run.is_finished() {
        let (total, available, reserved, purchased, live, sold): (i32, i32, i32, i32, i64, i64) =
            sqlx::query_as(
                "SELECT e.total_tickets, e.available_tickets, e.reserved_tickets, e.purchased_tickets, \
                   COALESCE((SELECT sum(quantity) FROM ticket_allocations a WHERE a.event_id = e.id \
                             AND a.status IN ('reserved', 'payment_pending')), 0)::bigint, \
                   COALESCE((SELECT sum(quantity) FROM ticket_allocations a WHERE a.event_id = e.id \
                             AND a.status = 'purchased'), 0)::bigint \
                 FROM events e WHERE e.id = $1",
            )
            .bind(Uuid::parse_str(&event_id).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(
            live + sold <= i64::from(total),
            "oversold: {live} held + {sold} sold"
        );
        assert_eq!(
            (i64::from(reserved), i64::from(purchased)),
            (live, sold),
            "counts vs rows"
        );
        assert_eq!(available + reserved + purchased, total);
        samples += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.await.unwrap();
    assert!(samples > 0);
    log.assert_buyers_overlapped();

    // Every hold lapses within a second; then only the paid tickets are gone.
    eventually("every unpaid hold expired", WAIT, || {
        let pool = pool.clone();
        let event_id = event_id.clone();
        async move {
            let counts = tickets_by_status(&pool, &event_id).await;
            (!counts.contains_key("reserved") && !counts.contains_key("payment_pending"))
                .then_some(())
        }
    })
    .await;
    let granted = log.granted();
    assert_promises_kept(
        &pool,
        &instances[1],
        &event_id,
        &granted,
        &["expired", "purchased"],
    )
    .await;
    let counts = tickets_by_status(&pool, &event_id).await;
    let purchased = counts.get("purchased").copied().unwrap_or(0);
    let event = instances[0].event(&event_id).await;
    assert_counts_match_rows(&pool, &event).await;
    assert_eq!(event["reservedTickets"], 0, "{event}");
    assert_eq!(
        event["availableTickets"].as_i64(),
        Some(TOTAL - purchased),
        "every expired hold came back exactly once: {event}"
    );
    let paid: i64 = granted.iter().filter(|g| g.paid).map(|g| g.quantity).sum();
    assert_eq!(purchased, paid, "sold exactly what was paid for");
    assert!(paid > 0, "some holds were paid for");

    // Exactly once, counted: the sweepers' expiries add up to the expired rows.
    let expired_rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ticket_allocations WHERE event_id = $1 AND status = 'expired'",
    )
    .bind(Uuid::parse_str(&event_id).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut expired_by = Vec::new();
    for server in &servers {
        expired_by.push(server.counter("boxoffice_holds_expired_total").await);
    }
    assert_eq!(
        expired_by.iter().sum::<u64>(),
        expired_rows as u64,
        "holds expired per instance {expired_by:?} vs expired rows"
    );
    assert!(expired_rows > 0);

    // The stream on the third instance followed all three to the final state.
    watcher
        .until(WAIT, |m| m.remaining() == TOTAL - purchased)
        .await;

    for ((action, status, code), count) in log.answers() {
        assert!(
            matches!(
                (action, status, code.as_str()),
                ("purchase", 201, "")
                    | ("purchase", 409, "TICKETS_SOLD_OUT" | "INSUFFICIENT_TICKETS")
                    | ("pay", 200, "")
                    | ("pay", 410, "RESERVATION_EXPIRED")
            ),
            "{count} × {action} answered {status} {code}"
        );
    }
    assert_eq!(log.transport_errors.load(Ordering::Relaxed), 0);
    eprintln!(
        "scale-out: {} holds granted, {paid} tickets paid, {expired_rows} holds expired by \
         instance {expired_by:?}, {samples} invariant samples; answers {:?}",
        granted.len(),
        log.answers()
    );
}

/// Sets or clears `default_transaction_read_only` on `database` and ends every session on
/// it, so the app's pools reconnect under the new default (a hot standby, or a primary still
/// in recovery, behind a proxy that sent writes there), then reads the event until the app
/// answers from fresh sessions.
async fn make_read_only(app: &crate::helpers::TestApp, database: &str, on: bool, event_id: &str) {
    let mut admin = crate::helpers::admin_connection().await;
    let setting = if on {
        "SET default_transaction_read_only = on"
    } else {
        "RESET default_transaction_read_only"
    };
    let statement = format!("ALTER DATABASE \"{database}\" {setting}");
    sqlx::query(sqlx::AssertSqlSafe(statement))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(database)
    .execute(&mut admin)
    .await
    .unwrap();
    eventually("reads from fresh sessions", WAIT, || async {
        let reads =
            futures_util::future::join_all((0..16).map(|_| {
                app.send(app.request(reqwest::Method::GET, &format!("/events/{event_id}")))
            }))
            .await;
        reads
            .iter()
            .all(|(status, _)| *status == StatusCode::OK)
            .then_some(())
    })
    .await;
}

/// Writes refused as a read-only transaction (SQLSTATE 25006, what a failover trial saw when
/// a proxy sent writes to a primary still in recovery) tell the client to retry, 503 with
/// `Retry-After`, on every write path, and change nothing; once the database takes writes
/// again, so does the app.
#[tokio::test]
async fn writes_refused_as_read_only_answer_503_with_retry_after_and_change_nothing() {
    let options = fresh_database().await;
    let database = options.get_database().unwrap().to_owned();
    let app = spawn_app_on(&options, &[]).await;
    let event = app.create_event("Read only", 10, None).await;
    let event_id = id_of(&event);
    let holder = new_fingerprint();
    let (status, held) = app.purchase(&event_id, 2, &holder).await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    let held = id_of(&held);
    let (status, other) = app.purchase(&event_id, 1, &holder).await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    let other = id_of(&other);

    make_read_only(&app, &database, true, &event_id).await;
    let writes = [
        (
            "purchase",
            app.purchase_request(&event_id, 1, &new_fingerprint()),
        ),
        ("payment", app.pay_request(&held, &holder, None)),
        (
            "cancel",
            app.request(
                reqwest::Method::DELETE,
                &format!("/tickets/{other}/payment"),
            )
            .header("X-Device-Fingerprint", &holder),
        ),
        (
            "event",
            app.request(reqwest::Method::POST, "/events")
                .json(&serde_json::json!({
                "name": "Not now", "date": "2027-06-01T19:00:00Z", "totalTickets": 5})),
        ),
    ];
    for (what, request) in writes {
        let (status, body, retry) = exchange(request).await.expect("an answer");
        assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
        );
        assert!(retry.is_some(), "{what}: 503 without Retry-After");
    }
    let tickets = tickets_by_status(&app.pool, &event_id).await;
    make_read_only(&app, &database, false, &event_id).await;
    assert_eq!(tickets_by_status(&app.pool, &event_id).await, tickets);
    let shown = app.event(&event_id).await;
    assert_eq!(shown["reservedTickets"], 3, "nothing moved: {shown}");
    assert_counts_match_rows(&app.pool, &shown).await;

    let (status, body) = app.purchase(&event_id, 1, &new_fingerprint()).await;
    assert_eq!(status, StatusCode::CREATED, "writes again: {body}");
    let (status, body) = app.pay(&held, &holder, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A database that refuses every write (here: read-only, as a full disk or a standby refuses
/// them) answers 503 to every sale. The instance's log names the cause, the server's message
/// and SQLSTATE, which the client is not told, but at most once a second however many
/// requests fail, counting the ones it leaves out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_refuses_writes_is_logged_with_its_cause_once_a_second() {
    let options = fresh_database().await;
    let url = database_url(&options);
    let database = options.get_database().unwrap().to_owned();
    let server = ServerProcess::start(&url, &[]).await;
    let event_id = id_of(&server.create_event("Read-only", 100, None).await);

    set_read_only(&database, true).await;
    let started = Instant::now();
    let mut refused = 0;
    for _ in 0..60 {
        let (status, body) = server.purchase(&event_id, 1, &new_fingerprint()).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_error(
                status,
                &body,
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
            );
            assert!(!body.to_string().contains("read-only"), "{body}");
            refused += 1;
        }
    }
    let seconds = started.elapsed().as_secs() + 1;
    assert!(refused >= 50, "{refused} of 60 purchases refused");
    let log = server.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("database refused the statement"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|line| line.contains("25006") && line.contains("read-only")),
        "{log}"
    );
    assert!(
        !lines.is_empty() && lines.len() as u64 <= seconds + 1,
        "{} lines in {seconds} s:\n{log}",
        lines.len()
    );

    // Writable again: the next sale goes through.
    set_read_only(&database, false).await;
    eventually("a sale once the database takes writes", WAIT, || {
        let server = Api::clone(&server);
        let event_id = event_id.clone();
        async move {
            let (status, _) = server.purchase(&event_id, 1, &new_fingerprint()).await;
            (status == StatusCode::CREATED).then_some(())
        }
    })
    .await;
}

/// Makes the sessions opened on `database` from now on read-only (or writable again), and
/// closes every session on it, so that its users open new ones.
async fn set_read_only(database: &str, on: bool) {
    let mut admin = admin_connection().await;
    let setting = if on {
        "SET default_transaction_read_only = on"
    } else {
        "RESET default_transaction_read_only"
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{database}\" {setting}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(database)
        .execute(&mut admin)
        .await
        .unwrap();
}

/// The change listener's connection ended by the database (a restart, a failover, an
/// administrator) is logged as operations.md says, `lost the change listener; reconnecting`,
/// and the listener comes back. Red before: sqlx reports the end as no notification, and that
/// branch reconnected without a word.
#[tokio::test]
async fn a_dropped_change_listener_is_logged() {
    let options = fresh_database().await;
    let database = options.get_database().unwrap().to_owned();
    let server = ServerProcess::start(&database_url(&options), &[]).await;
    let first = eventually("the server to listen", WAIT, || listener_pid(&database)).await;
    let mut admin = admin_connection().await;
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(terminated);
    eventually("the listener to come back", WAIT, || async {
        listener_pid(&database).await.filter(|pid| *pid != first)
    })
    .await;
    let log = server.log_text();
    assert!(
        log.contains("lost the change listener; reconnecting"),
        "{log}"
    );
}

/// The backend of the `LISTEN` connection of the server on `database`, if it has one.
async fn listener_pid(database: &str) -> Option<i32> {
    let mut admin = admin_connection().await;
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
    )
    .bind(database)
    .fetch_optional(&mut admin)
    .await
    .unwrap()
}

/// The sweeper meeting a database that refuses writes stops its round at the first refusal:
/// one line a round, not one for each event with lapsed holds (20 events at a round every
/// 100 ms logged 200 ERROR lines a second), and the holds are expired once writes are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweeper_facing_a_read_only_database_logs_a_line_a_round_not_an_event() {
    let options = fresh_database().await;
    let url = database_url(&options);
    let database = options.get_database().unwrap().to_owned();
    let server =
        ServerProcess::start(&url, &["--hold-seconds", "2", "--sweep-interval-ms", "100"]).await;
    let mut events = Vec::new();
    for i in 0..20 {
        let event_id = id_of(&server.create_event(&format!("Lapsing {i}"), 10, None).await);
        let (status, hold) = server.purchase(&event_id, 1, &new_fingerprint()).await;
        assert_eq!(status, StatusCode::CREATED, "{hold}");
        events.push(event_id);
    }
    set_read_only(&database, true).await;
    // The holds lapse; for 2 s every round meets all twenty events and cannot expire them.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = server.log_text();
    let per_event = log
        .lines()
        .filter(|line| line.contains("could not expire the event's lapsed holds"))
        .count();
    assert_eq!(per_event, 0, "{log}");
    assert!(log.contains("sweep failed; retrying next round"), "{log}");

    set_read_only(&database, false).await;
    for event_id in &events {
        let event_id = event_id.clone();
        let server = Api::clone(&server);
        eventually("the lapsed hold expired", WAIT, move || {
            let (server, event_id) = (server.clone(), event_id.clone());
            async move { (server.counts(&event_id).await == (10, 0, 0)).then_some(()) }
        })
        .await;
    }
}
