//! Command line and environment configuration: `boxoffice --help` is the reference.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

use crate::domain::money::Currency;
use crate::domain::token::TokenScope;

/// Boxoffice: sells event tickets without ever overselling.
#[derive(Debug, Parser)]
#[command(
    name = "boxoffice",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Options for `serve`, which runs when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Make, list and revoke scoped API tokens (organiser and door tokens).
    #[command(subcommand)]
    Tokens(TokensCommand),
}

/// `boxoffice tokens …`: each applies the migrations first, like `migrate`.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a token and print it once on standard output; only its SHA-256 is stored.
    Create(CreateTokenArgs),
    /// List every token: id, name, scope, event, created, revoked (never the token itself).
    List(DatabaseArgs),
    /// Revoke a token: it stops working at once on every instance. Revoking twice is fine.
    Revoke(RevokeTokenArgs),
}

impl TokensCommand {
    /// Where the tokens are kept.
    pub fn database(&self) -> &DatabaseArgs {
        match self {
            TokensCommand::Create(args) => &args.database,
            TokensCommand::List(database) => database,
            TokensCommand::Revoke(args) => &args.database,
        }
    }
}

/// Options for `tokens create`.
#[derive(Debug, Clone, Args)]
pub struct CreateTokenArgs {
    /// What the token may do: `organiser` (everything the admin token may) or `door` (only
    /// the check-in routes).
    #[arg(long, value_enum)]
    pub scope: ScopeArg,

    /// The one event a door token may check people in at (its id); without it, every event.
    /// Not allowed with `--scope organiser`.
    #[arg(long)]
    pub event: Option<uuid::Uuid>,

    /// A label for people, e.g. the gate or device (at most 100 characters).
    #[arg(long)]
    pub name: Option<String>,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// Options for `tokens revoke`.
#[derive(Debug, Clone, Args)]
pub struct RevokeTokenArgs {
    /// The token's id, as `tokens create` and `tokens list` print it.
    pub id: uuid::Uuid,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// A token scope on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// Everything the admin token may do.
    Organiser,
    /// Only the check-in routes.
    Door,
}

impl From<ScopeArg> for TokenScope {
    fn from(scope: ScopeArg) -> Self {
        match scope {
            ScopeArg::Organiser => TokenScope::Organiser,
            ScopeArg::Door => TokenScope::Door,
        }
    }
}

/// Where the data lives: an external PostgreSQL, or the embedded one under the data directory.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL. When absent, Boxoffice starts its own PostgreSQL
    /// under `<data-dir>/postgres` from the server binaries installed on this machine.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Directory for the embedded PostgreSQL cluster (used only without a database URL).
    #[arg(long, env = "BOXOFFICE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Longest a transaction waits for a row lock before giving up (503), in milliseconds
    /// (1 to 2147483647, PostgreSQL's own limit for the setting).
    #[arg(long, env = "BOXOFFICE_LOCK_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pub lock_timeout_ms: u32,

    /// Longest any single SQL statement may run before it is cancelled (503), in milliseconds
    /// (1 to 2147483647, PostgreSQL's own limit for the setting).
    #[arg(long, env = "BOXOFFICE_STATEMENT_TIMEOUT_MS", default_value_t = 15_000,
          value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pub statement_timeout_ms: u32,

    /// Maximum number of pooled database connections per instance for requests (1 to
    /// 10000); the purchase batches' own pool adds at most a quarter of it (at least 1), and
    /// the live statistics' `LISTEN` one more, held while the instance runs.
    #[arg(long, env = "BOXOFFICE_DB_MAX_CONNECTIONS", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub db_max_connections: u32,
}

impl DatabaseArgs {
    /// The purchase batches' pool: a quarter of the requests' (at least 1), for as many events
    /// selling at once.
    pub fn batch_connections(&self) -> u32 {
        (self.db_max_connections / 4).max(1)
    }

    /// The most connections this instance opens: the requests' pool, the batches' pool, and
    /// the live statistics' `LISTEN` connection. A database that cannot take this many is
    /// refused at start (see `server::Database::open`).
    pub fn connections_needed(&self) -> u32 {
        self.db_max_connections + self.batch_connections() + 1
    }
}

/// Highest `--max-tickets-per-purchase` accepted (see that flag).
pub const MAX_TICKETS_PER_PURCHASE_LIMIT: i64 = 10_000;

