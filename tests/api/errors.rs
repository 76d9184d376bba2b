//! The error contract: every failure is JSON `{"error", "code", "details"?}` with its status.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, admin_connection, assert_error, spawn_app};

#[tokio::test]
async fn malformed_json_and_wrong_content_type_are_bad_requests() {
    let app = spawn_app().await;
    let cases = [
        ("application/json", "{\"name\": "),
        ("application/json", "{name: 1}"),
        ("application/json", "[1, 2]"),
        ("application/json", "\"text\""),
        ("application/json", "{} trailing"),
        (
            "text/plain",
            "{\"name\": \"a\", \"date\": \"2027-01-01T00:00:00Z\", \"totalTickets\": 1}",
        ),
        ("application/x-www-form-urlencoded", "name=a"),
    ];
    for (content_type, body) in cases {
        let request = app
            .request(Method::POST, "/events")
            .header("content-type", content_type)
            .body(body);
        let (status, response) = app.send(request).await;
        assert_error(status, &response, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    let missing_type = app
        .request(Method::POST, "/events")
        .body("{\"name\": \"a\", \"date\": \"2027-01-01T00:00:00Z\", \"totalTickets\": 1}");
    let (status, response) = app.send(missing_type).await;
    assert_error(status, &response, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let count = app.row_count("events").await;
    assert_eq!(count, 0);
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let app = spawn_app().await;
    let (status, body) = app.get("/no/such/route").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, body) = app.send(app.request(Method::DELETE, "/events")).await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    );
    let (status, body) = app.send(app.request(Method::PUT, "/health")).await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    );
}

/// `POST /events` of an otherwise valid event with this name.
async fn post_event_named(app: &TestApp, name: String) -> (StatusCode, Value) {
    app.post_json(
        "/events",
        json!({"name": name, "date": "2027-01-01T00:00:00Z", "totalTickets": 1}),
    )
    .await
}

#[tokio::test]
async fn bodies_over_16_kib_are_refused() {
    let app = spawn_app().await;
    let (status, body) = post_event_named(&app, "x".repeat(17 * 1024)).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    );

    // Just under the limit is fine (and then judged on its content).
    let (status, body) = post_event_named(&app, "x".repeat(15 * 1024)).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let (status, body) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));

    // Make the database unreachable for the server: refuse new connections and end the
    // server's current ones.
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut admin = admin_connection().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS false"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .execute(&mut admin)
        .await
        .unwrap();

    let (status, body) = app.get("/ready").await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    let (status, body) = app.get("/events").await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    let (status, _) = app.get("/health").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "liveness does not depend on the database"
    );

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS true"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let mut recovered = false;
    for _ in 0..100 {
        if app.get("/ready").await.0 == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "the service recovers by itself when the database returns"
    );
}

