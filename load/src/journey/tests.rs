use super::*;

#[test]
fn think_times_parse_and_stay_in_their_bounds() {
    assert_eq!("200".parse::<Think>(), Ok(Think::Fixed(200)));
    assert_eq!("100-2000".parse::<Think>(), Ok(Think::Uniform(100, 2000)));
    assert_eq!("exp:500".parse::<Think>(), Ok(Think::Exponential(500.0)));
    for wrong in ["", "-5", "2000-100", "exp:0", "exp:x", "1.5", "a-b"] {
        assert!(wrong.parse::<Think>().is_err(), "{wrong}");
    }
    for think in ["200", "100-2000", "exp:500"] {
        assert_eq!(think.parse::<Think>().unwrap().to_string(), think);
    }
    assert_eq!(Think::Fixed(200).sample(7), Duration::from_millis(200));
    let uniform: Vec<Duration> = (0..2_000)
        .map(|k| Think::Uniform(100, 2000).sample(k))
        .collect();
    assert!(
        uniform
            .iter()
            .all(|d| (100..=2001).contains(&d.as_millis()))
    );
    let mean = uniform.iter().map(Duration::as_secs_f64).sum::<f64>() / 2_000.0;
    assert!((0.95..1.15).contains(&mean), "{mean}");
    let exp: Vec<f64> = (0..2_000)
        .map(|k| Think::Exponential(500.0).sample(k).as_secs_f64())
        .collect();
    assert!(exp.iter().all(|s| *s <= 5.0));
    let mean = exp.iter().sum::<f64>() / 2_000.0;
    assert!((0.43..0.57).contains(&mean), "{mean}");
}

#[test]
fn fates_follow_the_shares() {
    let journey = Journey {
        abandon_share: 0.1,
        cancel_share: 0.2,
        decline_share: 0.3,
        watch_share: 0.25,
        ..Journey::default()
    };
    let count = |pay: bool, fate: Fate| {
        (0..10_000)
            .filter(|&k| journey.fate(k, pay) == fate)
            .count()
    };
    for (fate, share) in [
        (Fate::Abandon, 0.1),
        (Fate::Cancel, 0.2),
        (Fate::Decline, 0.3),
        (Fate::Pay, 0.4),
    ] {
        let n = count(true, fate) as f64 / 10_000.0;
        assert!((n - share).abs() < 0.02, "{fate:?}: {n}");
    }
    // Without --pay the rest keep their hold, asked for no payment: none abandons it.
    assert_eq!(count(false, Fate::Pay), 0);
    assert_eq!(count(false, Fate::Keep), count(true, Fate::Pay));
    assert_eq!(count(false, Fate::Abandon), count(true, Fate::Abandon));
    assert_eq!(count(true, Fate::Keep), 0);
    let no_shares = Journey::default();
    assert!((0..1_000).all(|k| no_shares.fate(k, false) == Fate::Keep));
    assert_eq!(
        count(false, Fate::Abandon) + count(false, Fate::Keep),
        count(true, Fate::Abandon) + count(true, Fate::Pay)
    );
    let watchers = (0..10_000).filter(|&k| journey.watches(k)).count() as f64 / 10_000.0;
    assert!((watchers - 0.25).abs() < 0.02, "{watchers}");
    assert!(!Journey::default().is_active());
    assert!(journey.is_active());
}

#[test]
fn arrivals_are_spaced_by_the_rate_after_the_spike() {
    let journey = Journey {
        arrival_rate: Some(100.0),
        spike_rate: Some(1_000.0),
        spike_seconds: 0.5,
        ..Journey::default()
    };
    let at = |k| journey.arrival(k).unwrap().as_secs_f64();
    // 500 buyers in the half-second spike, one per millisecond, then one per 10 ms.
    assert!((at(1) - 0.001).abs() < 1e-9);
    assert!((at(499) - 0.499).abs() < 1e-9);
    assert!((at(500) - 0.5).abs() < 1e-9);
    assert!((at(510) - 0.6).abs() < 1e-9);
    let steady = Journey {
        arrival_rate: Some(50.0),
        ..Journey::default()
    };
    assert!((steady.arrival(100).unwrap().as_secs_f64() - 2.0).abs() < 1e-9);
    assert_eq!(Journey::default().arrival(3), None);
}

#[test]
fn shares_above_one_are_refused() {
    let journey = Journey {
        abandon_share: 0.5,
        cancel_share: 0.3,
        decline_share: 0.3,
        ..Journey::default()
    };
    assert!(journey.validate().is_err());
    assert!(share("1.2").is_err() && share("-0.1").is_err() && share("0.4").is_ok());
    assert!(flags::rate("0").is_err() && flags::rate("2.5").is_ok());
}

fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status: Some(StatusCode::from_u16(status).unwrap()),
        body,
    }
}

