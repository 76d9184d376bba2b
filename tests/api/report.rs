//! `GET /events/{id}/report`: admin-only whatever the configuration, and figures that add up
//! the event's orders per ticket type (holds, payments, cancels, a price change).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Api, assert_error, id_of, new_fingerprint, spawn_app, spawn_app_with};

const TOKEN: &str = "s3cret-organiser";

/// Sends `body` with `method` to `path`, with the admin token.
async fn as_admin(api: &Api, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
    api.send(api.request(method, path).bearer_auth(TOKEN).json(&body))
        .await
}

/// The report, with `authorization` as the `Authorization` header when one is given.
async fn report(api: &Api, event_id: &str, authorization: Option<&str>) -> (StatusCode, Value) {
    let mut request = api.request(Method::GET, &format!("/events/{event_id}/report"));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    api.send(request).await
}

/// An order of `lines` (type id, quantity) by a new buyer: (allocation id, buyer).
async fn order(api: &Api, event_id: &str, lines: &[(&str, i64)]) -> (String, String) {
    let buyer = new_fingerprint();
    let lines: Vec<Value> = lines
        .iter()
        .map(|(id, quantity)| json!({ "ticketTypeId": id, "quantity": quantity }))
        .collect();
    let request = api
        .request(Method::POST, &format!("/events/{event_id}/tickets"))
        .header("X-Device-Fingerprint", &buyer)
        .json(&json!({ "lines": lines }));
    let (status, hold) = api.send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    (id_of(&hold), buyer)
}

#[tokio::test]
async fn without_an_admin_token_configured_the_report_is_refused_to_everyone() {
    let app = spawn_app().await;
    let event = app.create_event("Open house", 10, None).await;
    let event_id = id_of(&event);
    for authorization in [None, Some("Bearer anything")] {
        let response = app
            .request(Method::GET, &format!("/events/{event_id}/report"))
            .header("Authorization", authorization.unwrap_or(""))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let (status, body) = report(&app, &event_id, authorization).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        let message = body["error"].as_str().unwrap();
        assert!(
            message.contains("--admin-token") && message.contains("BOXOFFICE_ADMIN_TOKEN"),
            "the message says how to configure a token: {message}"
        );
    }
}

