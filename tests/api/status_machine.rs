//! The status machine of a hold, enforced in release: every statement that changes a status
//! matches only the statuses `AllocationStatus::can_become` allows before the new one, and
//! the database's trigger (`ticket_allocations_status_transition`) refuses any other move.
//! The trigger's table and `can_become` are compared pair by pair.

use boxoffice::db::allocations::{self, TransitionRecord};
use boxoffice::db::events;
use boxoffice::domain::status::AllocationStatus;
use sqlx::PgPool;
use uuid::Uuid;

use crate::backstops::{counter_row, uuid};
use crate::helpers::{id_of, spawn_app};

/// The name of the constraint (or trigger, which names one) that refused `err`.
fn refused_by(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|db| db.constraint())
        .map(str::to_owned)
}

/// Whether the database lets a hold in `from` become `to`, every other column set as the
/// target status requires, so only the transition rule can refuse; in a transaction rolled
/// back after.
async fn database_allows(pool: &PgPool, event_id: Uuid, from: &str, to: &str) -> bool {
    let mut tx = pool.begin().await.unwrap();
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO ticket_allocations (id, event_id, quantity, status, fingerprint_hash, \
             expires_at, payment_pending_at, payment_reference, purchased_at, confirmation_code, \
             cancelled_at, expired_at, refunded_at, refunded_quantity) \
         VALUES ($1, $2, 1, $3, repeat('a', 64), now() + interval '1 hour', now(), \
             'pay_' || $1::text, \
             CASE WHEN $3 IN ('purchased', 'refunded') THEN now() END, \
             CASE WHEN $3 IN ('purchased', 'refunded') THEN 'BX-' || $1::text END, \
             CASE WHEN $3 = 'cancelled' THEN now() END, \
             CASE WHEN $3 = 'expired' THEN now() END, \
             CASE WHEN $3 = 'refunded' THEN now() END, \
             CASE WHEN $3 = 'refunded' THEN 1 ELSE 0 END)",
    )
    .bind(id)
    .bind(event_id)
    .bind(from)
    .execute(&mut *tx)
    .await
    .unwrap_or_else(|err| panic!("a hold in {from}: {err}"));
    let moved = sqlx::query(
        "UPDATE ticket_allocations SET status = $2, \
             purchased_at = CASE WHEN $2 IN ('purchased', 'refunded') THEN now() END, \
             confirmation_code = CASE WHEN $2 IN ('purchased', 'refunded') \
                                      THEN 'BX-' || id::text END, \
             cancelled_at = CASE WHEN $2 = 'cancelled' THEN now() END, \
             expired_at = CASE WHEN $2 = 'expired' THEN now() END, \
             refunded_at = CASE WHEN $2 = 'refunded' THEN now() END, \
             refunded_quantity = CASE WHEN $2 = 'refunded' THEN quantity ELSE 0 END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(to)
    .execute(&mut *tx)
    .await;
    tx.rollback().await.unwrap();
    match moved {
        Ok(done) => {
            assert_eq!(done.rows_affected(), 1);
            true
        }
        Err(err) => {
            assert_eq!(
                refused_by(&err).as_deref(),
                Some("ticket_allocations_status_transition"),
                "{from} -> {to} may be refused only by the transition rule: {err}"
            );
            false
        }
    }
}

#[tokio::test]
async fn the_database_and_can_become_agree_on_every_transition() {
    let app = spawn_app().await;
    let event_id = uuid(&id_of(&app.create_event("Transitions", 10, None).await));
    let mut allowed = 0;
    for from in AllocationStatus::ALL {
        for to in AllocationStatus::ALL {
            let database = database_allows(&app.pool, event_id, from.as_str(), to.as_str()).await;
            assert_eq!(
                database,
                from.can_become(to),
                "{from} -> {to}: the database and can_become disagree"
            );
            allowed += usize::from(database);
        }
    }
    assert_eq!(
        allowed, 7,
        "the lifecycle has seven moves (refunded is the seventh)"
    );
}

#[tokio::test]
async fn a_status_change_outside_the_rule_matches_no_row() {
    let app = spawn_app().await;
    let (event_id, id, _) = app.event_with_hold("Guarded moves", 10, 2).await;
    let (event_id, id) = (uuid(&event_id), uuid(&id));
    let before = app.allocation_row(&id.to_string()).await;

    // reserved → purchased skips the payment: the statement matches no row (the trigger is
    // never reached, so this is the SQL's own guard), and nothing changes.
    let mut tx = app.pool.begin().await.unwrap();
    events::lock(&mut tx, event_id)
        .await
        .unwrap()
        .expect("the event");
    let record = TransitionRecord {
        confirmation_code: Some("BX-SKIP-PAID"),
        ..TransitionRecord::default()
    };
    let moved = allocations::transition(&mut tx, id, AllocationStatus::Purchased, record)
        .await
        .expect("the statement runs");
    assert!(moved.is_none(), "{moved:?}");
    tx.commit().await.unwrap();
    assert_eq!(app.allocation_row(&id.to_string()).await, before);

    // An allowed move goes through, and takes the tickets off the buyer's counter.
    let buyer = before.fingerprint_hash.clone();
    assert_eq!(
        counter_row(&app.pool, event_id, &buyer).await,
        Some((2, 10))
    );
    let mut tx = app.pool.begin().await.unwrap();
    events::lock(&mut tx, event_id)
        .await
        .unwrap()
        .expect("the event");
    let moved = allocations::transition(
        &mut tx,
        id,
        AllocationStatus::Cancelled,
        TransitionRecord::default(),
    )
    .await
    .expect("the statement runs")
    .expect("reserved may become cancelled");
    assert_eq!(moved.status, AllocationStatus::Cancelled);
    assert_eq!(counter_row(&mut *tx, event_id, &buyer).await, Some((0, 10)));
    tx.rollback().await.unwrap();
}
