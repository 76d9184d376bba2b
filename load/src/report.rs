//! What a run found: latency percentiles, the answers, the verification, the verdict, and the
//! report's text form.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::journey::JourneySummary;
use crate::steps::Step;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// How many requests of one kind got one answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Answer {
    /// `purchase`, `pay` or `read`.
    pub action: &'static str,
    /// `None`: no answer (connection refused or cut, or a timeout).
    pub status: Option<u16>,
    /// The error body's `code`, when it has one.
    pub code: Option<String>,
    pub count: u64,
}

impl Answer {
    /// Whether this is an answer the documentation promises for a load run: a purchase held
    /// (201) or refused because the event, or the buyer's share of it, ran out (409
    /// `TICKETS_SOLD_OUT`, `INSUFFICIENT_TICKETS`, `FINGERPRINT_LIMIT`); a hold paid for
    /// (200); an event read (200); or any of them rate limited (429 `RATE_LIMITED`). Anything
    /// else means the server failed or the tool asked something it should not have.
    pub fn is_expected(&self) -> bool {
        let code = self.code.as_deref();
        match (self.action, self.status) {
            (_, Some(429)) => code == Some("RATE_LIMITED"),
            ("purchase", Some(201)) | ("pay", Some(200)) | ("read", Some(200)) => true,
            ("purchase", Some(409)) => matches!(
                code,
                Some("TICKETS_SOLD_OUT" | "INSUFFICIENT_TICKETS" | "FINGERPRINT_LIMIT")
            ),
            _ => false,
        }
    }

    /// Whether this is an answer the documentation promises for a buyer's journey: any of
    /// [`Answer::is_expected`], and a payment that came too late for its hold (410
    /// `RESERVATION_EXPIRED`), a declining card's payment declined (402 `PAYMENT_DECLINED`)
    /// or too late, a cancel done (200) or refused because the hold had already ended (409
    /// `INVALID_STATUS`, whose status the verification checks), a stream opened (200), a
    /// refund done, a scan admitted or refused as `ALREADY_CHECKED_IN`, a waiting-list join
    /// (or its refusal because tickets came back, or the cap) and an offer paid or lapsed.
    pub fn is_expected_in_journey(&self) -> bool {
        let code = self.code.as_deref();
        self.is_expected()
            || match (self.action, self.status) {
                ("pay" | "decline", Some(410)) => code == Some("RESERVATION_EXPIRED"),
                ("decline", Some(402)) => code == Some("PAYMENT_DECLINED"),
                ("cancel", Some(409)) => code == Some("INVALID_STATUS"),
                ("cancel", Some(200)) | ("watch", Some(200)) => true,
                ("refund" | "offer-pay", Some(200)) | ("join", Some(201)) => true,
                // One of a ticket's two simultaneous scans admits it, the other is refused.
                ("checkin", Some(200)) => true,
                ("checkin", Some(409)) => code == Some("ALREADY_CHECKED_IN"),
                // Tickets came back between the refusal and the join; or the buyer's cap; or
                // a retried join whose first attempt took effect.
                ("join", Some(409)) => matches!(
                    code,
                    Some("TICKETS_AVAILABLE" | "FINGERPRINT_LIMIT" | "ALREADY_WAITING")
                ),
                // An offer paid after it lapsed.
                ("offer-pay", Some(410)) => code == Some("RESERVATION_EXPIRED"),
                _ => false,
            }
    }

    fn label(&self) -> String {
        let status = self
            .status
            .map_or_else(|| "no answer".to_owned(), |s| s.to_string());
        match &self.code {
            Some(code) => format!("{} {status} {code}", self.action),
            None => format!("{} {status}", self.action),
        }
    }
}

/// The event's counts as `GET /events/{id}` reported them after the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EventCounts {
    pub total: i64,
    pub available: i64,
    pub reserved: i64,
    pub purchased: i64,
}

/// What reading the allocations back found.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ReadBack {
    /// Allocations read (every 201 of the run).
    pub checked: u64,
    /// 201s whose allocation the server said it does not have (404, or another answer below
    /// 500 but 408 and 429), or read back with another event, quantity or lines.
    pub missing: u64,
    /// 201s whose read-back got no answer, or only 5xx, 408 or 429, until the retry window
    /// closed: not found lost, only not read (a server or its database failing over).
    pub unverified: u64,
    /// Tickets of the allocations read back `reserved`, `payment_pending` or `purchased`.
    pub tickets_held: i64,
    /// Tickets of the allocations read back `expired` or `cancelled`: given back to the
    /// event, so they may have been granted again during the run.
    pub tickets_released: i64,
    /// Tickets of the allocations read back `refunded` (their whole order refunded).
    pub tickets_refunded: i64,
    /// Tickets of the allocations missing or unverified: not read back.
    pub tickets_not_read_back: i64,
    /// Allocations whose payment was answered 200.
    pub paid_checked: u64,
    /// Of those, the ones not read back `purchased`.
    pub paid_not_purchased: u64,
    /// Allocations whose buyer was told another status (cancelled, expired, declined,
    /// abandoned, refunded), or whose ticket was admitted at the door (its admission must
    /// read `checked_in`), read back.
    pub statuses_checked: u64,
    /// Of those, the ones read back in a status other than the one told.
    pub wrong_status: u64,
    /// Holds read back `expired` before the `expiresAt` their 201 named ([`lapsed_early`]):
    /// acknowledgements lost.
    pub expired_early: u64,
}