#[tokio::test]
async fn the_report_needs_the_admin_token() {
    let app = spawn_app_with(&["--admin-token", TOKEN]).await;
    let (status, event) = as_admin(
        &app,
        Method::POST,
        "/events",
        json!({ "name": "Guarded", "date": "2027-06-01T19:00:00Z", "totalTickets": 10 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    let event_id = id_of(&event);

    let (status, body) = report(&app, &event_id, None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let (status, body) = report(&app, &event_id, Some("Basic czNjcmV0")).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    for wrong in ["Bearer nope", "Bearer s3cret-organiser-but-longer"] {
        let (status, body) = report(&app, &event_id, Some(wrong)).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    let bearer = format!("Bearer {TOKEN}");
    let (status, body) = report(&app, &event_id, Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ticketTypes"].as_array().unwrap().len(), 1);

    let unknown = uuid::Uuid::now_v7().to_string();
    let (status, body) = report(&app, &unknown, Some(&bearer)).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, body) = report(&app, "not-a-uuid", Some(&bearer)).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

#[tokio::test]
async fn the_report_adds_up_holds_payments_cancels_and_kept_prices() {
    let app = spawn_app_with(&["--admin-token", TOKEN]).await;
    let (status, event) = as_admin(
        &app,
        Method::POST,
        "/events",
        json!({ "name": "Gala", "date": "2027-06-01T19:00:00Z", "totalTickets": 100,
                "currency": "EUR", "price": 1000 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    let event_id = id_of(&event);
    let general = id_of(&event["ticketTypes"][0]);
    let types_path = format!("/events/{event_id}/ticket-types");
    let (status, vip) = as_admin(
        &app,
        Method::POST,
        &types_path,
        json!({ "name": "VIP", "price": 5000 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{vip}");
    let vip = id_of(&vip);
    let (status, unsold) = as_admin(
        &app,
        Method::POST,
        &types_path,
        json!({ "name": "Unsold", "price": 200 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{unsold}");
    let unsold = id_of(&unsold);

    // Paid: 2 general (2 × 1000) and 1 VIP (5000).
    let (paid, buyer) = order(&app, &event_id, &[(&general, 2), (&vip, 1)]).await;
    let (status, body) = app.pay(&paid, &buyer, Some("tok_visa")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Held, unpaid: 3 general.
    order(&app, &event_id, &[(&general, 3)]).await;
    // Cancelled: counts nowhere.
    let (cancelled, buyer) = order(&app, &event_id, &[(&vip, 2)]).await;
    let (status, body) = app.cancel(&cancelled, &buyer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Held at 5000, then the price goes up: the hold is paid at the price it was made at.
    let (early, early_buyer) = order(&app, &event_id, &[(&vip, 1)]).await;
    let (status, body) = as_admin(
        &app,
        Method::PATCH,
        &format!("{types_path}/{vip}"),
        json!({ "price": 7000 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.pay(&early, &early_buyer, Some("tok_visa")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Bought at the new price.
    let (late, buyer) = order(&app, &event_id, &[(&vip, 1)]).await;
    let (status, body) = app.pay(&late, &buyer, Some("tok_visa")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = report(&app, &event_id, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let row = |id: &str, name: &str, price, [reserved, purchased, gross]: [i64; 3]| {
        json!({
            "ticketTypeId": id, "name": name, "price": price,
            "reserved": reserved, "purchased": purchased, "refunded": 0,
            "grossAmount": gross, "refundedAmount": 0, "netAmount": gross,
        })
    };
    assert_eq!(
        body,
        json!({
            "currency": "EUR",
            "ticketTypes": [
                row(&general, "General admission", 1000, [3, 2, 2000]),
                row(&vip, "VIP", 7000, [0, 3, 5000 + 5000 + 7000]),
                row(&unsold, "Unsold", 200, [0, 0, 0]),
            ],
            "totals": {
                "reserved": 3, "purchased": 5, "refunded": 0,
                "grossAmount": 19000, "refundedAmount": 0, "netAmount": 19000,
            },
        })
    );
    // The report's tickets are the event's counts.
    let (_, reserved, purchased) = app.counts(&event_id).await;
    assert_eq!((reserved, purchased), (3, 5));
}

#[tokio::test]
async fn the_report_counts_partial_and_full_refunds() {
    let app = spawn_app_with(&["--admin-token", TOKEN]).await;
    let (status, event) = as_admin(
        &app,
        Method::POST,
        "/events",
        json!({ "name": "Refunded gala", "date": "2027-06-01T19:00:00Z", "totalTickets": 50,
                "currency": "JPY", "price": 1000 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    let event_id = id_of(&event);
    let general = id_of(&event["ticketTypes"][0]);
    let (status, vip) = as_admin(
        &app,
        Method::POST,
        &format!("/events/{event_id}/ticket-types"),
        json!({ "name": "VIP", "price": 5000 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{vip}");
    let vip = id_of(&vip);

    // 3 general and 2 VIP, paid; one general ticket refunded.
    let (partly, buyer) = order(&app, &event_id, &[(&general, 3), (&vip, 2)]).await;
    let (status, body) = app.pay(&partly, &buyer, Some("tok_visa")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = as_admin(
        &app,
        Method::POST,
        &format!("/tickets/{partly}/refund"),
        json!({ "lines": [{ "ticketTypeId": general, "quantity": 1 }], "reason": "one fewer" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "purchased", "{body}");
    // 1 VIP, paid, then refunded in full.
    let (whole, buyer) = order(&app, &event_id, &[(&vip, 1)]).await;
    let (status, body) = app.pay(&whole, &buyer, Some("tok_visa")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = as_admin(
        &app,
        Method::POST,
        &format!("/tickets/{whole}/refund"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "refunded", "{body}");

    let (status, body) = report(&app, &event_id, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({
            "currency": "JPY",
            "ticketTypes": [
                { "ticketTypeId": general, "name": "General admission", "price": 1000,
                  "reserved": 0, "purchased": 2, "refunded": 1,
                  "grossAmount": 3000, "refundedAmount": 1000, "netAmount": 2000 },
                { "ticketTypeId": vip, "name": "VIP", "price": 5000,
                  "reserved": 0, "purchased": 2, "refunded": 1,
                  "grossAmount": 15000, "refundedAmount": 5000, "netAmount": 10000 },
            ],
            "totals": {
                "reserved": 0, "purchased": 4, "refunded": 2,
                "grossAmount": 18000, "refundedAmount": 6000, "netAmount": 12000,
            },
        })
    );
    // Refunded tickets are back in the pool: the report's sold tickets are the event's.
    assert_eq!(app.counts(&event_id).await, (46, 0, 4));
}
