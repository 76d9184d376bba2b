//! Nobody skips the line, under a race: an event of 100 sold out, 300 buyers join its
//! waiting list, then 100 holders cancel or let their holds lapse while 500 new buyers keep
//! trying to buy, over two instances on one database, in both purchase modes. No new buyer
//! gets a ticket (the line never empties: 300 wait for 100); the 100 returned tickets are
//! offered, each exactly once, to the first 100 joiners in join order; the counts balance
//! against the rows.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::helpers::{
    BATCHED, PER_REQUEST, TestApp, assert_counts_match_rows, fresh_database, id_of,
    new_fingerprint, spawn_app_on,
};

const TOTAL: usize = 100;
const JOINERS: usize = 300;
const NEW_BUYERS: usize = 500;
/// How long instance B's holds last: long enough for all 300 to join first on a machine
/// that runs other tests beside this one (8 s was not, under `cargo test` in CI).
const B_HOLD_SECONDS: u64 = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nobody_skips_the_line_per_request() {
    nobody_skips_the_line(PER_REQUEST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nobody_skips_the_line_batched() {
    nobody_skips_the_line(BATCHED).await;
}

async fn nobody_skips_the_line(mode: &[&str]) {
    let database = fresh_database().await;
    let unlimited = [
        "--rate-limit-per-address",
        "0",
        "--rate-limit-per-fingerprint",
        "0",
    ];
    // Instance A's holds last; instance B's lapse after `B_HOLD_SECONDS` (after everyone
    // joined, while the new buyers try) and the sweepers (every 200 ms) return them. Both
    // sweep, so expiry runs on either.
    let mut a_flags = vec!["--sweep-interval-ms", "200"];
    a_flags.extend_from_slice(&unlimited);
    a_flags.extend_from_slice(mode);
    let b_hold = B_HOLD_SECONDS.to_string();
    let mut b_flags = vec!["--sweep-interval-ms", "200", "--hold-seconds", &b_hold];
    b_flags.extend_from_slice(&unlimited);
    b_flags.extend_from_slice(mode);
    let a = Arc::new(spawn_app_on(&database, &a_flags).await);
    let b = Arc::new(spawn_app_on(&database, &b_flags).await);
    let instances = [a.clone(), b.clone()];

    let event = a
        .create_event(&format!("Fair {}", new_fingerprint()), TOTAL as i64, None)
        .await;
    let event_id = id_of(&event);

    // Sold out: half the holds on A (cancelled later), half on B (they lapse).
    let mut cancellable = Vec::new();
    for i in 0..TOTAL {
        let app = &instances[i % 2];
        let holder = new_fingerprint();
        let (status, hold) = app.purchase(&event_id, 1, &holder).await;
        assert_eq!(status, StatusCode::CREATED, "{hold}");
        if i % 2 == 0 {
            cancellable.push((id_of(&hold), holder));
        }
    }
    let sold_out_at = tokio::time::Instant::now();

    // 300 join at once, over both instances; join order is what the database recorded.
    let mut joins = JoinSet::new();
    for i in 0..JOINERS {
        let app = instances[i % 2].clone();
        let event_id = event_id.clone();
        joins.spawn(async move {
            let buyer = new_fingerprint();
            let join = || {
                app.request(Method::POST, &format!("/events/{event_id}/waiting-list"))
                    .header("X-Device-Fingerprint", buyer.as_str())
                    .json(&json!({"quantity": 1}))
            };
            // A 503 (a wait that ran out under the storm) is retried, as a client would.
            for _ in 0..20 {
                let (status, body) = app.send(join()).await;
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                assert_eq!(status, StatusCode::CREATED, "{body}");
                return (Uuid::parse_str(&id_of(&body)).unwrap(), buyer);
            }
            panic!("a join never got through");
        });
    }
    let mut joiners = std::collections::HashMap::new();
    while let Some(joined) = joins.join_next().await {
        let (entry, buyer) = joined.expect("a join task");
        joiners.insert(entry, buyer);
    }
    assert!(
        sold_out_at.elapsed() < Duration::from_secs(B_HOLD_SECONDS),
        "B's holds lapsed before everyone joined; the test would not race expiry"
    );

    // 500 new buyers keep trying while the holders cancel and B's holds lapse.
    let done = Arc::new(AtomicBool::new(false));
    let granted = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::new(AtomicUsize::new(0));
    let mut buyers = JoinSet::new();
    for i in 0..NEW_BUYERS {
        let app = instances[i % 2].clone();
        let (event_id, done, granted, attempts) = (
            event_id.clone(),
            done.clone(),
            granted.clone(),
            attempts.clone(),
        );
        buyers.spawn(async move {
            let buyer = new_fingerprint();
            while !done.load(Ordering::Relaxed) {
                let (status, body) = app.purchase(&event_id, 1, &buyer).await;
                attempts.fetch_add(1, Ordering::Relaxed);
                match status {
                    StatusCode::CREATED => {
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                    StatusCode::CONFLICT => assert_eq!(body["code"], "TICKETS_SOLD_OUT", "{body}"),
                    // Two cores serving 500 clients: a pool wait may run out; try again.
                    StatusCode::SERVICE_UNAVAILABLE => {}
                    other => panic!("a purchase answered {other}: {body}"),
                }
                tokio::time::sleep(Duration::from_millis(100 + (i as u64 % 100))).await;
            }
        });
    }
    let mut cancels = JoinSet::new();
    for (i, (allocation, holder)) in cancellable.into_iter().enumerate() {
        let app = instances[i % 2].clone();
        cancels.spawn(async move {
            tokio::time::sleep(Duration::from_millis(10 * (i as u64 % 20))).await;
            // A 503 (a pool or lock wait that ran out under the storm) changed nothing:
            // retried, as a client would.
            for _ in 0..20 {
                let (status, body) = app.cancel(&allocation, &holder).await;
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                assert_eq!(status, StatusCode::OK, "{body}");
                return;
            }
            panic!("a cancel never got through");
        });
    }
    while let Some(cancelled) = cancels.join_next().await {
        cancelled.expect("a cancel task");
    }
    // Until every returned ticket is offered (B's lapse and are swept), then a little more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let offered: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM waiting_list_entries WHERE status = 'offered'",
        )
        .fetch_one(&a.pool)
        .await
        .unwrap();
        if offered as usize == TOTAL {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {offered} of {TOTAL} returned tickets were offered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.store(true, Ordering::Relaxed);
    while let Some(bought) = buyers.join_next().await {
        bought.expect("a buyer task");
    }

    assert!(
        attempts.load(Ordering::Relaxed) >= NEW_BUYERS,
        "every new buyer tried"
    );
    assert_eq!(
        granted.load(Ordering::Relaxed),
        0,
        "a new buyer got a ticket while {JOINERS} waited"
    );
    assert_line_served_in_order(&a, &event_id, &joiners).await;
    for app in &instances {
        let shown = app.event(&event_id).await;
        assert_counts_match_rows(&app.pool, &shown).await;
        assert_eq!(shown["availableTickets"], 0, "{shown}");
        assert_eq!(shown["setAsideTickets"], 0, "{shown}");
        assert_eq!(
            shown["waitingListLength"],
            (JOINERS - TOTAL) as i64,
            "{shown}"
        );
        assert_eq!(shown["ticketTypes"][0]["available"], 0, "{shown}");
    }
    drop((a, b));
    for app in instances {
        Arc::into_inner(app)
            .expect("no task holds an instance")
            .stop()
            .await;
    }
}

/// The first 100 joiners (by the order the database recorded) were each offered one hold of
/// one ticket; nobody else was; the rest wait with positions 1, 2, … in join order; and
/// every live hold of the event is one of those offers.
async fn assert_line_served_in_order(
    app: &TestApp,
    event_id: &str,
    joiners: &std::collections::HashMap<Uuid, String>,
) {
    let event = Uuid::parse_str(event_id).unwrap();
    let entries: Vec<(Uuid, String, Option<Uuid>, String)> = sqlx::query_as(
        "SELECT id, status, allocation_id, fingerprint_hash FROM waiting_list_entries \
         WHERE event_id = $1 ORDER BY seq",
    )
    .bind(event)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(entries.len(), JOINERS);
    let (first, rest) = entries.split_at(TOTAL);
    assert!(
        first
            .iter()
            .all(|(_, status, hold, _)| status == "offered" && hold.is_some()),
        "the first {TOTAL} joiners were offered: {:?}",
        first.iter().map(|e| &e.1).collect::<Vec<_>>()
    );
    assert!(
        rest.iter()
            .all(|(_, status, hold, _)| status == "waiting" && hold.is_none()),
        "nobody behind them was"
    );
    let live: Vec<(Uuid, i32, String)> = sqlx::query_as(
        "SELECT id, quantity, fingerprint_hash FROM ticket_allocations \
         WHERE event_id = $1 AND status IN ('reserved', 'payment_pending', 'purchased')",
    )
    .bind(event)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let offers: HashSet<(Uuid, String)> = first
        .iter()
        .map(|(_, _, hold, buyer)| (hold.unwrap(), buyer.clone()))
        .collect();
    assert_eq!(offers.len(), TOTAL, "each offer is its own hold");
    let held: HashSet<(Uuid, String)> = live
        .iter()
        .map(|(id, _, buyer)| (*id, buyer.clone()))
        .collect();
    assert_eq!(
        held, offers,
        "the live holds are exactly the offers, each to its joiner"
    );
    assert!(live.iter().all(|(_, quantity, _)| *quantity == 1));
    // Those still waiting see positions 1, 2, … in join order (a sample, through the API).
    for (i, (id, _, _, _)) in rest.iter().enumerate().step_by(37) {
        let buyer = &joiners[id];
        let (status, entry) = app
            .send(
                app.request(Method::GET, &format!("/waiting-list/{id}"))
                    .header("X-Device-Fingerprint", buyer.as_str()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{entry}");
        assert_eq!(entry["position"], i as i64 + 1, "{entry}");
    }
}
