use std::path::PathBuf;
use std::process::ExitCode;

use boxoffice_load::{
    Catalogue, Config, Journey, Scanning, check, check_writable, raise_nofile_limit, render,
    render_scan, run_on_sale, run_scan, start_warning, write_charts, write_report,
};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// mimalloc, as the server: the tool runs on the machine it measures, and with glibc's
/// malloc, reading 10,000 streams' messages spent about an eighth of its CPU allocating and
/// freeing (docs/performance.md), CPU the server it measures then lacks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Drive concurrent buyers at a Boxoffice event and verify nothing was oversold. Exits 0 for
/// a sound run, 2 for a run that is not (the report says why), 3 for a run whose only fault
/// is a verification it could not finish (allocations, the event's counts, its quotas or the
/// row check it could not read: the report is printed all the same), 1 when it could not run.
#[derive(Debug, Parser)]
#[command(
    name = "boxoffice-load",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Without a subcommand: a load run, configured by the flags below.
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
    #[command(flatten)]
    catalogue: Catalogue,
    #[command(flatten)]
    journey: Journey,
    #[command(flatten)]
    scanning: Scanning,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also write the report as a self-contained HTML page with charts of every step.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Also write each chart as an SVG file in this directory (`{step}-rate.svg`,
    /// `{step}-latency.svg`); not the --report path.
    #[arg(long)]
    charts_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Judge a run's history (`--history FILE` of a run) against its database: tickets and
    /// money conserved, every acknowledgement present, at most one effect per call, each
    /// admission admitted once. Exits 0 when sound, 2 with violations, 3 when the database
    /// could not be read within --retry-seconds (incomplete), 1 when it could not run.
    Check(CheckCli),
}

#[derive(Debug, clap::Args)]
struct CheckCli {
    #[command(flatten)]
    options: check::Options,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    // A usage error exits 1 ("could not run"), not clap's 2, which this tool and its checker
    // give a run found unsound.
    let cli = match Cli::command()
        .try_get_matches()
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)))
    {
        Ok((cli, matches)) => {
            // Flags that cannot go together, refused before anything runs.
            if let Err(err) = boxoffice_load::flags::refuse_with_event_id(&matches)
                .and_then(|()| boxoffice_load::flags::refuse_with_scan(&matches))
                .and_then(|()| boxoffice_load::flags::refuse_beside_zero(&matches))
            {
                eprintln!("boxoffice-load: {err}");
                return ExitCode::FAILURE;
            }
            cli
        }
        Err(err) => {
            let _ = err.print();
            return match err.use_stderr() {
                true => ExitCode::FAILURE,
                false => ExitCode::SUCCESS,
            };
        }
    };
    if let Some(Command::Check(args)) = &cli.command {
        return run_check(args).await;
    }
    // Thousands of streams need thousands of sockets: take all the hard limit allows.
    if let Err(err) = raise_nofile_limit() {
        eprintln!("boxoffice-load: cannot raise the open-file limit: {err}");
    }
    if cli.scanning.scan {
        return scan(&cli).await;
    }
    // A path that cannot be written is found before the load, not after it.
    if let Err(err) = check_writable(cli.report.as_deref(), cli.charts_dir.as_deref()) {
        eprintln!("boxoffice-load: {err}");
        return ExitCode::FAILURE;
    }
    if let Some(warning) = start_warning(&cli.config, &cli.journey) {
        eprintln!("boxoffice-load: warning: {warning}");
    }
    match run_on_sale(&cli.config, &cli.catalogue, &cli.journey).await {
        Ok(report) => {
            // The report is printed first: a file that cannot be written after all (the disk
            // filled up meanwhile) loses neither the figures nor the verdict.
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("the report serializes")
                );
            } else {
                print!("{}", render(&report));
            }
            let written = cli
                .report
                .iter()
                .map(|path| write_report(&report, path))
                .chain(cli.charts_dir.iter().map(|dir| write_charts(&report, dir)))
                .collect::<Result<(), String>>();
            if let Err(err) = &written {
                eprintln!("boxoffice-load: {err}");
            }
            let incomplete = report.incomplete_only();
            if incomplete {
                eprintln!(
                    "boxoffice-load: VERIFICATION INCOMPLETE (nothing found lost): {}",
                    report.verdict.join("; ")
                );
            } else if !report.sound {
                eprintln!("boxoffice-load: NOT SOUND: {}", report.verdict.join("; "));
            }
            ExitCode::from(exit_code(report.sound, incomplete, written.is_ok()))
        }
        Err(err) => {
            eprintln!("boxoffice-load: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The exit status of a finished run, from the verdict as the report carries it (so the
/// status and the printed report always agree): 3 when its only fault is an incomplete
/// verification (`incomplete`: [`boxoffice_load::Report::incomplete_only`]), 2 when it is
/// otherwise not sound, whether or not its files were written; 1 when it is sound but a file
/// could not be written; 0 otherwise.
fn exit_code(sound: bool, incomplete: bool, written: bool) -> u8 {
    match (sound, incomplete, written) {
        (false, true, _) => 3,
        (false, false, _) => 2,
        (true, _, false) => 1,
        (true, _, true) => 0,
    }
}

/// The scanning mode: its own report, judged like a sale's.
async fn scan(cli: &Cli) -> ExitCode {
    match run_scan(
        &cli.config,
        &cli.scanning,
        cli.journey.admin_token.as_deref(),
    )
    .await
    {
        Ok(report) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("the report serializes")
                );
            } else {
                print!("{}", render_scan(&report));
            }
            if report.sound {
                ExitCode::SUCCESS
            } else {
                eprintln!("boxoffice-load: NOT SOUND: {}", report.verdict.join("; "));
                ExitCode::from(2)
            }
        }
        Err(err) => {
            eprintln!("boxoffice-load: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The history checker: its report, and the exit status it implies.
async fn run_check(args: &CheckCli) -> ExitCode {
    match check::run(&args.options).await {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("the report serializes")
                );
            } else {
                print!("{}", report.render());
            }
            if report.sound {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "boxoffice-load check: NOT SOUND: {} violations",
                    report.violations.len()
                );
                ExitCode::from(2)
            }
        }
        Err(check::Unread::Database(err)) => {
            eprintln!(
                "boxoffice-load check: VERIFICATION INCOMPLETE (nothing judged, nothing found \
                 lost): {err}; tried for --retry-seconds {}",
                args.options.retry_seconds
            );
            ExitCode::from(3)
        }
        Err(err) => {
            eprintln!("boxoffice-load check: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::exit_code;

    #[test]
    fn an_unsound_run_exits_2_even_when_its_files_cannot_be_written() {
        assert_eq!(exit_code(false, false, false), 2);
        assert_eq!(exit_code(false, false, true), 2);
        assert_eq!(exit_code(true, false, false), 1);
        assert_eq!(exit_code(true, false, true), 0);
    }

    #[test]
    fn a_run_whose_verification_is_incomplete_exits_3_not_as_lost() {
        assert_eq!(exit_code(false, true, true), 3);
        assert_eq!(exit_code(false, true, false), 3);
    }
}
