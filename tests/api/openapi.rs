//! The OpenAPI document covers every route the router serves, and the docs page loads.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::spawn_app;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Routes served on purpose outside the API description: the page, its assets and the docs.
const UNDOCUMENTED: [&str; 5] = [
    "/",
    "/assets/app.js",
    "/assets/style.css",
    "/openapi.json",
    "/docs/",
];

#[tokio::test]
async fn the_document_lists_every_route_and_only_served_ones() {
    let app = spawn_app().await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/events", vec!["get", "post"]),
        ("/events/{id}", vec!["get"]),
        ("/events/{id}/stream", vec!["get"]),
        ("/events/{id}/tickets", vec!["post"]),
        ("/tickets", vec!["get"]),
        ("/tickets/{id}", vec!["get"]),
        ("/tickets/{id}/payment", vec!["delete", "post"]),
        ("/health", vec!["get"]),
        ("/ready", vec!["get"]),
        ("/metrics", vec!["get"]),
    ];
    assert_eq!(
        paths.len(),
        expected.len(),
        "documented paths: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    let id = uuid::Uuid::new_v4().to_string();
    for (path, methods) in expected {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is documented"));
        let mut documented: Vec<&str> = METHODS
            .iter()
            .copied()
            .filter(|m| item.get(*m).is_some())
            .collect();
        documented.sort();
        let mut sorted = methods.clone();
        sorted.sort();
        assert_eq!(documented, sorted, "methods of {path}");
        let concrete = path.replace("{id}", &id);
        for method in METHODS {
            let request = app.request(
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                &concrete,
            );
            let response = request.send().await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if methods.contains(&method) {
                // Served: whatever it answers, it is not the router's "no such route".
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert!(
                    !(status == StatusCode::NOT_FOUND && body["error"] == "route not found"),
                    "{method} {path}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but undocumented"
                );
            }
        }
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents success"
            );
            if path != "/health" && path != "/metrics" {
                assert!(
                    responses
                        .keys()
                        .any(|s| s.starts_with('4') || s.starts_with('5')),
                    "{method} {path} documents errors"
                );
            }
        }
    }
    for path in UNDOCUMENTED {
        let status = app
            .request(Method::GET, path)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK, "{path} is served");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn swagger_ui_is_served_without_a_network() {
    let app = spawn_app().await;
    let page = app
        .client
        .get(app.url("/docs/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    // Its script is served by us, not a CDN.
    let script = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert!(
        !page.contains("https://"),
        "no external asset in the docs page"
    );
}

#[tokio::test]
async fn metrics_are_exposed_in_prometheus_format() {
    let app = spawn_app().await;
    let event = app.create_event("Metered", 1, None).await;
    let id = event["id"].as_str().unwrap();
    app.purchase(id, 1, "m1").await;
    app.purchase(id, 1, "m2").await;
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for needle in [
        "boxoffice_http_requests_total{method=\"POST\",route=\"/events/{id}/tickets\",status=\"201\"}",
        "boxoffice_http_request_duration_seconds_bucket",
        "boxoffice_purchases_total{outcome=\"reserved\"}",
        "boxoffice_purchases_total{outcome=\"TICKETS_SOLD_OUT\"}",
        "boxoffice_purchase_batch_size_bucket",
        "boxoffice_event_lock_wait_seconds_bucket",
        "boxoffice_event_lock_hold_seconds_bucket",
        "boxoffice_db_pool_connections{state=\"idle\"}",
        "boxoffice_db_pool_connections{state=\"in_use\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}