/// A quota's counts as `GET /events/{id}/quotas` reported them after the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaCounts {
    pub id: String,
    pub name: String,
    pub size: i64,
    pub available: i64,
    pub reserved: i64,
    pub purchased: i64,
    pub ticket_type_ids: Vec<String>,
}

/// A quota after the run, judged against the run's tickets of its types.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaCheck {
    #[serde(flatten)]
    pub counts: QuotaCounts,
    /// Tickets of the quota's types in the 201 responses clients saw.
    pub tickets_granted: i64,
    /// Of those, the tickets of allocations still held when read back.
    pub tickets_held: i64,
    /// Counts below zero, counts that do not add up to the size, more of its types granted
    /// than it holds, or more of the run's tickets of its types held than it counts as
    /// reserved and purchased.
    pub overfull: bool,
}

impl QuotaCheck {
    /// Judges a quota as [`Verification::new`] judges the event: it is read before the
    /// allocations, so every ticket of its types read back as held was held when it was read.
    /// `granted` and `held`: the run's tickets by ticket type id.
    pub fn new(
        counts: QuotaCounts,
        granted: &BTreeMap<String, i64>,
        held: &BTreeMap<String, i64>,
    ) -> Self {
        let of_types = |by_type: &BTreeMap<String, i64>| -> i64 {
            counts
                .ticket_type_ids
                .iter()
                .filter_map(|t| by_type.get(t))
                .sum()
        };
        let (tickets_granted, tickets_held) = (of_types(granted), of_types(held));
        let QuotaCounts {
            size,
            available,
            reserved,
            purchased,
            ..
        } = counts;
        let overfull = available < 0
            || reserved < 0
            || purchased < 0
            || available + reserved + purchased != size
            || tickets_granted > size
            || tickets_held > reserved + purchased;
        Self {
            counts,
            tickets_granted,
            tickets_held,
            overfull,
        }
    }
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
    /// Tickets of the granted allocations that were still held when read back.
    pub tickets_held: i64,
    /// Tickets of the granted allocations read back `expired` or `cancelled` (given back).
    pub tickets_released: i64,
    /// Tickets of the granted allocations read back `refunded`.
    pub tickets_refunded: i64,
    /// Tickets of the granted allocations not read back (missing or unverified). With
    /// `tickets_held`, `tickets_released` and `tickets_refunded`, they make up
    /// `tickets_granted` (the allocations read back in no status of the API's aside).
    pub tickets_not_read_back: i64,
    /// Counts below zero, counts that do not add up, more granted than exist (when none of
    /// the run's holds was given back), or more of the run's tickets held than the event
    /// counts as reserved and purchased.
    pub oversold: bool,
    pub allocations_checked: u64,
    /// 201s whose allocation the server said it does not have, or has otherwise.
    pub allocations_missing: u64,
    /// 201s whose allocation could not be read at all (no answer, 5xx, 408 or 429 until the
    /// retry window closed): neither found nor found missing. Any makes the verification
    /// incomplete ([`Report::incomplete_only`]).
    pub allocations_unverified: u64,
    /// The first few of them: the allocation and its last answer.
    pub unverified_examples: Vec<String>,
    /// Allocations whose payment was answered 200, read back.
    pub paid_checked: u64,
    /// Paid allocations not read back `purchased`.
    pub paid_not_purchased: u64,
    /// The run's tickets by ticket type id, as the 201s' lines gave them (empty from a
    /// server without ticket types).
    pub granted_by_type: BTreeMap<String, i64>,
    /// Of those, the tickets of allocations still held when read back.
    pub held_by_type: BTreeMap<String, i64>,
    /// Every quota of the event ([`QuotaCheck`]).
    pub quotas: Vec<QuotaCheck>,
    /// Allocations whose buyer was told a status other than `purchased` (cancelled by a
    /// cancel, expired by a late payment, still held or lapsed after a declined card or when
    /// abandoned, refunded), or whose ticket was admitted at the door (its admission must read
    /// `checked_in`), read back.
    pub statuses_checked: u64,
    /// Of those, the ones read back in a status the buyer was not told.
    pub wrong_status: u64,
    /// The first few of them: the allocation, what was told, what was read.
    pub wrong_status_examples: Vec<String>,
    /// Holds read back `expired` before the `expiresAt` their 201 named ([`lapsed_early`]).
    pub expired_early: u64,
    /// The first few of them: the allocation, when it was to lapse, when it did.
    pub expired_early_examples: Vec<String>,
    /// The counts against the rows, with `--admin-token` ([`RowCheck`]); `None` without it,
    /// or when the check could not be made (named in `unread`).
    pub rows: Option<RowCheck>,
    /// What the verification could not read ([`Unread`]), and so judged nothing by: the
    /// event's counts (then `total_tickets` to `purchased_tickets` are 0 and `oversold` is
    /// false, not judged), its quotas (then `quotas` is empty), the row check.
    pub unread: Vec<Unread>,
}