/// Options for `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "BOXOFFICE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Longest a request may take to produce its response before it is answered with 503,
    /// in milliseconds (a stream counts as answered once it starts); 1 to 3,600,000 (an
    /// hour, longer than any request should take).
    #[arg(long, env = "BOXOFFICE_REQUEST_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub request_timeout_ms: u64,

    /// Most tickets one purchase request may ask for, 1 to 10,000. An order is paid, refunded
    /// and answered whole: each ticket is an admission row made under the event lock and a
    /// signed code in the answer (a paid order of 10,000 tickets takes about 0.8 s and answers
    /// 3.3 MB on a 2-core machine). Orders of 300,000 outran the statement timeout: charged,
    /// and never recorded.
    #[arg(long, env = "BOXOFFICE_MAX_TICKETS_PER_PURCHASE", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(1..=MAX_TICKETS_PER_PURCHASE_LIMIT))]
    pub max_tickets_per_purchase: i32,

    /// Currency of events created without one: the ISO 4217 code of a currency in circulation
    /// (EUR, USD, JPY, …; not XXX, XTS, a metal, a fund or a superseded code).
    #[arg(long, env = "BOXOFFICE_DEFAULT_CURRENCY", default_value = "EUR",
          value_parser = clap::builder::ValueParser::new(Currency::for_sale))]
    pub default_currency: Currency,

    /// How long a hold lasts before it lapses and its tickets return to the pool, in seconds
    /// (1 to 86,400).
    #[arg(long, env = "BOXOFFICE_HOLD_SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub hold_seconds: u32,

    /// How long a hold offered to a waiting-list entry stays reserved before it lapses and
    /// its tickets move on to the next in line, in seconds (1 to 604,800, a week). Fixed per
    /// entry when it joins.
    #[arg(long, env = "BOXOFFICE_WAITING_LIST_OFFER_SECONDS", default_value_t = 1800,
          value_parser = clap::value_parser!(u32).range(1..=604_800))]
    pub waiting_list_offer_seconds: u32,

    /// Period of the expiry sweeper, in milliseconds (10 to 3,600,000).
    #[arg(long, env = "BOXOFFICE_SWEEP_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub sweep_interval_ms: u64,

    /// Seconds after which an allocation still in `payment_pending` (its payment request
    /// crashed or hung) is resolved by the sweeper from the payment provider's record (1 to
    /// 86,400).
    #[arg(long, env = "BOXOFFICE_PAYMENT_RECOVERY_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub payment_recovery_seconds: u32,

    /// How purchases, payments' settles and single check-ins reach the database: `batched`
    /// coalesces concurrent requests for one event into one transaction; `per-request` runs
    /// one transaction per request.
    #[arg(long, env = "BOXOFFICE_PURCHASE_MODE", value_enum, default_value_t = PurchaseMode::Batched)]
    pub purchase_mode: PurchaseMode,

    /// Most purchase requests (or payments' settles, or check-ins) one batched transaction
    /// may carry (1 to 10,000).
    #[arg(long, env = "BOXOFFICE_PURCHASE_BATCH_MAX", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub purchase_batch_max: u32,

    /// Bearer token organisers must send (`Authorization: Bearer <token>`) to create and
    /// change events; refunds and the sales report always need it or an organiser token
    /// (`boxoffice tokens create --scope organiser`), which works wherever it does. Without
    /// it, event creation is open to anyone. Surrounding whitespace (a secret file's final
    /// line break) is not part of the token; one that is empty or only whitespace (an empty
    /// secret file) is refused at start.
    #[arg(long, env = "BOXOFFICE_ADMIN_TOKEN", hide_env_values = true,
          value_parser = parse_admin_token)]
    pub admin_token: Option<String>,

    /// Browser origins allowed to call the API (CORS), comma-separated or repeated, e.g.
    /// `https://tickets.example.com`. None by default: only same-origin pages may call it.
    /// Each is a browser origin as browsers send it: `http://` or `https://`, a host, an
    /// optional port, nothing after (no path, no trailing `/`); `*` is refused (list the
    /// origins).
    #[arg(
        long = "cors-origin",
        env = "BOXOFFICE_CORS_ORIGINS",
        value_delimiter = ',',
        value_parser = parse_origin
    )]
    pub cors_origins: Vec<String>,

    /// Purchase and payment requests per second allowed per buyer fingerprint, with bursts of
    /// three times as many; 0 turns the limit off (0 to 4,294,967,295).
    #[arg(
        long,
        env = "BOXOFFICE_RATE_LIMIT_PER_FINGERPRINT",
        default_value_t = 50
    )]
    pub rate_limit_per_fingerprint: u32,

    /// Purchase and payment requests per second allowed per client address, with bursts of
    /// three times as many; 0 turns the limit off (0 to 4,294,967,295). Behind a proxy, set
    /// `--trusted-proxy` too, or every client shares the proxy's budget.
    #[arg(long, env = "BOXOFFICE_RATE_LIMIT_PER_ADDRESS", default_value_t = 2000)]
    pub rate_limit_per_address: u32,

    /// Connections one client address may hold open at once; 0 turns the limit off (0 to
    /// 4,294,967,295). A
    /// connection past it is answered 429 `TOO_MANY_CONNECTIONS` at once, without its
    /// request being read, and closed. Trusted proxies (`--trusted-proxy`) are not limited:
    /// they carry many clients, and the limit belongs on the proxy. Counted per TCP peer
    /// address (an IPv6 client is one address, not its /64).
    #[arg(
        long,
        env = "BOXOFFICE_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 1000
    )]
    pub max_connections_per_address: u32,

    /// Longest a connection may take to send a request's head (the request line and headers),
    /// in milliseconds, counted from when the server starts waiting for it: the connection's
    /// opening, or the end of its last answer (so it is also how long an idle keep-alive
    /// connection is kept). Past it the connection is closed without an answer. A request's
    /// body and its answer are bounded by `--request-timeout-ms` instead. 100 to 3,600,000;
    /// it cannot be turned off.
    #[arg(long, env = "BOXOFFICE_REQUEST_HEAD_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub request_head_timeout_ms: u64,

    /// Reverse proxies and load balancers whose forwarding headers are believed, as CIDRs or
    /// single addresses, comma-separated or repeated, e.g. `10.0.0.0/8`. A request from one
    /// of them is attributed to the right-most address in `Forwarded` (else
    /// `X-Forwarded-For`) that is not itself a trusted proxy. None by default: the headers are
    /// ignored. Set it behind a proxy, or every client has the proxy's address.
    #[arg(
        long = "trusted-proxy",
        env = "BOXOFFICE_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_network
    )]
    pub trusted_proxies: Vec<IpNet>,

    /// Secret key for hashing device fingerprints (HMAC-SHA256). When absent, one is
    /// generated once and kept in the database, so every instance hashes alike. Taken
    /// exactly as given; one that is empty or only whitespace is refused at start.
    #[arg(long, env = "BOXOFFICE_FINGERPRINT_SECRET", hide_env_values = true,
          value_parser = parse_fingerprint_secret)]
    pub fingerprint_secret: Option<String>,

    /// Ed25519 private key (PKCS#8 PEM, e.g. from `openssl genpkey -algorithm ed25519`) that
    /// signs ticket codes. When absent, one is generated once and kept in the database, so
    /// every instance signs alike. Codes signed by an earlier key keep verifying: every key
    /// used is registered by its id (see docs/admission.md on rotation).
    #[arg(long, env = "BOXOFFICE_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
}

