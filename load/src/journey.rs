//! The on-sale: buyers who each run one journey (hold an order, think, then pay, pay with a
//! declining card, cancel, or abandon the hold; some watch the live statistics stream
//! meanwhile), either arriving at a given rate (the open model, with an optional spike as the
//! sale opens) or one after another on `--clients` closed-loop clients.
//!
//! In the open model a buyer's latencies are measured from when it was due: the hold from its
//! scheduled arrival, the payment from the end of its think time. A tool that falls behind (or
//! a buyer who waits for a slot under `--max-in-flight`) therefore shows in the latencies
//! instead of silently sending less (no coordinated omission).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use crate::drive::{Granted, Totals};
use crate::flags;
use crate::history::{self, History};
use crate::order::{self, mix};
use crate::report::{Latency, latency};
use crate::steps::Sample;

/// The buyers' journey and how they arrive. Without any of these flags the tool runs its
/// closed-loop storm of holds (and `--pay`) as before.
#[derive(Debug, Clone, Args)]
pub struct Journey {
    /// Open model: buyers arriving per second, each running the journey once (`--requests`
    /// caps the buyers, `--duration` the arrivals; default 10,000 buyers without either).
    /// Without it, each of `--clients` runs journeys one after another.
    #[arg(long, allow_negative_numbers = true, value_parser = flags::rate)]
    pub arrival_rate: Option<f64>,
    /// Arrivals per second during the first `--spike-seconds`, as when a sale opens.
    #[arg(long, allow_negative_numbers = true, value_parser = flags::rate, requires = "arrival_rate")]
    pub spike_rate: Option<f64>,
    /// Length of the spike.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0, value_parser = flags::seconds, requires = "spike_rate")]
    pub spike_seconds: f64,
    /// Open model: most journeys in flight at once; an arrival beyond waits for a slot (and
    /// its latency counts the wait). Needs --arrival-rate (the closed model runs --clients).
    #[arg(long, allow_negative_numbers = true, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..), requires = "arrival_rate")]
    pub max_in_flight: u32,
    /// Think time between the hold and the next step, in milliseconds: `200` (fixed),
    /// `100-2000` (uniform) or `exp:500` (exponential of that mean, cut at 10 times it). At
    /// most a year (31536000000), the mean at most a tenth of it.
    #[arg(long, allow_negative_numbers = true, default_value = "0")]
    pub think_ms: Think,
    /// Share of buyers (0 to 1) who pay with the declining test card (`tok_chargeDeclined`)
    /// and then leave the hold. Every type the run orders must be priced above 0 (`--price`,
    /// or the `--event-id` event's own prices): refused before the run otherwise.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0, value_parser = share)]
    pub decline_share: f64,
    /// Share of buyers who abandon their hold and let it lapse.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0, value_parser = share)]
    pub abandon_share: f64,
    /// Share of buyers who cancel their hold (`DELETE /tickets/{id}/payment`).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0, value_parser = share)]
    pub cancel_share: f64,
    /// Share of buyers who pay and then have the organiser refund the whole order
    /// (`POST /tickets/{id}/refund` with `--admin-token`).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0, value_parser = share, requires = "admin_token")]
    pub refund_share: f64,
    /// Share of buyers who pay and then have their first ticket's code scanned at two gates
    /// at once (`POST /events/{id}/checkins` on two instances with `--admin-token`): exactly
    /// one of the two scans may admit it.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0, value_parser = share, requires = "admin_token")]
    pub checkin_share: f64,
    /// Share of buyers turned away with `TICKETS_SOLD_OUT` who join the waiting list
    /// (`POST /events/{id}/waiting-list`), wait for an offer (polling their entry every
    /// 500 ms, at most --offer-wait-seconds) and pay it, or leave.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0, value_parser = share)]
    pub waiting_list_share: f64,
    /// How long a buyer on the waiting list waits for an offer before leaving it. Needs
    /// --waiting-list-share.
    #[arg(long, allow_negative_numbers = true, default_value_t = 10.0, value_parser = flags::seconds, requires = "waiting_list_share")]
    pub offer_wait_seconds: f64,
    /// Share of buyers who watch `GET /events/{id}/stream` from their arrival to the end of
    /// their journey (at least until its first message).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0, value_parser = share)]
    pub watch_share: f64,
    /// The server's `--admin-token`: sent on the organiser's routes, and lets the
    /// verification compare the event's and quotas' counts with the rows
    /// (`GET /events/{id}/report`). A server with a token needs it for any verification (it
    /// reads the event's quotas, an organiser's route): a run without it is refused before
    /// it starts (or give `--no-verify`). A token the sales report refuses (401, 403; even a
    /// server without a token of its own refuses a wrong one there) is refused before the
    /// run too.
    #[arg(long)]
    pub admin_token: Option<String>,
}

impl Default for Journey {
    fn default() -> Self {
        Self {
            arrival_rate: None,
            spike_rate: None,
            spike_seconds: 0.0,
            max_in_flight: 10_000,
            think_ms: Think::Fixed(0),
            decline_share: 0.0,
            abandon_share: 0.0,
            cancel_share: 0.0,
            refund_share: 0.0,
            checkin_share: 0.0,
            waiting_list_share: 0.0,
            offer_wait_seconds: 10.0,
            watch_share: 0.0,
            admin_token: None,
        }
    }
}

fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{text} is not a share between 0 and 1")),
    }
}

impl Journey {
    /// Whether the run is a journey run rather than the closed-loop storm.
    pub fn is_active(&self) -> bool {
        self.arrival_rate.is_some()
            || self.think_ms != Think::Fixed(0)
            || self.decline_share > 0.0
            || self.abandon_share > 0.0
            || self.cancel_share > 0.0
            || self.refund_share > 0.0
            || self.checkin_share > 0.0
            || self.waiting_list_share > 0.0
            || self.watch_share > 0.0
    }

