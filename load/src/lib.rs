//! The Boxoffice load-test tool: creates (or uses) an event, drives concurrent keep-alive
//! clients at the purchase endpoint, optionally pays for each hold, then reads everything
//! back and verifies that nothing was oversold, that every 201 a client saw exists and that
//! every hold paid for is `purchased`. With several ticket types ([`Catalogue`]) its orders
//! carry lines of random types, and it also checks every quota's counts and that every 201
//! holds what was asked, priced right ([`check_answer`]). Its verdict ([`Report::reasons`])
//! also refuses a run with a 5xx, a request left unanswered or an answer a load run should
//! not get.
//!
//! Two levels: [`run_with`] is the whole tool (the CLI's; [`run`] is its single-type run),
//! and [`drive`] is its storm alone, against an existing event, reporting every request live
//! to an [`Observer`] that can stop a client or the whole run. The fault tests drive their
//! storms with [`drive`]: they kill servers mid-storm, so they need to see each answer (and
//! each request in flight) as it happens, not only the totals at the end.

mod drive;
mod order;
mod report;
mod streams;

pub use drive::{Action, Granted, Observer, Outcome, Plan, Stop, Totals, drive};
pub use order::{Line, check_answer, pick_types};
use report::latency;
pub use report::{
    Answer, EventCounts, Latency, QuotaCheck, QuotaCounts, ReadBack, Report, Verification, render,
};
pub use streams::{StreamReport, Watchers, raise_nofile_limit, resident_kib, source_address};

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
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
    /// Tickets per purchase request (per line, with --ticket-types above 1).
    #[arg(long, default_value_t = 1)]
    pub quantity: i64,
    /// Distinct buyers (fingerprints) to cycle through; default: one per request.
    #[arg(long)]
    pub buyers: Option<u64>,
    /// Pay for every hold with the succeeding test card.
    #[arg(long)]
    pub pay: bool,
    /// Live-statistics streams to hold open on the event during the run, as people watching
    /// the counter: each is read, its last message compared with the event's final counts
    /// and each change's commit-to-message time measured.
    #[arg(long, default_value_t = 0)]
    pub idle_streams: usize,
    /// Keep the streams open this many seconds after the run (to measure them).
    #[arg(long, default_value_t = 0.0)]
    pub hold_streams_seconds: f64,
    /// Open the streams from this many loopback source addresses, 127.0.0.2 upwards (one
    /// address has about 28,000 ports towards one server port); 0: the system's choice.
    #[arg(long, default_value_t = 0)]
    pub stream_sources: usize,
    /// The server's process id, on this machine: its resident memory is read before the
    /// streams open and once all are open, and reported per stream.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Time `GET /events/{id}` instead of purchasing (read throughput).
    #[arg(long)]
    pub read_only: bool,
    /// Skip the verification after the run (the run is then never called sound).
    #[arg(long)]
    pub no_verify: bool,
}

/// The event's catalogue and the orders' lines: what a run sells beyond one unpriced type.
/// Its default is the single-type run: `{quantity}` orders of the event's default type.
#[derive(Debug, Clone, Args)]
pub struct Catalogue {
    /// Ticket types to order from. 1: `{quantity}` orders of the event's default type, as
    /// before ticket types. Above 1: `{lines}` orders; on an event the tool creates, the
    /// default type ("General admission") is the first and the tool creates the others
    /// ("Type B", "Type C", …) with `POST /events/{id}/ticket-types`; with `--event-id`, the
    /// event's first N types as `GET /events/{id}/ticket-types` lists them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub ticket_types: u16,
    /// Most lines per order: each order asks for 1 to this many distinct types, picked at
    /// random (at most --ticket-types), each line of --quantity tickets.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub max_lines: u16,
    /// Price of a ticket type in the currency's minor unit (cents for EUR), in type order,
    /// repeated for each type (`--price 2500 --price 4000 --price 1000`); the last given
    /// applies to the types after it. Default: the server's (0, free).
    #[arg(long = "price", value_parser = clap::value_parser!(i64).range(0..))]
    pub prices: Vec<i64>,
    /// ISO 4217 currency of the event to create. Default: the server's.
    #[arg(long)]
    pub currency: Option<String>,
    /// Quotas to create on the event (not with --event-id).
    #[arg(long, value_enum, default_value_t = QuotaLayout::None)]
    pub quotas: QuotaLayout,
}