#[test]
fn what_a_buyer_was_told_is_what_must_read_back() {
    let expired = Some(Expect::Told("expired".into()));
    let cases = [
        (
            Fate::Pay,
            Some(answer(200, json!({"status": "purchased"}))),
            Some(Expect::Purchased),
        ),
        (
            Fate::Pay,
            Some(answer(410, json!({"code": "RESERVATION_EXPIRED"}))),
            expired.clone(),
        ),
        (
            Fate::Decline,
            Some(answer(402, json!({"code": "PAYMENT_DECLINED"}))),
            Some(Expect::HeldOrExpired),
        ),
        (
            Fate::Decline,
            Some(answer(410, json!({"code": "RESERVATION_EXPIRED"}))),
            expired.clone(),
        ),
        (
            Fate::Cancel,
            Some(answer(200, json!({"status": "cancelled"}))),
            Some(Expect::Told("cancelled".into())),
        ),
        (
            Fate::Cancel,
            Some(answer(
                409,
                json!({"code": "INVALID_STATUS", "status": "expired"}),
            )),
            expired,
        ),
        (Fate::Abandon, None, Some(Expect::HeldOrExpired)),
        (
            Fate::Pay,
            Some(answer(503, json!({"code": "SERVICE_UNAVAILABLE"}))),
            None,
        ),
    ];
    for (fate, answer, expect) in cases {
        assert_eq!(expectation(fate, answer.as_ref()), expect, "{fate:?}");
    }
    assert!(Expect::HeldOrExpired.allows("reserved") && Expect::HeldOrExpired.allows("expired"));
    assert!(
        !Expect::HeldOrExpired.allows("purchased")
            && !Expect::HeldOrExpired.allows("payment_pending")
    );
    assert!(!Expect::Told("cancelled".into()).allows("reserved"));
    assert!(!Expect::Purchased.allows("reserved"));
}

#[test]
fn refunds_check_ins_and_waiting_follow_their_shares() {
    let journey = Journey {
        abandon_share: 0.1,
        refund_share: 0.2,
        checkin_share: 0.3,
        waiting_list_share: 0.4,
        admin_token: Some("organiser".into()),
        ..Journey::default()
    };
    let share_of = |fate: Fate| {
        (0..10_000)
            .filter(|&k| journey.fate(k, true) == fate)
            .count() as f64
            / 10_000.0
    };
    for (fate, share) in [
        (Fate::Abandon, 0.1),
        (Fate::Refund, 0.2),
        (Fate::CheckIn, 0.3),
        (Fate::Pay, 0.4),
    ] {
        let n = share_of(fate);
        assert!((n - share).abs() < 0.02, "{fate:?}: {n}");
    }
    let waiting = (0..10_000).filter(|&k| journey.waits(k)).count() as f64 / 10_000.0;
    assert!((waiting - 0.4).abs() < 0.02, "{waiting}");
    assert!(journey.is_active());
    assert!(
        Journey {
            waiting_list_share: 0.1,
            ..Journey::default()
        }
        .is_active()
    );
    // Refunds and check-ins count against the buyers' shares like the other fates.
    let too_many = Journey {
        refund_share: 0.6,
        checkin_share: 0.5,
        ..Journey::default()
    };
    assert!(too_many.validate().is_err());
    let negative_wait = Journey {
        offer_wait_seconds: -1.0,
        ..Journey::default()
    };
    assert!(negative_wait.validate().is_err());
}

#[test]
fn a_refund_without_a_certain_answer_allows_either_status() {
    let either = Expect::PurchasedOrRefunded;
    assert!(either.allows("purchased") && either.allows("refunded"));
    assert!(!either.allows("reserved") && !either.allows("cancelled"));
}

#[test]
fn a_spike_needs_its_length() {
    let spike = Journey {
        arrival_rate: Some(20.0),
        spike_rate: Some(200.0),
        ..Journey::default()
    };
    let err = spike.validate().unwrap_err();
    assert!(
        err.starts_with("--spike-rate needs --spike-seconds"),
        "{err}"
    );
    let spike = Journey {
        spike_seconds: 1.0,
        ..spike
    };
    assert_eq!(spike.validate(), Ok(()));
}

#[test]
fn every_payment_answered_200_must_read_back_purchased() {
    // The refund and check-in fates pay too: their payment's 200 is checked like any other
    // (a refund's answer then says what the order must read back as).
    let fates = [
        Fate::Pay,
        Fate::Decline,
        Fate::Cancel,
        Fate::Abandon,
        Fate::Refund,
        Fate::CheckIn,
    ];
    let paid = answer(200, json!({"status": "purchased"}));
    for fate in fates.into_iter().filter(|f| f.pays()) {
        assert_eq!(
            expectation(fate, Some(&paid)),
            Some(Expect::Purchased),
            "{fate:?}"
        );
    }
    assert!(!Fate::Cancel.pays() && !Fate::Abandon.pays());
}