/// What a verification could not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unreadable {
    /// The event's counts, `GET /events/{id}`.
    Event,
    /// Its quotas, `GET /events/{id}/quotas`.
    Quotas,
    /// The row check's reads ([`RowCheck`]): the counts, the quotas, the sales report.
    Rows,
}

impl Unreadable {
    fn phrase(self) -> &'static str {
        match self {
            Self::Event => "the event's counts could not be read",
            Self::Quotas => "the quotas could not be read",
            Self::Rows => "the row check could not be made",
        }
    }
}

/// A read of the verification that failed for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unread {
    pub what: Unreadable,
    /// Its last failure.
    pub error: String,
    /// Whether the server answered it otherwise than asked (a 4xx, a body that is not the
    /// resource): a fault of the run. Otherwise it got no answer, a 5xx, 408 or 429 until
    /// the retry window closed (or the server was taken as gone): the verification is
    /// incomplete ([`Report::incomplete_only`]).
    pub answered: bool,
}

/// The event's and its quotas' counts against the rows, as the sales report
/// (`GET /events/{id}/report`) adds them up per ticket type from the allocations' lines.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RowCheck {
    /// Reads it took to find a quiet moment (or gave up after).
    pub tries: u32,
    /// Whether the counts read just before and just after the report agreed, so that the
    /// report and the counts show the same moment; without one nothing is compared.
    pub quiet: bool,
    /// The event's reserved and purchased tickets, and the rows' (the report's totals over
    /// its types).
    pub event_reserved: i64,
    pub event_purchased: i64,
    pub rows_reserved: i64,
    pub rows_purchased: i64,
    /// Quotas whose counts are not the sum of their types' rows.
    pub quota_mismatches: Vec<String>,
    /// A quiet moment, the event's counts equal to the rows', no quota mismatched.
    pub agrees: bool,
}

impl RowCheck {
    /// Judges the counts against `rows`: reserved and purchased tickets per ticket type id.
    pub fn new(
        tries: u32,
        quiet: bool,
        event: &EventCounts,
        quotas: &[QuotaCounts],
        rows: &BTreeMap<String, (i64, i64)>,
    ) -> Self {
        let sum = |types: &mut dyn Iterator<Item = &(i64, i64)>| {
            types.fold((0, 0), |(r, p), (tr, tp)| (r + tr, p + tp))
        };
        let (rows_reserved, rows_purchased) = sum(&mut rows.values());
        let quota_mismatches: Vec<String> = quotas
            .iter()
            .filter_map(|q| {
                let (reserved, purchased) =
                    sum(&mut q.ticket_type_ids.iter().filter_map(|t| rows.get(t)));
                (reserved != q.reserved || purchased != q.purchased).then(|| {
                    format!(
                        "{}: reserved {} purchased {}, rows {reserved} and {purchased}",
                        q.name, q.reserved, q.purchased
                    )
                })
            })
            .collect();
        let agrees = quiet
            && event.reserved == rows_reserved
            && event.purchased == rows_purchased
            && quota_mismatches.is_empty();
        Self {
            tries,
            quiet,
            event_reserved: event.reserved,
            event_purchased: event.purchased,
            rows_reserved,
            rows_purchased,
            quota_mismatches,
            agrees,
        }
    }
}

impl Verification {
    /// Judges the counts read after the run against what the run was granted. The event is
    /// read before the allocations, and a hold that is no longer held never is again, so
    /// every allocation read back as held was held when the event was read: its tickets
    /// must be within the event's reserved and purchased counts. That holds on an event of
    /// the run's own and on an existing one (`--event-id`) that others sell from meanwhile.
    /// More tickets granted than exist is an oversell only while none of the run's holds was
    /// given back: once one reads back `expired` or `cancelled` its tickets were free to be
    /// granted again, and the judgement is [`Verification::with_releases`]'s (a soak longer
    /// than the server's hold time, or a server with short holds).
    pub fn new(counts: EventCounts, tickets_granted: i64, read_back: ReadBack) -> Self {
        let EventCounts {
            total,
            available,
            reserved,
            purchased,
        } = counts;
        let oversold = available < 0
            || reserved < 0
            || purchased < 0
            || available + reserved + purchased != total
            || tickets_granted > total
            || read_back.tickets_held > reserved + purchased;
        let verification = Self {
            total_tickets: total,
            available_tickets: available,
            reserved_tickets: reserved,
            purchased_tickets: purchased,
            tickets_granted,
            tickets_held: read_back.tickets_held,
            tickets_released: read_back.tickets_released,
            tickets_refunded: read_back.tickets_refunded,
            tickets_not_read_back: read_back.tickets_not_read_back,
            oversold,
            allocations_checked: read_back.checked,
            allocations_missing: read_back.missing,
            allocations_unverified: read_back.unverified,
            unverified_examples: Vec::new(),
            paid_checked: read_back.paid_checked,
            paid_not_purchased: read_back.paid_not_purchased,
            granted_by_type: BTreeMap::new(),
            held_by_type: BTreeMap::new(),
            quotas: Vec::new(),
            statuses_checked: read_back.statuses_checked,
            wrong_status: read_back.wrong_status,
            wrong_status_examples: Vec::new(),
            expired_early: read_back.expired_early,
            expired_early_examples: Vec::new(),
            rows: None,
            unread: Vec::new(),
        };
        verification.judged_for_releases()
    }

