//! A mixed storm of every operation at once, on two instances of one database (one batching,
//! one per request): purchases (some sent twice at once by one buyer), payments, declines,
//! cancels, pay against cancel, late payments and walk-aways. Every answer is one its action
//! may get, the cap holds, counts balance with the rows, nothing stays live, no deadlock.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::helpers::{
    TestApp, deadlocks_detected, eventually, id_of, new_fingerprint, spawn_app_on, spawn_app_with,
};

/// What one storm task saw: every response, and the holds whose fate it knows.
#[derive(Default)]
struct Seen {
    responses: Vec<(&'static str, StatusCode, Value)>,
    paid: Vec<(String, i64)>,
    cancelled: Vec<String>,
}

impl Seen {
    fn record(&mut self, action: &'static str, response: (StatusCode, Value)) -> StatusCode {
        let status = response.0;
        self.responses.push((action, response.0, response.1));
        status
    }
}

/// A small deterministic generator, so each task makes its own choices.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

async fn storm_task(
    apps: [Arc<TestApp>; 2],
    event_id: String,
    seed: u64,
    until: tokio::time::Instant,
) -> Seen {
    let mut dice = Dice(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut seen = Seen::default();
    // A few devices per task, so one buyer's cap does not end its part in the storm.
    let holders = [new_fingerprint(), new_fingerprint(), new_fingerprint()];
    while tokio::time::Instant::now() < until {
        let app = &apps[dice.roll(2) as usize];
        let holder = holders[dice.roll(3) as usize].clone();
        let quantity = 1 + dice.roll(3) as i64;
        let response = if dice.roll(3) == 0 {
            // The same buyer twice at once on one instance (one batch on the batching one),
            // so grants in one batch must count toward one cap. The second hold is left to
            // lapse.
            let (response, twin) = tokio::join!(
                app.purchase(&event_id, quantity, &holder),
                app.purchase(&event_id, quantity, &holder)
            );
            seen.record("purchase", twin);
            response
        } else {
            app.purchase(&event_id, quantity, &holder).await
        };
        let body = response.1.clone();
        if seen.record("purchase", response) != StatusCode::CREATED {
            tokio::time::sleep(Duration::from_millis(dice.roll(30))).await;
            continue;
        }
        let id = id_of(&body);
        match dice.roll(7) {
            0 => {
                let response = app.pay(&id, &holder, Some("tok_visa")).await;
                if seen.record("pay", response) == StatusCode::OK {
                    seen.paid.push((id, quantity));
                }
            }
            1 => {
                seen.record(
                    "decline",
                    app.pay(&id, &holder, Some("tok_chargeDeclined")).await,
                );
                let response = app.pay(&id, &holder, None).await;
                if seen.record("pay", response) == StatusCode::OK {
                    seen.paid.push((id, quantity));
                }
            }
            2 => {
                seen.record(
                    "decline",
                    app.pay(&id, &holder, Some("tok_chargeDeclined")).await,
                );
                if seen.record("cancel", app.cancel(&id, &holder).await) == StatusCode::OK {
                    seen.cancelled.push(id);
                }
            }
            3 => {
                if seen.record("cancel", app.cancel(&id, &holder).await) == StatusCode::OK {
                    seen.cancelled.push(id);
                }
            }
            4 => {
                // Pay and cancel at once, from the two instances.
                let other = &apps[dice.roll(2) as usize];
                let (payment, cancel) = tokio::join!(
                    app.pay(&id, &holder, Some("tok_visa")),
                    other.cancel(&id, &holder)
                );
                if seen.record("pay", payment) == StatusCode::OK {
                    seen.paid.push((id.clone(), quantity));
                }
                if seen.record("cancel", cancel) == StatusCode::OK {
                    seen.cancelled.push(id);
                }
            }
            5 => {
                // Pay near or after the 1 s deadline.
                tokio::time::sleep(Duration::from_millis(700 + dice.roll(600))).await;
                let response = app.pay(&id, &holder, Some("tok_visa")).await;
                if seen.record("late pay", response) == StatusCode::OK {
                    seen.paid.push((id, quantity));
                }
            }
            _ => {
                // Walk away: the hold lapses. Read along the way.
                seen.record("read", app.ticket(&id, &holder).await);
                seen.record(
                    "list",
                    app.send(
                        app.request(Method::GET, "/tickets")
                            .header("X-Device-Fingerprint", &holder),
                    )
                    .await,
                );
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_storm_stays_balanced_without_errors_or_deadlocks() {
    const TOTAL: i64 = 300;
    let flags = ["--hold-seconds", "1", "--sweep-interval-ms", "20"];
    let first = spawn_app_with(&flags).await;
    // A second instance on the same database, purchasing one transaction per request while
    // the first batches: its sweeper, its purchases and its payments compete too.
    let options = (*first.pool.connect_options()).clone();
    let mut per_request = flags.to_vec();
    per_request.extend(["--purchase-mode", "per-request"]);
    let second = spawn_app_on(&options, &per_request).await;
    let apps = [Arc::new(first), Arc::new(second)];
    let event = apps[0].create_event("Storm", TOTAL, Some(6)).await;
    let event_id = event["id"].as_str().unwrap().to_owned();

    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut tasks = JoinSet::new();
    // One buyer buys and pays for 3 and 3, then asks for 1 more, before anything sells out:
    // the cap of 6 is met however few requests a loaded machine gets through in the storm's
    // 3 s. The random buyers' holds lapse after 1 s, and on a busy machine none held 6 at
    // once; unpaid, this buyer's first hold lapsed too before its third ask was decided
    // (under `cargo test` in CI), while paid tickets never lapse. A hold that lapsed before
    // its payment is bought again.
    {
        let (app, event_id) = (apps[0].clone(), event_id.clone());
        tasks.spawn(async move {
            let mut seen = Seen::default();
            let greedy = new_fingerprint();
            let mut bought = 0;
            for _ in 0..30 {
                if bought == 6 {
                    break;
                }
                let response = app.purchase(&event_id, 3, &greedy).await;
                let body = response.1.clone();
                if seen.record("purchase", response) != StatusCode::CREATED {
                    // A lapsed hold of this buyer still counts until it is swept.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                let id = id_of(&body);
                let response = app.pay(&id, &greedy, Some("tok_visa")).await;
                if seen.record("pay", response) == StatusCode::OK {
                    seen.paid.push((id, 3));
                    bought += 3;
                }
            }
            seen.record("purchase", app.purchase(&event_id, 1, &greedy).await);
            seen
        });
    }
    for seed in 0..40 {
        tasks.spawn(storm_task(apps.clone(), event_id.clone(), seed, until));
    }
    // Readers alongside the writers.
    for _ in 0..2 {
        let (app, event_id) = (apps[0].clone(), event_id.clone());
        tasks.spawn(async move {
            let mut seen = Seen::default();
            while tokio::time::Instant::now() < until {
                seen.record("event", app.get(&format!("/events/{event_id}")).await);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        });
    }

    let mut all = Seen::default();
    while let Some(seen) = tasks.join_next().await {
        let seen = seen.unwrap();
        all.responses.extend(seen.responses);
        all.paid.extend(seen.paid);
        all.cancelled.extend(seen.cancelled);
    }

    // Every answer an action may get: its status and error code ("" for a success).
    let allowed = |action: &str| -> &'static [(u16, &'static str)] {
        match action {
            "purchase" => &[
                (201, ""),
                (409, "TICKETS_SOLD_OUT"),
                (409, "INSUFFICIENT_TICKETS"),
                (409, "FINGERPRINT_LIMIT"),
            ],
            // A payment racing a cancel may find the hold cancelled.
            "pay" => &[
                (200, ""),
                (409, "INVALID_STATUS"),
                (410, "RESERVATION_EXPIRED"),
            ],
            "late pay" => &[(200, ""), (410, "RESERVATION_EXPIRED")],
            "decline" => &[(402, "PAYMENT_DECLINED"), (410, "RESERVATION_EXPIRED")],
            // A cancel may find the hold paid, being paid, or lapsed.
            "cancel" => &[(200, ""), (409, "INVALID_STATUS")],
            "read" | "list" | "event" => &[(200, "")],
            _ => &[],
        }
    };
    let mut by_kind = std::collections::BTreeMap::<String, usize>::new();
    for (action, status, body) in &all.responses {
        assert!(!status.is_server_error(), "{action}: {status} {body}");
        assert_ne!(body["code"], "INTERNAL_ERROR", "{action}: {body}");
        let code = body["code"].as_str().unwrap_or_default();
        assert!(
            allowed(action).contains(&(status.as_u16(), code)),
            "{action}: unexpected {status} {body}"
        );
        *by_kind
            .entry(format!("{action} {}", status.as_u16()))
            .or_default() += 1;
        if !code.is_empty() {
            *by_kind
                .entry(format!("{action} {} {code}", status.as_u16()))
                .or_default() += 1;
        }
    }
    for needed in [
        "purchase 201",
        "pay 200",
        "cancel 200",
        "decline 402",
        "late pay 410",
        // Buyers reached the cap of 6.
        "purchase 409 FINGERPRINT_LIMIT",
    ] {
        assert!(
            by_kind.contains_key(needed),
            "the storm exercised {needed}: {by_kind:?}"
        );
    }

    // Every hold left behind lapses and is swept; nothing stays live or pending.
    let app = &apps[0];
    eventually("every live hold to lapse", Duration::from_secs(10), || async {
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ticket_allocations WHERE status IN ('reserved', 'payment_pending')",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (live == 0).then_some(())
    })
    .await;
    let event = app.assert_balanced(&event_id).await;
    let paid_tickets: i64 = all.paid.iter().map(|(_, q)| q).sum();
    assert_eq!(event["purchasedTickets"], paid_tickets, "{by_kind:?}");
    assert_eq!(event["reservedTickets"], 0);
    assert_eq!(event["availableTickets"], TOTAL - paid_tickets);
    for (id, _) in &all.paid {
        let row = app.allocation_row(id).await;
        assert_eq!(row.status, "purchased", "{id}");
        assert!(
            row.payment_pending_at
                .is_some_and(|began| began < row.expires_at),
            "{id} was paid after its hold lapsed: {row:?}"
        );
    }
    for id in &all.cancelled {
        assert_eq!(app.allocation_row(id).await.status, "cancelled", "{id}");
    }

    // The cap of 6 held throughout: a grant over it would have been refused by the schema's
    // backstop (`buyer_tickets_within_cap`) and answered 500, which no answer above was. That
    // proves the cap only if the counter the backstop checks is true, so hold it to the rows:
    // every buyer's counter equals the tickets its holds still count (paid ones, now that
    // every other hold has ended), and none is over the cap.
    let counters: Vec<(String, i32)> = sqlx::query_as(
        "SELECT fingerprint_hash, held_tickets FROM buyer_tickets \
         WHERE event_id = $1::uuid AND held_tickets > 0 ORDER BY 1",
    )
    .bind(&event_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let holdings: Vec<(String, i32)> = sqlx::query_as(
        "SELECT fingerprint_hash, sum(quantity)::int FROM ticket_allocations \
         WHERE event_id = $1::uuid AND status IN ('reserved', 'payment_pending', 'purchased') \
         GROUP BY 1 ORDER BY 1",
    )
    .bind(&event_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        counters, holdings,
        "every buyer's counter matches its holds"
    );
    assert!(
        holdings.iter().all(|(_, held)| *held <= 6),
        "no buyer over the cap: {holdings:?}"
    );

    // No transaction, request or sweep, ever deadlocked.
    let database = app.database_name();
    for app in apps {
        let app = Arc::into_inner(app).expect("every task has finished");
        let pool = app.pool.clone();
        app.stop().await;
        pool.close().await;
    }
    assert_eq!(deadlocks_detected(&database).await, 0, "{by_kind:?}");
}
