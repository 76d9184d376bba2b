//! Abuse and access: organiser token, rate limits, CORS, security headers.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{assert_error, spawn_app, spawn_app_with};

fn new_event() -> serde_json::Value {
    json!({"name": "Guarded", "date": "2027-01-01T00:00:00Z", "totalTickets": 5})
}

#[tokio::test]
async fn organiser_token_guards_event_creation() {
    let app = spawn_app_with(&["--admin-token", "s3cret-organiser"]).await;
    let (status, body) = app.post_json("/events", new_event()).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let response = app
        .request(Method::POST, "/events")
        .json(&new_event())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    for wrong in [
        "Bearer nope",
        "Bearer s3cret-organiser-but-longer",
        "Bearer s3cret-organise",
    ] {
        let request = app
            .request(Method::POST, "/events")
            .header("Authorization", wrong)
            .json(&new_event());
        let (status, body) = app.send(request).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    let basic = app
        .request(Method::POST, "/events")
        .header("Authorization", "Basic czNjcmV0")
        .json(&new_event());
    let (status, body) = app.send(basic).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let count = app.row_count("events").await;
    assert_eq!(count, 0);

    let request = app
        .request(Method::POST, "/events")
        .header("Authorization", "Bearer s3cret-organiser")
        .json(&new_event());
    let (status, _) = app.send(request).await;
    assert_eq!(status, StatusCode::CREATED);
    // Buyers need no token.
    assert_eq!(app.get("/events").await.0, StatusCode::OK);
}

/// An admin token configured with surrounding whitespace (a secret file's final line break)
/// is the token without it, as a presented token is trimmed: before, no header could match
/// it and every organiser request was 403 (found by a helper on 2 December 2026).
#[tokio::test]
async fn an_admin_token_configured_with_a_line_break_is_the_token_without_it() {
    let app = spawn_app_with(&["--admin-token", " s3cret-from-a-file\n"]).await;
    let request = app
        .request(Method::POST, "/events")
        .header("Authorization", "Bearer s3cret-from-a-file")
        .json(&new_event());
    let (status, body) = app.send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let wrong = app
        .request(Method::POST, "/events")
        .header("Authorization", "Bearer s3cret-from-a-fil")
        .json(&new_event());
    let (status, body) = app.send(wrong).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FORBIDDEN");
}

#[tokio::test]
async fn without_a_token_creation_is_open() {
    let app = spawn_app().await;
    assert_eq!(
        app.post_json("/events", new_event()).await.0,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let app = spawn_app_with(&[
        "--rate-limit-per-fingerprint",
        "1",
        "--rate-limit-per-address",
        "0",
    ])
    .await;
    let event = app.create_event("Limited", 100, None).await;
    let id = event["id"].as_str().unwrap();
    // A burst of three per fingerprint, then refusal.
    for _ in 0..3 {
        assert_eq!(app.purchase(id, 1, "hammer").await.0, StatusCode::CREATED);
    }
    let response = app
        .request(Method::POST, &format!("/events/{id}/tickets"))
        .header("X-Device-Fingerprint", "hammer")
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMITED");
    // Another buyer is not affected, and a refused request changed nothing.
    assert_eq!(app.purchase(id, 1, "patient").await.0, StatusCode::CREATED);
    assert_eq!(app.event(id).await["reservedTickets"], 4);

    let per_address = spawn_app_with(&[
        "--rate-limit-per-address",
        "1",
        "--rate-limit-per-fingerprint",
        "0",
    ])
    .await;
    let event = per_address.create_event("Per address", 100, None).await;
    let id = event["id"].as_str().unwrap();
    let mut statuses = Vec::new();
    for i in 0..4 {
        statuses.push(per_address.purchase(id, 1, &format!("buyer-{i}")).await.0);
    }
    assert_eq!(statuses[..3], [StatusCode::CREATED; 3]);
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);

    let unlimited = spawn_app_with(&[
        "--rate-limit-per-address",
        "0",
        "--rate-limit-per-fingerprint",
        "0",
    ])
    .await;
    let event = unlimited.create_event("Unlimited", 100, None).await;
    let id = event["id"].as_str().unwrap();
    for _ in 0..40 {
        assert_eq!(
            unlimited.purchase(id, 1, "same").await.0,
            StatusCode::CREATED
        );
    }
}

#[tokio::test]
async fn cors_only_for_configured_origins() {
    let closed = spawn_app().await;
    let response = closed
        .request(Method::GET, "/events")
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let open = spawn_app_with(&[
        "--cors-origin",
        "https://tickets.example,https://box.example",
    ])
    .await;
    let preflight = open
        .request(Method::OPTIONS, "/events")
        .header("Origin", "https://box.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type,x-device-fingerprint",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::OK);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://box.example"
    );
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("x-device-fingerprint"), "{allowed}");
    let other = open
        .request(Method::GET, "/events")
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn security_headers_on_the_page() {
    let app = spawn_app().await;
    let response = app.request(Method::GET, "/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    let page = response.text().await.unwrap();
    assert!(!page.contains("<script>"), "no inline script");
}