    /// The verification of a run whose event's counts could not be read (`unread`): the
    /// allocations read back are judged as [`Verification::new`] judges them, the counts
    /// are not (reported 0, `oversold` false).
    pub fn without_counts(tickets_granted: i64, read_back: ReadBack, unread: Unread) -> Self {
        let counts = EventCounts {
            total: 0,
            available: 0,
            reserved: 0,
            purchased: 0,
        };
        Self {
            oversold: false,
            ..Self::new(counts, tickets_granted, read_back)
        }
        .with_unread(unread)
    }

    /// Adds what could not be read.
    pub fn with_unread(mut self, unread: Unread) -> Self {
        self.unread.push(unread);
        self
    }

    /// What the granted tickets became, every part named so that they add up to
    /// `tickets_granted`: held, given back, refunded, not read back, and any read back in a
    /// status the API does not have.
    pub fn granted_parts(&self) -> String {
        let mut parts = format!(
            "held {}, given back {}, refunded {}, not read back {}",
            self.tickets_held,
            self.tickets_released,
            self.tickets_refunded,
            self.tickets_not_read_back
        );
        let other = self.tickets_granted
            - self.tickets_held
            - self.tickets_released
            - self.tickets_refunded
            - self.tickets_not_read_back;
        if other != 0 {
            parts.push_str(&format!(", in another status {other}"));
        }
        parts
    }

    /// Whether the event's counts were read: otherwise nothing is judged by them.
    pub fn counts_read(&self) -> bool {
        self.unread_of(Unreadable::Event).is_none()
    }

    fn unread_of(&self, what: Unreadable) -> Option<&Unread> {
        self.unread.iter().find(|u| u.what == what)
    }

    /// [`Verification::with_releases`] when any of the run's holds read back given back.
    fn judged_for_releases(self) -> Self {
        if self.tickets_released > 0 {
            self.with_releases()
        } else {
            self
        }
    }

    /// The judgement of a run whose holds may end (cancelled, lapsed, declined then lapsed):
    /// their tickets return to the pool and are granted again, so the run may be granted
    /// more tickets than exist, and only the rest of [`Verification::new`]'s judgement holds
    /// (the counts add up, and every ticket read back as held is within them), for the
    /// event and for each quota. Call it after [`Verification::with_quotas`].
    pub fn with_releases(self) -> Self {
        let oversold = self.counts_read()
            && (self.available_tickets < 0
                || self.reserved_tickets < 0
                || self.purchased_tickets < 0
                || self.available_tickets + self.reserved_tickets + self.purchased_tickets
                    != self.total_tickets
                || self.tickets_held > self.reserved_tickets + self.purchased_tickets);
        let quotas = self
            .quotas
            .into_iter()
            .map(|q| {
                let c = &q.counts;
                let overfull = c.available < 0
                    || c.reserved < 0
                    || c.purchased < 0
                    || c.available + c.reserved + c.purchased != c.size
                    || q.tickets_held > c.reserved + c.purchased;
                QuotaCheck { overfull, ..q }
            })
            .collect();
        Self {
            oversold,
            quotas,
            ..self
        }
    }

    /// Adds the run's tickets by type and judges every quota against them ([`QuotaCheck`];
    /// as [`Verification::with_releases`] does when any of the run's holds was given back).
    pub fn with_quotas(
        self,
        quotas: Vec<QuotaCounts>,
        granted_by_type: BTreeMap<String, i64>,
        held_by_type: BTreeMap<String, i64>,
    ) -> Self {
        let quotas = quotas
            .into_iter()
            .map(|q| QuotaCheck::new(q, &granted_by_type, &held_by_type))
            .collect();
        Self {
            granted_by_type,
            held_by_type,
            quotas,
            ..self
        }
        .judged_for_releases()
    }
}

