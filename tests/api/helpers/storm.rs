//! The fault tests' storms: many buyers at once, over one or several instances, driven by
//! the `boxoffice-load` crate's [`drive`], with a record of every promise (201) and every
//! payment (200) made to them.
//!
//! The load crate sends the requests and reports each one live to an [`Observer`]; this layer
//! is the observer the faults need: the live count of tickets granted and of requests in
//! flight (to kill a server mid-storm), each granted allocation with its buyer and whether
//! its payment got a 200 (to check every promise against the rows and the per-buyer cap),
//! how often a buyer had two purchases in flight at once, the answers counted by action,
//! status and code, and a buyer stopping at the first request that gets no answer or at the
//! first `TICKETS_SOLD_OUT`.
//!
//! Each buyer sends [`REQUESTS_PER_BUYER`] purchases in a row, taken by different clients at
//! nearly the same moment: in batched mode they often share a batch, where the cap must count
//! the grants made before them in it.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxoffice_load::{Action, Observer, Outcome, Plan, Stop, drive};
use futures_util::StreamExt;
use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Api, answered};

/// Purchase requests each buyer of a storm sends, one after the other in the request order
/// (quantities 1 and 2 in turn: 4 or 5 tickets asked for, past a cap of 3).
pub const REQUESTS_PER_BUYER: u64 = 3;

/// One allocation a client got a 201 for, and whether it then got a 200 for paying it.
#[derive(Debug, Clone)]
pub struct Granted {
    pub id: String,
    pub buyer: String,
    pub quantity: i64,
    pub paid: bool,
}

/// What a storm's buyers saw, shared between them (and between storms on the same event).
#[derive(Default)]
pub struct StormLog {
    granted: Mutex<Vec<Granted>>,
    /// (action, status, code) → count.
    answers: Mutex<BTreeMap<(&'static str, u16, String), u64>>,
    pub tickets_granted: AtomicU64,
    pub transport_errors: AtomicU64,
    /// Requests sent and not yet answered.
    pub in_flight: AtomicUsize,
    /// Purchases in flight per buyer.
    buyer_in_flight: Mutex<HashMap<String, usize>>,
    /// Purchases sent while the same buyer already had one in flight.
    pub sent_beside_another: AtomicU64,
}

impl StormLog {
    pub fn granted(&self) -> Vec<Granted> {
        self.granted.lock().unwrap().clone()
    }

    pub fn answers(&self) -> BTreeMap<(&'static str, u16, String), u64> {
        self.answers.lock().unwrap().clone()
    }

    /// Asserts the storm made buyers race themselves: some purchase was sent while its
    /// buyer's previous one was still in flight.
    pub fn assert_buyers_overlapped(&self) {
        let overlapped = self.sent_beside_another.load(Ordering::SeqCst);
        assert!(
            overlapped > 0,
            "no buyer ever had two purchases in flight at once"
        );
    }

    /// Asserts no buyer was promised more than `cap` tickets: the sum of its 201s. Valid while
    /// no hold of the storm ended unpaid (a cancel or an expiry gives cap room back).
    pub fn assert_cap_kept(&self, cap: i64) {
        let mut by_buyer = BTreeMap::<String, i64>::new();
        for g in self.granted() {
            *by_buyer.entry(g.buyer).or_default() += g.quantity;
        }
        let over: Vec<_> = by_buyer.iter().filter(|(_, held)| **held > cap).collect();
        assert!(
            over.is_empty(),
            "{} of {} buyers promised more than the cap of {cap}, for example {:?}",
            over.len(),
            by_buyer.len(),
            &over[..over.len().min(3)]
        );
        assert!(
            by_buyer.values().any(|held| *held == cap),
            "no buyer reached the cap of {cap}, so the storm did not test it: {by_buyer:?}"
        );
    }
}

/// How one storm's buyers behave.
#[derive(Clone)]
pub struct Buyer {
    /// Instances to spread requests over (each buyer goes round them, request by request).
    pub instances: Arc<Vec<Api>>,
    pub event_id: String,
    pub log: Arc<StormLog>,
    /// Pay for the hold of every n-th purchase (on the next instance along), or never.
    pub pay_every: Option<u64>,
    /// Stop at the first request that gets no answer (the server is gone).
    pub stop_on_transport_error: bool,
    /// Stop at the first `TICKETS_SOLD_OUT` (with expiring holds, stock comes back).
    pub stop_when_sold_out: bool,
    /// Purchase requests per buyer: the storm sends at most this many times its buyers.
    pub max_requests: u64,
    /// Pause after each purchase request, to spread a storm over time.
    pub pause: Duration,
}

/// The observer of one storm: records into its [`StormLog`] and stops a buyer as configured.
struct Watch {
    log: Arc<StormLog>,
    stop_on_transport_error: bool,
    stop_when_sold_out: bool,
}

impl Observer for Watch {
    fn sending(&self, action: Action, _: usize, buyer: &str) {
        self.log.in_flight.fetch_add(1, Ordering::SeqCst);
        if action == Action::Purchase {
            let mut in_flight = self.log.buyer_in_flight.lock().unwrap();
            let count = in_flight.entry(buyer.to_owned()).or_default();
            if *count > 0 {
                self.log.sent_beside_another.fetch_add(1, Ordering::SeqCst);
            }
            *count += 1;
        }
    }