#[tokio::test]
async fn an_internal_error_leaks_no_detail() {
    let app = spawn_app().await;
    // A database fault the code does not expect: a trigger that raises on every insert.
    sqlx::raw_sql(
        "CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN RAISE EXCEPTION 'secret internal detail 42'; END $$; \
         CREATE TRIGGER fail_insert BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION fail_insert();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (status, body) = app
        .post_json(
            "/events",
            json!({"name": "a", "date": "2027-01-01T00:00:00Z", "totalTickets": 1}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
    );
    let text = body.to_string();
    assert!(
        !text.contains("secret") && !text.contains("42") && !text.contains("trigger"),
        "{text}"
    );
}

#[tokio::test]
async fn a_null_body_not_sent_as_json_is_refused_and_changes_nothing() {
    // `null` is four bytes of body: without a JSON content type it is refused as any other
    // non-JSON body is, never taken as "no fields" and acted on.
    let app = spawn_app().await;
    let event = app.create_event("Null bodies", 5, None).await;
    let event_id = event["id"].as_str().expect("an id").to_owned();
    let (status, hold) = app.purchase(&event_id, 1, "null-body buyer").await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let pay = |content_type: Option<&str>| {
        let request = app
            .request(
                Method::POST,
                &format!("/tickets/{}/payment", hold["id"].as_str().expect("an id")),
            )
            .header("X-Device-Fingerprint", "null-body buyer")
            .body("null");
        match content_type {
            Some(content_type) => request.header("content-type", content_type),
            None => request,
        }
    };
    for content_type in [Some("text/plain"), None] {
        let (status, response) = app.send(pay(content_type)).await;
        assert_error(status, &response, StatusCode::BAD_REQUEST, "BAD_REQUEST");
        let patch = app
            .request(Method::PATCH, &format!("/events/{event_id}"))
            .body(" null ");
        let patch = match content_type {
            Some(content_type) => patch.header("content-type", content_type),
            None => patch,
        };
        let (status, response) = app.send(patch).await;
        assert_error(status, &response, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    let (_, read) = app
        .send(
            app.request(
                Method::GET,
                &format!("/tickets/{}", hold["id"].as_str().expect("an id")),
            )
            .header("X-Device-Fingerprint", "null-body buyer"),
        )
        .await;
    assert_eq!(read["status"], "reserved", "{read}");
    // Sent as JSON, `null` is an empty body, `{}`: the payment's fields are all optional.
    let (status, paid) = app.send(pay(Some("application/json"))).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["status"], "purchased", "{paid}");
}

#[tokio::test]
async fn a_lone_surrogate_escape_is_malformed_in_any_field_and_changes_nothing() {
    let app = spawn_app().await;
    let event = r#""date": "2027-01-01T00:00:00Z", "totalTickets": 1"#;
    for body in [
        format!(r#"{{"name": "a\ud800", {event}}}"#),
        // A field the route ignores: serde skipped its escapes, and the event was made.
        format!(r#"{{"name": "a", "note": "\ud800", {event}}}"#),
        format!(r#"{{"name": "a", "note": ["\udc00x"], {event}}}"#),
        format!(r#"{{"name": "a", "note": {{"k": "\ud83d"}}, {event}}}"#),
    ] {
        let request = app
            .request(Method::POST, "/events")
            .header("content-type", "application/json")
            .body(body.clone());
        let (status, response) = app.send(request).await;
        assert_error(status, &response, StatusCode::BAD_REQUEST, "BAD_REQUEST");
        assert!(
            response["error"]
                .as_str()
                .unwrap()
                .starts_with("malformed JSON"),
            "{body}: {response}"
        );
    }
    assert_eq!(app.row_count("events").await, 0);
    // A whole pair is one character, kept as sent.
    let request = app
        .request(Method::POST, "/events")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"name": "a \ud83d\ude00", "note": "\ud83d\ude00", {event}}}"#
        ));
    let (status, created) = app.send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "a \u{1F600}");
}

#[tokio::test]
async fn a_header_read_as_one_value_is_refused_when_sent_twice() {
    let app = spawn_app().await;
    let event_id = crate::helpers::id_of(&app.create_event("Twice", 10, None).await);
    let path = format!("/events/{event_id}/tickets");
    let cases = [
        ("X-Device-Fingerprint", ["device-a", "device-b"]),
        ("Idempotency-Key", ["key-a", "key-b"]),
        ("Content-Type", ["application/json", "text/plain"]),
    ];
    for (name, [first, second]) in cases {
        let mut request = app
            .request(Method::POST, &path)
            .json(&json!({"quantity": 1}))
            .header(name, first)
            .header(name, second);
        if name != "X-Device-Fingerprint" {
            request = request.header("X-Device-Fingerprint", "device-a");
        }
        let (status, body) = app.send(request).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
        assert_eq!(body["details"][0]["field"], name, "{body}");
    }
    assert_eq!(app.counts(&event_id).await, (10, 0, 0), "nothing held");
    // A buyer's read is refused the same way, and so is a token sent twice.
    let (_, held) = app.purchase(&event_id, 1, "device-a").await;
    let allocation = format!("/tickets/{}", crate::helpers::id_of(&held));
    let twice = app
        .request(Method::GET, &allocation)
        .header("X-Device-Fingerprint", "device-a")
        .header("X-Device-Fingerprint", "device-a");
    let (status, body) = app.send(twice).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let twice = app
        .request(Method::GET, &allocation)
        .header("Authorization", "Bearer one")
        .header("Authorization", "Bearer two");
    let (status, body) = app.send(twice).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_eq!(body["details"][0]["field"], "Authorization", "{body}");
}

#[tokio::test]
async fn a_purchase_checks_what_its_body_shows_before_looking_up_the_event() {
    let app = spawn_app().await;
    let unknown = format!("/events/{}", uuid::Uuid::new_v4());
    let type_id = uuid::Uuid::new_v4();
    let line = json!({"ticketTypeId": type_id, "quantity": 1});
    for (route, body, status, code) in [
        ("tickets", json!({"quantity": 0}), 422, "VALIDATION_ERROR"),
        (
            "tickets",
            json!({"lines": [line, line]}),
            422,
            "VALIDATION_ERROR",
        ),
        (
            "tickets",
            json!({"lines": [[type_id, 1]]}),
            422,
            "VALIDATION_ERROR",
        ),
        ("tickets", json!({"lines": [line]}), 404, "NOT_FOUND"),
        ("tickets", json!({"quantity": 1}), 404, "NOT_FOUND"),
        (
            "waiting-list",
            json!({"quantity": 0}),
            422,
            "VALIDATION_ERROR",
        ),
        (
            "waiting-list",
            json!({"quantity": 1, "ticketTypeId": "x"}),
            422,
            "VALIDATION_ERROR",
        ),
        (
            "waiting-list",
            json!({"quantity": 1, "ticketTypeId": type_id}),
            404,
            "NOT_FOUND",
        ),
    ] {
        let request = app
            .request(Method::POST, &format!("{unknown}/{route}"))
            .header("X-Device-Fingerprint", "device-a")
            .json(&body);
        let (answered, response) = app.send(request).await;
        assert_error(
            answered,
            &response,
            StatusCode::from_u16(status).unwrap(),
            code,
        );
    }
}
