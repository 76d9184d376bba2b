//! Regression tests for what the schemathesis run (tests/fuzz/run.sh) found: places where
//! the OpenAPI document and the server disagree. Each drives the real router over HTTP and
//! holds the document to what the server does, so a fix may change either side.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app};

async fn openapi(app: &TestApp) -> Value {
    let (status, document) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    document
}

/// Follows a local `$ref` (`#/components/schemas/Name`) to what it names.
fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("non-local $ref {reference}"));
            resolve(
                document,
                document
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {reference}")),
            )
        }
        None => schema,
    }
}

/// Whether a property schema admits JSON null (`type` naming null, or a null branch).
fn admits_null(document: &Value, schema: &Value) -> bool {
    let schema = resolve(document, schema);
    let typed_null = match &schema["type"] {
        Value::String(t) => t == "null",
        Value::Array(types) => types.iter().any(|t| t == "null"),
        _ => false,
    };
    let branch_null = ["oneOf", "anyOf"].iter().any(|k| {
        schema[*k]
            .as_array()
            .is_some_and(|branches| branches.iter().any(|b| admits_null(document, b)))
    });
    typed_null || branch_null || schema["nullable"] == true
}

/// The schema of a request body's JSON.
fn request_schema<'a>(document: &'a Value, path: &str, method: &str) -> &'a Value {
    let operation = &document["paths"][path][method];
    let schema = resolve(
        document,
        &operation["requestBody"]["content"]["application/json"]["schema"],
    );
    // An optional body is documented as one of the object or null: take the object.
    match schema["oneOf"].as_array() {
        Some(branches) => branches
            .iter()
            .map(|branch| resolve(document, branch))
            .find(|branch| branch["type"] == "object")
            .unwrap_or(schema),
        None => schema,
    }
}

