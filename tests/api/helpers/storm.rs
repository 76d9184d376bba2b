//! The storm driver of the fault tests: many buyers at once, over one or several instances,
//! with a record of every promise (201) and every payment (200) made to them.
//!
//! Why not the `boxoffice-load` crate: its `run` returns only after the whole run and reports
//! totals, while these tests need what it cannot express: the live count of tickets granted
//! and of requests in flight (to kill a server mid-storm), each granted allocation with its
//! buyer and whether its payment got a 200 (to check every promise against the rows), paying
//! every n-th hold on another instance than the one that granted it, stopping at the first
//! request that gets no answer or at the first `TICKETS_SOLD_OUT`, and the answers counted by
//! action (purchase or pay), status and code. The load crate stays the tool for throughput
//! (`tests/api/load.rs` runs it); this driver is kept minimal for what the faults check.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Api, answered, exchange, new_fingerprint};

/// One allocation a client got a 201 for, and whether it then got a 200 for paying it.
#[derive(Debug, Clone)]
pub struct Granted {
    pub id: String,
    pub buyer: String,
    pub quantity: i64,
    pub paid: bool,
}

/// What a storm's buyers saw, shared between them.
#[derive(Default)]
pub struct StormLog {
    granted: Mutex<Vec<Granted>>,
    /// (action, status, code) → count.
    answers: Mutex<BTreeMap<(&'static str, u16, String), u64>>,
    pub tickets_granted: AtomicU64,
    pub transport_errors: AtomicU64,
    /// Requests sent and not yet answered.
    pub in_flight: AtomicUsize,
}

impl StormLog {
    fn record(&self, action: &'static str, status: StatusCode, body: &Value) {
        let code = body["code"].as_str().unwrap_or_default().to_owned();
        *self
            .answers
            .lock()
            .unwrap()
            .entry((action, status.as_u16(), code))
            .or_default() += 1;
    }

    pub fn granted(&self) -> Vec<Granted> {
        self.granted.lock().unwrap().clone()
    }

    pub fn answers(&self) -> BTreeMap<(&'static str, u16, String), u64> {
        self.answers.lock().unwrap().clone()
    }
}

/// How one storm buyer behaves.
#[derive(Clone)]
pub struct Buyer {
    /// Instances to spread requests over.
    pub instances: Arc<Vec<Api>>,
    pub event_id: String,
    pub log: Arc<StormLog>,
    /// Pay for every n-th hold (on the next instance along), or never.
    pub pay_every: Option<u64>,
    /// Stop at the first request that gets no answer (the server is gone).
    pub stop_on_transport_error: bool,
    /// Stop at the first `TICKETS_SOLD_OUT` (with expiring holds, stock comes back).
    pub stop_when_sold_out: bool,
    /// Most requests this buyer sends.
    pub max_requests: u64,
    /// Pause after each purchase request, to spread a storm over time.
    pub pause: Duration,
}

impl Buyer {
    /// Buys until sold out, stopped, out of requests, or (if so configured) cut off.
    pub async fn run(self, worker: usize) {
        for n in 0..self.max_requests {
            let instance = &self.instances[(worker + n as usize) % self.instances.len()];
            let buyer = new_fingerprint();
            let quantity = 1 + (worker as i64 + n as i64) % 2;
            self.log.in_flight.fetch_add(1, Ordering::SeqCst);
            let answer =
                exchange(instance.purchase_request(&self.event_id, quantity, &buyer)).await;
            self.log.in_flight.fetch_sub(1, Ordering::SeqCst);
            let Some((status, body, _)) = answer else {
                self.log.transport_errors.fetch_add(1, Ordering::Relaxed);
                if self.stop_on_transport_error {
                    return;
                }
                continue;
            };
            self.log.record("purchase", status, &body);
            tokio::time::sleep(self.pause).await;
            if self.stop_when_sold_out && body["code"] == "TICKETS_SOLD_OUT" {
                return;
            }
            if status != StatusCode::CREATED {
                continue;
            }
            let id = body["id"].as_str().expect("allocation id").to_owned();
            assert_eq!(body["quantity"].as_i64(), Some(quantity), "{body}");
            // The 201 is a promise from here on, whatever happens to the payment.
            let index = {
                let mut granted = self.log.granted.lock().unwrap();
                granted.push(Granted {
                    id: id.clone(),
                    buyer: buyer.clone(),
                    quantity,
                    paid: false,
                });
                granted.len() - 1
            };
            self.log
                .tickets_granted
                .fetch_add(quantity as u64, Ordering::Relaxed);
            if self.pay_every.is_some_and(|every| n % every == 0) {
                let other = &self.instances[(worker + n as usize + 1) % self.instances.len()];
                self.log.in_flight.fetch_add(1, Ordering::SeqCst);
                let answer = exchange(other.pay_request(&id, &buyer, Some("tok_visa"))).await;
                self.log.in_flight.fetch_sub(1, Ordering::SeqCst);
                match answer {
                    Some((status, body, _)) => {
                        self.log.record("pay", status, &body);
                        if status == StatusCode::OK {
                            self.log.granted.lock().unwrap()[index].paid = true;
                        }
                    }
                    None => {
                        self.log.transport_errors.fetch_add(1, Ordering::Relaxed);
                        if self.stop_on_transport_error {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Runs `workers` buyers to completion (bounded by `limit`).
pub async fn storm(buyer: Buyer, workers: usize, limit: Duration) {
    let tasks: Vec<_> = (0..workers)
        .map(|worker| tokio::spawn(buyer.clone().run(worker)))
        .collect();
    tokio::time::timeout(limit, async {
        for task in tasks {
            task.await.expect("buyer task");
        }
    })
    .await
    .expect("the storm ends within its time limit");
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
