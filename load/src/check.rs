//! `boxoffice-load check`: judges a run's history ([`crate::history`]) against the database,
//! as bank-style history checkers do. It trusts neither the app's counters nor its reports:
//! [`Snapshot::load`] reads the rows with its own SQL, in one repeatable-read transaction, and
//! [`check`] recomputes everything from them and from what the clients were told.
//!
//! What is judged (each a [`Kind`]): tickets conserved for every event of the history and
//! each of its quotas, nothing above its capacity, each capacity the history set still as set,
//! every acknowledged hold, payment, cancel, refund, check-in, join and leave present as its
//! client was told, one outcome per keyed call, at most one effect per call (ambiguous ones
//! included) and one call per acknowledged hold, each admission admitted once and only by a
//! check-in call, every waiting-list entry made by a join, and money conserved between the
//! simulated provider's ledger, the refunds and the allocations.
//!
//! How rows are tied to calls: a hold's allocation carries its buyer's fingerprint only as
//! an HMAC under the server's secret, so the checker hashes each hold call's fingerprint the
//! way the server does (`src/domain/fingerprint.rs`) and groups calls and allocations by
//! (event, hash). Payments, cancels and refunds name their allocation in the path; refunds
//! of a keyed call share a reference prefix derived from the key (`src/payment.rs`); charges
//! name their allocation in their reference (`pay_<allocation>_<nonce>`). Waiting-list
//! entries are tied to joins by the same hash; admissions to check-in calls by the answer's
//! admission id, or by the scanned code, mapped to its admission by the answers that showed
//! it (a payment's `admissions`).
//!
//! Assumptions: the history holds every write made to its events (an event shared with
//! another workload shows that workload's allocations as phantoms), and the database belongs
//! to the run (a charge whose reference names no allocation at all is counted against it).

mod snapshot;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::history::{self, Attempt};
pub use snapshot::Unread;

/// What `check` is given.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// The history file the run wrote (`--history FILE` of the run).
    #[arg(long)]
    pub history: PathBuf,
    /// PostgreSQL URL of the run's database (the one the instances used).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Seconds to wait for the system to settle (no allocation `payment_pending`, no refund
    /// `pending`) before reading it; still unsettled after that is itself a violation.
    #[arg(long, allow_negative_numbers = true, default_value_t = 30, value_parser = crate::flags::whole::<u64>(0..))]
    pub settle_seconds: u64,
    /// The servers' `--fingerprint-secret`, when they were given one; by default the
    /// generated one the database keeps (`settings.fingerprint_secret`).
    #[arg(long, env = "BOXOFFICE_FINGERPRINT_SECRET", hide_env_values = true)]
    pub fingerprint_secret: Option<String>,
    /// How long a database that cannot be reached or read (a failover in progress) is tried
    /// again, every 500 ms, from the first attempt, as a run retries its read-backs. Still
    /// unreadable after that: the check is incomplete (exit 3), nothing judged lost.
    #[arg(long, allow_negative_numbers = true, default_value_t = 60.0, value_parser = crate::flags::seconds)]
    pub retry_seconds: f64,
}

/// Reads the history, waits for the system to settle, loads the snapshot and judges it.
///
/// # Errors
/// [`Unread::Database`] when the database could not be reached or read within
/// `--retry-seconds` (the check is incomplete: nothing judged, nothing found lost);
/// [`Unread::Other`] when the history cannot be read or has no calls, or the database holds
/// none of the history's events (the check did not run). Violations are not errors but the
/// report's content.
pub async fn run(options: &Options) -> Result<Report, Unread> {
    let history = history::read(&options.history).map_err(Unread::Other)?;
    // Before the database: an empty history is wrong whatever the database holds.
    has_calls(&history).map_err(Unread::Other)?;
    let retry =
        crate::flags::duration("--retry-seconds", options.retry_seconds).map_err(Unread::Other)?;
    let snapshot = Snapshot::load(
        &options.database_url,
        &history,
        Duration::from_secs(options.settle_seconds),
        options.fingerprint_secret.as_deref(),
        retry,
    )
    .await?;
    judge(&history, &snapshot).map_err(Unread::Other)
}

/// Judges `history` against `snapshot`, when there is something to judge.
///
/// # Errors
/// A message when the history has no calls, or the snapshot none of its events (the wrong
/// database, or the wrong history): judged, either would read as sound, or as every row
/// missing.
pub fn judge(history: &[Attempt], snapshot: &Snapshot) -> Result<Report, String> {
    has_calls(history)?;
    if snapshot.events.is_empty() {
        return Err("none of the history's events are in this database".to_owned());
    }
    Ok(Report::new(history, snapshot))
}

fn has_calls(history: &[Attempt]) -> Result<(), String> {
    if history.is_empty() {
        return Err("the history has no calls".to_owned());
    }
    Ok(())
}

/// The checker's verdict: what the history holds, and every violation found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Counts of the history and the snapshot.
    pub summary: Summary,
    /// Every violation, in the order the checks ran.
    pub violations: Vec<Violation>,
    /// No violation.
    pub sound: bool,
}

impl Report {
    /// Judges `history` against `snapshot`.
    pub fn new(history: &[Attempt], snapshot: &Snapshot) -> Self {
        let violations = check(history, snapshot);
        Self {
            summary: Summary::new(history, snapshot),
            sound: violations.is_empty(),
            violations,
        }
    }

    /// The report as text: the summary, then one line per violation.
    pub fn render(&self) -> String {
        let s = &self.summary;
        let mut out = format!(
            "history: {} calls, {} attempts, {} ambiguous calls (no definitive answer)\n\
             acknowledged: {} holds, {} payments, {} cancels, {} refunds, {} check-ins\n\
             database: {} events, {} quotas, {} allocations, {} refunds, {} charges\n\
             money (minor units): charged {}, purchased totals {}, provider refunded {}, \
             refunds completed {}, allocations refunded {}\n\
             violations: {}\n",
            s.calls,
            s.attempts,
            s.ambiguous_calls,
            s.acknowledged_holds,
            s.acknowledged_payments,
            s.acknowledged_cancels,
            s.acknowledged_refunds,
            s.acknowledged_checkins,
            s.events,
            s.quotas,
            s.allocations,
            s.refunds,
            s.charges,
            s.charged,
            s.purchased_totals,
            s.provider_refunded,
            s.refunds_completed,
            s.allocations_refunded,
            self.violations.len(),
        );
        for v in &self.violations {
            out.push_str(&format!("  {v}\n"));
        }
        out
    }
}

/// Counts of what was checked. Money in the currency's minor unit, summed over currencies
/// (a run uses one).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Distinct calls (all attempts of a keyed retry are one call).
    pub calls: usize,
    /// Lines of the history.
    pub attempts: usize,
    /// Holds answered 201.
    pub acknowledged_holds: usize,
    /// Payments answered 200 `purchased`.
    pub acknowledged_payments: usize,
    /// Cancels answered 200.
    pub acknowledged_cancels: usize,
    /// Refunds answered 200.
    pub acknowledged_refunds: usize,
    /// Check-ins answered 200 `admitted`.
    pub acknowledged_checkins: usize,
    /// Writes none of whose attempts got a definitive answer (time-outs, cut connections,
    /// 5xx, 429 or `IDEMPOTENCY_IN_PROGRESS` only).
    pub ambiguous_calls: usize,
    /// Events judged.
    pub events: usize,
    /// Their quotas.
    pub quotas: usize,
    /// Their allocations.
    pub allocations: usize,
    /// Their refunds, any status.
    pub refunds: usize,
    /// Provider charges of their allocations, any outcome.
    pub charges: usize,
    /// Sum of the `charged` charges.
    pub charged: i64,
    /// Sum of `total` over purchased and refunded allocations.
    pub purchased_totals: i64,
    /// Sum of the provider's `refunded` refunds.
    pub provider_refunded: i64,
    /// Sum of completed refunds.
    pub refunds_completed: i64,
    /// Sum of the allocations' `refunded_amount`.
    pub allocations_refunded: i64,
}