/// A whole run: its rates, its answers and what was found afterwards.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub event_id: String,
    /// `--clients`; in the open model (`--arrival-rate`), `--max-in-flight`.
    pub clients: usize,
    pub elapsed_seconds: f64,
    /// Purchase (or read) requests sent, answered or not.
    pub requests: u64,
    pub requests_per_second: f64,
    /// Purchases held (201): orders, of one line or several.
    pub reservations: u64,
    pub reservations_per_second: f64,
    /// Tickets in those 201s.
    pub tickets_reserved: i64,
    pub tickets_per_second: f64,
    /// 201s that do not hold what was asked or are priced wrong (an amount other than unit
    /// price × quantity, a total other than the sum of the amounts).
    pub orders_mispriced: u64,
    /// The first few of them: the allocation and what is wrong with it.
    pub mispriced_examples: Vec<String>,
    pub payments_succeeded: u64,
    /// Payments answered 200 per second of the run: paid sales.
    pub payments_per_second: f64,
    /// Latency of the payments answered (any status; zero when there were none).
    pub pay_latency_ms: Latency,
    /// Purchase (or read) requests that got no answer.
    pub transport_errors: u64,
    /// Latency of the purchase (or read) requests the service answered, granted or refused
    /// (any status below 500); failed requests are left out and counted below.
    pub latency_ms: Latency,
    /// Purchase (or read) requests answered 5xx or not at all.
    pub failed_requests: u64,
    /// Latency of the failed requests (zero when there were none).
    pub failed_latency_ms: Latency,
    /// Answers to purchase (or read) requests by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Answers to purchase (or read) requests by error code.
    pub codes: BTreeMap<String, u64>,
    /// Every request, payments included, by action, status and code.
    pub answers: Vec<Answer>,
    /// `None`: the run skipped verification (`--no-verify`).
    pub verification: Option<Verification>,
    /// Each step's rate, latency, answers and timeline ([`Step`]), of every run.
    pub steps: Vec<Step>,
    /// The journeys, in a journey run ([`crate::Journey`]); `None` in the closed-loop storm.
    pub journey: Option<JourneySummary>,
    /// What the streams held open during the run saw (`--idle-streams`).
    pub streams: Option<crate::streams::StreamReport>,
    /// Whether the run is sound: no reason in `verdict`.
    pub sound: bool,
    /// Why the run is not sound ([`Report::reasons`] when it ended); empty when it is.
    pub verdict: Vec<String>,
}

