//! The Boxoffice load-test tool: creates (or uses) an event, drives concurrent keep-alive
//! clients at the purchase endpoint, optionally pays for each hold, then reads everything
//! back and verifies that nothing was oversold and that every 201 a client saw exists.
//!
//! Two levels: [`run`] is the whole tool (the CLI's), and [`drive`] is its storm alone, against
//! an existing event, reporting every request live to an [`Observer`] that can stop a client
//! or the whole run. The fault tests drive their storms with [`drive`]: they kill servers
//! mid-storm, so they need to see each answer (and each request in flight) as it happens,
//! not only the totals at the end.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use reqwest::{Client, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};

/// What to run.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Base URL of a Boxoffice instance; repeat to spread clients over several instances.
    #[arg(long = "url", default_value = "http://127.0.0.1:8080")]
    pub urls: Vec<String>,
    /// Use this event instead of creating one.
    #[arg(long)]
    pub event_id: Option<String>,
    /// Tickets of the event to create.
    #[arg(long, default_value_t = 1_000_000)]
    pub tickets: i64,
    /// Per-buyer cap of the event to create.
    #[arg(long)]
    pub max_per_fingerprint: Option<i64>,
    /// Concurrent clients (each sends one request at a time over keep-alive).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many purchase requests (default 10,000 when no duration is given).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Tickets per purchase request.
    #[arg(long, default_value_t = 1)]
    pub quantity: i64,
    /// Distinct buyers (fingerprints) to cycle through; default: one per request.
    #[arg(long)]
    pub buyers: Option<u64>,
    /// Pay for every hold with the succeeding test card.
    #[arg(long)]
    pub pay: bool,
    /// Idle live-statistics streams to hold open on the event during the run.
    #[arg(long, default_value_t = 0)]
    pub idle_streams: usize,
    /// Keep the idle streams open this many seconds after the run (to measure them).
    #[arg(long, default_value_t = 0.0)]
    pub hold_streams_seconds: f64,
    /// Time `GET /events/{id}` instead of purchasing (read throughput).
    #[arg(long)]
    pub read_only: bool,
    /// Skip reading every allocation back after the run.
    #[arg(long)]
    pub no_verify: bool,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// What the event and the allocations looked like afterwards.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub total_tickets: i64,
    pub available_tickets: i64,
    pub reserved_tickets: i64,
    pub purchased_tickets: i64,
    /// Tickets in the 201 responses clients saw.
    pub tickets_granted: i64,
    /// Counts below zero, counts that do not add up, or more granted than exist.
    pub oversold: bool,
    pub allocations_checked: u64,
    /// 201s whose allocation could not be read back.
    pub allocations_missing: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub event_id: String,
    pub clients: usize,
    pub elapsed_seconds: f64,
    pub requests: u64,
    pub requests_per_second: f64,
    pub reservations: u64,
    pub reservations_per_second: f64,
    pub payments_succeeded: u64,
    pub transport_errors: u64,
    pub latency_ms: Latency,
    pub statuses: BTreeMap<u16, u64>,
    pub codes: BTreeMap<String, u64>,
    pub verification: Option<Verification>,
}

impl Report {
    /// Zero oversell and every 201 read back.
    pub fn is_sound(&self) -> bool {
        self.verification
            .as_ref()
            .is_none_or(|v| !v.oversold && v.allocations_missing == 0)
    }
}

/// What a storm's clients saw, added up over the run.
#[derive(Debug, Default)]
pub struct Totals {
    /// Latency of every answered purchase (or read) request, in microseconds.
    pub latencies_us: Vec<u64>,
    /// Answers to purchase (or read) requests by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Answers to purchase (or read) requests by error code.
    pub codes: BTreeMap<String, u64>,
    /// Every 201: (allocation id, buyer, quantity granted).
    pub granted: Vec<(String, String, i64)>,
    /// Payments answered 200.
    pub payments_succeeded: u64,
    /// Purchase (or read) requests that got no answer.
    pub transport_errors: u64,
}