    /// What buyer `k` does with its hold: the first `--abandon-share` of a uniform draw
    /// abandons, the next `--cancel-share` cancels, the next `--decline-share` pays with the
    /// declining card, the next `--refund-share` pays and is refunded, the next
    /// `--checkin-share` pays and is checked in, the rest pay (with `pay`) or, without it,
    /// keep the hold unpaid ([`Fate::Keep`]).
    pub fn fate(&self, k: u64, pay: bool) -> Fate {
        let u = unit(mix(k ^ 0xFA7E));
        let mut edge = self.abandon_share;
        if u < edge {
            return Fate::Abandon;
        }
        edge += self.cancel_share;
        if u < edge {
            return Fate::Cancel;
        }
        edge += self.decline_share;
        if u < edge {
            return Fate::Decline;
        }
        edge += self.refund_share;
        if u < edge {
            return Fate::Refund;
        }
        edge += self.checkin_share;
        if u < edge {
            return Fate::CheckIn;
        }
        if pay { Fate::Pay } else { Fate::Keep }
    }

    /// Whether buyer `k`, turned away sold out, joins the waiting list.
    pub fn waits(&self, k: u64) -> bool {
        unit(mix(k ^ 0x3A17)) < self.waiting_list_share
    }

    /// Whether buyer `k` watches the stream.
    pub fn watches(&self, k: u64) -> bool {
        unit(mix(k ^ 0x5EE)) < self.watch_share
    }

    /// When buyer `k` is due, from the run's start: evenly spaced at `--spike-rate` during
    /// the spike, then at `--arrival-rate`. `None` in the closed model.
    pub fn arrival(&self, k: u64) -> Option<Duration> {
        let rate = self.arrival_rate?;
        let (spike_buyers, spike_end) = match self.spike_rate {
            Some(spike) => (
                (spike * self.spike_seconds).floor() as u64,
                self.spike_seconds,
            ),
            None => (0, 0.0),
        };
        let seconds = if k < spike_buyers {
            k as f64 / self.spike_rate.unwrap_or(rate)
        } else {
            spike_end + (k - spike_buyers) as f64 / rate
        };
        // A year at most (the rates' own bound): a buyer that far off is never due in a run.
        Some(Duration::from_secs_f64(seconds.min(flags::MAX_SECONDS)))
    }

    /// How many buyers the open model schedules, of `limit` at most, when no arrival may be
    /// due at or after `duration`; `None` in the closed model.
    fn scheduled(&self, limit: u64, duration: Option<Duration>) -> Option<u64> {
        let rate = self.arrival_rate?;
        let Some(duration) = duration else {
            return Some(limit);
        };
        let d = duration.as_secs_f64();
        // Arrival k is due at k / rate: those due before d number ceil(d × rate).
        let due_before = |seconds: f64, rate: f64| (seconds * rate).ceil().max(0.0) as u64;
        let arrivals = match self.spike_rate {
            Some(spike) => {
                let spike_buyers = (spike * self.spike_seconds).floor() as u64;
                due_before(d, spike).min(spike_buyers) + due_before(d - self.spike_seconds, rate)
            }
            None => due_before(d, rate),
        };
        Some(arrivals.min(limit))
    }

    /// A warning for before the run, when the open model's arrivals cannot all start within
    /// the time they are scheduled over: a journey holds one of `--max-in-flight` slots for
    /// at least its think time, so at most about `max-in-flight / (mean think time + 1 ms)`
    /// start per second (the 1 ms a rough lower bound of the hold's round trip), and the
    /// others wait for a slot, the run going on long past `--duration` with nothing printed.
    /// `limit`: the most buyers (`--requests`); `None` when the bound is met, and in the
    /// closed model.
    pub fn start_warning(&self, limit: u64, duration: Option<Duration>) -> Option<String> {
        let arrivals = self.scheduled(limit, duration)?;
        let span = self
            .arrival(arrivals.checked_sub(1)?)
            .unwrap_or_default()
            .as_secs_f64();
        let journey_seconds = self.think_ms.mean_ms() / 1000.0 + 0.001;
        let per_second = f64::from(self.max_in_flight) / journey_seconds;
        let needed = arrivals as f64 / per_second;
        // A second of slack: a short run's estimate is too rough to warn by less.
        (needed > span + 1.0).then(|| {
            format!(
                "--arrival-rate schedules {arrivals} arrivals over {span:.1} s, but with \
                 --max-in-flight {} at most about {per_second:.0} journeys can start per \
                 second (each holds its slot for at least its think time, mean {:.0} ms, plus \
                 about 1 ms for its hold: a rough bound), so starting them all takes about \
                 {needed:.0} s or more and the run goes on well past its schedule; raise \
                 --max-in-flight, or lower --arrival-rate or --duration",
                self.max_in_flight,
                self.think_ms.mean_ms()
            )
        })
    }

    /// Checks the flags against each other.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let shares = self.abandon_share
            + self.cancel_share
            + self.decline_share
            + self.refund_share
            + self.checkin_share;
        if shares > 1.0 + 1e-9 {
            return Err(
                "--abandon-share, --cancel-share, --decline-share, --refund-share and \
                 --checkin-share add up to more than 1"
                    .into(),
            );
        }
        flags::duration("--offer-wait-seconds", self.offer_wait_seconds)?;
        flags::duration("--spike-seconds", self.spike_seconds)?;
        if self.spike_rate.is_some() && self.spike_seconds == 0.0 {
            return Err("--spike-rate needs --spike-seconds above 0 (the spike's length)".into());
        }
        for (flag, rate) in [
            ("--arrival-rate", self.arrival_rate),
            ("--spike-rate", self.spike_rate),
        ] {
            if rate.is_some_and(|r| !flags::is_rate(r)) {
                return Err(format!(
                    "{flag} must be a rate per second that is finite and at least one a year"
                ));
            }
        }
        Ok(())
    }
}

