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
        tickets_reserved: 6,
        tickets_per_second: 6.0,
        orders_mispriced: 0,
        mispriced_examples: Vec::new(),
        payments_succeeded: 2,
        payments_per_second: 2.0,
        pay_latency_ms: Latency::default(),
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
        steps: Vec::new(),
        journey: None,
        streams: None,
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
                "answers a load run should not get: {action} {status} {code} ×1"
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
fn an_allocation_that_could_not_be_read_is_unverified_not_missing() {
    // One of six holds never read (its reads answered 503): its tickets are not counted
    // held, and it is not counted missing.
    let mut report = sound_report();
    let read_back = ReadBack {
        unverified: 1,
        ..read_back(5)
    };
    let mut verification = Verification::new(COUNTS, 6, read_back);
    verification.unverified_examples = vec!["a1: 503 Service Unavailable".into()];
    assert!(!verification.oversold);
    assert_eq!(verification.allocations_missing, 0);
    assert_eq!(verification.allocations_unverified, 1);
    report.verification = Some(verification);
    let reasons = report.reasons();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].starts_with("verification incomplete: 1 of 6 granted allocations could not"),
        "{reasons:?}"
    );
    assert!(
        reasons[0].ends_with("a1: 503 Service Unavailable"),
        "{reasons:?}"
    );
    assert!(report.incomplete_only());
    assert!(
        render(&report).contains("allocations read back 5/6 (missing 0, could not verify 1)"),
        "{}",
        render(&report)
    );
    // Beside a loss it is no longer the only fault.
    report.verification.as_mut().unwrap().allocations_missing = 1;
    assert_eq!(report.reasons().len(), 2);
    assert!(!report.incomplete_only());
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
fn a_storm_whose_holds_were_given_back_may_be_granted_them_again() {
    // 14 granted of 10 tickets, 6 held, 8 read back expired: a correct server whose holds
    // lapsed and were sold again (finding 1 of the tool's probe).
    let lapsed = ReadBack {
        tickets_released: 8,
        ..read_back(6)
    };
    let verification = Verification::new(COUNTS, 14, lapsed);
    assert!(!verification.oversold, "{verification:#?}");
    assert_eq!(verification.tickets_released, 8);
    // Nothing given back: more granted than exist is still an oversell.
    assert!(Verification::new(COUNTS, 14, read_back(6)).oversold);
    // Given back or not, more held than the event counts is one, and so are counts that do
    // not add up.
    assert!(
        Verification::new(
            COUNTS,
            14,
            ReadBack {
                tickets_released: 7,
                ..read_back(7)
            }
        )
        .oversold
    );
    let skewed = EventCounts {
        available: 5,
        ..COUNTS
    };
    assert!(Verification::new(skewed, 14, lapsed).oversold);
    // A quota of the storm is judged the same way: 80 + 41 granted of 100, none held beyond.
    let verification = Verification::new(COUNTS, 14, lapsed).with_quotas(
        vec![quota(0, 90, 10)],
        by_type(80, 41, 0),
        by_type(0, 0, 0),
    );
    assert!(!verification.quotas[0].overfull, "{verification:#?}");
    let verification = Verification::new(COUNTS, 14, read_back(6)).with_quotas(
        vec![quota(0, 90, 10)],
        by_type(80, 41, 0),
        by_type(0, 0, 0),
    );
    assert!(verification.quotas[0].overfull, "{verification:#?}");
}

#[test]
fn a_hold_lapsed_before_its_expires_at_is_a_lost_acknowledgement() {
    let at = |text: &str| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    };
    let told = "2026-12-02T10:10:00Z";
    let later = at("2026-12-02T10:20:00Z");
    // Lapsed ten minutes early by the server's own record: early, whenever it was read.
    assert!(lapsed_early(told, Some("2026-12-02T10:00:00Z"), later));
    // On time, or within the tolerance of the two clocks: not early.
    assert!(!lapsed_early(told, Some("2026-12-02T10:10:00.2Z"), later));
    assert!(!lapsed_early(told, Some("2026-12-02T10:09:59.5Z"), later));
    assert!(lapsed_early(told, Some("2026-12-02T10:09:58.9Z"), later));
    // No expiredAt: it lapsed at the latest when read; read after its expiresAt, it may
    // have been on time.
    assert!(!lapsed_early(told, None, later));
    assert!(lapsed_early(told, None, at("2026-12-02T10:05:00Z")));
    // Nothing told, nothing to hold the server to.
    assert!(!lapsed_early(
        "not a time",
        Some("2026-12-02T10:00:00Z"),
        later
    ));
}