impl Totals {
    fn add(&mut self, mut other: Totals) {
        self.latencies_us.append(&mut other.latencies_us);
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.codes {
            *self.codes.entry(k).or_default() += v;
        }
        self.granted.append(&mut other.granted);
        self.payments_succeeded += other.payments_succeeded;
        self.transport_errors += other.transport_errors;
    }
}

/// A storm against an existing event: who sends what, where, and how many times.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Base URLs of the instances, without a trailing slash.
    pub urls: Vec<String>,
    pub event_id: String,
    /// Concurrent clients, each sending one request at a time.
    pub clients: usize,
    /// Purchase (or read) requests in all, shared by the clients.
    pub requests: u64,
    /// No request starts after this instant.
    pub deadline: Option<Instant>,
    /// Tickets asked for by purchase request `n`: `quantities[n % len]`.
    pub quantities: Vec<i64>,
    /// Buyer `k` is the fingerprint `{buyer_prefix}{k}`.
    pub buyer_prefix: String,
    /// Distinct buyers to cycle through; `None`: one per request.
    pub buyers: Option<u64>,
    /// Pay the hold of purchase request `n` when `n % pay_every == 0` (1: every hold).
    pub pay_every: Option<u64>,
    /// Pay on the instance after the one that granted the hold, not on the same one
    /// (a payment must not depend on the instance that made the hold).
    pub pay_on_next_instance: bool,
    /// Client `c` sends request `n` to instance `(c + n) % len` instead of always
    /// `c % len` (every client then meets every instance).
    pub rotate_instances: bool,
    /// Pause of a client after each answered purchase (or read), to spread a storm in time.
    pub pause: Duration,
    /// Send `GET /events/{id}` instead of purchases.
    pub read_only: bool,
    /// The HTTP client to use (its timeouts apply); `None`: a keep-alive client is built.
    pub client: Option<Client>,
}

impl Plan {
    /// The CLI's defaults: 64 clients, 10,000 one-ticket purchases, no payments.
    pub fn new(urls: Vec<String>, event_id: String) -> Self {
        Self {
            urls,
            event_id,
            clients: 64,
            requests: 10_000,
            deadline: None,
            quantities: vec![1],
            buyer_prefix: "load-".into(),
            buyers: None,
            pay_every: None,
            pay_on_next_instance: false,
            rotate_instances: false,
            pause: Duration::ZERO,
            read_only: false,
            client: None,
        }
    }
}

/// The request an [`Outcome`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `POST /events/{id}/tickets`.
    Purchase,
    /// `POST /tickets/{id}/payment` of a hold the storm got.
    Pay,
    /// `GET /events/{id}` (a read-only run).
    Read,
}

impl Action {
    /// The action's name in reports: `purchase`, `pay` or `read`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Purchase => "purchase",
            Action::Pay => "pay",
            Action::Read => "read",
        }
    }
}

/// One request of a storm and its answer, as an [`Observer`] sees it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub action: Action,
    /// The client (0..clients) that sent it.
    pub client: usize,
    /// The number of the purchase (or read) request, shared by the clients; a payment
    /// carries the number of the purchase that got its hold.
    pub request: u64,
    /// Index in [`Plan::urls`] of the instance it went to.
    pub instance: usize,
    /// The buyer's fingerprint.
    pub buyer: String,
    /// Tickets asked for (of the hold, for a payment).
    pub quantity: i64,
    /// `None`: no answer (connection refused or cut, or a timeout).
    pub status: Option<StatusCode>,
    /// The body's `code`, when it has one.
    pub code: Option<String>,
    /// The allocation: the new hold's (201) or the one paid for.
    pub allocation_id: Option<String>,
    /// Tickets in a 201's body.
    pub granted: Option<i64>,
    /// Whether the answer carried `Retry-After`.
    pub retry_after: bool,
    /// The answer's JSON body (Null when none, or not JSON).
    pub body: Value,
    /// From sending to the end of the body.
    pub latency: Duration,
}

impl Outcome {
    /// Whether the server answered at all.
    pub fn answered(&self) -> bool {
        self.status.is_some()
    }
}

