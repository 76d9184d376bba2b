//! Faults: a server killed with SIGKILL in the middle of a purchase storm, a database that
//! stops and comes back under load, three server processes on one database with racing
//! sweepers, and the statement and request timeouts that keep every wait bounded.
//!
//! Every process a test starts is owned by a guard that kills it on drop, so a failing
//! assertion leaves nothing running; temporary directories are removed the same way.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxoffice::embedded_pg::EmbeddedPostgres;
use futures_util::StreamExt;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{
    SseReader, TestApp, assert_counts_match_rows, assert_error, database_url, eventually,
    fresh_database, new_fingerprint, spawn_app_on, spawn_app_with,
};

/// Longest any single request may take in these tests: far above every server-side bound
/// (pool acquire 5 s), so a request that reaches it is a hang, not a slow answer.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);
/// How long a stream or a recovery may take to show what a test waits for.
const WAIT: Duration = Duration::from_secs(20);

fn client() -> Client {
    Client::builder()
        .timeout(REQUEST_LIMIT)
        .pool_max_idle_per_host(64)
        .build()
        .expect("HTTP client builds")
}

/// Sends a request and returns its status, JSON body (Null when not JSON) and whether it
/// carried `Retry-After`; `None` when it never got an answer (connection refused or reset).
async fn exchange(request: RequestBuilder) -> Option<(StatusCode, Value, bool)> {
    let response = request.send().await.ok()?;
    let status = response.status();
    let retry_after = response.headers().contains_key("retry-after");
    let body = response.json().await.unwrap_or(Value::Null);
    Some((status, body, retry_after))
}

/// Like [`exchange`], for requests that must be answered.
async fn answered(request: RequestBuilder) -> (StatusCode, Value, bool) {
    exchange(request)
        .await
        .expect("the server answers (no transport error)")
}

async fn create_event(client: &Client, base: &str, name: &str, total: i64) -> String {
    let (status, body, _) = answered(client.post(format!("{base}/events")).json(&json!({
        "name": format!("{name} {}", Uuid::new_v4().simple()),
        "date": "2027-09-01T19:00:00Z",
        "totalTickets": total,
    })))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().expect("event id").to_owned()
}

fn purchase(
    client: &Client,
    base: &str,
    event_id: &str,
    quantity: i64,
    buyer: &str,
) -> RequestBuilder {
    client
        .post(format!("{base}/events/{event_id}/tickets"))
        .header("X-Device-Fingerprint", buyer)
        .json(&json!({ "quantity": quantity }))
}

fn pay(client: &Client, base: &str, allocation_id: &str, buyer: &str) -> RequestBuilder {
    client
        .post(format!("{base}/tickets/{allocation_id}/payment"))
        .header("X-Device-Fingerprint", buyer)
        .json(&json!({ "paymentToken": "tok_visa" }))
}

