//! The per-buyer cap's backstop in the schema: a grant above the cap is refused by the
//! database itself when the code gets it wrong, and the `buyer_tickets` counter behind it,
//! kept by the database, always balances with the holds it counts, whoever wrote them; and
//! the keys that store a payment reference or a confirmation code once. (The status
//! machine's backstop is `status_machine.rs`.)

use std::time::Duration;

use boxoffice::db::allocations::{self};
use boxoffice::db::events;
use boxoffice::domain::fingerprint::{FingerprintKey, FingerprintSource};
use boxoffice::domain::grant::{Ask, Grant, GrantedLine, LineAsk};
use boxoffice::domain::quantity::Quantity;
use boxoffice::error::Error;
use reqwest::StatusCode;
use sqlx::PgPool;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::helpers::{
    BATCHED, PER_REQUEST, TestApp, empty_database, eventually, id_of, new_fingerprint, spawn_app,
    spawn_app_with,
};

/// The name of the constraint (or trigger, which names one) that refused `err`.
fn refused_by(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|db| db.constraint())
        .map(str::to_owned)
}

fn ask(quantity: i64, buyer: &str) -> Ask {
    Ask {
        lines: vec![LineAsk {
            ticket_type_id: None,
            quantity: Quantity::parse(Some(quantity), 100).expect("a valid quantity"),
            field_prefix: String::new(),
        }],
        buyer: FingerprintKey::new("backstops").hash(&FingerprintSource::Client(buyer.into())),
    }
}

/// Inserts `asks` as the purchase transaction would, each granted whole as one free line of
/// the event's default type, without asking the grant decision.
async fn insert_granted(
    tx: &mut sqlx::PgConnection,
    event_id: Uuid,
    asks: &[&Ask],
) -> Result<Vec<boxoffice::domain::allocation::Allocation>, sqlx::Error> {
    let default_type: Uuid =
        sqlx::query_scalar("SELECT id FROM ticket_types WHERE event_id = $1 AND is_default")
            .bind(event_id)
            .fetch_one(&mut *tx)
            .await?;
    let grants: Vec<Grant> = asks
        .iter()
        .map(|ask| Grant {
            lines: vec![GrantedLine {
                ticket_type_id: default_type,
                ticket_type_name: "General admission".into(),
                quantity: ask.quantity(),
                unit_price: 0,
            }],
            quantity: ask.quantity(),
            total: 0,
        })
        .collect();
    let pairs: Vec<(&Ask, &Grant)> = asks.iter().copied().zip(&grants).collect();
    let eur = "EUR".parse().expect("EUR is ISO 4217");
    allocations::insert_reserved(tx, event_id, eur, &pairs, 60).await
}

pub(crate) fn uuid(id: &str) -> Uuid {
    Uuid::parse_str(id).expect("a UUID")
}

/// The buyer's counter row: (held_tickets, max_tickets).
pub(crate) async fn counter_row<'e>(
    conn: impl sqlx::PgExecutor<'e>,
    event_id: Uuid,
    buyer: &str,
) -> Option<(i32, i32)> {
    sqlx::query_as(
        "SELECT held_tickets, max_tickets FROM buyer_tickets \
         WHERE event_id = $1 AND fingerprint_hash = $2",
    )
    .bind(event_id)
    .bind(buyer)
    .fetch_optional(conn)
    .await
    .unwrap()
}

