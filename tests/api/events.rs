//! The events API: create, list, read, pagination, duplicates and the count constraints.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn create_returns_201_with_location_and_the_event() {
    let app = spawn_app().await;
    let response = app
        .request(reqwest::Method::POST, "/events")
        .json(&json!({"name": "  Opening Night  ", "date": "2027-03-01T20:00:00+02:00", "totalTickets": 250, "maxTicketsPerFingerprint": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let event: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/events/{}", event["id"].as_str().unwrap())
    );
    assert_eq!(event["name"], "Opening Night");
    assert_eq!(
        event["date"], "2027-03-01T18:00:00Z",
        "dates are returned in UTC"
    );
    assert_eq!(event["totalTickets"], 250);
    assert_eq!(event["availableTickets"], 250);
    assert_eq!(event["reservedTickets"], 0);
    assert_eq!(event["purchasedTickets"], 0);
    assert_eq!(event["maxTicketsPerFingerprint"], 4);
    for field in ["createdAt", "updatedAt"] {
        let text = event[field].as_str().unwrap();
        assert!(text.ends_with('Z'), "{field} is UTC RFC 3339: {text}");
    }

    let (status, fetched) = app.get(&location).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, event);
}

#[tokio::test]
async fn cap_may_be_absent_or_null() {
    let app = spawn_app().await;
    let (status, body) = app
        .post_json(
            "/events",
            json!({"name": "a", "date": "2027-01-01T00:00:00Z", "totalTickets": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(body["maxTicketsPerFingerprint"].is_null());
    let (status, body) = app
        .post_json(
            "/events",
            json!({"name": "b", "date": "2027-01-01T00:00:00Z", "totalTickets": 1, "maxTicketsPerFingerprint": null}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(body["maxTicketsPerFingerprint"].is_null());
}

#[tokio::test]
async fn same_name_and_date_is_a_conflict() {
    let app = spawn_app().await;
    let event = json!({"name": "Dup", "date": "2027-01-01T10:00:00Z", "totalTickets": 5});
    assert_eq!(
        app.post_json("/events", event.clone()).await.0,
        StatusCode::CREATED
    );
    let (status, body) = app.post_json("/events", event).await;
    assert_error(status, &body, StatusCode::CONFLICT, "EVENT_EXISTS");
    // The same instant written with another offset is the same date.
    let (status, body) = app
        .post_json(
            "/events",
            json!({"name": "Dup", "date": "2027-01-01T12:00:00+02:00", "totalTickets": 9}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "EVENT_EXISTS");
    // Another date is another event.
    let (status, _) = app
        .post_json(
            "/events",
            json!({"name": "Dup", "date": "2027-01-02T10:00:00Z", "totalTickets": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let count = app.row_count("events").await;
    assert_eq!(count, 2);
}

#[tokio::test]
async fn every_invalid_field_is_reported() {
    let app = spawn_app().await;
    let cases = [
        (json!({}), vec!["name", "date", "totalTickets"]),
        (
            json!({"name": "", "date": "2027-01-01T00:00:00Z", "totalTickets": 1}),
            vec!["name"],
        ),
        (
            json!({"name": "   ", "date": "2027-01-01T00:00:00Z", "totalTickets": 1}),
            vec!["name"],
        ),
        (
            json!({"name": "x".repeat(201), "date": "2027-01-01T00:00:00Z", "totalTickets": 1}),
            vec!["name"],
        ),
        (
            json!({"name": "a", "date": "tomorrow", "totalTickets": 1}),
            vec!["date"],
        ),
        (
            json!({"name": "a", "date": "2027-01-01T00:00:00", "totalTickets": 1}),
            vec!["date"],
        ),
        (
            json!({"name": "a", "date": "2027-01-01", "totalTickets": 1}),
            vec!["date"],
        ),
        (
            json!({"name": "a", "date": "2027-01-01T00:00:00Z", "totalTickets": 0}),
            vec!["totalTickets"],
        ),
        (
            json!({"name": "a", "date": "2027-01-01T00:00:00Z", "totalTickets": -5}),
            vec!["totalTickets"],
        ),
        (
            json!({"name": "a", "date": "2027-01-01T00:00:00Z", "totalTickets": 1_000_001}),
            vec!["totalTickets"],
        ),
        (
            json!({"name": "a", "date": "2027-01-01T00:00:00Z", "totalTickets": 1.5}),
            vec!["totalTickets"],
        ),
        (
            json!({"name": "a", "date": "2027-01-01T00:00:00Z", "totalTickets": "10"}),
            vec!["totalTickets"],
        ),
        (
            json!({"name": 7, "date": "2027-01-01T00:00:00Z", "totalTickets": 1}),
            vec!["name"],
        ),
        (
            json!({"name": "a", "date": "2027-01-01T00:00:00Z", "totalTickets": 3, "maxTicketsPerFingerprint": 4}),
            vec!["maxTicketsPerFingerprint"],
        ),
        (
            json!({"name": "a", "date": "2027-01-01T00:00:00Z", "totalTickets": 3, "maxTicketsPerFingerprint": 0}),
            vec!["maxTicketsPerFingerprint"],
        ),
    ];
    for (body, fields) in cases {
        let (status, response) = app.post_json("/events", body.clone()).await;
        assert_error(
            status,
            &response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        let reported: Vec<&str> = response["details"]
            .as_array()
            .unwrap_or_else(|| panic!("details for {body}: {response}"))
            .iter()
            .map(|d| d["field"].as_str().unwrap())
            .collect();
        assert_eq!(reported, fields, "for {body}");
        assert!(
            response["details"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["message"].is_string())
        );
    }
    let count = app.row_count("events").await;
    assert_eq!(count, 0, "no invalid request stored anything");
}

#[tokio::test]
async fn boundaries_are_accepted() {
    let app = spawn_app().await;
    let name = "é".repeat(200);
    let (status, body) = app
        .post_json(
            "/events",
            json!({"name": name, "date": "2027-01-01T00:00:00.123456Z", "totalTickets": 1_000_000, "maxTicketsPerFingerprint": 1_000_000}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["date"], "2027-01-01T00:00:00.123456Z");
    let (status, _) = app
        .post_json("/events", json!({"name": "one", "date": "2027-01-01T00:00:00Z", "totalTickets": 1, "maxTicketsPerFingerprint": 1}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn list_is_ordered_by_date_and_paginated() {
    let app = spawn_app().await;
    // Created out of date order.
    for (name, day) in [("c", 3), ("a", 1), ("e", 5), ("b", 2), ("d", 4)] {
        let (status, _) = app
            .post_json("/events", json!({"name": name, "date": format!("2027-01-0{day}T00:00:00Z"), "totalTickets": 1}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, page) = app.get("/events").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    assert_eq!(
        page["meta"],
        json!({"total": 5, "page": 1, "limit": 10, "pages": 1})
    );

    let (status, page) = app.get("/events?page=2&limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let names: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c", "d"]);
    assert_eq!(
        page["meta"],
        json!({"total": 5, "page": 2, "limit": 2, "pages": 3})
    );

    let (status, page) = app.get("/events?page=3&limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"].as_array().unwrap().len(), 1);

    let (status, page) = app.get("/events?page=9&limit=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["data"], json!([]));
    assert_eq!(page["meta"]["total"], 5);

    let (status, page) = app.get("/events?limit=100").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["meta"]["limit"], 100);
    let (status, page) = app.get("/events?limit=1").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["meta"]["pages"], 5);
}

#[tokio::test]
async fn empty_list_has_zero_pages() {
    let app = spawn_app().await;
    let (status, page) = app.get("/events").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        page,
        json!({"data": [], "meta": {"total": 0, "page": 1, "limit": 10, "pages": 0}})
    );
}

#[tokio::test]
async fn bad_pagination_is_a_bad_request() {
    let app = spawn_app().await;
    for query in [
        "page=0",
        "page=-1",
        "page=x",
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=1.5",
        "page=1&limit=",
    ] {
        let (status, body) = app.get(&format!("/events?{query}")).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
        assert!(body["details"][0]["field"].is_string(), "{query}: {body}");
    }
}

#[tokio::test]
async fn unknown_and_malformed_ids() {
    let app = spawn_app().await;
    let (status, body) = app.get(&format!("/events/{}", uuid::Uuid::new_v4())).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, body) = app.get("/events/not-a-uuid").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_eq!(body["details"][0]["field"], "id");
}

#[tokio::test]
async fn the_schema_refuses_an_impossible_count() {
    let app = spawn_app().await;
    let event = app.create_event("Guarded", 10, None).await;
    let id = uuid::Uuid::parse_str(event["id"].as_str().unwrap()).unwrap();
    let attempts = [
        // Oversold: more reserved than exist.
        "UPDATE events SET available_tickets = -1, reserved_tickets = 11 WHERE id = $1",
        // Unbalanced: tickets appear from nowhere.
        "UPDATE events SET available_tickets = 10, reserved_tickets = 5 WHERE id = $1",
        "UPDATE events SET purchased_tickets = 11, available_tickets = -1 WHERE id = $1",
        "UPDATE events SET max_tickets_per_fingerprint = 11 WHERE id = $1",
    ];
    for sql in attempts {
        let err = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .execute(&app.pool)
            .await
            .unwrap_err();
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(
            code.as_deref(),
            Some("23514"),
            "check_violation for {sql}: {err}"
        );
    }
    let err = sqlx::query(
        "INSERT INTO ticket_allocations (id, event_id, quantity, fingerprint_hash, expires_at) \
         VALUES (gen_random_uuid(), $1, 0, repeat('a', 64), now())",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("ticket_allocations_quantity_positive"),
        "{err}"
    );
    assert_eq!(
        app.event(event["id"].as_str().unwrap()).await["availableTickets"],
        10
    );
}
