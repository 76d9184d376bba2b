//! Flags given in seconds (or per second): refused at parse time unless finite, in range and
//! small enough to add to an [`Instant`](std::time::Instant), so that no run can start with a
//! value that would panic once converted to a [`Duration`]. The run checks them again with
//! [`duration`], for a [`crate::Config`] built without the parser.

use std::time::Duration;

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