/// Who stops when an [`Observer`] says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The client that sent the request sends no more.
    Client,
    /// No client sends another request (those in flight still end and are observed).
    Run,
}

/// Sees every request of a [`drive`] as it happens, from the clients' tasks.
pub trait Observer: Send + Sync {
    /// A request is about to go to instance `instance`; every call is followed by one
    /// [`Observer::observe`] of its outcome, so callers can count requests in flight.
    fn sending(&self, _action: Action, _instance: usize) {}

    /// A request ended; `Break` stops its client or the whole run.
    fn observe(&self, outcome: &Outcome) -> ControlFlow<Stop>;
}

/// No observer: the run goes on to its end.
impl Observer for () {
    fn observe(&self, _: &Outcome) -> ControlFlow<Stop> {
        ControlFlow::Continue(())
    }
}

/// Runs the plan's storm to its end (or until the observer stops it) and adds up what the
/// clients saw. A panic in the observer fails the run.
pub async fn drive(plan: &Plan, observer: Arc<dyn Observer>) -> Result<Totals, String> {
    if plan.urls.is_empty() || plan.clients == 0 || plan.quantities.is_empty() {
        return Err("need at least one URL, one client and one quantity".into());
    }
    let client = match &plan.client {
        Some(client) => client.clone(),
        None => Client::builder()
            .pool_max_idle_per_host(plan.clients)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| e.to_string())?,
    };
    let plan = Arc::new(plan.clone());
    let counter = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..plan.clients {
        let (plan, client, counter, stop, observer) = (
            plan.clone(),
            client.clone(),
            counter.clone(),
            stop.clone(),
            observer.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut local = Totals::default();
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if n >= plan.requests || plan.deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let flow = one_request(&plan, &client, worker, n, &*observer, &mut local).await;
                if let ControlFlow::Break(scope) = flow {
                    if scope == Stop::Run {
                        stop.store(true, Ordering::Relaxed);
                    }
                    break;
                }
            }
            local
        }));
    }
    let mut totals = Totals::default();
    for worker in workers {
        totals.add(worker.await.map_err(|e| e.to_string())?);
    }
    Ok(totals)
}

/// Sends a request; `None` when it got no answer, body included (a body cut off by a dying
/// server is no answer either). A body that is not JSON reads as Null.
async fn exchange(request: reqwest::RequestBuilder) -> Option<(StatusCode, Value, bool)> {
    let response = request.send().await.ok()?;
    let status = response.status();
    let retry_after = response.headers().contains_key("retry-after");
    let bytes = response.bytes().await.ok()?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Some((status, body, retry_after))
}

