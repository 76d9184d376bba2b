//! The run's history (`--history FILE`): one JSON line per attempt of every call the workload
//! makes, with when it started and ended (microseconds since the Unix epoch), what was sent
//! and what came back, or that nothing did. A retry of a keyed call is a further line with
//! the same `call` and the next `attempt`. `boxoffice-load check` reads it back
//! ([`read`]) and judges it against the database.
//!
//! Lines are written as attempts end, so the file is in end order, not start order; a run
//! killed mid-way loses only the attempts still in flight.

use std::fs::File;
use std::io::{BufRead, BufReader, LineWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Client, RequestBuilder, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One attempt of one call, as a line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// The call: every attempt of one logical request (a keyed retry) shares it.
    pub call: u64,
    /// 1 for the first attempt, then 2, 3, … for retries with the same key.
    pub attempt: u32,
    /// When the request was handed to the connection, µs since the Unix epoch.
    pub start_us: u64,
    /// When its answer (body included) was read, or it failed, µs since the Unix epoch.
    pub end_us: u64,
    /// `GET`, `POST`, `PATCH`, `DELETE`.
    pub method: String,
    /// The instance's base URL, e.g. `http://127.0.0.1:8081`.
    pub instance: String,
    /// The path and query, e.g. `/events/{id}/tickets`.
    pub path: String,
    /// The `Idempotency-Key` sent, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The `X-Device-Fingerprint` sent, if any (the buyer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The JSON body sent, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// The answer's HTTP status; none when no complete answer came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The answer's JSON body (null when it was not JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Value>,
    /// Why no answer came: `timeout` (the client gave up) or `transport` (the connection
    /// failed or was cut, or the body was cut off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Attempt {
    /// Whether the answer says nothing certain about the call's effect: no answer at all, or
    /// a 5xx (503 `SERVICE_UNAVAILABLE` during a failover). Such a call may have taken
    /// effect once, or not at all.
    pub fn is_ambiguous(&self) -> bool {
        self.status.is_none_or(|s| s >= 500)
    }
}

/// The history file being written, shared by every client of a run.
#[derive(Debug)]
pub struct History {
    /// Line-buffered: each attempt reaches the file as it ends, so a killed run loses only
    /// the attempts still in flight.
    out: Mutex<LineWriter<File>>,
    next_call: AtomicU64,
    /// Whether a write failed (the history is then incomplete).
    failed: AtomicBool,
}

impl History {
    /// Creates (or truncates) the file.
    pub fn create(path: &Path) -> Result<Self, String> {
        let file = File::create(path)
            .map_err(|e| format!("cannot create the history {}: {e}", path.display()))?;
        Ok(Self {
            out: Mutex::new(LineWriter::new(file)),
            next_call: AtomicU64::new(1),
            failed: AtomicBool::new(false),
        })
    }

    /// A fresh call number.
    pub fn next_call(&self) -> u64 {
        self.next_call.fetch_add(1, Ordering::Relaxed)
    }

    /// Appends one attempt. A failed write shows at [`History::finish`], whose flush fails
    /// for a file that cannot be written.
    pub fn record(&self, attempt: &Attempt) {
        let line = serde_json::to_string(attempt).expect("an attempt serializes");
        let mut out = self
            .out
            .lock()
            .expect("the history writer is never poisoned");
        let _ = writeln!(out, "{line}");
    }

    /// Flushes the file; an error means the history is incomplete.
    pub fn finish(&self) -> Result<(), String> {
        self.out
            .lock()
            .expect("the history writer is never poisoned")
            .flush()
            .map_err(|e| format!("cannot write the history: {e}"))?;
        match self.failed.load(Ordering::Relaxed) {
            true => Err("cannot write the history: a line failed to write".into()),
            false => Ok(()),
        }
    }
}

/// Reads a history back, in file order; a line that does not parse is an error naming it.
pub fn read(path: &Path) -> Result<Vec<Attempt>, String> {
    let file =
        File::open(path).map_err(|e| format!("cannot open the history {}: {e}", path.display()))?;
    let mut attempts = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read the history: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let attempt =
            serde_json::from_str(&line).map_err(|e| format!("history line {}: {e}", n + 1))?;
        attempts.push(attempt);
    }
    Ok(attempts)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as u64
}