impl Report {
    /// Why the run cannot be called sound; empty when it can. A sound run was verified
    /// (the event's and every quota's counts add up, nothing oversold, every 201 read back,
    /// every paid hold `purchased`, every other hold in the status its buyer was told, and,
    /// with `--admin-token`, the counts equal to the rows), every 201 held what was asked,
    /// priced right, and every request was answered with an expected answer
    /// ([`Answer::is_expected`], or [`Answer::is_expected_in_journey`] in a journey run):
    /// no 5xx, no request without an answer.
    pub fn reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        let count = |keep: &dyn Fn(&Answer) -> bool| -> u64 {
            self.answers
                .iter()
                .filter(|a| keep(a))
                .map(|a| a.count)
                .sum()
        };
        if let Some(j) = &self.journey
            && j.checkin_anomalies > 0
        {
            reasons.push(format!(
                "{} tickets scanned at two gates at once were not admitted exactly once",
                j.checkin_anomalies
            ));
        }
        let server_errors = count(&|a| a.status.is_some_and(|s| s >= 500));
        if server_errors > 0 {
            reasons.push(format!("{server_errors} answers were server errors (5xx)"));
        }
        let unanswered = count(&|a| a.status.is_none());
        if unanswered > 0 {
            // By step when more than one: `transport_errors` counts the purchases (or reads)
            // alone, and a sum of several steps beside it would read as a contradiction.
            let mut by_action = BTreeMap::<&str, u64>::new();
            for answer in self.answers.iter().filter(|a| a.status.is_none()) {
                *by_action.entry(answer.action).or_default() += answer.count;
            }
            let steps = if by_action.len() > 1 {
                let each: Vec<String> = by_action
                    .iter()
                    .map(|(action, n)| format!("{action} {n}"))
                    .collect();
                format!(": {}", each.join(", "))
            } else {
                String::new()
            };
            reasons.push(format!(
                "{unanswered} requests got no answer (transport errors){steps}"
            ));
        }
        let over_cap = count(&|a| a.status == Some(429) && a.code.as_deref() == Some(CAPPED));
        if over_cap > 0 {
            // Its refusals cut connections the tool had sent on (the server closes them
            // unread), so they also show as transport errors: the cause, named once.
            reasons.push(format!(
                "the server's per-address connection cap was reached: {over_cap} answers were \
                 429 {CAPPED}, and requests on the connections it closed may have got no \
                 answer; start the server with a higher --max-connections-per-address (1000 \
                 by default; 0 for none), or open fewer connections from this address \
                 (--clients, --max-in-flight in the open model, --idle-streams spread over \
                 --stream-sources)"
            ));
        }
        let unexpected: Vec<String> = self
            .answers
            .iter()
            .filter(|a| {
                let expected = if self.journey.is_some() {
                    a.is_expected_in_journey()
                } else {
                    a.is_expected()
                };
                a.status.is_some_and(|s| s < 500) && !expected
            })
            .map(|a| format!("{} ×{}", a.label(), a.count))
            .collect();
        if !unexpected.is_empty() {
            reasons.push(format!(
                "answers a load run should not get: {}",
                unexpected.join(", ")
            ));
        }
        if self.orders_mispriced > 0 {
            reasons.push(format!(
                "{} orders not held as asked or priced wrong: {}",
                self.orders_mispriced,
                self.mispriced_examples.join(", ")
            ));
        }
        if let Some(streams) = &self.streams {
            // Not a loss: told apart as the verification's unread reads are.
            if let Some(unread) = &streams.final_counts_unread {
                reasons.push(format!(
                    "verification incomplete: the event's final counts could not be read \
                     (no answer, 5xx, 408 or 429 until --retry-seconds ran out), so the {} \
                     streams' last messages were compared with nothing: {unread}",
                    streams.opened
                ));
            }
            if streams.last_message_mismatches > 0 {
                reasons.push(format!(
                    "{} of {} streams did not end on the final counts: {}",
                    streams.last_message_mismatches,
                    streams.opened,
                    streams.mismatch_examples.join("; ")
                ));
            }
            if streams.ended_early > 0 {
                reasons.push(format!(
                    "{} streams ended before the run was over",
                    streams.ended_early
                ));
            }
        }
        match &self.verification {
            None => reasons.push("not verified (--no-verify)".into()),
            Some(v) => {
                if v.oversold {
                    reasons.push(format!(
                        "oversold: total {} available {} reserved {} purchased {}, granted {} ({})",
                        v.total_tickets,
                        v.available_tickets,
                        v.reserved_tickets,
                        v.purchased_tickets,
                        v.tickets_granted,
                        v.granted_parts()
                    ));
                }
                for q in v.quotas.iter().filter(|q| q.overfull) {
                    let c = &q.counts;
                    reasons.push(format!(
                        "quota {} oversold: size {} available {} reserved {} purchased {}, granted {} of which held {}",
                        c.name,
                        c.size,
                        c.available,
                        c.reserved,
                        c.purchased,
                        q.tickets_granted,
                        q.tickets_held
                    ));
                }
                if v.allocations_missing > 0 {
                    reasons.push(format!(
                        "{} of {} granted allocations not read back",
                        v.allocations_missing, v.allocations_checked
                    ));
                }
                if v.paid_not_purchased > 0 {
                    reasons.push(format!(
                        "{} of {} paid allocations not read back purchased",
                        v.paid_not_purchased, v.paid_checked
                    ));
                }
                if v.wrong_status > 0 {
                    reasons.push(format!(
                        "{} of {} allocations not read back in the status told: {}",
                        v.wrong_status,
                        v.statuses_checked,
                        v.wrong_status_examples.join(", ")
                    ));
                }
                if v.expired_early > 0 {
                    reasons.push(format!(
                        "{} holds read back expired before the expiresAt their 201 named (lost acknowledgements): {}",
                        v.expired_early,
                        v.expired_early_examples.join(", ")
                    ));
                }
                // Not a loss: a run with nothing else against it is told apart
                // ([`Report::incomplete_only`]).
                if v.allocations_unverified > 0 {
                    reasons.push(format!(
                        "verification incomplete: {} of {} granted allocations could not be read \
                         back (no answer, 5xx, 408 or 429 until --retry-seconds ran out), neither \
                         found nor found missing: {}",
                        v.allocations_unverified,
                        v.allocations_checked,
                        v.unverified_examples.join(", ")
                    ));
                }
                // Nothing was judged by what was not read. Read otherwise than asked, a fault;
                // not read at all, an incomplete verification, told apart as the unverified.
                for u in &v.unread {
                    if u.answered {
                        reasons.push(format!("{}: {}", u.what.phrase(), u.error));
                    } else {
                        reasons.push(format!(
                            "verification incomplete: {} (no answer, 5xx, 408 or 429 until \
                             --retry-seconds ran out), nothing judged by it: {}",
                            u.what.phrase(),
                            u.error
                        ));
                    }
                }
                if let Some(rows) = v.rows.as_ref().filter(|r| !r.agrees) {
                    if rows.quiet {
                        reasons.push(format!(
                            "counts disagree with the rows: event reserved {} purchased {}, rows {} and {}{}",
                            rows.event_reserved,
                            rows.event_purchased,
                            rows.rows_reserved,
                            rows.rows_purchased,
                            rows.quota_mismatches
                                .iter()
                                .map(|m| format!("; quota {m}"))
                                .collect::<String>()
                        ));
                    } else {
                        reasons.push(format!(
                            "counts never held still around the sales report in {} reads",
                            rows.tries
                        ));
                    }
                }
            }
        }
        reasons
    }

    /// No reason in [`Report::reasons`].
    pub fn is_sound(&self) -> bool {
        self.reasons().is_empty()
    }

    /// Whether the only thing against the run is a verification it could not finish (some
    /// allocations, the event's counts, its quotas or the row check could not be read, for
    /// want of an answer): nothing found lost, nothing proven kept either.
    pub fn incomplete_only(&self) -> bool {
        let Some(v) = &self.verification else {
            return false;
        };
        let streams_unread = self
            .streams
            .as_ref()
            .is_some_and(|s| s.final_counts_unread.is_some());
        let incomplete = usize::from(v.allocations_unverified > 0)
            + v.unread.iter().filter(|u| !u.answered).count()
            + usize::from(streams_unread);
        incomplete > 0 && self.reasons().len() == incomplete
    }
}

/// The code of the server's refusal of a connection past its `--max-connections-per-address`.
const CAPPED: &str = "TOO_MANY_CONNECTIONS";

