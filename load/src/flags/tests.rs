use super::*;

#[test]
fn seconds_out_of_range_are_refused_not_converted() {
    for text in ["-1", "nan", "inf", "-inf", "1e20", "31536001", "x", ""] {
        assert!(seconds(text).is_err(), "{text}");
        assert!(positive_seconds(text).is_err(), "{text}");
    }
    assert_eq!(seconds("0"), Ok(0.0));
    assert!(positive_seconds("0").is_err());
    assert_eq!(positive_seconds("2.5"), Ok(2.5));
    assert_eq!(seconds("31536000"), Ok(MAX_SECONDS));
}

#[test]
fn rates_must_leave_an_arrival_within_a_year() {
    for text in ["0", "-3", "nan", "inf", "1e-20", "1e-8"] {
        assert!(rate(text).is_err(), "{text}");
    }
    assert_eq!(rate("0.5"), Ok(0.5));
    assert_eq!(rate("1e6"), Ok(1e6));
}

#[test]
fn a_duration_out_of_range_is_an_error_naming_the_flag() {
    for value in [-1.0, f64::NAN, f64::INFINITY, 1e20] {
        let err = duration("--retry-seconds", value).unwrap_err();
        assert!(err.starts_with("--retry-seconds must be"), "{err}");
    }
    assert_eq!(duration("--x", 1.5), Ok(Duration::from_millis(1500)));
}

/// The run's flags as the CLI parses them.
#[derive(clap::Parser)]
struct Flags {
    #[command(flatten)]
    config: crate::Config,
    #[command(flatten)]
    journey: crate::Journey,
}

#[test]
fn the_parser_refuses_every_span_that_would_not_convert() {
    use clap::Parser;
    for flags in [
        "--duration=-1",
        "--duration nan",
        "--duration inf",
        "--duration 1e20",
        "--duration 0",
        "--hold-streams-seconds inf",
        "--hold-streams-seconds=-1",
        "--hold-streams-seconds nan",
        "--retry-seconds 1e20",
        "--request-timeout 1e20",
        "--arrival-rate 1e-20",
        "--arrival-rate 20 --spike-rate 1e-20 --spike-seconds 1",
        "--arrival-rate 20 --spike-rate 200 --spike-seconds 1e20",
        "--offer-wait-seconds 1e300",
        "--quantity 0",
        "--quantity=-1",
        "--requests 0",
    ] {
        let argv = std::iter::once("boxoffice-load").chain(flags.split_whitespace());
        let refused = Flags::try_parse_from(argv).err();
        assert!(refused.is_some(), "{flags} was accepted");
    }
    let argv = "boxoffice-load --duration 2.5 --retry-seconds 0 --arrival-rate 0.5";
    let flags = Flags::try_parse_from(argv.split_whitespace()).expect("in range");
    assert_eq!(flags.config.duration, Some(2.5));
}

/// The sale's flags as the CLI parses them, the catalogue's included.
#[derive(clap::Parser)]
struct SaleFlags {
    #[command(flatten)]
    config: crate::Config,
    #[command(flatten)]
    catalogue: crate::Catalogue,
}

/// What [`refuse_with_event_id`] says of `flags`, as the CLI parses them.
fn event_id_check(flags: &str) -> Result<(), String> {
    use clap::CommandFactory;
    let argv = std::iter::once("boxoffice-load").chain(flags.split_whitespace());
    let matches = SaleFlags::command()
        .try_get_matches_from(argv)
        .expect("each flag parses alone");
    refuse_with_event_id(&matches)
}

#[test]
fn flags_that_shape_a_created_event_are_refused_with_event_id() {
    for (flags, named) in [
        (
            "--event-id 7d4c3c1e-1b5f-4e58-9a59-3f4f0b1e2a6d --tickets 100",
            "--tickets shapes the event",
        ),
        (
            "--event-id 7d4c3c1e-1b5f-4e58-9a59-3f4f0b1e2a6d --tickets=1000000",
            "--tickets shapes the event",
        ),
        (
            "--event-id 7d4c3c1e-1b5f-4e58-9a59-3f4f0b1e2a6d --price 2500",
            "--price shapes the event",
        ),
        (
            "--event-id 7d4c3c1e-1b5f-4e58-9a59-3f4f0b1e2a6d --currency EUR",
            "--currency shapes the event",
        ),
        (
            "--event-id 7d4c3c1e-1b5f-4e58-9a59-3f4f0b1e2a6d --max-per-fingerprint 2",
            "--max-per-fingerprint shapes the event",
        ),
        (
            "--event-id 7d4c3c1e-1b5f-4e58-9a59-3f4f0b1e2a6d --ticket-types 2 --quotas overlap",
            "--quotas shapes the event",
        ),
        // Every one given is named, in one message.
        (
            "--price 2500 --currency EUR --tickets 10 --event-id 7d4c3c1e-1b5f-4e58-9a59-3f4f0b1e2a6d",
            "--tickets, --price and --currency shape the event",
        ),
    ] {
        let err = event_id_check(flags).expect_err(flags);
        assert!(err.starts_with(named), "{flags}: {err}");
        assert!(err.contains("--event-id"), "{flags}: {err}");
    }
}