fn header_parameter<'a>(
    document: &'a Value,
    path: &str,
    method: &str,
    name: &str,
) -> Option<&'a Value> {
    document["paths"][path][method]["parameters"]
        .as_array()?
        .iter()
        .find(|p| {
            p["in"] == "header"
                && p["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
}

async fn new_event(app: &TestApp, total: i64) -> String {
    app.create_event(
        &format!("Fuzzed {}", uuid::Uuid::new_v4().simple()),
        total,
        None,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// schemathesis ST108 "SSE event violates schema": `GET /events/{id}/stream` documented its
/// `text/event-stream` with `StatsMessage` as the schema, which tools read (OpenAPI 3.2's
/// `itemSchema`, and before it `schema`) as the shape of each event, `{event, id, data}`:
/// every message failed with `"eventId" is a required property`. The event must be
/// documented with `data` a string whose JSON content is a `StatsMessage`.
#[tokio::test]
async fn stream_events_are_documented_as_events_carrying_a_stats_message() {
    let app = spawn_app().await;
    let document = openapi(&app).await;
    let media = &document["paths"]["/events/{id}/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"];
    assert!(media.is_object(), "the stream's media type is documented");
    let item = match media.get("itemSchema") {
        Some(item) => resolve(&document, item),
        None => resolve(&document, &media["schema"]),
    };
    let data = resolve(&document, &item["properties"]["data"]);
    assert_eq!(
        data["type"], "string",
        "an SSE event's `data` is text, documented as a string: {item}"
    );
    assert_eq!(data["contentMediaType"], "application/json", "{data}");
    let content = resolve(&document, &data["contentSchema"]);
    assert_eq!(
        content,
        resolve(
            &document,
            &json!({"$ref": "#/components/schemas/StatsMessage"})
        ),
        "the payload is a StatsMessage: {data}"
    );

    // And what arrives is such an event.
    let id = new_event(&app, 3).await;
    let mut stream =
        crate::helpers::SseReader::connect(&app, &format!("/events/{id}/stream")).await;
    let message = stream
        .next(std::time::Duration::from_secs(10))
        .await
        .expect("a snapshot");
    assert_eq!(message.event, "stats");
    for field in content["required"]
        .as_array()
        .expect("StatsMessage lists required fields")
    {
        let field = field.as_str().unwrap();
        assert!(
            message.data.get(field).is_some(),
            "{field} in {:?}",
            message.data
        );
    }
}

/// schemathesis ST202 "Schema-valid request rejected": `POST /events` with
/// `{"name": "RustConf 2027", "date": "2027-09-01T18:00:00Z", "maxTicketsPerFingerprint": 4,
/// "totalTickets": null}` and `POST /events/{id}/tickets` with `{}` or `{"quantity": null}`
/// got 422 VALIDATION_ERROR "is required", while the document listed no required field and
/// typed each as `[T, "null"]`. Fields the server requires must be documented as required
/// and not null.
#[tokio::test]
async fn fields_the_server_requires_are_documented_as_required() {
    let app = spawn_app().await;
    let document = openapi(&app).await;
    let id = new_event(&app, 5).await;

    let (status, body) = app
        .post_json(
            "/events",
            json!({"name": "RustConf 2027", "date": "2027-09-01T18:00:00Z",
                   "maxTicketsPerFingerprint": 4, "totalTickets": null}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    for body in [json!({}), json!({"quantity": null})] {
        let (status, answer) = app
            .send(
                app.request(Method::POST, &format!("/events/{id}/tickets"))
                    .header("X-Device-Fingerprint", "fuzzed")
                    .json(&body),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
    }

    let cases = [
        ("/events", "post", &["name", "date", "totalTickets"][..]),
        ("/events/{id}/tickets", "post", &["quantity"][..]),
    ];
    for (path, method, fields) in cases {
        let schema = request_schema(&document, path, method);
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for field in fields {
            assert!(
                required.contains(field),
                "{method} {path}: `{field}` is required by the server but not by the document: {schema}"
            );
            assert!(
                !admits_null(&document, &schema["properties"][*field]),
                "{method} {path}: the server refuses a null `{field}`, the document allows it: {schema}"
            );
        }
    }
}

/// schemathesis ST201 "Schema-violating request accepted": `POST /tickets/{id}/payment` with
/// no body got 200 (paid with the default test card, as the description says), while the
/// document marked the request body required. An optional body must be documented so.
#[tokio::test]
async fn the_optional_payment_body_is_documented_as_optional() {
    let app = spawn_app().await;
    let document = openapi(&app).await;
    let id = new_event(&app, 5).await;
    let (status, hold) = app.purchase(&id, 1, "no-body").await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (status, paid) = app
        .send(
            app.request(
                Method::POST,
                &format!("/tickets/{}/payment", hold["id"].as_str().unwrap()),
            )
            .header("X-Device-Fingerprint", "no-body"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["status"], "purchased");
    let body = &document["paths"]["/tickets/{id}/payment"]["post"]["requestBody"];
    assert_ne!(
        body["required"], true,
        "the server pays without a body; the document requires one: {body}"
    );
}

/// schemathesis ST202: `GET /events?page=9223372036854775806&limit=1` (and the same on
/// `GET /tickets`) got 400 "invalid parameter `page`: must be an integer of at least 1",
/// for a page the document allows (int64, minimum 1, no maximum) and that is at least 1.
/// Either such a page is answered (empty), or its real maximum is documented and named.
#[tokio::test]
async fn a_page_number_the_document_allows_is_answered_or_its_limit_documented() {
    let app = spawn_app().await;
    let document = openapi(&app).await;
    const PAGE: i64 = 9_223_372_036_854_775_806;
    const MAX_PAGE: i64 = 1_000_000_000;
    for path in ["/events", "/tickets"] {
        let (status, body) = app
            .send(
                app.request(Method::GET, &format!("{path}?page={PAGE}&limit=1"))
                    .header("X-Device-Fingerprint", "pager"),
            )
            .await;
        let page = document["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "page")
            .expect("page is documented");
        // docs/api.md: `page` is 1 to 1,000,000,000; the test, not the answer, decides that
        // this page is past it, so it must be refused and the maximum documented and named.
        assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
        assert_eq!(
            page["schema"]["maximum"].as_i64(),
            Some(MAX_PAGE),
            "{path}: the maximum is documented: {page}"
        );
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains(&MAX_PAGE.to_string()),
            "{path}: the message names the limit: {body}"
        );
        // The maximum itself is a page like any other: answered, empty.
        let (status, body) = app
            .send(
                app.request(Method::GET, &format!("{path}?page={MAX_PAGE}&limit=1"))
                    .header("X-Device-Fingerprint", "pager"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["data"], json!([]), "{path}: {body}");
    }
}

/// schemathesis ST202 (stateful phase): `DELETE /tickets/{id}/payment` with
/// `X-Device-Fingerprint: H#>T)i6<TAB>w` got 400 "must not contain control characters"; the
/// document types the header as any string. What the server refuses in a fingerprint (header
/// or `userFingerprint`) must be documented: its length limit and allowed characters.
#[tokio::test]
async fn fingerprint_rules_are_documented() {
    let app = spawn_app().await;
    let document = openapi(&app).await;
    let id = new_event(&app, 5).await;
    // docs/api.md: a fingerprint has no control characters (otherwise 400).
    let (status, body) = app.purchase(&id, 1, "H#>T)i6\tw").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let (status, body) = app.purchase(&id, 1, &"x".repeat(300)).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");

    let mut documented = Vec::new();
    for (path, method) in [
        ("/events/{id}/tickets", "post"),
        ("/tickets", "get"),
        ("/tickets/{id}", "get"),
        ("/tickets/{id}/payment", "post"),
        ("/tickets/{id}/payment", "delete"),
    ] {
        let header = header_parameter(&document, path, method, "X-Device-Fingerprint")
            .unwrap_or_else(|| panic!("{method} {path} documents X-Device-Fingerprint"));
        documented.push((
            format!("{method} {path} header"),
            resolve(&document, &header["schema"]),
        ));
    }
    for (path, method) in [
        ("/events/{id}/tickets", "post"),
        ("/tickets/{id}/payment", "post"),
    ] {
        let field = &request_schema(&document, path, method)["properties"]["userFingerprint"];
        documented.push((
            format!("{method} {path} userFingerprint"),
            resolve(&document, field),
        ));
    }
    for (place, schema) in documented {
        assert!(
            schema["maxLength"].as_i64().is_some_and(|n| n <= 256),
            "{place}: a 300-byte fingerprint is refused, the document sets no maxLength: {schema}"
        );
        assert!(
            schema["pattern"].is_string(),
            "{place}: control characters are refused, the document allows any: {schema}"
        );
    }
}

/// schemathesis ST202: `POST /events/{id}/tickets` and `POST /tickets/{id}/payment` with an
/// empty `Idempotency-Key` header got 400 "must be 1 to 255 characters", while the document
/// typed the header as any string. Its length limits must be documented.
#[tokio::test]
async fn idempotency_key_limits_are_documented() {
    let app = spawn_app().await;
    let document = openapi(&app).await;
    for (path, method) in [
        ("/events/{id}/tickets", "post"),
        ("/tickets/{id}/payment", "post"),
    ] {
        let Some(header) = header_parameter(&document, path, method, "Idempotency-Key") else {
            panic!("{method} {path} documents the Idempotency-Key header");
        };
        let schema = resolve(&document, &header["schema"]);
        assert_eq!(schema["minLength"], 1, "{method} {path}: {schema}");
        assert_eq!(schema["maxLength"], 255, "{method} {path}: {schema}");
    }
    let id = new_event(&app, 5).await;
    for key in [String::new(), "k".repeat(256)] {
        let (status, body) = app
            .send(
                app.request(Method::POST, &format!("/events/{id}/tickets"))
                    .header("X-Device-Fingerprint", "keyed")
                    .header("Idempotency-Key", &key)
                    .json(&json!({"quantity": 1})),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "key of {} bytes: {body}",
            key.len()
        );
    }
}