impl Default for Catalogue {
    fn default() -> Self {
        Self {
            ticket_types: 1,
            max_lines: 1,
            prices: Vec::new(),
            currency: None,
            quotas: QuotaLayout::None,
        }
    }
}

/// Quotas of the event a run creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuotaLayout {
    /// No quota: only the event's capacity bounds the types.
    None,
    /// Two overlapping quotas: Q1 (2/5 of --tickets) holds the first type, Q2 (2/3 of
    /// --tickets) holds the first and the second; the others are in none. On 150 tickets of
    /// three types: A in Q1 of 60 and Q2 of 100, B in Q2, C in none. Needs 2 types or more.
    Overlap,
}

impl Catalogue {
    /// Whether orders go as `{lines}`.
    fn has_lines(&self) -> bool {
        self.ticket_types > 1
    }

    /// The price of type `k`, if prices were given.
    fn price(&self, k: usize) -> Option<i64> {
        self.prices.get(k).or(self.prices.last()).copied()
    }
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

/// Creates (or uses) the event, runs the storm of `{quantity}` orders of its default type,
/// then reads everything back: [`run_with`] and the default [`Catalogue`].
pub async fn run(config: &Config) -> Result<Report, String> {
    run_with(config, &Catalogue::default()).await
}

/// Creates (or uses) the event with its catalogue (ticket types, prices, quotas), runs the
/// storm, then reads everything back.
pub async fn run_with(config: &Config, catalogue: &Catalogue) -> Result<Report, String> {
    if config.urls.is_empty() || config.clients == 0 {
        return Err("need at least one --url and one client".into());
    }
    if catalogue.max_lines > catalogue.ticket_types {
        return Err("--max-lines cannot be above --ticket-types".into());
    }
    if catalogue.quotas == QuotaLayout::Overlap && catalogue.ticket_types < 2 {
        return Err("--quotas overlap needs --ticket-types 2 or more".into());
    }
    if catalogue.quotas != QuotaLayout::None && config.event_id.is_some() {
        return Err(
            "--quotas shapes an event the tool creates, not one given by --event-id".into(),
        );
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
        None => create_event(&client, &urls[0], config, catalogue).await?,
    };
    let ticket_types = if catalogue.has_lines() {
        ticket_types(&client, &urls[0], &event_id, config, catalogue).await?
    } else {
        Vec::new()
    };

    let watchers = if config.idle_streams > 0 {
        Some(
            Watchers::open(
                &urls,
                &event_id,
                config.idle_streams,
                config.stream_sources,
                config.server_pid,
            )
            .await?,
        )
    } else {
        None
    };

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
        ticket_types,
        max_lines: catalogue.max_lines.into(),
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
    let streams = match watchers {
        Some(watchers) => {
            if config.hold_streams_seconds > 0.0 {
                tokio::time::sleep(Duration::from_secs_f64(config.hold_streams_seconds)).await;
            }
            let event = exchange(
                client.get(format!("{}/events/{event_id}", urls[0])),
                StatusCode::OK,
                "reading the event's final counts",
            )
            .await?;
            let counts = [
                "totalTickets",
                "availableTickets",
                "reservedTickets",
                "purchasedTickets",
            ]
            .map(|k| event[k].as_i64().unwrap_or(-1));
            // Every stream ends on the final state within a few of its 100 ms intervals.
            Some(
                watchers
                    .finish(counts, Duration::from_secs(1), Duration::from_secs(30))
                    .await,
            )
        }
        None => None,
    };

    let recorded = recorder.merged();
    let requests = tally.latencies_us.len() as u64 + tally.transport_errors;
    let reservations = if config.read_only {
        0
    } else {
        tally.statuses.get(&201).copied().unwrap_or(0)
    };
    let tickets_reserved: i64 = tally.granted.iter().map(|g| g.quantity).sum();
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
        tickets_reserved,
        tickets_per_second: tickets_reserved as f64 / elapsed,
        orders_mispriced: tally.mispriced,
        mispriced_examples: tally.mispriced_examples,
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
        streams,
        sound: false,
        verdict: Vec::new(),
    };
    report.verdict = report.reasons();
    report.sound = report.verdict.is_empty();
    Ok(report)
}

