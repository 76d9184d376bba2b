//! The overlap race: an event of 150 tickets sells type A (in quota Q1 of 60 and quota Q2 of
//! 100), B (in Q2) and C (in no quota). 2,000 orders of one to three random lines, up to 128
//! in flight, alternate between two instances of one database over six seconds; holds last
//! one second, so while orders arrive some holds are paid, some cancelled (on the other
//! instance) and the rest lapse and are swept, and tickets keep returning to the event and
//! its quotas. Whatever the interleaving: no quota above its size, the event never above its
//! capacity, every count of the event and of each quota equal to the lines that hold it,
//! every 201 priced as the sum of its lines, and, once the unpaid holds have lapsed, the paid
//! 201s adding up to exactly what is purchased, on the event and on each quota.
//!
//! Run in both purchase modes: batched (orders of one event share one transaction, decided in
//! arrival order against running counts of the event and of each quota) and one transaction
//! per request. Either way, with two instances orders also meet at the database's row locks.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{
    assert_event_matches_lines, assert_priced_as_asked, assert_quotas_match_lines, create_quota,
    create_type, lines_body, order,
};
use crate::helpers::{
    BATCHED, PER_REQUEST, TestApp, deadlocks_detected, eventually, id_of, new_fingerprint,
    spawn_app_on, spawn_app_with,
};

const CAPACITY: i64 = 150;
const ORDERS: u64 = 2_000;
const IN_FLIGHT: usize = 128;
/// Time between two orders' departures: 2,000 orders over 6 s, six hold lifetimes.
const PACE: Duration = Duration::from_millis(3);

/// A small deterministic generator, one per order, so every run makes the same choices.
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

/// The catalogue of the race: the three types with their prices and how often orders ask
/// for them (A most, so that Q1 and Q2 run out while the event still has tickets).
struct Catalogue {
    event_id: String,
    /// (id, price, weight) of A, B and C.
    types: Vec<(String, i64, u64)>,
}

impl Catalogue {
    fn price_of(&self, type_id: &str) -> i64 {
        self.types
            .iter()
            .find(|(id, ..)| id == type_id)
            .map(|(_, price, _)| *price)
            .unwrap_or_else(|| panic!("a type of the race: {type_id}"))
    }

    /// One to three lines of distinct types, picked by weight, of one to three tickets each.
    fn random_lines(&self, dice: &mut Dice) -> Vec<(&str, i64)> {
        let mut left: Vec<&(String, i64, u64)> = self.types.iter().collect();
        let count = 1 + dice.roll(3);
        let mut lines = Vec::new();
        for _ in 0..count {
            let weights: u64 = left.iter().map(|(.., weight)| weight).sum();
            let mut pick = dice.roll(weights);
            let index = left
                .iter()
                .position(|(.., weight)| {
                    let here = pick < *weight;
                    pick = pick.saturating_sub(*weight);
                    here
                })
                .expect("a pick below the sum of the weights");
            let (id, ..) = left.remove(index);
            lines.push((id.as_str(), 1 + dice.roll(3) as i64));
        }
        lines
    }
}