/// Purchase (or read) request `n` of client `worker`, and the payment of its hold if the
/// plan says so.
async fn one_request(
    plan: &Plan,
    client: &Client,
    worker: usize,
    n: u64,
    observer: &dyn Observer,
    tally: &mut Totals,
) -> ControlFlow<Stop> {
    let instances = plan.urls.len();
    let instance = (worker + if plan.rotate_instances { n as usize } else { 0 }) % instances;
    let base = &plan.urls[instance];
    let event_id = &plan.event_id;
    let buyer = format!(
        "{}{}",
        plan.buyer_prefix,
        plan.buyers.map_or(n, |b| n % b.max(1))
    );
    let quantity = plan.quantities[(n % plan.quantities.len() as u64) as usize];
    let (action, request) = if plan.read_only {
        (
            Action::Read,
            client.get(format!("{base}/events/{event_id}")),
        )
    } else {
        (
            Action::Purchase,
            client
                .post(format!("{base}/events/{event_id}/tickets"))
                .header("X-Device-Fingerprint", &buyer)
                .json(&json!({ "quantity": quantity })),
        )
    };
    observer.sending(action, instance);
    let started = Instant::now();
    let answer = exchange(request).await;
    let mut outcome = Outcome {
        action,
        client: worker,
        request: n,
        instance,
        buyer,
        quantity,
        status: None,
        code: None,
        allocation_id: None,
        granted: None,
        retry_after: false,
        body: Value::Null,
        latency: started.elapsed(),
    };
    let Some((status, body, retry_after)) = answer else {
        tally.transport_errors += 1;
        return observer.observe(&outcome);
    };
    tally.latencies_us.push(outcome.latency.as_micros() as u64);
    *tally.statuses.entry(status.as_u16()).or_default() += 1;
    outcome.status = Some(status);
    outcome.code = body["code"].as_str().map(str::to_owned);
    if let Some(code) = &outcome.code {
        *tally.codes.entry(code.clone()).or_default() += 1;
    }
    let held = status == StatusCode::CREATED && !plan.read_only;
    if held {
        outcome.allocation_id = body["id"].as_str().map(str::to_owned);
        outcome.granted = body["quantity"].as_i64();
    }
    outcome.retry_after = retry_after;
    outcome.body = body;
    let flow = observer.observe(&outcome);
    if !plan.pause.is_zero() {
        tokio::time::sleep(plan.pause).await;
    }
    if flow.is_break() || !held {
        return flow;
    }
    let id = outcome.allocation_id.clone().unwrap_or_default();
    tally.granted.push((
        id.clone(),
        outcome.buyer.clone(),
        outcome.granted.unwrap_or(0),
    ));
    if !plan
        .pay_every
        .is_some_and(|every| n.is_multiple_of(every.max(1)))
    {
        return flow;
    }
    let instance = if plan.pay_on_next_instance {
        (instance + 1) % instances
    } else {
        instance
    };
    let request = client
        .post(format!("{}/tickets/{id}/payment", plan.urls[instance]))
        .header("X-Device-Fingerprint", &outcome.buyer)
        .json(&json!({ "paymentToken": "tok_visa" }));
    observer.sending(Action::Pay, instance);
    let started = Instant::now();
    let answer = exchange(request).await;
    let latency = started.elapsed();
    let (status, body, retry_after) = match answer {
        Some((status, body, retry_after)) => (Some(status), body, retry_after),
        None => (None, Value::Null, false),
    };
    if status == Some(StatusCode::OK) {
        tally.payments_succeeded += 1;
    }
    let paid = Outcome {
        action: Action::Pay,
        instance,
        quantity: outcome.granted.unwrap_or(0),
        status,
        code: body["code"].as_str().map(str::to_owned),
        allocation_id: Some(id),
        granted: None,
        retry_after,
        body,
        latency,
        ..outcome
    };
    observer.observe(&paid)
}

/// Creates (or uses) the event, runs the storm, then reads everything back.
pub async fn run(config: &Config) -> Result<Report, String> {
    if config.urls.is_empty() || config.clients == 0 {
        return Err("need at least one --url and one client".into());
    }
    let client = Client::builder()
        .pool_max_idle_per_host(config.clients + config.idle_streams)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())?;
    let urls: Arc<Vec<String>> = Arc::new(
        config
            .urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect(),
    );
    let event_id = match &config.event_id {
        Some(id) => id.clone(),
        None => create_event(&client, &urls[0], config).await?,
    };

    let mut streams = Vec::new();
    for i in 0..config.idle_streams {
        let url = format!("{}/events/{event_id}/stream", urls[i % urls.len()]);
        let response = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("opening a stream: {e}"))?;
        streams.push(response);
    }

    let limit = config
        .requests
        .or(if config.duration.is_none() {
            Some(10_000)
        } else {
            None
        })
        .unwrap_or(u64::MAX);
    let deadline = config
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let run_tag = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let plan = Plan {
        clients: config.clients,
        requests: limit,
        deadline,
        quantities: vec![config.quantity],
        buyer_prefix: format!("load-{run_tag}-"),
        buyers: config.buyers,
        pay_every: config.pay.then_some(1),
        read_only: config.read_only,
        client: Some(client.clone()),
        ..Plan::new(urls.to_vec(), event_id.clone())
    };

    let started = Instant::now();
    let mut tally = drive(&plan, Arc::new(())).await?;
    let elapsed = started.elapsed().as_secs_f64();
    if !streams.is_empty() && config.hold_streams_seconds > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(config.hold_streams_seconds)).await;
    }
    drop(streams);

    let requests = tally.latencies_us.len() as u64 + tally.transport_errors;
    let reservations = if config.read_only {
        0
    } else {
        tally.statuses.get(&201).copied().unwrap_or(0)
    };
    let verification = if config.read_only {
        None
    } else {
        Some(verify(&client, &urls, &event_id, &tally.granted, config).await?)
    };
    tally.latencies_us.sort_unstable();
    Ok(Report {
        event_id,
        clients: config.clients,
        elapsed_seconds: elapsed,
        requests,
        requests_per_second: requests as f64 / elapsed,
        reservations,
        reservations_per_second: reservations as f64 / elapsed,
        payments_succeeded: tally.payments_succeeded,
        transport_errors: tally.transport_errors,
        latency_ms: latency(&tally.latencies_us),
        statuses: tally.statuses,
        codes: tally.codes,
        verification,
    })
}