/// What one attempt got: the status, the JSON body (Null when not JSON) and `Retry-After`;
/// `None` when no complete answer came.
pub(crate) type Answered = Option<(StatusCode, Value, Option<String>)>;

/// How long to wait before trying again after `answered`: the `Retry-After` it named (at
/// most 2 s), or 500 ms.
pub(crate) fn retry_wait(answered: &Answered) -> Duration {
    answered
        .as_ref()
        .and_then(|(_, _, after)| after.as_deref()?.parse::<f64>().ok())
        .filter(|s| s.is_finite())
        .map_or(Duration::from_millis(500), |s| {
            Duration::from_secs_f64(s.clamp(0.0, 2.0))
        })
}

/// Sends one attempt of call `call`, recording it in `history` when there is one.
pub(crate) async fn send(
    history: Option<&History>,
    call: u64,
    attempt: u32,
    request: RequestBuilder,
) -> Answered {
    let Some(history) = history else {
        return exchange(request).await.ok();
    };
    let (client, request) = request.build_split();
    let Ok(request) = request else {
        return None;
    };
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let url = request.url();
    let mut record = Attempt {
        call,
        attempt,
        start_us: 0,
        end_us: 0,
        method: request.method().to_string(),
        instance: url.origin().ascii_serialization(),
        path: match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        },
        key: header("idempotency-key"),
        fingerprint: header("x-device-fingerprint"),
        body: request
            .body()
            .and_then(|b| b.as_bytes())
            .and_then(|b| serde_json::from_slice(b).ok()),
        status: None,
        answer: None,
        error: None,
    };
    record.start_us = now_us();
    let answered = execute(&client, request).await;
    record.end_us = now_us();
    match &answered {
        Ok((status, body, _)) => {
            record.status = Some(status.as_u16());
            record.answer = Some(body.clone());
        }
        Err(timeout) => {
            record.error = Some(if *timeout { "timeout" } else { "transport" }.to_owned());
        }
    }
    history.record(&record);
    answered.ok()
}

/// Sends a request; `Err(true)` when the client's timeout cut it off, `Err(false)` for any
/// other failure (a body cut off by a dying server is no answer either). A body that is not
/// JSON reads as Null.
async fn exchange(request: RequestBuilder) -> Result<(StatusCode, Value, Option<String>), bool> {
    let (client, request) = request.build_split();
    execute(&client, request.map_err(|_| false)?).await
}

async fn execute(
    client: &Client,
    request: reqwest::Request,
) -> Result<(StatusCode, Value, Option<String>), bool> {
    let response = client.execute(request).await.map_err(|e| e.is_timeout())?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    let bytes = response.bytes().await.map_err(|e| e.is_timeout())?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, body, retry_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(call: u64, attempt: u32, status: Option<u16>) -> Attempt {
        Attempt {
            call,
            attempt,
            start_us: 1_000 * u64::from(attempt),
            end_us: 1_000 * u64::from(attempt) + 500,
            method: "POST".into(),
            instance: "http://127.0.0.1:8080".into(),
            path: "/events/e/tickets".into(),
            key: Some("buyer-1-hold".into()),
            fingerprint: Some("buyer-1".into()),
            body: Some(serde_json::json!({ "quantity": 2 })),
            status,
            answer: status.map(|_| serde_json::json!({ "id": "a" })),
            error: status.is_none().then(|| "timeout".to_owned()),
        }
    }

    #[test]
    fn a_history_reads_back_as_written_and_knows_its_ambiguous_attempts() {
        let path = std::env::temp_dir().join(format!("history-{}.jsonl", std::process::id()));
        let history = History::create(&path).unwrap();
        assert_eq!((history.next_call(), history.next_call()), (1, 2));
        let written = [
            attempt(1, 1, None),
            attempt(1, 2, Some(503)),
            attempt(1, 3, Some(201)),
        ];
        for one in &written {
            history.record(one);
        }
        history.finish().unwrap();
        let read = read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read, written);
        let ambiguous: Vec<bool> = read.iter().map(Attempt::is_ambiguous).collect();
        assert_eq!(ambiguous, [true, true, false]);
    }

    #[test]
    fn a_line_that_does_not_parse_is_named() {
        let path = std::env::temp_dir().join(format!("history-bad-{}.jsonl", std::process::id()));
        std::fs::write(&path, "{\"call\":1}\n").unwrap();
        let err = read(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(err.starts_with("history line 1:"), "{err}");
    }
}
