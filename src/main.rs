use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use boxoffice::config::{Cli, Command, TokensCommand};
use boxoffice::server::{Database, Server, shutdown_signal};

/// mimalloc instead of the system allocator: a request allocates and frees many small
/// buffers on two worker threads, and glibc's malloc, with its free-chunk consolidation,
/// took about a quarter of the server's CPU under a sale's load (docs/performance.md).
/// Built not to ask for transparent huge pages (`no_thp`): asking, it faulted in and zeroed
/// 2 MiB at a time (a sixth of the server's CPU while 10,000 streams opened), and each idle
/// stream held 28 KiB of resident memory instead of 16 (measured before `http::serve`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // The command line first: `--help` and `--version` answer whatever `RUST_LOG` says.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => refuse_arguments(err),
    };
    // Logs go to standard error, as README.md says; standard output stays free.
    let filter = match log_filter() {
        Ok(filter) => filter,
        // Refused like a bad flag (clap's exit status), before anything starts.
        Err(err) => {
            eprintln!("boxoffice: {err}");
            return ExitCode::from(2);
        }
    };
    // Colour only for a person at a terminal: a file or a pipe (journald, `docker logs`)
    // would keep the escape codes. A non-empty NO_COLOR turns it off (https://no-color.org).
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_env_filter(filter)
        .init();
    let outcome = match cli.command {
        Some(Command::Migrate(args)) => match Database::open(&args).await {
            Ok(database) => {
                tracing::info!("migrations applied");
                database.close().await;
                Ok(())
            }
            Err(err) => Err(err),
        },
        Some(Command::Tokens(command)) => tokens(&command).await,
        Some(Command::Serve(args)) => serve(&args).await,
        None => serve(&cli.serve).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        // Said once, to standard error, whatever the log filter: a log line as well would
        // print the same failure twice.
        Err(err) => {
            eprintln!("boxoffice: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Ends the process on a command line clap refused (or on `--help`, `--version`), as clap
/// does, but says so when the refused value came from the flag's environment variable rather
/// than the command line: clap names only the flag (`invalid value '0' for '--hold-seconds'`),
/// and an operator whose env file set `BOXOFFICE_HOLD_SECONDS=0` looks for a flag that is not
/// on the command line.
fn refuse_arguments(err: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue};
    let flag = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.split([' ', '=']).next().map(str::to_owned),
        _ => None,
    };
    // The refused value, when clap names one: it came from the variable if the variable
    // holds it (the top-level flags read the variables even beside `serve`'s own on the
    // command line).
    let refused = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => Some(value.clone()),
        _ => None,
    };
    let variable = flag.and_then(|flag| {
        let long = flag.strip_prefix("--")?.to_owned();
        let command = <Cli as clap::CommandFactory>::command();
        let variable = std::iter::once(&command)
            .chain(command.get_subcommands())
            .flat_map(|command| command.get_arguments())
            .find(|arg| arg.get_long() == Some(long.as_str()))?
            .get_env()?
            .to_owned();
        let value = std::env::var_os(&variable)?;
        let from_variable = match &refused {
            Some(refused) => value.to_string_lossy() == refused.as_str(),
            // No value named (an empty one): the variable's, unless the flag is given.
            None => {
                !std::env::args().any(|arg| arg == flag || arg.starts_with(&format!("{flag}=")))
            }
        };
        from_variable.then_some(variable)
    });
    match variable {
        Some(variable) => {
            let text = err.render().to_string();
            let mut lines = text.trim_end().lines();
            let first = lines.next().unwrap_or_default();
            eprintln!(
                "{first} (given by the environment variable {})",
                variable.to_string_lossy()
            );
            for line in lines {
                eprintln!("{line}");
            }
            std::process::exit(err.exit_code());
        }
        None => err.exit(),
    }
}

