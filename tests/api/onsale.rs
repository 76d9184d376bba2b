//! Smoke runs of the load tool's on-sale journey against a real server: buyers arriving at a
//! rate with a spike, thinking, paying, paying with a declining card, cancelling, abandoning
//! and watching the stream; every step counted, every hold read back in the status its buyer
//! was told, the counts compared with the rows, and the HTML report written. Small counts, no
//! timing thresholds.

use boxoffice_load::{Catalogue, Config, Journey, Report, Step, run_on_sale, write_report};
use clap::Parser;

use crate::helpers::{BATCHED, spawn_app_with};

const TOKEN: &str = "load-organiser-token";

/// The tool's own flags (as `boxoffice-load` parses them), so these runs are the CLI's.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    config: Config,
    #[command(flatten)]
    catalogue: Catalogue,
    #[command(flatten)]
    journey: Journey,
}

/// Runs the tool with `flags`, separated by whitespace.
async fn load(url: &str, flags: &str) -> Report {
    let argv = ["boxoffice-load", "--url", url]
        .into_iter()
        .chain(flags.split_whitespace());
    let flags = Flags::try_parse_from(argv).expect("valid flags");
    run_on_sale(&flags.config, &flags.catalogue, &flags.journey)
        .await
        .expect("the run completes")
}

fn step<'a>(report: &'a Report, name: &str) -> &'a Step {
    report
        .steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name}: {report:#?}"))
}

/// Every step's answers and timeline add up to its requests.
fn assert_steps_add_up(report: &Report) {
    for step in &report.steps {
        assert_eq!(
            step.answers.values().sum::<u64>(),
            step.requests,
            "{step:#?}"
        );
        let per_second: u64 = step.timeline.iter().map(|b| b.requests).sum();
        assert_eq!(per_second, step.requests, "{step:#?}");
    }
}

#[tokio::test]
async fn an_open_on_sale_with_a_spike_reads_every_hold_back_as_its_buyer_was_told() {
    // Holds lapse after a second and the think time goes to 1.5 s: some payments and
    // cancels come too late, and are checked as the expiries they were told.
    let app = spawn_app_with(&[
        "--hold-seconds",
        "1",
        "--sweep-interval-ms",
        "100",
        "--admin-token",
        TOKEN,
    ])
    .await;
    let report = load(
        &app.address,
        &format!(
            "{} {} {} --admin-token {TOKEN}",
            "--tickets 60 --ticket-types 2 --quotas overlap --max-lines 2 --price 1500 --price 500",
            "--arrival-rate 80 --spike-rate 400 --spike-seconds 0.2 --requests 120",
            "--think-ms 0-1500 --pay --decline-share 0.2 --cancel-share 0.2 --abandon-share 0.2 --watch-share 0.25",
        ),
    )
    .await;
    assert!(report.sound, "{report:#?}");
    assert_steps_add_up(&report);
    let journey = report.journey.clone().expect("a journey run");
    assert_eq!(journey.model, "open");
    assert_eq!(journey.buyers, 120);
    assert_eq!(journey.held, report.reservations);
    assert_eq!(
        journey.paid + journey.declined + journey.cancelled + journey.abandoned,
        journey.held,
        "{journey:#?}"
    );
    for (what, count) in [
        ("paid", journey.paid),
        ("declined", journey.declined),
        ("cancelled", journey.cancelled),
        ("abandoned", journey.abandoned),
        ("watchers", journey.watchers),
    ] {
        assert!(count > 0, "no buyer {what}: {journey:#?}");
    }
    assert_eq!(step(&report, "purchase").requests, 120);
    assert_eq!(step(&report, "pay").requests, journey.paid);
    assert_eq!(step(&report, "decline").requests, journey.declined);
    assert_eq!(step(&report, "cancel").requests, journey.cancelled);
    assert_eq!(step(&report, "watch").requests, journey.watchers);
    assert!(journey.stream_messages >= journey.watchers, "{journey:#?}");

    // Every hold was read back against what its buyer was told.
    let verification = report.verification.clone().unwrap();
    assert_eq!(
        verification.paid_checked + verification.statuses_checked,
        journey.held,
        "{verification:#?}"
    );
    assert_eq!(verification.wrong_status, 0);
    let paid_200 = step(&report, "pay")
        .answers
        .get("200")
        .copied()
        .unwrap_or(0);
    assert_eq!(verification.paid_checked, paid_200);
    assert_eq!(report.payments_succeeded, paid_200);
    let rows = verification
        .rows
        .clone()
        .expect("compared with --admin-token");
    assert!(rows.agrees, "{rows:#?}");
    assert_eq!(verification.quotas.len(), 2);
    app.assert_balanced(&report.event_id).await;
}

#[tokio::test]
async fn a_closed_loop_journey_with_think_time_cancels_and_pays() {
    let app = spawn_app_with(BATCHED).await;
    let report = load(
        &app.address,
        "--tickets 1000 --clients 4 --requests 40 --quantity 2 --think-ms 20 --cancel-share 0.5 --pay",
    )
    .await;
    assert!(report.sound, "{report:#?}");
    assert_steps_add_up(&report);
    let journey = report.journey.clone().unwrap();
    assert_eq!(journey.model, "closed");
    assert_eq!((journey.buyers, journey.held), (40, 40));
    assert_eq!(journey.paid + journey.cancelled, 40);
    assert_eq!(
        step(&report, "cancel").answers,
        [("200".to_owned(), journey.cancelled)].into()
    );
    assert_eq!(
        step(&report, "pay").answers,
        [("200".to_owned(), journey.paid)].into()
    );
    let verification = report.verification.clone().unwrap();
    assert_eq!(verification.statuses_checked, journey.cancelled);
    assert_eq!(verification.paid_checked, journey.paid);
    // Cancelled tickets went back; paid ones are sold.
    assert_eq!(verification.purchased_tickets, 2 * journey.paid as i64);
    assert_eq!(verification.reserved_tickets, 0);
    assert!(
        verification.rows.is_none(),
        "no --admin-token, no row check"
    );
    app.assert_balanced(&report.event_id).await;
}