    fn observe(&self, outcome: &Outcome) -> ControlFlow<Stop> {
        let log = &self.log;
        log.in_flight.fetch_sub(1, Ordering::SeqCst);
        if outcome.action == Action::Purchase {
            *log.buyer_in_flight
                .lock()
                .unwrap()
                .get_mut(&outcome.buyer)
                .expect("a purchase in flight") -= 1;
        }
        let Some(status) = outcome.status else {
            log.transport_errors.fetch_add(1, Ordering::Relaxed);
            return if self.stop_on_transport_error {
                ControlFlow::Break(Stop::Client)
            } else {
                ControlFlow::Continue(())
            };
        };
        let code = outcome.code.clone().unwrap_or_default();
        let sold_out = code == "TICKETS_SOLD_OUT";
        *log.answers
            .lock()
            .unwrap()
            .entry((outcome.action.name(), status.as_u16(), code))
            .or_default() += 1;
        match (outcome.action, status) {
            (Action::Purchase, StatusCode::CREATED) => {
                let id = outcome.allocation_id.clone().expect("allocation id");
                assert_eq!(outcome.granted, Some(outcome.quantity), "{outcome:?}");
                // The 201 is a promise from here on, whatever happens to the payment.
                log.granted.lock().unwrap().push(Granted {
                    id,
                    buyer: outcome.buyer.clone(),
                    quantity: outcome.quantity,
                    paid: false,
                });
                log.tickets_granted
                    .fetch_add(outcome.quantity as u64, Ordering::Relaxed);
            }
            (Action::Pay, StatusCode::OK) => {
                let mut granted = log.granted.lock().unwrap();
                let id = outcome.allocation_id.as_deref();
                let hold = granted
                    .iter_mut()
                    .rev()
                    .find(|g| Some(g.id.as_str()) == id)
                    .expect("a payment is for a granted hold");
                hold.paid = true;
            }
            _ => {}
        }
        if self.stop_when_sold_out && outcome.action == Action::Purchase && sold_out {
            ControlFlow::Break(Stop::Client)
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// Runs `workers` buyers to completion (bounded by `limit`).
pub async fn storm(buyer: Buyer, workers: usize, limit: Duration) {
    let plan = Plan {
        clients: workers,
        requests: buyer.max_requests * workers as u64,
        // One and two tickets in turn: some requests meet too little stock, not none.
        quantities: vec![1, 2],
        // A fresh set of buyers per storm: no buyer's cap carries over.
        buyer_prefix: format!("device-{}-", Uuid::new_v4().simple()),
        requests_per_buyer: REQUESTS_PER_BUYER,
        pay_every: buyer.pay_every,
        pay_on_next_instance: true,
        rotate_instances: true,
        pause: buyer.pause,
        // The harness's client: its requests are bounded in time.
        client: Some(buyer.instances[0].client.clone()),
        ..Plan::new(
            buyer.instances.iter().map(|a| a.address.clone()).collect(),
            buyer.event_id.clone(),
        )
    };
    let watch = Arc::new(Watch {
        log: buyer.log.clone(),
        stop_on_transport_error: buyer.stop_on_transport_error,
        stop_when_sold_out: buyer.stop_when_sold_out,
    });
    tokio::time::timeout(limit, drive(&plan, watch))
        .await
        .expect("the storm ends within its time limit")
        .expect("the storm runs (no buyer panicked)");
}

/// Every granted allocation is stored as granted (event, quantity, a live or sold status,
/// `purchased` if its payment got a 200) and readable by its buyer over HTTP at `api`.
pub async fn assert_promises_kept(
    pool: &PgPool,
    api: &Api,
    event_id: &str,
    granted: &[Granted],
    allowed_statuses: &[&str],
) {
    let event = Uuid::parse_str(event_id).unwrap();
    for g in granted {
        let row: Option<(Uuid, i32, String)> = sqlx::query_as(
            "SELECT event_id, quantity, status FROM ticket_allocations WHERE id = $1",
        )
        .bind(Uuid::parse_str(&g.id).unwrap())
        .fetch_optional(pool)
        .await
        .unwrap();
        let (stored_event, quantity, status) =
            row.unwrap_or_else(|| panic!("allocation {g:?} got a 201 but is not stored"));
        assert_eq!(stored_event, event, "{g:?}");
        assert_eq!(i64::from(quantity), g.quantity, "{g:?}");
        assert!(
            allowed_statuses.contains(&status.as_str()),
            "{g:?} is {status}"
        );
        if g.paid {
            assert_eq!(status, "purchased", "{g:?} was paid (200)");
        }
    }
    let reads = futures_util::stream::iter(granted.iter().cloned())
        .map(|g| {
            let request = api.ticket_request(&g.id, &g.buyer);
            async move { (answered(request).await, g) }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    for ((status, body, _), g) in reads {
        assert_eq!(status, StatusCode::OK, "{g:?}: {body}");
        assert_eq!(body["eventId"], event_id, "{g:?}: {body}");
        assert_eq!(body["quantity"].as_i64(), Some(g.quantity), "{g:?}: {body}");
    }
}

/// Tickets in the event's allocation rows by status.
pub async fn tickets_by_status(pool: &PgPool, event_id: &str) -> BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, sum(quantity)::bigint FROM ticket_allocations \
         WHERE event_id = $1 GROUP BY status",
    )
    .bind(Uuid::parse_str(event_id).unwrap())
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}
