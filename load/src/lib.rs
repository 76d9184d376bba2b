//! The Boxoffice load-test tool: creates (or uses) an event, drives concurrent keep-alive
//! clients at the purchase endpoint, optionally pays for each hold, then reads everything
//! back and verifies that nothing was oversold and that every 201 a client saw exists.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use reqwest::{Client, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

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

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    codes: BTreeMap<String, u64>,
    granted: Vec<(String, String, i64)>,
    payments_succeeded: u64,
    transport_errors: u64,
}

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
    let counter = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let run_tag = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );

    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..config.clients {
        let (client, urls, counter, tally, event_id, run_tag) = (
            client.clone(),
            urls.clone(),
            counter.clone(),
            tally.clone(),
            event_id.clone(),
            run_tag.clone(),
        );
        let config = config.clone();
        workers.push(tokio::spawn(async move {
            let base = &urls[worker % urls.len()];
            let mut local = Tally::default();
            loop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if n >= limit || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let buyer = format!(
                    "load-{run_tag}-{}",
                    config.buyers.map_or(n, |b| n % b.max(1))
                );
                one_request(&client, base, &event_id, &buyer, &config, &mut local).await;
            }
            let mut shared = tally.lock().await;
            shared.latencies_us.append(&mut local.latencies_us);
            for (k, v) in local.statuses {
                *shared.statuses.entry(k).or_default() += v;
            }
            for (k, v) in local.codes {
                *shared.codes.entry(k).or_default() += v;
            }
            shared.granted.append(&mut local.granted);
            shared.payments_succeeded += local.payments_succeeded;
            shared.transport_errors += local.transport_errors;
        }));
    }
    for worker in workers {
        worker.await.map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    if !streams.is_empty() && config.hold_streams_seconds > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(config.hold_streams_seconds)).await;
    }
    drop(streams);

    let mut tally = Arc::try_unwrap(tally)
        .map_err(|_| "workers still running")?
        .into_inner();
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

async fn one_request(
    client: &Client,
    base: &str,
    event_id: &str,
    buyer: &str,
    config: &Config,
    tally: &mut Tally,
) {
    let started = Instant::now();
    let request = if config.read_only {
        client.get(format!("{base}/events/{event_id}"))
    } else {
        client
            .post(format!("{base}/events/{event_id}/tickets"))
            .header("X-Device-Fingerprint", buyer)
            .json(&json!({ "quantity": config.quantity }))
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(_) => {
            tally.transport_errors += 1;
            return;
        }
    };
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    tally
        .latencies_us
        .push(started.elapsed().as_micros() as u64);
    *tally.statuses.entry(status.as_u16()).or_default() += 1;
    if let Some(code) = body["code"].as_str() {
        *tally.codes.entry(code.to_owned()).or_default() += 1;
    }
    if status == StatusCode::CREATED && !config.read_only {
        let id = body["id"].as_str().unwrap_or_default().to_owned();
        let quantity = body["quantity"].as_i64().unwrap_or(0);
        if config.pay {
            let paid = client
                .post(format!("{base}/tickets/{id}/payment"))
                .header("X-Device-Fingerprint", buyer)
                .json(&json!({ "paymentToken": "tok_visa" }))
                .send()
                .await;
            if paid.is_ok_and(|r| r.status() == StatusCode::OK) {
                tally.payments_succeeded += 1;
            }
        }
        tally.granted.push((id, buyer.to_owned(), quantity));
    }
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