async fn event_json(client: &Client, base: &str, event_id: &str) -> Value {
    let (status, body, _) = answered(client.get(format!("{base}/events/{event_id}"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// A TCP port nothing listens on right now (another process may take it before the server
/// binds it: [`ServerProcess::start`] then tries another).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A `boxoffice serve` process of the real binary on an existing database. Killed with
/// SIGKILL on drop; its log (standard error) is printed when the test is failing.
struct ServerProcess {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<u8>>>,
}

impl ServerProcess {
    /// Starts the binary with rate limits off and `flags`, and waits until `/ready` says 200.
    async fn start(database_url: &str, flags: &[&str]) -> Self {
        for _attempt in 0..5 {
            let port = free_port();
            let mut child = Command::new(env!("CARGO_BIN_EXE_boxoffice"))
                .arg("serve")
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--database-url", database_url])
                .args(["--rate-limit-per-address", "0"])
                .args(["--rate-limit-per-fingerprint", "0"])
                .args(["--db-max-connections", "8"])
                .args(flags)
                .env("RUST_LOG", "warn")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the boxoffice binary starts");
            let log = Arc::new(Mutex::new(Vec::new()));
            let mut stderr = child.stderr.take().expect("piped stderr");
            let sink = log.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buffer[..n]);
                }
            });
            let mut server = Self {
                child,
                base: format!("http://127.0.0.1:{port}"),
                log,
            };
            if server.wait_ready().await {
                return server;
            }
            let log = server.log_text();
            if !log.contains("in use") {
                panic!("boxoffice exited before it was ready; its log:\n{log}");
            }
            // The port was taken meanwhile: try another.
        }
        panic!("no free port for boxoffice after 5 attempts");
    }

    /// True once `/ready` answers 200; false if the process exited first.
    async fn wait_ready(&mut self) -> bool {
        let probe = Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self
                .child
                .try_wait()
                .expect("waiting on boxoffice")
                .is_some()
            {
                return false;
            }
            let ready = probe.get(format!("{}/ready", self.base)).send().await;
            if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "boxoffice not ready within 60 s; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// `kill -9`: no shutdown handler runs, in-flight requests and transactions are cut off.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The value of an unlabelled counter on this instance's `/metrics` (0 when absent: a
    /// counter appears on its first increment).
    async fn counter(&self, client: &Client, name: &str) -> u64 {
        let text = client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0, |value| {
                value
                    .trim()
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("{name} value {value:?}")) as u64
            })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- log of boxoffice at {} ---\n{}",
                self.base,
                self.log_text()
            );
        }
    }
}

/// One allocation a client got a 201 for, and whether it then got a 200 for paying it.
#[derive(Debug, Clone)]
struct Granted {
    id: String,
    buyer: String,
    quantity: i64,
    paid: bool,
}

/// What a storm's buyers saw, shared between them.
#[derive(Default)]
struct StormLog {
    granted: Mutex<Vec<Granted>>,
    /// (action, status, code) → count.
    answers: Mutex<BTreeMap<(&'static str, u16, String), u64>>,
    tickets_granted: AtomicU64,
    transport_errors: AtomicU64,
    in_flight: AtomicUsize,
    stop: AtomicBool,
}

impl StormLog {
    fn record(&self, action: &'static str, status: StatusCode, body: &Value) {
        let code = body["code"].as_str().unwrap_or_default().to_owned();
        *self
            .answers
            .lock()
            .unwrap()
            .entry((action, status.as_u16(), code))
            .or_default() += 1;
    }

    fn granted(&self) -> Vec<Granted> {
        self.granted.lock().unwrap().clone()
    }

