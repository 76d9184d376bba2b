//! The OpenAPI document covers every route the router serves, and the docs page loads.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{
    Api, ServerProcess, assert_error, database_url, fresh_database, id_of, spawn_app,
};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Routes served on purpose outside the API description: the page, its assets and the docs.
const UNDOCUMENTED: [&str; 8] = [
    "/",
    "/assets/app.js",
    "/assets/scan.js",
    "/assets/style.css",
    "/assets/vendor/jsQR.js",
    "/assets/vendor/jsQR-LICENSE.txt",
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
        ("/events/{id}", vec!["get", "patch"]),
        ("/events/{id}/ticket-types", vec!["get", "post"]),
        ("/events/{id}/ticket-types/{typeId}", vec!["get", "patch"]),
        ("/events/{id}/quotas", vec!["get", "post"]),
        (
            "/events/{id}/quotas/{quotaId}",
            vec!["delete", "get", "patch"],
        ),
        ("/events/{id}/report", vec!["get"]),
        ("/events/{id}/orders", vec!["get"]),
        ("/events/{id}/stream", vec!["get"]),
        ("/events/{id}/tickets", vec!["post"]),
        ("/events/{id}/checkins", vec!["post"]),
        ("/events/{id}/checkins/batch", vec!["post"]),
        ("/events/{id}/checkins/conflicts", vec!["get"]),
        ("/events/{id}/checkins/stats", vec!["get"]),
        ("/events/{id}/checkin/export", vec!["get"]),
        ("/tickets", vec!["get"]),
        ("/tickets/{id}", vec!["get"]),
        ("/tickets/{id}/admissions/{admissionId}/qr.svg", vec!["get"]),
        ("/tickets/{id}/payment", vec!["delete", "post"]),
        ("/tickets/{id}/refund", vec!["post"]),
        ("/events/{id}/waiting-list", vec!["get", "post"]),
        ("/waiting-list", vec!["get"]),
        ("/waiting-list/{id}", vec!["delete", "get"]),
        ("/currencies", vec!["get"]),
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
        let concrete = path.replace("{id}", &id).replace("{admissionId}", &id);
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
    let admission = &doc["components"]["schemas"]["Admission"];
    let mut fields: Vec<&str> = admission["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("the Admission schema: {admission}"))
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "checkedInAt",
            "code",
            "gate",
            "id",
            "status",
            "ticketTypeId",
            "ticketTypeName"
        ]
    );
    let qr = &paths["/tickets/{id}/admissions/{admissionId}/qr.svg"]["get"]["responses"]["200"];
    assert!(qr["content"]["image/svg+xml"].is_object(), "{qr}");
}

#[tokio::test]
async fn swagger_ui_is_served_without_a_network() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
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

/// One sample's value in a Prometheus text page: the line that starts with `series` (name
/// and labels exactly as rendered) and a space; 0 when absent (a series appears on its first
/// record).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| {
            value
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{series} value {value:?}"))
        })
}

