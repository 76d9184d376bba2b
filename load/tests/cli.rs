//! The binary's own answers to flags it refuses before anything is sent: no server needed.

use std::process::{Command, Output};

fn load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_boxoffice-load"))
        // Nothing listens there: a refusal must come before any request.
        .args(["--url", "http://127.0.0.1:9"])
        .args(args)
        .output()
        .expect("the tool runs")
}

#[test]
fn event_id_conflicts_exit_1_with_the_tools_own_prefix() {
    let out = load(&[
        "--event-id",
        "7d4c3c1e-1b5f-4e58-9a59-3f4f0b1e2a6d",
        "--tickets",
        "5",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("boxoffice-load: --tickets shapes the event"),
        "{stderr}"
    );
}

#[test]
fn an_event_id_that_is_not_a_uuid_exits_1_naming_the_flag() {
    let out = load(&["--event-id", "not-a-uuid"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--event-id"), "{stderr}");
    assert!(stderr.contains("not-a-uuid"), "{stderr}");
}

#[test]
fn a_think_time_out_of_range_exits_1_naming_the_flag_and_the_bad_part() {
    for (think, part) in [
        ("--think-ms=-5", "the lower bound \"\""),
        ("--think-ms=99999999999", "\"99999999999\""),
        ("--think-ms=0-18446744073709551615", "the upper bound"),
    ] {
        let out = load(&[think]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("--think-ms"), "{stderr}");
        assert!(stderr.contains(part), "{think}: {stderr}");
    }
}

#[test]
fn a_flag_without_the_one_it_needs_exits_1_naming_both() {
    let out = load(&["--max-in-flight", "10"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("--arrival-rate"), "{stderr}");
    assert!(stderr.contains("--max-in-flight"), "{stderr}");
}

#[test]
fn a_sales_flag_beside_scan_exits_1_before_anything_is_sent() {
    let out = load(&["--scan", "--admin-token", "t", "--tickets", "5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("boxoffice-load: --tickets belongs to a sale"),
        "{stderr}"
    );
}

#[test]
fn a_report_and_charts_at_one_path_exit_1_before_the_run() {
    let path = std::env::temp_dir().join(format!("boxoffice-load-cli-same-{}", std::process::id()));
    let path = path.to_str().expect("a UTF-8 path");
    let out = load(&["--report", path, "--charts-dir", path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("boxoffice-load: --report and --charts-dir"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(path);
}
