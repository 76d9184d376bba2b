use std::process::ExitCode;

use boxoffice_load::{Catalogue, Config, raise_nofile_limit, render, run_with};
use clap::Parser;

/// Drive concurrent buyers at a Boxoffice event and verify nothing was oversold. Exits 0 for
/// a sound run, 2 for a run that is not (the report says why), 1 when it could not run.
#[derive(Debug, Parser)]
#[command(name = "boxoffice-load", version, about)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(flatten)]
    catalogue: Catalogue,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Thousands of streams need thousands of sockets: take all the hard limit allows.
    if let Err(err) = raise_nofile_limit() {
        eprintln!("boxoffice-load: cannot raise the open-file limit: {err}");
    }
    match run_with(&cli.config, &cli.catalogue).await {
        Ok(report) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("the report serializes")
                );
            } else {
                print!("{}", render(&report));
            }
            // The verdict as the report carries it, so the exit status and the printed
            // report always agree.
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
