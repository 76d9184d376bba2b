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

pub mod check;
mod drive;
pub mod flags;
pub mod history;
mod html;
mod journey;
mod order;
mod output;
mod report;
mod scan;
mod steps;
mod streams;

pub use drive::{Action, Granted, Observer, Outcome, Plan, Stop, Totals, drive};
pub use html::{Chart, charts, html};
use journey::Expect;
pub use journey::{Fate, Journey, JourneySummary, Think};
pub use order::{Line, check_answer, pick_types};
pub use output::{check_writable, write_charts, write_report};
use report::latency;
pub use report::{
    Answer, EXPIRY_TOLERANCE, EventCounts, Latency, QuotaCheck, QuotaCounts, ReadBack, Report,
    RowCheck, Unread, Unreadable, Verification, lapsed_early, render,
};
pub use scan::{ScanReport, Scanning, render_scan, run_scan};
use steps::Sample;
pub use steps::{Bucket, Step};
pub use streams::{StreamReport, Watchers, raise_nofile_limit, resident_kib, source_address};

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use history::History;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// What to run.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Base URL of a Boxoffice instance; repeat to spread clients over several instances.
    #[arg(long = "url", default_value = "http://127.0.0.1:8080")]
    pub urls: Vec<String>,
    /// Use this event, as it is, instead of creating one: refused beside the flags that only
    /// shape the event the tool creates (--tickets, --max-per-fingerprint, --price,
    /// --currency, --quotas). A UUID; a run on an id the server does not have is refused
    /// before the load.
    #[arg(long, value_parser = flags::event_id)]
    pub event_id: Option<String>,
    /// Tickets of the event to create (not with --event-id).
    #[arg(long, allow_negative_numbers = true, default_value_t = 1_000_000,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub tickets: i64,
    /// Per-buyer cap of the event to create (not with --event-id).
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_per_fingerprint: Option<i64>,
    /// Concurrent clients (each sends one request at a time over keep-alive).
    #[arg(long, allow_negative_numbers = true, default_value_t = 64, value_parser = flags::whole::<usize>(1..))]
    pub clients: usize,
    /// Stop after this many seconds.
    #[arg(long, allow_negative_numbers = true, value_parser = flags::positive_seconds)]
    pub duration: Option<f64>,
    /// Stop after this many purchase requests (default 10,000 when no duration is given).
    #[arg(long, allow_negative_numbers = true, value_parser = flags::whole::<u64>(1..))]
    pub requests: Option<u64>,
    /// Tickets per purchase request (per line, with --ticket-types above 1). An order larger
    /// than the server takes in one purchase (its --max-tickets-per-purchase) is refused
    /// before the run.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..))]
    pub quantity: i64,
    /// Distinct buyers (fingerprints) to cycle through, 1 or more; default: one per request.
    #[arg(long, allow_negative_numbers = true, value_parser = flags::whole::<u64>(1..))]
    pub buyers: Option<u64>,
    /// Pay for every hold with the succeeding test card.
    #[arg(long)]
    pub pay: bool,
    /// Live-statistics streams to hold open on the event during the run, as people watching
    /// the counter: each is read, its last message compared with the event's final counts
    /// and each change's commit-to-message time measured.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0, value_parser = flags::whole::<usize>(0..))]
    pub idle_streams: usize,
    /// Keep the streams open this many seconds after the run (to measure them). Needs
    /// --idle-streams.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0, value_parser = flags::seconds, requires = "idle_streams")]
    pub hold_streams_seconds: f64,
    /// Open the streams from this many loopback source addresses, 127.0.0.2 upwards (one
    /// address has about 28,000 ports towards one server port): 0 (the system's choice) to
    /// 16,777,214 (127.255.255.255); no more are used than there are streams. Needs
    /// --idle-streams.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0, requires = "idle_streams",
          value_parser = clap::value_parser!(u32).range(0..=MAX_STREAM_SOURCES))]
    pub stream_sources: u32,
    /// Open a stream that ends again (every 500 ms until it opens), as a browser does: for
    /// runs that kill servers, so that the last messages are still compared. Needs
    /// --idle-streams (a --watch-share watcher's stream is not reopened).
    #[arg(long, requires = "idle_streams")]
    pub reconnect_streams: bool,
    /// The server's process id, on this machine: its resident memory is read before the
    /// streams open and once all are open, and reported per stream. Needs --idle-streams.
    #[arg(long, allow_negative_numbers = true, requires = "idle_streams",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub server_pid: Option<u32>,
    /// Time `GET /events/{id}` instead of purchasing (read throughput).
    #[arg(long)]
    pub read_only: bool,
    /// Skip the verification after the run (the run is then never called sound).
    #[arg(long)]
    pub no_verify: bool,
    /// Record every call's attempts in this file, one JSON line each (see `history`), for
    /// `boxoffice-load check`.
    #[arg(long)]
    pub history: Option<std::path::PathBuf>,
    /// Send an `Idempotency-Key` with every hold, payment and refund, and retry each with its
    /// key while the answer is ambiguous (none, or a 5xx such as 503 during a failover).
    #[arg(long)]
    pub keyed: bool,
    /// How long a call whose answer is ambiguous is retried, from its first attempt.
    #[arg(long, allow_negative_numbers = true, default_value_t = 60.0, value_parser = flags::seconds)]
    pub retry_seconds: f64,
    /// Give up on a request after this many seconds (recorded as a `timeout`); default: give
    /// up once the server has sent nothing for 60 s, twice its default request timeout, so a
    /// server that answers is heard (its own 503 comes first) and one that hangs ends the run.
    #[arg(long, allow_negative_numbers = true, value_parser = flags::positive_seconds)]
    pub request_timeout: Option<f64>,
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
    #[arg(long, allow_negative_numbers = true, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub ticket_types: u16,
    /// Most lines per order: each order asks for 1 to this many distinct types, picked at
    /// random (at most --ticket-types), each line of --quantity tickets.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub max_lines: u16,
    /// Price of a ticket type in the currency's minor unit (cents for EUR), in type order,
    /// repeated for each type (`--price 2500 --price 4000 --price 1000`); the last given
    /// applies to the types after it. Default: the server's (0, free). Not with --event-id.
    #[arg(long = "price", allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(0..))]
    pub prices: Vec<i64>,
    /// ISO 4217 currency of the event to create. Default: the server's. Not with
    /// --event-id.
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
    /// Every request, payments included, as it ended.
    samples: Vec<Sample>,
    /// Allocations whose payment was answered 200.
    paid: Vec<String>,
}

/// The run's observer: records each answer in its client's shard.
struct Recorder {
    started: Instant,
    shards: Vec<Mutex<Shard>>,
}