/// An `--admin-token` without surrounding whitespace (a secret file's final line break,
/// which no `Authorization` header can carry). A blank one is a mistake (an empty secret
/// file), not a wish to run open: leaving the flag unset is how to run without one.
fn parse_admin_token(raw: &str) -> Result<String, String> {
    let token = raw.trim();
    if token.is_empty() {
        return Err(BLANK_SECRET.replace("{}", "--admin-token and BOXOFFICE_ADMIN_TOKEN"));
    }
    Ok(token.to_owned())
}

/// A `--fingerprint-secret`, exactly as given (every stored hash depends on its bytes), but
/// not blank: that is a mistake, not a wish for the generated one.
fn parse_fingerprint_secret(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        return Err(BLANK_SECRET.replace(
            "{}",
            "--fingerprint-secret and BOXOFFICE_FINGERPRINT_SECRET",
        ));
    }
    Ok(raw.to_owned())
}

/// Why a blank secret is refused; `{}` names the flag and its variable.
const BLANK_SECRET: &str =
    "empty or only whitespace (an empty secret file?): give the secret, or leave {} unset";

/// A CIDR, or a single address as a /32 or /128.
fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .map(|network| network.trunc())
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is neither a CIDR (e.g. 10.0.0.0/8) nor an IP address"))
}

/// How purchase requests reach the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PurchaseMode {
    /// One transaction per request.
    PerRequest,
    /// Concurrent requests for one event share a transaction.
    Batched,
}

