//! The Boxoffice load-test tool: creates (or uses) an event, drives concurrent keep-alive
//! clients at the purchase endpoint, optionally pays for each hold, then reads everything
//! back and verifies that nothing was oversold and that every 201 a client saw exists.
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
pub use report::{Latency, Report, Verification, render};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Skip reading every allocation back after the run.
    #[arg(long)]
    pub no_verify: bool,
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