/// A uniform draw in [0, 1) from a mixed value.
fn unit(mixed: u64) -> f64 {
    (mixed >> 11) as f64 / (1u64 << 53) as f64
}

/// What a buyer does after the hold and the think time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Pays with the succeeding card (`tok_visa`).
    Pay,
    /// Pays with the declining card (`tok_chargeDeclined`), then leaves the hold.
    Decline,
    /// Cancels the hold.
    Cancel,
    /// Does nothing: the hold lapses.
    Abandon,
    /// Keeps the hold, asked for no payment (a run without `--pay`): it lapses as an
    /// abandoned one does, but no buyer chose to abandon it.
    Keep,
    /// Pays, then the organiser refunds the whole order.
    Refund,
    /// Pays, then the first ticket's code is scanned at two gates at once.
    CheckIn,
}

impl Fate {
    /// Whether this fate sends a payment. Every fate that pays is judged the same way
    /// ([`expectation`]): a payment answered 200 must read back `purchased`, whatever the fate
    /// does next. A match without a catch-all, so that a new fate must answer.
    pub fn pays(self) -> bool {
        match self {
            Fate::Pay | Fate::Decline | Fate::Refund | Fate::CheckIn => true,
            Fate::Cancel | Fate::Abandon | Fate::Keep => false,
        }
    }
}

/// A think time distribution in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Think {
    /// Always this long.
    Fixed(u64),
    /// Uniform between the two bounds.
    Uniform(u64, u64),
    /// Exponential of this mean, cut at ten times it.
    Exponential(f64),
}

/// The longest think time, in ms: a year, as every flag in seconds ([`flags::MAX_SECONDS`]).
const MAX_THINK_MS: u64 = flags::MAX_SECONDS as u64 * 1000;

impl FromStr for Think {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let number = |part: &str, t: &str, max: u64| match t.trim().parse::<u64>() {
            Ok(ms) if ms <= max => Ok(ms),
            _ => Err(format!(
                "think time {text}: {part}{t:?} is not a whole number of ms from 0 to {max} \
                 (a year{})",
                if max < MAX_THINK_MS {
                    " at ten times it, where its draws are cut"
                } else {
                    ""
                }
            )),
        };
        if let Some(mean) = text.strip_prefix("exp:") {
            // Its draws are cut at ten times the mean: none beyond a year.
            let mean = number("the mean ", mean, MAX_THINK_MS / 10)?;
            if mean == 0 {
                return Err("think time exp:0: the mean must be above 0".into());
            }
            return Ok(Think::Exponential(mean as f64));
        }
        match text.split_once('-') {
            Some((low, high)) => {
                let low = number("the lower bound ", low, MAX_THINK_MS)?;
                let high = number("the upper bound ", high, MAX_THINK_MS)?;
                if low > high {
                    return Err(format!("think time {text}: the bounds are reversed"));
                }
                Ok(Think::Uniform(low, high))
            }
            None => Ok(Think::Fixed(number("", text, MAX_THINK_MS)?)),
        }
    }
}

impl std::fmt::Display for Think {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Think::Fixed(ms) => write!(f, "{ms}"),
            Think::Uniform(low, high) => write!(f, "{low}-{high}"),
            Think::Exponential(mean) => write!(f, "exp:{mean}"),
        }
    }
}

impl Think {
    /// The mean think time in milliseconds (an exponential's before its cut, a little above
    /// the mean of its draws).
    pub fn mean_ms(&self) -> f64 {
        match *self {
            Think::Fixed(ms) => ms as f64,
            Think::Uniform(low, high) => (low as f64 + high as f64) / 2.0,
            Think::Exponential(mean) => mean,
        }
    }

    /// Buyer `k`'s think time (a fixed draw per buyer, so a run can be replayed).
    pub fn sample(&self, k: u64) -> Duration {
        let u = unit(mix(k ^ 0x7_41F));
        let ms = match *self {
            Think::Fixed(ms) => ms as f64,
            // In floating point: `high - low + 1` in integers wraps for the widest range.
            Think::Uniform(low, high) => low as f64 + u * ((high - low) as f64 + 1.0),
            Think::Exponential(mean) => (-mean * (1.0 - u).ln()).min(10.0 * mean),
        };
        Duration::from_micros((ms * 1000.0) as u64)
    }
}

/// What the verification expects an allocation to read back as, from what its buyer was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Its payment was answered 200: `purchased`.
    Purchased,
    /// The answer named this status (`cancelled`, `expired`).
    Told(String),
    /// Still held or lapsed (`reserved` or `expired`): an abandoned hold, or one whose payment
    /// was declined (the API puts it back to `reserved`, or `expired` if it lapsed meanwhile).
    HeldOrExpired,
    /// Paid, and a refund of it got no certain answer: `purchased` or `refunded`.
    PurchasedOrRefunded,
    /// Paid, and the admission of this id admitted at the door: `purchased`, that admission
    /// `checked_in`.
    CheckedIn(String),
}

/// What a verdict says was expected, in the API's words: `purchased`, `cancelled`,
/// `reserved or expired`.
impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Purchased => f.write_str("purchased"),
            Expect::Told(told) => f.write_str(told),
            Expect::HeldOrExpired => f.write_str("reserved or expired"),
            Expect::PurchasedOrRefunded => f.write_str("purchased or refunded"),
            Expect::CheckedIn(admission) => {
                write!(f, "purchased, admission {admission} checked in")
            }
        }
    }
}

