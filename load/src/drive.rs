//! The storm: concurrent keep-alive clients sending purchases (and payments, or reads) to one
//! existing event, every request reported live to an [`Observer`] that may stop a client or
//! the whole run.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::history::{self, Answered, History};
use crate::order::{self, Line};

/// An order a client got a 201 for.
#[derive(Debug, Clone)]
pub struct Granted {
    pub allocation_id: String,
    /// The buyer's fingerprint.
    pub buyer: String,
    /// Tickets held.
    pub quantity: i64,
    /// Its lines as the 201 gave them, sorted (empty from a server without ticket types).
    pub lines: Vec<Line>,
    /// The `expiresAt` its 201 named (RFC 3339, the database's clock): the hold must not
    /// lapse before it. `None` for an allocation granted otherwise (a paid offer).
    pub expires_at: Option<String>,
}

/// How many 201s [`order::check_answer`] refuses to keep as examples.
pub(crate) const MISPRICED_EXAMPLES: usize = 5;

/// What a storm's clients saw, added up over the run.
#[derive(Debug, Default)]
pub struct Totals {
    /// Latency of every answered purchase (or read) request, in microseconds.
    pub latencies_us: Vec<u64>,
    /// Answers to purchase (or read) requests by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Answers to purchase (or read) requests by error code.
    pub codes: BTreeMap<String, u64>,
    /// Every 201.
    pub granted: Vec<Granted>,
    /// 201s that do not hold what was asked, priced right ([`order::check_answer`]).
    pub mispriced: u64,
    /// The first few of them: the allocation and what is wrong with it.
    pub mispriced_examples: Vec<String>,
    /// Payments answered 200.
    pub payments_succeeded: u64,
    /// Purchase (or read) requests that got no answer.
    pub transport_errors: u64,
}

impl Totals {
    /// Adds another client's totals to these.
    pub(crate) fn add(&mut self, mut other: Totals) {
        self.latencies_us.append(&mut other.latencies_us);
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.codes {
            *self.codes.entry(k).or_default() += v;
        }
        self.granted.append(&mut other.granted);
        self.mispriced += other.mispriced;
        self.mispriced_examples
            .append(&mut other.mispriced_examples);
        self.mispriced_examples.truncate(MISPRICED_EXAMPLES);
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
    /// Tickets asked for by purchase request `n`: `quantities[n % len]` (per line, for an
    /// order of several lines).
    pub quantities: Vec<i64>,
    /// Ticket type ids to order from, by `{lines}`; empty: `{quantity}` orders of the event's
    /// default type.
    pub ticket_types: Vec<String>,
    /// Lines per order at most: each order asks for 1 to this many distinct types of
    /// [`Plan::ticket_types`] ([`order::pick_types`]).
    pub max_lines: usize,
    /// Buyer `k` is the fingerprint `{buyer_prefix}{k}`.
    pub buyer_prefix: String,
    /// Distinct buyers to cycle through; `None`: one per request (or per run of
    /// [`Plan::requests_per_buyer`]).
    pub buyers: Option<u64>,
    /// Consecutive purchase requests sent as one buyer (1: each its own): request `n`'s buyer
    /// is `n / requests_per_buyer`, cycled by `buyers`. Above 1 the clients take a buyer's
    /// requests at nearly the same moment, so that buyer has several in flight at once.
    pub requests_per_buyer: u64,
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
    /// Where every request is recorded (`--history`); `None`: nowhere.
    pub history: Option<Arc<History>>,
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
            ticket_types: Vec::new(),
            max_lines: 1,
            buyer_prefix: "load-".into(),
            buyers: None,
            requests_per_buyer: 1,
            pay_every: None,
            pay_on_next_instance: false,
            rotate_instances: false,
            pause: Duration::ZERO,
            read_only: false,
            client: None,
            history: None,
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
    /// The lines asked for; empty for a `{quantity}` order.
    pub lines: Vec<Line>,
    /// `None`: no answer (connection refused or cut, or a timeout).
    pub status: Option<StatusCode>,
    /// The body's `code`, when it has one.
    pub code: Option<String>,
    /// The allocation: the new hold's (201) or the one paid for.
    pub allocation_id: Option<String>,
    /// Tickets in a 201's body.
    pub granted: Option<i64>,
    /// The answer's `Retry-After` value, if it carried one.
    pub retry_after: Option<String>,
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
    /// A request of `buyer` is about to go to instance `instance`; every call is followed by
    /// one [`Observer::observe`] of its outcome, so callers can count requests in flight.
    fn sending(&self, _action: Action, _instance: usize, _buyer: &str) {}

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

/// Sends one request of the plan (recorded in its history, if any), as its own call.
async fn send(plan: &Plan, request: reqwest::RequestBuilder) -> Answered {
    let history = plan.history.as_deref();
    history::send(history, history.map_or(0, History::next_call), 1, request).await
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
    let run = n / plan.requests_per_buyer.max(1);
    let buyer = format!(
        "{}{}",
        plan.buyer_prefix,
        plan.buyers.map_or(run, |b| run % b.max(1))
    );
    let per_line = plan.quantities[(n % plan.quantities.len() as u64) as usize];
    let lines = order::lines_for(n, &plan.ticket_types, plan.max_lines, per_line);
    let quantity = per_line * lines.len().max(1) as i64;
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
                .json(&order::body(&lines, quantity)),
        )
    };
    observer.sending(action, instance, &buyer);
    let started = Instant::now();
    let answer = send(plan, request).await;
    let mut outcome = Outcome {
        action,
        client: worker,
        request: n,
        instance,
        buyer,
        quantity,
        lines,
        status: None,
        code: None,
        allocation_id: None,
        granted: None,
        retry_after: None,
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
    if let Err(wrong) = order::check_answer(&outcome.lines, outcome.quantity, &outcome.body) {
        tally.mispriced += 1;
        if tally.mispriced_examples.len() < MISPRICED_EXAMPLES {
            tally.mispriced_examples.push(format!("{id}: {wrong}"));
        }
    }
    tally.granted.push(Granted {
        allocation_id: id.clone(),
        buyer: outcome.buyer.clone(),
        quantity: outcome.granted.unwrap_or(0),
        lines: order::lines_of(&outcome.body),
        expires_at: outcome.body["expiresAt"].as_str().map(str::to_owned),
    });
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
    observer.sending(Action::Pay, instance, &outcome.buyer);
    let started = Instant::now();
    let answer = send(plan, request).await;
    let latency = started.elapsed();
    let (status, body, retry_after) = match answer {
        Some((status, body, retry_after)) => (Some(status), body, retry_after),
        None => (None, Value::Null, None),
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

#[cfg(test)]
mod tests;
