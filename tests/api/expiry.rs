//! Holds that lapse, with and without the sweeper, and payments a crash left in
//! `payment_pending`, settled by the sweeper from the provider's ledger.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{
    AllocationRow, TestApp, assert_error, eventually, id_of, new_fingerprint, spawn_app_on,
    spawn_app_with, sweep_at_once, timestamp,
};

/// Sleeps until just past a hold's `expiresAt` (one clock: same machine as the database).
async fn sleep_past(expires_at: &Value) {
    let deadline = timestamp(expires_at) + Duration::from_millis(50);
    let left = deadline - time::OffsetDateTime::now_utc();
    if left.is_positive() {
        tokio::time::sleep(left.try_into().unwrap()).await;
    }
}

async fn wait_for_status(app: &TestApp, id: &str, status: &str) -> AllocationRow {
    eventually(
        &format!("allocation {id} to become {status}"),
        Duration::from_secs(10),
        || async {
            let row = app.allocation_row(id).await;
            (row.status == status).then_some(row)
        },
    )
    .await
}

#[tokio::test]
async fn the_sweeper_expires_a_lapsed_hold_and_returns_its_tickets() {
    let app = spawn_app_with(&["--hold-seconds", "1", "--sweep-interval-ms", "50"]).await;
    let event = app.create_event("Short holds", 10, None).await;
    let event_id = event["id"].as_str().unwrap();
    let holder = new_fingerprint();
    let (status, hold) = app.purchase(event_id, 4, &holder).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let id = id_of(&hold);
    let hold_length = timestamp(&hold["expiresAt"]) - timestamp(&hold["createdAt"]);
    assert_eq!(hold_length, Duration::from_secs(1));
    assert_eq!(app.counts(event_id).await, (6, 4, 0));

    eventually("the tickets to return", Duration::from_secs(10), || async {
        (app.counts(event_id).await == (10, 0, 0)).then_some(())
    })
    .await;
    let row = app.allocation_row(&id).await;
    assert_eq!(row.status, "expired");
    let expired_at = row.expired_at.expect("expired_at recorded");
    assert!(
        expired_at >= row.expires_at,
        "expired only after its deadline"
    );
    assert!(row.payment_pending_at.is_none() && row.cancelled_at.is_none());
    let (status, read) = app.ticket(&id, &holder).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["status"], "expired");
    assert_eq!(timestamp(&read["expiredAt"]), expired_at);
    app.assert_balanced(event_id).await;

    // Too late to pay or cancel; neither moves a ticket.
    let (status, body) = app.pay(&id, &holder, Some("tok_visa")).await;
    assert_error(status, &body, StatusCode::GONE, "RESERVATION_EXPIRED");
    let (status, body) = app.cancel(&id, &holder).await;
    assert_error(status, &body, StatusCode::CONFLICT, "INVALID_STATUS");
    assert_eq!(body["status"], "expired", "{body}");
    assert_eq!(app.allocation_row(&id).await, row);
    assert_eq!(app.counts(event_id).await, (10, 0, 0));
    let charges = app.row_count("payment_charges").await;
    assert_eq!(charges, 0, "a late payment never reaches the provider");

    // The returned tickets can be bought again.
    let (status, _) = app.purchase(event_id, 10, &new_fingerprint()).await;
    assert_eq!(status, StatusCode::CREATED);
    app.assert_balanced(event_id).await;
}