impl Summary {
    fn new(history: &[Attempt], snapshot: &Snapshot) -> Self {
        let calls = calls(history);
        let acknowledged = |op: fn(&Op) -> bool, ok: fn(&Attempt) -> bool| {
            calls
                .iter()
                .filter(|c| op(&c.op) && c.attempts.iter().any(|a| ok(a)))
                .count()
        };
        let ok = |a: &Attempt| a.status == Some(200);
        let live = |a: &AllocationRow| matches!(a.status.as_str(), "purchased" | "refunded");
        Self {
            calls: calls.len(),
            attempts: history.len(),
            acknowledged_holds: acknowledged(
                |o| matches!(o, Op::Hold { .. }),
                |a| a.status == Some(201),
            ),
            acknowledged_payments: acknowledged(
                |o| matches!(o, Op::Pay { .. }),
                |a| a.status == Some(200) && answer_str(a, "status") == Some("purchased"),
            ),
            acknowledged_cancels: acknowledged(|o| matches!(o, Op::Cancel { .. }), ok),
            acknowledged_refunds: acknowledged(|o| matches!(o, Op::Refund { .. }), ok),
            acknowledged_checkins: acknowledged(
                |o| matches!(o, Op::CheckIn { .. }),
                |a| a.status == Some(200) && answer_str(a, "result") == Some("admitted"),
            ),
            ambiguous_calls: calls
                .iter()
                .filter(|c| c.op.is_write() && c.ambiguous())
                .count(),
            events: snapshot.events.len(),
            quotas: snapshot.quotas.len(),
            allocations: snapshot.allocations.len(),
            refunds: snapshot.refunds.len(),
            charges: snapshot.charges.len(),
            charged: snapshot
                .charges
                .iter()
                .filter(|c| c.outcome == "charged")
                .map(|c| c.amount.unwrap_or(0))
                .sum(),
            purchased_totals: snapshot
                .allocations
                .iter()
                .filter(|a| live(a))
                .map(|a| a.total)
                .sum(),
            provider_refunded: snapshot
                .provider_refunds
                .iter()
                .filter(|r| r.outcome == "refunded")
                .map(|r| r.amount)
                .sum(),
            refunds_completed: snapshot
                .refunds
                .iter()
                .filter(|r| r.status == "completed")
                .map(|r| r.amount)
                .sum(),
            allocations_refunded: snapshot.allocations.iter().map(|a| a.refunded_amount).sum(),
        }
    }
}

/// What kind of rule a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An allocation still `payment_pending` or a refund still `pending` after the settle
    /// wait.
    Unsettled,
    /// An event's or quota's counts do not add up to its total (size).
    CountsUnbalanced,
    /// A stored counter differs from what the rows say: an event's or quota's counts or
    /// set-aside, an event's waiting-list length, an allocation's quantity, total or refunded
    /// quantities, its admissions.
    CountsDiffer,
    /// An event or quota holds more live tickets (by its rows) than its capacity.
    OverCapacity,
    /// An event's `total_tickets` or a quota's `size` that is neither the last value
    /// acknowledged for it (by its creation or a PATCH) nor one an uncertain PATCH sent.
    CapacityChanged,
    /// An acknowledged call whose effect is missing or not as its client was told.
    LostAcknowledgement,
    /// An allocation or admission in a state no call of the history explains (purchased
    /// without a payment call, cancelled without a cancel, refunded without a refund, checked
    /// in without a check-in call).
    UnexplainedStatus,
    /// Attempts of one keyed call that got different definitive answers.
    DivergentOutcomes,
    /// A call with more than one effect, or one effect claimed by two calls: two allocations
    /// for one hold call, one allocation acknowledged to two hold calls, two completed
    /// refunds under one refund key, more refunds than refund calls.
    DuplicateEffect,
    /// A row no call explains: an allocation with no hold call of its buyer, a waiting-list
    /// offer with no entry of its buyer, an entry with no join call of its buyer, a refund of
    /// an allocation never refunded.
    Phantom,
    /// One admission admitted twice: by two calls of the history, or by two scans stored.
    DoubleAdmission,
    /// More than one `charged` charge for one allocation.
    DoubleCharge,
    /// A `charged` charge whose allocation is missing or not purchased (or refunded).
    ChargeWithoutTicket,
    /// A purchased allocation with a non-zero total and no `charged` charge.
    TicketWithoutCharge,
    /// Amounts that disagree: a charge not of its allocation's total, the provider's refunds
    /// not the completed refunds, those not the allocation's refunded amount.
    MoneyMismatch,
    /// More refunded than was bought or charged: refunds above the total, a line refunded
    /// beyond its quantity, provider refunds above their charge.
    OverRefund,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self).expect("a kind serializes");
        f.write_str(text.as_str().unwrap_or("?"))
    }
}

/// One broken rule, with a message naming the ids involved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The rule.
    pub kind: Kind,
    /// What was found, naming events, allocations, calls.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// Everything the checker reads from the database: the rows of the history's events (and of
/// the events of allocations the history names), ids as lower-case hyphenated UUID text,
/// counts and money as `i64` (money in minor units).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The key buyers' fingerprints are hashed under.
    pub fingerprint_secret: String,
    /// The events.
    pub events: Vec<EventRow>,
    /// Their quotas.
    pub quotas: Vec<QuotaRow>,
    /// Their allocations, each with its lines.
    pub allocations: Vec<AllocationRow>,
    /// Refunds of those allocations, each with its lines.
    pub refunds: Vec<RefundRow>,
    /// Provider charges of those allocations, and charges naming no allocation at all.
    pub charges: Vec<ChargeRow>,
    /// Provider refunds of those charges.
    pub provider_refunds: Vec<ProviderRefundRow>,
    /// Admissions of the events.
    pub admissions: Vec<AdmissionRow>,
    /// Stored scans answered `admitted`.
    pub admitted_scans: Vec<ScanRow>,
    /// Waiting-list entries of the events.
    pub waiting_list: Vec<WaitingEntryRow>,
}

/// An `events` row's counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventRow {
    pub id: String,
    pub total: i64,
    pub available: i64,
    pub reserved: i64,
    pub purchased: i64,
    /// Of `available`, set aside for the head of a waiting list.
    pub set_aside: i64,
    pub waiting_list_length: i64,
}

/// A `quotas` row's counts, with its ticket types (`quota_ticket_types`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuotaRow {
    pub id: String,
    pub event_id: String,
    pub size: i64,
    pub available: i64,
    pub reserved: i64,
    pub purchased: i64,
    pub set_aside: i64,
    pub ticket_type_ids: Vec<String>,
}

/// A `ticket_allocations` row and its `allocation_lines`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AllocationRow {
    pub id: String,
    pub event_id: String,
    /// `reserved`, `payment_pending`, `purchased`, `cancelled`, `expired`, `refunded`.
    pub status: String,
    pub quantity: i64,
    pub total: i64,
    pub refunded_quantity: i64,
    pub refunded_amount: i64,
    /// Made by a waiting-list offer, for the entry's buyer.
    pub waiting_list_offer: bool,
    /// HMAC-SHA256 of the buyer's fingerprint, 64 hex.
    pub fingerprint_hash: String,
    pub payment_reference: Option<String>,
    /// When it lapsed (RFC 3339, the database's clock), once `expired`.
    pub expired_at: Option<String>,
    pub lines: Vec<LineRow>,
}

/// An `allocation_lines` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineRow {
    pub ticket_type_id: String,
    pub quantity: i64,
    pub unit_price: i64,
    pub refunded_quantity: i64,
}

/// A `refunds` row and its `refund_lines`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefundRow {
    pub id: String,
    pub allocation_id: String,
    /// `pending`, `completed`, `failed`.
    pub status: String,
    pub amount: i64,
    /// `re_<allocation simple>_<32 hex>_<12 hex>`.
    pub reference: String,
    pub lines: Vec<RefundLineRow>,
}

/// A `refund_lines` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefundLineRow {
    pub ticket_type_id: String,
    pub quantity: i64,
    pub amount: i64,
}

/// A `payment_charges` row (the simulated provider's ledger).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChargeRow {
    /// `pay_<allocation simple>_<nonce>`.
    pub reference: String,
    /// `charged`, `declined`, `voided`.
    pub outcome: String,
    /// What a charge took; none for a void.
    pub amount: Option<i64>,
}

/// A `payment_refunds` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderRefundRow {
    pub reference: String,
    pub charge_reference: String,
    /// `refunded`, `refused`, `voided`.
    pub outcome: String,
    pub amount: i64,
}

/// An `admissions` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdmissionRow {
    pub id: String,
    pub allocation_id: String,
    /// `valid`, `checked_in`, `revoked`.
    pub status: String,
    /// Has a check-in time (a revoked admission keeps its check-in).
    pub checked_in: bool,
}

/// A `checkin_scans` row answered `admitted`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanRow {
    pub event_id: String,
    pub nonce: String,
    pub admission_id: String,
}

