//! The history checker (`boxoffice-load check`) against a real run: a mixed journey workload
//! (holds, declined and good cards, cancels, refunds, check-ins, waiting-list offers, keyed)
//! recorded with `--history`, judged sound; then the database doctored behind the app's back,
//! one fault at a time, and each fault caught.

use std::path::Path;

use boxoffice_load::check::{self, Kind, Options, Report};
use boxoffice_load::{Catalogue, Config, Journey, run_on_sale};
use clap::Parser;
use sqlx::PgPool;

use crate::helpers::{database_url, fresh_database, spawn_app_on};

const ADMIN: &str = "history-organiser";

/// The load tool's own flags, parsed as its CLI parses them.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    config: Config,
    #[command(flatten)]
    catalogue: Catalogue,
    #[command(flatten)]
    journey: Journey,
}

async fn judge(history: &Path, url: &str) -> Report {
    check::run(&Options {
        history: history.to_path_buf(),
        database_url: url.to_owned(),
        settle_seconds: 10,
        fingerprint_secret: None,
        retry_seconds: 0.0,
    })
    .await
    .expect("the checker runs")
}

#[track_caller]
fn assert_reports(report: &Report, kind: Kind) {
    assert!(
        report.violations.iter().any(|v| v.kind == kind),
        "{kind} not reported:\n{}",
        report.render()
    );
}

async fn execute(pool: &PgPool, sql: &'static str) {
    sqlx::query(sql)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn a_recorded_run_is_sound_and_doctored_rows_are_caught() {
    let options = fresh_database().await;
    let app = spawn_app_on(&options, &["--admin-token", ADMIN]).await;
    let url = database_url(&options);
    let history = std::env::temp_dir().join(format!(
        "boxoffice-history-{}.jsonl",
        uuid::Uuid::new_v4().simple()
    ));
    let history_arg = history.to_str().unwrap().to_owned();
    let flags = Flags::parse_from([
        "boxoffice-load",
        "--url",
        &app.address,
        "--admin-token",
        ADMIN,
        "--tickets",
        "30",
        "--requests",
        "60",
        "--arrival-rate",
        "200",
        "--ticket-types",
        "2",
        "--price",
        "1000",
        "--decline-share",
        "0.15",
        "--cancel-share",
        "0.15",
        "--refund-share",
        "0.3",
        "--checkin-share",
        "0.4",
        "--waiting-list-share",
        "0.3",
        "--offer-wait-seconds",
        "3",
        "--keyed",
        "--history",
        &history_arg,
    ]);
    let run = run_on_sale(&flags.config, &flags.catalogue, &flags.journey)
        .await
        .expect("the run completes");
    assert!(run.sound, "{run:#?}");

    let report = judge(&history, &url).await;
    assert!(report.sound, "{}", report.render());
    let s = &report.summary;
    assert!(
        s.acknowledged_holds > 0 && s.acknowledged_payments > 0,
        "{s:?}"
    );
    assert!(
        s.acknowledged_refunds > 0 && s.acknowledged_checkins > 0,
        "the workload should refund and check in: {s:?}"
    );
    assert_eq!(s.charged, s.purchased_totals, "{s:?}");

    // A completed refund deleted behind the app's back: its 200 is a lost acknowledgement.
    let pool = &app.pool;
    execute(
        pool,
        "DELETE FROM refunds WHERE id = (SELECT id FROM refunds WHERE status = 'completed' \
         ORDER BY id LIMIT 1)",
    )
    .await;
    let report = judge(&history, &url).await;
    assert_reports(&report, Kind::LostAcknowledgement);
    assert_reports(&report, Kind::MoneyMismatch);

    // A counter moved without its rows (balanced, so only the rows can tell).
    execute(
        pool,
        "UPDATE events SET available_tickets = available_tickets - 1, \
                reserved_tickets = reserved_tickets + 1 \
         WHERE id = (SELECT event_id FROM ticket_allocations LIMIT 1) AND available_tickets > 0",
    )
    .await;
    let report = judge(&history, &url).await;
    assert_reports(&report, Kind::CountsDiffer);

    // A checked-in admission put back to valid: its check-in's 200 is lost.
    execute(
        pool,
        "UPDATE admissions SET status = 'valid', checked_in_at = NULL, gate = NULL \
         WHERE id = (SELECT id FROM admissions WHERE status = 'checked_in' ORDER BY id LIMIT 1)",
    )
    .await;
    let report = judge(&history, &url).await;
    assert_reports(&report, Kind::LostAcknowledgement);

    // The provider charging a hold twice.
    execute(
        pool,
        "INSERT INTO payment_charges (reference, outcome, amount, currency) \
         SELECT 'pay_' || replace(id::text, '-', '') || '_doctored', 'charged', total, 'EUR' \
         FROM ticket_allocations WHERE status = 'purchased' AND total > 0 ORDER BY id LIMIT 1",
    )
    .await;
    let report = judge(&history, &url).await;
    assert_reports(&report, Kind::DoubleCharge);

    let _ = std::fs::remove_file(&history);
    app.stop().await;
}