impl Expect {
    /// Whether `status` read back agrees with it.
    pub(crate) fn allows(&self, status: &str) -> bool {
        match self {
            Expect::Purchased => status == "purchased",
            Expect::Told(told) => status == told,
            Expect::HeldOrExpired => matches!(status, "reserved" | "expired"),
            Expect::PurchasedOrRefunded => matches!(status, "purchased" | "refunded"),
            Expect::CheckedIn(_) => status == "purchased",
        }
    }
}

/// The status the allocation read back as `body` gives its admission `id`, if it lists it.
pub(crate) fn admission_status<'a>(body: &'a Value, id: &str) -> Option<&'a str> {
    body["admissions"]
        .as_array()?
        .iter()
        .find(|a| a["id"] == id)?["status"]
        .as_str()
}

/// The journeys of a run, added up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JourneySummary {
    /// `open` (buyers arrive at `--arrival-rate`) or `closed` (`--clients` buyers at a time).
    pub model: &'static str,
    pub arrival_rate: Option<f64>,
    pub spike_rate: Option<f64>,
    pub spike_seconds: f64,
    /// The think time distribution (`--think-ms`).
    pub think_ms: String,
    /// Buyers who started a journey.
    pub buyers: u64,
    /// Of them, the ones granted a hold (201).
    pub held: u64,
    /// What the buyers with a hold chose to do, whatever came of it: pay (the refund and
    /// check-in fates included), pay with the declining card, cancel, or nothing (abandoned,
    /// `--abandon-share`: the hold lapses). What came of it: `payments_succeeded` of the
    /// report, and `too_late`.
    pub paid: u64,
    pub declined: u64,
    pub cancelled: u64,
    pub abandoned: u64,
    /// Buyers with a hold who were asked for no payment (a run without `--pay`, the rest
    /// after the shares): they keep the hold unpaid until it lapses, and chose nothing.
    pub held_only: u64,
    /// Of the buyers who paid, paid with the declining card or cancelled, the ones whose
    /// hold had already lapsed: their payment answered 410 `RESERVATION_EXPIRED`, their
    /// cancel refused 409 `INVALID_STATUS` naming `expired`.
    pub too_late: u64,
    /// Paid orders the organiser refunded (200).
    pub refunded: u64,
    /// Paid tickets admitted at the door (each scanned at two gates at once).
    pub checked_in: u64,
    /// Double scans where other than exactly one gate admitted the ticket: must be 0.
    pub checkin_anomalies: u64,
    /// Buyers turned away sold out who joined the waiting list, and offers they paid.
    pub joined: u64,
    pub offers_paid: u64,
    /// Buyers who watched the stream, and the messages their streams carried.
    pub watchers: u64,
    pub stream_messages: u64,
    /// Open model: arrivals that waited for a slot under `--max-in-flight`.
    pub waited_for_slot: u64,
    /// Most journeys in flight at once.
    pub peak_in_flight: u64,
    /// Attempts sent again, beyond each call's first, because the answer was ambiguous (none,
    /// a 5xx, or 409 `IDEMPOTENCY_IN_PROGRESS`): the server failed or was away during the
    /// run, even when every call got its final answer (the steps' figures are those).
    pub retried: u64,
    /// How late the holds were sent after they were due: the tool's own lag (open model).
    pub start_lag_ms: Latency,
}

/// Where the journeys go and what they order.
pub(crate) struct Target {
    pub client: Client,
    pub urls: Vec<String>,
    pub event_id: String,
    pub ticket_types: Vec<String>,
    pub max_lines: usize,
    /// Tickets per line (per order, without ticket types).
    pub quantity: i64,
    /// Buyer `k` is `{buyer_prefix}{k}` (cycled by `buyers`).
    pub buyer_prefix: String,
    pub buyers: Option<u64>,
    /// Whether the buyers with no other fate pay.
    pub pay: bool,
    /// Closed model: clients running journeys one after another.
    pub clients: usize,
    /// Most buyers.
    pub limit: u64,
    /// No buyer is due (open) or starts (closed) after this long.
    pub duration: Option<Duration>,
    /// Where every attempt is recorded (`--history`).
    pub history: Option<Arc<History>>,
    /// Whether holds, payments and refunds carry an `Idempotency-Key` (`--keyed`).
    pub keyed: bool,
    /// How long an ambiguous retriable call is retried (`--retry-seconds`).
    pub retry_for: Duration,
}

/// What the journeys saw, the verification's expectations included.
pub(crate) struct Collected {
    /// The holds as the closed-loop storm counts them (statuses, codes, 201s, prices).
    pub totals: Totals,
    pub samples: Vec<Sample>,
    pub expected: HashMap<String, Expect>,
    pub summary: JourneySummary,
}

/// One shard of what the buyers recorded; buyer `k` records in shard `k % SHARDS`, so that
/// buyers rarely wait on each other's lock.
#[derive(Default)]
struct Shard {
    totals: Totals,
    samples: Vec<Sample>,
    expected: Vec<(String, Expect)>,
    summary: JourneySummary,
    lag_us: Vec<u64>,
}

const SHARDS: usize = 64;

struct Run {
    target: Target,
    journey: Journey,
    started: Instant,
    shards: Vec<Mutex<Shard>>,
    in_flight: AtomicU64,
    peak: AtomicU64,
    /// Attempts sent again ([`JourneySummary::retried`]).
    retried: AtomicU64,
}

impl Run {
    /// The `Idempotency-Key` of journey `k`'s `step` in a keyed run (`--keyed`): one per
    /// journey and step, unique to the run, even when `--buyers` gives several journeys one
    /// buyer.
    fn key(&self, k: u64, step: &str) -> Option<String> {
        self.target
            .keyed
            .then(|| format!("{}{k}-{step}", self.target.buyer_prefix))
    }

