//! Flags given in seconds (or per second): refused at parse time unless finite, in range and
//! small enough to add to an [`Instant`](std::time::Instant), so that no run can start with a
//! value that would panic once converted to a [`Duration`]. The run checks them again with
//! [`duration`], for a [`crate::Config`] built without the parser. Flags that cannot go
//! together are refused here too ([`refuse_with_event_id`], [`refuse_with_scan`],
//! [`refuse_beside_zero`]).

use std::time::Duration;

use clap::ArgMatches;
use clap::builder::RangedI64ValueParser;
use clap::parser::ValueSource;

/// The flags that only shape the event the tool creates (argument id, flag): with
/// `--event-id` there is no such event, and the tool would ignore them. `--ticket-types` is
/// not one: with `--event-id` it picks the event's first types.
pub const EVENT_SHAPING: [(&str, &str); 5] = [
    ("tickets", "--tickets"),
    ("max_per_fingerprint", "--max-per-fingerprint"),
    ("prices", "--price"),
    ("currency", "--currency"),
    ("quotas", "--quotas"),
];

/// Refuses `--event-id` beside any flag of [`EVENT_SHAPING`] given on the command line
/// (their defaults do not count), naming them all: a run on an existing event would ignore
/// them, and its user believe they were set.
///
/// # Errors
/// A message naming the flags given.
pub fn refuse_with_event_id(matches: &ArgMatches) -> Result<(), String> {
    if !given(matches, "event_id") {
        return Ok(());
    }
    refuse_given(&given_of(matches, &EVENT_SHAPING), "--event-id", |one| {
        let verb = if one { "shapes" } else { "shape" };
        format!(
            "{verb} the event the tool creates; with --event-id the run uses that event as it is"
        )
    })
}

/// The flags of a sale that `--scan` does not read (argument id, flag): it makes its own
/// event and `--scan-tickets` paid tickets, and reads only `--url`, `--clients`,
/// `--duration`, `--requests`, `--admin-token` and `--json`, so a scanning run would ignore
/// them, and its user believe they were set.
pub const SALE_ONLY: [(&str, &str); 37] = [
    ("event_id", "--event-id"),
    ("tickets", "--tickets"),
    ("max_per_fingerprint", "--max-per-fingerprint"),
    ("quantity", "--quantity"),
    ("buyers", "--buyers"),
    ("pay", "--pay"),
    ("idle_streams", "--idle-streams"),
    ("hold_streams_seconds", "--hold-streams-seconds"),
    ("stream_sources", "--stream-sources"),
    ("reconnect_streams", "--reconnect-streams"),
    ("server_pid", "--server-pid"),
    ("read_only", "--read-only"),
    ("no_verify", "--no-verify"),
    ("history", "--history"),
    ("keyed", "--keyed"),
    ("retry_seconds", "--retry-seconds"),
    ("request_timeout", "--request-timeout"),
    ("ticket_types", "--ticket-types"),
    ("max_lines", "--max-lines"),
    ("prices", "--price"),
    ("currency", "--currency"),
    ("quotas", "--quotas"),
    ("arrival_rate", "--arrival-rate"),
    ("spike_rate", "--spike-rate"),
    ("spike_seconds", "--spike-seconds"),
    ("max_in_flight", "--max-in-flight"),
    ("think_ms", "--think-ms"),
    ("decline_share", "--decline-share"),
    ("abandon_share", "--abandon-share"),
    ("cancel_share", "--cancel-share"),
    ("refund_share", "--refund-share"),
    ("checkin_share", "--checkin-share"),
    ("waiting_list_share", "--waiting-list-share"),
    ("offer_wait_seconds", "--offer-wait-seconds"),
    ("watch_share", "--watch-share"),
    ("report", "--report"),
    ("charts_dir", "--charts-dir"),
];

/// Refuses `--scan` beside any flag of [`SALE_ONLY`] given on the command line (their
/// defaults do not count), naming them all.
///
/// # Errors
/// A message naming the flags given.
pub fn refuse_with_scan(matches: &ArgMatches) -> Result<(), String> {
    if !given(matches, "scan") {
        return Ok(());
    }
    refuse_given(&given_of(matches, &SALE_ONLY), "--scan", |one| {
        let (verb, it) = if one {
            ("belongs", "it")
        } else {
            ("belong", "them")
        };
        format!("{verb} to a sale; --scan makes its own event and tickets and ignores {it}")
    })
}

/// A flag: its argument id and its name on the command line.
pub type Flag = (&'static str, &'static str);

/// The flags that need another flag above zero (argument id, flag; then the flags that need
/// it): the parser's `requires` is met by `--idle-streams 0`, which opens no stream, so the
/// flags that shape the streams would be ignored and their user believe they were set.
pub const NEED_ABOVE_ZERO: [(Flag, &[Flag]); 2] = [
    (
        ("idle_streams", "--idle-streams"),
        &[
            ("hold_streams_seconds", "--hold-streams-seconds"),
            ("stream_sources", "--stream-sources"),
            ("reconnect_streams", "--reconnect-streams"),
            ("server_pid", "--server-pid"),
        ],
    ),
    (
        ("waiting_list_share", "--waiting-list-share"),
        &[("offer_wait_seconds", "--offer-wait-seconds")],
    ),
];

