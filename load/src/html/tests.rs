use std::collections::BTreeMap;

use super::*;
use crate::report::Latency;
use crate::steps::{Sample, steps};

fn report() -> Report {
    let samples: Vec<Sample> = (0..30)
        .map(|i| Sample {
            step: if i % 3 == 0 { "pay" } else { "purchase" },
            status: Some(if i % 3 == 0 { 200 } else { 201 }),
            code: None,
            latency_us: 1_000 * (i + 1),
            ended_ms: 100 * i,
        })
        .collect();
    Report {
        event_id: "<event & co>".into(),
        clients: 4,
        elapsed_seconds: 3.0,
        requests: 20,
        requests_per_second: 6.7,
        reservations: 20,
        reservations_per_second: 6.7,
        tickets_reserved: 20,
        tickets_per_second: 6.7,
        orders_mispriced: 0,
        mispriced_examples: Vec::new(),
        payments_succeeded: 10,
        payments_per_second: 0.0,
        pay_latency_ms: Latency::default(),
        transport_errors: 0,
        latency_ms: Latency::default(),
        failed_requests: 0,
        failed_latency_ms: Latency::default(),
        statuses: BTreeMap::new(),
        codes: BTreeMap::new(),
        answers: Vec::new(),
        verification: None,
        steps: steps(&samples, 3.0),
        journey: None,
        streams: None,
        sound: false,
        verdict: vec!["not verified (--no-verify)".into()],
    }
}

#[test]
fn every_step_gets_a_rate_and_a_latency_chart() {
    let charts = charts(&report());
    let names: Vec<&str> = charts.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "purchase-rate",
            "purchase-latency",
            "pay-rate",
            "pay-latency"
        ]
    );
    for chart in &charts {
        assert!(chart.svg.starts_with("<svg"), "{}", chart.name);
        assert!(chart.svg.trim_end().ends_with("</svg>"), "{}", chart.name);
        // Lines were drawn, not only the axes.
        assert!(chart.svg.contains("<polyline"), "{}", chart.name);
    }
    assert!(charts[1].svg.contains("p99"));
}

#[test]
fn the_page_is_self_contained_html_with_inline_charts() {
    let page = html(&report());
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.trim_end().ends_with("</html>"));
    assert_eq!(page.matches("<svg").count(), 4);
    assert!(page.contains("NOT SOUND"));
    // Nothing is fetched: no script, no link, no image, no external source.
    for outside in ["<script", "<link", "<img", "src=", "href="] {
        assert!(!page.contains(outside), "{outside}");
    }
    // Text from the report is escaped.
    assert!(page.contains("&lt;event &amp; co&gt;"));
    assert!(!page.contains("<event"));
}

#[test]
fn a_steps_two_charts_span_the_run_and_draw_what_happened() {
    // 10 purchases in [0, 1), 4 in [1, 2) all failed (no answer), 6 in the last half second.
    let sample = |ended_ms: u64, status: Option<u16>| Sample {
        step: "purchase",
        status,
        code: None,
        latency_us: 2_000,
        ended_ms,
    };
    let samples: Vec<Sample> = (0..10)
        .map(|i| sample(i * 90, Some(201)))
        .chain((0..4).map(|i| sample(1_000 + i * 200, None)))
        .chain((0..6).map(|i| sample(2_000 + i * 70, Some(409))))
        .collect();
    let step = &steps(&samples, 2.5)[0];
    assert_eq!(step.timeline.len(), 3);
    // The last second lasted half a second: 6 requests in it are 12 per second.
    assert_eq!(
        rate_points(step, 2.5, |b| b.requests),
        [(0.5, 10.0), (1.5, 4.0), (2.25, 12.0)]
    );
    // The outage second is all failures, none answered.
    assert_eq!(
        rate_points(step, 2.5, |b| b.answered),
        [(0.5, 10.0), (1.5, 0.0), (2.25, 12.0)]
    );
    assert_eq!(
        rate_points(step, 2.5, |b| b.requests - b.answered),
        [(0.5, 0.0), (1.5, 4.0), (2.25, 0.0)]
    );
    // The outage second has no latency point (it was drawn at 0 ms).
    let p50: Vec<f64> = latency_points(step, 2.5, |b| b.p50)
        .iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(p50, [0.5, 2.25]);
    // Both charts end with the run's last second, though the last failed second ends the
    // latency's points sooner.
    let failed_last: Vec<Sample> = samples[..14].to_vec();
    let step = &steps(&failed_last, 2.0)[0];
    assert_eq!(x_max(step), 2.0);
    assert_eq!(latency_points(step, 2.0, |b| b.max).last().unwrap().0, 0.5);
    // Requests that ended after the run (a payment of its last hold) count a whole second.
    assert_eq!(span(3, 2.5), (3.5, 1.0));
}

#[test]
fn a_point_with_no_neighbour_is_drawn() {
    // Every request in one second: one point per series, which a line alone never draws.
    let samples: Vec<Sample> = (0..5)
        .map(|i| Sample {
            step: "purchase",
            status: Some(201),
            code: None,
            latency_us: 3_000,
            ended_ms: 100 * i,
        })
        .collect();
    let step = &steps(&samples, 0.6)[0];
    let [rate, latency] = step_charts(step, 0.6);
    // Ended, answered below 500 and failed: one marker each.
    assert_eq!(rate.svg.matches("<circle").count(), 3, "{}", rate.svg);
    // p50, p90, p99 and max: one marker each.
    assert_eq!(latency.svg.matches("<circle").count(), 4, "{}", latency.svg);
}
