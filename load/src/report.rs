//! What a run found: latency percentiles, the verification, the report and its text form.

use std::collections::BTreeMap;

use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// What the event and the allocations looked like afterwards.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub total_tickets: i64,
    pub available_tickets: i64,
    pub reserved_tickets: i64,
    pub purchased_tickets: i64,
    /// Tickets in the 201 responses clients saw.
    pub tickets_granted: i64,
    /// Counts below zero, counts that do not add up, or more granted than exist.
    pub oversold: bool,
    pub allocations_checked: u64,
    /// 201s whose allocation could not be read back.
    pub allocations_missing: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub event_id: String,
    pub clients: usize,
    pub elapsed_seconds: f64,
    pub requests: u64,
    pub requests_per_second: f64,
    pub reservations: u64,
    pub reservations_per_second: f64,
    pub payments_succeeded: u64,
    pub transport_errors: u64,
    pub latency_ms: Latency,
    pub statuses: BTreeMap<u16, u64>,
    pub codes: BTreeMap<String, u64>,
    pub verification: Option<Verification>,
}

impl Report {
    /// Zero oversell and every 201 read back.
    pub fn is_sound(&self) -> bool {
        self.verification
            .as_ref()
            .is_none_or(|v| !v.oversold && v.allocations_missing == 0)
    }
}

pub(crate) fn latency(sorted_us: &[u64]) -> Latency {
    let at = |q: f64| -> f64 {
        if sorted_us.is_empty() {
            return 0.0;
        }
        let index = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
        sorted_us[index] as f64 / 1000.0
    };
    let mean = if sorted_us.is_empty() {
        0.0
    } else {
        sorted_us.iter().sum::<u64>() as f64 / sorted_us.len() as f64 / 1000.0
    };
    Latency {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
        mean,
    }
}

/// The report as people read it.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let l = &report.latency_ms;
    out.push_str(&format!("event            {}\n", report.event_id));
    out.push_str(&format!("clients          {}\n", report.clients));
    out.push_str(&format!(
        "elapsed          {:.3} s\n",
        report.elapsed_seconds
    ));
    out.push_str(&format!(
        "requests         {} ({:.0}/s)\n",
        report.requests, report.requests_per_second
    ));
    out.push_str(&format!(
        "reservations     {} ({:.0}/s)\n",
        report.reservations, report.reservations_per_second
    ));
    if report.payments_succeeded > 0 {
        out.push_str(&format!("payments ok      {}\n", report.payments_succeeded));
    }
    out.push_str(&format!(
        "latency ms       p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}\n",
        l.p50, l.p90, l.p99, l.max, l.mean
    ));
    out.push_str(&format!("statuses         {:?}\n", report.statuses));
    out.push_str(&format!("codes            {:?}\n", report.codes));
    if report.transport_errors > 0 {
        out.push_str(&format!("transport errors {}\n", report.transport_errors));
    }
    if let Some(v) = &report.verification {
        out.push_str(&format!(
            "event counts     total {} available {} reserved {} purchased {}\n",
            v.total_tickets, v.available_tickets, v.reserved_tickets, v.purchased_tickets
        ));
        out.push_str(&format!(
            "verification     tickets granted {}; oversold: {}; allocations read back {}/{} (missing {})\n",
            v.tickets_granted,
            if v.oversold { "YES" } else { "no" },
            v.allocations_checked - v.allocations_missing,
            v.allocations_checked,
            v.allocations_missing
        ));
    }
    out
}
