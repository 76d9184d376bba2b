//! The Boxoffice load-test tool: creates (or uses) an event, drives concurrent keep-alive
//! clients at the purchase endpoint, optionally pays for each hold, then reads everything
//! back and verifies that nothing was oversold, that every 201 a client saw exists and that
//! every hold paid for is `purchased`. Its verdict ([`Report::reasons`]) also refuses a run
//! with a 5xx, a request left unanswered or an answer a load run should not get.
//!
//! Two levels: [`run`] is the whole tool (the CLI's), and [`drive`] is its storm alone, against
//! an existing event, reporting every request live to an [`Observer`] that can stop a client
//! or the whole run. The fault tests drive their storms with [`drive`]: they kill servers
//! mid-storm, so they need to see each answer (and each request in flight) as it happens,
//! not only the totals at the end.

mod drive;
mod report;

pub use drive::{Action, Observer, Outcome, Plan, Stop, Totals, drive};
use report::latency;
pub use report::{Answer, EventCounts, Latency, ReadBack, Report, Verification, render};

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use reqwest::{Client, StatusCode};
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
    /// Skip the verification after the run (the run is then never called sound).
    #[arg(long)]
    pub no_verify: bool,
}

/// What one client's requests got, kept per client so that recording never waits on another
/// client (the lock is only there because an observer is shared).
#[derive(Default)]
struct Shard {
    /// Purchase (or read) requests answered below 500, in microseconds.
    answered_us: Vec<u64>,
    /// Purchase (or read) requests answered 5xx or not at all, in microseconds.
    failed_us: Vec<u64>,
    /// Every request, payments included, by action, status and code.
    answers: BTreeMap<(&'static str, Option<u16>, Option<String>), u64>,
    /// Allocations whose payment was answered 200.
    paid: Vec<String>,
}

/// The run's observer: records each answer in its client's shard.
struct Recorder {
    shards: Vec<Mutex<Shard>>,
}

impl Observer for Recorder {
    fn observe(&self, outcome: &Outcome) -> ControlFlow<Stop> {
        let mut shard = self.shards[outcome.client]
            .lock()
            .expect("a client's shard is never poisoned");
        let status = outcome.status.map(|s| s.as_u16());
        let key = (outcome.action.name(), status, outcome.code.clone());
        *shard.answers.entry(key).or_default() += 1;
        let micros = outcome.latency.as_micros() as u64;
        match outcome.action {
            Action::Pay => {
                if status == Some(200) {
                    shard.paid.extend(outcome.allocation_id.clone());
                }
            }
            Action::Purchase | Action::Read if status.is_some_and(|s| s < 500) => {
                shard.answered_us.push(micros)
            }
            Action::Purchase | Action::Read => shard.failed_us.push(micros),
        }
        ControlFlow::Continue(())
    }
}

impl Recorder {
    fn new(clients: usize) -> Self {
        Self {
            shards: (0..clients).map(|_| Mutex::default()).collect(),
        }
    }

    /// All shards in one, latencies sorted.
    fn merged(&self) -> Shard {
        let mut all = Shard::default();
        for shard in &self.shards {
            let mut shard = shard.lock().expect("a client's shard is never poisoned");
            all.answered_us.append(&mut shard.answered_us);
            all.failed_us.append(&mut shard.failed_us);
            all.paid.append(&mut shard.paid);
            for (key, count) in std::mem::take(&mut shard.answers) {
                *all.answers.entry(key).or_default() += count;
            }
        }
        all.answered_us.sort_unstable();
        all.failed_us.sort_unstable();
        all
    }
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