/// The filter when `RUST_LOG` is unset or blank: `info`, but PostgreSQL's notices only from
/// `warn`, for the migrator's `relation "_sqlx_migrations" already exists, skipping`, said at
/// every start and every `boxoffice tokens` command.
const DEFAULT_LOG_FILTER: &str = "info,sqlx::postgres::notice=warn";

/// The log filter: `RUST_LOG`, or [`DEFAULT_LOG_FILTER`] when it is unset or blank. An
/// invalid one is an error naming it: ignored, it left the operator with the default and no
/// word of why their filter did nothing.
fn log_filter() -> Result<EnvFilter, String> {
    let text = match std::env::var("RUST_LOG") {
        Err(std::env::VarError::NotPresent) => return Ok(EnvFilter::new(DEFAULT_LOG_FILTER)),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err("RUST_LOG is not valid UTF-8".to_owned());
        }
        Ok(text) if text.trim().is_empty() => return Ok(EnvFilter::new(DEFAULT_LOG_FILTER)),
        Ok(text) => text,
    };
    EnvFilter::try_new(&text).map_err(|err| {
        format!(
            "RUST_LOG={text:?} is not a valid log filter ({err}); for example `info`, or \
             `info,boxoffice::request=warn` (see docs/operations.md)"
        )
    })
}

async fn serve(args: &boxoffice::config::ServeArgs) -> Result<(), boxoffice::server::StartError> {
    // Signals are caught from here on, so one sent during start-up still ends in a graceful
    // shutdown (see `shutdown_signal`).
    let shutdown = shutdown_signal()?;
    Server::build(args).await?.run(shutdown).await
}

/// `boxoffice tokens …`: the result goes to standard output (a new token's text only there,
/// once), failures to standard error with a non-zero exit.
async fn tokens(command: &TokensCommand) -> Result<(), boxoffice::server::StartError> {
    let database = Database::open_beside_server(command.database()).await?;
    let outcome = run_tokens(command, &database).await;
    database.close().await;
    outcome
}

async fn run_tokens(
    command: &TokensCommand,
    database: &Database,
) -> Result<(), boxoffice::server::StartError> {
    let pool = &database.pool;
    match command {
        TokensCommand::Create(args) => {
            let created = boxoffice::tokens::create(
                pool,
                args.scope.into(),
                args.event,
                args.name.as_deref(),
            )
            .await?;
            eprintln!(
                "token {} made; it is printed once, below, and stored only as a digest",
                created.id
            );
            // A token nobody could read must not stay live: revoke it and say so.
            if let Err(err) = print(created.secret.expose()) {
                boxoffice::tokens::revoke(pool, created.id).await?;
                return Err(format!(
                    "{err}; token {} could not be handed out, so it was revoked",
                    created.id
                )
                .into());
            }
        }
        TokensCommand::List(_) => {
            let mut table = String::from("id\tname\tscope\tevent\tcreated\trevoked");
            for token in boxoffice::tokens::list(pool).await? {
                table.push_str(&format!(
                    "\n{}\t{}\t{}\t{}\t{}\t{}",
                    token.id,
                    token.name.as_deref().unwrap_or("-"),
                    token.scope,
                    token.event_id.map_or("-".to_owned(), |id| id.to_string()),
                    text(token.created_at),
                    token.revoked_at.map_or("-".to_owned(), text),
                ));
            }
            print(&table)?;
        }
        TokensCommand::Revoke(args) => {
            let revoked_at = boxoffice::tokens::revoke(pool, args.id).await?;
            print(&format!(
                "token {} revoked at {}",
                args.id,
                text(revoked_at)
            ))?;
        }
    }
    Ok(())
}

/// Writes `line` and a line break to standard output. A failed write (a closed pipe, a full
/// disk) is an error with a message, where `println!` would panic.
fn print(line: &str) -> Result<(), boxoffice::server::StartError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|err| format!("cannot write to standard output: {err}").into())
}

/// A time as RFC 3339, as the API writes them.
fn text(time: time::OffsetDateTime) -> String {
    time.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| time.to_string())
}