#[tokio::test]
async fn a_cancel_the_database_does_not_keep_makes_the_journey_unsound() {
    let app = spawn_app_with(&["--admin-token", TOKEN]).await;
    // Every cancel is answered, but the row stays `reserved` (the trigger runs after the
    // transition check, by name): the buyers were told one thing and the database says another.
    sqlx::raw_sql(
        "CREATE FUNCTION load_test_forget_cancel() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.status = 'cancelled' THEN \
             NEW.status := 'reserved'; NEW.cancelled_at := NULL; \
         END IF; RETURN NEW; END $$; \
         CREATE TRIGGER z_load_test_forget_cancel BEFORE UPDATE OF status ON ticket_allocations \
         FOR EACH ROW EXECUTE FUNCTION load_test_forget_cancel();",
    )
    .execute(&app.pool)
    .await
    .expect("the trigger is made");
    let report = load(
        &app.address,
        &format!(
            "--tickets 100 --clients 4 --requests 20 --cancel-share 0.5 --admin-token {TOKEN}"
        ),
    )
    .await;
    assert!(!report.sound, "{report:#?}");
    let verification = report.verification.clone().unwrap();
    let cancelled = report.journey.clone().unwrap().cancelled;
    assert!(cancelled > 0);
    assert_eq!(verification.wrong_status, cancelled, "{verification:#?}");
    assert!(
        report
            .verdict
            .iter()
            .any(|r| r.contains("not read back in the status told")),
        "{:?}",
        report.verdict
    );
}

#[tokio::test]
async fn the_report_flag_writes_a_self_contained_page_with_a_chart_per_step() {
    let app = spawn_app_with(BATCHED).await;
    let report = load(&app.address, "--tickets 50 --clients 4 --requests 60 --pay").await;
    assert!(report.sound, "{report:#?}");
    let path = std::env::temp_dir().join(format!("boxoffice-load-{}.html", report.event_id));
    write_report(&report, &path).expect("the report is written");
    let page = std::fs::read_to_string(&path).expect("the report reads back");
    std::fs::remove_file(&path).expect("the report is removed");
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(page.trim_end().ends_with("</html>"));
    // Two charts (rate, latency) for each of the steps, purchase and pay.
    assert_eq!(report.steps.len(), 2);
    assert_eq!(page.matches("<svg").count(), 4);
    assert_eq!(page.matches("</svg>").count(), 4);
    for outside in ["<script", "<link", "<img", "src=", "href="] {
        assert!(!page.contains(outside), "{outside}");
    }
    assert!(page.contains(&report.event_id));
}

#[tokio::test]
async fn the_journey_counts_what_came_of_the_buyers_choices() {
    // Holds of a second and a think time of 1.6 s: every buyer chooses to pay, and every
    // payment comes too late for its hold.
    let app = spawn_app_with(&["--hold-seconds", "1", "--sweep-interval-ms", "100"]).await;
    let report = load(
        &app.address,
        "--tickets 100 --clients 4 --requests 8 --think-ms 1600 --pay",
    )
    .await;
    assert!(report.sound, "{report:#?}");
    let journey = report.journey.clone().expect("a journey run");
    assert_eq!((journey.held, journey.paid), (8, 8), "{journey:#?}");
    assert_eq!(journey.too_late, 8, "{journey:#?}");
    assert_eq!(report.payments_succeeded, 0, "{report:#?}");
    let text = boxoffice_load::render(&report);
    assert!(
        text.contains("8 held: chose 8 pay, 0 declining card, 0 cancel, 0 abandon; 8 too late for their hold, 0 payments ok"),
        "{text}"
    );
}

#[tokio::test]
async fn paid_orders_of_buyers_checked_in_or_refunded_are_read_back() {
    let app = spawn_app_with(&["--admin-token", TOKEN]).await;
    // Every buyer pays and is checked in: every order must read back purchased, and the
    // admission scanned `checked_in`.
    let report = load(
        &app.address,
        &format!(
            "--tickets 50 --arrival-rate 20 --requests 10 --checkin-share 1 --pay \
             --admin-token {TOKEN}"
        ),
    )
    .await;
    assert!(report.sound, "{report:#?}");
    let journey = report.journey.clone().unwrap();
    assert_eq!((journey.paid, journey.checked_in), (10, 10), "{journey:#?}");
    let verification = report.verification.clone().unwrap();
    assert_eq!(verification.paid_checked, 10, "{verification:#?}");
    assert_eq!(verification.statuses_checked, 10, "{verification:#?}");
    // Every buyer pays and is refunded: every order must read back `refunded`.
    let report = load(
        &app.address,
        &format!(
            "--tickets 50 --arrival-rate 20 --requests 10 --refund-share 1 --pay \
             --admin-token {TOKEN}"
        ),
    )
    .await;
    assert!(report.sound, "{report:#?}");
    let journey = report.journey.clone().unwrap();
    assert_eq!((journey.paid, journey.refunded), (10, 10), "{journey:#?}");
    let verification = report.verification.clone().unwrap();
    assert_eq!(verification.statuses_checked, 10, "{verification:#?}");
}