impl Observer for Recorder {
    fn observe(&self, outcome: &Outcome) -> ControlFlow<Stop> {
        let mut shard = self.shards[outcome.client]
            .lock()
            .expect("a client's shard is never poisoned");
        let status = outcome.status.map(|s| s.as_u16());
        if outcome.action == Action::Pay && status == Some(200) {
            shard.paid.extend(outcome.allocation_id.clone());
        }
        shard.samples.push(Sample {
            step: outcome.action.name(),
            status,
            code: outcome.code.clone(),
            latency_us: outcome.latency.as_micros() as u64,
            ended_ms: self.started.elapsed().as_millis() as u64,
        });
        ControlFlow::Continue(())
    }
}

impl Recorder {
    fn new(clients: usize) -> Self {
        Self {
            started: Instant::now(),
            shards: (0..clients).map(|_| Mutex::default()).collect(),
        }
    }

    /// All shards in one.
    fn merged(&self) -> Shard {
        let mut all = Shard::default();
        for shard in &self.shards {
            let mut shard = shard.lock().expect("a client's shard is never poisoned");
            all.samples.append(&mut shard.samples);
            all.paid.append(&mut shard.paid);
        }
        all
    }
}

/// Creates (or uses) the event, runs the storm of `{quantity}` orders of its default type,
/// then reads everything back: [`run_with`] and the default [`Catalogue`].
pub async fn run(config: &Config) -> Result<Report, String> {
    run_with(config, &Catalogue::default()).await
}

/// Creates (or uses) the event with its catalogue (ticket types, prices, quotas), runs the
/// storm, then reads everything back: [`run_on_sale`] without a journey.
pub async fn run_with(config: &Config, catalogue: &Catalogue) -> Result<Report, String> {
    run_on_sale(config, catalogue, &Journey::default()).await
}