/// What became of one order.
struct Outcome {
    /// (action, status, code) of the purchase, and of its payment or cancellation if any.
    answers: Vec<(&'static str, u16, String)>,
    /// The allocation of a 201.
    id: Option<String>,
    /// Tickets granted, of them A's and B's.
    granted: i64,
    of_a: i64,
    of_b: i64,
    /// Whether its payment or its cancellation got a 200.
    paid: bool,
    cancelled: bool,
    /// Refused by a quota while the event still had tickets (see [`quota_bound`]).
    quota_bound: bool,
}

/// Whether a refusal shows a quota, not the event, was the limit: C (in no quota) still had
/// tickets, so the event did, yet A or B had none or too few. `INSUFFICIENT_TICKETS` gives
/// each line's availability; `TICKETS_SOLD_OUT` names the first line, in the order asked,
/// with nothing left, so one naming A or B after a line of C says C had some.
fn quota_bound(catalogue: &Catalogue, lines: &[(&str, i64)], body: &Value) -> bool {
    let c = catalogue.types[2].0.as_str();
    match body["code"].as_str() {
        Some("INSUFFICIENT_TICKETS") => {
            let available = |id: &str| {
                body["lines"]
                    .as_array()
                    .expect("lines")
                    .iter()
                    .find(|line| line["ticketTypeId"] == id)
                    .map(|line| line["available"].as_i64().expect("available"))
            };
            available(c).is_some_and(|of_c| {
                lines
                    .iter()
                    .filter_map(|(id, _)| available(id))
                    .any(|of_type| of_type < of_c)
            })
        }
        Some("TICKETS_SOLD_OUT") => {
            let position = |id: &str| lines.iter().position(|(line, _)| *line == id);
            let named = body["ticketTypeId"].as_str().expect("ticketTypeId");
            named != c
                && matches!((position(c), position(named)), (Some(of_c), Some(of_named)) if of_c < of_named)
        }
        _ => false,
    }
}

async fn one_order(apps: &[TestApp; 2], catalogue: &Catalogue, i: u64) -> Outcome {
    let mut dice = Dice::new(i);
    let lines = catalogue.random_lines(&mut dice);
    let buyer = new_fingerprint();
    let (here, there) = (&apps[(i % 2) as usize], &apps[(1 - i % 2) as usize]);
    let (status, body) = order(here, &catalogue.event_id, &buyer, lines_body(&lines)).await;
    let mut outcome = Outcome {
        answers: vec![answer("purchase", status, &body)],
        id: None,
        granted: 0,
        of_a: 0,
        of_b: 0,
        paid: false,
        cancelled: false,
        quota_bound: quota_bound(catalogue, &lines, &body),
    };
    if status != StatusCode::CREATED {
        return outcome;
    }
    assert_priced_as_asked(&body, &lines, |id| catalogue.price_of(id), "EUR");
    let tickets_of = |n: usize| {
        lines
            .iter()
            .filter(|(id, _)| *id == catalogue.types[n].0)
            .map(|(_, quantity)| quantity)
            .sum()
    };
    let id = id_of(&body);
    outcome.granted = body["quantity"].as_i64().expect("quantity");
    outcome.of_a = tickets_of(0);
    outcome.of_b = tickets_of(1);
    outcome.id = Some(id.clone());
    // Pay one hold in eight and cancel one in four, on the other instance, after a while
    // (while other orders arrive); let the rest lapse, so tickets keep coming back to the
    // event and its quotas throughout the storm.
    let fate = dice.roll(8);
    if fate < 3 {
        tokio::time::sleep(Duration::from_millis(dice.roll(400))).await;
    }
    match fate {
        0 => {
            let (status, paid) = there.pay(&id, &buyer, Some("tok_visa")).await;
            outcome.answers.push(answer("pay", status, &paid));
            outcome.paid = status == StatusCode::OK;
        }
        1 | 2 => {
            let (status, cancelled) = there.cancel(&id, &buyer).await;
            outcome.answers.push(answer("cancel", status, &cancelled));
            outcome.cancelled = status == StatusCode::OK;
        }
        _ => {}
    }
    outcome
}

/// (action, status, code) of an answer.
fn answer(action: &'static str, status: StatusCode, body: &Value) -> (&'static str, u16, String) {
    let code = body["code"].as_str().unwrap_or_default().to_owned();
    (action, status.as_u16(), code)
}

/// Every answer an action may get in the race: its status and error code ("" for success).
/// A hold may lapse before its payment or cancellation.
const ALLOWED: &[(&str, u16, &str)] = &[
    ("purchase", 201, ""),
    ("purchase", 409, "TICKETS_SOLD_OUT"),
    ("purchase", 409, "INSUFFICIENT_TICKETS"),
    ("pay", 200, ""),
    ("pay", 410, "RESERVATION_EXPIRED"),
    ("cancel", 200, ""),
    ("cancel", 409, "INVALID_STATUS"),
];

async fn overlap_race(mode: &[&str]) {
    let mut flags = mode.to_vec();
    // Holds lapse after a second and are swept at once, so the pools refill during the storm;
    // every order comes from one address, far faster than the default per-address budget.
    flags.extend(["--hold-seconds", "1", "--sweep-interval-ms", "50"]);
    flags.extend(["--rate-limit-per-address", "0"]);
    let first = spawn_app_with(&flags).await;
    let options = (*first.pool.connect_options()).clone();
    let second = spawn_app_on(&options, &flags).await;
    let apps = [first, second];
    let app = &apps[0];
    let event_id = id_of(&app.create_event("Overlap", CAPACITY, None).await);
    let mut types = Vec::new();
    for (name, price, weight) in [("A", 4500, 3), ("B", 2500, 2), ("C", 1000, 1)] {
        let view = create_type(app, &event_id, json!({ "name": name, "price": price })).await;
        types.push((id_of(&view), price, weight));
    }
    let (a, b) = (types[0].0.as_str(), types[1].0.as_str());
    let q1 = id_of(&create_quota(app, &event_id, "Q1", 60, &[a]).await);
    let q2 = id_of(&create_quota(app, &event_id, "Q2", 100, &[a, b]).await);
    let catalogue = Catalogue {
        event_id: event_id.clone(),
        types: types.clone(),
    };

    // Order i leaves at i × PACE (or later, when IN_FLIGHT are already out), so the storm
    // lasts several hold lifetimes.
    let start = tokio::time::Instant::now();
    let outcomes: Vec<Outcome> = futures_util::stream::iter(0..ORDERS)
        .map(|i| {
            let catalogue = &catalogue;
            let apps = &apps;
            async move {
                tokio::time::sleep_until(start + PACE * i as u32).await;
                one_order(apps, catalogue, i).await
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;

    let mut answers = BTreeMap::<(&str, u16, String), u64>::new();
    for outcome in &outcomes {
        for seen in &outcome.answers {
            *answers.entry(seen.clone()).or_default() += 1;
        }
    }
    for (action, status, code) in answers.keys() {
        assert!(
            ALLOWED.contains(&(action, *status, code.as_str())),
            "{action} answered {status} {code}: {answers:?}"
        );
    }
    let granted = || outcomes.iter().filter(|o| o.id.is_some());
    let paid = || granted().filter(|o| o.paid);
    let quota_refusals = outcomes.iter().filter(|o| o.quota_bound).count();
    let summary = format!(
        "{answers:?}, {} granted, {quota_refusals} refused by a quota",
        granted().count()
    );
    for needed in [("pay", 200), ("cancel", 200), ("purchase", 409)] {
        assert!(
            answers.keys().any(|(a, s, _)| (*a, *s) == needed),
            "the storm exercised {needed:?}: {summary}"
        );
    }
    assert!(
        quota_refusals > 0,
        "no order was refused by a quota while the event had tickets: {summary}"
    );

    // Mid-flight (holds still live, the sweepers at work): within every size, balanced, and
    // every count equal to the lines that hold it.
    assert_event_matches_lines(&app.pool, &event_id).await;
    assert_quotas_match_lines(&app.pool, &event_id).await;

    // Once every unpaid hold has lapsed, only the paid 201s hold tickets: exactly theirs.
    eventually(
        "every unpaid hold to lapse",
        Duration::from_secs(10),
        || async {
            let live: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM ticket_allocations \
             WHERE event_id = $1::uuid AND status IN ('reserved', 'payment_pending')",
            )
            .bind(&event_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
            (live == 0).then_some(())
        },
    )
    .await;
    let (_, reserved, purchased) = assert_event_matches_lines(&app.pool, &event_id).await;
    assert_eq!(reserved, 0, "{summary}");
    assert_eq!(
        purchased,
        paid().map(|o| o.granted).sum::<i64>(),
        "{summary}"
    );
    let paid_a: i64 = paid().map(|o| o.of_a).sum();
    let paid_b: i64 = paid().map(|o| o.of_b).sum();
    let quotas = assert_quotas_match_lines(&app.pool, &event_id).await;
    let by_id = |id: &str| {
        quotas
            .iter()
            .find(|q| q.id.to_string() == id)
            .unwrap_or_else(|| panic!("quota {id} in {quotas:?}"))
    };
    let (q1, q2) = (by_id(&q1), by_id(&q2));
    assert!(
        q1.purchased <= q1.size && q2.purchased <= q2.size,
        "{quotas:?}"
    );
    assert_eq!(
        (q1.reserved, q1.purchased),
        (0, paid_a),
        "Q1 holds A: {summary}"
    );
    assert_eq!(
        (q2.reserved, q2.purchased),
        (0, paid_a + paid_b),
        "Q2 holds A and B: {summary}"
    );

    // Every 201 is stored as promised: its quantity and total, purchased if paid, cancelled
    // if cancelled, else expired; and no allocation exists that no one was promised.
    let rows: BTreeMap<String, (i32, i64, String)> = sqlx::query_as(
        "SELECT id::text, quantity, total, status FROM ticket_allocations WHERE event_id = $1::uuid",
    )
    .bind(&event_id)
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, quantity, total, status)| (id, (quantity, total, status)))
    .collect();
    assert_eq!(rows.len(), granted().count(), "one row per 201: {summary}");
    for outcome in granted() {
        let id = outcome.id.as_deref().expect("granted");
        let (quantity, _, status) = rows
            .get(id)
            .unwrap_or_else(|| panic!("the 201 {id} is stored"));
        assert_eq!(i64::from(*quantity), outcome.granted, "{id}");
        let expected = match (outcome.paid, outcome.cancelled) {
            (true, _) => "purchased",
            (_, true) => "cancelled",
            _ => "expired",
        };
        assert_eq!(status, expected, "{id}");
    }
    let priced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ticket_allocations a WHERE a.event_id = $1::uuid AND a.total <> \
           (SELECT sum(l.quantity * l.unit_price) FROM allocation_lines l WHERE l.allocation_id = a.id)",
    )
    .bind(&event_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(priced, 0, "stored totals are the sums of their lines");
    // The provider charged each purchase once, for exactly its total, and nothing else.
    let charges: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT a.id::text, a.status, a.total, \
           count(c.reference) FILTER (WHERE c.outcome = 'charged'), \
           COALESCE(sum(c.amount) FILTER (WHERE c.outcome = 'charged' AND c.currency = 'EUR'), 0)::bigint \
         FROM ticket_allocations a LEFT JOIN payment_charges c \
           ON starts_with(c.reference, 'pay_' || replace(a.id::text, '-', '') || '_') \
         WHERE a.event_id = $1::uuid GROUP BY a.id",
    )
    .bind(&event_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    for (id, status, total, count, amount) in charges {
        let expected = match status.as_str() {
            "purchased" => (1, total),
            _ => (0, 0),
        };
        assert_eq!(
            (count, amount),
            expected,
            "{id} ({status}, total {total}) charged"
        );
    }

    let database = app.database_name();
    for app in apps {
        app.stop().await;
    }
    assert_eq!(deadlocks_detected(&database).await, 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_quotas_hold_under_2000_orders_on_two_instances_batched() {
    overlap_race(BATCHED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_quotas_hold_under_2000_orders_on_two_instances_per_request() {
    overlap_race(PER_REQUEST).await;
}

/// The race's buyers ask for what the test expects: one to three lines of distinct types,
/// one to three tickets each, A asked most often.
#[test]
fn random_orders_have_distinct_lines_within_limits() {
    let catalogue = Catalogue {
        event_id: String::new(),
        types: vec![("a".into(), 1, 3), ("b".into(), 1, 2), ("c".into(), 1, 1)],
    };
    let mut asked = BTreeMap::<&str, u64>::new();
    let mut sizes = BTreeMap::<usize, u64>::new();
    for i in 0..ORDERS {
        let lines = catalogue.random_lines(&mut Dice::new(i));
        *sizes.entry(lines.len()).or_default() += 1;
        let mut ids: Vec<&str> = lines.iter().map(|(id, _)| *id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), lines.len(), "distinct types: {lines:?}");
        for (id, quantity) in lines {
            assert!((1..=3).contains(&quantity));
            *asked.entry(id).or_default() += 1;
        }
    }
    assert_eq!(sizes.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert!(
        asked["a"] > asked["b"] && asked["b"] > asked["c"],
        "{asked:?}"
    );
}