#[test]
fn flags_with_a_meaning_on_an_existing_event_are_accepted_with_event_id() {
    for flags in [
        "--event-id 7d4c3c1e-1b5f-4e58-9a59-3f4f0b1e2a6d",
        "--event-id 7d4c3c1e-1b5f-4e58-9a59-3f4f0b1e2a6d --ticket-types 3 --max-lines 2 --quantity 2 --buyers 10 --pay",
        // Without --event-id the event is the tool's, and shaped by them.
        "--tickets 10 --price 100 --currency EUR --max-per-fingerprint 2",
    ] {
        assert_eq!(event_id_check(flags), Ok(()), "{flags}");
    }
}

#[test]
fn an_event_id_that_is_not_a_uuid_is_refused_at_parse_time_naming_the_flag() {
    use clap::Parser;
    for id in ["not-a-uuid", "e", "7d4c3c1e-1b5f-4e58-9a59-3f4f0b1e2a6"] {
        let argv = ["boxoffice-load", "--event-id", id];
        let err = SaleFlags::try_parse_from(argv).err().expect(id).to_string();
        assert!(err.contains("--event-id"), "{id}: {err}");
        assert!(err.contains(id), "{id}: {err}");
    }
    let id = "7d4c3c1e-1b5f-4e58-9a59-3f4f0b1e2a6d";
    let flags = SaleFlags::try_parse_from(["boxoffice-load", "--event-id", id]).expect("a UUID");
    assert_eq!(flags.config.event_id.as_deref(), Some(id));
}

/// Every flag of a run as the CLI parses them, the scanning mode's included.
#[derive(clap::Parser)]
struct AllFlags {
    #[command(flatten)]
    config: crate::Config,
    #[command(flatten)]
    catalogue: crate::Catalogue,
    #[command(flatten)]
    journey: crate::Journey,
    #[command(flatten)]
    scanning: crate::Scanning,
}

#[test]
fn a_flag_that_means_nothing_without_another_is_refused_naming_both() {
    use clap::Parser;
    for (flags, needed) in [
        ("--max-in-flight 10", "--arrival-rate"),
        ("--hold-streams-seconds 5", "--idle-streams"),
        ("--stream-sources 4", "--idle-streams"),
        ("--reconnect-streams", "--idle-streams"),
        ("--server-pid 1", "--idle-streams"),
        // --reconnect-streams and --server-pid reach the idle streams only, not a watcher's.
        ("--watch-share 0.5 --reconnect-streams", "--idle-streams"),
        ("--watch-share 0.5 --server-pid 1", "--idle-streams"),
        ("--offer-wait-seconds 3", "--waiting-list-share"),
        ("--scan-tickets 10", "--scan"),
        ("--gates 2", "--scan"),
        ("--door-token t", "--scan"),
    ] {
        let argv = std::iter::once("boxoffice-load").chain(flags.split_whitespace());
        let err = AllFlags::try_parse_from(argv)
            .err()
            .unwrap_or_else(|| panic!("{flags} was accepted"))
            .to_string();
        let flag = flags
            .split_whitespace()
            .rfind(|f| f.starts_with("--"))
            .expect("a flag");
        assert!(err.contains(needed), "{flags}: {err}");
        assert!(err.contains(flag), "{flags}: {err}");
    }
}

#[test]
fn a_flag_with_the_one_it_needs_is_accepted() {
    use clap::Parser;
    for flags in [
        "--arrival-rate 5 --max-in-flight 10",
        "--idle-streams 2 --hold-streams-seconds 5 --stream-sources 4 --reconnect-streams --server-pid 1",
        "--waiting-list-share 0.3 --offer-wait-seconds 3",
        "--scan --scan-tickets 10 --gates 2 --door-token t",
        "--buyers 1",
    ] {
        let argv = std::iter::once("boxoffice-load").chain(flags.split_whitespace());
        if let Err(err) = AllFlags::try_parse_from(argv) {
            panic!("{flags}: {err}");
        }
    }
}

