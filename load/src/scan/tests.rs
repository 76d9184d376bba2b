use super::*;

fn scan(code: u64, status: Option<u16>, error_code: Option<&str>) -> Scanned {
    Scanned {
        code,
        status,
        error_code: error_code.map(str::to_owned),
        latency_us: 1_000,
    }
}

fn judged(scanned: Vec<Scanned>, stats_admitted: i64) -> ScanReport {
    judge("e".into(), 2, 2, 0.1, 1.0, scanned, stats_admitted)
}

#[test]
fn each_code_admitted_once_and_counted_is_sound() {
    let report = judged(
        vec![
            scan(0, Some(200), None),
            scan(1, Some(200), None),
            scan(0, Some(409), Some("ALREADY_CHECKED_IN")),
        ],
        2,
    );
    assert!(report.sound, "{:?}", report.verdict);
    assert_eq!(
        (report.admitted, report.duplicates, report.scans),
        (2, 1, 3)
    );
    assert_eq!(report.scans_per_second, 3.0);
}

#[test]
fn a_code_admitted_twice_is_not_sound() {
    let report = judged(vec![scan(0, Some(200), None), scan(0, Some(200), None)], 2);
    assert_eq!(report.admitted_twice, 1);
    assert!(!report.sound);
    assert!(
        report.verdict[0].contains("admitted twice"),
        "{:?}",
        report.verdict
    );
}

#[test]
fn a_code_never_admitted_is_not_sound() {
    let report = judged(
        vec![
            scan(0, Some(200), None),
            scan(1, Some(409), Some("ALREADY_CHECKED_IN")),
        ],
        1,
    );
    assert_eq!(report.never_admitted, 1);
    assert!(!report.sound);
}

#[test]
fn failures_unexpected_answers_and_a_wrong_count_are_not_sound() {
    let failed = judged(vec![scan(0, Some(200), None), scan(1, None, None)], 1);
    assert_eq!(failed.failed, 1);
    assert!(
        failed.verdict.iter().any(|r| r.contains("failed")),
        "{:?}",
        failed.verdict
    );

    let unexpected = judged(
        vec![
            scan(0, Some(200), None),
            scan(0, Some(409), Some("TICKET_REVOKED")),
        ],
        1,
    );
    assert!(!unexpected.sound);
    assert!(unexpected.verdict.iter().any(|r| r.contains("unexpected")));

    let miscounted = judged(vec![scan(0, Some(200), None)], 2);
    assert!(!miscounted.sound);
    assert!(miscounted.verdict.iter().any(|r| r.contains("statistics")));
}

/// A scan that failed (no answer, a 5xx) is one reason, not also an unexpected answer.
#[test]
fn a_failed_scan_is_counted_once_not_also_as_unexpected() {
    let report = judged(
        vec![
            scan(0, Some(200), None),
            scan(1, None, None),
            scan(1, Some(503), Some("SERVICE_UNAVAILABLE")),
            scan(1, Some(200), None),
        ],
        2,
    );
    assert_eq!(report.verdict, ["2 scans failed (5xx or no answer)"]);
}
