//! How many connections each client address holds open (`--max-connections-per-address`),
//! and the answer of a connection past that limit.
//!
//! A client that opens connections and never finishes a request on them (or simply opens
//! thousands) would otherwise take every file descriptor and every task of the instance:
//! a helper held 19,985 such connections from one address and `/health` stopped answering.
//! The head timeout (`--request-head-timeout-ms`, in `http::serve`) ends each such
//! connection in time; this limit keeps one address from holding more than its share
//! meanwhile.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::IntoResponse;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::error::ApiError;
use super::extract::forwarded::TrustedProxies;

/// How long a refused connection is kept, at most, to deliver its answer (see [`deliver`]).
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// The open connections of every client address, for the limit. Cloned handles share one
/// count.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    /// Most connections per address; 0: no limit.
    per_address: u32,
    /// Peers not counted: trusted proxies carry many clients.
    exempt: TrustedProxies,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

/// One counted connection's place under its address's limit, given back when dropped (when
/// the connection's task ends, however it ends).
#[derive(Debug)]
pub struct Slot {
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
    address: IpAddr,
}

/// A connection over its address's limit.
#[derive(Debug)]
pub struct OverLimit;

impl ConnectionLimit {
    /// At most `per_address` open connections per client address (0: no limit), peers in
    /// `exempt` not counted.
    pub fn new(per_address: u32, exempt: TrustedProxies) -> Self {
        Self {
            per_address,
            exempt,
            open: Arc::default(),
        }
    }

    /// Counts a new connection from `peer`: its slot (`None` when it is not counted: no
    /// limit, or a trusted proxy), or [`OverLimit`] when its address already holds the most.
    pub fn take(&self, peer: IpAddr) -> Result<Option<Slot>, OverLimit> {
        if self.per_address == 0 || self.exempt.contains(peer) {
            return Ok(None);
        }
        // A dual-stack listener shows an IPv4 peer as an IPv4-mapped IPv6 address: one
        // client, one count.
        let address = peer.to_canonical();
        let mut open = self.open.lock().expect("connection counts poisoned");
        let count = open.entry(address).or_insert(0);
        if *count >= self.per_address {
            return Err(OverLimit);
        }
        *count += 1;
        Ok(Some(Slot {
            open: self.open.clone(),
            address,
        }))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("connection counts poisoned");
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Most refused connections kept at once to deliver their answer: past it, a refused
/// connection is closed at once, unanswered, so a flood of refused connections holds no more
/// than this many descriptors and tasks beside the ones under the limit.
const MAX_LINGERING: usize = 1024;

/// Answers connections past their address's limit (429 `TOO_MANY_CONNECTIONS`, closed).
#[derive(Debug, Clone)]
pub struct Refusals {
    /// The answer's status line and headers but `Date` (see [`Refusals::new`]).
    head: Bytes,
    /// The body, after the blank line.
    body: Bytes,
    lingering: Arc<Semaphore>,
}

impl Refusals {
    /// The answer, as bytes: the HTTP/1.1 head and body of [`ApiError::TooManyConnections`]
    /// (its JSON body and `Retry-After: 1` as `ApiError` makes them), with the headers the
    /// router's layers give every response (`X-Content-Type-Options: nosniff`) and
    /// `Connection: close`; `Date` is added to each answer as it is sent.
    pub async fn new() -> Self {
        let response = ApiError::TooManyConnections.into_response();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("an error body is a complete JSON buffer");
        let mut answer = BytesMut::new();
        answer.put_slice(
            format!(
                "HTTP/1.1 {} {}\r\n",
                parts.status.as_str(),
                parts.status.canonical_reason().unwrap_or_default()
            )
            .as_bytes(),
        );
        for (name, value) in &parts.headers {
            answer.put_slice(name.as_str().as_bytes());
            answer.put_slice(b": ");
            answer.put_slice(value.as_bytes());
            answer.put_slice(b"\r\n");
        }
        answer.put_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        answer.put_slice(b"x-content-type-options: nosniff\r\n");
        answer.put_slice(b"connection: close\r\n");
        Self {
            head: answer.freeze(),
            body,
            lingering: Arc::new(Semaphore::new(MAX_LINGERING)),
        }
    }

    /// The whole answer as sent now: the head, `Date` (RFC 9110's IMF-fixdate), the blank
    /// line and the body.
    fn answer(&self) -> Vec<u8> {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        [
            &self.head[..],
            format!("date: {date}\r\n\r\n").as_bytes(),
            &self.body[..],
        ]
        .concat()
    }

    /// Answers `stream` and closes it, within [`REFUSAL_LINGER`], on a task of its own; or,
    /// with [`MAX_LINGERING`] refusals under way already, closes it at once. Nothing it sent
    /// is served.
    pub fn refuse(&self, stream: TcpStream) {
        let Ok(permit) = self.lingering.clone().try_acquire_owned() else {
            return;
        };
        let answer = self.answer();
        tokio::spawn(async move {
            deliver(stream, &answer).await;
            drop(permit);
        });
    }
}

/// Writes `answer`, then reads and discards what the client sent until it closes, so that
/// closing does not reset the connection and lose the answer (a close with unread bytes
/// sends a reset); gives up after [`REFUSAL_LINGER`].
async fn deliver(mut stream: TcpStream, answer: &[u8]) {
    let delivered = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(answer).await?;
        stream.shutdown().await?;
        let mut discarded = [0u8; 4096];
        while stream.read(&mut discarded).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
    if let Ok(Err(error)) = delivered {
        tracing::trace!(%error, "a refused connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn an_address_holds_at_most_its_limit_and_gets_its_places_back() {
        let limit = ConnectionLimit::new(2, TrustedProxies::default());
        let first = limit.take(loopback(1)).unwrap();
        let second = limit.take(loopback(1)).unwrap();
        assert!(first.is_some() && second.is_some());
        assert!(
            limit.take(loopback(1)).is_err(),
            "a third is over the limit"
        );
        // The same client seen through a dual-stack listener is the same address.
        let mapped = "::ffff:127.0.0.1".parse().unwrap();
        assert!(limit.take(mapped).is_err());
        assert!(
            limit.take(loopback(2)).unwrap().is_some(),
            "another address has its own count"
        );
        drop(first);
        assert!(limit.take(loopback(1)).unwrap().is_some());
        drop(second);
        assert!(limit.open.lock().unwrap().get(&loopback(2)).is_none());
    }

    #[test]
    fn trusted_proxies_and_no_limit_are_not_counted() {
        let proxies = TrustedProxies::new(vec!["127.0.0.9/32".parse().unwrap()]);
        let limit = ConnectionLimit::new(1, proxies);
        let slots: Vec<_> = (0..5).map(|_| limit.take(loopback(9)).unwrap()).collect();
        assert!(slots.iter().all(Option::is_none));
        let unlimited = ConnectionLimit::new(0, TrustedProxies::default());
        assert!(unlimited.take(loopback(1)).unwrap().is_none());
    }

    #[tokio::test]
    async fn the_refusal_is_a_complete_json_answer() {
        let answer = Refusals::new().await.answer();
        let text = std::str::from_utf8(&answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{head}"
        );
        assert!(
            head.contains("\r\ncontent-type: application/json"),
            "{head}"
        );
        assert!(head.contains("\r\nretry-after: 1"), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(
            head.contains("\r\nx-content-type-options: nosniff"),
            "{head}"
        );
        let date = head
            .lines()
            .find_map(|line| line.strip_prefix("date: "))
            .unwrap_or_else(|| panic!("a Date: {head}"));
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], "TOO_MANY_CONNECTIONS");
    }
}