async fn create_event(client: &Client, base: &str, config: &Config) -> Result<String, String> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let body = json!({
        "name": format!("Load test {}", stamp.as_nanos()),
        "date": "2030-01-01T20:00:00Z",
        "totalTickets": config.tickets,
        "maxTicketsPerFingerprint": config.max_per_fingerprint,
    });
    let response = client
        .post(format!("{base}/events"))
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("creating the event: {e}"))?;
    let status = response.status();
    let event: Value = response.json().await.map_err(|e| e.to_string())?;
    if status != StatusCode::CREATED {
        return Err(format!("creating the event: {status} {event}"));
    }
    event["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "event without id".into())
}

/// Reads the event and every granted allocation back.
async fn verify(
    client: &Client,
    urls: &[String],
    event_id: &str,
    granted: &[(String, String, i64)],
    config: &Config,
) -> Result<Verification, String> {
    let event: Value = client
        .get(format!("{}/events/{event_id}", urls[0]))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let count = |field: &str| event[field].as_i64().unwrap_or(-1);
    let (total, available, reserved, purchased) = (
        count("totalTickets"),
        count("availableTickets"),
        count("reservedTickets"),
        count("purchasedTickets"),
    );
    let tickets_granted: i64 = granted.iter().map(|g| g.2).sum();
    let oversold = available < 0
        || reserved < 0
        || purchased < 0
        || available + reserved + purchased != total
        || tickets_granted > total
        || (config.event_id.is_none() && tickets_granted > reserved + purchased);

    let checked = Arc::new(AtomicU64::new(0));
    let missing = Arc::new(AtomicU64::new(0));
    if !config.no_verify {
        let next = Arc::new(AtomicU64::new(0));
        let granted = Arc::new(granted.to_vec());
        let mut readers = Vec::new();
        for worker in 0..config.clients.clamp(1, 256) {
            let (client, granted, next, checked, missing) = (
                client.clone(),
                granted.clone(),
                next.clone(),
                checked.clone(),
                missing.clone(),
            );
            let base = urls[worker % urls.len()].clone();
            let event_id = event_id.to_owned();
            readers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some((id, buyer, quantity)) = granted.get(i) else {
                        break;
                    };
                    let read = client
                        .get(format!("{base}/tickets/{id}"))
                        .header("X-Device-Fingerprint", buyer)
                        .send()
                        .await;
                    let found = match read {
                        Ok(response) if response.status() == StatusCode::OK => {
                            let body: Value = response.json().await.unwrap_or(Value::Null);
                            body["eventId"] == event_id.as_str()
                                && body["quantity"].as_i64() == Some(*quantity)
                        }
                        _ => false,
                    };
                    checked.fetch_add(1, Ordering::Relaxed);
                    if !found {
                        missing.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for reader in readers {
            reader.await.map_err(|e| e.to_string())?;
        }
    }
    Ok(Verification {
        total_tickets: total,
        available_tickets: available,
        reserved_tickets: reserved,
        purchased_tickets: purchased,
        tickets_granted,
        oversold,
        allocations_checked: checked.load(Ordering::Relaxed),
        allocations_missing: missing.load(Ordering::Relaxed),
    })
}

fn latency(sorted_us: &[u64]) -> Latency {
    let at = |q: f64| -> f64 {
        if sorted_us.is_empty() {
            return 0.0;
        }
        let index = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
        sorted_us[index] as f64 / 1000.0
    };
    let mean = if sorted_us.is_empty() {
        0.0
    } else {
        sorted_us.iter().sum::<u64>() as f64 / sorted_us.len() as f64 / 1000.0
    };
    Latency {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
        mean,
    }
}

/// The report as people read it.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let l = &report.latency_ms;
    out.push_str(&format!("event            {}\n", report.event_id));
    out.push_str(&format!("clients          {}\n", report.clients));
    out.push_str(&format!(
        "elapsed          {:.3} s\n",
        report.elapsed_seconds
    ));
    out.push_str(&format!(
        "requests         {} ({:.0}/s)\n",
        report.requests, report.requests_per_second
    ));
    out.push_str(&format!(
        "reservations     {} ({:.0}/s)\n",
        report.reservations, report.reservations_per_second
    ));
    if report.payments_succeeded > 0 {
        out.push_str(&format!("payments ok      {}\n", report.payments_succeeded));
    }
    out.push_str(&format!(
        "latency ms       p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}\n",
        l.p50, l.p90, l.p99, l.max, l.mean
    ));
    out.push_str(&format!("statuses         {:?}\n", report.statuses));
    out.push_str(&format!("codes            {:?}\n", report.codes));
    if report.transport_errors > 0 {
        out.push_str(&format!("transport errors {}\n", report.transport_errors));
    }
    if let Some(v) = &report.verification {
        out.push_str(&format!(
            "event counts     total {} available {} reserved {} purchased {}\n",
            v.total_tickets, v.available_tickets, v.reserved_tickets, v.purchased_tickets
        ));
        out.push_str(&format!(
            "verification     tickets granted {}; oversold: {}; allocations read back {}/{} (missing {})\n",
            v.tickets_granted,
            if v.oversold { "YES" } else { "no" },
            v.allocations_checked - v.allocations_missing,
            v.allocations_checked,
            v.allocations_missing
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Counts what it sees and stops the whole run at the first request with no answer.
    #[derive(Default)]
    struct StopAtFirstFailure {
        sent: AtomicU64,
        seen: Mutex<Vec<Outcome>>,
    }

    impl Observer for StopAtFirstFailure {
        fn sending(&self, _: Action, _: usize) {
            self.sent.fetch_add(1, Ordering::SeqCst);
        }

        fn observe(&self, outcome: &Outcome) -> ControlFlow<Stop> {
            self.seen.lock().unwrap().push(outcome.clone());
            if outcome.answered() {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(Stop::Run)
            }
        }
    }

    #[tokio::test]
    async fn an_observer_sees_every_request_and_can_stop_the_run() {
        // Nothing listens on port 1: every request goes unanswered.
        let plan = Plan {
            clients: 4,
            requests: 1_000,
            quantities: vec![1, 2],
            rotate_instances: true,
            ..Plan::new(
                vec!["http://127.0.0.1:1".into(), "http://127.0.0.2:1".into()],
                "00000000-0000-0000-0000-000000000000".into(),
            )
        };
        let observer = Arc::new(StopAtFirstFailure::default());
        let totals = drive(&plan, observer.clone()).await.unwrap();
        let seen = observer.seen.lock().unwrap();
        // Each client sends at most one request before it sees the stop.
        assert!(!seen.is_empty() && seen.len() <= 4, "{}", seen.len());
        assert_eq!(observer.sent.load(Ordering::SeqCst), seen.len() as u64);
        assert_eq!(totals.transport_errors, seen.len() as u64);
        assert!(totals.statuses.is_empty() && totals.granted.is_empty());
        for outcome in seen.iter() {
            assert_eq!(outcome.action, Action::Purchase);
            assert!(!outcome.answered());
            assert_eq!(
                outcome.instance,
                (outcome.client + outcome.request as usize) % 2
            );
            assert_eq!(outcome.quantity, [1, 2][outcome.request as usize % 2]);
        }
    }
}
