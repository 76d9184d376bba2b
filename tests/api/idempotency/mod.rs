//! Idempotent retries (`Idempotency-Key`): the same key and request replays the first
//! response with no second effect, and a claim is settled by what really happened:
//!
//! - [`replay`]: replays, another request under the key, duplicates in flight, refusals,
//!   payments, malformed keys, the 24-hour lifetime, a crashed attempt's claim;
//! - [`cut_off`]: a request cut off by the request timeout or a kill, and the response and
//!   its effect committing together or not at all;
//! - [`fencing`]: an attempt whose claim was taken over as stale records nothing;
//! - [`parked`]: a payment whose provider outcome is unknown parks its key until recovery;
//! - [`waits`]: the wait for a first attempt, the takeover of an expired key (written for
//!   mutants of the protocol that survived; see docs/testing.md).

mod cut_off;
mod fencing;
mod parked;
mod replay;
mod waits;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// A keyed purchase of `quantity` by `buyer`: its status, JSON body and whether it was a
/// replay.
pub(crate) async fn keyed_purchase(
    app: &TestApp,
    event: &str,
    quantity: i64,
    buyer: &str,
    key: &str,
) -> (StatusCode, Value, bool) {
    let response = app
        .request(Method::POST, &format!("/events/{event}/tickets"))
        .header("X-Device-Fingerprint", buyer)
        .header("Idempotency-Key", key)
        .json(&json!({ "quantity": quantity }))
        .send()
        .await
        .unwrap();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let status = response.status();
    (status, response.json().await.unwrap(), replayed)
}