/// Every (event, buyer) whose counter disagrees with the sum of its holds that count
/// (reserved, payment_pending, purchased), or whose copy of the cap is not the event's.
async fn unbalanced_counters(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT format('%s/%s: counter %s of %s, holds %s, event cap %s', \
                       k.event_id, left(k.fingerprint_hash, 8), b.held_tickets, b.max_tickets, \
                       coalesce(h.held, 0), e.buyer_cap) \
         FROM (SELECT event_id, fingerprint_hash FROM ticket_allocations \
               UNION SELECT event_id, fingerprint_hash FROM buyer_tickets) k \
         JOIN events e ON e.id = k.event_id \
         LEFT JOIN buyer_tickets b USING (event_id, fingerprint_hash) \
         LEFT JOIN (SELECT event_id, fingerprint_hash, sum(quantity) AS held \
                    FROM ticket_allocations \
                    WHERE status IN ('reserved', 'payment_pending', 'purchased') \
                    GROUP BY event_id, fingerprint_hash) h USING (event_id, fingerprint_hash) \
         WHERE b.held_tickets IS DISTINCT FROM coalesce(h.held, 0)::int \
            OR b.max_tickets IS DISTINCT FROM e.buyer_cap",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_write_above_a_buyers_cap_is_refused_by_the_schema() {
    let app = spawn_app().await;
    let event = app.create_event("Capped backstop", 10, Some(3)).await;
    let event_id = uuid(&id_of(&event));

    // A batch the grant decision would never make: one buyer, 2 + 2 tickets against a cap
    // of 3, through the production insert under the event lock. The schema refuses it whole.
    let mut tx = app.pool.begin().await.unwrap();
    events::lock(&mut tx, event_id)
        .await
        .unwrap()
        .expect("the event");
    let (first, second) = (ask(2, "greedy"), ask(2, "greedy"));
    let err = insert_granted(&mut tx, event_id, &[&first, &second])
        .await
        .expect_err("a batch above the cap");
    assert_eq!(
        refused_by(&err).as_deref(),
        Some("buyer_tickets_within_cap"),
        "{err}"
    );
    // The app reports it as an internal error that names the backstop.
    match Error::from(err) {
        Error::Internal(detail) => assert!(detail.contains("buyer_tickets_within_cap"), "{detail}"),
        other => panic!("expected an internal error, got {other:?}"),
    }
    tx.rollback().await.unwrap();
    assert_eq!(app.row_count("ticket_allocations").await, 0);
    assert_eq!(app.row_count("buyer_tickets").await, 0);

    // Up to the cap is stored, and counted.
    let mut tx = app.pool.begin().await.unwrap();
    events::lock(&mut tx, event_id)
        .await
        .unwrap()
        .expect("the event");
    let (two, one) = (ask(2, "greedy"), ask(1, "greedy"));
    let rows = insert_granted(&mut tx, event_id, &[&two, &one])
        .await
        .expect("a batch within the cap");
    assert_eq!(rows.len(), 2);
    tx.commit().await.unwrap();
    let buyer = two.buyer.as_str();
    assert_eq!(counter_row(&app.pool, event_id, buyer).await, Some((3, 3)));

    // One more ticket, by any statement, is unstorable.
    let err = sqlx::query(
        "UPDATE buyer_tickets SET held_tickets = held_tickets + 1 \
         WHERE event_id = $1 AND fingerprint_hash = $2",
    )
    .bind(event_id)
    .bind(buyer)
    .execute(&app.pool)
    .await
    .expect_err("above the cap");
    assert_eq!(
        refused_by(&err).as_deref(),
        Some("buyer_tickets_within_cap"),
        "{err}"
    );
    // The counter's bound is the event's cap, rewritten by the database when the cap moves.
    sqlx::query("UPDATE events SET max_tickets_per_fingerprint = 5 WHERE id = $1")
        .bind(event_id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(counter_row(&app.pool, event_id, buyer).await, Some((3, 5)));

    // An event without a cap holds each buyer to its total.
    let open = app.create_event("Uncapped backstop", 4, None).await;
    let open_id = uuid(&id_of(&open));
    let mut tx = app.pool.begin().await.unwrap();
    events::lock(&mut tx, open_id)
        .await
        .unwrap()
        .expect("the event");
    let (all, more) = (ask(4, "everything"), ask(1, "everything"));
    let err = insert_granted(&mut tx, open_id, &[&all, &more])
        .await
        .expect_err("more than the total for one buyer");
    assert_eq!(
        refused_by(&err).as_deref(),
        Some("buyer_tickets_within_cap"),
        "{err}"
    );
    tx.rollback().await.unwrap();
    assert!(unbalanced_counters(&app.pool).await.is_empty());
}

/// The counter is the database's, not the code's: holds written by plain SQL (an older
/// instance during an upgrade, a repair by hand) move it exactly as the app's statements do,
/// and such a write above the cap is refused all the same.
#[tokio::test]
async fn the_counter_follows_writes_made_without_the_code() {
    let app = spawn_app().await;
    let event = app.create_event("Written by hand", 10, Some(4)).await;
    let event_id = uuid(&id_of(&event));
    let buyer = "b".repeat(64);
    let insert = |quantity: i32| {
        sqlx::query_scalar::<_, Uuid>(
            "INSERT INTO ticket_allocations (id, event_id, quantity, status, fingerprint_hash, expires_at) \
             VALUES (gen_random_uuid(), $1, $2, 'reserved', $3, now() + interval '1 hour') RETURNING id",
        )
        .bind(event_id)
        .bind(quantity)
        .bind(buyer.clone())
    };
    let first = insert(3).fetch_one(&app.pool).await.unwrap();
    assert_eq!(counter_row(&app.pool, event_id, &buyer).await, Some((3, 4)));
    let err = insert(2)
        .fetch_one(&app.pool)
        .await
        .expect_err("3 + 2 against a cap of 4");
    assert_eq!(
        refused_by(&err).as_deref(),
        Some("buyer_tickets_within_cap"),
        "{err}"
    );
    // Ending the hold by hand gives its tickets back; a later hold counts from there.
    sqlx::query(
        "UPDATE ticket_allocations SET status = 'cancelled', cancelled_at = now() WHERE id = $1",
    )
    .bind(first)
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(counter_row(&app.pool, event_id, &buyer).await, Some((0, 4)));
    insert(4).fetch_one(&app.pool).await.unwrap();
    assert_eq!(counter_row(&app.pool, event_id, &buyer).await, Some((4, 4)));
    // An update that moves no tickets (a later column) leaves the counter alone.
    sqlx::query("UPDATE ticket_allocations SET updated_at = now() WHERE event_id = $1")
        .bind(event_id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(counter_row(&app.pool, event_id, &buyer).await, Some((4, 4)));
    // A hold deleted by hand takes its tickets off too.
    sqlx::query("DELETE FROM ticket_allocations WHERE status = 'reserved' AND event_id = $1")
        .bind(event_id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(counter_row(&app.pool, event_id, &buyer).await, Some((0, 4)));
    assert!(unbalanced_counters(&app.pool).await.is_empty());
}

#[tokio::test]
async fn lowering_a_cap_below_what_a_buyer_holds_is_refused_by_the_schema() {
    let app = spawn_app().await;
    let event = app.create_event("Cap change", 10, Some(4)).await;
    let event_id = id_of(&event);
    let (big, small) = (new_fingerprint(), new_fingerprint());
    for (buyer, quantity) in [(&big, 2), (&big, 1), (&small, 1)] {
        let (status, body) = app.purchase(&event_id, quantity, buyer).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let set_cap = |cap: Option<i32>| {
        sqlx::query("UPDATE events SET max_tickets_per_fingerprint = $2 WHERE id = $1")
            .bind(uuid(&event_id))
            .bind(cap)
            .execute(&app.pool)
    };
    let caps = || {
        sqlx::query_scalar::<_, i32>(
            "SELECT DISTINCT max_tickets FROM buyer_tickets WHERE event_id = $1",
        )
        .bind(uuid(&event_id))
        .fetch_all(&app.pool)
    };
    assert_eq!(caps().await.unwrap(), [4]);

    // One buyer holds 3: a cap of 2 is refused, and the event keeps its cap.
    let err = set_cap(Some(2))
        .await
        .expect_err("a cap below a buyer's holds");
    assert_eq!(
        refused_by(&err).as_deref(),
        Some("buyer_tickets_within_cap"),
        "{err}"
    );
    assert_eq!(app.event(&event_id).await["maxTicketsPerFingerprint"], 4);

    // Down to exactly what they hold, then no cap (the total): the counters follow.
    set_cap(Some(3)).await.expect("a cap at a buyer's holds");
    assert_eq!(caps().await.unwrap(), [3]);
    let (status, body) = app.purchase(&event_id, 1, &big).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "FINGERPRINT_LIMIT", "{body}");
    set_cap(None).await.expect("no cap");
    assert_eq!(caps().await.unwrap(), [10]);

    // Without a cap the buyer buys on; bringing a cap back below their holds is refused.
    let (status, body) = app.purchase(&event_id, 3, &big).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let err = set_cap(Some(5))
        .await
        .expect_err("a cap below a buyer's holds");
    assert_eq!(
        refused_by(&err).as_deref(),
        Some("buyer_tickets_within_cap"),
        "{err}"
    );
    set_cap(Some(6)).await.expect("a cap at a buyer's holds");
    assert!(unbalanced_counters(&app.pool).await.is_empty());
    app.assert_balanced(&event_id).await;
}

/// One buyer's part in the mixed run: several purchases at once (so a batch may grant the
/// same buyer twice), then, hold by hold, pay, fail to pay, cancel or leave it to lapse.
/// Returns every status code it was answered.
async fn mixed_buyer(app: std::sync::Arc<TestApp>, events: Vec<String>, n: usize) -> Vec<u16> {
    let buyer = new_fingerprint();
    let mut statuses = Vec::new();
    for (e, event_id) in events.iter().enumerate() {
        let mut purchases = JoinSet::new();
        for quantity in [1, 2, 1 + (n % 3) as i64] {
            let (app, event_id, buyer) = (app.clone(), event_id.clone(), buyer.clone());
            purchases.spawn(async move { app.purchase(&event_id, quantity, &buyer).await });
        }
        let mut held = Vec::new();
        while let Some(answer) = purchases.join_next().await {
            let (status, body) = answer.unwrap();
            statuses.push(status.as_u16());
            if status == StatusCode::CREATED {
                held.push(id_of(&body));
            }
        }
        for (h, id) in held.iter().enumerate() {
            let (status, _) = match (n + e + h) % 4 {
                0 => app.pay(id, &buyer, Some("tok_visa")).await,
                1 => app.pay(id, &buyer, Some("tok_declined")).await,
                2 => app.cancel(id, &buyer).await,
                // Left to lapse: the sweeper's bulk expiry takes it back.
                _ => continue,
            };
            statuses.push(status.as_u16());
        }
    }
    statuses
}

async fn the_counter_balances_with_the_holds_after_a_mixed_run(mode: &[&str]) {
    let flags = [mode, &["--hold-seconds", "2", "--sweep-interval-ms", "50"]].concat();
    let app = std::sync::Arc::new(spawn_app_with(&flags).await);
    let capped = id_of(&app.create_event("Mixed capped", 200, Some(4)).await);
    let open = id_of(&app.create_event("Mixed open", 200, None).await);
    let mut buyers = JoinSet::new();
    for n in 0..16 {
        buyers.spawn(mixed_buyer(
            app.clone(),
            vec![capped.clone(), open.clone()],
            n,
        ));
    }
    let mut statuses = Vec::new();
    while let Some(seen) = buyers.join_next().await {
        statuses.extend(seen.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s < 500),
        "no 5xx in the run: {statuses:?}"
    );
    // The cap of 4 met buyers asking for 4 or 5 at once.
    assert!(statuses.contains(&409), "some purchase was refused");
    assert!(
        unbalanced_counters(&app.pool).await.is_empty(),
        "while holds live"
    );

    // Every hold left reserved lapses and is swept.
    eventually("every hold to end", Duration::from_secs(15), || async {
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ticket_allocations WHERE status IN ('reserved', 'payment_pending')",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (live == 0).then_some(())
    })
    .await;
    let by_status: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM ticket_allocations GROUP BY status ORDER BY status",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let statuses_seen: Vec<&str> = by_status.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        statuses_seen,
        ["cancelled", "expired", "purchased"],
        "the run ended holds every way: {by_status:?}"
    );
    assert!(
        app.counter("boxoffice_holds_expired_total").await > 0,
        "the sweeper's bulk expiry ran"
    );
    assert!(
        unbalanced_counters(&app.pool).await.is_empty(),
        "after the sweep"
    );
    app.assert_balanced(&capped).await;
    app.assert_balanced(&open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counter_balances_with_the_holds_after_a_mixed_run_batched() {
    the_counter_balances_with_the_holds_after_a_mixed_run(BATCHED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counter_balances_with_the_holds_after_a_mixed_run_per_request() {
    the_counter_balances_with_the_holds_after_a_mixed_run(PER_REQUEST).await;
}

/// A database migrated up to the migration before the counter, holding two events and
/// allocations in every status; `cap` is the first event's per-buyer cap, under which
/// buyer `a` holds 4 tickets (2 reserved, 2 payment_pending).
async fn database_before_the_counter(cap: i32) -> PgPool {
    let pool = PgPool::connect_with(empty_database().await).await.unwrap();
    boxoffice::db::MIGRATOR
        .run_to(20261130000002, &pool)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO events (id, name, date, total_tickets, available_tickets, \
             reserved_tickets, purchased_tickets, max_tickets_per_fingerprint) VALUES \
           ('00000000-0000-0000-0000-000000000001', 'A', '2027-01-01', 10, 3, 4, 3, {cap}), \
           ('00000000-0000-0000-0000-000000000002', 'B', '2027-01-01', 10, 9, 1, 0, NULL); \
         INSERT INTO ticket_allocations (id, event_id, quantity, status, fingerprint_hash, \
             expires_at, payment_pending_at, payment_reference, purchased_at, \
             confirmation_code, cancelled_at) VALUES \
           (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', 2, 'reserved', \
            repeat('a', 64), now(), NULL, NULL, NULL, NULL, NULL), \
           (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', 2, 'payment_pending', \
            repeat('a', 64), now(), now(), 'pay_1', NULL, NULL, NULL), \
           (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', 3, 'purchased', \
            repeat('b', 64), now(), now(), 'pay_2', now(), 'BX-AAAA-AAAA', NULL), \
           (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', 4, 'cancelled', \
            repeat('b', 64), now(), NULL, NULL, NULL, NULL, now()), \
           (gen_random_uuid(), '00000000-0000-0000-0000-000000000002', 1, 'reserved', \
            repeat('c', 64), now(), NULL, NULL, NULL, NULL, NULL);"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool
}

#[tokio::test]
async fn the_migration_fills_the_counter_from_the_stored_holds() {
    let pool = database_before_the_counter(5).await;
    boxoffice::db::migrate(&pool).await.unwrap();
    let counters: Vec<(Uuid, String, i32, i32)> = sqlx::query_as(
        "SELECT event_id, left(fingerprint_hash, 1), held_tickets, max_tickets \
         FROM buyer_tickets ORDER BY event_id, fingerprint_hash",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let (first, second) = (
        uuid("00000000-0000-0000-0000-000000000001"),
        uuid("00000000-0000-0000-0000-000000000002"),
    );
    assert_eq!(
        counters,
        [
            (first, "a".into(), 4, 5),
            (first, "b".into(), 3, 5),
            (second, "c".into(), 1, 10),
        ]
    );
    assert!(unbalanced_counters(&pool).await.is_empty());

    // Holds that already break their cap stop the migration: they need a person.
    let pool = database_before_the_counter(3).await;
    let err = boxoffice::db::migrate(&pool)
        .await
        .expect_err("a stored buyer above the cap");
    assert!(
        err.to_string().contains("buyer_tickets_within_cap"),
        "{err}"
    );
}

/// A backstop that refuses one event's expiry (here a counter set wrong by hand) stops that
/// event only: the same round still expires every other event's lapsed holds, and reports
/// the failure.
#[tokio::test]
async fn an_expiry_refused_for_one_event_leaves_the_other_events_swept() {
    let app = spawn_app_with(&["--hold-seconds", "1", "--sweep-interval-ms", "3600000"]).await;
    let broken = id_of(&app.create_event("Broken counter", 10, None).await);
    let healthy = id_of(&app.create_event("Healthy", 10, None).await);
    let buyer = new_fingerprint();
    for event in [&broken, &broken, &healthy, &healthy, &healthy] {
        let (status, body) = app.purchase(event, 2, &buyer).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // The broken event's counter says 2 where its holds count 4: expiring them would take it
    // to -2, which `buyer_tickets_within_cap` refuses.
    let moved = sqlx::query("UPDATE buyer_tickets SET held_tickets = 2 WHERE event_id = $1")
        .bind(uuid(&broken))
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(moved.rows_affected(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let err = boxoffice::sweeper::sweep_once(&app.state.sweeper)
        .await
        .expect_err("the broken event's expiry is refused");
    assert!(
        err.to_string().contains("buyer_tickets_within_cap"),
        "{err}"
    );
    let reserved = |event: String| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM ticket_allocations WHERE event_id = $1 AND status = 'reserved'",
            )
            .bind(uuid(&event))
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        reserved(broken.clone()).await,
        2,
        "the refused expiry changed nothing"
    );
    assert_eq!(
        reserved(healthy.clone()).await,
        0,
        "the other event was swept"
    );
    let event = app.assert_balanced(&healthy).await;
    assert_eq!(event["availableTickets"], 10);
}

/// A payment reference settles one hold and a confirmation code names one purchase: the
/// schema refuses a second hold with either value, whatever writes it, while any number of
/// holds have neither yet.
#[tokio::test]
async fn a_reference_or_a_code_is_stored_once() {
    let app = spawn_app().await;
    let event = id_of(&app.create_event("Keys", 10, None).await);
    let mut paid = Vec::new();
    for _ in 0..2 {
        let buyer = new_fingerprint();
        let (status, hold) = app.purchase(&event, 1, &buyer).await;
        assert_eq!(status, StatusCode::CREATED, "{hold}");
        let (status, body) = app.pay(&id_of(&hold), &buyer, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        paid.push(uuid(&id_of(&hold)));
    }
    for _ in 0..3 {
        let (status, hold) = app.purchase(&event, 1, &new_fingerprint()).await;
        assert_eq!(status, StatusCode::CREATED, "{hold}");
    }
    let unset: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ticket_allocations \
         WHERE event_id = $1 AND payment_reference IS NULL AND confirmation_code IS NULL",
    )
    .bind(uuid(&event))
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(unset, 3);

    for (column, key) in [
        (
            "payment_reference",
            "ticket_allocations_payment_reference_key",
        ),
        (
            "confirmation_code",
            "ticket_allocations_confirmation_code_key",
        ),
    ] {
        let statement = format!(
            "UPDATE ticket_allocations SET {column} = \
                 (SELECT {column} FROM ticket_allocations WHERE id = $1) \
             WHERE id = $2"
        );
        let err = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(paid[0])
            .bind(paid[1])
            .execute(&app.pool)
            .await
            .expect_err("a second hold with the same value is refused");
        assert_eq!(refused_by(&err).as_deref(), Some(key), "{err}");
    }
}
