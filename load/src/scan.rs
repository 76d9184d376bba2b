//! Scanning mode (`--scan`): the doors open. The tool first sells and pays for
//! `--scan-tickets` tickets on a new event (orders of up to 10 tickets, each its own buyer),
//! keeps every admission's code from the payment answers, then drives `--clients` door
//! devices that scan codes one after another (`POST /events/{id}/checkins`, the gates taking
//! turns), code `n % codes` for scan `n`: the first pass admits every ticket, later passes
//! are the repeated scans a door sees (409 `ALREADY_CHECKED_IN`).
//!
//! The verification: no code was admitted twice (at most one 200 per code), every code
//! scanned was admitted once (each is a valid ticket), nothing failed, every other answer was
//! 409 `ALREADY_CHECKED_IN`, and the event's check-in statistics count exactly the
//! admissions the tool saw.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::Args;
use reqwest::{Client, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};

use crate::report::{Latency, latency};
use crate::{exchange, id, organiser};

/// Most tickets per order while the tool makes the tickets it scans (the server's default
/// `--max-tickets-per-purchase`).
const TICKETS_PER_ORDER: u64 = 10;
/// Concurrent buyers while the tool makes the tickets it scans.
const SETUP_BUYERS: usize = 32;

/// The scanning mode's flags.
#[derive(Debug, Clone, Args)]
pub struct Scanning {
    /// Check tickets in instead of selling them: make `--scan-tickets` paid tickets on a new
    /// event, then scan their codes with `--clients` door devices for `--duration` seconds
    /// (or `--requests` scans; default one scan per ticket). Reads --url, --clients,
    /// --duration, --requests, --admin-token, --json and the flags below; any other flag (a
    /// sale's) is refused beside it.
    #[arg(long)]
    pub scan: bool,
    /// Tickets to sell and pay before the doors open; each has one code. Needs --scan.
    #[arg(long, allow_negative_numbers = true, default_value_t = 10_000, value_parser = crate::flags::whole::<u64>(1..=1_000_000), requires = "scan")]
    pub scan_tickets: u64,
    /// Gates the devices scan at (`gate-1` … `gate-N`), device `c` at gate `c % N + 1`. Needs
    /// --scan.
    #[arg(long, allow_negative_numbers = true, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..), requires = "scan")]
    pub gates: u16,
    /// A door (or organiser) token for the check-in routes; default: `--admin-token`. Needs
    /// --scan.
    #[arg(long, requires = "scan")]
    pub door_token: Option<String>,
}

/// What a scanning run measured and found.
#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    pub event_id: String,
    /// Door devices scanning at once.
    pub clients: usize,
    /// Codes the tool made (one per ticket sold and paid before the doors opened).
    pub codes: u64,
    /// Seconds the tool took to sell and pay them.
    pub setup_seconds: f64,
    pub elapsed_seconds: f64,
    /// Scans sent, answered or not.
    pub scans: u64,
    pub scans_per_second: f64,
    /// Scans answered 200 (`admitted`).
    pub admitted: u64,
    /// Scans answered 409 `ALREADY_CHECKED_IN`.
    pub duplicates: u64,
    /// Latency of every scan answered below 500, in milliseconds.
    pub latency_ms: Latency,
    /// Answers by status and error code (`200` for an admission).
    pub answers: BTreeMap<String, u64>,
    /// Scans answered 5xx or not at all.
    pub failed: u64,
    /// Codes admitted more than once: must be 0.
    pub admitted_twice: u64,
    /// Codes scanned but never admitted (every code is a valid ticket): must be 0.
    pub never_admitted: u64,
    /// `admitted` of `GET /events/{id}/checkins/stats` after the run.
    pub stats_admitted: i64,
    /// Why the run is not sound; empty when it is.
    pub verdict: Vec<String>,
    pub sound: bool,
}

impl ScanReport {
    fn reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.admitted_twice > 0 {
            reasons.push(format!("{} codes admitted twice", self.admitted_twice));
        }
        if self.never_admitted > 0 {
            reasons.push(format!(
                "{} codes scanned but never admitted",
                self.never_admitted
            ));
        }
        if self.failed > 0 {
            reasons.push(format!("{} scans failed (5xx or no answer)", self.failed));
        }
        if self.stats_admitted != self.admitted as i64 {
            reasons.push(format!(
                "the statistics count {} admitted, the scans saw {}",
                self.stats_admitted, self.admitted
            ));
        }
        // Failures (a 5xx or no answer) are counted once, above, not again here.
        let failure = |answer: &str| {
            answer == "no answer"
                || answer
                    .split(' ')
                    .next()
                    .and_then(|status| status.parse::<u16>().ok())
                    .is_some_and(|status| status >= 500)
        };
        let unexpected: u64 = self
            .answers
            .iter()
            .filter(|(answer, _)| {
                !matches!(answer.as_str(), "200" | "409 ALREADY_CHECKED_IN") && !failure(answer)
            })
            .map(|(_, n)| n)
            .sum();
        if unexpected > 0 {
            reasons.push(format!("{unexpected} scans got an unexpected answer"));
        }
        reasons
    }
}