#[test]
fn a_ticket_admitted_at_the_door_must_read_back_checked_in() {
    let admitted = Expect::CheckedIn("a1".into());
    let body = |status: &str| json!({"status": "purchased", "admissions": [{"id": "a1", "status": status}]});
    assert!(admitted.allows("purchased") && !admitted.allows("refunded"));
    assert_eq!(
        admission_status(&body("checked_in"), "a1"),
        Some("checked_in")
    );
    assert_eq!(admission_status(&body("valid"), "a1"), Some("valid"));
    assert_eq!(admission_status(&body("valid"), "a2"), None);
}

#[test]
fn think_times_are_bounded_by_a_year_and_their_errors_name_the_bad_part() {
    let year_ms = (flags::MAX_SECONDS * 1000.0) as u64;
    assert_eq!(
        year_ms.to_string().parse::<Think>(),
        Ok(Think::Fixed(year_ms))
    );
    for beyond in [
        "99999999999".to_owned(),
        format!("0-{}", u64::MAX),
        format!("0-{}", year_ms + 1),
        // Its draws are cut at ten times the mean: that must be within a year too.
        format!("exp:{}", year_ms / 10 + 1),
    ] {
        let err = beyond.parse::<Think>().unwrap_err();
        assert!(err.contains("a year"), "{beyond}: {err}");
    }
    // A range's draw stays within its bounds at the top of the range.
    let top = Think::Uniform(0, year_ms);
    assert!((0..1_000).all(|k| top.sample(k) <= Duration::from_millis(year_ms + 1)));
    let err = "-5".parse::<Think>().unwrap_err();
    assert!(err.contains("lower bound \"\""), "{err}");
    let err = "5-x".parse::<Think>().unwrap_err();
    assert!(err.contains("upper bound \"x\""), "{err}");
}

#[test]
fn a_verdict_names_what_was_expected_in_the_api_s_words() {
    for (expect, said) in [
        (Expect::Purchased, "purchased"),
        (Expect::Told("cancelled".into()), "cancelled"),
        (Expect::HeldOrExpired, "reserved or expired"),
        (Expect::PurchasedOrRefunded, "purchased or refunded"),
        (
            Expect::CheckedIn("a1".into()),
            "purchased, admission a1 checked in",
        ),
    ] {
        assert_eq!(expect.to_string(), said);
    }
}

#[test]
fn arrivals_that_cannot_start_within_their_schedule_are_warned_of() {
    let open = |rate: f64, max_in_flight: u32, think: &str| Journey {
        arrival_rate: Some(rate),
        max_in_flight,
        think_ms: think.parse().unwrap(),
        ..Journey::default()
    };
    let second = Some(Duration::from_secs(1));
    // The tester's run: a million arrivals in a second through 200 slots.
    let warning = open(1e6, 200, "0")
        .start_warning(u64::MAX, second)
        .expect("a warning");
    assert!(
        warning.starts_with("--arrival-rate schedules 1000000 arrivals over 1.0 s"),
        "{warning}"
    );
    assert!(warning.contains("--max-in-flight 200"), "{warning}");
    assert!(warning.contains("rough bound"), "{warning}");
    // Think time holds the slots: 100 a second of 1 s each need 100 of them.
    assert!(
        open(100.0, 50, "1000")
            .start_warning(u64::MAX, Some(Duration::from_secs(10)))
            .is_some()
    );
    assert_eq!(
        open(100.0, 200, "1000").start_warning(u64::MAX, Some(Duration::from_secs(10))),
        None
    );
    // The defaults, and --requests bounding the arrivals.
    assert_eq!(
        open(500.0, 10_000, "200-2000").start_warning(u64::MAX, Some(Duration::from_secs(10))),
        None
    );
    assert_eq!(open(1e6, 200, "0").start_warning(100, second), None);
    // The closed model schedules nothing.
    assert_eq!(Journey::default().start_warning(u64::MAX, second), None);
}

#[test]
fn the_arrivals_scheduled_count_the_spike_and_the_rate_after_it() {
    let journey = Journey {
        arrival_rate: Some(10.0),
        spike_rate: Some(100.0),
        spike_seconds: 2.0,
        ..Journey::default()
    };
    // 200 in the spike, then 10 a second for 3 s.
    assert_eq!(
        journey.scheduled(u64::MAX, Some(Duration::from_secs(5))),
        Some(230)
    );
    assert_eq!(
        journey.scheduled(u64::MAX, Some(Duration::from_secs(1))),
        Some(100)
    );
    assert_eq!(journey.scheduled(50, None), Some(50));
    // Each is due before the end, none after.
    let due = |k| journey.arrival(k).unwrap();
    assert!(due(229) < Duration::from_secs(5));
    assert!(due(230) >= Duration::from_secs(5));
}