/// Sends `body` to `url` and returns the answer's JSON if its status is `expected`.
async fn exchange(
    request: reqwest::RequestBuilder,
    expected: StatusCode,
    what: &str,
) -> Result<Value, String> {
    let response = request.send().await.map_err(|e| format!("{what}: {e}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("{what}: {status}: {e}"))?;
    if status != expected {
        return Err(format!("{what}: {status} {body}"));
    }
    Ok(body)
}

/// The id of a created resource.
fn id(body: &Value, what: &str) -> Result<String, String> {
    body["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{what} without id: {body}"))
}

/// The items of a list answer: a JSON array, or the `data` array of a page.
fn items(body: &Value) -> &[Value] {
    body.as_array()
        .or_else(|| body["data"].as_array())
        .map_or(&[], Vec::as_slice)
}

async fn create_event(
    client: &Client,
    base: &str,
    config: &Config,
    catalogue: &Catalogue,
) -> Result<String, String> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut body = json!({
        "name": format!("Load test {}", stamp.as_nanos()),
        "date": "2030-01-01T20:00:00Z",
        "totalTickets": config.tickets,
        "maxTicketsPerFingerprint": config.max_per_fingerprint,
    });
    // Only what was asked for: a single-type run sends the body it sent before prices.
    if let Some(price) = catalogue.price(0) {
        body["price"] = json!(price);
    }
    if let Some(currency) = &catalogue.currency {
        body["currency"] = json!(currency);
    }
    let request = client.post(format!("{base}/events")).json(&body);
    let event = exchange(request, StatusCode::CREATED, "creating the event").await?;
    id(&event, "event")
}

/// The ids of the types to order from: on an event of the tool's, its default type and the
/// ones it creates now (then the quotas of the layout); on a given event, its first types.
async fn ticket_types(
    client: &Client,
    base: &str,
    event_id: &str,
    config: &Config,
    catalogue: &Catalogue,
) -> Result<Vec<String>, String> {
    let wanted = usize::from(catalogue.ticket_types);
    let url = format!("{base}/events/{event_id}/ticket-types");
    let listed = exchange(client.get(&url), StatusCode::OK, "listing ticket types").await?;
    let mut ids = items(&listed)
        .iter()
        .filter(|t| t["active"] != false)
        .map(|t| id(t, "ticket type"))
        .collect::<Result<Vec<_>, _>>()?;
    if config.event_id.is_none() {
        ids.truncate(1);
        for k in ids.len()..wanted {
            let name = match u8::try_from(k) {
                Ok(k) if k < 26 => format!("Type {}", char::from(b'A' + k)),
                _ => format!("Type {}", k + 1),
            };
            let body = json!({ "name": name, "price": catalogue.price(k).unwrap_or(0) });
            let created = exchange(
                client.post(&url).json(&body),
                StatusCode::CREATED,
                "creating a ticket type",
            )
            .await?;
            ids.push(id(&created, "ticket type")?);
        }
        if catalogue.quotas == QuotaLayout::Overlap {
            let quotas = format!("{base}/events/{event_id}/quotas");
            for (name, size, types) in [
                ("Q1", config.tickets * 2 / 5, &ids[..1]),
                ("Q2", config.tickets * 2 / 3, &ids[..2]),
            ] {
                let body = json!({ "name": name, "size": size, "ticketTypeIds": types });
                exchange(
                    client.post(&quotas).json(&body),
                    StatusCode::CREATED,
                    "creating a quota",
                )
                .await?;
            }
        }
    }
    if ids.len() < wanted {
        return Err(format!(
            "the event has {} active ticket types, --ticket-types asks for {wanted}",
            ids.len()
        ));
    }
    ids.truncate(wanted);
    Ok(ids)
}

