//! Panics and serialization failures answer the JSON `INTERNAL_ERROR`, and the request log
//! names their cause. The faulty routes exist only here: they are added to the real routes and
//! served behind the real middleware stack (`boxoffice::http::layers`).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode as AxumStatus;
use axum::response::Response;
use axum::routing::get;
use boxoffice::http::response::json;
use reqwest::StatusCode;
use serde::ser::{Error as _, Serialize, Serializer};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::helpers::{assert_error, spawn_app, unlimited_connections};

/// A value whose serialization fails, as a `time` date outside the formattable range would.
struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(S::Error::custom("the year component cannot be formatted"))
    }
}

async fn boom() -> AxumStatus {
    panic!("boom: secret internal detail")
}

async fn unserializable() -> boxoffice::http::error::ApiResult<Response> {
    json(AxumStatus::CREATED, &Unserializable)
}

/// What a layer answers when it fails: a plain-text 500 (axum's `Json` writes one).
async fn plain_500() -> (AxumStatus, &'static str) {
    (
        AxumStatus::INTERNAL_SERVER_ERROR,
        "Failed to serialize the response body: the year component cannot be formatted",
    )
}

/// Serves the real routes plus the faulty ones behind the real middleware and accept loop, on
/// its own port, with the state of a freshly spawned app; returns the base URL.
async fn spawn_with_faulty_routes() -> String {
    let app = spawn_app().await;
    let routes = boxoffice::http::routes(app.state.clone())
        .route("/boom", get(boom))
        .route("/unserializable", get(unserializable))
        .route("/plain-500", get(plain_500));
    let router = boxoffice::http::layers(routes, Duration::from_secs(5), &[]).expect("layers");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // The spawned app's database and pool live as long as the test's runtime.
        let _app = app;
        boxoffice::http::serve::serve(
            listener,
            router,
            unlimited_connections(Duration::from_secs(5)),
            std::future::pending(),
        )
        .await;
    });
    format!("http://{address}")
}

/// Log output captured for the current thread; `#[tokio::test]` runs the server's tasks on it.
#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    /// Starts capturing; the capture ends when the guard drops.
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let log = Self::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (log, tracing::subscriber::set_default(subscriber))
    }

    /// The captured lines at error level.
    fn errors(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|line| line.contains("ERROR"))
            .map(str::to_owned)
            .collect()
    }

    /// The one error line for the request to `path`, which must exist.
    fn error_for(&self, path: &str) -> String {
        let lines: Vec<String> = self
            .errors()
            .into_iter()
            .filter(|line| line.contains(&format!("path={path} ")))
            .collect();
        assert_eq!(lines.len(), 1, "one error line for {path}: {lines:#?}");
        lines.into_iter().next().unwrap()
    }
}

/// GET `path`: status, `Content-Type` and the body as text.
async fn get_raw(base: &str, path: &str) -> (StatusCode, String, String) {
    let response = reqwest::get(format!("{base}{path}")).await.expect("answer");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// Asserts the JSON `INTERNAL_ERROR` answer and that it mentions none of `secrets`.
fn assert_internal_error(status: StatusCode, content_type: &str, text: &str, secrets: &[&str]) {
    assert_eq!(content_type, "application/json", "{text}");
    let body: Value = serde_json::from_str(text).expect("JSON body");
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
    );
    for secret in secrets {
        assert!(!text.contains(secret), "{secret:?} leaked: {text}");
    }
}

/// The count of `boxoffice_http_requests_total` for GET `route` with `status`.
async fn requests_counted(base: &str, route: &str, status: u16) -> u64 {
    let (_, _, metrics) = get_raw(base, "/metrics").await;
    let labels = format!("method=\"GET\",route=\"{route}\",status=\"{status}\"");
    metrics
        .lines()
        .find(|line| line.starts_with("boxoffice_http_requests_total{") && line.contains(&labels))
        .and_then(|line| line.rsplit(' ').next())
        .map_or(0, |count| count.parse().expect("a count"))
}

#[tokio::test]
async fn a_panic_answers_the_json_internal_error_and_is_logged_and_counted() {
    let (log, _guard) = CapturedLog::start();
    let base = spawn_with_faulty_routes().await;

    for _ in 0..2 {
        let (status, content_type, text) = get_raw(&base, "/boom").await;
        assert_internal_error(status, &content_type, &text, &["boom", "secret", "panic"]);
    }
    // The server keeps serving after a panic.
    let (status, _, text) = get_raw(&base, "/health").await;
    assert_eq!(status, StatusCode::OK, "{text}");

    assert_eq!(requests_counted(&base, "/boom", 500).await, 2);
    let lines: Vec<String> = log
        .errors()
        .into_iter()
        .filter(|line| line.contains("path=/boom "))
        .collect();
    assert_eq!(lines.len(), 2, "one error line per panic: {lines:#?}");
    for line in lines {
        assert!(
            line.contains("boxoffice::request")
                && line.contains("method=GET")
                && line.contains("status=500")
                && line.contains("cause=panic: boom: secret internal detail"),
            "{line}"
        );
    }
}

#[tokio::test]
async fn a_body_that_fails_to_serialize_is_a_500_not_a_201() {
    let (log, _guard) = CapturedLog::start();
    let base = spawn_with_faulty_routes().await;

    let (status, content_type, text) = get_raw(&base, "/unserializable").await;
    assert_internal_error(status, &content_type, &text, &["year", "serialize"]);

    let line = log.error_for("/unserializable");
    assert!(
        line.contains("status=500") && line.contains("the year component cannot be formatted"),
        "{line}"
    );
    // One error line per 500, with everything: no second line without the request.
    let about_it = log
        .errors()
        .into_iter()
        .filter(|line| line.contains("year component"))
        .count();
    assert_eq!(about_it, 1, "{:#?}", log.errors());
    assert_eq!(requests_counted(&base, "/unserializable", 500).await, 1);
}

#[tokio::test]
async fn a_layers_plain_text_500_becomes_json_and_its_text_is_logged() {
    let (log, _guard) = CapturedLog::start();
    let base = spawn_with_faulty_routes().await;

    let (status, content_type, text) = get_raw(&base, "/plain-500").await;
    assert_internal_error(status, &content_type, &text, &["year", "serialize"]);

    let line = log.error_for("/plain-500");
    assert!(
        line.contains("layer answered 500 Internal Server Error: Failed to serialize the response body: the year component cannot be formatted"),
        "{line}"
    );
}