#[tokio::test]
async fn a_late_payment_expires_the_hold_itself_when_the_sweeper_is_off() {
    // The sweeper runs once at start-up and then not for an hour.
    let app = spawn_app_with(&["--hold-seconds", "1", "--sweep-interval-ms", "3600000"]).await;
    let event = app.create_event("No sweeper", 10, None).await;
    let event_id = event["id"].as_str().unwrap();
    let holder = new_fingerprint();
    let (status, paid_late) = app.purchase(event_id, 3, &holder).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, cancelled_late) = app.purchase(event_id, 2, &holder).await;
    assert_eq!(status, StatusCode::CREATED);
    let (late_pay, late_cancel) = (id_of(&paid_late), id_of(&cancelled_late));

    sleep_past(&cancelled_late["expiresAt"]).await;
    // Lapsed, but nobody has marked it yet.
    assert_eq!(app.allocation_row(&late_pay).await.status, "reserved");
    assert_eq!(app.counts(event_id).await, (5, 5, 0));

    let (status, body) = app.pay(&late_pay, &holder, Some("tok_visa")).await;
    assert_error(status, &body, StatusCode::GONE, "RESERVATION_EXPIRED");
    let row = app.allocation_row(&late_pay).await;
    assert_eq!(row.status, "expired", "the payment path expired it");
    assert!(row.expired_at.expect("expired_at recorded") >= row.expires_at);
    assert!(row.payment_pending_at.is_none(), "never went to payment");
    assert_eq!(app.counts(event_id).await, (8, 2, 0));

    // Asking again is still 410, and returns nothing twice.
    let (status, body) = app.pay(&late_pay, &holder, None).await;
    assert_error(status, &body, StatusCode::GONE, "RESERVATION_EXPIRED");
    assert_eq!(app.counts(event_id).await, (8, 2, 0));

    // A late cancel is refused the same way, and also gives the tickets back.
    let (status, body) = app.cancel(&late_cancel, &holder).await;
    assert_error(status, &body, StatusCode::CONFLICT, "INVALID_STATUS");
    assert_eq!(body["status"], "expired", "{body}");
    let row = app.allocation_row(&late_cancel).await;
    assert_eq!(row.status, "expired");
    assert!(row.cancelled_at.is_none() && row.expired_at.is_some());
    assert_eq!(app.counts(event_id).await, (10, 0, 0));

    let charges = app.row_count("payment_charges").await;
    assert_eq!(charges, 0);
    app.assert_balanced(event_id).await;
}

/// Puts a hold into `payment_pending` the way a payment request's first commit does, as if
/// the process then died: optionally with the provider having charged, optionally lapsed.
/// Returns the row as the crashed request left it.
async fn crash_mid_payment(
    app: &TestApp,
    id: &str,
    reference: &str,
    charged: bool,
    lapsed: bool,
) -> AllocationRow {
    let mut tx = app.pool.begin().await.unwrap();
    let pending: AllocationRow = sqlx::query_as(
        "UPDATE ticket_allocations SET status = 'payment_pending', \
            payment_pending_at = now() - interval '5 seconds', payment_reference = $2, \
            expires_at = CASE WHEN $3 THEN now() - interval '1 second' ELSE expires_at END, \
            updated_at = now() \
         WHERE id = $1 AND status = 'reserved' \
         RETURNING event_id, quantity, status, fingerprint_hash, expires_at, reserved_at, \
            payment_pending_at, purchased_at, cancelled_at, expired_at, payment_reference, \
            confirmation_code, created_at, updated_at",
    )
    .bind(Uuid::parse_str(id).unwrap())
    .bind(reference)
    .bind(lapsed)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    if charged {
        sqlx::query("INSERT INTO payment_charges (reference, outcome) VALUES ($1, 'charged')")
            .bind(reference)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    // One commit, so the sweeper never sees the pending payment without its charge.
    tx.commit().await.unwrap();
    pending
}

const RECOVERY: [&str; 4] = [
    "--payment-recovery-seconds",
    "1",
    "--sweep-interval-ms",
    "50",
];

#[tokio::test]
async fn a_crash_after_the_charge_is_settled_as_purchased() {
    let app = spawn_app_with(&RECOVERY).await;
    let (event_id, id, holder) = app.event_with_hold("Crash after charge", 10, 2).await;
    let pending = crash_mid_payment(&app, &id, "pay_crashed_after_charge", true, false).await;

    let row = wait_for_status(&app, &id, "purchased").await;
    let code = row.confirmation_code.clone().expect("confirmation code");
    assert!(code.starts_with("BX-") && code.len() == 12, "{code}");
    assert!(row.purchased_at.is_some_and(|at| at > pending.updated_at));
    assert_eq!(row.payment_pending_at, pending.payment_pending_at);
    assert_eq!(
        row.payment_reference.as_deref(),
        Some("pay_crashed_after_charge")
    );
    assert_eq!(
        app.charge_outcome("pay_crashed_after_charge")
            .await
            .as_deref(),
        Some("charged"),
        "recovery never overwrites a recorded charge"
    );
    assert_eq!(app.counts(&event_id).await, (8, 0, 2));
    let (status, read) = app.ticket(&id, &holder).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["status"], "purchased");
    assert_eq!(read["confirmationCode"], code.as_str());
    timestamp(&read["purchasedAt"]);
    app.assert_balanced(&event_id).await;
}

