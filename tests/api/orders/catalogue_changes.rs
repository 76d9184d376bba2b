//! The purchase transaction keeps each event's ticket types between transactions (the
//! instance's `CatalogueCache`), and uses them only while the event's `catalogue_version`,
//! read under the event lock, is unchanged. Here every kind of catalogue change, made on one
//! instance, must reach the very next order on the other instance, whose types were read
//! before the change: a new price, a type closed, a quota added (the event had none, so its
//! orders skipped the quota read) and the quota removed again.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{assert_priced_as_asked, create_quota, create_type, lines_body, order};
use crate::helpers::{Api, assert_error, id_of, new_fingerprint, spawn_app, spawn_app_on};

async fn send(api: &Api, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let request = api.request(method, path);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    api.send(request).await
}

/// The tickets the event's only quota counts as (available, reserved, purchased).
async fn quota_counts(api: &Api, event_id: &str) -> (i64, i64, i64) {
    let (status, quotas) = send(
        api,
        Method::GET,
        &format!("/events/{event_id}/quotas"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{quotas}");
    let quota = &quotas[0];
    let count = |field: &str| quota[field].as_i64().unwrap_or_else(|| panic!("{quotas}"));
    (
        count("availableTickets"),
        count("reservedTickets"),
        count("purchasedTickets"),
    )
}

#[tokio::test]
async fn a_catalogue_change_on_one_instance_reaches_the_next_order_on_another() {
    let first = spawn_app().await;
    let options = (*first.pool.connect_options()).clone();
    let second = spawn_app_on(&options, &["--purchase-mode", "per-request"]).await;
    let event_id = id_of(&first.create_event("Catalogue changes", 100, None).await);
    let x = id_of(&create_type(&first, &event_id, json!({ "name": "X", "price": 1000 })).await);
    let one_x = [(x.as_str(), 1)];

    // Both instances order once, so each has read the types at this version.
    for app in [&first, &second] {
        let (status, hold) = order(app, &event_id, &new_fingerprint(), lines_body(&one_x)).await;
        assert_eq!(status, StatusCode::CREATED, "{hold}");
        assert_priced_as_asked(&hold, &one_x, |_| 1000, "EUR");
    }

    // A new price, set on the second instance, is what the first charges next.
    let type_path = format!("/events/{event_id}/ticket-types/{x}");
    let (status, body) = send(
        &second,
        Method::PATCH,
        &type_path,
        Some(json!({ "price": 2000 })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, hold) = order(&first, &event_id, &new_fingerprint(), lines_body(&one_x)).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    assert_priced_as_asked(&hold, &one_x, |_| 2000, "EUR");

    // A quota added on the first instance binds the second's next orders: three of X are
    // held, so a quota of 5 has 2 left.
    let quota = create_quota(&first, &event_id, "Q", 5, &[&x]).await;
    let quota_id = id_of(&quota);
    let (status, refused) = order(
        &second,
        &event_id,
        &new_fingerprint(),
        lines_body(&[(&x, 3)]),
    )
    .await;
    assert_error(
        status,
        &refused,
        StatusCode::CONFLICT,
        "INSUFFICIENT_TICKETS",
    );
    let (status, hold) = order(
        &second,
        &event_id,
        &new_fingerprint(),
        lines_body(&[(&x, 2)]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    assert_priced_as_asked(&hold, &[(&x, 2)], |_| 2000, "EUR");
    assert_eq!(quota_counts(&first, &event_id).await, (0, 5, 0));

    // The quota removed on the second instance no longer binds the first.
    let (status, body) = send(
        &second,
        Method::DELETE,
        &format!("/events/{event_id}/quotas/{quota_id}"),
        None,
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
    let (status, hold) = order(&first, &event_id, &new_fingerprint(), lines_body(&one_x)).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");

    // A type closed on the first instance no longer sells on the second.
    let (status, body) = send(
        &first,
        Method::PATCH,
        &type_path,
        Some(json!({ "active": false })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, refused) = order(&second, &event_id, &new_fingerprint(), lines_body(&one_x)).await;
    assert_error(
        status,
        &refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(first.counts(&event_id).await, (94, 6, 0));
}