/// How much earlier than its `expiresAt` a hold may lapse before it counts as lapsed early:
/// the server's `expiresAt` and `expiredAt` come from the database's clock, and a read time
/// from the tool's.
pub const EXPIRY_TOLERANCE: time::Duration = time::Duration::seconds(1);

/// Whether a hold read back `expired` lapsed before the `expiresAt` its 201 named (`told`,
/// RFC 3339) by more than [`EXPIRY_TOLERANCE`]: a lost acknowledgement. It lapsed at its
/// `expiredAt` (`expired_at`, RFC 3339), or, when the read names none, at the latest when it
/// was read (`read_at`, the tool's clock). Never for a hold whose `expiresAt` had passed, and
/// never when `told` cannot be read (nothing to hold the server to).
pub fn lapsed_early(told: &str, expired_at: Option<&str>, read_at: time::OffsetDateTime) -> bool {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    let Ok(told) = OffsetDateTime::parse(told, &Rfc3339) else {
        return false;
    };
    let lapsed = expired_at
        .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
        .unwrap_or(read_at);
    lapsed + EXPIRY_TOLERANCE < told
}

pub(crate) fn latency(sorted_us: &[u64]) -> Latency {
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

/// A rate as the text shows it: one decimal below 10 per second, as the HTML report's steps
/// table, so that a slow step reads 0.4/s rather than 0/s; whole numbers above.
fn per_second(rate: f64) -> String {
    if rate < 10.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.0}")
    }
}