/// The report as text.
pub fn render_scan(report: &ScanReport) -> String {
    let mut text = format!(
        "event {}\n{} codes made in {:.1} s\n{} scans by {} devices in {:.2} s: {:.0} scans/s\n\
         admitted {}, already checked in {}, failed {}\n\
         latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}\n",
        report.event_id,
        report.codes,
        report.setup_seconds,
        report.scans,
        report.clients,
        report.elapsed_seconds,
        report.scans_per_second,
        report.admitted,
        report.duplicates,
        report.failed,
        report.latency_ms.p50,
        report.latency_ms.p90,
        report.latency_ms.p99,
        report.latency_ms.max,
    );
    for (answer, count) in &report.answers {
        text.push_str(&format!("  {answer}: {count}\n"));
    }
    text.push_str(&format!(
        "codes admitted twice: {}; codes never admitted: {}; statistics admitted: {}\n{}\n",
        report.admitted_twice,
        report.never_admitted,
        report.stats_admitted,
        if report.sound {
            "SOUND".to_owned()
        } else {
            format!("NOT SOUND: {}", report.verdict.join("; "))
        }
    ));
    text
}

/// One scan's answer.
struct Scanned {
    code: u64,
    /// Status, or `None` when no answer came.
    status: Option<u16>,
    error_code: Option<String>,
    latency_us: u64,
}

/// Sells and pays `--scan-tickets` tickets on a new event, then scans their codes.
pub async fn run_scan(
    config: &crate::Config,
    scanning: &Scanning,
    admin_token: Option<&str>,
) -> Result<ScanReport, String> {
    if config.urls.is_empty() || config.clients == 0 {
        return Err("need at least one --url and one client".into());
    }
    // The parser refuses these, and every other flag of a sale, beside --scan
    // ([`crate::flags::refuse_with_scan`]); a `Config` built without it is checked here.
    if config.event_id.is_some() {
        return Err("--scan makes its own event and tickets; drop --event-id".into());
    }
    if config.pay || config.read_only || config.idle_streams > 0 {
        return Err("--scan scans; --pay, --read-only and --idle-streams belong to a sale".into());
    }
    let run_for = config
        .duration
        .map(|s| crate::flags::duration("--duration", s))
        .transpose()?;
    let door_token = scanning
        .door_token
        .as_deref()
        .or(admin_token)
        .ok_or("--scan needs --door-token or --admin-token (the check-in routes need a token)")?
        .to_owned();
    let client = Client::builder()
        .pool_max_idle_per_host(config.clients.max(SETUP_BUYERS))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| crate::with_causes(&e))?;
    let urls: Vec<String> = config
        .urls
        .iter()
        .map(|u| u.trim_end_matches('/').to_owned())
        .collect();

    let setup = Instant::now();
    let event_id = create_event(&client, &urls[0], scanning.scan_tickets, admin_token).await?;
    let codes = Arc::new(make_codes(&client, &urls, &event_id, scanning.scan_tickets).await?);
    let setup_seconds = setup.elapsed().as_secs_f64();

    let scans = config.requests.unwrap_or(if config.duration.is_some() {
        u64::MAX
    } else {
        codes.len() as u64
    });
    let deadline = run_for.map(|d| Instant::now() + d);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut devices = Vec::new();
    for device in 0..config.clients {
        let (client, codes, next, token) = (
            client.clone(),
            codes.clone(),
            next.clone(),
            door_token.clone(),
        );
        let url = format!("{}/events/{event_id}/checkins", urls[device % urls.len()]);
        let gate = format!("gate-{}", device % usize::from(scanning.gates) + 1);
        devices.push(tokio::spawn(async move {
            let mut scanned = Vec::new();
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= scans {
                    break;
                }
                let code = n % codes.len() as u64;
                let body = json!({
                    "code": codes[code as usize],
                    "gate": gate,
                    "nonce": format!("load-{device}-{n}"),
                });
                let sent = Instant::now();
                let answer = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                let (status, error_code) = match answer {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let body: Value = response.json().await.unwrap_or(Value::Null);
                        let error_code = body["code"].as_str().map(str::to_owned);
                        (Some(status), error_code)
                    }
                    Err(_) => (None, None),
                };
                scanned.push(Scanned {
                    code,
                    status,
                    error_code,
                    latency_us: sent.elapsed().as_micros() as u64,
                });
            }
            scanned
        }));
    }
    let mut all = Vec::new();
    for device in devices {
        all.append(&mut device.await.map_err(|e| e.to_string())?);
    }
    let elapsed = started.elapsed().as_secs_f64();

    let stats = exchange(
        client
            .get(format!("{}/events/{event_id}/checkins/stats", urls[0]))
            .bearer_auth(&door_token),
        StatusCode::OK,
        "reading the check-in statistics",
    )
    .await?;
    Ok(judge(
        event_id,
        config.clients,
        codes.len() as u64,
        setup_seconds,
        elapsed,
        all,
        stats["admitted"].as_i64().unwrap_or(-1),
    ))
}

