use std::process::ExitCode;

use boxoffice_load::{Config, render, run};
use clap::Parser;

/// Drive concurrent buyers at a Boxoffice event and verify nothing was oversold.
#[derive(Debug, Parser)]
#[command(name = "boxoffice-load", version, about)]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli.config).await {
        Ok(report) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("the report serializes")
                );
            } else {
                print!("{}", render(&report));
            }
            if report.is_sound() {
                ExitCode::SUCCESS
            } else {
                eprintln!("boxoffice-load: verification FAILED");
                ExitCode::from(2)
            }
        }
        Err(err) => {
            eprintln!("boxoffice-load: {err}");
            ExitCode::FAILURE
        }
    }
}
