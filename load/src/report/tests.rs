use super::*;

fn answer(action: &'static str, status: Option<u16>, code: Option<&str>, count: u64) -> Answer {
    Answer {
        action,
        status,
        code: code.map(str::to_owned),
        count,
    }
}

const COUNTS: EventCounts = EventCounts {
    total: 10,
    available: 4,
    reserved: 4,
    purchased: 2,
};

fn read_back(tickets_held: i64) -> ReadBack {
    ReadBack {
        checked: 6,
        tickets_held,
        ..ReadBack::default()
    }
}

/// A sold-out run that sold 6 of 10 tickets, every 201 read back: sound.
fn sound_report() -> Report {
    Report {
        event_id: "e".into(),
        clients: 1,
        elapsed_seconds: 1.0,
        requests: 8,
        requests_per_second: 8.0,
        reservations: 6,
        reservations_per_second: 6.0,
        payments_succeeded: 2,
        transport_errors: 0,
        latency_ms: Latency::default(),
        failed_requests: 0,
        failed_latency_ms: Latency::default(),
        statuses: BTreeMap::new(),
        codes: BTreeMap::new(),
        answers: vec![
            answer("purchase", Some(201), None, 6),
            answer("purchase", Some(409), Some("TICKETS_SOLD_OUT"), 1),
            answer("purchase", Some(409), Some("FINGERPRINT_LIMIT"), 1),
            answer("pay", Some(200), None, 2),
        ],
        verification: Some(Verification::new(COUNTS, 6, read_back(6))),
        sound: true,
        verdict: Vec::new(),
    }
}

#[test]
fn a_verified_run_of_documented_answers_is_sound() {
    assert_eq!(sound_report().reasons(), Vec::<String>::new());
    assert!(sound_report().is_sound());
}

#[test]
fn a_server_error_makes_a_run_unsound() {
    let mut report = sound_report();
    report.answers.push(answer(
        "purchase",
        Some(503),
        Some("SERVICE_UNAVAILABLE"),
        3,
    ));
    assert_eq!(report.reasons(), ["3 answers were server errors (5xx)"]);
    let mut report = sound_report();
    report
        .answers
        .push(answer("pay", Some(500), Some("INTERNAL_ERROR"), 1));
    assert_eq!(report.reasons(), ["1 answers were server errors (5xx)"]);
}

#[test]
fn a_request_without_an_answer_makes_a_run_unsound() {
    let mut report = sound_report();
    report.answers.push(answer("pay", None, None, 2));
    assert_eq!(
        report.reasons(),
        ["2 requests got no answer (transport errors)"]
    );
}

#[test]
fn a_run_without_verification_is_not_sound() {
    let mut report = sound_report();
    report.verification = None;
    assert_eq!(report.reasons(), ["not verified (--no-verify)"]);
}

#[test]
fn answers_a_load_run_should_not_get_make_it_unsound() {
    for (action, status, code) in [
        ("purchase", 422, "VALIDATION_ERROR"),
        ("purchase", 404, "NOT_FOUND"),
        ("purchase", 409, "IDEMPOTENCY_IN_PROGRESS"),
        ("pay", 402, "PAYMENT_DECLINED"),
        ("pay", 409, "INVALID_STATUS"),
        ("read", 404, "NOT_FOUND"),
    ] {
        let mut report = sound_report();
        report
            .answers
            .push(answer(action, Some(status), Some(code), 1));
        assert_eq!(
            report.reasons(),
            [format!(
                "undocumented answers for a load run: {action} {status} {code} ×1"
            )]
        );
    }
    for expected in [
        answer("purchase", Some(409), Some("INSUFFICIENT_TICKETS"), 1),
        answer("purchase", Some(429), Some("RATE_LIMITED"), 1),
        answer("pay", Some(429), Some("RATE_LIMITED"), 1),
        answer("read", Some(200), None, 1),
    ] {
        assert!(expected.is_expected(), "{expected:?}");
    }
}

#[test]
fn a_paid_hold_not_purchased_makes_a_run_unsound() {
    let mut report = sound_report();
    let read_back = ReadBack {
        paid_checked: 2,
        paid_not_purchased: 1,
        ..read_back(6)
    };
    report.verification = Some(Verification::new(COUNTS, 6, read_back));
    assert_eq!(
        report.reasons(),
        ["1 of 2 paid allocations not read back purchased"]
    );
}

#[test]
fn a_missing_allocation_makes_a_run_unsound() {
    let mut report = sound_report();
    let read_back = ReadBack {
        missing: 1,
        ..read_back(5)
    };
    report.verification = Some(Verification::new(COUNTS, 6, read_back));
    assert_eq!(
        report.reasons(),
        ["1 of 6 granted allocations not read back"]
    );
}

#[test]
fn more_held_than_the_event_counts_is_oversold_on_any_event() {
    // An existing event (--event-id) whose counts say 6 tickets are out while the run
    // alone holds 7 of them: oversold, though 7 granted is within the total.
    let verification = Verification::new(COUNTS, 7, read_back(7));
    assert!(verification.oversold);
    // Granted beyond held (a hold lapsed before the read-back) is not.
    assert!(!Verification::new(COUNTS, 7, read_back(6)).oversold);
}

#[test]
fn counts_that_do_not_add_up_are_oversold() {
    for counts in [
        EventCounts {
            available: 5,
            ..COUNTS
        },
        EventCounts {
            available: -1,
            reserved: 9,
            ..COUNTS
        },
    ] {
        assert!(Verification::new(counts, 0, ReadBack::default()).oversold);
    }
    assert!(Verification::new(COUNTS, 11, ReadBack::default()).oversold);
}

#[test]
fn latency_percentiles_come_from_the_samples_given() {
    let l = latency(&[1_000, 2_000, 3_000, 4_000]);
    assert_eq!((l.p50, l.p90, l.max, l.mean), (2.0, 4.0, 4.0, 2.5));
    assert_eq!(latency(&[]).max, 0.0);
}