/// A `waiting_list_entries` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaitingEntryRow {
    pub id: String,
    pub event_id: String,
    pub ticket_type_id: String,
    pub fingerprint_hash: String,
    /// `waiting`, `offered`, `accepted`, `declined`, `expired`, `left`.
    pub status: String,
    /// The hold offered to the entry.
    pub allocation_id: Option<String>,
}

/// What a call did, from its method and path (query stripped).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// `POST /events/{event}/tickets`.
    Hold { event: String },
    /// `POST /tickets/{allocation}/payment`.
    Pay { allocation: String },
    /// `DELETE /tickets/{allocation}/payment`.
    Cancel { allocation: String },
    /// `POST /tickets/{allocation}/refund`.
    Refund { allocation: String },
    /// `POST /events/{event}/checkins`.
    CheckIn { event: String },
    /// `POST /events/{event}/checkins/batch`: a door's offline scans, each of which may
    /// admit.
    BatchCheckIn { event: String },
    /// `POST /events/{event}/waiting-list`.
    Join { event: String },
    /// `DELETE /waiting-list/{entry}`.
    Leave { entry: String },
    /// `POST /events`.
    CreateEvent,
    /// `PATCH /events/{event}`.
    PatchEvent { event: String },
    /// `POST /events/{event}/quotas`.
    CreateQuota { event: String },
    /// `PATCH /events/{event}/quotas/{quota}`.
    PatchQuota { event: String, quota: String },
    /// `DELETE /events/{event}/quotas/{quota}`.
    DeleteQuota { event: String, quota: String },
    /// Any other write (ticket types, the organiser's other writes).
    OtherWrite,
    /// A read.
    Read,
}

impl Op {
    fn of(attempt: &Attempt) -> Self {
        let path = attempt.path.split('?').next().unwrap_or_default();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (attempt.method.as_str(), parts.as_slice()) {
            ("GET" | "HEAD", _) => Op::Read,
            ("POST", ["events", event, "tickets"]) => Op::Hold {
                event: event.to_string(),
            },
            ("POST", ["tickets", allocation, "payment"]) => Op::Pay {
                allocation: allocation.to_string(),
            },
            ("DELETE", ["tickets", allocation, "payment"]) => Op::Cancel {
                allocation: allocation.to_string(),
            },
            ("POST", ["tickets", allocation, "refund"]) => Op::Refund {
                allocation: allocation.to_string(),
            },
            ("POST", ["events", event, "checkins"]) => Op::CheckIn {
                event: event.to_string(),
            },
            ("POST", ["events", event, "checkins", "batch"]) => Op::BatchCheckIn {
                event: event.to_string(),
            },
            ("POST", ["events", event, "waiting-list"]) => Op::Join {
                event: event.to_string(),
            },
            ("DELETE", ["waiting-list", entry]) => Op::Leave {
                entry: entry.to_string(),
            },
            ("POST", ["events"]) => Op::CreateEvent,
            ("PATCH", ["events", event]) => Op::PatchEvent {
                event: event.to_string(),
            },
            ("POST", ["events", event, "quotas"]) => Op::CreateQuota {
                event: event.to_string(),
            },
            ("PATCH", ["events", event, "quotas", quota]) => Op::PatchQuota {
                event: event.to_string(),
                quota: quota.to_string(),
            },
            ("DELETE", ["events", event, "quotas", quota]) => Op::DeleteQuota {
                event: event.to_string(),
                quota: quota.to_string(),
            },
            _ => Op::OtherWrite,
        }
    }

    fn is_write(&self) -> bool {
        *self != Op::Read
    }
}

/// All attempts of one call, in attempt order.
#[derive(Debug)]
struct Call<'a> {
    id: u64,
    op: Op,
    attempts: Vec<&'a Attempt>,
}

impl Call<'_> {
    /// No attempt got a definitive answer: the call may have taken effect once, or not.
    fn ambiguous(&self) -> bool {
        !self.attempts.iter().any(|a| definitive(a))
    }

    /// Some attempt got no definitive answer.
    fn had_ambiguous_attempt(&self) -> bool {
        self.attempts.iter().any(|a| !definitive(a))
    }

    /// The call may have had its effect: an attempt succeeded, or one got no definitive
    /// answer. A call all of whose attempts were refused had none.
    fn may_have_effect(&self) -> bool {
        self.attempts
            .iter()
            .any(|a| !definitive(a) || a.status.is_some_and(|s| (200..300).contains(&s)))
    }

    /// The first attempt answered `status`.
    fn answered(&self, status: u16) -> Option<&Attempt> {
        self.attempts
            .iter()
            .copied()
            .find(|a| a.status == Some(status))
    }

    /// The buyer's fingerprint as the server reads it: the header, else the body's
    /// `userFingerprint`, trimmed; blank is none.
    fn fingerprint(&self) -> Option<String> {
        let attempt = self.attempts.first()?;
        let from_body = || {
            attempt
                .body
                .as_ref()
                .and_then(|b| b["userFingerprint"].as_str())
                .map(str::to_owned)
        };
        [attempt.fingerprint.clone(), from_body()]
            .into_iter()
            .flatten()
            .map(|f| f.trim().to_owned())
            .find(|f| !f.is_empty())
    }
}

/// Groups the history's attempts by call, in call order.
fn calls(history: &[Attempt]) -> Vec<Call<'_>> {
    let mut by_id: BTreeMap<u64, Vec<&Attempt>> = BTreeMap::new();
    for attempt in history {
        by_id.entry(attempt.call).or_default().push(attempt);
    }
    by_id
        .into_iter()
        .map(|(id, mut attempts)| {
            attempts.sort_by_key(|a| a.attempt);
            Call {
                id,
                op: Op::of(attempts[0]),
                attempts,
            }
        })
        .collect()
}

/// Whether an attempt's answer is the call's outcome: a stored idempotent answer (2xx, or a
/// 4xx refusal). Not: no answer, a 5xx, a 429 (refused before the call ran), or an answer
/// about the key rather than the call (`IDEMPOTENCY_IN_PROGRESS`, `IDEMPOTENCY_KEY_REUSED`).
fn definitive(attempt: &Attempt) -> bool {
    match attempt.status {
        None => false,
        Some(s) if s >= 500 || s == 429 => false,
        Some(_) => !matches!(
            answer_str(attempt, "code"),
            Some("IDEMPOTENCY_IN_PROGRESS" | "IDEMPOTENCY_KEY_REUSED")
        ),
    }
}

/// Ticket code → admission id, from every answer that shows admissions: a payment's or a
/// ticket's `admissions`, a check-in's `admission`.
fn admission_codes<'a>(calls: &'a [Call<'a>]) -> HashMap<&'a str, &'a str> {
    let mut codes = HashMap::new();
    let answers = calls
        .iter()
        .flat_map(|c| c.attempts.iter())
        .filter(|a| a.status.is_some_and(|s| (200..300).contains(&s)))
        .filter_map(|a| a.answer.as_ref());
    for answer in answers {
        let listed = answer["admissions"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        for x in listed.iter().chain([&answer["admission"]]) {
            if let (Some(id), Some(code)) = (x["id"].as_str(), x["code"].as_str()) {
                codes.insert(code, id);
            }
        }
    }
    codes
}

/// What a batch's answer says its scan of `nonce` did (`admitted`, `duplicate`, …).
fn batch_result<'a>(attempt: &'a Attempt, nonce: Option<&str>) -> Option<&'a str> {
    let results = attempt.answer.as_ref()?["results"].as_array()?;
    let nonce = nonce?;
    results
        .iter()
        .find(|r| r["nonce"].as_str() == Some(nonce))?["result"]
        .as_str()
}

fn answer_str<'a>(attempt: &'a Attempt, field: &str) -> Option<&'a str> {
    attempt.answer.as_ref()?.get(field)?.as_str()
}

fn answer_i64(attempt: &Attempt, field: &str) -> Option<i64> {
    attempt.answer.as_ref()?.get(field)?.as_i64()
}

