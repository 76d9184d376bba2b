//! Prometheus metrics, served at `GET /metrics`. The recorder is process-wide; these
//! functions are the only places that name a metric.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

/// Installs the recorder once per process and returns its handle.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("boxoffice_purchase_batch_size".into()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                    )
                })
                .expect("bucket lists are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// Renders every metric in the Prometheus text format, with the pool gauges read now.
pub fn render(pool: &PgPool) -> String {
    let handle = handle();
    let idle = pool.num_idle() as f64;
    gauge!("boxoffice_db_pool_connections", "state" => "idle").set(idle);
    gauge!("boxoffice_db_pool_connections", "state" => "in_use").set(f64::from(pool.size()) - idle);
    handle.render()
}

/// One answered request: counted by method, route template and status; its latency timed.
/// A method outside HTTP's standard ones is counted as `other`: a label value is a series
/// kept for the process's life, and a client may send any token as a method.
pub fn http_request(method: &str, route: &str, status: u16, latency: Duration) {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    let method = if STANDARD.contains(&method) {
        method
    } else {
        "other"
    };
    let labels = [
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    counter!("boxoffice_http_requests_total", &labels).increment(1);
    histogram!("boxoffice_http_request_duration_seconds", &labels[..2])
        .record(latency.as_secs_f64());
}

/// One purchase request's outcome: `reserved` or the error code that refused it.
pub fn purchase_outcome(outcome: &'static str) {
    counter!("boxoffice_purchases_total", "outcome" => outcome).increment(1);
}

/// How long a purchase transaction waited for its event row lock.
pub fn lock_waited(wait: Duration) {
    histogram!("boxoffice_event_lock_wait_seconds").record(wait.as_secs_f64());
}

/// How long a purchase transaction held its event row lock (lock to commit or rollback).
pub fn lock_held(held: Duration) {
    histogram!("boxoffice_event_lock_hold_seconds").record(held.as_secs_f64());
}

/// Purchase requests granted by one committed purchase transaction.
pub fn batch_committed(size: usize) {
    histogram!("boxoffice_purchase_batch_size").record(size as f64);
}

/// Holds this instance's sweeper expired (a negative count counts as none).
pub fn holds_expired(count: i64) {
    counter!("boxoffice_holds_expired_total").increment(count.max(0) as u64);
}

/// Stale payments and refunds this instance's sweeper settled (not those another instance
/// settled first).
pub fn payments_recovered(count: usize) {
    counter!("boxoffice_payments_recovered_total").increment(count as u64);
}

/// An event stream opened (`1.0`) or closed (`-1.0`).
pub fn sse_subscribers(delta: f64) {
    gauge!("boxoffice_sse_subscribers").increment(delta);
}

/// A connection refused because its address held `--max-connections-per-address` already.
pub fn connection_refused() {
    counter!("boxoffice_connections_refused_total").increment(1);
}

#[cfg(test)]
mod tests {
    /// The metric names this file emits (`counter!`, `gauge!`, `histogram!`), in order.
    fn emitted() -> Vec<&'static str> {
        let source = include_str!("metrics.rs");
        let code = &source[..source.find("#[cfg(test)]").expect("a test module")];
        let mut names: Vec<&str> = ["counter!(\"", "gauge!(\"", "histogram!(\""]
            .iter()
            .flat_map(|opening| code.match_indices(opening).map(|(at, o)| at + o.len()))
            .map(|start| {
                let end = start + code[start..].find('"').expect("a closing quote");
                &code[start..end]
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The `GET /metrics` table of docs/api.md lists every metric emitted, and nothing else.
    #[test]
    fn the_api_documents_every_metric_emitted_and_no_other() {
        let api = include_str!("../docs/api.md");
        let section = &api[api.find("### `GET /metrics`").expect("a /metrics section")..];
        let section = &section[..section[4..].find("\n### ").map_or(section.len(), |e| e + 4)];
        let mut documented: Vec<&str> = section
            .lines()
            .filter_map(|line| line.strip_prefix("| `boxoffice_"))
            .map(|rest| &rest[..rest.find('`').expect("a closing backtick")])
            .collect();
        documented.sort_unstable();
        let emitted: Vec<String> = emitted()
            .iter()
            .map(|name| name.trim_start_matches("boxoffice_").to_owned())
            .collect();
        assert_eq!(documented, emitted);
    }
}