    /// Sends a call, keyed with `key` when there is one; a keyed call is retried with its key
    /// while its answer is ambiguous.
    async fn call(&self, request: RequestBuilder, key: Option<String>) -> Answer {
        let retry = key.is_some();
        self.call_retrying(request, key, retry).await
    }

    /// Sends a call and, with `retry`, sends it again while its answer is ambiguous (none, or
    /// a 5xx): after the `Retry-After` it named (at most 2 s) or 500 ms, until
    /// `--retry-seconds` have passed since the first attempt. Only calls that a repeat cannot
    /// duplicate are retried: keyed ones, and those the API refuses the second time (a
    /// cancel, a join, a scan with its nonce). Every attempt goes into the history.
    async fn call_retrying(
        &self,
        request: RequestBuilder,
        key: Option<String>,
        retry: bool,
    ) -> Answer {
        let request = match &key {
            Some(key) => request.header("Idempotency-Key", key),
            None => request,
        };
        let history = self.target.history.as_deref();
        let call = history.map_or(0, History::next_call);
        let give_up = Instant::now() + self.target.retry_for;
        let mut attempt = 1;
        loop {
            let Some(this) = request.try_clone() else {
                unreachable!("the tool sends only JSON bodies, which clone");
            };
            let answered = history::send(history, call, attempt, this).await;
            // A 409 IDEMPOTENCY_IN_PROGRESS says an earlier attempt of this key still holds
            // its claim: the outcome is not known yet either.
            let ambiguous = answered.as_ref().is_none_or(|(status, body, _)| {
                status.is_server_error() || body["code"] == "IDEMPOTENCY_IN_PROGRESS"
            });
            if !(retry && ambiguous) || Instant::now() >= give_up {
                return match answered {
                    Some((status, body, _)) => Answer {
                        status: Some(status),
                        body,
                    },
                    None => Answer {
                        status: None,
                        body: Value::Null,
                    },
                };
            }
            tokio::time::sleep(history::retry_wait(&answered)).await;
            attempt += 1;
            self.retried.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn shard(&self, k: u64) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[(k % SHARDS as u64) as usize]
            .lock()
            .expect("a buyer's shard is never poisoned")
    }

    fn sample(&self, k: u64, step: &'static str, answer: &Answer, due: Instant) {
        let now = Instant::now();
        self.shard(k).samples.push(Sample {
            step,
            status: answer.status.map(|s| s.as_u16()),
            code: answer.body["code"].as_str().map(str::to_owned),
            latency_us: now.saturating_duration_since(due).as_micros() as u64,
            ended_ms: now.saturating_duration_since(self.started).as_millis() as u64,
        });
    }
}

/// A request's answer: `status` is `None` when there was none.
struct Answer {
    status: Option<StatusCode>,
    body: Value,
}

/// Runs the journeys to their end: every buyer due (or started) within the run finishes its
/// journey, think time included.
pub(crate) async fn run(target: Target, journey: &Journey) -> Result<Collected, String> {
    let run = Arc::new(Run {
        target,
        journey: journey.clone(),
        started: Instant::now(),
        shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        in_flight: AtomicU64::new(0),
        peak: AtomicU64::new(0),
        retried: AtomicU64::new(0),
    });
    let mut waited = 0;
    if journey.arrival_rate.is_some() {
        waited = open(&run).await?;
    } else {
        closed(&run).await?;
    }
    let mut collected = Collected {
        totals: Totals::default(),
        samples: Vec::new(),
        expected: HashMap::new(),
        summary: JourneySummary {
            model: if journey.arrival_rate.is_some() {
                "open"
            } else {
                "closed"
            },
            arrival_rate: journey.arrival_rate,
            spike_rate: journey.spike_rate,
            spike_seconds: journey.spike_seconds,
            think_ms: journey.think_ms.to_string(),
            waited_for_slot: waited,
            peak_in_flight: run.peak.load(Ordering::Relaxed),
            retried: run.retried.load(Ordering::Relaxed),
            ..JourneySummary::default()
        },
    };
    let mut lag_us = Vec::new();
    for shard in &run.shards {
        let shard = std::mem::take(&mut *shard.lock().expect("a buyer's shard is never poisoned"));
        collected.totals.add(shard.totals);
        collected.samples.extend(shard.samples);
        collected.expected.extend(shard.expected);
        lag_us.extend(shard.lag_us);
        let (all, one) = (&mut collected.summary, shard.summary);
        all.buyers += one.buyers;
        all.held += one.held;
        all.paid += one.paid;
        all.declined += one.declined;
        all.cancelled += one.cancelled;
        all.abandoned += one.abandoned;
        all.held_only += one.held_only;
        all.too_late += one.too_late;
        all.refunded += one.refunded;
        all.checked_in += one.checked_in;
        all.checkin_anomalies += one.checkin_anomalies;
        all.joined += one.joined;
        all.offers_paid += one.offers_paid;
        all.watchers += one.watchers;
        all.stream_messages += one.stream_messages;
    }
    lag_us.sort_unstable();
    collected.summary.start_lag_ms = latency(&lag_us);
    Ok(collected)
}

/// The open model: one task per buyer, started when it is due; returns how many arrivals
/// waited for a slot.
async fn open(run: &Arc<Run>) -> Result<u64, String> {
    let slots = Arc::new(Semaphore::new(run.journey.max_in_flight as usize));
    let mut buyers = JoinSet::new();
    let mut waited = 0;
    let mut k = 0;
    while k < run.target.limit {
        let Some(at) = run.journey.arrival(k) else {
            break;
        };
        if run.target.duration.is_some_and(|d| at >= d) {
            break;
        }
        let due = run.started + at;
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                waited += 1;
                slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| e.to_string())?
            }
        };
        let run = run.clone();
        buyers.spawn(async move {
            buyer(&run, k, due).await;
            drop(permit);
        });
        // Reap the finished ones as we go: a panicking buyer fails the run now, and the set
        // does not grow with the run.
        while let Some(done) = buyers.try_join_next() {
            done.map_err(|e| e.to_string())?;
        }
        k += 1;
    }
    while let Some(done) = buyers.join_next().await {
        done.map_err(|e| e.to_string())?;
    }
    Ok(waited)
}