/// Creates (or uses) the event with its catalogue, runs the storm (or, with a [`Journey`],
/// the buyers' journeys), then reads everything back.
pub async fn run_on_sale(
    config: &Config,
    catalogue: &Catalogue,
    journey: &Journey,
) -> Result<Report, String> {
    if config.urls.is_empty() || config.clients == 0 {
        return Err("need at least one --url and one client".into());
    }
    for url in &config.urls {
        check_url(url)?;
    }
    if config.quantity < 1 || config.requests == Some(0) {
        return Err("--quantity and --requests must be 1 or more".into());
    }
    if config.read_only && config.pay {
        return Err("--read-only times reads; it pays for nothing (drop --pay)".into());
    }
    if catalogue.max_lines > catalogue.ticket_types {
        return Err("--max-lines cannot be above --ticket-types".into());
    }
    if catalogue.quotas == QuotaLayout::Overlap && catalogue.ticket_types < 2 {
        return Err("--quotas overlap needs --ticket-types 2 or more".into());
    }
    // The parser refuses these beside --event-id ([`flags::refuse_with_event_id`]), --tickets
    // included; a `Config` built without it is checked here for those it can tell were set.
    if let Some(id) = &config.event_id {
        flags::event_id(id).map_err(|e| format!("--event-id {e}"))?;
        let shaping = [
            (
                "--max-per-fingerprint",
                config.max_per_fingerprint.is_some(),
            ),
            ("--price", !catalogue.prices.is_empty()),
            ("--currency", catalogue.currency.is_some()),
            ("--quotas", catalogue.quotas != QuotaLayout::None),
        ];
        if let Some((flag, _)) = shaping.iter().find(|(_, set)| *set) {
            return Err(format!(
                "{flag} shapes the event the tool creates; with --event-id the run uses that \
                 event as it is: drop {flag} (or --event-id)"
            ));
        }
    }
    journey.validate()?;
    if config.keyed && !journey.is_active() {
        return Err(
            "--keyed retries a buyer's journey (give --think-ms, a share or \
                    --arrival-rate); the closed-loop storm sends no keys"
                .into(),
        );
    }
    if journey.is_active() && config.read_only {
        return Err("--read-only times reads, not a buyer's journey".into());
    }
    // The provider is only called for an order that costs something: a free order is
    // confirmed whatever the card, so a declining card needs every type priced.
    let priced = (0..usize::from(catalogue.ticket_types)).all(|k| catalogue.price(k) > Some(0));
    if journey.decline_share > 0.0 && config.event_id.is_none() && !priced {
        return Err("--decline-share needs every ticket type priced above 0 (--price)".into());
    }
    let token = journey.admin_token.as_deref();
    let connections = if journey.arrival_rate.is_some() {
        journey.max_in_flight as usize
    } else {
        config.clients
    };
    let mut client = Client::builder()
        .pool_max_idle_per_host(connections + config.idle_streams)
        .tcp_nodelay(true);
    // Every span in seconds is checked here, before anything is sent: the parser refuses
    // them already, but a `Config` may be built without it.
    client = match config.request_timeout {
        Some(seconds) => {
            let timeout = flags::duration("--request-timeout", seconds)?;
            if timeout.is_zero() {
                return Err("--request-timeout must be above 0".into());
            }
            client.timeout(timeout)
        }
        None => client.read_timeout(SILENCE_TIMEOUT),
    };
    let retry_for = flags::duration("--retry-seconds", config.retry_seconds)?;
    let hold_streams = flags::duration("--hold-streams-seconds", config.hold_streams_seconds)?;
    let run_for = config
        .duration
        .map(|s| flags::duration("--duration", s))
        .transpose()?;
    let client = client.build().map_err(|e| with_causes(&e))?;
    // The reads after the run (the verification, the row check) never wait for ever: a server
    // that hangs rather than refuses would stall them, where a read that times out is tried
    // again within the retry window and then counted as not verified.
    let read_back_client = match config.request_timeout {
        Some(_) => client.clone(),
        None => Client::builder()
            .tcp_nodelay(true)
            .timeout(READ_BACK_TIMEOUT)
            .build()
            .map_err(|e| with_causes(&e))?,
    };
    let history = config
        .history
        .as_deref()
        .map(History::create)
        .transpose()?
        .map(Arc::new);
    let urls: Arc<Vec<String>> = Arc::new(
        config
            .urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect(),
    );
    let mut existing = None;
    let event_id = match &config.event_id {
        Some(id) => {
            existing = Some(existing_event(&client, &urls[0], id).await?);
            id.clone()
        }
        None => {
            create_event(
                &client,
                &urls[0],
                config,
                catalogue,
                token,
                history.as_deref(),
            )
            .await?
        }
    };
    let ticket_types = if catalogue.has_lines() {
        let setup = Setup {
            client: &client,
            token,
            history: history.as_deref(),
        };
        ticket_types(&setup, &urls[0], &event_id, config, catalogue).await?
    } else {
        Vec::new()
    };
    if let Some(event) = &existing {
        if journey.decline_share > 0.0 {
            refuse_free_types(event, &ticket_types)?;
        }
        if !config.read_only {
            refuse_over_max_per_order(event, &ticket_types, config.quantity)?;
            refuse_closed_sales(event, &ticket_types, time::OffsetDateTime::now_utc())?;
        }
    }
    if !config.read_only {
        probe_order_size(&client, &urls[0], config, catalogue, &ticket_types).await?;
    }

    // The verification reads the quotas, an organiser's route: a server that keeps it for its
    // token says so now, before the load, rather than after it.
    if !config.no_verify {
        quotas(&client, &urls[0], &event_id, token)
            .await
            .map_err(|e| format!("before the run: {e}"))?;
    }
    // The row check, refunds and check-ins send the token to admin-only routes, which refuse
    // a wrong one even on a server that has none (and so took it for the event): found now.
    if let Some(token) = token {
        report_route(&client, &urls[0], &event_id, token).await?;
    }
    // One retry window for every read after the run, the verification's and the row check's.
    let window = Arc::new(ReadWindow::new(retry_for));

    let watchers = if config.idle_streams > 0 {
        Some(
            Watchers::open(
                &urls,
                &event_id,
                config.idle_streams,
                config.stream_sources as usize,
                config.server_pid,
                config.reconnect_streams,
            )
            .await?,
        )
    } else {
        None
    };

    let limit = request_limit(config);
    let deadline = run_for.map(|d| Instant::now() + d);
    let run_tag = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let buyer_prefix = format!("load-{run_tag}-");

    let started = Instant::now();
    let (tally, samples, expected, summary) = if journey.is_active() {
        let target = journey::Target {
            client: client.clone(),
            urls: urls.to_vec(),
            event_id: event_id.clone(),
            ticket_types,
            max_lines: catalogue.max_lines.into(),
            quantity: config.quantity,
            buyer_prefix,
            buyers: config.buyers,
            pay: config.pay,
            clients: config.clients,
            limit,
            duration: run_for,
            history: history.clone(),
            keyed: config.keyed,
            retry_for,
        };
        let collected = journey::run(target, journey).await?;
        (
            collected.totals,
            collected.samples,
            collected.expected,
            Some(collected.summary),
        )
    } else {
        let plan = Plan {
            clients: config.clients,
            requests: limit,
            deadline,
            quantities: vec![config.quantity],
            ticket_types,
            max_lines: catalogue.max_lines.into(),
            buyer_prefix,
            buyers: config.buyers,
            pay_every: config.pay.then_some(1),
            read_only: config.read_only,
            client: Some(client.clone()),
            history: history.clone(),
            ..Plan::new(urls.to_vec(), event_id.clone())
        };
        let recorder = Arc::new(Recorder::new(config.clients));
        let tally = drive(&plan, recorder.clone()).await?;
        let recorded = recorder.merged();
        let expected = recorded
            .paid
            .into_iter()
            .map(|id| (id, Expect::Purchased))
            .collect();
        (tally, recorded.samples, expected, None)
    };
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(history) = &history {
        history.finish()?;
    }
    let streams = match watchers {
        Some(watchers) => {
            tokio::time::sleep(hold_streams).await;
            // Read as the verification reads: retried within --retry-seconds while the
            // server does not answer (its database failing over just after the run), each
            // try bounded by the read-back timeout, so a blip here does not lose the run.
            let window = ReadWindow::new(retry_for);
            let read = || async {
                let counts = window
                    .retrying(|| event_counts(&read_back_client, &urls[0], &event_id))
                    .await
                    .map_err(|failure| format!("reading the event's final counts: {failure}"))?;
                Ok::<_, String>([
                    counts.total,
                    counts.available,
                    counts.reserved,
                    counts.purchased,
                ])
            };
            // Every stream ends on the final state within a few of its 100 ms intervals.
            Some(
                watchers
                    .finish(read, Duration::from_secs(1), Duration::from_secs(30))
                    .await,
            )
        }
        None => None,
    };

    let mut answered_us = Vec::new();
    let mut failed_us = Vec::new();
    let mut pay_us = Vec::new();
    let mut answers = BTreeMap::<(&'static str, Option<u16>, Option<String>), u64>::new();
    for sample in &samples {
        *answers
            .entry((sample.step, sample.status, sample.code.clone()))
            .or_default() += 1;
        if sample.step == "pay" && sample.status.is_some() {
            pay_us.push(sample.latency_us);
        }
        if matches!(sample.step, "purchase" | "read") {
            if sample.status.is_some_and(|s| s < 500) {
                answered_us.push(sample.latency_us);
            } else {
                failed_us.push(sample.latency_us);
            }
        }
    }
    answered_us.sort_unstable();
    failed_us.sort_unstable();
    pay_us.sort_unstable();
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
        let verification = verify(
            &read_back_client,
            &urls,
            &event_id,
            &tally.granted,
            &expected,
            config.clients,
            token,
            summary.is_some(),
            &window,
        )
        .await?;
        Some(match token {
            Some(token) => {
                match check_rows(&read_back_client, &urls[0], &event_id, token, &window).await {
                    Ok(rows) => Verification {
                        rows: Some(rows),
                        ..verification
                    },
                    Err(failure) => verification.with_unread(failure.unread(Unreadable::Rows)),
                }
            }
            None => verification,
        })
    };
    let mut report = Report {
        event_id,
        clients: connections,
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
        payments_per_second: tally.payments_succeeded as f64 / elapsed,
        pay_latency_ms: latency(&pay_us),
        transport_errors: tally.transport_errors,
        latency_ms: latency(&answered_us),
        failed_requests: failed_us.len() as u64,
        failed_latency_ms: latency(&failed_us),
        statuses: tally.statuses,
        codes: tally.codes,
        answers: answers
            .into_iter()
            .map(|((action, status, code), count)| Answer {
                action,
                status,
                code,
                count,
            })
            .collect(),
        verification,
        steps: steps::steps(&samples, elapsed),
        journey: summary,
        streams,
        sound: false,
        verdict: Vec::new(),
    };
    report.verdict = report.reasons();
    report.sound = report.verdict.is_empty();
    Ok(report)
}

/// The most requests (or buyers) of a run: `--requests`, or 10,000 without a `--duration`.
fn request_limit(config: &Config) -> u64 {
    match (config.requests, config.duration) {
        (Some(requests), _) => requests,
        (None, None) => 10_000,
        (None, Some(_)) => u64::MAX,
    }
}

/// What a user should know before a run starts, though it may run: an open model whose
/// arrivals cannot all start within their schedule at its `--max-in-flight`
/// ([`Journey::start_warning`]).
pub fn start_warning(config: &Config, journey: &Journey) -> Option<String> {
    let duration = config
        .duration
        .and_then(|seconds| flags::duration("--duration", seconds).ok());
    journey.start_warning(request_limit(config), duration)
}