/// The buyer's fingerprint hash, exactly as `FingerprintKey::hash` computes it for a
/// client-sent fingerprint: HMAC-SHA256 under the secret of `"client\0"` and the text, as 64
/// lower-case hex characters.
pub fn fingerprint_hash(secret: &str, fingerprint: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(b"client\0");
    mac.update(fingerprint.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// The prefix of every refund reference of a keyed refund call (`payment::refund_reference`):
/// `re_<allocation simple>_<first 16 bytes of SHA-256 of the key, hex>`.
pub fn refund_key_prefix(allocation_id: &str, key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!(
        "re_{}_{}",
        allocation_id.replace('-', ""),
        hex(&digest[..16])
    )
}

/// The allocation (hyphenated) a charge reference `pay_<32 hex>_<nonce>` names.
fn charge_allocation(reference: &str) -> Option<String> {
    let rest = reference.strip_prefix("pay_")?;
    let (simple, _) = rest.split_once('_')?;
    if simple.len() != 32 || !simple.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let s = simple.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &s[..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..]
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Judges the history against the snapshot: every violation found, none for a sound run.
pub fn check(history: &[Attempt], snapshot: &Snapshot) -> Vec<Violation> {
    let calls = calls(history);
    let mut judge = Judge {
        calls: &calls,
        snapshot,
        allocations: snapshot
            .allocations
            .iter()
            .map(|a| (a.id.as_str(), a))
            .collect(),
        out: Vec::new(),
    };
    judge.unsettled();
    judge.conservation();
    judge.capacities();
    judge.acknowledgements();
    judge.one_outcome_per_call();
    judge.effects_of_holds();
    judge.statuses_explained();
    judge.admissions();
    judge.checkins_explained();
    judge.waiting_list();
    judge.money();
    judge.out
}

struct Judge<'a> {
    calls: &'a [Call<'a>],
    snapshot: &'a Snapshot,
    allocations: HashMap<&'a str, &'a AllocationRow>,
    out: Vec<Violation>,
}

/// What a capacity write sets.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    /// The event its answer names.
    NewEvent,
    Event(&'a str),
    /// A quota of this event, the one its answer names.
    NewQuota(&'a str),
    /// This event's quota.
    Quota(&'a str, &'a str),
}

/// A capacity a call set (or may have set): an event's total or a quota's size.
#[derive(Debug, Clone, Copy)]
struct Setting {
    call: u64,
    value: i64,
    /// The call's first attempt began, and its acknowledgement came (an uncertain write's
    /// effect may land at any time).
    start: u64,
    end: u64,
    /// Acknowledged, not just sent.
    certain: bool,
}

/// Tickets held by live allocations: `reserved`/`payment_pending` ones, and what is left of
/// `purchased` (and `refunded`) ones after their refunds.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Held {
    reserved: i64,
    purchased: i64,
}

impl<'a> Judge<'a> {
    fn report(&mut self, kind: Kind, message: String) {
        self.out.push(Violation { kind, message });
    }

    /// Calls of `op` naming `allocation`.
    fn calls_on(&self, allocation: &str, op: fn(&Op) -> Option<&str>) -> Vec<&'a Call<'a>> {
        self.calls
            .iter()
            .filter(|c| op(&c.op) == Some(allocation))
            .collect()
    }

    /// The allocation of this id, if the snapshot has it.
    fn allocation(&self, id: &str) -> Option<&'a AllocationRow> {
        self.allocations.get(id).copied()
    }

    fn unsettled(&mut self) {
        for a in &self.snapshot.allocations {
            if a.status == "payment_pending" {
                let message = format!("allocation {} is still payment_pending", a.id);
                self.report(Kind::Unsettled, message);
            }
        }
        for r in &self.snapshot.refunds {
            if r.status == "pending" {
                let message = format!(
                    "refund {} of allocation {} is still pending",
                    r.id, r.allocation_id
                );
                self.report(Kind::Unsettled, message);
            }
        }
    }

    /// Counters against rows, balance and capacity, for every event and quota; each
    /// allocation's own sums against its lines and refunds.
    fn conservation(&mut self) {
        let snapshot = self.snapshot;
        let mut by_event: HashMap<&str, Held> = HashMap::new();
        let mut by_type: HashMap<&str, Held> = HashMap::new();
        for a in &snapshot.allocations {
            let held = by_event.entry(&a.event_id).or_default();
            match a.status.as_str() {
                "reserved" | "payment_pending" => {
                    held.reserved += a.lines.iter().map(|l| l.quantity).sum::<i64>();
                    for l in &a.lines {
                        by_type.entry(&l.ticket_type_id).or_default().reserved += l.quantity;
                    }
                }
                "purchased" | "refunded" => {
                    held.purchased += a
                        .lines
                        .iter()
                        .map(|l| l.quantity - l.refunded_quantity)
                        .sum::<i64>();
                    for l in &a.lines {
                        by_type.entry(&l.ticket_type_id).or_default().purchased +=
                            l.quantity - l.refunded_quantity;
                    }
                }
                _ => {}
            }
        }
        let waiting = |event: &str, types: Option<&[String]>| {
            snapshot.waiting_list.iter().any(|w| {
                w.status == "waiting"
                    && w.event_id == event
                    && types.is_none_or(|t| t.contains(&w.ticket_type_id))
            })
        };
        for e in &snapshot.events {
            let held = by_event.get(e.id.as_str()).copied().unwrap_or_default();
            let name = format!("event {}", e.id);
            self.counts(&name, e.total, [e.available, e.reserved, e.purchased], held);
            self.set_aside(&name, e.set_aside, e.available, waiting(&e.id, None));
            let length = snapshot
                .waiting_list
                .iter()
                .filter(|w| w.event_id == e.id && w.status == "waiting")
                .count() as i64;
            if e.waiting_list_length != length {
                let message = format!(
                    "{name}: waiting_list_length {} but {length} entries are waiting",
                    e.waiting_list_length
                );
                self.report(Kind::CountsDiffer, message);
            }
        }
        for q in &snapshot.quotas {
            let mut held = Held::default();
            for t in &q.ticket_type_ids {
                let h = by_type.get(t.as_str()).copied().unwrap_or_default();
                held.reserved += h.reserved;
                held.purchased += h.purchased;
            }
            let name = format!("quota {} of event {}", q.id, q.event_id);
            self.counts(&name, q.size, [q.available, q.reserved, q.purchased], held);
            let waited = waiting(&q.event_id, Some(&q.ticket_type_ids));
            self.set_aside(&name, q.set_aside, q.available, waited);
        }
        for a in &snapshot.allocations {
            self.allocation_sums(a);
        }
    }

    /// One event's or quota's stored counts `[available, reserved, purchased]` against its
    /// capacity and what its rows hold.
    fn counts(&mut self, name: &str, capacity: i64, stored: [i64; 3], held: Held) {
        let [available, reserved, purchased] = stored;
        if available + reserved + purchased != capacity {
            let message = format!(
                "{name}: available {available} + reserved {reserved} + purchased {purchased} \
                 != {capacity}"
            );
            self.report(Kind::CountsUnbalanced, message);
        }
        if reserved != held.reserved
            || purchased != held.purchased
            || available != capacity - held.reserved - held.purchased
        {
            let message = format!(
                "{name}: stored available/reserved/purchased {available}/{reserved}/{purchased}, \
                 the rows say {}/{}/{}",
                capacity - held.reserved - held.purchased,
                held.reserved,
                held.purchased
            );
            self.report(Kind::CountsDiffer, message);
        }
        if held.reserved + held.purchased > capacity {
            let message = format!(
                "{name}: rows hold {} reserved + {} purchased, above its capacity {capacity}",
                held.reserved, held.purchased
            );
            self.report(Kind::OverCapacity, message);
        }
    }

    /// Each event's `total_tickets` and quota's `size` the history set (by an acknowledged
    /// creation or PATCH) is still what it set: the value of a write that may have been the
    /// last one acknowledged (none began after it was answered), or one an uncertain PATCH
    /// sent.
    fn capacities(&mut self) {
        let mut events: BTreeMap<&str, Vec<Setting>> = BTreeMap::new();
        let mut quotas: BTreeMap<(&str, &str), Vec<Setting>> = BTreeMap::new();
        let mut deleted: BTreeSet<&str> = BTreeSet::new();
        for call in self.calls {
            // What the call sets: a created event or quota is named by its answer's `id`.
            let (target, field, created) = match &call.op {
                Op::CreateEvent => (Target::NewEvent, "totalTickets", 201),
                Op::PatchEvent { event } => (Target::Event(event), "totalTickets", 200),
                Op::CreateQuota { event } => (Target::NewQuota(event), "size", 201),
                Op::PatchQuota { event, quota } => (Target::Quota(event, quota), "size", 200),
                Op::DeleteQuota { quota, .. } => {
                    if call.may_have_effect() {
                        deleted.insert(quota);
                    }
                    continue;
                }
                _ => continue,
            };
            let start = call.attempts[0].start_us;
            let (id, setting) = if let Some(a) = call.answered(created) {
                let Some(value) = answer_i64(a, field) else {
                    continue;
                };
                let setting = Setting {
                    call: call.id,
                    value,
                    start,
                    end: a.end_us,
                    certain: true,
                };
                (answer_str(a, "id").unwrap_or_default(), setting)
            } else if call.had_ambiguous_attempt() && created == 200 {
                // An uncertain PATCH may have set what it sent, at any time.
                let sent = call.attempts[0]
                    .body
                    .as_ref()
                    .and_then(|b| b[field].as_i64());
                let Some(value) = sent else {
                    continue;
                };
                let setting = Setting {
                    call: call.id,
                    value,
                    start,
                    end: u64::MAX,
                    certain: false,
                };
                ("", setting)
            } else {
                continue;
            };
            match target {
                Target::NewEvent => events.entry(id).or_default(),
                Target::Event(event) => events.entry(event).or_default(),
                Target::NewQuota(event) => quotas.entry((event, id)).or_default(),
                Target::Quota(event, quota) => quotas.entry((event, quota)).or_default(),
            }
            .push(setting);
        }
        let snapshot = self.snapshot;
        for (event, settings) in events {
            let stored = snapshot.events.iter().find(|e| e.id == event);
            self.capacity(
                &format!("event {event}"),
                "total_tickets",
                stored.map(|e| e.total),
                &settings,
            );
        }
        for ((event, quota), settings) in quotas {
            let stored = snapshot.quotas.iter().find(|q| q.id == quota);
            let event_read = snapshot.events.iter().any(|e| e.id == event);
            if stored.is_none() && (deleted.contains(quota) || !event_read) {
                // Deleted, or its event is missing (reported as the event's).
                continue;
            }
            let name = format!("quota {quota} of event {event}");
            self.capacity(&name, "size", stored.map(|q| q.size), &settings);
        }
    }

    /// One event's or quota's stored capacity against the writes that set it.
    fn capacity(&mut self, name: &str, column: &str, stored: Option<i64>, settings: &[Setting]) {
        let certain: Vec<&Setting> = settings.iter().filter(|s| s.certain).collect();
        if certain.is_empty() {
            return;
        }
        let Some(stored) = stored else {
            let calls: Vec<u64> = certain.iter().map(|s| s.call).collect();
            let message =
                format!("{name} was acknowledged to calls {calls:?} and is not in the database");
            self.report(Kind::LostAcknowledgement, message);
            return;
        };
        let could_be_last = |s: &Setting| !certain.iter().any(|o| o.start > s.end);
        let allowed: Vec<&Setting> = settings
            .iter()
            .filter(|s| !s.certain || could_be_last(s))
            .collect();
        if !allowed.iter().any(|s| s.value == stored) {
            let told: Vec<String> = allowed
                .iter()
                .map(|s| {
                    let how = if s.certain { "" } else { ", uncertain" };
                    format!("{} (call {}{how})", s.value, s.call)
                })
                .collect();
            let message = format!(
                "{name}: {column} is {stored}, the last value the history set is {}",
                told.join(" or ")
            );
            self.report(Kind::CapacityChanged, message);
        }
    }

    /// Set-aside tickets are a part of the available ones, kept only for someone waiting.
    fn set_aside(&mut self, name: &str, set_aside: i64, available: i64, waited: bool) {
        if set_aside < 0 || set_aside > available.max(0) || (set_aside > 0 && !waited) {
            let message = format!(
                "{name}: {set_aside} tickets set aside of {available} available, \
                 with {} waiting for them",
                if waited { "someone" } else { "nobody" }
            );
            self.report(Kind::CountsDiffer, message);
        }
    }

    /// An allocation's quantity, total and refunded sums against its lines and refunds.
    fn allocation_sums(&mut self, a: &AllocationRow) {
        let quantity: i64 = a.lines.iter().map(|l| l.quantity).sum();
        let total: i64 = a.lines.iter().map(|l| l.quantity * l.unit_price).sum();
        let refunded: i64 = a.lines.iter().map(|l| l.refunded_quantity).sum();
        if quantity != a.quantity || total != a.total || refunded != a.refunded_quantity {
            let message = format!(
                "allocation {}: quantity/total/refunded {}/{}/{}, its lines say {quantity}/{total}/{refunded}",
                a.id, a.quantity, a.total, a.refunded_quantity
            );
            self.report(Kind::CountsDiffer, message);
        }
        let mut refunded_by_type: HashMap<&str, i64> = HashMap::new();
        for r in self.completed_refunds(&a.id) {
            for l in &r.lines {
                *refunded_by_type.entry(&l.ticket_type_id).or_default() += l.quantity;
            }
        }
        for l in &a.lines {
            let by_refunds = refunded_by_type
                .remove(l.ticket_type_id.as_str())
                .unwrap_or(0);
            if by_refunds > l.quantity {
                let message = format!(
                    "allocation {} line {}: {by_refunds} tickets refunded of {}",
                    a.id, l.ticket_type_id, l.quantity
                );
                self.report(Kind::OverRefund, message);
            } else if by_refunds != l.refunded_quantity {
                let message = format!(
                    "allocation {} line {}: refunded_quantity {}, completed refunds give back {by_refunds}",
                    a.id, l.ticket_type_id, l.refunded_quantity
                );
                self.report(Kind::CountsDiffer, message);
            }
        }
        for (ticket_type, quantity) in refunded_by_type {
            let message = format!(
                "allocation {}: completed refunds give back {quantity} tickets of type \
                 {ticket_type}, which it has no line of",
                a.id
            );
            self.report(Kind::OverRefund, message);
        }
        if matches!(a.status.as_str(), "purchased" | "refunded") {
            let admissions: Vec<&AdmissionRow> = self
                .snapshot
                .admissions
                .iter()
                .filter(|x| x.allocation_id == a.id)
                .collect();
            let revoked = admissions.iter().filter(|x| x.status == "revoked").count() as i64;
            if admissions.len() as i64 != a.quantity || revoked != a.refunded_quantity {
                let message = format!(
                    "allocation {} ({}, {} tickets, {} refunded) has {} admissions, {revoked} revoked",
                    a.id,
                    a.status,
                    a.quantity,
                    a.refunded_quantity,
                    admissions.len()
                );
                self.report(Kind::CountsDiffer, message);
            }
        }
    }

    fn completed_refunds(&self, allocation: &str) -> Vec<&'a RefundRow> {
        self.snapshot
            .refunds
            .iter()
            .filter(|r| r.allocation_id == allocation && r.status == "completed")
            .collect()
    }

    /// Every acknowledged hold, payment, cancel, refund and check-in is in the database as
    /// its client was told.
    fn acknowledgements(&mut self) {
        for call in self.calls {
            match &call.op {
                Op::Hold { event } => {
                    if let Some(attempt) = call.answered(201) {
                        self.acknowledged_hold(call, event, attempt);
                    }
                }
                Op::Pay { allocation } => {
                    let paid = call.attempts.iter().any(|a| {
                        a.status == Some(200) && answer_str(a, "status") == Some("purchased")
                    });
                    if paid {
                        let refunded_by_call = !self
                            .calls_on(allocation, |o| match o {
                                Op::Refund { allocation } => Some(allocation.as_str()),
                                _ => None,
                            })
                            .is_empty();
                        self.acknowledged_status(call, allocation, "payment", |s| {
                            s == "purchased" || (s == "refunded" && refunded_by_call)
                        });
                    }
                }
                Op::Cancel { allocation } if call.answered(200).is_some() => {
                    self.acknowledged_status(call, allocation, "cancel", |s| s == "cancelled");
                }
                Op::Refund { allocation } => {
                    if let Some(attempt) = call.answered(200) {
                        self.acknowledged_refund(call, allocation, attempt);
                    }
                }
                Op::CheckIn { .. } => {
                    for attempt in &call.attempts {
                        if attempt.status == Some(200)
                            && answer_str(attempt, "result") == Some("admitted")
                        {
                            self.acknowledged_checkin(call, attempt);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn acknowledged_hold(&mut self, call: &Call<'_>, event: &str, attempt: &Attempt) {
        let Some(id) = answer_str(attempt, "id") else {
            let message = format!("call {}: a 201 hold without an allocation id", call.id);
            self.report(Kind::LostAcknowledgement, message);
            return;
        };
        let Some(row) = self.allocation(id) else {
            let message = format!(
                "call {}: hold {id} of event {event} was answered 201 and is not in the database",
                call.id
            );
            self.report(Kind::LostAcknowledgement, message);
            return;
        };
        let mut told: Vec<(String, i64, i64)> = attempt
            .answer
            .as_ref()
            .and_then(|a| a["lines"].as_array())
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| {
                        (
                            l["ticketTypeId"].as_str().unwrap_or_default().to_owned(),
                            l["quantity"].as_i64().unwrap_or(-1),
                            l["unitPrice"].as_i64().unwrap_or(-1),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut stored: Vec<(String, i64, i64)> = row
            .lines
            .iter()
            .map(|l| (l.ticket_type_id.clone(), l.quantity, l.unit_price))
            .collect();
        told.sort();
        stored.sort();
        let lines_agree = told.is_empty() || told == stored;
        let secret = &self.snapshot.fingerprint_secret;
        let buyer_agrees = call
            .fingerprint()
            .is_none_or(|f| fingerprint_hash(secret, &f) == row.fingerprint_hash);
        if row.event_id != event
            || answer_i64(attempt, "quantity") != Some(row.quantity)
            || answer_i64(attempt, "total").is_some_and(|t| t != row.total)
            || !lines_agree
            || !buyer_agrees
        {
            let message = format!(
                "call {}: hold {id} was answered 201 for event {event}, {} tickets, lines \
                 {told:?}; the database has event {}, {} tickets, lines {stored:?}{}",
                call.id,
                answer_i64(attempt, "quantity").unwrap_or(-1),
                row.event_id,
                row.quantity,
                if buyer_agrees {
                    ""
                } else {
                    ", of another buyer"
                }
            );
            self.report(Kind::LostAcknowledgement, message);
        }
        // A hold's 201 promised it until its `expiresAt`: one that lapsed sooner was lost.
        // Both times are the database's; a row expired without a time lapsed before now.
        if row.status == "expired"
            && let Some(told) = answer_str(attempt, "expiresAt")
            && crate::lapsed_early(
                told,
                row.expired_at.as_deref(),
                time::OffsetDateTime::now_utc(),
            )
        {
            let message = format!(
                "call {}: hold {id} was answered 201 until {told}; the database has it \
                 expired at {}",
                call.id,
                row.expired_at.as_deref().unwrap_or("(no time)")
            );
            self.report(Kind::LostAcknowledgement, message);
        }
    }

    fn acknowledged_status(
        &mut self,
        call: &Call<'_>,
        allocation: &str,
        what: &str,
        allowed: impl Fn(&str) -> bool,
    ) {
        let status = self.allocation(allocation).map(|a| a.status.as_str());
        if !status.is_some_and(&allowed) {
            let message = format!(
                "call {}: the {what} of allocation {allocation} was answered 200; the database \
                 has it {}",
                call.id,
                status.unwrap_or("missing")
            );
            self.report(Kind::LostAcknowledgement, message);
        }
    }

    fn acknowledged_refund(&mut self, call: &Call<'_>, allocation: &str, attempt: &Attempt) {
        let Some(row) = self.allocation(allocation) else {
            let message = format!(
                "call {}: refund of allocation {allocation} answered 200, allocation missing",
                call.id
            );
            self.report(Kind::LostAcknowledgement, message);
            return;
        };
        let told = answer_i64(attempt, "refundedAmount").unwrap_or(0);
        if row.refunded_amount < told {
            let message = format!(
                "call {}: allocation {allocation} was answered refundedAmount {told}; the \
                 database has {}",
                call.id, row.refunded_amount
            );
            self.report(Kind::LostAcknowledgement, message);
        }
        let completed: Vec<&str> = attempt
            .answer
            .as_ref()
            .and_then(|a| a["refunds"].as_array())
            .into_iter()
            .flatten()
            .filter(|r| r["status"] == "completed")
            .filter_map(|r| r["id"].as_str())
            .collect();
        for id in completed {
            let stored = self
                .snapshot
                .refunds
                .iter()
                .find(|r| r.id == id)
                .map(|r| r.status.as_str());
            if stored != Some("completed") {
                let message = format!(
                    "call {}: refund {id} of allocation {allocation} was answered completed; \
                     the database has it {}",
                    call.id,
                    stored.unwrap_or("missing")
                );
                self.report(Kind::LostAcknowledgement, message);
            }
        }
    }

    fn acknowledged_checkin(&mut self, call: &Call<'_>, attempt: &Attempt) {
        let admission = attempt
            .answer
            .as_ref()
            .and_then(|a| a["admission"]["id"].as_str());
        let stored = admission.and_then(|id| self.snapshot.admissions.iter().find(|x| x.id == id));
        let refund_called = |allocation: &str| {
            !self
                .calls_on(allocation, |o| match o {
                    Op::Refund { allocation } => Some(allocation.as_str()),
                    _ => None,
                })
                .is_empty()
        };
        let present = stored.is_some_and(|x| {
            x.status == "checked_in"
                || (x.status == "revoked" && x.checked_in && refund_called(&x.allocation_id))
        });
        if !present {
            let message = format!(
                "call {}: admission {} was answered admitted; the database has it {}",
                call.id,
                admission.unwrap_or("(no id in the answer)"),
                stored.map_or("missing", |x| x.status.as_str())
            );
            self.report(Kind::LostAcknowledgement, message);
        }
    }

    /// All attempts of one keyed call that got a definitive answer got the same one.
    fn one_outcome_per_call(&mut self) {
        for call in self.calls {
            if call.attempts.len() < 2 || call.attempts.iter().all(|a| a.key.is_none()) {
                continue;
            }
            let outcomes: BTreeSet<(u16, String)> = call
                .attempts
                .iter()
                .filter(|a| definitive(a))
                .map(|a| {
                    let status = a.status.unwrap_or(0);
                    let what = if (200..300).contains(&status) {
                        answer_str(a, "id").unwrap_or_default()
                    } else {
                        answer_str(a, "code").unwrap_or_default()
                    };
                    (status, what.to_owned())
                })
                .collect();
            if outcomes.len() > 1 {
                let message = format!(
                    "call {} ({} {}, key {:?}): its attempts were answered {outcomes:?}",
                    call.id,
                    call.attempts[0].method,
                    call.attempts[0].path,
                    call.attempts[0].key.as_deref().unwrap_or_default()
                );
                self.report(Kind::DivergentOutcomes, message);
            }
        }
    }

    /// Every ordinary allocation is explained by a hold call of its buyer, at most one per
    /// call, and the acknowledged one when there was an acknowledgement; every waiting-list
    /// offer by an entry of its buyer.
    fn effects_of_holds(&mut self) {
        let secret = &self.snapshot.fingerprint_secret;
        // (event, buyer hash) → the hold calls of that buyer.
        let mut holds: HashMap<(String, String), Vec<&Call<'_>>> = HashMap::new();
        // Per event: calls without a fingerprint (the server derived one from the address),
        // which may explain any one allocation of the event.
        let mut anonymous: HashMap<String, usize> = HashMap::new();
        for call in self.calls {
            let Op::Hold { event } = &call.op else {
                continue;
            };
            match call.fingerprint() {
                Some(f) => holds
                    .entry((event.clone(), fingerprint_hash(secret, &f)))
                    .or_default()
                    .push(call),
                None if call.answered(201).is_none() && call.may_have_effect() => {
                    *anonymous.entry(event.clone()).or_default() += 1;
                }
                None => {}
            }
        }
        // allocation → the hold calls acknowledged with it: each call makes its own hold, so
        // one allocation acknowledged to two calls is one effect told to two clients.
        let mut acknowledged: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
        for call in self.calls {
            if !matches!(call.op, Op::Hold { .. }) {
                continue;
            }
            for a in call.attempts.iter().filter(|a| a.status == Some(201)) {
                if let Some(id) = answer_str(a, "id") {
                    acknowledged.entry(id).or_default().insert(call.id);
                }
            }
        }
        for (id, calls) in &acknowledged {
            if calls.len() > 1 {
                let message = format!(
                    "allocation {id} was acknowledged (201) to {} hold calls {calls:?}",
                    calls.len()
                );
                self.report(Kind::DuplicateEffect, message);
            }
        }
        let mut unexplained: BTreeMap<(String, String), Vec<&str>> = BTreeMap::new();
        for a in &self.snapshot.allocations {
            if a.waiting_list_offer {
                let entry = self.snapshot.waiting_list.iter().any(|w| {
                    w.allocation_id.as_deref() == Some(a.id.as_str())
                        && w.fingerprint_hash == a.fingerprint_hash
                        && w.event_id == a.event_id
                });
                if !entry {
                    let message = format!(
                        "allocation {} of event {} is a waiting-list offer no entry of its \
                         buyer was made",
                        a.id, a.event_id
                    );
                    self.report(Kind::Phantom, message);
                }
            } else if !acknowledged.contains_key(a.id.as_str()) {
                unexplained
                    .entry((a.event_id.clone(), a.fingerprint_hash.clone()))
                    .or_default()
                    .push(&a.id);
            }
        }
        for ((event, hash), ids) in unexplained {
            let calls = holds
                .get(&(event.clone(), hash))
                .map_or(&[][..], Vec::as_slice);
            // Each call without an acknowledgement may explain one allocation; an
            // acknowledged call's one effect is its acknowledged allocation.
            let room = calls
                .iter()
                .filter(|c| c.answered(201).is_none() && c.may_have_effect())
                .count();
            let spare = anonymous.entry(event.clone()).or_default();
            let excess = ids.len().saturating_sub(room);
            let covered = excess.min(*spare);
            *spare -= covered;
            if excess > covered {
                let ambiguous: Vec<u64> = calls
                    .iter()
                    .filter(|c| c.had_ambiguous_attempt())
                    .map(|c| c.id)
                    .collect();
                if calls.is_empty() {
                    let message = format!(
                        "allocations {ids:?} of event {event}: no hold call of their buyer"
                    );
                    self.report(Kind::Phantom, message);
                } else if ambiguous.is_empty() {
                    let message = format!(
                        "allocations {ids:?} of event {event}: their buyer's hold calls {:?} \
                         were all answered, and none with these",
                        calls.iter().map(|c| c.id).collect::<Vec<_>>()
                    );
                    self.report(Kind::Phantom, message);
                } else {
                    let message = format!(
                        "event {event}: {} allocations {ids:?} beyond what the buyer's hold \
                         calls {:?} (ambiguous: {ambiguous:?}) can have made, one each",
                        ids.len(),
                        calls.iter().map(|c| c.id).collect::<Vec<_>>()
                    );
                    self.report(Kind::DuplicateEffect, message);
                }
            }
        }
    }

    /// Every allocation's status is one the history's calls explain.
    fn statuses_explained(&mut self) {
        let snapshot = self.snapshot;
        for a in &snapshot.allocations {
            let explained_by = |op: fn(&Op) -> Option<&str>| {
                self.calls_on(&a.id, op).iter().any(|c| c.may_have_effect())
            };
            let paid = || {
                explained_by(|o| match o {
                    Op::Pay { allocation } => Some(allocation.as_str()),
                    _ => None,
                })
            };
            let refunded = || {
                explained_by(|o| match o {
                    Op::Refund { allocation } => Some(allocation.as_str()),
                    _ => None,
                })
            };
            let cancelled = || {
                explained_by(|o| match o {
                    Op::Cancel { allocation } => Some(allocation.as_str()),
                    _ => None,
                }) || snapshot.waiting_list.iter().any(|w| {
                    w.allocation_id.as_deref() == Some(a.id.as_str())
                        && self.calls.iter().any(|c| {
                            c.op == Op::Leave {
                                entry: w.id.clone(),
                            } && c.may_have_effect()
                        })
                })
            };
            let problem = match a.status.as_str() {
                "purchased" | "refunded" if !paid() => Some("no payment call may have paid it"),
                "cancelled" if !cancelled() => Some("no cancel call may have cancelled it"),
                _ if (a.status == "refunded" || a.refunded_quantity > 0) && !refunded() => {
                    Some("no refund call may have refunded it")
                }
                _ => None,
            };
            if let Some(problem) = problem {
                let message = format!(
                    "allocation {} of event {} is {} (refunded {}): {problem}",
                    a.id, a.event_id, a.status, a.refunded_quantity
                );
                self.report(Kind::UnexplainedStatus, message);
            }
        }
    }

    /// Each admission admitted at most once, in the history and in the database.
    fn admissions(&mut self) {
        // admission → the scans that were told it was admitted: a nonce is one scan however
        // often it is retried; a scan without one is its call.
        let mut told: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for call in self.calls {
            let Op::CheckIn { event } = &call.op else {
                continue;
            };
            for a in &call.attempts {
                if a.status != Some(200) || answer_str(a, "result") != Some("admitted") {
                    continue;
                }
                let Some(admission) = a
                    .answer
                    .as_ref()
                    .and_then(|x| x["admission"]["id"].as_str())
                else {
                    continue;
                };
                let scan = match a.body.as_ref().and_then(|b| b["nonce"].as_str()) {
                    Some(nonce) => format!("nonce {event}/{nonce}"),
                    None => format!("call {}", call.id),
                };
                told.entry(admission.to_owned()).or_default().insert(scan);
            }
        }
        for (admission, scans) in told {
            if scans.len() > 1 {
                let message = format!("admission {admission} was answered admitted to {scans:?}");
                self.report(Kind::DoubleAdmission, message);
            }
        }
        let mut stored: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for s in &self.snapshot.admitted_scans {
            stored.entry(&s.admission_id).or_default().push(&s.nonce);
        }
        for (admission, nonces) in stored {
            if nonces.len() > 1 {
                let message = format!(
                    "admission {admission} has {} stored scans answered admitted: {nonces:?}",
                    nonces.len()
                );
                self.report(Kind::DoubleAdmission, message);
            }
        }
    }

    /// Every admission checked in (its row, or a stored scan answered `admitted`) was
    /// admitted by a check-in call that may have done it: one answered admitted naming it,
    /// or one with an uncertain answer (or a batch scan not answered otherwise) whose code is
    /// the admission's. Codes are mapped to admissions by the history's own answers.
    fn checkins_explained(&mut self) {
        let codes = admission_codes(self.calls);
        let mut explained: BTreeSet<&str> = BTreeSet::new();
        for call in self.calls {
            match &call.op {
                Op::CheckIn { .. } => {
                    for a in &call.attempts {
                        if a.status == Some(200) && answer_str(a, "result") == Some("admitted") {
                            let named = a
                                .answer
                                .as_ref()
                                .and_then(|x| x["admission"]["id"].as_str());
                            explained.extend(named);
                        }
                    }
                    if call.had_ambiguous_attempt() {
                        let code = call.attempts[0]
                            .body
                            .as_ref()
                            .and_then(|b| b["code"].as_str());
                        explained.extend(code.and_then(|c| codes.get(c).copied()));
                    }
                }
                Op::BatchCheckIn { .. } => {
                    let scans = call.attempts[0]
                        .body
                        .as_ref()
                        .and_then(|b| b["scans"].as_array())
                        .map_or(&[][..], Vec::as_slice);
                    for scan in scans {
                        let nonce = scan["nonce"].as_str();
                        // A batch answered 200 says what each of its scans did; one that
                        // may have run unanswered may have admitted any of them.
                        let may_admit = call.had_ambiguous_attempt()
                            || call.attempts.iter().any(|a| {
                                a.status == Some(200)
                                    && batch_result(a, nonce).is_none_or(|r| r == "admitted")
                            });
                        if may_admit {
                            let admission = scan["code"].as_str().and_then(|c| codes.get(c));
                            explained.extend(admission.copied());
                        }
                    }
                }
                _ => {}
            }
        }
        let snapshot = self.snapshot;
        let mut checked_in: BTreeMap<&str, &str> = BTreeMap::new();
        for x in &snapshot.admissions {
            if x.status == "checked_in" || x.checked_in {
                checked_in.insert(&x.id, "checked in");
            }
        }
        for s in &snapshot.admitted_scans {
            checked_in
                .entry(&s.admission_id)
                .or_insert("admitted by a stored scan");
        }
        for (admission, how) in checked_in {
            if !explained.contains(admission) {
                let allocation = snapshot
                    .admissions
                    .iter()
                    .find(|x| x.id == admission)
                    .map_or("an allocation not read", |x| x.allocation_id.as_str());
                let message = format!(
                    "admission {admission} (of {allocation}) is {how}: no check-in call may \
                     have admitted it"
                );
                self.report(Kind::UnexplainedStatus, message);
            }
        }
    }

    /// Every acknowledged join is an entry, every acknowledged leave has left, and every
    /// entry was made by a join call of its buyer (hashed as for holds) on its event.
    fn waiting_list(&mut self) {
        let snapshot = self.snapshot;
        let secret = &snapshot.fingerprint_secret;
        let entry = |id: &str| snapshot.waiting_list.iter().find(|w| w.id == id);
        let mut joined: BTreeSet<(&str, String)> = BTreeSet::new();
        // Per event: joins without a fingerprint (the server derived one from the address),
        // each of which may explain any one entry of the event.
        let mut anonymous: HashMap<&str, usize> = HashMap::new();
        let mut acknowledged: BTreeSet<&str> = BTreeSet::new();
        for call in self.calls {
            match &call.op {
                Op::Join { event } => {
                    if let Some(id) = call.answered(201).and_then(|a| answer_str(a, "id")) {
                        acknowledged.insert(id);
                        let buyer = call.fingerprint().map(|f| fingerprint_hash(secret, &f));
                        let stored = entry(id);
                        let agrees = stored.is_some_and(|w| {
                            w.event_id == *event
                                && buyer.as_ref().is_none_or(|h| *h == w.fingerprint_hash)
                        });
                        if !agrees {
                            let message = format!(
                                "call {}: entry {id} on the waiting list of event {event} was \
                                 answered 201; the database has {}",
                                call.id,
                                stored.map_or("no such entry".to_owned(), |w| format!(
                                    "it on event {}, of {}",
                                    w.event_id,
                                    if buyer.is_none_or(|h| h == w.fingerprint_hash) {
                                        "its buyer"
                                    } else {
                                        "another buyer"
                                    }
                                ))
                            );
                            self.report(Kind::LostAcknowledgement, message);
                        }
                    }
                    if !call.may_have_effect() {
                        continue;
                    }
                    match call.fingerprint() {
                        Some(f) => {
                            joined.insert((event, fingerprint_hash(secret, &f)));
                        }
                        None => *anonymous.entry(event).or_default() += 1,
                    }
                }
                Op::Leave { entry: id } if call.answered(200).is_some() => {
                    let status = entry(id).map(|w| w.status.as_str());
                    if status.is_none_or(|s| matches!(s, "waiting" | "offered")) {
                        let message = format!(
                            "call {}: leaving the waiting list (entry {id}) was answered 200; \
                             the database has it {}",
                            call.id,
                            status.unwrap_or("missing")
                        );
                        self.report(Kind::LostAcknowledgement, message);
                    }
                }
                _ => {}
            }
        }
        for w in &snapshot.waiting_list {
            let explained = acknowledged.contains(w.id.as_str())
                || joined.contains(&(w.event_id.as_str(), w.fingerprint_hash.clone()));
            if explained {
                continue;
            }
            match anonymous.get_mut(w.event_id.as_str()) {
                Some(spare) if *spare > 0 => *spare -= 1,
                _ => {
                    let message = format!(
                        "entry {} ({}) on the waiting list of event {}: no join call of its \
                         buyer",
                        w.id, w.status, w.event_id
                    );
                    self.report(Kind::Phantom, message);
                }
            }
        }
    }

    /// The provider's ledger against the allocations and the refunds.
    fn money(&mut self) {
        let snapshot = self.snapshot;
        let mut charged: HashMap<String, Vec<&ChargeRow>> = HashMap::new();
        for c in snapshot.charges.iter().filter(|c| c.outcome == "charged") {
            let allocation = charge_allocation(&c.reference);
            let row = allocation.as_deref().and_then(|id| self.allocation(id));
            match row {
                Some(a) if matches!(a.status.as_str(), "purchased" | "refunded") => {
                    charged.entry(a.id.clone()).or_default().push(c);
                }
                _ => {
                    let whose = match (row, allocation.as_deref()) {
                        (Some(a), _) => format!("allocation {}, which is {}", a.id, a.status),
                        (None, Some(id)) => format!("allocation {id}, which does not exist"),
                        (None, None) => "no allocation (its reference names none)".to_owned(),
                    };
                    let message = format!(
                        "charge {} took {} for {whose}",
                        c.reference,
                        c.amount.unwrap_or(0),
                    );
                    self.report(Kind::ChargeWithoutTicket, message);
                }
            }
        }
        let mut provider_refunded: HashMap<&str, i64> = HashMap::new();
        for r in snapshot
            .provider_refunds
            .iter()
            .filter(|r| r.outcome == "refunded")
        {
            *provider_refunded.entry(&r.charge_reference).or_default() += r.amount;
        }
        for c in &snapshot.charges {
            let refunded = provider_refunded.get(c.reference.as_str()).copied();
            let took = if c.outcome == "charged" {
                c.amount.unwrap_or(0)
            } else {
                0
            };
            if refunded.is_some_and(|r| r > took) {
                let message = format!(
                    "charge {} ({}, {took}) had {} refunded by the provider",
                    c.reference,
                    c.outcome,
                    refunded.unwrap_or(0)
                );
                self.report(Kind::OverRefund, message);
            }
        }
        for a in &snapshot.allocations {
            let charges = charged.get(&a.id).map_or(&[][..], Vec::as_slice);
            let purchased = matches!(a.status.as_str(), "purchased" | "refunded");
            if charges.len() > 1 {
                let message = format!(
                    "allocation {} was charged {} times: {:?}",
                    a.id,
                    charges.len(),
                    charges.iter().map(|c| &c.reference).collect::<Vec<_>>()
                );
                self.report(Kind::DoubleCharge, message);
            }
            if purchased && a.total > 0 && charges.is_empty() {
                let message = format!(
                    "allocation {} is {} for {} and no charge took it",
                    a.id, a.status, a.total
                );
                self.report(Kind::TicketWithoutCharge, message);
            }
            for c in charges {
                if c.amount != Some(a.total) {
                    let message = format!(
                        "charge {} took {}, allocation {} totals {}",
                        c.reference,
                        c.amount.map_or("nothing".to_owned(), |x| x.to_string()),
                        a.id,
                        a.total
                    );
                    self.report(Kind::MoneyMismatch, message);
                }
            }
            let by_provider: i64 = snapshot
                .charges
                .iter()
                .filter(|c| charge_allocation(&c.reference).as_deref() == Some(a.id.as_str()))
                .filter_map(|c| provider_refunded.get(c.reference.as_str()))
                .sum();
            let completed = self.completed_refunds(&a.id);
            let by_refunds: i64 = completed.iter().map(|r| r.amount).sum();
            if by_refunds > a.total {
                let message = format!(
                    "allocation {} totals {} and its {} completed refunds give back {by_refunds}",
                    a.id,
                    a.total,
                    completed.len()
                );
                self.report(Kind::OverRefund, message);
            }
            // A free order is refunded without the provider.
            let provider_expected = if a.total > 0 { by_refunds } else { 0 };
            if by_refunds != a.refunded_amount || by_provider != provider_expected {
                let message = format!(
                    "allocation {}: refunded_amount {}, completed refunds {by_refunds}, the \
                     provider refunded {by_provider}",
                    a.id, a.refunded_amount
                );
                self.report(Kind::MoneyMismatch, message);
            }
            self.refund_effects(a, &completed);
        }
    }

    /// At most one completed refund per refund call (one per key for keyed calls), and
    /// none without a call.
    fn refund_effects(&mut self, a: &AllocationRow, completed: &[&RefundRow]) {
        if completed.is_empty() {
            return;
        }
        let calls: Vec<&Call<'_>> = self
            .calls_on(&a.id, |o| match o {
                Op::Refund { allocation } => Some(allocation.as_str()),
                _ => None,
            })
            .into_iter()
            .filter(|c| c.may_have_effect())
            .collect();
        if calls.is_empty() {
            let message = format!(
                "allocation {} has {} completed refunds and no refund call may have made them",
                a.id,
                completed.len()
            );
            self.report(Kind::Phantom, message);
            return;
        }
        if completed.len() > calls.len() {
            let message = format!(
                "allocation {} has {} completed refunds from {} refund calls {:?}",
                a.id,
                completed.len(),
                calls.len(),
                calls.iter().map(|c| c.id).collect::<Vec<_>>()
            );
            self.report(Kind::DuplicateEffect, message);
        }
        let keys: BTreeSet<&str> = calls
            .iter()
            .flat_map(|c| c.attempts.iter().filter_map(|x| x.key.as_deref()))
            .collect();
        for key in keys {
            let prefix = format!("{}_", refund_key_prefix(&a.id, key));
            let under: Vec<&str> = completed
                .iter()
                .filter(|r| r.reference.starts_with(&prefix))
                .map(|r| r.id.as_str())
                .collect();
            if under.len() > 1 {
                let message = format!(
                    "allocation {}: refund key {key:?} has {} completed refunds {under:?}",
                    a.id,
                    under.len()
                );
                self.report(Kind::DuplicateEffect, message);
            }
        }
    }
}
