//! A minimal Server-Sent Events reader over a streaming response: enough to check what the
//! server sends on `/events/{id}/stream`.

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;

use super::Api;

/// One Server-Sent Events message.
#[derive(Debug, Clone)]
pub struct SseMessage {
    pub event: String,
    pub id: Option<u64>,
    pub data: Value,
    /// When the chunk that completed it was read off the connection (the harness reads
    /// promptly only while a test is reading the stream).
    pub received: tokio::time::Instant,
}

impl SseMessage {
    /// `statistics.remainingTickets` of a statistics message.
    pub fn remaining(&self) -> i64 {
        self.data["statistics"]["remainingTickets"]
            .as_i64()
            .expect("remainingTickets")
    }

    /// `lastEvent.type` of a statistics message, if it names the change that caused it.
    pub fn last_type(&self) -> Option<&str> {
        self.data["lastEvent"]["type"].as_str()
    }
}

/// A minimal SSE reader over a streaming response: enough to check what the server sends.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
    /// When the last chunk was read.
    last_chunk: tokio::time::Instant,
}

impl SseReader {
    /// Opens a stream at `path` on a server (in process or a separate process).
    pub async fn connect(app: &Api, path: &str) -> Self {
        Self::connect_url(&app.client, &app.url(path)).await
    }

    /// Opens a stream at a full URL, e.g. on a server running as a separate process.
    pub async fn connect_url(client: &reqwest::Client, url: &str) -> Self {
        Self::connect_request(client.get(url)).await
    }

    /// Opens a stream with a request of the caller's, e.g. one carrying `Last-Event-ID`.
    pub async fn connect_request(request: RequestBuilder) -> Self {
        let response = request.send().await.expect("stream connects");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            response,
            buffer: String::new(),
            last_chunk: tokio::time::Instant::now(),
        }
    }

    /// The next message (comments skipped), or `None` if the stream ended or `timeout` passed.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        event = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("id:") {
                        id = value.trim().parse().ok();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a comment (keep-alive) block
                }
                let data = serde_json::from_str(&data).expect("stream data is JSON");
                return Some(SseMessage {
                    event,
                    id,
                    data,
                    received: self.last_chunk,
                });
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?;
            match chunk.expect("stream reads") {
                Some(bytes) => {
                    self.last_chunk = tokio::time::Instant::now();
                    self.buffer.push_str(&String::from_utf8_lossy(&bytes));
                }
                None => return None,
            }
        }
    }

    /// Reads messages until one satisfies `done`, returning all read (the last matching).
    pub async fn until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&SseMessage) -> bool,
    ) -> Vec<SseMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("no matching message within {timeout:?}; saw {seen:#?}"));
            let finished = done(&message);
            seen.push(message);
            if finished {
                return seen;
            }
        }
    }
}