/// Refuses a flag of [`NEED_ABOVE_ZERO`] given on the command line beside the flag it needs
/// given as zero, naming them all.
///
/// # Errors
/// A message naming the flags given and the one given as zero.
pub fn refuse_beside_zero(matches: &ArgMatches) -> Result<(), String> {
    for ((id, flag), needing) in NEED_ABOVE_ZERO {
        let zero = given(matches, id)
            && matches
                .get_raw(id)
                .into_iter()
                .flatten()
                .any(|raw| raw.to_str().and_then(|t| t.parse::<f64>().ok()) == Some(0.0));
        if zero {
            refuse_given(
                &given_of(matches, needing),
                &format!("{flag} above 0"),
                |one| {
                    let verb = if one { "does" } else { "do" };
                    format!("{verb} nothing with {flag} 0")
                },
            )?;
        }
    }
    Ok(())
}

/// The refusal of the flags `given` beside `mode`, naming them all ("A, B and C"), or `Ok`
/// if there are none: "{names} {why}: drop {it or them} (or {mode})", where `why(true)` says
/// why of one flag and `why(false)` of several.
fn refuse_given(given: &[&str], mode: &str, why: impl Fn(bool) -> String) -> Result<(), String> {
    let (names, drop) = match given {
        [] => return Ok(()),
        [one] => ((*one).to_owned(), *one),
        [first @ .., last] => (format!("{} and {last}", first.join(", ")), "them"),
    };
    Err(format!(
        "{names} {}: drop {drop} (or {mode})",
        why(given.len() == 1)
    ))
}

/// Whether the argument `id` was given on the command line (not its default); an id the
/// command does not have was not.
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches.try_get_raw(id).is_ok_and(|values| values.is_some())
        && matches.value_source(id) == Some(ValueSource::CommandLine)
}

/// The flags of `flags` given on the command line, in `flags`' order.
fn given_of(matches: &ArgMatches, flags: &[(&str, &'static str)]) -> Vec<&'static str> {
    flags
        .iter()
        .filter(|(id, _)| given(matches, id))
        .map(|(_, flag)| *flag)
        .collect()
}

/// Parses an `--event-id`: a UUID, as the server's event ids are; anything else would only
/// be answered 404 (or 400) for every purchase of the run.
pub(crate) fn event_id(text: &str) -> Result<String, String> {
    match uuid::Uuid::parse_str(text) {
        Ok(_) => Ok(text.to_owned()),
        Err(_) => Err(format!("{text:?} is not an event id (a UUID)")),
    }
}

/// Parses a whole number of type `T` within `range`, read as an `i64` first, so that a
/// negative one is refused by its range ("-1 is not in 1..=…"), as every number out of range
/// is, rather than as a digit that `T` cannot hold.
pub(crate) fn whole<T>(range: impl std::ops::RangeBounds<i64>) -> RangedI64ValueParser<T>
where
    T: TryFrom<i64> + Clone + Send + Sync + 'static,
    <T as TryFrom<i64>>::Error: std::error::Error + Send + Sync + 'static,
{
    RangedI64ValueParser::new().range(range)
}

/// The longest span a flag may name: a year. Far beyond any run, and far within what a
/// `Duration` and an `Instant` plus it can hold.
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// `value` seconds of `flag` as a duration: finite, 0 or more and at most [`MAX_SECONDS`].
///
/// # Errors
/// A message naming the flag when the value is out of range.
pub fn duration(flag: &str, value: f64) -> Result<Duration, String> {
    if value.is_finite() && (0.0..=MAX_SECONDS).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!(
            "{flag} must be a number of seconds from 0 to {MAX_SECONDS} (a year), not {value}"
        ))
    }
}

/// Parses seconds from 0 to [`MAX_SECONDS`].
pub(crate) fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=MAX_SECONDS).contains(&v) => Ok(v),
        _ => Err(format!(
            "{text} is not a number of seconds from 0 to {MAX_SECONDS} (a year)"
        )),
    }
}

/// Parses seconds above 0 and at most [`MAX_SECONDS`].
pub(crate) fn positive_seconds(text: &str) -> Result<f64, String> {
    match seconds(text) {
        Ok(v) if v > 0.0 => Ok(v),
        _ => Err(format!(
            "{text} is not a number of seconds above 0 and at most {MAX_SECONDS} (a year)"
        )),
    }
}

/// Whether `value` is a rate per second a run can pace: above 0, finite, and at least one a
/// year (so that the time between two is within [`MAX_SECONDS`]).
pub fn is_rate(value: f64) -> bool {
    value.is_finite() && value > 0.0 && 1.0 / value <= MAX_SECONDS
}

/// Parses a rate per second ([`is_rate`]).
pub(crate) fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if is_rate(v) => Ok(v),
        _ => Err(format!(
            "{text} is not a rate per second that is finite and at least one a year"
        )),
    }
}

#[cfg(test)]
mod tests;