#[test]
fn holds_lapsed_early_make_the_run_unsound() {
    let mut report = sound_report();
    let verification = report.verification.as_mut().unwrap();
    verification.expired_early = 2;
    verification.expired_early_examples = vec!["a: expiresAt x, expired y".into()];
    assert_eq!(
        report.reasons(),
        [
            "2 holds read back expired before the expiresAt their 201 named (lost acknowledgements): a: expiresAt x, expired y"
        ]
    );
    assert!(render(&report).contains("expired early    2 holds"));
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

/// Q2 of the overlap layout on 150 tickets: types A and B, 100 tickets.
fn quota(available: i64, reserved: i64, purchased: i64) -> QuotaCounts {
    QuotaCounts {
        id: "q2".into(),
        name: "Q2".into(),
        size: 100,
        available,
        reserved,
        purchased,
        ticket_type_ids: vec!["A".into(), "B".into()],
    }
}

fn by_type(a: i64, b: i64, c: i64) -> BTreeMap<String, i64> {
    [("A".into(), a), ("B".into(), b), ("C".into(), c)].into()
}

#[test]
fn a_quota_counts_the_tickets_of_its_types_only() {
    // 30 of A and 50 of B are its own; the 40 of C count against the event alone.
    let check = QuotaCheck::new(
        quota(20, 60, 20),
        &by_type(30, 50, 40),
        &by_type(30, 50, 40),
    );
    assert_eq!((check.tickets_granted, check.tickets_held), (80, 80));
    assert!(!check.overfull, "{check:?}");
    // A lapsed hold (granted, no longer held) is no oversell either.
    let check = QuotaCheck::new(quota(25, 55, 20), &by_type(30, 50, 0), &by_type(25, 50, 0));
    assert!(!check.overfull, "{check:?}");
}

#[test]
fn a_quota_over_its_size_is_oversold() {
    let granted = by_type(10, 10, 0);
    for counts in [
        // Counts that do not add up to the size.
        quota(10, 80, 20),
        // A count below zero that does.
        quota(-1, 81, 20),
        quota(101, -1, 0),
    ] {
        let check = QuotaCheck::new(counts.clone(), &granted, &granted);
        assert!(check.overfull, "{counts:?}");
    }
    // More of its types granted than it holds, or held than it counts.
    assert!(QuotaCheck::new(quota(0, 90, 10), &by_type(60, 41, 0), &by_type(0, 0, 0)).overfull);
    assert!(QuotaCheck::new(quota(80, 10, 10), &by_type(15, 6, 0), &by_type(15, 6, 0)).overfull);
}

#[test]
fn an_oversold_quota_makes_a_run_unsound() {
    let mut report = sound_report();
    let verification = Verification::new(COUNTS, 6, read_back(6)).with_quotas(
        vec![quota(0, 90, 10), quota(10, 80, 20)],
        by_type(3, 3, 0),
        by_type(3, 3, 0),
    );
    assert_eq!(verification.granted_by_type["A"], 3);
    report.verification = Some(verification);
    assert_eq!(
        report.reasons(),
        [
            "quota Q2 oversold: size 100 available 10 reserved 80 purchased 20, granted 6 of which held 6"
        ]
    );
}

#[test]
fn a_mispriced_order_makes_a_run_unsound() {
    let mut report = sound_report();
    report.orders_mispriced = 2;
    report.mispriced_examples = vec![
        "a1: total Some(10) is not the sum of the amounts 12".into(),
        "a2: no lines".into(),
    ];
    assert_eq!(
        report.reasons(),
        [
            "2 orders not held as asked or priced wrong: a1: total Some(10) is not the sum of the amounts 12, a2: no lines"
        ]
    );
    assert!(render(&report).contains("mispriced        2 orders"));
}

/// A journey run whose holds came back: 14 granted of 10 tickets, 6 still held.
fn journey_report() -> Report {
    let mut report = sound_report();
    report.journey = Some(JourneySummary::default());
    report.verification = Some(Verification::new(COUNTS, 14, read_back(6)).with_releases());
    report.answers.extend([
        answer("decline", Some(402), Some("PAYMENT_DECLINED"), 2),
        answer("pay", Some(410), Some("RESERVATION_EXPIRED"), 1),
        answer("decline", Some(410), Some("RESERVATION_EXPIRED"), 1),
        answer("cancel", Some(200), None, 3),
        answer("cancel", Some(409), Some("INVALID_STATUS"), 1),
        answer("watch", Some(200), None, 4),
    ]);
    report
}

#[test]
fn a_journey_run_may_grant_returned_tickets_again() {
    assert!(Verification::new(COUNTS, 14, read_back(6)).oversold);
    assert_eq!(journey_report().reasons(), Vec::<String>::new());
    // Everything else still counts: held beyond the counts, counts that do not add up.
    assert!(
        Verification::new(COUNTS, 14, read_back(7))
            .with_releases()
            .oversold
    );
    let skewed = EventCounts {
        available: 5,
        ..COUNTS
    };
    assert!(
        Verification::new(skewed, 0, ReadBack::default())
            .with_releases()
            .oversold
    );
    let verification = Verification::new(COUNTS, 14, read_back(6))
        .with_quotas(vec![quota(0, 90, 10)], by_type(80, 41, 0), by_type(0, 0, 0))
        .with_releases();
    assert!(!verification.quotas[0].overfull);
    let verification = Verification::new(COUNTS, 14, read_back(6))
        .with_quotas(vec![quota(0, 80, 10)], by_type(80, 41, 0), by_type(0, 0, 0))
        .with_releases();
    assert!(verification.quotas[0].overfull);
}

#[test]
fn the_journeys_answers_are_expected_only_in_a_journey_run() {
    let mut storm = journey_report();
    storm.journey = None;
    storm.verification = Some(Verification::new(COUNTS, 6, read_back(6)));
    assert_eq!(
        storm.reasons(),
        [
            "answers a load run should not get: decline 402 PAYMENT_DECLINED ×2, pay 410 RESERVATION_EXPIRED ×1, decline 410 RESERVATION_EXPIRED ×1, cancel 200 ×3, cancel 409 INVALID_STATUS ×1, watch 200 ×4"
        ]
    );
    for (action, status, code) in [
        ("pay", 402, "PAYMENT_DECLINED"),
        ("decline", 200, ""),
        ("cancel", 403, "FINGERPRINT_MISMATCH"),
        ("watch", 404, "NOT_FOUND"),
        ("decline", 409, "INVALID_STATUS"),
    ] {
        let unexpected = answer(
            action,
            Some(status),
            Some(code).filter(|c| !c.is_empty()),
            1,
        );
        assert!(!unexpected.is_expected_in_journey(), "{unexpected:?}");
    }
}

#[test]
fn a_hold_read_back_in_another_status_than_told_makes_a_run_unsound() {
    let mut report = journey_report();
    let read_back = ReadBack {
        statuses_checked: 4,
        wrong_status: 1,
        ..read_back(6)
    };
    let mut verification = Verification::new(COUNTS, 14, read_back).with_releases();
    verification.wrong_status_examples = vec!["a1: told cancelled, read reserved".into()];
    report.verification = Some(verification);
    assert_eq!(
        report.reasons(),
        ["1 of 4 allocations not read back in the status told: a1: told cancelled, read reserved"]
    );
}

fn rows(a: (i64, i64), b: (i64, i64), c: (i64, i64)) -> BTreeMap<String, (i64, i64)> {
    [("A".into(), a), ("B".into(), b), ("C".into(), c)].into()
}

#[test]
fn counts_are_compared_with_the_rows_of_their_types() {
    let event = EventCounts {
        total: 150,
        available: 40,
        reserved: 70,
        purchased: 40,
    };
    let agreeing = RowCheck::new(
        1,
        true,
        &event,
        &[quota(40, 50, 10)],
        &rows((30, 5), (20, 5), (20, 30)),
    );
    assert!(agreeing.agrees, "{agreeing:?}");
    assert_eq!((agreeing.rows_reserved, agreeing.rows_purchased), (70, 40));
    // The event's counts off by one ticket from its rows.
    let off = RowCheck::new(1, true, &event, &[], &rows((30, 5), (20, 5), (21, 30)));
    assert!(!off.agrees);
    // A quota that counts a ticket its types' rows do not have.
    let quota_off = RowCheck::new(
        1,
        true,
        &event,
        &[quota(39, 51, 10)],
        &rows((30, 5), (20, 5), (20, 30)),
    );
    assert_eq!(
        quota_off.quota_mismatches,
        ["Q2: reserved 51 purchased 10, rows 50 and 10"]
    );
    assert!(!quota_off.agrees);
    // Never a quiet moment: nothing could be compared.
    let restless = RowCheck::new(20, false, &event, &[], &rows((30, 5), (20, 5), (20, 30)));
    assert!(!restless.agrees);

    let mut report = journey_report();
    let mut verification = report.verification.clone().unwrap();
    verification.rows = Some(quota_off);
    report.verification = Some(verification.clone());
    assert_eq!(
        report.reasons(),
        [
            "counts disagree with the rows: event reserved 70 purchased 40, rows 70 and 40; quota Q2: reserved 51 purchased 10, rows 50 and 10"
        ]
    );
    verification.rows = Some(restless);
    report.verification = Some(verification);
    assert_eq!(
        report.reasons(),
        ["counts never held still around the sales report in 20 reads"]
    );
}

fn unread(what: Unreadable, answered: bool) -> Unread {
    Unread {
        what,
        error: "reading the event back: no answer".into(),
        answered,
    }
}

#[test]
fn counts_that_could_not_be_read_are_not_judged_and_the_run_is_incomplete() {
    // Released holds would judge the counts again (`with_releases`): on counts never read,
    // they must not, though 6 tickets held is above the 0 reported in their place.
    let released = ReadBack {
        tickets_released: 2,
        ..read_back(6)
    };
    let verification = Verification::without_counts(8, released, unread(Unreadable::Event, false))
        .with_quotas(Vec::new(), BTreeMap::new(), BTreeMap::new())
        .with_releases();
    assert!(!verification.oversold, "{verification:#?}");
    assert!(!verification.counts_read());
    let mut report = sound_report();
    report.verification = Some(verification);
    let reasons = report.reasons();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].starts_with("verification incomplete: the event's counts could not be read"),
        "{reasons:?}"
    );
    assert!(report.incomplete_only());
    assert!(!report.is_sound());
    let text = render(&report);
    assert!(
        text.contains("event counts     the event's counts could not be read"),
        "{text}"
    );
    assert!(text.contains("oversold: not judged"), "{text}");
    // The holds read back are still judged: one paid hold not purchased is a fault.
    report.verification.as_mut().unwrap().paid_not_purchased = 1;
    assert!(!report.incomplete_only());
}