/// Refuses a `--url` that is not an absolute http(s) URL, naming it, before anything is sent.
fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(()),
        Ok(_) => Err(format!(
            "--url {url:?} is not an http:// or https:// URL with a host"
        )),
        Err(e) => Err(format!("--url {url:?} is not a URL: {e}")),
    }
}

/// With the organiser's token when one is given.
fn organiser(request: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// An error with the errors that caused it, outermost first: reqwest's "error sending
/// request" says nothing until its causes say "Connection refused" or "connection reset".
pub(crate) fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}

/// Sends `request` and returns the answer's JSON if its status is `expected`.
async fn exchange(
    request: reqwest::RequestBuilder,
    expected: StatusCode,
    what: &str,
) -> Result<Value, String> {
    let response = request
        .send()
        .await
        .map_err(|e| format!("{what}: {}", with_causes(&e)))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("{what}: {status}: {}", with_causes(&e)))?;
    if status != expected {
        return Err(format!("{what}: {status} {body}"));
    }
    Ok(body)
}

/// Sends an organiser's setup call (creating the event, its types, its quotas), recorded in
/// the history when there is one, so that the checker knows the capacities the run set; the
/// answer's JSON if its status is `expected`.
async fn setup_call(
    history: Option<&History>,
    request: reqwest::RequestBuilder,
    expected: StatusCode,
    what: &str,
) -> Result<Value, String> {
    let Some(history) = history else {
        return exchange(request, expected, what).await;
    };
    match history::send(Some(history), history.next_call(), 1, request).await {
        Some((status, body, _)) if status == expected => Ok(body),
        Some((status, body, _)) => Err(format!("{what}: {status} {body}")),
        None => Err(format!("{what}: no answer")),
    }
}

/// What the setup calls share: the client, the organiser's token, the history.
struct Setup<'a> {
    client: &'a Client,
    token: Option<&'a str>,
    history: Option<&'a History>,
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
    token: Option<&str>,
    history: Option<&History>,
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
    let request = organiser(client.post(format!("{base}/events")), token).json(&body);
    let event = setup_call(history, request, StatusCode::CREATED, "creating the event").await?;
    id(&event, "event")
}

/// The ids of the types to order from: on an event of the tool's, its default type and the
/// ones it creates now (then the quotas of the layout); on a given event, its first types.
async fn ticket_types(
    setup: &Setup<'_>,
    base: &str,
    event_id: &str,
    config: &Config,
    catalogue: &Catalogue,
) -> Result<Vec<String>, String> {
    let (client, token) = (setup.client, setup.token);
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
            let created = setup_call(
                setup.history,
                organiser(client.post(&url), token).json(&body),
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
                setup_call(
                    setup.history,
                    organiser(client.post(&quotas), token).json(&body),
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

/// Reads the `--event-id` event with its ticket types; refuses one the server does not have,
/// before the load, whose every purchase would be answered 404.
async fn existing_event(client: &Client, base: &str, id: &str) -> Result<Value, String> {
    let what = format!("before the run: reading the event (--event-id {id})");
    let response = client
        .get(format!("{base}/events/{id}"))
        .send()
        .await
        .map_err(|e| format!("{what}: {}", with_causes(&e)))?;
    match response.status() {
        StatusCode::OK => response
            .json()
            .await
            .map_err(|e| format!("{what}: {}", with_causes(&e))),
        StatusCode::NOT_FOUND => Err(format!(
            "--event-id {id}: no such event at {base} (404); no purchase was sent"
        )),
        status => Err(format!("{what}: {status}")),
    }
}

/// Refuses `--decline-share` on an existing event (`event`, as `GET /events/{id}` gave it)
/// when a type the run orders is free, as it is refused for an event the tool would create
/// unpriced: a free order is confirmed whatever the card, so a declining card would be
/// answered 200 and the run called unsound for it. `ordered`: the types of a `{lines}` run;
/// empty, the event's default type (its first).
fn refuse_free_types(event: &Value, ordered: &[String]) -> Result<(), String> {
    let free =
        ordered_types(event, ordered).find(|t| t["price"].as_i64().is_none_or(|price| price <= 0));
    match free {
        Some(t) => Err(format!(
            "--decline-share needs every ticket type priced above 0: the event's type {} ({}) \
             is free, and a free order is confirmed whatever the card; no purchase was sent",
            t["name"], t["id"]
        )),
        None => Ok(()),
    }
}

/// Refuses a run on an existing event (`event`, as `GET /events/{id}` gave it) whose lines
/// of `quantity` tickets exceed a type's own `maxPerOrder`: every hold of that type would be
/// answered 422, a refusal the tool provoked. `ordered` as for [`refuse_free_types`].
fn refuse_over_max_per_order(
    event: &Value,
    ordered: &[String],
    quantity: i64,
) -> Result<(), String> {
    let over = ordered_types(event, ordered)
        .find(|t| t["maxPerOrder"].as_i64().is_some_and(|max| max < quantity));
    match over {
        Some(t) => Err(format!(
            "--quantity {quantity} is above the maxPerOrder {} of the event's type {} ({}): \
             the server refuses such a line; lower --quantity; no purchase was sent",
            t["maxPerOrder"], t["name"], t["id"]
        )),
        None => Ok(()),
    }
}

/// Refuses a run on an existing event (`event`, as `GET /events/{id}` gave it) that is not
/// on sale at `now`, or a type the run orders that is not: every hold would be answered 409
/// `SALES_CLOSED`, a refusal the tool provoked. A sale is open from its `salesStartAt`
/// (inclusive) to its `salesEndAt` (exclusive), `null` an open end; the event's window and
/// each type's must both hold. `ordered` as for [`refuse_free_types`]. The server judges by
/// the database's clock, this by the tool's: a window that opens or closes within the run
/// still shows in its answers.
fn refuse_closed_sales(
    event: &Value,
    ordered: &[String],
    now: time::OffsetDateTime,
) -> Result<(), String> {
    let of_event = std::iter::once((format!("the event {}", event["id"]), event));
    let of_types = ordered_types(event, ordered)
        .map(|t| (format!("the event's type {} ({})", t["name"], t["id"]), t));
    for (what, on_sale) in of_event.chain(of_types) {
        let at = |field: &str| {
            on_sale[field].as_str().map(|text| {
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map(|at| (text, at))
                    .map_err(|e| format!("{what}: {field} {text:?} is not an RFC 3339 time: {e}"))
            })
        };
        let why = match (
            at("salesStartAt").transpose()?,
            at("salesEndAt").transpose()?,
        ) {
            (Some((text, start)), _) if now < start => format!("its sales start at {text}"),
            (_, Some((text, end))) if now >= end => format!("its sales ended at {text}"),
            _ => continue,
        };
        return Err(format!(
            "{what} is not on sale now: {why}, and the server would refuse every hold \
             (409 SALES_CLOSED); run while it is on sale, or on another event; no purchase \
             was sent"
        ));
    }
    Ok(())
}

/// The ticket types of `event` (as `GET /events/{id}` gave it) that a run orders: those of
/// `ordered` (the types of a `{lines}` run) or, when it is empty, the event's default type
/// (its first), which `{quantity}` orders buy.
fn ordered_types<'a>(event: &'a Value, ordered: &'a [String]) -> impl Iterator<Item = &'a Value> {
    event["ticketTypes"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .enumerate()
        .filter(move |(k, t)| match ordered {
            [] => *k == 0,
            ids => ids.iter().any(|id| t["id"] == id.as_str()),
        })
        .map(|(_, t)| t)
}

/// Why a read after the run failed.
#[derive(Debug)]
enum ReadFailure {
    /// No answer, a 5xx, 408 or 429 ([`retried`]): tried again while the [`ReadWindow`] is
    /// open; still failing then, the verification is incomplete.
    Unanswered(String),
    /// An answer the server stands by that is not what was read for (a 4xx, or a body that
    /// is not the resource): not tried again, and a fault of the run.
    Answered(String),
}

impl ReadFailure {
    /// The failure of a read whose answer had `status`.
    fn of(status: StatusCode, message: String) -> Self {
        if retried(status) {
            Self::Unanswered(message)
        } else {
            Self::Answered(message)
        }
    }

    /// The failure of reading an answer's body: a body cut off is no answer; a whole body
    /// that is not the JSON asked for is the server's.
    fn of_body(status: StatusCode, err: &reqwest::Error, what: &str) -> Self {
        let message = format!("{what}: {status}: {}", with_causes(err));
        if err.is_decode() {
            Self::of(status, message)
        } else {
            Self::Unanswered(message)
        }
    }

    /// What the report says of `what` left unread by this failure.
    fn unread(self, what: Unreadable) -> Unread {
        let answered = matches!(self, Self::Answered(_));
        Unread {
            what,
            error: self.to_string(),
            answered,
        }
    }
}

impl std::fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unanswered(message) | Self::Answered(message) => f.write_str(message),
        }
    }
}

/// `request`'s answer as JSON, when it is 200.
async fn read(request: reqwest::RequestBuilder, what: &str) -> Result<Value, ReadFailure> {
    let response = request
        .send()
        .await
        .map_err(|e| ReadFailure::Unanswered(format!("{what}: {}", with_causes(&e))))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| ReadFailure::of_body(status, &e, what))?;
    if status != StatusCode::OK {
        return Err(ReadFailure::of(status, format!("{what}: {status} {body}")));
    }
    Ok(body)
}