/// The report as people read it.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let line = |l: &Latency| {
        format!(
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}",
            l.p50, l.p90, l.p99, l.max, l.mean
        )
    };
    out.push_str(&format!("event            {}\n", report.event_id));
    // The open model has no clients: its connections are bounded by --max-in-flight.
    match &report.journey {
        Some(j) if j.model == "open" => {
            out.push_str(&format!("max in flight    {}\n", report.clients));
        }
        _ => out.push_str(&format!("clients          {}\n", report.clients)),
    }
    out.push_str(&format!(
        "elapsed          {:.3} s\n",
        report.elapsed_seconds
    ));
    out.push_str(&format!(
        "requests         {} ({}/s)\n",
        report.requests,
        per_second(report.requests_per_second)
    ));
    out.push_str(&format!(
        "reservations     {} ({}/s)\n",
        report.reservations,
        per_second(report.reservations_per_second)
    ));
    out.push_str(&format!(
        "tickets          {} ({}/s)\n",
        report.tickets_reserved,
        per_second(report.tickets_per_second)
    ));
    if report.payments_succeeded > 0 {
        out.push_str(&format!(
            // The latency is of every payment answered (`pay_latency_ms`), refusals such as
            // a 410 too late included: the label says so, lest it read as the successes'.
            "payments ok      {} ({}/s); latency ms of every payment answered, any status: {}\n",
            report.payments_succeeded,
            per_second(report.payments_per_second),
            line(&report.pay_latency_ms)
        ));
    }
    out.push_str(&format!(
        "latency ms       {} (answered, below 500)\n",
        line(&report.latency_ms)
    ));
    if report.failed_requests > 0 {
        out.push_str(&format!(
            "failed           {} (5xx or no answer; latency ms {})\n",
            report.failed_requests,
            line(&report.failed_latency_ms)
        ));
    }
    if let Some(streams) = &report.streams {
        let sources = match streams.sources {
            0 => "the system's source addresses".to_owned(),
            1 => "1 source address".to_owned(),
            n => format!("{n} source addresses"),
        };
        let [total, available, reserved, purchased] = streams.final_counts;
        let compared = match &streams.final_counts_unread {
            Some(unread) => format!(
                "last messages compared with nothing, the final counts could not be read ({unread})"
            ),
            None => format!(
                "last message = final counts (total {total}, available {available}, reserved {reserved}, purchased {purchased}): {} (not: {})",
                streams.last_message_matches, streams.last_message_mismatches
            ),
        };
        out.push_str(&format!(
            "streams          {} from {sources}; {} messages; {compared}; ended early {}; reopened {} times\n",
            streams.opened, streams.messages, streams.ended_early, streams.reconnects
        ));
        out.push_str(&format!(
            "commit→message   {} ms\n",
            line(&streams.commit_to_message_ms)
        ));
        if let (Some(before), Some(open), Some(per)) = (
            streams.server_rss_before_kib,
            streams.server_rss_open_kib,
            streams.server_kib_per_stream,
        ) {
            out.push_str(&format!(
                "server RSS       {before} KiB before, {open} KiB with the streams open: {per:.1} KiB per stream\n"
            ));
        }
    }
    out.push_str(&format!("statuses         {:?}\n", report.statuses));
    out.push_str(&format!("codes            {:?}\n", report.codes));
    if report.transport_errors > 0 {
        out.push_str(&format!("transport errors {}\n", report.transport_errors));
    }
    if let Some(v) = &report.verification {
        match v.unread_of(Unreadable::Event) {
            Some(u) => out.push_str(&format!(
                "event counts     {}: {}\n",
                u.what.phrase(),
                u.error
            )),
            None => out.push_str(&format!(
                "event counts     total {} available {} reserved {} purchased {}\n",
                v.total_tickets, v.available_tickets, v.reserved_tickets, v.purchased_tickets
            )),
        }
        out.push_str(&format!(
            "verification     tickets granted {} ({}); oversold: {}; allocations read back {}/{} (missing {}, could not verify {})\n",
            v.tickets_granted,
            v.granted_parts(),
            match (v.counts_read(), v.oversold) {
                (false, _) => "not judged",
                (true, true) => "YES",
                (true, false) => "no",
            },
            v.allocations_checked - v.allocations_missing - v.allocations_unverified,
            v.allocations_checked,
            v.allocations_missing,
            v.allocations_unverified
        ));
        if let Some(u) = v.unread_of(Unreadable::Quotas) {
            out.push_str(&format!(
                "quotas           {}: {}\n",
                u.what.phrase(),
                u.error
            ));
        }
        for q in &v.quotas {
            let c = &q.counts;
            out.push_str(&format!(
                "quota {:<10} size {} available {} reserved {} purchased {}; granted {} (held {}); oversold: {}\n",
                c.name,
                c.size,
                c.available,
                c.reserved,
                c.purchased,
                q.tickets_granted,
                q.tickets_held,
                if q.overfull { "YES" } else { "no" }
            ));
        }
        if v.paid_checked > 0 {
            out.push_str(&format!(
                "paid read back   {}/{} purchased\n",
                v.paid_checked - v.paid_not_purchased,
                v.paid_checked
            ));
        }
        if v.statuses_checked > 0 {
            out.push_str(&format!(
                "told read back   {}/{} in the status told (cancelled, expired, held or lapsed, refunded, checked in)\n",
                v.statuses_checked - v.wrong_status,
                v.statuses_checked
            ));
        }
        if v.expired_early > 0 {
            out.push_str(&format!(
                "expired early    {} holds read back expired before the expiresAt their 201 named\n",
                v.expired_early
            ));
        }
        match (&v.rows, v.unread_of(Unreadable::Rows)) {
            (None, Some(u)) => out.push_str(&format!(
                "rows             {}: {}\n",
                u.what.phrase(),
                u.error
            )),
            (Some(rows), _) => out.push_str(&format!(
                "rows             event reserved {} purchased {}, rows {} and {}; quotas mismatched {}; {} ({} reads)\n",
                rows.event_reserved,
                rows.event_purchased,
                rows.rows_reserved,
                rows.rows_purchased,
                rows.quota_mismatches.len(),
                if rows.agrees { "agree" } else { "DISAGREE" },
                rows.tries
            )),
            (None, None) => out.push_str("rows             not compared (no --admin-token)\n"),
        }
    }
    if let Some(j) = &report.journey {
        // Asked for no payment is not a choice to abandon: told apart, and only when any.
        let held_only = match j.held_only {
            0 => String::new(),
            n => format!(", {n} held only (no payment asked: no --pay)"),
        };
        out.push_str(&format!(
            "journey          {} model; {} buyers, {} held: chose {} pay, {} declining card, {} cancel, {} abandon{held_only}; {} too late for their hold, {} payments ok; think {} ms\n",
            j.model,
            j.buyers,
            j.held,
            j.paid,
            j.declined,
            j.cancelled,
            j.abandoned,
            j.too_late,
            report.payments_succeeded,
            j.think_ms
        ));
        out.push_str(&format!(
            "                 {} watched ({} messages); peak in flight {}; waited for a slot {}; start lag ms {}\n",
            j.watchers,
            j.stream_messages,
            j.peak_in_flight,
            j.waited_for_slot,
            line(&j.start_lag_ms)
        ));
        if j.retried > 0 {
            out.push_str(&format!(
                "                 {} attempts sent again while their answer was ambiguous (none, a 5xx or IDEMPOTENCY_IN_PROGRESS): the server failed or was away; each step's figures are its calls' final answers\n",
                j.retried
            ));
        }
        if j.refunded + j.checked_in + j.joined > 0 {
            out.push_str(&format!(
                "                 {} refunded; {} checked in ({} double scans not admitted exactly once); {} joined the waiting list, {} offers paid\n",
                j.refunded, j.checked_in, j.checkin_anomalies, j.joined, j.offers_paid
            ));
        }
    }
    for step in &report.steps {
        let answers: Vec<String> = step
            .answers
            .iter()
            .map(|(answer, count)| format!("{answer} ×{count}"))
            .collect();
        out.push_str(&format!(
            "step {:<11} {} ({}/s); latency ms {}; {}\n",
            step.name,
            step.requests,
            per_second(step.per_second),
            line(&step.latency_ms),
            answers.join(", ")
        ));
    }
    if report.orders_mispriced > 0 {
        out.push_str(&format!(
            "mispriced        {} orders ({})\n",
            report.orders_mispriced,
            report.mispriced_examples.join(", ")
        ));
    }
    if report.verdict.is_empty() {
        out.push_str("verdict          sound\n");
    } else {
        out.push_str(&format!(
            "verdict          NOT SOUND: {}\n",
            report.verdict.join("; ")
        ));
    }
    out
}

#[cfg(test)]
mod tests;