#[test]
fn each_read_left_undone_is_incomplete_and_one_answered_otherwise_is_a_fault() {
    let mut report = sound_report();
    let verification = report.verification.take().unwrap();
    report.verification = Some(
        verification
            .with_unread(unread(Unreadable::Quotas, false))
            .with_unread(unread(Unreadable::Rows, false)),
    );
    assert_eq!(report.reasons().len(), 2, "{:?}", report.reasons());
    assert!(report.incomplete_only());
    assert!(render(&report).contains("rows             the row check could not be made"));
    let v = report.verification.as_mut().unwrap();
    v.unread[0].answered = true;
    let reasons = report.reasons();
    assert!(
        reasons[0].starts_with("the quotas could not be read: "),
        "{reasons:?}"
    );
    assert!(!report.incomplete_only());
}

#[test]
fn the_payments_latency_is_labelled_as_every_payment_answered() {
    // `pay_latency_ms` times every payment answered, 410s and declines included: the line
    // must not read as the successes' latency.
    let mut report = sound_report();
    report
        .answers
        .push(answer("pay", Some(410), Some("RESERVATION_EXPIRED"), 3));
    let text = render(&report);
    let line = text
        .lines()
        .find(|l| l.starts_with("payments ok"))
        .expect("a payments line");
    assert!(
        line.contains("latency ms of every payment answered, any status: p50"),
        "{line}"
    );
}