/// The event's counts.
async fn event_counts(
    client: &Client,
    base: &str,
    event_id: &str,
) -> Result<EventCounts, ReadFailure> {
    let event = read(
        client.get(format!("{base}/events/{event_id}")),
        "reading the event back",
    )
    .await?;
    let count = |field: &str| event[field].as_i64().unwrap_or(-1);
    Ok(EventCounts {
        total: count("totalTickets"),
        available: count("availableTickets"),
        reserved: count("reservedTickets"),
        purchased: count("purchasedTickets"),
    })
}

/// The event's quotas; none from a server without quotas (404 on the route).
async fn quotas(
    client: &Client,
    base: &str,
    event_id: &str,
    token: Option<&str>,
) -> Result<Vec<QuotaCounts>, ReadFailure> {
    let what = "reading the quotas back";
    let response = organiser(
        client.get(format!("{base}/events/{event_id}/quotas")),
        token,
    )
    .send()
    .await
    .map_err(|e| ReadFailure::Unanswered(format!("{what}: {}", with_causes(&e))))?;
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        return Ok(Vec::new());
    }
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Err(ReadFailure::Answered(format!(
            "reading the quotas back: {}: the server keeps an event's quotas for its \
             organiser, and the verification reads them: give the server's --admin-token \
             (or --no-verify)",
            status
        )));
    }
    if status != StatusCode::OK {
        return Err(ReadFailure::of(status, format!("{what}: {status}")));
    }
    let listed: Value = response
        .json()
        .await
        .map_err(|e| ReadFailure::of_body(status, &e, what))?;
    let count = |q: &Value, field: &str| q[field].as_i64().unwrap_or(-1);
    items(&listed)
        .iter()
        .map(|q| {
            Ok(QuotaCounts {
                id: id(q, "quota").map_err(ReadFailure::Answered)?,
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
/// `expected`: what the buyers were told of their holds ([`Expect`]); a hold whose payment
/// was answered 200 must read back `purchased`, the others the status they were told.
/// `releases`: whether holds may have ended during the run ([`Verification::with_releases`]).
/// A read that gets no answer, a 5xx, 408 or 429 is tried again while `window` is open; an
/// allocation still unread then is counted unverified, never missing, and once a read fails
/// with the window closed the server is taken as gone ([`ReadWindow::gone`]): the reads left
/// are not tried. The event's counts or quotas that could not be read are named in
/// [`Verification::unread`] and nothing is judged by them.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the run's facts the verification judges by"
)]
async fn verify(
    client: &Client,
    urls: &[String],
    event_id: &str,
    granted: &[Granted],
    expected: &HashMap<String, Expect>,
    clients: usize,
    token: Option<&str>,
    releases: bool,
    window: &Arc<ReadWindow>,
) -> Result<Verification, String> {
    let counts = window
        .retrying(|| event_counts(client, &urls[0], event_id))
        .await;
    let quotas = window
        .retrying(|| quotas(client, &urls[0], event_id, token))
        .await;
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
    let expected = Arc::new(expected.clone());
    let mut readers = Vec::new();
    for worker in 0..clients.clamp(1, 256) {
        let (client, granted, expected, next, window) = (
            client.clone(),
            granted.clone(),
            expected.clone(),
            next.clone(),
            window.clone(),
        );
        let base = urls[worker % urls.len()].clone();
        let event_id = event_id.to_owned();
        readers.push(tokio::spawn(async move {
            let mut read_back = ReadBack::default();
            let mut held_by_type = BTreeMap::<String, i64>::new();
            let mut wrong = Vec::new();
            let mut early = Vec::new();
            let mut unread = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(g) = granted.get(i) else {
                    break;
                };
                read_back.checked += 1;
                if window.gone() {
                    read_back.unverified += 1;
                    read_back.tickets_not_read_back += g.quantity;
                    unread.push(format!("{}: {NOT_TRIED}", g.allocation_id));
                    continue;
                }
                let url = format!("{base}/tickets/{}", g.allocation_id);
                let answered = loop {
                    let request = client.get(&url).header("X-Device-Fingerprint", &g.buyer);
                    let answered = history::send(None, 0, 1, request).await;
                    if !unanswered(&answered) || !window.still_open() {
                        break answered;
                    }
                    tokio::time::sleep(history::retry_wait(&answered)).await;
                    // Another reader found the server gone meanwhile.
                    if window.gone() {
                        break answered;
                    }
                };
                if unanswered(&answered) {
                    // Neither found nor found missing: judged on nothing else either.
                    read_back.unverified += 1;
                    read_back.tickets_not_read_back += g.quantity;
                    unread.push(format!(
                        "{}: {}",
                        g.allocation_id,
                        answered
                            .as_ref()
                            .map_or("no answer".to_owned(), |(status, _, _)| status.to_string())
                    ));
                    continue;
                }
                let body = match answered {
                    Some((StatusCode::OK, body, _)) => body,
                    _ => Value::Null,
                };
                let found = body["eventId"] == event_id.as_str()
                    && body["quantity"].as_i64() == Some(g.quantity)
                    && order::lines_of(&body) == g.lines;
                let status = body["status"].as_str().unwrap_or_default();
                if !found {
                    read_back.missing += 1;
                    read_back.tickets_not_read_back += g.quantity;
                } else if matches!(status, "reserved" | "payment_pending" | "purchased") {
                    read_back.tickets_held += g.quantity;
                    for line in &g.lines {
                        *held_by_type.entry(line.ticket_type_id.clone()).or_default() +=
                            line.quantity;
                    }
                } else if matches!(status, "expired" | "cancelled") {
                    read_back.tickets_released += g.quantity;
                } else if status == "refunded" {
                    read_back.tickets_refunded += g.quantity;
                }
                if status == "expired"
                    && let Some(told) = &g.expires_at
                    && report::lapsed_early(
                        told,
                        body["expiredAt"].as_str(),
                        time::OffsetDateTime::now_utc(),
                    )
                {
                    read_back.expired_early += 1;
                    early.push(format!(
                        "{}: expiresAt {told}, expired {}",
                        g.allocation_id,
                        body["expiredAt"].as_str().unwrap_or("(not given)")
                    ));
                }
                match expected.get(&g.allocation_id) {
                    Some(expect @ (Expect::Purchased | Expect::CheckedIn(_))) => {
                        read_back.paid_checked += 1;
                        if status != "purchased" {
                            read_back.paid_not_purchased += 1;
                        }
                        // Admitted at the door: the status told is its admission's.
                        if let Expect::CheckedIn(admission) = expect {
                            read_back.statuses_checked += 1;
                            let read = journey::admission_status(&body, admission);
                            if read != Some("checked_in") {
                                read_back.wrong_status += 1;
                                wrong.push(format!(
                                    "{}: admission {admission} admitted at the door, read {}",
                                    g.allocation_id,
                                    read.unwrap_or("nothing")
                                ));
                            }
                        }
                    }
                    Some(expect) => {
                        read_back.statuses_checked += 1;
                        if !expect.allows(status) {
                            read_back.wrong_status += 1;
                            wrong.push(format!(
                                "{}: told {expect}, read {}",
                                g.allocation_id,
                                if status.is_empty() { "nothing" } else { status }
                            ));
                        }
                    }
                    None => {}
                }
            }
            (read_back, held_by_type, wrong, early, unread)
        }));
    }
    let mut read_back = ReadBack::default();
    let mut held_by_type = BTreeMap::new();
    let mut wrong_status_examples = Vec::new();
    let mut expired_early_examples = Vec::new();
    let mut unverified_examples = Vec::new();
    for reader in readers {
        let (one, held, mut wrong, mut early, mut unread) =
            reader.await.map_err(|e| e.to_string())?;
        wrong_status_examples.append(&mut wrong);
        expired_early_examples.append(&mut early);
        unverified_examples.append(&mut unread);
        read_back.unverified += one.unverified;
        read_back.expired_early += one.expired_early;
        read_back.statuses_checked += one.statuses_checked;
        read_back.wrong_status += one.wrong_status;
        read_back.checked += one.checked;
        read_back.missing += one.missing;
        read_back.tickets_held += one.tickets_held;
        read_back.tickets_released += one.tickets_released;
        read_back.tickets_refunded += one.tickets_refunded;
        read_back.tickets_not_read_back += one.tickets_not_read_back;
        read_back.paid_checked += one.paid_checked;
        read_back.paid_not_purchased += one.paid_not_purchased;
        for (ticket_type, tickets) in held {
            *held_by_type.entry(ticket_type).or_default() += tickets;
        }
    }
    wrong_status_examples.truncate(5);
    expired_early_examples.truncate(5);
    unverified_examples.truncate(5);
    let verification = match counts {
        Ok(counts) => Verification::new(counts, tickets_granted, read_back),
        Err(failure) => Verification::without_counts(
            tickets_granted,
            read_back,
            failure.unread(Unreadable::Event),
        ),
    };
    let verification = match quotas {
        Ok(quotas) => verification.with_quotas(quotas, granted_by_type, held_by_type),
        Err(failure) => verification
            .with_quotas(Vec::new(), granted_by_type, held_by_type)
            .with_unread(failure.unread(Unreadable::Quotas)),
    };
    let verification = if releases {
        verification.with_releases()
    } else {
        verification
    };
    Ok(Verification {
        wrong_status_examples,
        expired_early_examples,
        unverified_examples,
        ..verification
    })
}

/// Whether a read got no answer the server stands by: none at all, or [`retried`].
fn unanswered(answered: &history::Answered) -> bool {
    answered
        .as_ref()
        .is_none_or(|(status, _, _)| retried(*status))
}

/// Whether an answer is one the server does not stand by, a read after the run tries again:
/// a 5xx, 408 or 429 (a server or its database failing over, or shedding load). It says
/// nothing of the resource.
fn retried(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(
            status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
        )
}

/// Why a read after the run was not tried at all.
/// Most `--stream-sources`: the loopback addresses from 127.0.0.2 to 127.255.255.255.
const MAX_STREAM_SOURCES: i64 = (1 << 24) - 2;

const NOT_TRIED: &str = "not tried: a read had failed after --retry-seconds ran out, so the \
                         server was taken as gone";

/// How long the server may send nothing on a request of the run without `--request-timeout`:
/// twice the server's default request timeout (30 s), after which the server answers 503
/// itself. Without a bound a server that hangs (stopped, frozen) was waited for past
/// `--duration`, for ever. A wait for the next bytes, not for the whole answer: a watcher's
/// stream, which gets a message or a keep-alive every 15 s, stays open as long as its journey.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one read after the run may take without `--request-timeout`: a healthy server
/// answers one in milliseconds, so only a hung one reaches it.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The retry window of the reads after the run (the verification's and the row check's): it
/// opens at the first read that fails ([`unanswered`]) and stays open `--retry-seconds`, for
/// every read at once, so that a server gone for good costs that long once, not once per
/// read. A read that fails once it has closed marks the server gone ([`ReadWindow::gone`]):
/// the reads left are not tried, so that a server that hangs costs the window and a read
/// timeout or two, not a read timeout per allocation. A server that failed and recovered
/// within the window is read as usual after it closed.
struct ReadWindow {
    length: Duration,
    opened: OnceLock<Instant>,
    gone: AtomicBool,
}

impl ReadWindow {
    fn new(length: Duration) -> Self {
        Self {
            length,
            opened: OnceLock::new(),
            gone: AtomicBool::new(false),
        }
    }

    /// Called after a read failed: whether it may be tried again (opening the window if
    /// this is the first failure; marking the server gone if the window is closed).
    fn still_open(&self) -> bool {
        let open = self.opened.get_or_init(Instant::now).elapsed() < self.length;
        if !open {
            self.gone.store(true, Ordering::Relaxed);
        }
        open
    }

    /// Whether a read failed after the window closed: no read is tried any more.
    fn gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// `read`, tried again after 500 ms while it gets no answer ([`ReadFailure::Unanswered`])
    /// and the window is open; at once its failure when the server answered otherwise, and
    /// its last failure once the window is closed or the server gone.
    async fn retrying<T, F, Fut>(&self, mut read: F) -> Result<T, ReadFailure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ReadFailure>>,
    {
        let mut last = None;
        loop {
            if self.gone() {
                return Err(last.unwrap_or_else(|| ReadFailure::Unanswered(NOT_TRIED.into())));
            }
            match read().await {
                Ok(value) => return Ok(value),
                Err(failure @ ReadFailure::Unanswered(_)) if self.still_open() => {
                    last = Some(failure);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(failure) => return Err(failure),
            }
        }
    }
}

/// Refuses, before the load, orders larger than the server takes in one purchase (its
/// `--max-tickets-per-purchase`, which no route reads out): every hold of the run would be
/// answered 422, a refusal the tool provoked. The server checks an order's size before it
/// looks for the event, so the run's largest order is sent for an event no server has
/// (the nil id): 422 is the refusal, and anything else (404) buys nothing either.
async fn probe_order_size(
    client: &Client,
    base: &str,
    config: &Config,
    catalogue: &Catalogue,
    ticket_types: &[String],
) -> Result<(), String> {
    let lines: Vec<order::Line> = ticket_types
        .iter()
        .take(catalogue.max_lines.into())
        .map(|id| order::Line {
            ticket_type_id: id.clone(),
            quantity: config.quantity,
        })
        .collect();
    let what = "before the run: sending the run's largest order for no event";
    let response = client
        .post(format!("{base}/events/{}/tickets", uuid::Uuid::nil()))
        .header("X-Device-Fingerprint", "boxoffice-load-order-size")
        .json(&order::body(&lines, config.quantity))
        .send()
        .await
        .map_err(|e| format!("{what}: {}", with_causes(&e)))?;
    if response.status() != StatusCode::UNPROCESSABLE_ENTITY {
        return Ok(());
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let asked = match lines.len() {
        0 | 1 => format!("--quantity {}", config.quantity),
        n => format!(
            "--quantity {} on up to --max-lines {n} lines, {} tickets",
            config.quantity,
            config.quantity * n as i64
        ),
    };
    Err(format!(
        "before the run: the server refuses an order of {asked} in one purchase (422 {}): \
         lower --quantity or --max-lines, or raise the server's --max-tickets-per-purchase; \
         no purchase was sent",
        body["details"]
    ))
}

/// Refuses, before the load, a `--admin-token` the sales report (`GET /events/{id}/report`,
/// admin only) answers 401 or 403 for: the row check after the run would fail on it, and the
/// refunds and check-ins it signs be refused. Any other answer is left to the row check.
async fn report_route(
    client: &Client,
    base: &str,
    event_id: &str,
    token: &str,
) -> Result<(), String> {
    let what = "before the run: reading the sales report with --admin-token";
    let response = client
        .get(format!("{base}/events/{event_id}/report"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("{what}: {}", with_causes(&e)))?;
    match response.status() {
        status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => Err(format!(
            "{what}: {status}: the server does not take this token on its admin-only routes \
             (the sales report the verification compares with the rows, refunds, check-ins), \
             even if it has no token of its own; give its --admin-token or an organiser token, \
             or drop --admin-token"
        )),
        _ => Ok(()),
    }
}

/// How many times [`check_rows`] reads before it gives up on a quiet moment.
const ROW_CHECK_TRIES: u32 = 20;

/// Compares the event's and its quotas' counts with the rows, as the sales report
/// (`GET /events/{id}/report`, admin only) adds them up per ticket type. The report is one
/// snapshot and the counts another, so they are compared only when the counts read just
/// before and just after the report agree (nothing moved meanwhile, e.g. the sweeper expiring
/// holds); otherwise it reads again, a few times. Each read is retried within `window`, as
/// the verification's; one that still fails leaves the check unmade.
async fn check_rows(
    client: &Client,
    base: &str,
    event_id: &str,
    token: &str,
    window: &ReadWindow,
) -> Result<RowCheck, ReadFailure> {
    let counts = || async {
        let event = window
            .retrying(|| event_counts(client, base, event_id))
            .await?;
        let quotas = window
            .retrying(|| quotas(client, base, event_id, Some(token)))
            .await?;
        Ok::<_, ReadFailure>((event, quotas))
    };
    let mut check = RowCheck::default();
    for tries in 1..=ROW_CHECK_TRIES {
        let before = counts().await?;
        let report = window
            .retrying(|| {
                read(
                    client
                        .get(format!("{base}/events/{event_id}/report"))
                        .bearer_auth(token),
                    "reading the sales report",
                )
            })
            .await?;
        let after = counts().await?;
        let mut rows = BTreeMap::<String, (i64, i64)>::new();
        for line in report["ticketTypes"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
        {
            let id = line["ticketTypeId"].as_str().unwrap_or_default().to_owned();
            let field = |name: &str| line[name].as_i64().unwrap_or(-1);
            rows.insert(id, (field("reserved"), field("purchased")));
        }
        check = RowCheck::new(tries, before == after, &after.0, &after.1, &rows);
        if check.quiet {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declining_card_is_refused_on_any_free_type_the_run_orders() {
        let event = json!({"ticketTypes": [
            {"id": "a", "name": "General admission", "price": 0},
            {"id": "b", "name": "VIP", "price": 2500},
            {"id": "c", "name": "Balcony", "price": 0},
        ]});
        // `{quantity}` orders buy the default type, the first.
        let err = refuse_free_types(&event, &[]).unwrap_err();
        assert!(
            err.starts_with("--decline-share needs every ticket type priced above 0"),
            "{err}"
        );
        assert!(err.contains("General admission"), "{err}");
        assert_eq!(refuse_free_types(&event, &["b".into()]), Ok(()));
        let err = refuse_free_types(&event, &["b".into(), "c".into()]).unwrap_err();
        assert!(err.contains("Balcony"), "{err}");
    }

    #[test]
    fn a_line_above_a_type_s_own_limit_is_refused_on_any_type_the_run_orders() {
        let event = json!({"ticketTypes": [
            {"id": "a", "name": "General admission", "maxPerOrder": 4},
            {"id": "b", "name": "VIP", "maxPerOrder": null},
            {"id": "c", "name": "Balcony", "maxPerOrder": 2},
        ]});
        // `{quantity}` orders buy the default type, the first.
        assert_eq!(refuse_over_max_per_order(&event, &[], 4), Ok(()));
        let err = refuse_over_max_per_order(&event, &[], 5).unwrap_err();
        assert!(
            err.starts_with("--quantity 5 is above the maxPerOrder 4"),
            "{err}"
        );
        assert!(err.contains("General admission"), "{err}");
        assert_eq!(refuse_over_max_per_order(&event, &["b".into()], 9), Ok(()));
        let err = refuse_over_max_per_order(&event, &["b".into(), "c".into()], 3).unwrap_err();
        assert!(err.contains("Balcony"), "{err}");
        assert_eq!(
            refuse_over_max_per_order(&event, &["b".into(), "c".into()], 2),
            Ok(())
        );
    }

    /// A URL on this machine where nothing listens.
    fn nothing_listening() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        drop(listener);
        format!("http://127.0.0.1:{port}")
    }

    #[tokio::test]
    async fn a_read_without_an_answer_says_why_not_only_that_sending_failed() {
        let base = nothing_listening();
        let failure = event_counts(&Client::new(), &base, "e").await.unwrap_err();
        let message = failure.to_string();
        assert!(matches!(failure, ReadFailure::Unanswered(_)), "{message}");
        assert!(
            message.starts_with("reading the event back: error sending request"),
            "{message}"
        );
        assert!(
            message.to_lowercase().contains("connection refused"),
            "{message}"
        );
        let err = existing_event(&Client::new(), &base, "e")
            .await
            .unwrap_err();
        assert!(err.to_lowercase().contains("connection refused"), "{err}");
    }

    #[test]
    fn a_run_on_an_event_or_a_type_not_on_sale_now_is_refused() {
        let now = time::OffsetDateTime::parse(
            "2026-12-03T14:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let event = |event: (Value, Value), a: (Value, Value), b: (Value, Value)| {
            json!({
                "id": "e", "salesStartAt": event.0, "salesEndAt": event.1,
                "ticketTypes": [
                    {"id": "a", "name": "General admission", "salesStartAt": a.0, "salesEndAt": a.1},
                    {"id": "b", "name": "VIP", "salesStartAt": b.0, "salesEndAt": b.1},
                ],
            })
        };
        let open = (Value::Null, Value::Null);
        let ended = (json!("2026-11-01T00:00:00Z"), json!("2026-12-03T14:00:00Z"));
        let later = (json!("2026-12-03T14:00:01Z"), Value::Null);
        let started = (json!("2026-12-03T14:00:00Z"), json!("2026-12-03T14:00:01Z"));

        assert_eq!(
            refuse_closed_sales(&event(open.clone(), open.clone(), open.clone()), &[], now),
            Ok(())
        );
        assert_eq!(
            refuse_closed_sales(
                &event(started.clone(), started.clone(), open.clone()),
                &[],
                now
            ),
            Ok(())
        );
        let err = refuse_closed_sales(&event(ended.clone(), open.clone(), open.clone()), &[], now)
            .unwrap_err();
        assert!(
            err.starts_with(
                r#"the event "e" is not on sale now: its sales ended at 2026-12-03T14:00:00Z"#
            ),
            "{err}"
        );
        assert!(err.contains("SALES_CLOSED"), "{err}");
        let err = refuse_closed_sales(&event(later.clone(), open.clone(), open.clone()), &[], now)
            .unwrap_err();
        assert!(
            err.contains("its sales start at 2026-12-03T14:00:01Z"),
            "{err}"
        );
        // A type's own window, of the types the run orders only.
        let closed_vip = event(open.clone(), open.clone(), ended.clone());
        assert_eq!(refuse_closed_sales(&closed_vip, &[], now), Ok(()));
        assert_eq!(refuse_closed_sales(&closed_vip, &["a".into()], now), Ok(()));
        let err = refuse_closed_sales(&closed_vip, &["a".into(), "b".into()], now).unwrap_err();
        assert!(
            err.starts_with(r#"the event's type "VIP" ("b") is not on sale now"#),
            "{err}"
        );
        let err = refuse_closed_sales(&event(open.clone(), later, open), &[], now).unwrap_err();
        assert!(err.contains("General admission"), "{err}");
    }

    #[tokio::test]
    async fn an_answer_the_server_stands_by_is_not_retried() {
        let window = ReadWindow::new(Duration::from_secs(30));
        let tries = AtomicU64::new(0);
        let started = Instant::now();
        let read = window
            .retrying(|| async {
                tries.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(ReadFailure::Answered("404 Not Found".into()))
            })
            .await;
        assert!(matches!(read, Err(ReadFailure::Answered(_))));
        assert_eq!(tries.load(Ordering::Relaxed), 1);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_read_failing_after_the_window_closed_stops_every_read_left() {
        let window = ReadWindow::new(Duration::from_millis(200));
        let tries = AtomicU64::new(0);
        let failing = || async {
            tries.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(ReadFailure::Unanswered("503".into()))
        };
        assert!(window.retrying(failing).await.is_err());
        assert!(window.gone());
        let tried = tries.load(Ordering::Relaxed);
        // Not tried at all once the server is gone.
        let next = window.retrying(failing).await;
        assert!(matches!(next, Err(ReadFailure::Unanswered(m)) if m == NOT_TRIED));
        assert_eq!(tries.load(Ordering::Relaxed), tried);
    }

    #[tokio::test]
    async fn a_server_that_recovered_is_read_after_the_window_closed() {
        let window = ReadWindow::new(Duration::from_millis(100));
        let tries = AtomicU64::new(0);
        let blip = || async {
            match tries.fetch_add(1, Ordering::Relaxed) {
                0 => Err(ReadFailure::Unanswered("503".into())),
                _ => Ok(()),
            }
        };
        // Its retry comes 500 ms later, after the window closed, and is answered.
        assert!(window.retrying(blip).await.is_ok());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!window.gone());
        assert!(
            window
                .retrying(|| async { Ok::<_, ReadFailure>(()) })
                .await
                .is_ok()
        );
    }
}