    fn answers(&self) -> BTreeMap<(&'static str, u16, String), u64> {
        self.answers.lock().unwrap().clone()
    }
}

/// How one storm buyer behaves.
#[derive(Clone)]
struct Buyer {
    client: Client,
    /// Instances to spread requests over.
    bases: Arc<Vec<String>>,
    event_id: String,
    log: Arc<StormLog>,
    /// Pay for every n-th hold (on the next instance along), or never.
    pay_every: Option<u64>,
    /// Stop at the first request that gets no answer (the server is gone).
    stop_on_transport_error: bool,
    /// Stop at the first `TICKETS_SOLD_OUT` (with expiring holds, stock comes back).
    stop_when_sold_out: bool,
    /// Most requests this buyer sends.
    max_requests: u64,
    /// Pause after each purchase request, to spread a storm over time.
    pause: Duration,
}

impl Buyer {
    /// Buys until sold out, stopped, out of requests, or (if so configured) cut off.
    async fn run(self, worker: usize) {
        for n in 0..self.max_requests {
            if self.log.stop.load(Ordering::Relaxed) {
                return;
            }
            let base = &self.bases[(worker + n as usize) % self.bases.len()];
            let buyer = new_fingerprint();
            let quantity = 1 + (worker as i64 + n as i64) % 2;
            self.log.in_flight.fetch_add(1, Ordering::SeqCst);
            let answer = exchange(purchase(
                &self.client,
                base,
                &self.event_id,
                quantity,
                &buyer,
            ))
            .await;
            self.log.in_flight.fetch_sub(1, Ordering::SeqCst);
            let Some((status, body, _)) = answer else {
                self.log.transport_errors.fetch_add(1, Ordering::Relaxed);
                if self.stop_on_transport_error {
                    return;
                }
                continue;
            };
            self.log.record("purchase", status, &body);
            tokio::time::sleep(self.pause).await;
            if self.stop_when_sold_out && body["code"] == "TICKETS_SOLD_OUT" {
                return;
            }
            if status != StatusCode::CREATED {
                continue;
            }
            let id = body["id"].as_str().expect("allocation id").to_owned();
            assert_eq!(body["quantity"].as_i64(), Some(quantity), "{body}");
            // The 201 is a promise from here on, whatever happens to the payment.
            let index = {
                let mut granted = self.log.granted.lock().unwrap();
                granted.push(Granted {
                    id: id.clone(),
                    buyer: buyer.clone(),
                    quantity,
                    paid: false,
                });
                granted.len() - 1
            };
            self.log
                .tickets_granted
                .fetch_add(quantity as u64, Ordering::Relaxed);
            if self.pay_every.is_some_and(|every| n % every == 0) {
                let other = &self.bases[(worker + n as usize + 1) % self.bases.len()];
                self.log.in_flight.fetch_add(1, Ordering::SeqCst);
                let answer = exchange(pay(&self.client, other, &id, &buyer)).await;
                self.log.in_flight.fetch_sub(1, Ordering::SeqCst);
                match answer {
                    Some((status, body, _)) => {
                        self.log.record("pay", status, &body);
                        if status == StatusCode::OK {
                            self.log.granted.lock().unwrap()[index].paid = true;
                        }
                    }
                    None => {
                        self.log.transport_errors.fetch_add(1, Ordering::Relaxed);
                        if self.stop_on_transport_error {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Runs `workers` buyers to completion (bounded by `limit`).
async fn storm(buyer: Buyer, workers: usize, limit: Duration) {
    let tasks: Vec<_> = (0..workers)
        .map(|worker| tokio::spawn(buyer.clone().run(worker)))
        .collect();
    tokio::time::timeout(limit, async {
        for task in tasks {
            task.await.expect("buyer task");
        }
    })
    .await
    .expect("the storm ends within its time limit");
}

/// Every granted allocation is stored as granted (event, quantity, a live or sold status,
/// `purchased` if its payment got a 200) and readable by its buyer over HTTP at `base`.
async fn assert_promises_kept(
    pool: &PgPool,
    client: &Client,
    base: &str,
    event_id: &str,
    granted: &[Granted],
    allowed_statuses: &[&str],
) {
    let event = Uuid::parse_str(event_id).unwrap();
    for g in granted {
        let row: Option<(Uuid, i32, String)> = sqlx::query_as(
            "SELECT event_id, quantity, status FROM ticket_allocations WHERE id = $1",
        )
        .bind(Uuid::parse_str(&g.id).unwrap())
        .fetch_optional(pool)
        .await
        .unwrap();
        let (stored_event, quantity, status) =
            row.unwrap_or_else(|| panic!("allocation {g:?} got a 201 but is not stored"));
        assert_eq!(stored_event, event, "{g:?}");
        assert_eq!(i64::from(quantity), g.quantity, "{g:?}");
        assert!(
            allowed_statuses.contains(&status.as_str()),
            "{g:?} is {status}"
        );
        if g.paid {
            assert_eq!(status, "purchased", "{g:?} was paid (200)");
        }
    }
    let reads = futures_util::stream::iter(granted.iter().cloned())
        .map(|g| {
            let request = client
                .get(format!("{base}/tickets/{}", g.id))
                .header("X-Device-Fingerprint", &g.buyer);
            async move { (answered(request).await, g) }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    for ((status, body, _), g) in reads {
        assert_eq!(status, StatusCode::OK, "{g:?}: {body}");
        assert_eq!(body["eventId"], event_id, "{g:?}: {body}");
        assert_eq!(body["quantity"].as_i64(), Some(g.quantity), "{g:?}: {body}");
    }
}

/// Tickets in the event's allocation rows by status.
async fn tickets_by_status(pool: &PgPool, event_id: &str) -> BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, sum(quantity)::bigint FROM ticket_allocations \
         WHERE event_id = $1 GROUP BY status",
    )
    .bind(Uuid::parse_str(event_id).unwrap())
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_storm_loses_no_promised_allocation_and_sells_nothing_twice() {
    const TOTAL: i64 = 400;
    let options = fresh_database().await;
    let url = database_url(&options);
    let pool = PgPool::connect_with(options.clone()).await.unwrap();
    let client = client();

    let mut first = ServerProcess::start(&url, &[]).await;
    let event_id = create_event(&client, &first.base, "Crash", TOTAL).await;
    let log = Arc::new(StormLog::default());
    let buyer = Buyer {
        client: client.clone(),
        bases: Arc::new(vec![first.base.clone()]),
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
        bases: Arc::new(vec![second.base.clone()]),
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
        &client,
        &second.base,
        &event_id,
        &granted,
        &["reserved", "purchased"],
    )
    .await;
    let event = event_json(&client, &second.base, &event_id).await;
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
    for ((action, status, code), count) in log.answers() {
        assert!(
            matches!(
                (action, status, code.as_str()),
                ("purchase", 201, "")
                    | ("purchase", 409, "TICKETS_SOLD_OUT" | "INSUFFICIENT_TICKETS")
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

/// A PostgreSQL cluster of the test's own under a temporary directory, which it can stop and
/// start again. Stopped and removed on drop.
struct DedicatedCluster {
    dir: PathBuf,
    server: Option<EmbeddedPostgres>,
}

/// Throwaway data: durability off for speed.
const CLUSTER_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
];

impl DedicatedCluster {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "bo-pgrestart-{}",
            &Uuid::new_v4().simple().to_string()[..8]
        ));
        let mut cluster = Self { dir, server: None };
        cluster.restart().await;
        cluster
    }

    /// Starts the server on the cluster's directory (creating the cluster the first time).
    async fn restart(&mut self) {
        assert!(self.server.is_none(), "already running");
        let dir = self.dir.clone();
        let server =
            tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir, CLUSTER_SETTINGS))
                .await
                .unwrap()
                .expect("the dedicated PostgreSQL starts");
        self.server = Some(server);
    }

    /// Fast shutdown: every session is ended, the socket goes away.
    async fn stop(&mut self) {
        let mut server = self.server.take().expect("running");
        tokio::task::spawn_blocking(move || server.stop())
            .await
            .unwrap()
            .expect("the dedicated PostgreSQL stops");
    }

    async fn create_database(&self, name: &str) -> sqlx::postgres::PgConnectOptions {
        let server = self.server.as_ref().expect("running");
        boxoffice::db::create_database_if_missing(&server.connect_options("postgres"), name)
            .await
            .expect("database created");
        server.connect_options(name)
    }
}

impl Drop for DedicatedCluster {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn remaining(message: &crate::helpers::SseMessage) -> i64 {
    message.data["statistics"]["remainingTickets"]
        .as_i64()
        .expect("remainingTickets")
}

fn last_type(message: &crate::helpers::SseMessage) -> Option<&str> {
    message.data["lastEvent"]["type"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restart_gives_503_with_retry_after_then_recovers_without_a_restart() {
    let mut cluster = DedicatedCluster::start().await;
    let options = cluster.create_database("boxoffice").await;
    let app = spawn_app_on(&options, &[]).await;
    let client = client();
    let base = app.address.clone();
    let event_id = create_event(&client, &base, "Restart", 100_000).await;
    let mut stream =
        SseReader::connect_url(&client, &format!("{base}/events/{event_id}/stream")).await;
    assert_eq!(
        remaining(&stream.next(WAIT).await.expect("snapshot")),
        100_000
    );

    // Buyers keep coming through the outage; every answer is timed.
    let load_stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<(StatusCode, Value, bool, Duration)>::new()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, base, event_id) = (client.clone(), base.clone(), event_id.clone());
        let (load_stop, answers) = (load_stop.clone(), answers.clone());
        load.push(tokio::spawn(async move {
            while !load_stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let (status, body, retry_after) =
                    answered(purchase(&client, &base, &event_id, 1, &new_fingerprint())).await;
                answers
                    .lock()
                    .unwrap()
                    .push((status, body, retry_after, started.elapsed()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
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
    for path in ["/ready".to_owned(), format!("/events/{event_id}")] {
        let started = Instant::now();
        let (status, body, retry_after) = answered(client.get(format!("{base}{path}"))).await;
        assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
        );
        assert!(retry_after, "{path}: 503 without Retry-After");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    // Liveness does not depend on the database: the process is up.
    let (status, body, _) = answered(client.get(format!("{base}/health"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body, retry_after) =
        answered(purchase(&client, &base, &event_id, 1, &new_fingerprint())).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    assert!(retry_after);
    let outage_answers = unavailable();
    eventually("buyers answered 503 during the outage", WAIT, || async {
        (unavailable() >= outage_answers + 40).then_some(())
    })
    .await;

    // The database returns; the same server process finds it again by itself.
    cluster.restart().await;
    let started = Instant::now();
    eventually("/ready is 200 again", WAIT, || {
        let request = client.get(format!("{base}/ready"));
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
    for task in load {
        task.await.unwrap();
    }

    // The stream opened before the outage carries changes again once the change listener
    // has reconnected: a message announcing a purchase made after the recovery.
    let deadline = Instant::now() + WAIT;
    loop {
        let available = event_json(&client, &base, &event_id).await["availableTickets"]
            .as_i64()
            .unwrap();
        let (status, body, _) =
            answered(purchase(&client, &base, &event_id, 2, &new_fingerprint())).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let seen = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                let message = stream.next(WAIT).await.expect("the stream stays open");
                if remaining(&message) == available - 2
                    && last_type(&message) == Some("ticket_allocated")
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
                assert!(retry_after, "503 without Retry-After: {body}");
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
    let client = client();
    // One-second holds and 50 ms sweeps on every instance: the three sweepers race for the
    // same lapsed holds all through the run.
    let flags = ["--hold-seconds", "1", "--sweep-interval-ms", "50"];
    let (a, b, c) = tokio::join!(
        ServerProcess::start(&url, &flags),
        ServerProcess::start(&url, &flags),
        ServerProcess::start(&url, &flags),
    );
    let servers = [a, b, c];
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let event_id = create_event(&client, &bases[0], "Scale-out", TOTAL).await;

    // A stream on each instance sees a purchase made on the next one.
    for (i, base) in bases.iter().enumerate() {
        let mut stream =
            SseReader::connect_url(&client, &format!("{base}/events/{event_id}/stream")).await;
        stream.next(WAIT).await.expect("snapshot");
        let other = &bases[(i + 1) % bases.len()];
        let (status, body, _) =
            answered(purchase(&client, other, &event_id, 2, &new_fingerprint())).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        stream
            .until(WAIT, |m| last_type(m) == Some("ticket_allocated"))
            .await;
    }

    // Buyers spread over the three, paying every fourth hold on another instance.
    let log = Arc::new(StormLog::default());
    let buyer = Buyer {
        client: client.clone(),
        bases: Arc::new(bases.clone()),
        event_id: event_id.clone(),
        log: log.clone(),
        pay_every: Some(4),
        stop_on_transport_error: false,
        stop_when_sold_out: false,
        max_requests: 80,
        pause: Duration::from_millis(25),
    };
    let mut watcher =
        SseReader::connect_url(&client, &format!("{}/events/{event_id}/stream", bases[2])).await;
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
        &client,
        &bases[1],
        &event_id,
        &granted,
        &["expired", "purchased"],
    )
    .await;
    let counts = tickets_by_status(&pool, &event_id).await;
    let purchased = counts.get("purchased").copied().unwrap_or(0);
    let event = event_json(&client, &bases[0], &event_id).await;
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
        expired_by.push(
            server
                .counter(&client, "boxoffice_holds_expired_total")
                .await,
        );
    }
    assert_eq!(
        expired_by.iter().sum::<u64>(),
        expired_rows as u64,
        "holds expired per instance {expired_by:?} vs expired rows"
    );
    assert!(expired_rows > 0);

    // The stream on the third instance followed all three to the final state.
    watcher
        .until(WAIT, |m| remaining(m) == TOTAL - purchased)
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

/// Holds the event's row lock in a transaction of its own until dropped or rolled back.
async fn lock_event(pool: &PgPool, event_id: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM events WHERE id = $1 FOR UPDATE")
        .bind(Uuid::parse_str(event_id).unwrap())
        .execute(&mut *blocker)
        .await
        .unwrap();
    blocker
}

/// A purchase sent while another transaction holds the event's row lock, which is released
/// once the answer is in. Asserts the answer is a 503; returns whether it carried Retry-After
/// and how long it took.
async fn purchase_behind_a_held_lock(
    app: &TestApp,
    event_id: &str,
    fingerprint: &str,
) -> (bool, Duration) {
    let blocker = lock_event(&app.pool, event_id).await;
    let started = Instant::now();
    let (status, body, retry_after) = answered(purchase(
        &app.client,
        &app.address,
        event_id,
        1,
        fingerprint,
    ))
    .await;
    let took = started.elapsed();
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    blocker.rollback().await.unwrap();
    (retry_after, took)
}

#[tokio::test]
async fn a_statement_over_its_timeout_gives_503_instead_of_waiting() {
    // The lock timeout is far away: only the statement timeout can end the wait early.
    let app = spawn_app_with(&[
        "--statement-timeout-ms",
        "500",
        "--lock-timeout-ms",
        "60000",
        "--purchase-mode",
        "per-request",
    ])
    .await;
    let event = app.create_event("Slow statement", 10, None).await;
    let id = event["id"].as_str().unwrap();
    let (retry_after, took) = purchase_behind_a_held_lock(&app, id, "patient").await;
    assert!(retry_after);
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    // The cancelled statement's transaction left nothing behind.
    let event = app.assert_balanced(id).await;
    assert_eq!(event["availableTickets"], 10, "{event}");
    assert_eq!(app.purchase(id, 1, "patient").await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn a_request_over_its_timeout_gives_503_instead_of_waiting() {
    for mode in ["per-request", "batched"] {
        let app = spawn_app_with(&[
            "--request-timeout-ms",
            "500",
            "--statement-timeout-ms",
            "60000",
            "--lock-timeout-ms",
            "60000",
            "--purchase-mode",
            mode,
        ])
        .await;
        let event = app.create_event("Slow request", 10, None).await;
        let id = event["id"].as_str().unwrap();
        let (retry_after, took) = purchase_behind_a_held_lock(&app, id, "impatient").await;
        assert!(retry_after, "{mode}");
        assert!(
            took < Duration::from_secs(10),
            "{mode}: answered after {took:?}"
        );
        // The next purchase locks the same row, or (batched) queues behind the batch the
        // abandoned request joined: once it is answered, the abandoned work has settled.
        assert_eq!(
            app.purchase(id, 1, "impatient").await.0,
            StatusCode::CREATED
        );
        let event = app.assert_balanced(id).await;
        let held = 10 - event["availableTickets"].as_i64().unwrap();
        if mode == "per-request" {
            // Its transaction was dropped with the request and rolled back.
            assert_eq!(held, 1, "a timed-out purchase had an effect: {event}");
        } else {
            // The batch runs on without the request that left it and may still commit its
            // hold: a 503 is not a refusal, which is why clients retry with an
            // Idempotency-Key.
            assert!((1..=2).contains(&held), "{event}");
        }
        app.stop().await;
    }
}