#[test]
fn no_buyers_is_refused_at_parse_time() {
    use clap::Parser;
    let err = AllFlags::try_parse_from(["boxoffice-load", "--buyers", "0"])
        .err()
        .expect("--buyers 0 was accepted")
        .to_string();
    assert!(err.contains("--buyers"), "{err}");
}

/// Every flag of the CLI's run, its files included.
#[derive(clap::Parser)]
struct CliFlags {
    #[command(flatten)]
    all: AllFlags,
    #[arg(long)]
    report: Option<std::path::PathBuf>,
    #[arg(long)]
    charts_dir: Option<std::path::PathBuf>,
}

/// What [`refuse_with_scan`] says of `flags`, as the CLI parses them.
fn scan_check(flags: &str) -> Result<(), String> {
    use clap::CommandFactory;
    let argv = std::iter::once("boxoffice-load").chain(flags.split_whitespace());
    let matches = CliFlags::command()
        .try_get_matches_from(argv)
        .expect("each flag parses alone");
    refuse_with_scan(&matches)
}

#[test]
fn flags_of_a_sale_are_refused_with_scan_naming_them_all() {
    for flag in [
        "--arrival-rate 5",
        "--think-ms 200",
        "--watch-share 0.1",
        "--cancel-share 0.1",
        "--tickets 100",
        "--quantity 2",
        "--ticket-types 2",
        "--quotas overlap",
        "--price 100",
        "--currency EUR",
        "--max-lines 1",
        "--buyers 3",
        "--max-per-fingerprint 2",
        "--no-verify",
        "--retry-seconds 5",
        "--request-timeout 5",
        "--decline-share 0.1",
        "--abandon-share 0.1",
        "--waiting-list-share 0.1",
        // Refused before at run time, now by the parser with the others.
        "--pay",
        "--read-only",
        "--idle-streams 1",
        "--history h.jsonl",
        "--keyed",
        "--report r.html",
        "--charts-dir c",
        "--event-id 7d4c3c1e-1b5f-4e58-9a59-3f4f0b1e2a6d",
    ] {
        let flags = format!("--scan --admin-token t {flag}");
        let err = scan_check(&flags).expect_err(&flags);
        let name = flag.split_whitespace().next().unwrap();
        assert!(
            err.starts_with(&format!("{name} belongs to a sale")),
            "{flags}: {err}"
        );
        assert!(err.contains("--scan"), "{flags}: {err}");
    }
    let err = scan_check("--scan --tickets 10 --quantity 2 --arrival-rate 5").unwrap_err();
    assert!(
        err.starts_with("--tickets, --quantity and --arrival-rate belong to a sale"),
        "{err}"
    );
}

#[test]
fn the_flags_a_scan_reads_are_accepted_with_scan() {
    for flags in [
        "--scan --admin-token t --clients 8 --duration 2 --requests 10 --scan-tickets 5 --gates 2",
        "--scan --door-token d --url http://127.0.0.1:9",
        // Without --scan they are the sale's.
        "--tickets 10 --quantity 2 --arrival-rate 5 --pay --report r.html",
    ] {
        assert_eq!(scan_check(flags), Ok(()), "{flags}");
    }
}

/// What [`refuse_beside_zero`] says of `flags`, as the CLI parses them.
fn zero_check(flags: &str) -> Result<(), String> {
    use clap::CommandFactory;
    let argv = std::iter::once("boxoffice-load").chain(flags.split_whitespace());
    let matches = AllFlags::command()
        .try_get_matches_from(argv)
        .expect("the parser's own checks pass");
    refuse_beside_zero(&matches)
}

#[test]
fn a_flag_beside_the_one_it_needs_given_as_zero_is_refused_naming_both() {
    for (flags, named, zero) in [
        (
            "--idle-streams 0 --hold-streams-seconds 5",
            "--hold-streams-seconds does nothing",
            "--idle-streams 0",
        ),
        (
            "--idle-streams=0 --stream-sources 4 --server-pid 1",
            "--stream-sources and --server-pid do nothing",
            "--idle-streams 0",
        ),
        (
            "--reconnect-streams --idle-streams 0",
            "--reconnect-streams does nothing",
            "--idle-streams 0",
        ),
        (
            "--waiting-list-share 0.0 --offer-wait-seconds 3",
            "--offer-wait-seconds does nothing",
            "--waiting-list-share 0",
        ),
    ] {
        let err = zero_check(flags).expect_err(flags);
        assert!(err.contains(named), "{flags}: {err}");
        assert!(err.contains(zero), "{flags}: {err}");
    }
}