#[tokio::test]
async fn a_crash_before_the_charge_returns_the_hold_to_reserved() {
    let app = spawn_app_with(&RECOVERY).await;
    let (event_id, id, holder) = app.event_with_hold("Crash before charge", 10, 2).await;
    let reserved = app.allocation_row(&id).await;
    crash_mid_payment(&app, &id, "pay_crashed_before_charge", false, false).await;

    let row = wait_for_status(&app, &id, "reserved").await;
    assert_eq!(row.expires_at, reserved.expires_at, "original expiry kept");
    assert!(row.purchased_at.is_none() && row.confirmation_code.is_none());
    assert_eq!(
        app.charge_outcome("pay_crashed_before_charge")
            .await
            .as_deref(),
        Some("voided"),
        "the reference is voided so no late charge can land"
    );
    assert_eq!(app.counts(&event_id).await, (8, 2, 0));

    // The holder can pay again, under a new reference.
    let (status, paid) = app.pay(&id, &holder, Some("tok_visa")).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["status"], "purchased");
    assert_ne!(
        app.allocation_row(&id).await.payment_reference.as_deref(),
        Some("pay_crashed_before_charge")
    );
    assert_eq!(app.counts(&event_id).await, (8, 0, 2));
    app.assert_balanced(&event_id).await;
}

#[tokio::test]
async fn a_crash_before_the_charge_of_a_lapsed_hold_expires_it() {
    let app = spawn_app_with(&RECOVERY).await;
    let (event_id, id, holder) = app.event_with_hold("Crash and lapse", 10, 3).await;
    crash_mid_payment(&app, &id, "pay_crashed_and_lapsed", false, true).await;

    let row = wait_for_status(&app, &id, "expired").await;
    assert!(row.expired_at.is_some() && row.purchased_at.is_none());
    assert_eq!(
        app.charge_outcome("pay_crashed_and_lapsed")
            .await
            .as_deref(),
        Some("voided")
    );
    assert_eq!(app.counts(&event_id).await, (10, 0, 0));
    let (status, body) = app.pay(&id, &holder, Some("tok_visa")).await;
    assert_error(status, &body, StatusCode::GONE, "RESERVATION_EXPIRED");
    app.assert_balanced(&event_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweepers_of_several_instances_return_each_lapsed_hold_once() {
    // Background sweepers off; the test runs the real sweep itself, many at once.
    let flags = ["--hold-seconds", "1", "--sweep-interval-ms", "3600000"];
    let first = spawn_app_with(&flags).await;
    let options = (*first.pool.connect_options()).clone();
    let second = spawn_app_on(&options, &flags).await;
    let events = [
        first.create_event("Swept A", 100, None).await,
        first.create_event("Swept B", 100, None).await,
    ];
    let mut last = Value::Null;
    for round in 0..40 {
        let event_id = events[round % 2]["id"].as_str().unwrap();
        let (status, hold) = first.purchase(event_id, 2, &new_fingerprint()).await;
        assert_eq!(status, StatusCode::CREATED, "{hold}");
        last = hold;
    }
    sleep_past(&last["expiresAt"]).await;

    let mut expired = 0;
    for (n, settled) in sweep_at_once(&[&first, &second], 8).await {
        assert_eq!(settled, 0);
        expired += n;
    }
    assert_eq!(
        expired, 40,
        "each lapsed hold is expired by exactly one sweep"
    );
    for event in &events {
        let event_id = event["id"].as_str().unwrap();
        assert_eq!(first.counts(event_id).await, (100, 0, 0));
        first.assert_balanced(event_id).await;
    }
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT status FROM ticket_allocations")
            .fetch_all(&first.pool)
            .await
            .unwrap();
    assert_eq!(statuses, ["expired"]);
    // Nothing is left for a later sweep.
    assert_eq!(
        boxoffice::sweeper::sweep_once(&second.state.sweeper)
            .await
            .unwrap(),
        (0, 0)
    );
}

/// Installs a trigger that fails `statement` on `table` whenever `condition` holds: a fault
/// in the middle of a payment, through the real code path.
async fn inject_fault(app: &TestApp, name: &str, timing: &str, condition: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN RAISE EXCEPTION 'injected fault {name}'; END $$; \
         CREATE TRIGGER {name} {timing} FOR EACH ROW WHEN ({condition}) \
           EXECUTE FUNCTION {name}();"
    )))
    .execute(&app.pool)
    .await
    .unwrap();
}