/// The closed model: `clients` tasks, each running one journey after another.
async fn closed(run: &Arc<Run>) -> Result<(), String> {
    let next = Arc::new(AtomicU64::new(0));
    let deadline = run.target.duration.map(|d| run.started + d);
    let mut clients = JoinSet::new();
    for _ in 0..run.target.clients {
        let (run, next) = (run.clone(), next.clone());
        clients.spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= run.target.limit || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                buyer(&run, k, Instant::now()).await;
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Buyer `k`'s journey, due at `due`.
async fn buyer(run: &Arc<Run>, k: u64, due: Instant) {
    let in_flight = run.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    run.peak.fetch_max(in_flight, Ordering::Relaxed);
    let target = &run.target;
    let base = &target.urls[(k % target.urls.len() as u64) as usize];
    let buyer = format!(
        "{}{}",
        target.buyer_prefix,
        target.buyers.map_or(k, |b| k % b.max(1))
    );
    let watcher = run.journey.watches(k).then(|| {
        let (done, finished) = oneshot::channel();
        let task = tokio::spawn(watch(run.clone(), k, due, finished));
        (done, task)
    });

    let lines = order::lines_for(k, &target.ticket_types, target.max_lines, target.quantity);
    let quantity = target.quantity * lines.len().max(1) as i64;
    let request = target
        .client
        .post(format!("{base}/events/{}/tickets", target.event_id))
        .header("X-Device-Fingerprint", &buyer)
        .json(&order::body(&lines, quantity));
    let lag = Instant::now().saturating_duration_since(due);
    let hold = run.call(request, run.key(k, "hold")).await;
    let held_id = record_hold(run, k, &buyer, &lines, quantity, &hold, due, lag);

    if let Some(id) = held_id {
        let fate = run.journey.fate(k, target.pay);
        let next_due = Instant::now() + run.journey.think_ms.sample(k);
        tokio::time::sleep_until(next_due.into()).await;
        settle(run, k, base, &buyer, &id, fate, next_due).await;
    } else if hold.body["code"] == "TICKETS_SOLD_OUT" && run.journey.waits(k) {
        wait_for_offer(run, k, base, &buyer, &hold.body).await;
    }

    if let Some((done, task)) = watcher {
        // The journey is over: the watcher closes its stream (once it had its first message).
        let _ = done.send(());
        let _ = task.await;
    }
    run.in_flight.fetch_sub(1, Ordering::Relaxed);
}

/// What buyer `k` does with hold `id` once its think time is over, and what it is then
/// expected to read back as.
async fn settle(
    run: &Arc<Run>,
    k: u64,
    base: &str,
    buyer: &str,
    id: &str,
    fate: Fate,
    due: Instant,
) {
    let target = &run.target;
    let payment = format!("{base}/tickets/{id}/payment");
    let pay = |token: &str| {
        target
            .client
            .post(&payment)
            .json(&json!({ "paymentToken": token }))
    };
    let (step, request, key) = match fate {
        Fate::Pay | Fate::Refund | Fate::CheckIn => ("pay", Some(pay("tok_visa")), "pay"),
        Fate::Decline => ("decline", Some(pay("tok_chargeDeclined")), "pay"),
        // A cancel needs no key: a retried one that already took effect is refused as
        // `INVALID_STATUS` naming `cancelled`, which says the same.
        Fate::Cancel => ("cancel", Some(target.client.delete(&payment)), ""),
        Fate::Abandon => ("abandon", None, ""),
        Fate::Keep => ("keep", None, ""),
    };
    let answer = match request {
        Some(request) => {
            let key = (!key.is_empty()).then(|| run.key(k, key)).flatten();
            let retry = key.is_some() || fate == Fate::Cancel;
            let request = request.header("X-Device-Fingerprint", buyer);
            let answer = run.call_retrying(request, key, retry).await;
            run.sample(k, step, &answer, due);
            Some(answer)
        }
        None => None,
    };
    let paid = answer
        .as_ref()
        .is_some_and(|a| a.status == Some(StatusCode::OK))
        && matches!(fate, Fate::Pay | Fate::Refund | Fate::CheckIn);
    let mut expect = expectation(fate, answer.as_ref());
    let mut refunded = false;
    let mut checked_in = 0;
    if paid && fate == Fate::Refund {
        let answer = refund(run, k, base, id).await;
        refunded = answer.status == Some(StatusCode::OK);
        expect = match answer.status.map(|s| s.as_u16()) {
            Some(200) => answer.body["status"]
                .as_str()
                .map(|s| Expect::Told(s.to_owned())),
            // Refused: still purchased. No answer: either.
            Some(status) if status < 500 => Some(Expect::Purchased),
            _ => Some(Expect::PurchasedOrRefunded),
        };
    }
    if paid
        && fate == Fate::CheckIn
        && let Some(first) = answer.as_ref().map(|a| &a.body["admissions"][0])
        && let (Some(admission), Some(code)) = (first["id"].as_str(), first["code"].as_str())
    {
        checked_in = check_in(run, k, code).await;
        // Admitted: its admission must read back `checked_in`. Admitted by neither gate (an
        // anomaly already), it may read either, and only the purchase is checked.
        if checked_in > 0 {
            expect = Some(Expect::CheckedIn(admission.to_owned()));
        }
    }
    let mut shard = run.shard(k);
    let summary = &mut shard.summary;
    match fate {
        Fate::Pay | Fate::Refund | Fate::CheckIn => summary.paid += 1,
        Fate::Decline => summary.declined += 1,
        Fate::Cancel => summary.cancelled += 1,
        Fate::Abandon => summary.abandoned += 1,
        Fate::Keep => summary.held_only += 1,
    }
    // Too late: the payment found the hold expired (410), or the cancel was refused naming
    // `expired` (a retried cancel that took effect is refused naming `cancelled`).
    let too_late = answer.as_ref().is_some_and(|a| {
        a.status == Some(StatusCode::GONE)
            || (fate == Fate::Cancel
                && a.status == Some(StatusCode::CONFLICT)
                && a.body["status"] == "expired")
    });
    summary.too_late += u64::from(too_late);
    summary.refunded += u64::from(refunded);
    summary.checked_in += checked_in;
    if paid {
        shard.totals.payments_succeeded += 1;
    }
    if let Some(expect) = expect {
        shard.expected.push((id.to_owned(), expect));
    }
}

/// The organiser refunds the whole order `id` (keyed, retried while ambiguous).
async fn refund(run: &Arc<Run>, k: u64, base: &str, id: &str) -> Answer {
    let token = run.journey.admin_token.as_deref().unwrap_or_default();
    let request = run
        .target
        .client
        .post(format!("{base}/tickets/{id}/refund"))
        .bearer_auth(token)
        .json(&json!({}));
    let due = Instant::now();
    let answer = run.call(request, run.key(k, "refund")).await;
    run.sample(k, "refund", &answer, due);
    answer
}

/// Scans `code` at two gates on two instances at once, each scan with its own nonce (retried
/// with it while ambiguous); returns how many admitted it, which must be exactly 1.
async fn check_in(run: &Arc<Run>, k: u64, code: &str) -> u64 {
    let target = &run.target;
    let token = run.journey.admin_token.as_deref().unwrap_or_default();
    let scan = |gate: usize| {
        let base = &target.urls[(k as usize + gate) % target.urls.len()];
        let request = target
            .client
            .post(format!("{base}/events/{}/checkins", target.event_id))
            .bearer_auth(token)
            .json(&json!({
                "code": code,
                "gate": format!("Gate {gate}"),
                "nonce": format!("{}{k}-gate-{gate}", target.buyer_prefix),
            }));
        let due = Instant::now();
        async move {
            let answer = run.call_retrying(request, None, true).await;
            run.sample(k, "checkin", &answer, due);
            answer
        }
    };
    let (first, second) = tokio::join!(scan(0), scan(1));
    let admitted = [first, second]
        .iter()
        .filter(|a| a.status == Some(StatusCode::OK))
        .count() as u64;
    let mut shard = run.shard(k);
    if admitted != 1 {
        shard.summary.checkin_anomalies += 1;
    }
    admitted
}

/// Buyer `k`, turned away sold out, joins the waiting list for the type refused, waits for an
/// offer and pays it; leaves the list when none came in time.
async fn wait_for_offer(run: &Arc<Run>, k: u64, base: &str, buyer: &str, refused: &Value) {
    let target = &run.target;
    let mut body = json!({ "quantity": target.quantity });
    if let Some(ticket_type) = refused["ticketTypeId"].as_str() {
        body["ticketTypeId"] = json!(ticket_type);
    }
    let request = target
        .client
        .post(format!("{base}/events/{}/waiting-list", target.event_id))
        .header("X-Device-Fingerprint", buyer)
        .json(&body);
    let due = Instant::now();
    // A retried join that already took effect is refused as ALREADY_WAITING: retrying is safe.
    let joined = run.call_retrying(request, None, true).await;
    run.sample(k, "join", &joined, due);
    let entry = match (joined.status, joined.body["id"].as_str()) {
        (Some(StatusCode::CREATED), Some(entry)) => format!("{base}/waiting-list/{entry}"),
        // A retried join whose first attempt took effect: the buyer's live entry is theirs.
        (Some(StatusCode::CONFLICT), _) if joined.body["code"] == "ALREADY_WAITING" => {
            let mine = target
                .client
                .get(format!("{base}/waiting-list"))
                .header("X-Device-Fingerprint", buyer);
            let listed = run.call_retrying(mine, None, true).await;
            let live = listed.body["data"].as_array().and_then(|entries| {
                entries.iter().find_map(|e| {
                    matches!(e["status"].as_str(), Some("waiting" | "offered"))
                        .then(|| e["id"].as_str())
                        .flatten()
                })
            });
            match live {
                Some(entry) => format!("{base}/waiting-list/{entry}"),
                None => return,
            }
        }
        _ => return,
    };
    run.shard(k).summary.joined += 1;
    // Checked by `Journey::validate` before the run.
    let until = Instant::now()
        + flags::duration("--offer-wait-seconds", run.journey.offer_wait_seconds)
            .unwrap_or_default();
    loop {
        let read = target
            .client
            .get(&entry)
            .header("X-Device-Fingerprint", buyer);
        let seen = run.call(read, None).await;
        match seen.body["status"].as_str() {
            Some("offered") => {
                let Some(offer) = seen.body["offer"]["allocationId"].as_str() else {
                    return;
                };
                return pay_offer(run, k, base, buyer, offer).await;
            }
            Some("waiting") | None => {}
            // Accepted, declined, expired or left: nothing more to do.
            Some(_) => return,
        }
        if Instant::now() >= until {
            let leave = target
                .client
                .delete(&entry)
                .header("X-Device-Fingerprint", buyer);
            run.call_retrying(leave, None, true).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Pays the waiting-list offer `offer` (keyed); a paid one is read back as `purchased`.
async fn pay_offer(run: &Arc<Run>, k: u64, base: &str, buyer: &str, offer: &str) {
    let request = run
        .target
        .client
        .post(format!("{base}/tickets/{offer}/payment"))
        .header("X-Device-Fingerprint", buyer)
        .json(&json!({ "paymentToken": "tok_visa" }));
    let due = Instant::now();
    let answer = run.call(request, run.key(k, "offer-pay")).await;
    run.sample(k, "offer-pay", &answer, due);
    if answer.status == Some(StatusCode::OK) {
        let mut shard = run.shard(k);
        shard.summary.offers_paid += 1;
        shard.totals.payments_succeeded += 1;
        shard.totals.granted.push(Granted {
            allocation_id: offer.to_owned(),
            buyer: buyer.to_owned(),
            quantity: answer.body["quantity"].as_i64().unwrap_or(0),
            lines: order::lines_of(&answer.body),
            expires_at: None,
        });
        shard.expected.push((offer.to_owned(), Expect::Purchased));
    }
}

/// Records a hold's answer as the closed-loop storm does; returns the allocation of a 201.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site, each a distinct fact of the hold"
)]
fn record_hold(
    run: &Run,
    k: u64,
    buyer: &str,
    lines: &[order::Line],
    quantity: i64,
    hold: &Answer,
    due: Instant,
    lag: Duration,
) -> Option<String> {
    run.sample(k, "purchase", hold, due);
    let mut shard = run.shard(k);
    shard.summary.buyers += 1;
    shard.lag_us.push(lag.as_micros() as u64);
    let totals = &mut shard.totals;
    let Some(status) = hold.status else {
        totals.transport_errors += 1;
        return None;
    };
    totals.latencies_us.push(due.elapsed().as_micros() as u64);
    *totals.statuses.entry(status.as_u16()).or_default() += 1;
    if let Some(code) = hold.body["code"].as_str() {
        *totals.codes.entry(code.to_owned()).or_default() += 1;
    }
    if status != StatusCode::CREATED {
        return None;
    }
    let id = hold.body["id"].as_str().unwrap_or_default().to_owned();
    if let Err(wrong) = order::check_answer(lines, quantity, &hold.body) {
        totals.mispriced += 1;
        if totals.mispriced_examples.len() < crate::drive::MISPRICED_EXAMPLES {
            totals.mispriced_examples.push(format!("{id}: {wrong}"));
        }
    }
    totals.granted.push(Granted {
        allocation_id: id.clone(),
        buyer: buyer.to_owned(),
        quantity: hold.body["quantity"].as_i64().unwrap_or(0),
        lines: order::lines_of(&hold.body),
        expires_at: hold.body["expiresAt"].as_str().map(str::to_owned),
    });
    shard.summary.held += 1;
    Some(id)
}

/// What the hold must read back as, from the buyer's fate and the answer it got; `None`
/// when the answer says nothing certain (no answer, a 5xx: the run is unsound anyway).
fn expectation(fate: Fate, answer: Option<&Answer>) -> Option<Expect> {
    let Some(answer) = answer else {
        return Some(Expect::HeldOrExpired);
    };
    let told = || {
        answer.body["status"]
            .as_str()
            .map(|s| Expect::Told(s.to_owned()))
    };
    match (fate, answer.status.map(|s| s.as_u16())) {
        (fate, Some(200)) if fate.pays() => Some(Expect::Purchased),
        (_, Some(410)) => Some(Expect::Told("expired".into())),
        (Fate::Decline, Some(402)) | (_, Some(429)) => Some(Expect::HeldOrExpired),
        // A cancel done says `cancelled` (whatever the body shows); one refused names the
        // status the hold had (`expired` for one that lapsed).
        (Fate::Cancel, Some(200)) => Some(Expect::Told("cancelled".into())),
        (Fate::Cancel, Some(409)) => told(),
        _ => None,
    }
}

/// A watcher: opens the stream when its buyer is due, records the time to its first message,
/// and reads it until the journey is over (and the first message has come).
async fn watch(run: Arc<Run>, k: u64, due: Instant, mut journey_over: oneshot::Receiver<()>) {
    let target = &run.target;
    let base = &target.urls[(k % target.urls.len() as u64) as usize];
    let url = format!("{base}/events/{}/stream", target.event_id);
    let response = match target.client.get(url).send().await {
        Ok(response) => response,
        Err(_) => {
            let none = Answer {
                status: None,
                body: Value::Null,
            };
            return run.sample(k, "watch", &none, due);
        }
    };
    let status = response.status();
    if status != StatusCode::OK {
        let body = response.json().await.unwrap_or(Value::Null);
        let answer = Answer {
            status: Some(status),
            body,
        };
        return run.sample(k, "watch", &answer, due);
    }
    let mut response = response;
    let (mut messages, mut over) = (0u64, false);
    loop {
        tokio::select! {
            chunk = response.chunk() => match chunk {
                Ok(Some(bytes)) => {
                    let count = bytes.windows(5).filter(|w| w == b"data:").count() as u64;
                    if messages == 0 && count > 0 {
                        let answer = Answer { status: Some(status), body: Value::Null };
                        run.sample(k, "watch", &answer, due);
                    }
                    messages += count;
                    if over && messages > 0 {
                        break;
                    }
                }
                _ => break,
            },
            _ = &mut journey_over, if !over => {
                over = true;
                if messages > 0 {
                    break;
                }
            }
        }
    }
    if messages == 0 {
        // The stream ended before its first message: no answer, as far as a watcher knows.
        let none = Answer {
            status: None,
            body: Value::Null,
        };
        run.sample(k, "watch", &none, due);
    }
    let mut shard = run.shard(k);
    shard.summary.watchers += 1;
    shard.summary.stream_messages += messages;
}

#[cfg(test)]
mod tests;