/// `GET /metrics` of a server: asserts the status and the content type, returns the text.
async fn metrics_page(api: &Api) -> String {
    let response = api.client.get(api.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    response.text().await.unwrap()
}

/// The metrics count what happened: after three holds and two sold-out refusals, each counter
/// and histogram moved by exactly that much. The recorder is process-wide, so the server is
/// a process of its own: no other test's requests are counted in it.
#[tokio::test]
async fn metrics_count_what_happened() {
    let server = ServerProcess::start(&database_url(&fresh_database().await), &[]).await;
    let id = id_of(&server.create_event("Metered", 3, None).await);
    let before = metrics_page(&server).await;
    // One at a time: each hold is its own batch and its own transaction.
    for buyer in ["m1", "m2", "m3"] {
        let (status, body) = server.purchase(&id, 1, buyer).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let holds = metrics_page(&server).await;
    for buyer in ["m4", "m5"] {
        let (status, body) = server.purchase(&id, 1, buyer).await;
        assert_error(status, &body, StatusCode::CONFLICT, "TICKETS_SOLD_OUT");
    }
    let after = metrics_page(&server).await;

    let moved = |from: &str, to: &str, series: &str| sample(to, series) - sample(from, series);
    let route = r#"method="POST",route="/events/{id}/tickets""#;
    for (from, to, series, by) in [
        (
            &before,
            &after,
            format!("boxoffice_http_requests_total{{{route},status=\"201\"}}"),
            3.0,
        ),
        (
            &before,
            &after,
            format!("boxoffice_http_requests_total{{{route},status=\"409\"}}"),
            2.0,
        ),
        (
            &before,
            &after,
            format!("boxoffice_http_request_duration_seconds_count{{{route}}}"),
            5.0,
        ),
        (
            &before,
            &after,
            r#"boxoffice_purchases_total{outcome="reserved"}"#.to_owned(),
            3.0,
        ),
        (
            &before,
            &after,
            r#"boxoffice_purchases_total{outcome="TICKETS_SOLD_OUT"}"#.to_owned(),
            2.0,
        ),
        (
            &before,
            &holds,
            "boxoffice_purchase_batch_size_count".to_owned(),
            3.0,
        ),
        (
            &before,
            &holds,
            "boxoffice_purchase_batch_size_sum".to_owned(),
            3.0,
        ),
        (
            &before,
            &holds,
            r#"boxoffice_purchase_batch_size_bucket{le="1"}"#.to_owned(),
            3.0,
        ),
        (
            &before,
            &holds,
            "boxoffice_event_lock_wait_seconds_count".to_owned(),
            3.0,
        ),
        (
            &before,
            &holds,
            "boxoffice_event_lock_hold_seconds_count".to_owned(),
            3.0,
        ),
    ] {
        assert_eq!(moved(from, to, &series), by, "{series} in\n{to}");
    }
    // A histogram's +Inf bucket is its count, and time spent is positive.
    for name in [
        "boxoffice_event_lock_hold_seconds",
        "boxoffice_event_lock_wait_seconds",
    ] {
        assert_eq!(
            sample(&holds, &format!("{name}_bucket{{le=\"+Inf\"}}")),
            sample(&holds, &format!("{name}_count")),
            "{name}"
        );
    }
    assert!(moved(&before, &holds, "boxoffice_event_lock_hold_seconds_sum") > 0.0);
    // The pool gauges are read at render time: the connections the pool has, split in two.
    let (idle, in_use) = (
        sample(&after, r#"boxoffice_db_pool_connections{state="idle"}"#),
        sample(&after, r#"boxoffice_db_pool_connections{state="in_use"}"#),
    );
    assert!(
        idle >= 0.0 && in_use >= 0.0 && idle + in_use >= 1.0,
        "idle {idle}, in use {in_use}"
    );

    // Made-up methods are one `other` series, not one each: a client cannot grow the page.
    for method in ["BREW", "X1", "X2"] {
        let answer = server
            .raw_answer(
                format!("{method} /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await;
        assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    }
    let page = metrics_page(&server).await;
    assert!(!page.contains("BREW") && !page.contains("\"X1\""), "{page}");
    let others: f64 = page
        .lines()
        .filter(|line| {
            line.starts_with(r#"boxoffice_http_requests_total{method="other",route="unmatched""#)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(others, 3.0, "{page}");
}

#[tokio::test]
async fn the_order_list_documents_its_filters_by_their_wire_names() {
    let app = spawn_app().await;
    let (_, doc) = app.get("/openapi.json").await;
    let operation = &doc["paths"]["/events/{id}/orders"]["get"];
    let names: Vec<&str> = operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["id", "page", "limit", "confirmationCode", "status"],
        "{operation}"
    );
    let status = &operation["parameters"][4]["schema"];
    assert!(status.to_string().contains("AllocationStatus"), "{status}");
    for code in ["200", "400", "401", "403", "404", "503"] {
        assert!(
            operation["responses"][code].is_object(),
            "{code}: {operation}"
        );
    }
    let read = &doc["paths"]["/tickets/{id}"]["get"];
    assert!(
        read["responses"]["403"]["description"]
            .as_str()
            .unwrap()
            .contains("FORBIDDEN")
    );
}

/// Every operation that takes a token names the bearer scheme, so that Swagger UI offers
/// "Authorize" and sends the header and generated clients carry it: as required by the routes
/// that always need one (the door's five, the report, refunds, the order list), as optional
/// (`[{}, {"bearer": []}]`) by the organiser's, which a server without `--admin-token` leaves
/// open, and by `GET /tickets/{id}` (the organiser's read beside the buyer's). Every route
/// that documents a 401 is among them, and no other operation names it. Red before the
/// scheme: no `securitySchemes`, and Swagger UI answered 401 on every organiser route.
#[tokio::test]
async fn operations_that_take_a_token_name_the_bearer_scheme() {
    let app = spawn_app().await;
    let (_, doc) = app.get("/openapi.json").await;
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (scheme["type"].as_str(), scheme["scheme"].as_str()),
        (Some("http"), Some("bearer")),
        "{scheme}"
    );
    let always = [
        ("get", "/events/{id}/checkin/export"),
        ("post", "/events/{id}/checkins"),
        ("post", "/events/{id}/checkins/batch"),
        ("get", "/events/{id}/checkins/conflicts"),
        ("get", "/events/{id}/checkins/stats"),
        ("get", "/events/{id}/report"),
        ("post", "/tickets/{id}/refund"),
        ("get", "/events/{id}/orders"),
    ];
    let required = serde_json::json!([{"bearer": []}]);
    let optional = serde_json::json!([{}, {"bearer": []}]);
    let (mut with_required, mut with_optional) = (0, 0);
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let security = &operation["security"];
            let key = (method.as_str(), path.as_str());
            if always.contains(&key) {
                assert_eq!(security, &required, "{method} {path}");
                with_required += 1;
            } else if operation["responses"]["401"].is_object() || key == ("get", "/tickets/{id}") {
                assert_eq!(security, &optional, "{method} {path}");
                with_optional += 1;
            } else {
                assert!(security.is_null(), "{method} {path}: {security}");
            }
        }
    }
    // The organiser's ten routes (events, types, quotas, the waiting list's read) and the
    // allocation read.
    assert_eq!((with_required, with_optional), (always.len(), 11));
}

#[tokio::test]
async fn every_operation_with_a_body_documents_its_size_limit_and_the_purchase_its_conflicts() {
    let app = spawn_app().await;
    let (_, doc) = app.get("/openapi.json").await;
    let mut with_body = 0;
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if operation["requestBody"].is_object() {
                with_body += 1;
                let limit = operation["responses"]["413"]["description"].as_str();
                assert!(
                    limit.is_some_and(|text| text.starts_with("PAYLOAD_TOO_LARGE")),
                    "{method} {path}: {limit:?}"
                );
            }
        }
    }
    // Events, types, quotas (create and change each), the purchase, the payment, the refund,
    // the waiting list, and check-in's two.
    assert!(with_body >= 12, "{with_body} operations with a body");
    let conflicts = doc["paths"]["/events/{id}/tickets"]["post"]["responses"]["409"]["description"]
        .as_str()
        .unwrap();
    for code in [
        "SALES_CLOSED",
        "TICKETS_SOLD_OUT",
        "INSUFFICIENT_TICKETS",
        "FINGERPRINT_LIMIT",
        "IDEMPOTENCY_IN_PROGRESS",
    ] {
        assert!(conflicts.contains(code), "{code}: {conflicts}");
    }
}

/// api.md's table of endpoints, at its top, names every operation the document lists.
#[tokio::test]
async fn the_api_guide_lists_every_documented_operation() {
    let app = spawn_app().await;
    let (_, doc) = app.get("/openapi.json").await;
    let guide = include_str!("../../docs/api.md");
    let table = &guide[..guide
        .find("## Conventions")
        .expect("api.md has its conventions")];
    let mut missing = Vec::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            let entry = format!("`{} {path}`", method.to_uppercase());
            if !table.contains(&entry) {
                missing.push(entry);
            }
        }
    }
    assert!(missing.is_empty(), "not in api.md's table: {missing:?}");
}
