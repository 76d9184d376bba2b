//! A short smoke run of the load-test tool against a real server: zero oversell and every
//! 201 read back. No timing thresholds: speed is measured with the tool, not in tests.

use boxoffice_load::{Config, run};

use crate::helpers::spawn_app_with;

fn config(url: String) -> Config {
    Config {
        urls: vec![url],
        event_id: None,
        tickets: 150,
        max_per_fingerprint: None,
        clients: 16,
        duration: None,
        requests: Some(300),
        quantity: 1,
        buyers: None,
        pay: false,
        idle_streams: 0,
        hold_streams_seconds: 0.0,
        read_only: false,
        no_verify: false,
    }
}

#[tokio::test]
async fn smoke_run_batched_sells_out_exactly() {
    let app = spawn_app_with(&["--purchase-mode", "batched"]).await;
    let report = run(&config(app.address.clone()))
        .await
        .expect("the run completes");
    let verification = report.verification.clone().unwrap();
    assert!(report.is_sound(), "{report:#?}");
    assert_eq!(report.reservations, 150, "{report:#?}");
    // Every request answered, and every refusal the one a sold-out event gives.
    assert_eq!(
        report.statuses,
        [(201, 150), (409, 150)].into(),
        "{report:#?}"
    );
    assert_eq!(
        report.codes,
        [("TICKETS_SOLD_OUT".to_owned(), 150)].into(),
        "{report:#?}"
    );
    assert_eq!(report.transport_errors, 0);
    assert_eq!(verification.allocations_checked, 150);
    assert_eq!(verification.available_tickets, 0);
    assert_eq!(verification.tickets_granted, verification.reserved_tickets);
    app.assert_balanced(&report.event_id).await;
}

#[tokio::test]
async fn smoke_run_per_request_with_payment() {
    let app = spawn_app_with(&["--purchase-mode", "per-request"]).await;
    let mut config = config(app.address.clone());
    config.requests = Some(100);
    config.quantity = 2;
    config.pay = true;
    let report = run(&config).await.expect("the run completes");
    let verification = report.verification.clone().unwrap();
    assert!(report.is_sound(), "{report:#?}");
    assert_eq!(report.reservations, 75);
    assert_eq!(
        report.statuses,
        [(201, 75), (409, 25)].into(),
        "{report:#?}"
    );
    assert_eq!(
        report.codes,
        [("TICKETS_SOLD_OUT".to_owned(), 25)].into(),
        "{report:#?}"
    );
    assert_eq!(report.transport_errors, 0);
    assert_eq!(report.payments_succeeded, 75);
    assert_eq!(verification.purchased_tickets, 150);
    assert_eq!(verification.available_tickets, 0);
    app.assert_balanced(&report.event_id).await;
}