/// A `--cors-origin`: `scheme://host[:port]` as a browser sends it in `Origin`, scheme
/// `http` or `https`, host of letters, digits, `-` and `.` (or an IPv6 literal in brackets),
/// port 1 to 65535. Anything else would be echoed to browsers that never send it.
fn parse_origin(raw: &str) -> Result<String, String> {
    let origin = raw.trim();
    if origin == "*" {
        return Err("`*` is not allowed: list the origins that may call the API, e.g. https://tickets.example.com".into());
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("an origin starts with http:// or https://, e.g. https://tickets.example.com")?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (rest, None),
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if host_ok && port_ok {
        Ok(origin.to_owned())
    } else {
        Err("an origin is scheme://host[:port] with nothing after it (no path, no trailing /), e.g. https://tickets.example.com".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted_proxies(flags: &[&str]) -> Result<Vec<String>, clap::Error> {
        let argv = ["boxoffice", "serve"].iter().chain(flags);
        let args = match Cli::try_parse_from(argv)?.command {
            Some(Command::Serve(args)) => args,
            _ => unreachable!("argv names serve"),
        };
        Ok(args.trusted_proxies.iter().map(IpNet::to_string).collect())
    }

    #[test]
    fn trusted_proxies_are_cidrs_or_addresses() {
        assert_eq!(trusted_proxies(&[]).unwrap(), Vec::<String>::new());
        assert_eq!(
            trusted_proxies(&[
                "--trusted-proxy",
                "10.1.2.3/8, 192.0.2.7",
                "--trusted-proxy",
                "2001:db8::/32,::1"
            ])
            .unwrap(),
            ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128"]
        );
        for invalid in ["10.0.0.0/33", "example.com", "10.0.0", "", "10.0.0.0/8,"] {
            let err = trusted_proxies(&["--trusted-proxy", invalid]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{invalid}"
            );
        }
    }

    /// Every numeric flag's range is one the rest of the system can take: PostgreSQL's
    /// timeouts stop at i32::MAX milliseconds, and a pool needs a connection.
    #[test]
    fn database_settings_are_bounded_by_what_postgresql_accepts() {
        let parse = |flags: &[&str]| {
            Cli::try_parse_from(["boxoffice", "serve"].iter().chain(flags)).map(|_| ())
        };
        for flag in ["--lock-timeout-ms", "--statement-timeout-ms"] {
            assert!(parse(&[flag, "2147483647"]).is_ok(), "{flag}");
            assert!(parse(&[flag, "2147483648"]).is_err(), "{flag}");
            assert!(parse(&[flag, "0"]).is_err(), "{flag}");
        }
        assert!(parse(&["--db-max-connections", "1"]).is_ok());
        assert!(parse(&["--db-max-connections", "0"]).is_err());
        assert!(parse(&["--request-timeout-ms", "3600000"]).is_ok());
        assert!(parse(&["--request-timeout-ms", "3600001"]).is_err());
    }

    /// README's configuration table has a row for every `serve` flag, with its environment
    /// variable and its default, as `--help` has them.
    #[test]
    fn the_readme_table_lists_every_serve_flag_with_its_variable_and_default() {
        use clap::CommandFactory;
        let readme = include_str!("../README.md");
        let command = Cli::command();
        let serve = command
            .find_subcommand("serve")
            .expect("a serve subcommand");
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            let env = arg
                .get_env()
                .and_then(|env| env.to_str())
                .unwrap_or_else(|| panic!("--{long} has an environment fallback"));
            let start = format!("| `--{long}` | `{env}` | ");
            let row = readme
                .lines()
                .find(|line| line.starts_with(&start))
                .unwrap_or_else(|| panic!("README has a row starting {start}"));
            let default = match arg.get_default_values() {
                [] => None,
                [value] => Some(value.to_str().expect("UTF-8")),
                _ => unreachable!("one default at most"),
            };
            if let Some(default) = default {
                assert!(
                    row[start.len()..].starts_with(&format!("`{default}` |")),
                    "README's default of --{long} is `{default}`: {row}"
                );
            }
        }
    }

    #[test]
    fn the_default_currency_is_an_iso_code() {
        let currency =
            |flags: &[&str]| match Cli::try_parse_from(["boxoffice", "serve"].iter().chain(flags))?
                .command
            {
                Some(Command::Serve(args)) => Ok::<_, clap::Error>(args.default_currency.code()),
                _ => unreachable!("argv names serve"),
            };
        assert_eq!(currency(&[]).unwrap(), "EUR");
        assert_eq!(currency(&["--default-currency", "JPY"]).unwrap(), "JPY");
        assert!(currency(&["--default-currency", "jpy"]).is_err());
        assert!(currency(&["--default-currency", "ABC"]).is_err());
    }

    #[test]
    fn cors_origins_are_origins_as_browsers_send_them() {
        for good in [
            "https://tickets.example.com",
            "http://localhost:8080",
            "http://[::1]:3000",
            " https://a.b ",
        ] {
            assert!(super::parse_origin(good).is_ok(), "{good}");
        }
        for bad in [
            "*",
            "not a url",
            "https://a.com/",
            "null",
            "ftp://a.com",
            "https://",
            "http://a.com:0",
            "http://a.com:99999",
            "https://a b.com",
        ] {
            assert!(super::parse_origin(bad).is_err(), "{bad}");
        }
    }
}