#[test]
fn a_rate_below_10_per_second_shows_one_decimal_as_in_the_html() {
    let mut report = sound_report();
    report.requests_per_second = 0.4;
    report.steps = vec![
        Step {
            name: "pay",
            requests: 2,
            per_second: 0.4,
            latency_ms: Latency::default(),
            failed: 0,
            answers: BTreeMap::new(),
            timeline: Vec::new(),
        },
        Step {
            name: "purchase",
            requests: 127,
            per_second: 25.4,
            latency_ms: Latency::default(),
            failed: 0,
            answers: BTreeMap::new(),
            timeline: Vec::new(),
        },
    ];
    let text = render(&report);
    assert!(text.contains("requests         8 (0.4/s)"), "{text}");
    assert!(text.contains("step pay         2 (0.4/s)"), "{text}");
    assert!(text.contains("step purchase    127 (25/s)"), "{text}");
}

#[test]
fn requests_without_an_answer_in_several_steps_are_counted_by_step() {
    let mut report = sound_report();
    report.answers.push(answer("purchase", None, None, 3));
    report.answers.push(answer("pay", None, None, 2));
    assert_eq!(
        report.reasons(),
        ["5 requests got no answer (transport errors): pay 2, purchase 3"]
    );
}

/// A keyed run across an outage ends sound (every call got its final answer), but the
/// attempts sent again say the server failed or was away; none, and the line is left out.
#[test]
fn attempts_sent_again_are_shown_in_a_journey_run() {
    let mut report = journey_report();
    assert!(!render(&report).contains("sent again"));
    if let Some(journey) = report.journey.as_mut() {
        journey.retried = 1797;
    }
    assert!(
        render(&report).contains("1797 attempts sent again while their answer was ambiguous"),
        "{}",
        render(&report)
    );
    assert_eq!(report.reasons(), Vec::<String>::new(), "still sound");
}