    let recorder = Arc::new(Recorder::new(config.clients));
    let started = Instant::now();
    let tally = drive(&plan, recorder.clone()).await?;
    let elapsed = started.elapsed().as_secs_f64();
    if !streams.is_empty() && config.hold_streams_seconds > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(config.hold_streams_seconds)).await;
    }
    drop(streams);

    let recorded = recorder.merged();
    let requests = tally.latencies_us.len() as u64 + tally.transport_errors;
    let reservations = if config.read_only {
        0
    } else {
        tally.statuses.get(&201).copied().unwrap_or(0)
    };
    let verification = if config.no_verify {
        None
    } else {
        let paid: HashSet<String> = recorded.paid.iter().cloned().collect();
        Some(
            verify(
                &client,
                &urls,
                &event_id,
                &tally.granted,
                &paid,
                config.clients,
            )
            .await?,
        )
    };
    let mut report = Report {
        event_id,
        clients: config.clients,
        elapsed_seconds: elapsed,
        requests,
        requests_per_second: requests as f64 / elapsed,
        reservations,
        reservations_per_second: reservations as f64 / elapsed,
        payments_succeeded: tally.payments_succeeded,
        transport_errors: tally.transport_errors,
        latency_ms: latency(&recorded.answered_us),
        failed_requests: recorded.failed_us.len() as u64,
        failed_latency_ms: latency(&recorded.failed_us),
        statuses: tally.statuses,
        codes: tally.codes,
        answers: recorded
            .answers
            .into_iter()
            .map(|((action, status, code), count)| Answer {
                action,
                status,
                code,
                count,
            })
            .collect(),
        verification,
        sound: false,
        verdict: Vec::new(),
    };
    report.verdict = report.reasons();
    report.sound = report.verdict.is_empty();
    Ok(report)
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

/// Reads the event, then every granted allocation (with its buyer's fingerprint), and judges
/// them ([`Verification::new`]). `paid`: the allocations whose payment was answered 200,
/// which must read back `purchased`.
async fn verify(
    client: &Client,
    urls: &[String],
    event_id: &str,
    granted: &[(String, String, i64)],
    paid: &HashSet<String>,
    clients: usize,
) -> Result<Verification, String> {
    let response = client
        .get(format!("{}/events/{event_id}", urls[0]))
        .send()
        .await
        .map_err(|e| format!("reading the event back: {e}"))?;
    if response.status() != StatusCode::OK {
        return Err(format!("reading the event back: {}", response.status()));
    }
    let event: Value = response.json().await.map_err(|e| e.to_string())?;
    let count = |field: &str| event[field].as_i64().unwrap_or(-1);
    let counts = EventCounts {
        total: count("totalTickets"),
        available: count("availableTickets"),
        reserved: count("reservedTickets"),
        purchased: count("purchasedTickets"),
    };
    let tickets_granted: i64 = granted.iter().map(|g| g.2).sum();

    // Read only after the event: an allocation read back as held was held when the event
    // was read (see `Verification::new`).
    let checked = Arc::new(AtomicU64::new(0));
    let missing = Arc::new(AtomicU64::new(0));
    let held = Arc::new(AtomicI64::new(0));
    let paid_checked = Arc::new(AtomicU64::new(0));
    let paid_not_purchased = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let granted = Arc::new(granted.to_vec());
    let paid = Arc::new(paid.clone());
    let mut readers = Vec::new();
    for worker in 0..clients.clamp(1, 256) {
        let (client, granted, paid, next) =
            (client.clone(), granted.clone(), paid.clone(), next.clone());
        let (checked, missing, held, paid_checked, paid_not_purchased) = (
            checked.clone(),
            missing.clone(),
            held.clone(),
            paid_checked.clone(),
            paid_not_purchased.clone(),
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
                let body = match read {
                    Ok(response) if response.status() == StatusCode::OK => {
                        response.json().await.unwrap_or(Value::Null)
                    }
                    _ => Value::Null,
                };
                let found = body["eventId"] == event_id.as_str()
                    && body["quantity"].as_i64() == Some(*quantity);
                let status = body["status"].as_str().unwrap_or_default();
                checked.fetch_add(1, Ordering::Relaxed);
                if !found {
                    missing.fetch_add(1, Ordering::Relaxed);
                } else if matches!(status, "reserved" | "payment_pending" | "purchased") {
                    held.fetch_add(*quantity, Ordering::Relaxed);
                }
                if paid.contains(id) {
                    paid_checked.fetch_add(1, Ordering::Relaxed);
                    if status != "purchased" {
                        paid_not_purchased.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for reader in readers {
        reader.await.map_err(|e| e.to_string())?;
    }
    let read_back = ReadBack {
        checked: checked.load(Ordering::Relaxed),
        missing: missing.load(Ordering::Relaxed),
        tickets_held: held.load(Ordering::Relaxed),
        paid_checked: paid_checked.load(Ordering::Relaxed),
        paid_not_purchased: paid_not_purchased.load(Ordering::Relaxed),
    };
    Ok(Verification::new(counts, tickets_granted, read_back))
}
