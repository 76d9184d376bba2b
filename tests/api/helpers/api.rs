//! Requests to a running server, in process ([`super::TestApp`]) or a separate process of the
//! real binary ([`super::ServerProcess`]): both dereference to an [`Api`], so a test speaks to
//! either the same way.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// Longest any single request of a [`bounded_client`] may take: far above every server-side
/// bound (pool acquire 5 s), so a request that reaches it is a hang, not a slow answer.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(20);

/// An HTTP client whose every request (a stream's whole body included) must end within
/// [`REQUEST_LIMIT`]: for tests that break servers and must not hang on them.
pub fn bounded_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_LIMIT)
        .pool_max_idle_per_host(64)
        .build()
        .expect("HTTP client builds")
}

/// A server's base address and a client to reach it.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub address: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(address: String, client: reqwest::Client) -> Self {
        Self { address, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// `127.0.0.1:PORT`, for tests that speak HTTP over a raw socket.
    pub fn socket_address(&self) -> &str {
        self.address.trim_start_matches("http://")
    }

    /// Sends `bytes` on a connection of its own and reads until the server closes it (within
    /// 10 s): the raw answer, for what a client library would not send or would hide.
    pub async fn raw_answer(&self, bytes: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let mut connection = tokio::net::TcpStream::connect(self.socket_address())
            .await
            .unwrap();
        connection.write_all(bytes).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), connection.read_to_end(&mut answer))
            .await
            .expect("answered and closed within 10 s")
            .unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Sends a request and returns the status and the JSON body (Null when empty).
    pub async fn send(&self, request: RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("request reaches the server");
        let status = response.status();
        let text = response.text().await.expect("body reads");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON body {text:?}: {e}"))
        };
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.request(Method::POST, path).json(&body))
            .await
    }

    /// Creates an event and returns its JSON. Its tickets cost 10.00 EUR, so that paying for
    /// them goes to the payment provider (a free order is confirmed without it).
    pub async fn create_event(&self, name: &str, total: i64, cap: Option<i64>) -> Value {
        let (status, body) = self
            .post_json(
                "/events",
                json!({
                    "name": name,
                    "date": "2027-06-01T19:00:00Z",
                    "totalTickets": total,
                    "maxTicketsPerFingerprint": cap,
                    "price": 1000,
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// The request of a purchase by the buyer with this device fingerprint, not yet sent.
    pub fn purchase_request(
        &self,
        event_id: &str,
        quantity: i64,
        fingerprint: &str,
    ) -> RequestBuilder {
        self.request(Method::POST, &format!("/events/{event_id}/tickets"))
            .header("X-Device-Fingerprint", fingerprint)
            .json(&json!({ "quantity": quantity }))
    }

    /// A purchase by the buyer with this device fingerprint.
    pub async fn purchase(
        &self,
        event_id: &str,
        quantity: i64,
        fingerprint: &str,
    ) -> (StatusCode, Value) {
        self.send(self.purchase_request(event_id, quantity, fingerprint))
            .await
    }

    /// The request of a payment for a hold, not yet sent.
    pub fn pay_request(
        &self,
        allocation_id: &str,
        fingerprint: &str,
        token: Option<&str>,
    ) -> RequestBuilder {
        self.request(Method::POST, &format!("/tickets/{allocation_id}/payment"))
            .header("X-Device-Fingerprint", fingerprint)
            .json(&json!({ "paymentToken": token }))
    }

    pub async fn pay(
        &self,
        allocation_id: &str,
        fingerprint: &str,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        self.send(self.pay_request(allocation_id, fingerprint, token))
            .await
    }

    pub async fn cancel(&self, allocation_id: &str, fingerprint: &str) -> (StatusCode, Value) {
        self.send(
            self.request(Method::DELETE, &format!("/tickets/{allocation_id}/payment"))
                .header("X-Device-Fingerprint", fingerprint),
        )
        .await
    }

    pub async fn event(&self, event_id: &str) -> Value {
        let (status, body) = self.get(&format!("/events/{event_id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// `GET /tickets/{id}` as the buyer with this fingerprint.
    pub async fn ticket(&self, allocation_id: &str, fingerprint: &str) -> (StatusCode, Value) {
        self.send(self.ticket_request(allocation_id, fingerprint))
            .await
    }

    /// The request of `GET /tickets/{id}` as the buyer with this fingerprint, not yet sent.
    pub fn ticket_request(&self, allocation_id: &str, fingerprint: &str) -> RequestBuilder {
        self.request(Method::GET, &format!("/tickets/{allocation_id}"))
            .header("X-Device-Fingerprint", fingerprint)
    }

    /// The event's counts as the API reports them.
    pub async fn counts(&self, event_id: &str) -> Counts {
        let event = self.event(event_id).await;
        let count = |field: &str| {
            event[field]
                .as_i64()
                .unwrap_or_else(|| panic!("{field} in {event}"))
        };
        (
            count("availableTickets"),
            count("reservedTickets"),
            count("purchasedTickets"),
        )
    }

    /// The value of an unlabelled counter on this server's `/metrics` (0 when absent: a
    /// counter appears on its first increment).
    pub async fn counter(&self, name: &str) -> u64 {
        let text = self
            .request(Method::GET, "/metrics")
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0, |value| {
                value
                    .trim()
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("{name} value {value:?}")) as u64
            })
    }
}

/// An event's counts: (available, reserved, purchased).
pub type Counts = (i64, i64, i64);

/// Sends a request and returns its status, JSON body (Null when not JSON) and its
/// `Retry-After` value, if any; `None` when it never got an answer (connection refused or
/// reset).
pub async fn exchange(request: RequestBuilder) -> Option<(StatusCode, Value, Option<String>)> {
    let response = request.send().await.ok()?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = response.json().await.unwrap_or(Value::Null);
    Some((status, body, retry_after))
}

/// A response's `Retry-After` value, if it has one (a value that is not text reads as `?`).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or("?").to_owned())
}

/// Like [`exchange`], for requests that must be answered.
pub async fn answered(request: RequestBuilder) -> (StatusCode, Value, Option<String>) {
    exchange(request)
        .await
        .expect("the server answers (no transport error)")
}

/// The `id` of a created resource's JSON.
pub fn id_of(body: &Value) -> String {
    body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("id in {body}"))
        .to_owned()
}

/// A device fingerprint no other buyer in the run uses.
pub fn new_fingerprint() -> String {
    format!("device-{}", Uuid::new_v4().simple())
}

/// An RFC 3339 timestamp from a JSON field, in the one shape docs/api.md gives every
/// timestamp the API renders: UTC as `Z`, at most six fractional digits.
pub fn documented_timestamp(value: &Value) -> time::OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp expected, got {value}"));
    let fraction = text
        .split_once('.')
        .map_or("", |(_, rest)| rest.trim_end_matches('Z'));
    assert!(
        text.ends_with('Z') && fraction.len() <= 6 && fraction.bytes().all(|b| b.is_ascii_digit()),
        "{text:?} is not UTC with `Z` and at most six fractional digits"
    );
    timestamp(value)
}

/// An RFC 3339 timestamp from a JSON field.
pub fn timestamp(value: &Value) -> time::OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp expected, got {value}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
}
