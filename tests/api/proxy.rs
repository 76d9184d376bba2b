//! Behind a reverse proxy: the client address comes from `Forwarded` or `X-Forwarded-For`
//! when the TCP peer is a trusted proxy (`--trusted-proxy`), and from the peer otherwise.
//! Every request here comes from 127.0.0.1, playing the proxy.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::json;

use crate::helpers::{TestApp, assert_error, id_of, new_fingerprint, spawn_app_with};

/// Forwarding header lines, in the order they are sent.
type Lines<'a> = &'a [(&'a str, &'a str)];

/// The per-address limit admits bursts of three; the per-fingerprint one never interferes.
const ONE_PER_SECOND_PER_ADDRESS: [&str; 4] = [
    "--rate-limit-per-address",
    "1",
    "--rate-limit-per-fingerprint",
    "1000",
];

async fn spawn_limited(trusted: Option<&str>) -> TestApp {
    let mut flags = ONE_PER_SECOND_PER_ADDRESS.to_vec();
    if let Some(networks) = trusted {
        flags.extend(["--trusted-proxy", networks]);
    }
    spawn_app_with(&flags).await
}

fn with_lines(mut request: RequestBuilder, lines: Lines<'_>) -> RequestBuilder {
    for (name, value) in lines {
        request = request.header(*name, *value);
    }
    request
}

/// A purchase of one ticket by a buyer with a fresh device fingerprint, relayed with these
/// forwarding header lines.
async fn relayed_purchase(app: &TestApp, event_id: &str, lines: Lines<'_>) -> StatusCode {
    let request = app
        .request(Method::POST, &format!("/events/{event_id}/tickets"))
        .header("X-Device-Fingerprint", new_fingerprint())
        .json(&json!({"quantity": 1}));
    app.send(with_lines(request, lines)).await.0
}