#[test]
fn streams_whose_final_counts_could_not_be_read_make_the_run_incomplete_not_lost() {
    let mut report = sound_report();
    report.streams = Some(crate::StreamReport {
        opened: 10,
        final_counts_unread: Some(
            "reading the event back: error sending request: Connection refused".into(),
        ),
        ..crate::StreamReport::default()
    });
    let reasons = report.reasons();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0]
            .starts_with("verification incomplete: the event's final counts could not be read"),
        "{reasons:?}"
    );
    assert!(reasons[0].contains("Connection refused"), "{reasons:?}");
    assert!(report.incomplete_only());
    // Beside a fault of the run, it is not the only reason.
    report.answers.push(answer("purchase", Some(503), None, 1));
    assert!(!report.incomplete_only());
}

#[test]
fn the_servers_connection_cap_is_named_beside_the_requests_it_left_unanswered() {
    let mut report = sound_report();
    report.answers.push(answer(
        "purchase",
        Some(429),
        Some("TOO_MANY_CONNECTIONS"),
        4,
    ));
    report.answers.push(answer("purchase", None, None, 732));
    let reasons = report.reasons();
    assert!(
        reasons.contains(&"732 requests got no answer (transport errors)".to_owned()),
        "{reasons:?}"
    );
    let cap = reasons
        .iter()
        .find(|r| r.starts_with("the server's per-address connection cap was reached: 4 answers"))
        .unwrap_or_else(|| panic!("no reason names the cap: {reasons:?}"));
    for flag in [
        "--max-connections-per-address",
        "--clients",
        "--max-in-flight",
        "--stream-sources",
    ] {
        assert!(cap.contains(flag), "{cap}");
    }
    // A rate limit's 429 is not the cap.
    let mut limited = sound_report();
    limited
        .answers
        .push(answer("purchase", Some(429), Some("RATE_LIMITED"), 4));
    assert_eq!(limited.reasons(), Vec::<String>::new());
}

#[test]
fn the_open_model_labels_its_connection_bound_as_max_in_flight() {
    let mut report = journey_report();
    report.clients = 10_000;
    let closed = render(&report);
    assert!(closed.contains("clients          10000\n"), "{closed}");
    if let Some(journey) = report.journey.as_mut() {
        journey.model = "open";
    }
    let open = render(&report);
    assert!(open.contains("max in flight    10000\n"), "{open}");
    assert!(!open.contains("clients "), "{open}");
}

#[test]
fn buyers_asked_for_no_payment_are_held_only_not_abandoned() {
    let mut report = journey_report();
    if let Some(journey) = report.journey.as_mut() {
        (journey.held, journey.held_only) = (200, 200);
    }
    let text = render(&report);
    let line = text
        .lines()
        .find(|l| l.starts_with("journey "))
        .expect("a journey line");
    assert!(
        line.contains("chose 0 pay, 0 declining card, 0 cancel, 0 abandon, 200 held only (no payment asked: no --pay);"),
        "{line}"
    );
    if let Some(journey) = report.journey.as_mut() {
        (journey.held_only, journey.paid) = (0, 200);
    }
    assert!(
        !render(&report).contains("held only"),
        "{}",
        render(&report)
    );
}

#[test]
fn the_verification_line_names_every_part_of_the_tickets_granted() {
    let read_back = ReadBack {
        checked: 180,
        missing: 0,
        unverified: 0,
        tickets_held: 300,
        tickets_released: 52,
        tickets_refunded: 58,
        ..ReadBack::default()
    };
    let counts = EventCounts {
        total: 1000,
        available: 700,
        reserved: 100,
        purchased: 200,
    };
    let mut report = journey_report();
    report.verification = Some(Verification::new(counts, 410, read_back).with_releases());
    let text = render(&report);
    assert!(
        text.contains(
            "verification     tickets granted 410 (held 300, given back 52, refunded 58, not read back 0);"
        ),
        "{text}"
    );
    // Unread allocations' tickets are a part of their own; a status the API lacks shows.
    let read_back = ReadBack {
        unverified: 2,
        tickets_not_read_back: 5,
        ..read_back
    };
    let v = Verification::new(counts, 420, read_back).with_releases();
    assert_eq!(
        v.granted_parts(),
        "held 300, given back 52, refunded 58, not read back 5, in another status 5"
    );
}
