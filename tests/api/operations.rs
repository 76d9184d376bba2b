//! What an operator meets at start: the smallest pool, refused settings (blank secrets, a
//! request timeout out of range, an invalid `RUST_LOG`) and the log's form on a pipe.

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{
    boxoffice_command, database_url, failed_start, free_port, fresh_database, id_of,
    new_fingerprint, spawn_app_with,
};

/// A database nothing listens on: a start refused for its settings never reaches it.
const NOWHERE: &str = "postgres://nobody@127.0.0.1:1/nothing";

/// `boxoffice serve` on [`NOWHERE`] with `flags`, not yet started.
fn serve_nowhere(flags: &[&str]) -> Command {
    let mut command = boxoffice_command();
    command
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--database-url", NOWHERE])
        .args(flags);
    command
}

/// The smallest pool the flag accepts still serves: the change listener's connection is
/// not one of the requests' (it held the only one, and every request waited for it: 503).
#[tokio::test]
async fn a_pool_of_one_connection_serves_ready_and_a_hold() {
    let app = spawn_app_with(&["--db-max-connections", "1"]).await;
    // The change listener connects once the server runs: let it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let event = app.create_event("Small pool", 10, None).await;
    let (status, body) = app.purchase(&id_of(&event), 2, &new_fingerprint()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.stop().await;
}

/// An admin token or fingerprint secret that is empty or only whitespace (an empty secret
/// file, say) is a mistake, not a wish to run open: the start is refused, naming the flag.
#[test]
fn a_blank_admin_token_or_fingerprint_secret_is_refused_at_start() {
    for (flag, env) in [
        ("--admin-token", "BOXOFFICE_ADMIN_TOKEN"),
        ("--fingerprint-secret", "BOXOFFICE_FINGERPRINT_SECRET"),
    ] {
        for blank in ["", "   ", "\n"] {
            let stderr = failed_start(serve_nowhere(&[flag, blank]), Duration::from_secs(30));
            assert!(
                stderr.contains(flag) && stderr.contains("empty"),
                "{flag} {blank:?}: {stderr}"
            );
            let mut command = serve_nowhere(&[]);
            command.env(env, blank);
            let stderr = failed_start(command, Duration::from_secs(30));
            assert!(
                stderr.contains(flag) && stderr.contains("empty"),
                "{env}={blank:?}: {stderr}"
            );
        }
    }
    let stderr = failed_start(
        serve_nowhere(&["--signing-key-file", ""]),
        Duration::from_secs(30),
    );
    assert!(stderr.contains("--signing-key-file"), "{stderr}");
}

/// `--request-timeout-ms` is 1 to 3,600,000: outside it the start is refused, naming the
/// flag and its range.
#[test]
fn a_request_timeout_out_of_range_is_refused_at_start() {
    for value in ["0", "3600001", "18446744073709551615"] {
        let stderr = failed_start(
            serve_nowhere(&["--request-timeout-ms", value]),
            Duration::from_secs(30),
        );
        assert!(
            stderr.contains("--request-timeout-ms") && stderr.contains("3600000"),
            "{value}: {stderr}"
        );
    }
}

/// An invalid `RUST_LOG` is refused at start, naming it, instead of being ignored; `--help`
/// still answers.
#[test]
fn an_invalid_rust_log_is_refused_at_start() {
    let mut command = boxoffice_command();
    command
        .env("RUST_LOG", "nonsense[[[")
        .args(["migrate", "--database-url", NOWHERE]);
    let stderr = failed_start(command, Duration::from_secs(30));
    assert!(stderr.contains("RUST_LOG"), "{stderr}");
    // Help is still there to read.
    let help = boxoffice_command()
        .env("RUST_LOG", "nonsense[[[")
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        help.status.success(),
        "{}",
        String::from_utf8_lossy(&help.stderr)
    );
}

/// Logs written to a pipe carry no colour codes, and the default filter leaves out
/// PostgreSQL's notice that the migrations table exists (said at every start).
#[tokio::test]
async fn logs_on_a_pipe_are_plain_and_quiet_about_the_migrations_table() {
    let url = database_url(&fresh_database().await);
    let output = boxoffice_command()
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .args(["tokens", "list", "--database-url", &url])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour codes: {stderr:?}");
    assert!(!stderr.contains("_sqlx_migrations"), "{stderr}");
}

/// A value refused at start that came from a flag's environment variable is said to have
/// come from it: clap names only the flag, which is not on the command line.
#[test]
fn a_refused_value_from_the_environment_names_its_variable() {
    let mut command = serve_nowhere(&[]);
    command.env("BOXOFFICE_HOLD_SECONDS", "0");
    let stderr = failed_start(command, Duration::from_secs(30));
    assert!(
        stderr.contains("--hold-seconds")
            && stderr.contains("given by the environment variable BOXOFFICE_HOLD_SECONDS"),
        "{stderr}"
    );
    // Given on the command line, it is the flag's own value: no variable is named, even
    // with one set.
    let mut command = serve_nowhere(&["--hold-seconds", "0"]);
    command.env("BOXOFFICE_HOLD_SECONDS", "5");
    let stderr = failed_start(command, Duration::from_secs(30));
    assert!(
        stderr.contains("--hold-seconds") && !stderr.contains("environment variable"),
        "{stderr}"
    );
    // The variable's value refused beside a good flag (the top-level flags read it too):
    // the variable is named.
    let mut command = serve_nowhere(&["--hold-seconds", "5"]);
    command.env("BOXOFFICE_HOLD_SECONDS", "0");
    let stderr = failed_start(command, Duration::from_secs(30));
    assert!(
        stderr.contains("given by the environment variable BOXOFFICE_HOLD_SECONDS"),
        "{stderr}"
    );
}
