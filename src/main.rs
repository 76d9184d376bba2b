use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use boxoffice::config::{Cli, Command};
use boxoffice::server::{Database, Server, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    // Logs go to standard error, as README.md says; standard output stays free.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::Migrate(args)) => match Database::open(&args).await {
            Ok(database) => {
                tracing::info!("migrations applied");
                database.close().await;
                Ok(())
            }
            Err(err) => Err(err),
        },
        Some(Command::Serve(args)) => serve(&args).await,
        None => serve(&cli.serve).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("boxoffice: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: &boxoffice::config::ServeArgs) -> Result<(), boxoffice::server::StartError> {
    // Signals are caught from here on, so one sent during start-up still ends in a graceful
    // shutdown (see `shutdown_signal`).
    let shutdown = shutdown_signal()?;
    Server::build(args).await?.run(shutdown).await
}