/// Adds up the scans and judges them.
fn judge(
    event_id: String,
    clients: usize,
    codes: u64,
    setup_seconds: f64,
    elapsed: f64,
    scanned: Vec<Scanned>,
    stats_admitted: i64,
) -> ScanReport {
    let mut answers = BTreeMap::<String, u64>::new();
    let mut answered_us = Vec::new();
    let mut failed = 0;
    // Admissions per code scanned: every code is a valid ticket, so each must have been
    // admitted by exactly one of its scans.
    let mut per_code = HashMap::<u64, u64>::new();
    for scan in &scanned {
        let key = match (scan.status, &scan.error_code) {
            (Some(status), Some(code)) => format!("{status} {code}"),
            (Some(status), None) => status.to_string(),
            (None, _) => "no answer".to_owned(),
        };
        *answers.entry(key).or_default() += 1;
        match scan.status {
            Some(status) if status < 500 => answered_us.push(scan.latency_us),
            _ => failed += 1,
        }
        *per_code.entry(scan.code).or_default() += u64::from(scan.status == Some(200));
    }
    answered_us.sort_unstable();
    let admitted = answers.get("200").copied().unwrap_or(0);
    let duplicates = answers.get("409 ALREADY_CHECKED_IN").copied().unwrap_or(0);
    let mut report = ScanReport {
        event_id,
        clients,
        codes,
        setup_seconds,
        elapsed_seconds: elapsed,
        scans: scanned.len() as u64,
        scans_per_second: scanned.len() as f64 / elapsed,
        admitted,
        duplicates,
        latency_ms: latency(&answered_us),
        answers,
        failed,
        admitted_twice: per_code.values().filter(|n| **n > 1).count() as u64,
        never_admitted: per_code.values().filter(|n| **n == 0).count() as u64,
        stats_admitted,
        verdict: Vec::new(),
        sound: false,
    };
    report.verdict = report.reasons();
    report.sound = report.verdict.is_empty();
    report
}

async fn create_event(
    client: &Client,
    base: &str,
    tickets: u64,
    token: Option<&str>,
) -> Result<String, String> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let body = json!({
        "name": format!("Scan test {}", stamp.as_nanos()),
        "date": "2030-01-01T20:00:00Z",
        "totalTickets": tickets,
    });
    let request = organiser(client.post(format!("{base}/events")), token).json(&body);
    let event = exchange(request, StatusCode::CREATED, "creating the event").await?;
    id(&event, "event")
}

/// Holds and pays orders of up to [`TICKETS_PER_ORDER`] tickets, each its own buyer, until
/// `tickets` are sold; returns every admission's code from the payment answers.
async fn make_codes(
    client: &Client,
    urls: &[String],
    event_id: &str,
    tickets: u64,
) -> Result<Vec<String>, String> {
    let orders = tickets.div_ceil(TICKETS_PER_ORDER);
    let next = Arc::new(AtomicU64::new(0));
    let tag = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let mut buyers = Vec::new();
    for worker in 0..SETUP_BUYERS {
        let (client, next, tag) = (client.clone(), next.clone(), tag.clone());
        let base = urls[worker % urls.len()].clone();
        let event_id = event_id.to_owned();
        buyers.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= orders {
                    return Ok::<_, String>(codes);
                }
                let quantity = TICKETS_PER_ORDER.min(tickets - n * TICKETS_PER_ORDER);
                let buyer = format!("scan-{tag}-{n}");
                let hold = exchange(
                    client
                        .post(format!("{base}/events/{event_id}/tickets"))
                        .header("X-Device-Fingerprint", &buyer)
                        .json(&json!({ "quantity": quantity })),
                    StatusCode::CREATED,
                    "holding tickets to scan",
                )
                .await?;
                let hold_id = id(&hold, "hold")?;
                let paid = exchange(
                    client
                        .post(format!("{base}/tickets/{hold_id}/payment"))
                        .header("X-Device-Fingerprint", &buyer)
                        .json(&json!({ "paymentToken": "tok_visa" })),
                    StatusCode::OK,
                    "paying for tickets to scan",
                )
                .await?;
                let admissions = paid["admissions"].as_array().map_or(&[][..], Vec::as_slice);
                if admissions.len() as u64 != quantity {
                    return Err(format!(
                        "a paid order of {quantity} tickets has {} admissions",
                        admissions.len()
                    ));
                }
                for admission in admissions {
                    let code = admission["code"]
                        .as_str()
                        .ok_or_else(|| format!("an admission without a code: {admission}"))?;
                    codes.push(code.to_owned());
                }
            }
        }));
    }
    let mut codes = Vec::with_capacity(tickets as usize);
    for buyer in buyers {
        codes.append(&mut buyer.await.map_err(|e| e.to_string())??);
    }
    Ok(codes)
}

#[cfg(test)]
#[path = "scan/tests.rs"]
mod tests;