/// The event's quotas; none from a server without quotas (404 on the route).
async fn quotas(client: &Client, base: &str, event_id: &str) -> Result<Vec<QuotaCounts>, String> {
    let response = client
        .get(format!("{base}/events/{event_id}/quotas"))
        .send()
        .await
        .map_err(|e| format!("reading the quotas back: {e}"))?;
    if response.status() == StatusCode::NOT_FOUND {
        return Ok(Vec::new());
    }
    if response.status() != StatusCode::OK {
        return Err(format!("reading the quotas back: {}", response.status()));
    }
    let listed: Value = response.json().await.map_err(|e| e.to_string())?;
    let count = |q: &Value, field: &str| q[field].as_i64().unwrap_or(-1);
    items(&listed)
        .iter()
        .map(|q| {
            Ok(QuotaCounts {
                id: id(q, "quota")?,
                name: q["name"].as_str().unwrap_or_default().to_owned(),
                size: count(q, "size"),
                available: count(q, "availableTickets"),
                reserved: count(q, "reservedTickets"),
                purchased: count(q, "purchasedTickets"),
                ticket_type_ids: q["ticketTypeIds"]
                    .as_array()
                    .map(|ids| {
                        ids.iter()
                            .filter_map(|t| t.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Reads the event and its quotas, then every granted allocation (with its buyer's
/// fingerprint), and judges them ([`Verification::new`], [`Verification::with_quotas`]).
/// `paid`: the allocations whose payment was answered 200, which must read back `purchased`.
async fn verify(
    client: &Client,
    urls: &[String],
    event_id: &str,
    granted: &[Granted],
    paid: &HashSet<String>,
    clients: usize,
) -> Result<Verification, String> {
    let event = exchange(
        client.get(format!("{}/events/{event_id}", urls[0])),
        StatusCode::OK,
        "reading the event back",
    )
    .await?;
    let count = |field: &str| event[field].as_i64().unwrap_or(-1);
    let counts = EventCounts {
        total: count("totalTickets"),
        available: count("availableTickets"),
        reserved: count("reservedTickets"),
        purchased: count("purchasedTickets"),
    };
    let quotas = quotas(client, &urls[0], event_id).await?;
    let tickets_granted: i64 = granted.iter().map(|g| g.quantity).sum();
    let mut granted_by_type = BTreeMap::new();
    for line in granted.iter().flat_map(|g| &g.lines) {
        *granted_by_type
            .entry(line.ticket_type_id.clone())
            .or_default() += line.quantity;
    }

    // Read only after the event and its quotas: an allocation read back as held was held
    // when they were read (see `Verification::new`).
    let next = Arc::new(AtomicU64::new(0));
    let granted = Arc::new(granted.to_vec());
    let paid = Arc::new(paid.clone());
    let mut readers = Vec::new();
    for worker in 0..clients.clamp(1, 256) {
        let (client, granted, paid, next) =
            (client.clone(), granted.clone(), paid.clone(), next.clone());
        let base = urls[worker % urls.len()].clone();
        let event_id = event_id.to_owned();
        readers.push(tokio::spawn(async move {
            let mut read_back = ReadBack::default();
            let mut held_by_type = BTreeMap::<String, i64>::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(g) = granted.get(i) else {
                    break;
                };
                let read = client
                    .get(format!("{base}/tickets/{}", g.allocation_id))
                    .header("X-Device-Fingerprint", &g.buyer)
                    .send()
                    .await;
                let body = match read {
                    Ok(response) if response.status() == StatusCode::OK => {
                        response.json().await.unwrap_or(Value::Null)
                    }
                    _ => Value::Null,
                };
                let found = body["eventId"] == event_id.as_str()
                    && body["quantity"].as_i64() == Some(g.quantity)
                    && order::lines_of(&body) == g.lines;
                let status = body["status"].as_str().unwrap_or_default();
                read_back.checked += 1;
                if !found {
                    read_back.missing += 1;
                } else if matches!(status, "reserved" | "payment_pending" | "purchased") {
                    read_back.tickets_held += g.quantity;
                    for line in &g.lines {
                        *held_by_type.entry(line.ticket_type_id.clone()).or_default() +=
                            line.quantity;
                    }
                }
                if paid.contains(&g.allocation_id) {
                    read_back.paid_checked += 1;
                    if status != "purchased" {
                        read_back.paid_not_purchased += 1;
                    }
                }
            }
            (read_back, held_by_type)
        }));
    }
    let mut read_back = ReadBack::default();
    let mut held_by_type = BTreeMap::new();
    for reader in readers {
        let (one, held) = reader.await.map_err(|e| e.to_string())?;
        read_back.checked += one.checked;
        read_back.missing += one.missing;
        read_back.tickets_held += one.tickets_held;
        read_back.paid_checked += one.paid_checked;
        read_back.paid_not_purchased += one.paid_not_purchased;
        for (ticket_type, tickets) in held {
            *held_by_type.entry(ticket_type).or_default() += tickets;
        }
    }
    Ok(
        Verification::new(counts, tickets_granted, read_back).with_quotas(
            quotas,
            granted_by_type,
            held_by_type,
        ),
    )
}
