use super::*;

fn sample(
    step: &'static str,
    status: Option<u16>,
    code: Option<&str>,
    ms: u64,
    ended_ms: u64,
) -> Sample {
    Sample {
        step,
        status,
        code: code.map(str::to_owned),
        latency_us: ms * 1000,
        ended_ms,
    }
}

#[test]
fn samples_add_up_per_step_and_per_second() {
    let samples = [
        sample("pay", Some(200), None, 30, 1_500),
        sample("purchase", Some(201), None, 10, 100),
        sample("purchase", Some(201), None, 20, 900),
        sample("purchase", Some(409), Some("TICKETS_SOLD_OUT"), 40, 2_100),
        sample(
            "purchase",
            Some(503),
            Some("SERVICE_UNAVAILABLE"),
            900,
            2_200,
        ),
        sample("purchase", None, None, 1_000, 2_300),
    ];
    let steps = steps(&samples, 2.5);
    // In the reports' order, not the samples'.
    assert_eq!(
        steps.iter().map(|s| s.name).collect::<Vec<_>>(),
        ["purchase", "pay"]
    );
    let purchase = &steps[0];
    assert_eq!(purchase.requests, 5);
    assert_eq!(purchase.per_second, 2.0);
    assert_eq!(purchase.failed, 2);
    // Failed requests are counted, not timed.
    assert_eq!(
        (purchase.latency_ms.p50, purchase.latency_ms.max),
        (20.0, 40.0)
    );
    assert_eq!(
        purchase.answers,
        [
            ("201".to_owned(), 2),
            ("409 TICKETS_SOLD_OUT".to_owned(), 1),
            ("503 SERVICE_UNAVAILABLE".to_owned(), 1),
            ("no answer".to_owned(), 1),
        ]
        .into()
    );
    // Three seconds (the run's 2.5 rounded up), every step on the same seconds.
    let per_second: Vec<(u64, u64, f64)> = purchase
        .timeline
        .iter()
        .map(|b| (b.second, b.requests, b.max))
        .collect();
    assert_eq!(per_second, [(0, 2, 20.0), (1, 0, 0.0), (2, 3, 40.0)]);
    assert_eq!(steps[1].timeline.len(), 3);
    assert_eq!(steps[1].timeline[1].requests, 1);
}

#[test]
fn a_request_that_ended_after_the_run_gets_its_second() {
    let late = steps(&[sample("watch", Some(200), None, 5, 4_200)], 1.0);
    assert_eq!(late[0].timeline.len(), 5);
    assert_eq!(late[0].timeline[4].requests, 1);
    assert!(steps(&[], 1.0).is_empty());
}
