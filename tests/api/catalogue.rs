//! The catalogue's organiser routes: ticket types, quotas and `PATCH /events/{id}`. Every
//! route's success and each of its refusals; capacities that may not drop below what is
//! held; quotas that count the holds made before them; and changes racing purchases, after
//! which the counts still balance and equal what the orders' lines hold.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::helpers::{
    Api, Blocker, SseMessage, SseReader, TestApp, assert_error, id_of, new_fingerprint, spawn_app,
    spawn_app_with,
};

/// Sends `body` with `method` to `path`, with the organiser token when one is given.
async fn send_json(
    api: &Api,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut request = api.request(method, path).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    api.send(request).await
}

async fn patch(api: &Api, path: &str, body: Value) -> (StatusCode, Value) {
    send_json(api, Method::PATCH, path, None, body).await
}

/// Creates a ticket type and returns its view.
async fn create_type(api: &Api, event_id: &str, body: Value) -> Value {
    let (status, view) = api
        .post_json(&format!("/events/{event_id}/ticket-types"), body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    view
}

/// Creates a quota and returns its view.
async fn create_quota(api: &Api, event_id: &str, name: &str, size: i64, types: &[&str]) -> Value {
    let (status, view) = api
        .post_json(
            &format!("/events/{event_id}/quotas"),
            json!({ "name": name, "size": size, "ticketTypeIds": types }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    view
}

/// The fields named in a 422's details.
fn fields(body: &Value) -> Vec<&str> {
    body["details"]
        .as_array()
        .unwrap_or_else(|| panic!("details: {body}"))
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect()
}

/// The event's default type ("General admission") id.
async fn default_type(api: &Api, event_id: &str) -> String {
    let event = api.event(event_id).await;
    let first = &event["ticketTypes"][0];
    assert_eq!(first["name"], "General admission", "{event}");
    id_of(first)
}

/// Asserts every quota of the event holds exactly what the orders' lines of its types hold,
/// and balances; returns the quotas as stored.
async fn assert_quotas_match_lines(pool: &PgPool, event_id: &str) -> Vec<(i32, i32, i32, i32)> {
    let event_id = Uuid::parse_str(event_id).unwrap();
    let rows: Vec<(Uuid, i32, i32, i32, i32, i64, i64)> = sqlx::query_as(
        "SELECT q.id, q.size, q.available_tickets, q.reserved_tickets, q.purchased_tickets, \
           COALESCE((SELECT sum(l.quantity) FROM allocation_lines l \
              JOIN ticket_allocations a ON a.id = l.allocation_id \
              JOIN quota_ticket_types m ON m.ticket_type_id = l.ticket_type_id \
              WHERE m.quota_id = q.id AND a.status IN ('reserved', 'payment_pending')), 0)::bigint, \
           COALESCE((SELECT sum(l.quantity - l.refunded_quantity) FROM allocation_lines l \
              JOIN ticket_allocations a ON a.id = l.allocation_id \
              JOIN quota_ticket_types m ON m.ticket_type_id = l.ticket_type_id \
              WHERE m.quota_id = q.id AND a.status = 'purchased'), 0)::bigint \
         FROM quotas q WHERE q.event_id = $1 ORDER BY q.id",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(
            |(id, size, available, reserved, purchased, lines_reserved, lines_purchased)| {
                assert_eq!(
                    (i64::from(reserved), i64::from(purchased)),
                    (lines_reserved, lines_purchased),
                    "quota {id}: counts vs lines"
                );
                assert_eq!(
                    available + reserved + purchased,
                    size,
                    "quota {id} balances"
                );
                assert!(available >= 0, "quota {id}");
                (size, available, reserved, purchased)
            },
        )
        .collect()
}

#[tokio::test]
async fn ticket_types_are_created_listed_read_with_the_event_and_changed() {
    let app = spawn_app().await;
    let event = app.create_event("Typed", 150, None).await;
    let event_id = id_of(&event);
    let general = default_type(&app, &event_id).await;

    let (status, response) = app
        .send(
            app.request(Method::POST, &format!("/events/{event_id}/ticket-types"))
                .json(&json!({
                    "name": " Weekend  pass ",
                    "price": 4500,
                    "description": "Saturday and Sunday",
                    "maxPerOrder": 4,
                    "salesStartAt": "2027-01-01T10:00:00+01:00",
                    "salesEndAt": "2027-05-01T00:00:00Z",
                })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{response}");
    let weekend = id_of(&response);
    assert_eq!(
        response,
        json!({
            "id": weekend, "eventId": event_id, "name": "Weekend pass",
            "description": "Saturday and Sunday", "price": 4500, "currency": "EUR",
            "maxPerOrder": 4, "salesStartAt": "2027-01-01T09:00:00Z",
            "salesEndAt": "2027-05-01T00:00:00Z", "active": true, "available": 150, "waiting": 0,
        })
    );
    let location = app
        .request(Method::POST, &format!("/events/{event_id}/ticket-types"))
        .json(&json!({ "name": "Child", "price": 0, "active": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(location.status(), StatusCode::CREATED);
    let header = location.headers()["location"].to_str().unwrap().to_owned();
    let child: Value = location.json().await.unwrap();
    assert_eq!(
        header,
        format!("/events/{event_id}/ticket-types/{}", id_of(&child))
    );
    assert_eq!(child["active"], false);
    assert_eq!(child["maxPerOrder"], Value::Null);
    // A new type's `active` given as null is its default, as absent; a PATCH's null would
    // clear it, which a type cannot be, and is refused.
    let youth = create_type(
        &app,
        &event_id,
        json!({ "name": "Youth", "price": 0, "active": null }),
    )
    .await;
    assert_eq!(youth["active"], true);
    let (status, body) = patch(
        &app,
        &format!("/events/{event_id}/ticket-types/{}", id_of(&youth)),
        json!({ "active": null }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["details"],
        json!([{"field": "active", "message": "must not be null"}])
    );

    // Listed in creation order, the default type first; the event carries the same views.
    let (status, list) = app.get(&format!("/events/{event_id}/ticket-types")).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["General admission", "Weekend pass", "Child", "Youth"]
    );
    assert_eq!(list[0]["id"], general.as_str());
    let read = app.event(&event_id).await;
    assert_eq!(read["ticketTypes"], list);
    assert_eq!(read["currency"], "EUR");
    assert_eq!(read["totalTickets"], 150);

    // PATCH: absent fields stay, null clears the nullable ones.
    let path = format!("/events/{event_id}/ticket-types/{weekend}");
    let (status, changed) = patch(
        &app,
        &path,
        json!({ "price": 5000, "description": null, "maxPerOrder": null, "salesStartAt": null }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["price"], 5000);
    assert_eq!(changed["name"], "Weekend pass");
    assert_eq!(changed["description"], Value::Null);
    assert_eq!(changed["maxPerOrder"], Value::Null);
    assert_eq!(changed["salesStartAt"], Value::Null);
    assert_eq!(changed["salesEndAt"], "2027-05-01T00:00:00Z");
    let (status, changed) = patch(&app, &path, json!({ "active": false, "name": "Pass" })).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        (changed["active"].clone(), changed["name"].clone()),
        (json!(false), json!("Pass"))
    );
    assert_eq!(app.event(&event_id).await["ticketTypes"][1], changed);
}

#[tokio::test]
async fn ticket_type_refusals_name_their_field_or_code() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Refusing types", 10, None).await);
    let other_id = id_of(&app.create_event("Other types", 10, None).await);
    let path = format!("/events/{event_id}/ticket-types");
    create_type(&app, &event_id, json!({ "name": "Adult", "price": 100 })).await;

    let (status, body) = app
        .post_json(&path, json!({ "name": "Adult", "price": 1 }))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "TICKET_TYPE_EXISTS");

    let (status, body) = app
        .post_json(
            &path,
            json!({
                "name": "  ", "price": -1, "description": "x".repeat(2001), "maxPerOrder": 0,
                "salesStartAt": "2027-01-02T00:00:00Z", "salesEndAt": "2027-01-01T00:00:00Z",
            }),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(
        fields(&body),
        ["name", "price", "description", "maxPerOrder", "salesEndAt"]
    );
    let (status, body) = app.post_json(&path, json!({})).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(fields(&body), ["name", "price"]);
    let (status, body) = app
        .post_json(&path, json!({ "name": "Max", "price": 1_000_000_001i64 }))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(fields(&body), ["price"]);

    // Unknown event; a type of another event; renaming onto a taken name; null for a field
    // that is always set.
    let (status, body) = app
        .post_json(
            &format!("/events/{}/ticket-types", Uuid::now_v7()),
            json!({ "name": "A", "price": 1 }),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, body) = app
        .get(&format!("/events/{}/ticket-types", Uuid::now_v7()))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let foreign = default_type(&app, &other_id).await;
    let (status, body) = patch(
        &app,
        &format!("/events/{event_id}/ticket-types/{foreign}"),
        json!({ "price": 1 }),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let general = default_type(&app, &event_id).await;
    let general_path = format!("/events/{event_id}/ticket-types/{general}");
    let (status, body) = patch(&app, &general_path, json!({ "name": "Adult" })).await;
    assert_error(status, &body, StatusCode::CONFLICT, "TICKET_TYPE_EXISTS");
    let (status, body) = patch(
        &app,
        &general_path,
        json!({ "name": null, "price": null, "active": null, "salesEndAt": "soon" }),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(fields(&body), ["name", "price", "salesEndAt", "active"]);
    // A type is priced in its event's currency: another code, or null, is refused, never
    // answered 200 or 201 in the event's (EUR); the event's own code, as read, passes.
    for currency in [json!("USD"), Value::Null, json!("eur")] {
        let (status, body) = patch(
            &app,
            &general_path,
            json!({ "currency": currency, "price": -1 }),
        )
        .await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        assert_eq!(fields(&body), ["price", "currency"], "{body}");
        let (status, body) = patch(&app, &general_path, json!({ "currency": currency })).await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        assert!(
            body["details"][0]["message"]
                .as_str()
                .unwrap()
                .contains("EUR"),
            "{body}"
        );
        let (status, body) = app
            .post_json(
                &path,
                json!({ "name": "Dollars", "price": 1, "currency": currency }),
            )
            .await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        assert_eq!(fields(&body), ["currency"]);
    }
    let (status, body) = patch(&app, &general_path, json!({ "currency": "EUR" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["currency"], "EUR");
    // A description is shown to the public: no control characters but line breaks and tabs,
    // and not blank (null is "none"): with a visible character, as a name.
    for description in [
        "Row A\u{7}",
        "\u{1b}[2J",
        "\u{9b}31m",
        "   ",
        "\n\t",
        "\u{200b}",
        "\u{ad}\u{2060}\u{feff}",
        " \u{200b} ",
    ] {
        let (status, body) =
            patch(&app, &general_path, json!({ "description": description })).await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        assert_eq!(fields(&body), ["description"], "{description:?}: {body}");
    }
    let (status, body) = patch(
        &app,
        &general_path,
        json!({ "description": "Doors at 7.\r\nBar:\tupstairs" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["description"], "Doors at 7.\r\nBar:\tupstairs");
    let (status, body) = patch(
        &app,
        &format!("/events/{event_id}/ticket-types/not-a-uuid"),
        json!({}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_eq!(fields(&body), ["typeId"]);
    // Nothing refused was stored.
    let (_, list) = app.get(&format!("/events/{event_id}/ticket-types")).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list[0]["name"], "General admission");
    assert_eq!(list[0]["price"], 1000);
}

#[tokio::test]
async fn quotas_are_created_listed_changed_and_deleted_and_bound_their_types() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Quota'd", 150, None).await);
    let a = id_of(&create_type(&app, &event_id, json!({ "name": "A", "price": 1000 })).await);
    let b = id_of(&create_type(&app, &event_id, json!({ "name": "B", "price": 2000 })).await);
    let c = id_of(&create_type(&app, &event_id, json!({ "name": "C", "price": 0 })).await);

    let response = app
        .request(Method::POST, &format!("/events/{event_id}/quotas"))
        .json(&json!({ "name": "Q1", "size": 60, "ticketTypeIds": [a] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let header = response.headers()["location"].to_str().unwrap().to_owned();
    let q1: Value = response.json().await.unwrap();
    let q1_id = id_of(&q1);
    assert_eq!(header, format!("/events/{event_id}/quotas/{q1_id}"));
    assert_eq!(
        q1,
        json!({
            "id": q1_id, "eventId": event_id, "name": "Q1", "size": 60,
            "availableTickets": 60, "reservedTickets": 0, "purchasedTickets": 0, "setAsideTickets": 0,
            "ticketTypeIds": [a],
        })
    );
    let mut both = [a.clone(), b.clone()];
    both.sort();
    let q2 = create_quota(&app, &event_id, "Q2", 100, &[&b, &a]).await;
    assert_eq!(q2["ticketTypeIds"], json!(both), "types in id order");

    // A type has the least of the event and every quota containing it.
    let available = |event: &Value, id: &str| {
        event["ticketTypes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .map(|t| t["available"].as_i64().unwrap())
            .unwrap()
    };
    let event = app.event(&event_id).await;
    assert_eq!([&a, &b, &c].map(|id| available(&event, id)), [60, 100, 150]);

    let (status, list) = app.get(&format!("/events/{event_id}/quotas")).await;
    assert_eq!(status, StatusCode::OK);
    let mut ids = [q1_id.clone(), id_of(&q2)];
    ids.sort();
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .map(id_of)
            .collect::<Vec<_>>(),
        ids
    );

    let q1_path = format!("/events/{event_id}/quotas/{q1_id}");
    let (status, changed) = patch(
        &app,
        &q1_path,
        json!({ "size": 20, "ticketTypeIds": [a, c] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        (changed["size"].clone(), changed["availableTickets"].clone()),
        (json!(20), json!(20))
    );
    assert_eq!(changed["name"], "Q1");
    let event = app.event(&event_id).await;
    assert_eq!([&a, &b, &c].map(|id| available(&event, id)), [20, 100, 20]);

    let (status, body) = app.send(app.request(Method::DELETE, &q1_path)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let event = app.event(&event_id).await;
    assert_eq!(
        [&a, &b, &c].map(|id| available(&event, id)),
        [100, 100, 150]
    );
    let (status, body) = app.send(app.request(Method::DELETE, &q1_path)).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, body) = patch(&app, &q1_path, json!({ "size": 1 })).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn quota_refusals_name_their_field_or_code() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Refusing quotas", 10, None).await);
    let other_id = id_of(&app.create_event("Other quotas", 10, None).await);
    let mine = default_type(&app, &event_id).await;
    let foreign = default_type(&app, &other_id).await;
    let path = format!("/events/{event_id}/quotas");

    let (status, body) = app
        .post_json(
            &path,
            json!({ "name": "Q", "size": 5, "ticketTypeIds": [mine, foreign] }),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(fields(&body), ["ticketTypeIds"]);
    assert!(
        body["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&foreign),
        "{body}"
    );
    let (status, body) = app
        .post_json(
            &path,
            json!({ "name": "", "size": -1, "ticketTypeIds": [mine, mine] }),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(fields(&body), ["name", "size", "ticketTypeIds"]);
    let (status, body) = app
        .post_json(
            &path,
            json!({ "name": "Q", "size": 1_000_001, "ticketTypeIds": ["x"] }),
        )
        .await;
    assert_eq!(fields(&body), ["size", "ticketTypeIds"], "{status} {body}");
    let too_many: Vec<String> = (0..101).map(|_| Uuid::now_v7().to_string()).collect();
    let (status, body) = app
        .post_json(
            &path,
            json!({ "name": "Q", "size": 1, "ticketTypeIds": too_many }),
        )
        .await;
    assert_eq!(fields(&body), ["ticketTypeIds"], "{status} {body}");
    let (status, body) = app.post_json(&path, json!({})).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(fields(&body), ["name", "size", "ticketTypeIds"]);
    let (status, body) = app
        .post_json(
            &format!("/events/{}/quotas", Uuid::now_v7()),
            json!({ "name": "Q", "size": 1, "ticketTypeIds": [] }),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, body) = app.get(&format!("/events/{}/quotas", Uuid::now_v7())).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");

    // A quota of another event is not found through this one.
    let theirs = create_quota(&app, &other_id, "Theirs", 5, &[&foreign]).await;
    let (status, body) = patch(
        &app,
        &format!("/events/{event_id}/quotas/{}", id_of(&theirs)),
        json!({ "size": 1 }),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, body) = app
        .send(app.request(
            Method::DELETE,
            &format!("/events/{event_id}/quotas/{}", id_of(&theirs)),
        ))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, body) = patch(
        &app,
        &format!("/events/{other_id}/quotas/{}", id_of(&theirs)),
        json!({ "name": null, "size": null, "ticketTypeIds": null }),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(fields(&body), ["name", "size", "ticketTypeIds"]);
    assert_eq!(app.row_count("quotas").await, 1);
}

#[tokio::test]
async fn the_organiser_token_guards_catalogue_writes_and_quotas() {
    let token = "s3cret-organiser";
    let app = spawn_app_with(&["--admin-token", token]).await;
    let (status, event) = send_json(
        &app,
        Method::POST,
        "/events",
        Some(token),
        json!({ "name": "Guarded", "date": "2027-06-01T19:00:00Z", "totalTickets": 10 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    let event_id = id_of(&event);
    let (_, types) = app.get(&format!("/events/{event_id}/ticket-types")).await;
    let general = id_of(&types[0]);
    let (status, quota) = send_json(
        &app,
        Method::POST,
        &format!("/events/{event_id}/quotas"),
        Some(token),
        json!({ "name": "Q", "size": 5, "ticketTypeIds": [general] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{quota}");
    let quota_path = format!("/events/{event_id}/quotas/{}", id_of(&quota));

    let guarded = [
        (
            Method::PATCH,
            format!("/events/{event_id}"),
            json!({ "totalTickets": 11 }),
        ),
        (
            Method::POST,
            format!("/events/{event_id}/ticket-types"),
            json!({ "name": "T", "price": 1 }),
        ),
        (
            Method::PATCH,
            format!("/events/{event_id}/ticket-types/{general}"),
            json!({ "price": 1 }),
        ),
        (Method::GET, format!("/events/{event_id}/quotas"), json!({})),
        (Method::GET, quota_path.clone(), json!({})),
        (
            Method::POST,
            format!("/events/{event_id}/quotas"),
            json!({ "name": "R", "size": 1, "ticketTypeIds": [] }),
        ),
        (Method::PATCH, quota_path.clone(), json!({ "size": 6 })),
        (Method::DELETE, quota_path.clone(), json!({})),
    ];
    for (method, path, body) in &guarded {
        let (status, answer) = send_json(&app, method.clone(), path, None, body.clone()).await;
        assert_error(status, &answer, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        let (status, answer) =
            send_json(&app, method.clone(), path, Some("wrong"), body.clone()).await;
        assert_error(status, &answer, StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    // Nothing changed; with the token, each is served.
    assert_eq!(app.event(&event_id).await["totalTickets"], 10);
    for (method, path, body) in guarded {
        let (status, answer) = send_json(&app, method.clone(), &path, Some(token), body).await;
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
    }
    // Reading the types stays public, the list and each type.
    let (status, _) = app.get(&format!("/events/{event_id}/ticket-types")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .get(&format!("/events/{event_id}/ticket-types/{general}"))
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// The list entry of `id` in a list route's answer.
fn entry<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .find(|item| item["id"] == id)
        .unwrap_or_else(|| panic!("{id} listed in {list}"))
}

/// POSTs `body` to `path`, asserts 201, and returns the `Location` and the created object.
async fn create_at(api: &Api, path: &str, body: Value) -> (String, Value) {
    let response = api
        .request(Method::POST, path)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    (location, response.json().await.unwrap())
}

#[tokio::test]
async fn the_location_of_a_created_type_or_quota_reads_it_as_listed() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Located", 100, None).await);
    let types_path = format!("/events/{event_id}/ticket-types");
    let quotas_path = format!("/events/{event_id}/quotas");
    let (type_location, created) = create_at(
        &app,
        &types_path,
        json!({ "name": "Balcony", "price": 2500, "description": "Upstairs", "maxPerOrder": 4 }),
    )
    .await;
    let balcony = id_of(&created);
    let (quota_location, created_quota) = create_at(
        &app,
        &quotas_path,
        json!({ "name": "Upstairs", "size": 30, "ticketTypeIds": [balcony] }),
    )
    .await;
    let quota_id = id_of(&created_quota);

    // Each Location is readable (405 METHOD_NOT_ALLOWED before), and reads the object as its
    // list shows it, field for field.
    let (status, read) = app.get(&type_location).await;
    assert_eq!(status, StatusCode::OK, "GET {type_location}: {read}");
    let (_, list) = app.get(&types_path).await;
    assert_eq!(&read, entry(&list, &balcony));
    // The quota made after the type lowered its availability: the read is of now.
    assert_eq!(read["available"], 30, "{read}");
    let (status, read) = app.get(&quota_location).await;
    assert_eq!(status, StatusCode::OK, "GET {quota_location}: {read}");
    let (_, list) = app.get(&quotas_path).await;
    assert_eq!(&read, entry(&list, &quota_id));
    assert_eq!(read, created_quota);
    // The event's default type too, read by its id.
    let general = default_type(&app, &event_id).await;
    let (status, read) = app.get(&format!("{types_path}/{general}")).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    let (_, list) = app.get(&types_path).await;
    assert_eq!(&read, entry(&list, &general));

    // A hold moves what the reads answer at once.
    let buyer = new_fingerprint();
    let (status, hold) = app
        .send(
            app.request(Method::POST, &format!("/events/{event_id}/tickets"))
                .header("X-Device-Fingerprint", &buyer)
                .json(&json!({ "lines": [{ "ticketTypeId": balcony, "quantity": 3 }] })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (_, read) = app.get(&type_location).await;
    assert_eq!(read["available"], 27, "{read}");
    let (_, read) = app.get(&quota_location).await;
    assert_eq!(
        (
            read["availableTickets"].clone(),
            read["reservedTickets"].clone()
        ),
        (json!(27), json!(3)),
        "{read}"
    );

    // A change is read back as the PATCH answered it, and as the list shows it.
    let (status, changed) = patch(
        &app,
        &type_location,
        json!({ "price": 3000, "name": "Gallery", "maxPerOrder": null }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let (_, read) = app.get(&type_location).await;
    assert_eq!(read, changed);
    assert_eq!(
        (
            read["price"].clone(),
            read["name"].clone(),
            read["maxPerOrder"].clone()
        ),
        (json!(3000), json!("Gallery"), Value::Null)
    );
    let (_, list) = app.get(&types_path).await;
    assert_eq!(&read, entry(&list, &balcony));
    let (status, changed) = patch(
        &app,
        &quota_location,
        json!({ "size": 10, "name": "Gallery" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let (_, read) = app.get(&quota_location).await;
    assert_eq!(read, changed);
    assert_eq!(
        (read["size"].clone(), read["availableTickets"].clone()),
        (json!(10), json!(7))
    );
    let (_, list) = app.get(&quotas_path).await;
    assert_eq!(&read, entry(&list, &quota_id));
    let (_, read) = app.get(&type_location).await;
    assert_eq!(
        read["available"], 7,
        "the smaller quota bounds the type: {read}"
    );

    // A deleted quota is not found any more.
    let (status, body) = app.send(app.request(Method::DELETE, &quota_location)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = app.get(&quota_location).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(body["error"], "quota not found");
}

#[tokio::test]
async fn one_type_or_quota_of_another_event_or_of_none_is_not_found() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Mine", 10, None).await);
    let other_id = id_of(&app.create_event("Theirs", 10, None).await);
    let foreign_type = default_type(&app, &other_id).await;
    let foreign_quota = id_of(&create_quota(&app, &other_id, "Theirs", 5, &[&foreign_type]).await);
    let mine = default_type(&app, &event_id).await;
    let my_quota = id_of(&create_quota(&app, &event_id, "Mine", 5, &[&mine]).await);
    let unknown = Uuid::now_v7();

    let not_found = [
        (
            format!("/events/{event_id}/ticket-types/{foreign_type}"),
            "ticket type not found",
        ),
        (
            format!("/events/{event_id}/ticket-types/{unknown}"),
            "ticket type not found",
        ),
        (
            format!("/events/{unknown}/ticket-types/{mine}"),
            "event not found",
        ),
        (
            format!("/events/{event_id}/quotas/{foreign_quota}"),
            "quota not found",
        ),
        (
            format!("/events/{event_id}/quotas/{unknown}"),
            "quota not found",
        ),
        (
            format!("/events/{unknown}/quotas/{my_quota}"),
            "event not found",
        ),
    ];
    for (path, message) in not_found {
        let (status, body) = app.get(&path).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
        assert_eq!(body["error"], message, "GET {path}");
        // As the PATCH of the same path answers.
        let (status, patched) = patch(&app, &path, json!({})).await;
        assert_eq!(
            (status, &patched),
            (StatusCode::NOT_FOUND, &body),
            "PATCH {path}"
        );
    }
    // Each is found through its own event.
    let (status, body) = app
        .get(&format!("/events/{other_id}/ticket-types/{foreign_type}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .get(&format!("/events/{other_id}/quotas/{foreign_quota}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A path id that is not a UUID is 400 naming it.
    let bad = [
        (
            format!("/events/{event_id}/ticket-types/not-a-uuid"),
            "typeId",
        ),
        (format!("/events/not-a-uuid/ticket-types/{mine}"), "id"),
        (format!("/events/{event_id}/quotas/not-a-uuid"), "quotaId"),
        (format!("/events/not-a-uuid/quotas/{my_quota}"), "id"),
    ];
    for (path, field) in bad {
        let (status, body) = app.get(&path).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
        assert_eq!(fields(&body), [field], "GET {path}");
    }
}

#[tokio::test]
async fn one_type_or_quota_is_read_with_the_tokens_its_list_is_read_with() {
    let token = "s3cret-organiser";
    let app = spawn_app_with(&["--admin-token", token]).await;
    let (status, event) = send_json(
        &app,
        Method::POST,
        "/events",
        Some(token),
        json!({ "name": "Tokened", "date": "2027-06-01T19:00:00Z", "totalTickets": 10 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    let event_id = id_of(&event);
    let general = default_type(&app, &event_id).await;
    let (status, quota) = send_json(
        &app,
        Method::POST,
        &format!("/events/{event_id}/quotas"),
        Some(token),
        json!({ "name": "Q", "size": 5, "ticketTypeIds": [general] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{quota}");
    let quota_id = id_of(&quota);

    // (list, one of its items): good paths, then a bad event id, whose 400 comes after the
    // token's 401/403 on the quota routes (the token is checked first) and alone on the
    // public type routes.
    let pairs = [
        (
            format!("/events/{event_id}/ticket-types"),
            format!("/events/{event_id}/ticket-types/{general}"),
        ),
        (
            "/events/not-a-uuid/ticket-types".to_owned(),
            format!("/events/not-a-uuid/ticket-types/{general}"),
        ),
        (
            format!("/events/{event_id}/quotas"),
            format!("/events/{event_id}/quotas/{quota_id}"),
        ),
        (
            "/events/not-a-uuid/quotas".to_owned(),
            format!("/events/not-a-uuid/quotas/{quota_id}"),
        ),
    ];
    let mut seen = Vec::new();
    for (list, item) in &pairs {
        for credential in [None, Some("wrong"), Some(token)] {
            let read = |path: String| {
                let mut request = app.request(Method::GET, &path);
                if let Some(credential) = credential {
                    request = request.bearer_auth(credential);
                }
                app.send(request)
            };
            let (list_status, list_body) = read(list.clone()).await;
            let (item_status, item_body) = read(item.clone()).await;
            assert_eq!(
                (item_status, &item_body["code"]),
                (list_status, &list_body["code"]),
                "GET {item} with {credential:?} answers as GET {list}: {item_body} / {list_body}"
            );
            seen.push((item.clone(), credential, item_status));
        }
    }
    // What the pairs agreed on is the documented rule: types public, quotas the organiser's.
    let statuses: Vec<StatusCode> = seen.iter().map(|(_, _, status)| *status).collect();
    use StatusCode as S;
    assert_eq!(
        statuses,
        [
            S::OK,
            S::OK,
            S::OK,
            S::BAD_REQUEST,
            S::BAD_REQUEST,
            S::BAD_REQUEST,
            S::UNAUTHORIZED,
            S::FORBIDDEN,
            S::OK,
            S::UNAUTHORIZED,
            S::FORBIDDEN,
            S::BAD_REQUEST,
        ],
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_event_is_patched_and_its_stream_sees_the_new_total() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Patched", 100, Some(4)).await);
    app.create_event("Taken", 10, None).await;
    let path = format!("/events/{event_id}");
    let mut stream = SseReader::connect(&app, &format!("/events/{event_id}/stream")).await;
    stream
        .next(Duration::from_secs(5))
        .await
        .expect("the first snapshot");
    let seq_before: i64 = change_seq(&app, &event_id).await;

    let (status, event) = patch(
        &app,
        &path,
        json!({
            "name": "Patched again", "date": "2027-07-01T19:00:00+02:00", "totalTickets": 120,
            "maxTicketsPerFingerprint": null, "salesStartAt": "2027-01-01T00:00:00Z",
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["name"], "Patched again");
    assert_eq!(event["date"], "2027-07-01T17:00:00Z");
    assert_eq!(
        (
            event["totalTickets"].clone(),
            event["availableTickets"].clone()
        ),
        (json!(120), json!(120))
    );
    assert_eq!(event["maxTicketsPerFingerprint"], Value::Null);
    assert_eq!(event["salesStartAt"], "2027-01-01T00:00:00Z");
    assert_eq!(event["salesEndAt"], Value::Null);
    app.assert_balanced(&event_id).await;
    assert_eq!(change_seq(&app, &event_id).await, seq_before + 1);
    let seen = stream
        .until(Duration::from_secs(5), |m| {
            m.data["statistics"]["totalTickets"] == 120
        })
        .await;
    let last = seen.last().unwrap();
    assert_eq!(last.last_type(), Some("event_updated"), "{:?}", last.data);
    assert_eq!(last.remaining(), 120);

    // A capacity cut with nothing held; the window's end against the stored start.
    let (status, event) = patch(&app, &path, json!({ "totalTickets": 1 })).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["availableTickets"], 1);
    let (status, body) = patch(&app, &path, json!({ "salesEndAt": "2026-12-31T00:00:00Z" })).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(fields(&body), ["salesEndAt"]);
    let (status, body) = patch(
        &app,
        &path,
        json!({ "name": null, "totalTickets": 0, "date": "yesterday", "maxTicketsPerFingerprint": 0 }),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(
        fields(&body),
        ["name", "date", "totalTickets", "maxTicketsPerFingerprint"]
    );
    let (status, body) = patch(&app, &path, json!({ "maxTicketsPerFingerprint": 2 })).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(fields(&body), ["maxTicketsPerFingerprint"]);
    let (status, body) = patch(
        &app,
        &path,
        json!({ "name": "Taken", "date": "2027-06-01T19:00:00Z" }),
    )
    .await;
    assert_error(status, &body, StatusCode::CONFLICT, "EVENT_EXISTS");
    // The currency never changes and an event has no price: naming another currency, or a
    // price, is refused rather than answered 200 for nothing; the event's own currency, as a
    // client read it, is accepted with the rest.
    for body in [
        json!({ "currency": "JPY", "totalTickets": 3 }),
        json!({ "currency": null, "totalTickets": 3 }),
        json!({ "price": 500, "totalTickets": 3 }),
        json!({ "price": null, "totalTickets": 3 }),
    ] {
        let (status, refusal) = patch(&app, &path, body.clone()).await;
        assert_error(
            status,
            &refusal,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        assert_eq!(
            fields(&refusal),
            [body.as_object().unwrap().keys().next().unwrap()]
        );
    }
    // A body of only whitespace is malformed JSON (400), never an empty change answered 200
    // (found by the fuzzing run).
    let (status, body) = app
        .send(
            app.request(Method::PATCH, &path)
                .header("Content-Type", "application/json")
                .body("\n"),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let (status, event) = patch(&app, &path, json!({ "currency": "EUR", "totalTickets": 2 })).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(
        (event["totalTickets"].clone(), event["currency"].clone()),
        (json!(2), json!("EUR"))
    );
    let (status, body) = patch(&app, &format!("/events/{}", Uuid::now_v7()), json!({})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let event = app.assert_balanced(&event_id).await;
    assert_eq!(event["name"], "Patched again");
}

#[tokio::test]
async fn a_ticket_type_change_is_announced_to_the_stream() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Repriced", 100, None).await);
    let general = default_type(&app, &event_id).await;
    let mut stream = SseReader::connect(&app, &format!("/events/{event_id}/stream")).await;
    stream
        .next(Duration::from_secs(5))
        .await
        .expect("the first snapshot");
    let seq_before = change_seq(&app, &event_id).await;

    // A price, an off-sale type or a window changes what a buyer may order: every page
    // watching the event hears it (and reads the event again), as for a type added.
    let path = format!("/events/{event_id}/ticket-types/{general}");
    for (body, seq) in [
        (json!({ "price": 1500 }), seq_before + 1),
        (json!({ "active": false }), seq_before + 2),
    ] {
        let (status, changed) = patch(&app, &path, body).await;
        assert_eq!(status, StatusCode::OK, "{changed}");
        assert_eq!(change_seq(&app, &event_id).await, seq);
        let heard = stream
            .until(Duration::from_secs(5), |m| m.id == Some(seq as u64))
            .await;
        let last = heard.last().unwrap();
        assert_eq!(last.last_type(), Some("event_updated"), "{:?}", last.data);
        assert_eq!(last.data["lastEvent"]["actor"], "organiser");
    }
    app.assert_balanced(&event_id).await;
}

/// An organiser's change followed at once by a sale reaches a watcher as the sale's message
/// (messages are coalesced and name only their last change): every message carries the
/// change sequence of the latest organiser change, whichever change it names, so a page
/// knows to read the event again. Each organiser route sets it; a sale, a cancel and a
/// declined payment leave it; a stream opened later starts from it.
#[tokio::test]
async fn every_message_carries_the_latest_organiser_change() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Told", 100, None).await);
    let general = default_type(&app, &event_id).await;
    let mut stream = SseReader::connect(&app, &format!("/events/{event_id}/stream")).await;
    let snapshot = stream
        .next(Duration::from_secs(5))
        .await
        .expect("the first snapshot");
    assert_eq!(
        snapshot.data["organiserChangeSeq"], 0,
        "{:?}",
        snapshot.data
    );
    assert_eq!(app.event(&event_id).await["organiserChangeSeq"], 0);
    let sale = sale_after(&app, &mut stream, &event_id).await;
    assert_eq!(sale.data["organiserChangeSeq"], 0, "{:?}", sale.data);

    let changes = [
        (
            format!("/events/{event_id}"),
            json!({ "name": "Told again" }),
        ),
        (
            format!("/events/{event_id}/ticket-types/{general}"),
            json!({ "price": 1500 }),
        ),
    ];
    for (path, body) in changes {
        let (status, changed) = patch(&app, &path, body).await;
        assert_eq!(status, StatusCode::OK, "{changed}");
        let organiser = change_seq(&app, &event_id).await;
        if path == format!("/events/{event_id}") {
            assert_eq!(changed["organiserChangeSeq"], organiser, "{changed}");
        }
        let sale = sale_after(&app, &mut stream, &event_id).await;
        assert_eq!(
            sale.data["organiserChangeSeq"], organiser,
            "{path}: {:?}",
            sale.data
        );
    }
    let late = id_of(&create_type(&app, &event_id, json!({ "name": "Late", "price": 700 })).await);
    let organiser = change_seq(&app, &event_id).await;
    let sale = sale_after(&app, &mut stream, &event_id).await;
    assert_eq!(
        sale.data["organiserChangeSeq"], organiser,
        "{:?}",
        sale.data
    );
    create_quota(&app, &event_id, "Shared", 50, &[&general, &late]).await;
    let organiser = change_seq(&app, &event_id).await;
    let sale = sale_after(&app, &mut stream, &event_id).await;
    assert_eq!(
        sale.data["organiserChangeSeq"], organiser,
        "{:?}",
        sale.data
    );

    // A cancel and a declined payment are no organiser's change.
    let (cancelled, buyer) = hold(&app, &event_id, 1).await;
    let (status, body) = app.cancel(&cancelled, &buyer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (declined, buyer) = hold(&app, &event_id, 1).await;
    let (status, body) = app.pay(&declined, &buyer, Some("tok_chargeDeclined")).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    let seq = change_seq(&app, &event_id).await;
    let heard = stream
        .until(Duration::from_secs(5), |m| m.id == Some(seq as u64))
        .await;
    assert_eq!(heard.last().unwrap().data["organiserChangeSeq"], organiser);

    let mut later = SseReader::connect(&app, &format!("/events/{event_id}/stream")).await;
    let snapshot = later
        .next(Duration::from_secs(5))
        .await
        .expect("the later stream's snapshot");
    assert_eq!(
        snapshot.data["organiserChangeSeq"], organiser,
        "{:?}",
        snapshot.data
    );
    // The event as read carries it too: a page compares its read with the stream's.
    assert_eq!(app.event(&event_id).await["organiserChangeSeq"], organiser);
    app.assert_balanced(&event_id).await;
}

/// Holds a ticket for a new buyer at once, and returns the stream's message of that sale.
async fn sale_after(app: &TestApp, stream: &mut SseReader, event_id: &str) -> SseMessage {
    hold(app, event_id, 1).await;
    let seq = change_seq(app, event_id).await;
    let heard = stream
        .until(Duration::from_secs(5), |m| m.id == Some(seq as u64))
        .await;
    let sale = heard.last().unwrap().clone();
    assert_eq!(
        sale.last_type(),
        Some("ticket_allocated"),
        "{:?}",
        sale.data
    );
    sale
}

async fn change_seq(app: &TestApp, event_id: &str) -> i64 {
    sqlx::query_scalar("SELECT change_seq FROM events WHERE id = $1")
        .bind(Uuid::parse_str(event_id).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Holds `quantity` of the default type for a new buyer; returns (allocation id, buyer).
async fn hold(app: &TestApp, event_id: &str, quantity: i64) -> (String, String) {
    let buyer = new_fingerprint();
    let (status, body) = app.purchase(event_id, quantity, &buyer).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (id_of(&body), buyer)
}

#[tokio::test]
async fn capacity_may_not_drop_below_what_is_held() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Held capacity", 10, None).await);
    let path = format!("/events/{event_id}");
    hold(&app, &event_id, 3).await;
    let (paid, buyer) = hold(&app, &event_id, 2).await;
    let (status, body) = app.pay(&paid, &buyer, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = patch(&app, &path, json!({ "totalTickets": 4 })).await;
    assert_error(status, &body, StatusCode::CONFLICT, "CAPACITY_BELOW_SOLD");
    assert_eq!(
        (
            body["reservedTickets"].clone(),
            body["purchasedTickets"].clone()
        ),
        (json!(3), json!(2))
    );
    assert_eq!(app.assert_balanced(&event_id).await["totalTickets"], 10);

    let (status, event) = patch(&app, &path, json!({ "totalTickets": 5 })).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["availableTickets"], 0);
    app.assert_balanced(&event_id).await;
    let (status, body) = app.purchase(&event_id, 1, &new_fingerprint()).await;
    assert_error(status, &body, StatusCode::CONFLICT, "TICKETS_SOLD_OUT");

    // The per-buyer cap may not drop below what one buyer holds (3): refused, not a 500 from
    // the schema's backstop.
    let (status, body) = patch(&app, &path, json!({ "maxTicketsPerFingerprint": 2 })).await;
    assert_error(status, &body, StatusCode::CONFLICT, "CAPACITY_BELOW_SOLD");
    assert_eq!(body["held"], 3);
    let (status, event) = patch(&app, &path, json!({ "maxTicketsPerFingerprint": 3 })).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["maxTicketsPerFingerprint"], 3);
}

#[tokio::test]
async fn a_quota_made_after_holds_counts_them_and_may_not_shrink_below_them() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Late quota", 20, None).await);
    let general = default_type(&app, &event_id).await;
    let other = id_of(&create_type(&app, &event_id, json!({ "name": "Other", "price": 0 })).await);
    hold(&app, &event_id, 4).await;
    let (paid, buyer) = hold(&app, &event_id, 3).await;
    let (status, body) = app.pay(&paid, &buyer, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (cancelled, buyer) = hold(&app, &event_id, 2).await;
    let (status, body) = app.cancel(&cancelled, &buyer).await;
    assert!(status.is_success(), "{status} {body}");

    let path = format!("/events/{event_id}/quotas");
    let (status, body) = app
        .post_json(
            &path,
            json!({ "name": "Small", "size": 6, "ticketTypeIds": [general] }),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "CAPACITY_BELOW_SOLD");
    assert_eq!(
        (
            body["reservedTickets"].clone(),
            body["purchasedTickets"].clone()
        ),
        (json!(4), json!(3))
    );
    assert_eq!(app.row_count("quotas").await, 0);

    let quota = create_quota(&app, &event_id, "Floor", 10, &[&general]).await;
    assert_eq!(
        [
            &quota["availableTickets"],
            &quota["reservedTickets"],
            &quota["purchasedTickets"]
        ],
        [&json!(3), &json!(4), &json!(3)]
    );
    let event = app.event(&event_id).await;
    assert_eq!(event["availableTickets"], 13);
    assert_eq!(event["ticketTypes"][0]["available"], 3);
    assert_eq!(event["ticketTypes"][1]["available"], 13);
    assert_quotas_match_lines(&app.pool, &event_id).await;

    // Shrinking below what it holds is refused, and so is a change of types whose holds do
    // not fit; a change that fits recounts.
    let quota_path = format!("/events/{event_id}/quotas/{}", id_of(&quota));
    let (status, body) = patch(&app, &quota_path, json!({ "size": 6 })).await;
    assert_error(status, &body, StatusCode::CONFLICT, "CAPACITY_BELOW_SOLD");
    let (status, moved) = patch(
        &app,
        &quota_path,
        json!({ "size": 6, "ticketTypeIds": [other] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(
        [
            &moved["availableTickets"],
            &moved["reservedTickets"],
            &moved["purchasedTickets"]
        ],
        [&json!(6), &json!(0), &json!(0)]
    );
    let (status, body) = patch(
        &app,
        &quota_path,
        json!({ "ticketTypeIds": [general, other] }),
    )
    .await;
    assert_error(status, &body, StatusCode::CONFLICT, "CAPACITY_BELOW_SOLD");
    assert_eq!(
        assert_quotas_match_lines(&app.pool, &event_id).await,
        [(6, 6, 0, 0)]
    );
    app.assert_balanced(&event_id).await;
}

/// Tickets the event holds (reserved and purchased), as committed.
async fn held(pool: &PgPool, event_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT (reserved_tickets + purchased_tickets)::bigint FROM events WHERE id = $1",
    )
    .bind(Uuid::parse_str(event_id).unwrap())
    .fetch_one(pool)
    .await
    .unwrap()
}

/// 50 holds race capacity changes, quota changes and a new quota, on one event. The
/// organiser's changes start once a few holds are in, while the rest arrive: a cut below
/// what was already held must be refused (never a 500 from a CHECK), a raise accepted, a
/// cut in between either; a new quota must count what is held when it is made. Afterwards
/// the event's counts balance and match its allocations, and every quota's counts equal what
/// its types' lines hold.
#[tokio::test]
async fn catalogue_changes_racing_purchases_keep_every_count_true() {
    for round in 0..3 {
        let app = spawn_app().await;
        let event_id = id_of(&app.create_event(&format!("Race {round}"), 100, None).await);
        let general = default_type(&app, &event_id).await;
        let quota = create_quota(&app, &event_id, "Q", 100, &[&general]).await;
        let quota_path = format!("/events/{event_id}/quotas/{}", id_of(&quota));
        let mut purchases = JoinSet::new();
        for i in 0..50 {
            let api: Api = (*app).clone();
            let event_id = event_id.clone();
            purchases
                .spawn(async move { api.purchase(&event_id, 1 + i % 3, &new_fingerprint()).await });
        }
        let seen = loop {
            let seen = held(&app.pool, &event_id).await;
            if seen >= 3 {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let event_path = format!("/events/{event_id}");
        let quotas_path = format!("/events/{event_id}/quotas");
        // (what, request, the status it must get: None when either 200 or 409 is right).
        let changes = [
            (
                "cut below held",
                event_path.clone(),
                json!({ "totalTickets": seen - 1 }),
                Some(StatusCode::CONFLICT),
            ),
            (
                "raise",
                event_path.clone(),
                json!({ "totalTickets": 120 }),
                Some(StatusCode::OK),
            ),
            (
                "cut",
                event_path.clone(),
                json!({ "totalTickets": 40 }),
                None,
            ),
            (
                "quota below held",
                quota_path.clone(),
                json!({ "size": seen - 1 }),
                Some(StatusCode::CONFLICT),
            ),
            (
                "quota raise",
                quota_path.clone(),
                json!({ "size": 110 }),
                Some(StatusCode::OK),
            ),
            ("quota cut", quota_path.clone(), json!({ "size": 30 }), None),
        ];
        let mut organiser = JoinSet::new();
        for (what, path, body, expected) in changes {
            let api: Api = (*app).clone();
            organiser.spawn(async move { (what, expected, patch(&api, &path, body).await) });
        }
        let api: Api = (*app).clone();
        let general_id = general.clone();
        organiser.spawn(async move {
            let body = json!({ "name": "Late", "size": 120, "ticketTypeIds": [general_id] });
            (
                "new quota",
                Some(StatusCode::CREATED),
                api.post_json(&quotas_path, body).await,
            )
        });
        while let Some(joined) = organiser.join_next().await {
            let (what, expected, (status, body)) = joined.unwrap();
            match expected {
                Some(StatusCode::CONFLICT) => {
                    assert_error(status, &body, StatusCode::CONFLICT, "CAPACITY_BELOW_SOLD")
                }
                Some(expected) => assert_eq!(status, expected, "{what}: {body}"),
                None => assert!(
                    status == StatusCode::OK || body["code"] == "CAPACITY_BELOW_SOLD",
                    "{what}: {status} {body}"
                ),
            }
        }
        while let Some(joined) = purchases.join_next().await {
            let (status, body) = joined.unwrap();
            assert!(
                status == StatusCode::CREATED
                    || ["TICKETS_SOLD_OUT", "INSUFFICIENT_TICKETS"]
                        .contains(&body["code"].as_str().unwrap_or_default()),
                "purchase: {status} {body}"
            );
        }
        let event = app.assert_balanced(&event_id).await;
        let held = held(&app.pool, &event_id).await;
        assert!(held <= event["totalTickets"].as_i64().unwrap(), "{event}");
        for (size, available, reserved, purchased) in
            assert_quotas_match_lines(&app.pool, &event_id).await
        {
            assert_eq!(
                i64::from(reserved + purchased),
                held,
                "a quota holds every line"
            );
            assert!(available <= size);
        }
    }
}

/// A capacity cut decides on the counts under the event lock: the blocker plays a sale that
/// holds the event row while the cut is sent, and moves 6 of 10 tickets to reserved before
/// it commits; the cut to 5, which waited, must see them and refuse. (Without the lock it
/// would judge the old counts, then write available = 4 + (5 - 10), and the schema's CHECK
/// would make that a 500.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capacity_cut_decides_under_the_event_lock() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Locked cut", 10, None).await);
    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_event(&event_id).await;
    let api: Api = (*app).clone();
    let path = format!("/events/{event_id}");
    let cut = tokio::spawn(async move { patch(&api, &path, json!({ "totalTickets": 5 })).await });
    blocker.wait_for_waiters(1).await;
    sqlx::query(
        "UPDATE events SET available_tickets = available_tickets - 6, \
         reserved_tickets = reserved_tickets + 6 WHERE id = $1",
    )
    .bind(Uuid::parse_str(&event_id).unwrap())
    .execute(blocker.conn())
    .await
    .unwrap();
    blocker.commit().await;
    let (status, body) = cut.await.unwrap();
    assert_error(status, &body, StatusCode::CONFLICT, "CAPACITY_BELOW_SOLD");
    assert_eq!(body["reservedTickets"], 6, "{body}");
    assert_eq!(app.counts(&event_id).await, (4, 6, 0));
}

/// The blocker's part in the quota lock tests: while holding the event row, it plays a
/// purchase of `quantity` tickets of `ticket_type` (the allocation, its line and the
/// event's counts), then commits.
async fn commit_a_purchase_behind(
    mut blocker: Blocker,
    event_id: &str,
    ticket_type: &str,
    quantity: i32,
) {
    let allocation = Uuid::new_v4();
    let event = Uuid::parse_str(event_id).unwrap();
    sqlx::query(
        "INSERT INTO ticket_allocations (id, event_id, quantity, fingerprint_hash, expires_at) \
         VALUES ($1, $2, $3, encode(sha256($1::text::bytea), 'hex'), \
                 now() + interval '10 minutes')",
    )
    .bind(allocation)
    .bind(event)
    .bind(quantity)
    .execute(blocker.conn())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO allocation_lines (allocation_id, ticket_type_id, quantity, unit_price) \
         VALUES ($1, $2, $3, 0)",
    )
    .bind(allocation)
    .bind(Uuid::parse_str(ticket_type).unwrap())
    .bind(quantity)
    .execute(blocker.conn())
    .await
    .unwrap();
    sqlx::query(
        "UPDATE events SET available_tickets = available_tickets - $2, \
         reserved_tickets = reserved_tickets + $2 WHERE id = $1",
    )
    .bind(event)
    .bind(quantity)
    .execute(blocker.conn())
    .await
    .unwrap();
    blocker.commit().await;
}

/// A quota counts what its types hold under the event lock, when it is made and when its
/// types change: each time the blocker plays a purchase holding the event row while the
/// quota request is sent, and commits only once the request waits; the quota must count it.
/// (Counted before the lock, it would miss those tickets and never agree with the lines.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_counts_under_the_event_lock() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Locked quota", 10, None).await);
    let general = default_type(&app, &event_id).await;
    let other = id_of(&create_type(&app, &event_id, json!({ "name": "Other", "price": 0 })).await);

    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_event(&event_id).await;
    let api: Api = (*app).clone();
    let path = format!("/events/{event_id}/quotas");
    let body = json!({ "name": "Q", "size": 10, "ticketTypeIds": [general] });
    let made = tokio::spawn(async move { api.post_json(&path, body).await });
    blocker.wait_for_waiters(1).await;
    commit_a_purchase_behind(blocker, &event_id, &general, 4).await;
    let (status, quota) = made.await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{quota}");
    assert_eq!(
        [&quota["availableTickets"], &quota["reservedTickets"]],
        [&json!(6), &json!(4)]
    );
    assert_eq!(
        assert_quotas_match_lines(&app.pool, &event_id).await,
        [(10, 6, 4, 0)]
    );

    // Its types change to take in `other`, while a purchase of 3 of `other` commits.
    let mut blocker = Blocker::begin(&app.pool).await;
    blocker.lock_event(&event_id).await;
    let api: Api = (*app).clone();
    let path = format!("/events/{event_id}/quotas/{}", id_of(&quota));
    let body = json!({ "ticketTypeIds": [general, other] });
    let changed = tokio::spawn(async move { patch(&api, &path, body).await });
    blocker.wait_for_waiters(1).await;
    commit_a_purchase_behind(blocker, &event_id, &other, 3).await;
    let (status, quota) = changed.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{quota}");
    assert_eq!(
        [&quota["availableTickets"], &quota["reservedTickets"]],
        [&json!(3), &json!(7)]
    );
    assert_eq!(
        assert_quotas_match_lines(&app.pool, &event_id).await,
        [(10, 3, 7, 0)]
    );
    app.assert_balanced(&event_id).await;
}