#[test]
fn a_flag_beside_the_one_it_needs_above_zero_or_a_zero_alone_is_accepted() {
    for flags in [
        "--idle-streams 0",
        "--waiting-list-share 0",
        "--idle-streams 1 --hold-streams-seconds 5 --stream-sources 4",
        "--waiting-list-share 0.01 --offer-wait-seconds 3",
        "--idle-streams 2",
        "",
    ] {
        assert_eq!(zero_check(flags), Ok(()), "{flags}");
    }
}

#[test]
fn stream_sources_beyond_the_loopback_network_are_refused() {
    use clap::Parser;
    let parse = |sources: &str| {
        let flags = format!("--idle-streams 3 --stream-sources {sources}");
        let argv = std::iter::once("boxoffice-load".to_owned())
            .chain(flags.split_whitespace().map(str::to_owned));
        AllFlags::try_parse_from(argv)
    };
    for accepted in ["0", "4", "16777214"] {
        if let Err(err) = parse(accepted) {
            panic!("--stream-sources {accepted}: {err}");
        }
    }
    for refused in ["16777215", "2000000000"] {
        let err = parse(refused)
            .err()
            .unwrap_or_else(|| panic!("--stream-sources {refused} was accepted"))
            .to_string();
        assert!(err.contains("--stream-sources"), "{refused}: {err}");
    }
}

#[test]
fn a_negative_number_is_refused_by_its_range_not_taken_for_a_flag() {
    use clap::Parser;
    use clap::error::ErrorKind;
    // What each needs beside it, so that only the value is wrong.
    let beside = [
        ("--idle-streams", "1"),
        ("--arrival-rate", "1"),
        ("--spike-rate", "1"),
        ("--spike-seconds", "1"),
        ("--waiting-list-share", "0.5"),
        ("--admin-token", "t"),
    ];
    for (flag, value) in [
        ("--tickets", "-1"),
        ("--max-per-fingerprint", "-1"),
        ("--clients", "-1"),
        ("--duration", "-1"),
        ("--requests", "-1"),
        ("--quantity", "-1"),
        ("--buyers", "-1"),
        ("--idle-streams", "-1"),
        ("--hold-streams-seconds", "-1"),
        ("--stream-sources", "-1"),
        ("--server-pid", "-1"),
        ("--retry-seconds", "-1"),
        ("--request-timeout", "-1"),
        ("--ticket-types", "-1"),
        ("--max-lines", "-1"),
        ("--price", "-1"),
        ("--arrival-rate", "-5"),
        ("--spike-rate", "-5"),
        ("--spike-seconds", "-1"),
        ("--max-in-flight", "-1"),
        ("--think-ms", "-5"),
        ("--decline-share", "-0.1"),
        ("--abandon-share", "-0.1"),
        ("--cancel-share", "-0.1"),
        ("--refund-share", "-0.1"),
        ("--checkin-share", "-0.1"),
        ("--waiting-list-share", "-0.1"),
        ("--offer-wait-seconds", "-1"),
        ("--watch-share", "-0.1"),
        ("--scan-tickets", "-1"),
        ("--gates", "-1"),
    ] {
        let argv = std::iter::once("boxoffice-load")
            .chain(
                beside
                    .iter()
                    .filter(|(needed, _)| *needed != flag)
                    .flat_map(|(needed, given)| [*needed, *given]),
            )
            .chain(["--scan", flag, value]);
        let err = AllFlags::try_parse_from(argv)
            .err()
            .unwrap_or_else(|| panic!("{flag} {value} was accepted"));
        assert_eq!(
            err.kind(),
            ErrorKind::ValueValidation,
            "{flag} {value}: {err}"
        );
        let text = err.to_string();
        assert!(text.contains(flag) && text.contains(value), "{text}");
    }
}

#[test]
fn the_checker_refuses_a_negative_number_by_its_range() {
    use clap::Parser;
    use clap::error::ErrorKind;
    #[derive(clap::Parser)]
    struct Check {
        #[command(flatten)]
        options: crate::check::Options,
    }
    for flag in ["--settle-seconds", "--retry-seconds"] {
        let argv = [
            "check",
            "--history",
            "h",
            "--database-url",
            "postgres://x@y/z",
            flag,
            "-1",
        ];
        let err = Check::try_parse_from(argv)
            .err()
            .unwrap_or_else(|| panic!("{flag} -1 was accepted"));
        assert_eq!(err.kind(), ErrorKind::ValueValidation, "{flag}: {err}");
    }
}