/// Sends every request of `first` (one client, however its headers vary), expecting the
/// burst of three to pass and the fourth to be refused; then `second`, another client,
/// which must still pass.
async fn assert_separate_budgets(app: &TestApp, first: [Lines<'_>; 4], second: Lines<'_>) {
    // Events must have distinct names: one app may run this more than once.
    let name = format!("Behind a proxy {}", uuid::Uuid::new_v4());
    let event = app.create_event(&name, 100, None).await;
    let event_id = event["id"].as_str().unwrap();
    let mut statuses = Vec::new();
    for lines in first {
        statuses.push(relayed_purchase(app, event_id, lines).await);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(
        relayed_purchase(app, event_id, second).await,
        StatusCode::CREATED,
        "another forwarded client has its own budget"
    );
}

/// A request without a device fingerprint, so the buyer is derived from the client
/// address, the same `User-Agent` and `Accept-Language`.
fn anonymous(app: &TestApp, method: Method, path: &str, lines: Lines<'_>) -> RequestBuilder {
    let request = app
        .request(method, path)
        .header("User-Agent", "Mozilla/5.0 test")
        .header("Accept-Language", "nl-BE");
    with_lines(request, lines)
}

/// Holds a ticket as the derived buyer behind `holder`, then reads the hold as each of
/// `same` (expected to be that buyer) and `others` (expected to be someone else).
async fn assert_derived_buyers(
    app: &TestApp,
    holder: Lines<'_>,
    same: &[Lines<'_>],
    others: &[Lines<'_>],
) {
    let event = app.create_event("Anonymous behind a proxy", 10, None).await;
    let event_id = event["id"].as_str().unwrap();
    let path = format!("/events/{event_id}/tickets");
    let request = anonymous(app, Method::POST, &path, holder).json(&json!({"quantity": 1}));
    let (status, hold) = app.send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let path = format!("/tickets/{}", id_of(&hold));
    for lines in same {
        let (status, body) = app.send(anonymous(app, Method::GET, &path, lines)).await;
        assert_eq!(status, StatusCode::OK, "{lines:?}: {body}");
    }
    for lines in others {
        let (status, body) = app.send(anonymous(app, Method::GET, &path, lines)).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");
    }
}

const XFF: &str = "X-Forwarded-For";
const FORWARDED: &str = "Forwarded";

#[tokio::test]
async fn x_forwarded_for_clients_get_their_own_budgets_and_identities() {
    let app = spawn_limited(Some("127.0.0.1/8")).await;
    let alice = [(XFF, "203.0.113.1")].as_slice();
    assert_separate_budgets(&app, [alice; 4], &[(XFF, "203.0.113.2")]).await;

    // Addresses whose budgets are untouched: holding takes one.
    assert_derived_buyers(
        &app,
        &[(XFF, "203.0.113.11")],
        &[&[(XFF, "203.0.113.11")]],
        &[&[(XFF, "203.0.113.12")], &[]],
    )
    .await;
}

#[tokio::test]
async fn forwarded_clients_get_their_own_budgets_and_identities() {
    let app = spawn_limited(Some("127.0.0.1/8")).await;
    // The port does not matter: the address is the client.
    assert_separate_budgets(
        &app,
        [
            &[(FORWARDED, r#"for="[2001:db8::1]:4711""#)],
            &[(FORWARDED, r#"for="[2001:db8::1]:4712";proto=https"#)],
            &[(FORWARDED, r#"For="[2001:db8::1]""#)],
            &[(FORWARDED, r#"proto=http;for="[2001:db8::1]:_obfuscated""#)],
        ],
        &[(FORWARDED, r#"for="[2001:db8::2]:4711""#)],
    )
    .await;

    assert_derived_buyers(
        &app,
        &[(FORWARDED, r#"for="[2001:db8::11]:4711""#)],
        &[
            &[(FORWARDED, r#"for="[2001:db8::11]:80""#)],
            // The same address, whichever header names it.
            &[(XFF, "2001:db8::11")],
        ],
        &[
            &[(FORWARDED, r#"for="[2001:db8::12]:4711""#)],
            &[(FORWARDED, "for=192.0.2.1")],
            &[],
        ],
    )
    .await;
}

#[tokio::test]
async fn the_right_most_untrusted_address_is_the_client() {
    let app = spawn_limited(Some("127.0.0.1/8, 10.0.0.0/8")).await;
    // Whatever the client writes left of its real address buys it no fresh budget.
    assert_separate_budgets(
        &app,
        [
            &[(XFF, "198.51.100.1, 203.0.113.7")],
            &[(XFF, "198.51.100.2, 203.0.113.7")],
            // A trusted hop in between (a second proxy) is stepped over.
            &[(XFF, "198.51.100.3, 203.0.113.7, 10.0.0.9")],
            // Two header lines are one list, in order.
            &[(XFF, "198.51.100.4"), (XFF, "203.0.113.7")],
        ],
        &[(XFF, "198.51.100.1, 203.0.113.8")],
    )
    .await;

    assert_separate_budgets(
        &app,
        [
            &[(FORWARDED, "for=198.51.100.1, for=192.0.2.7")],
            &[(FORWARDED, r#"for="[2001:db8::66]", for=192.0.2.7"#)],
            &[(FORWARDED, "for=192.0.2.7;proto=https, for=10.0.0.9")],
            &[(FORWARDED, "for=unknown"), (FORWARDED, "for=192.0.2.7")],
        ],
        &[(FORWARDED, "for=198.51.100.1, for=192.0.2.8")],
    )
    .await;

    assert_derived_buyers(
        &app,
        &[(XFF, "203.0.113.17")],
        &[
            &[(XFF, "198.51.100.1, 203.0.113.17")],
            &[(XFF, "spoofed, 203.0.113.17")],
        ],
        &[&[(XFF, "203.0.113.17, 198.51.100.1")]],
    )
    .await;
}

#[tokio::test]
async fn forwarding_headers_from_untrusted_peers_are_ignored() {
    // No trusted proxies, then a list that does not include the peer (127.0.0.1).
    for trusted in [None, Some("10.0.0.0/8,192.0.2.1")] {
        let app = spawn_limited(trusted).await;
        // Every claimed address is the same derived buyer: the peer's.
        assert_derived_buyers(
            &app,
            &[(XFF, "203.0.113.1")],
            &[
                &[(XFF, "203.0.113.2")],
                &[(FORWARDED, "for=192.0.2.9")],
                &[],
            ],
            &[],
        )
        .await;

        // And they share the peer's budget, one of which the hold above took.
        let event = app.create_event("Spoofed", 100, None).await;
        let event_id = event["id"].as_str().unwrap();
        let mut statuses = Vec::new();
        for lines in [
            [(XFF, "203.0.113.3")],
            [(FORWARDED, "for=203.0.113.4")],
            [(FORWARDED, r#"for="[2001:db8::5]""#)],
        ] {
            statuses.push(relayed_purchase(&app, event_id, &lines).await);
        }
        assert_eq!(
            statuses,
            [
                StatusCode::CREATED,
                StatusCode::CREATED,
                StatusCode::TOO_MANY_REQUESTS
            ],
            "{trusted:?}"
        );
    }
}