async fn remove_fault(app: &TestApp, name: &str, table: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TRIGGER {name} ON {table}"
    )))
    .execute(&app.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_provider_failure_after_the_first_commit_is_recovered_to_reserved() {
    let app = spawn_app_with(&RECOVERY).await;
    let (event_id, id, holder) = app.event_with_hold("Provider down", 10, 2).await;
    let reserved = app.allocation_row(&id).await;

    // The provider cannot record the charge: the request fails after payment_pending was
    // committed, leaving the outcome unknown.
    inject_fault(
        &app,
        "provider_down",
        "BEFORE INSERT ON payment_charges",
        "NEW.outcome = 'charged'",
    )
    .await;
    let (status, body) = app.pay(&id, &holder, Some("tok_visa")).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    let pending = app.allocation_row(&id).await;
    assert_eq!(pending.status, "payment_pending");
    let reference = pending.payment_reference.clone().expect("reference");
    assert_eq!(app.charge_outcome(&reference).await, None);
    assert_eq!(app.counts(&event_id).await, (8, 2, 0));
    remove_fault(&app, "provider_down", "payment_charges").await;

    // Recovery voids the reference and gives the holder the hold back.
    let row = wait_for_status(&app, &id, "reserved").await;
    assert_eq!(row.expires_at, reserved.expires_at);
    assert_eq!(
        app.charge_outcome(&reference).await.as_deref(),
        Some("voided")
    );
    assert_eq!(app.counts(&event_id).await, (8, 2, 0));
    let (status, paid) = app.pay(&id, &holder, Some("tok_visa")).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(app.counts(&event_id).await, (8, 0, 2));
    app.assert_balanced(&event_id).await;
}

#[tokio::test]
async fn a_failure_after_the_charge_is_recovered_to_purchased() {
    let app = spawn_app_with(&RECOVERY).await;
    let (event_id, id, holder) = app.event_with_hold("Charged then lost", 10, 2).await;

    // The charge is recorded, then confirming the purchase fails.
    inject_fault(
        &app,
        "confirm_fails",
        "BEFORE UPDATE ON ticket_allocations",
        "NEW.status = 'purchased'",
    )
    .await;
    let (status, body) = app.pay(&id, &holder, Some("tok_visa")).await;
    // An unexpected database error (the trigger's P0001) after the charge: a 500 whose body
    // says nothing of the cause (docs/errors.md, INTERNAL_ERROR).
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
    );
    assert_eq!(body["error"], "an internal error occurred", "{body}");
    let pending = app.allocation_row(&id).await;
    assert_eq!(pending.status, "payment_pending");
    let reference = pending.payment_reference.clone().expect("reference");
    assert_eq!(
        app.charge_outcome(&reference).await.as_deref(),
        Some("charged")
    );
    assert_eq!(app.counts(&event_id).await, (8, 2, 0));
    remove_fault(&app, "confirm_fails", "ticket_allocations").await;

    // The money was taken: recovery completes the purchase.
    let row = wait_for_status(&app, &id, "purchased").await;
    assert!(row.confirmation_code.is_some() && row.purchased_at.is_some());
    assert_eq!(row.payment_reference.as_deref(), Some(reference.as_str()));
    assert_eq!(app.counts(&event_id).await, (8, 0, 2));
    let (status, read) = app.ticket(&id, &holder).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["status"], "purchased");
    app.assert_balanced(&event_id).await;
}
