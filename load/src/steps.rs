//! The run step by step: every request's end kept as a [`Sample`], then added up per step
//! (`purchase`, `read`, `pay`, `decline`, `cancel`, `watch`) into its rate, its latency
//! percentiles, its answers by status and code, and a timeline of one-second buckets that
//! the HTML report draws.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::report::latency;

/// The steps in the order reports list them; a step no request took is left out.
const ORDER: [&str; 6] = ["purchase", "read", "pay", "decline", "cancel", "watch"];

/// One request as it ended.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// The step's name ([`ORDER`]).
    pub step: &'static str,
    /// `None`: no answer (connection refused or cut, or a timeout).
    pub status: Option<u16>,
    /// The error body's `code`, when it has one.
    pub code: Option<String>,
    /// From the moment the request was due (the buyer's arrival in the open model, the
    /// end of the think time for a payment) to its answer.
    pub latency_us: u64,
    /// When it ended, in milliseconds since the run started: its timeline bucket.
    pub ended_ms: u64,
}

impl Sample {
    /// The label of its answer in [`Step::answers`]: `201`, `409 TICKETS_SOLD_OUT`,
    /// `no answer`.
    fn label(&self) -> String {
        let status = self
            .status
            .map_or_else(|| "no answer".to_owned(), |s| s.to_string());
        match &self.code {
            Some(code) => format!("{status} {code}"),
            None => status,
        }
    }

    /// Answered below 500: its latency counts in the percentiles.
    fn answered(&self) -> bool {
        self.status.is_some_and(|s| s < 500)
    }
}

/// One second of a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// Seconds since the run started: the bucket holds the requests that ended in
    /// `[second, second + 1)`.
    pub second: u64,
    /// Requests that ended in it, answered or not (its rate per second).
    pub requests: u64,
    /// Of them, the ones answered below 500, whose latency the percentiles are.
    pub answered: u64,
    /// Latency percentiles of its requests answered below 500, in milliseconds (0 when none).
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// What one step of the run did.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// `purchase` (a hold), `read`, `pay`, `decline` (a payment with the declining card),
    /// `cancel` or `watch` (opening the live statistics stream: its latency is the time to
    /// the first message).
    pub name: &'static str,
    /// Requests of the step, answered or not.
    pub requests: u64,
    /// Requests per second of the run's elapsed time.
    pub per_second: f64,
    /// Latency of the requests answered below 500.
    pub latency_ms: crate::Latency,
    /// Requests answered 5xx or not at all.
    pub failed: u64,
    /// Requests by answer: status and code (`409 TICKETS_SOLD_OUT`), or `no answer`.
    pub answers: BTreeMap<String, u64>,
    /// The step second by second, from the run's start to its end.
    pub timeline: Vec<Bucket>,
}

/// Adds the samples up per step, over a run of `elapsed_seconds`.
pub(crate) fn steps(samples: &[Sample], elapsed_seconds: f64) -> Vec<Step> {
    let mut by_step: BTreeMap<&'static str, Vec<&Sample>> = BTreeMap::new();
    for sample in samples {
        by_step.entry(sample.step).or_default().push(sample);
    }
    let last_end = samples.iter().map(|s| s.ended_ms / 1000).max().unwrap_or(0);
    let seconds = (elapsed_seconds.ceil() as u64).max(last_end + 1);
    let mut names: Vec<&'static str> = by_step.keys().copied().collect();
    names.sort_by_key(|name| ORDER.iter().position(|o| o == name).unwrap_or(ORDER.len()));
    names
        .into_iter()
        .map(|name| {
            let of_step = &by_step[name];
            let mut answered: Vec<u64> = of_step
                .iter()
                .filter(|s| s.answered())
                .map(|s| s.latency_us)
                .collect();
            answered.sort_unstable();
            let mut answers = BTreeMap::new();
            for sample in of_step {
                *answers.entry(sample.label()).or_default() += 1;
            }
            let mut per_second: Vec<(u64, Vec<u64>)> = vec![(0, Vec::new()); seconds as usize];
            for sample in of_step {
                let bucket = &mut per_second[(sample.ended_ms / 1000) as usize];
                bucket.0 += 1;
                if sample.answered() {
                    bucket.1.push(sample.latency_us);
                }
            }
            let timeline = per_second
                .into_iter()
                .enumerate()
                .map(|(second, (requests, mut latencies))| {
                    latencies.sort_unstable();
                    let l = latency(&latencies);
                    Bucket {
                        second: second as u64,
                        requests,
                        answered: latencies.len() as u64,
                        p50: l.p50,
                        p90: l.p90,
                        p99: l.p99,
                        max: l.max,
                    }
                })
                .collect();
            let requests = of_step.len() as u64;
            Step {
                name,
                requests,
                per_second: if elapsed_seconds > 0.0 {
                    requests as f64 / elapsed_seconds
                } else {
                    0.0
                },
                latency_ms: latency(&answered),
                failed: requests - answered.len() as u64,
                answers,
                timeline,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
