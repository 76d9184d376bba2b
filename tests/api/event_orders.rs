//! The organiser's support desk: `GET /events/{id}/orders` finds an event's orders (by
//! confirmation code, by status, a page at a time, never another event's), and
//! `GET /tickets/{id}` with the organiser's token reads any buyer's allocation, so an order
//! a buyer names by its code can be read and refunded. Tokens are checked before the path.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{
    Api, assert_error, boxoffice_command, database_url, fresh_database, id_of, new_fingerprint,
    spawn_app_on, timestamp,
};

const ADMIN: &str = "support-desk-admin";

/// A token of `scope` made by the real CLI on the test's database: its text.
async fn cli_token(options: &PgConnectOptions, scope: &str) -> String {
    let mut command = boxoffice_command();
    command
        .args(["tokens", "create", "--scope", scope])
        .args(["--database-url", &database_url(options)]);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// `GET path` with `Authorization: <authorization>` when one is given.
async fn get_with(api: &Api, path: &str, authorization: Option<&str>) -> (StatusCode, Value) {
    let mut request = api.request(Method::GET, path);
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    api.send(request).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// An event of `total` tickets at 1000 each, made with the admin token: its id.
async fn event(api: &Api, total: i64) -> String {
    let (status, event) = api
        .send(
            api.request(Method::POST, "/events")
                .bearer_auth(ADMIN)
                .json(&json!({"name": format!("Desk {}", new_fingerprint()),
                              "date": "2027-06-01T19:00:00Z", "totalTickets": total,
                              "currency": "EUR", "price": 1000})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    id_of(&event)
}

/// A hold of `quantity` by a new buyer: (the hold, the buyer).
async fn hold(api: &Api, event_id: &str, quantity: i64) -> (Value, String) {
    let buyer = new_fingerprint();
    let (status, hold) = api.purchase(event_id, quantity, &buyer).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    (hold, buyer)
}

/// A paid order of `quantity` by a new buyer: (the order, the buyer).
async fn paid(api: &Api, event_id: &str, quantity: i64) -> (Value, String) {
    let (hold, buyer) = hold(api, event_id, quantity).await;
    let (status, order) = api.pay(&id_of(&hold), &buyer, None).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    (order, buyer)
}

/// The ids of a page's orders, in the order listed.
fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a page: {page}"))
        .iter()
        .map(id_of)
        .collect()
}

#[tokio::test]
async fn the_support_desk_finds_a_paid_order_by_its_code_and_refunds_it() {
    let options = fresh_database().await;
    let app = spawn_app_on(&options, &["--admin-token", ADMIN]).await;
    let event_id = event(&app, 10).await;
    let (order, buyer) = paid(&app, &event_id, 2).await;
    let code = order["confirmationCode"].as_str().unwrap().to_owned();
    // Another paid order of the event, which the code does not find.
    paid(&app, &event_id, 1).await;

    // The buyer reads out the code; the desk finds the order with an organiser token.
    let organiser = cli_token(&options, "organiser").await;
    let path = format!("/events/{event_id}/orders?confirmationCode={code}");
    let (status, found) = get_with(&app, &path, Some(&bearer(&organiser))).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(ids(&found), vec![id_of(&order)], "{found}");
    assert_eq!(
        found["meta"],
        json!({"total": 1, "page": 1, "limit": 10, "pages": 1})
    );
    // The same body as its holder reads.
    let (status, held) = app.ticket(&id_of(&order), &buyer).await;
    assert_eq!(status, StatusCode::OK, "{held}");
    assert_eq!(found["data"][0], held);

    // Refunded through the id found.
    let found_id = id_of(&found["data"][0]);
    let (status, refunded) = app
        .send(
            app.request(Method::POST, &format!("/tickets/{found_id}/refund"))
                .bearer_auth(&organiser)
                .json(&json!({"reason": "cannot come"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    assert_eq!(refunded["status"], "refunded");
    assert_eq!(refunded["refundedAmount"], 2000);

    // Found again by its code, now refunded; no longer among the purchased.
    let (status, found) = get_with(&app, &path, Some(&bearer(ADMIN))).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["data"][0]["status"], "refunded", "{found}");
    let (status, purchased) = get_with(
        &app,
        &format!("/events/{event_id}/orders?status=purchased"),
        Some(&bearer(ADMIN)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{purchased}");
    assert_eq!(purchased["meta"]["total"], 1);
    assert!(!ids(&purchased).contains(&found_id));
}

#[tokio::test]
async fn the_organiser_reads_any_allocation_and_other_tokens_are_refused_before_the_id() {
    let options = fresh_database().await;
    let app = spawn_app_on(&options, &["--admin-token", ADMIN]).await;
    let event_id = event(&app, 10).await;
    let (order, buyer) = paid(&app, &event_id, 1).await;
    let id = id_of(&order);
    let path = format!("/tickets/{id}");
    let (status, held) = app.ticket(&id, &buyer).await;
    assert_eq!(status, StatusCode::OK, "{held}");

    // The admin token and an organiser token read another buyer's allocation: the holder's
    // view, whatever fingerprint comes with them.
    let organiser = cli_token(&options, "organiser").await;
    for token in [ADMIN, organiser.as_str()] {
        let (status, body) = get_with(&app, &path, Some(&bearer(token))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, held);
        let (status, body) = app
            .send(
                app.ticket_request(&id, &new_fingerprint())
                    .bearer_auth(token),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, held);
        let (status, body) = get_with(&app, "/tickets/not-a-uuid", Some(&bearer(token))).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
        let unknown = format!("/tickets/{}", uuid::Uuid::now_v7());
        let (status, body) = get_with(&app, &unknown, Some(&bearer(token))).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    }

    // Any other Authorization is refused, before the path's id is read.
    let door = cli_token(&options, "door").await;
    let wrong = [
        bearer(&door),
        bearer("no-such-token"),
        bearer(&format!("{ADMIN}x")),
        "Basic c3VwcG9ydA==".to_owned(),
    ];
    for authorization in &wrong {
        for target in [path.as_str(), "/tickets/not-a-uuid"] {
            let (status, body) = get_with(&app, target, Some(authorization)).await;
            assert_error(status, &body, StatusCode::FORBIDDEN, "FORBIDDEN");
        }
        let (status, body) = app
            .send(
                app.ticket_request(&id, &buyer)
                    .header("Authorization", authorization),
            )
            .await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "FORBIDDEN");
    }

    // Without a token, the buyer's path as before.
    let (status, body) = app.ticket(&id, &new_fingerprint()).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");
    let (status, body) = get_with(&app, &path, None).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");
    let (status, body) = app.ticket("not-a-uuid", &buyer).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

#[tokio::test]
async fn the_order_list_needs_the_organiser_token_checked_before_the_id() {
    let options = fresh_database().await;
    let app = spawn_app_on(&options, &["--admin-token", ADMIN]).await;
    let event_id = event(&app, 10).await;
    let path = format!("/events/{event_id}/orders");
    let door = cli_token(&options, "door").await;
    for target in [path.as_str(), "/events/not-a-uuid/orders"] {
        let (status, body) = get_with(&app, target, None).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        for wrong in [bearer(&door), bearer("no-such-token")] {
            let (status, body) = get_with(&app, target, Some(&wrong)).await;
            assert_error(status, &body, StatusCode::FORBIDDEN, "FORBIDDEN");
        }
    }
    let (status, body) = get_with(&app, "/events/not-a-uuid/orders", Some(&bearer(ADMIN))).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let unknown = format!("/events/{}/orders", uuid::Uuid::now_v7());
    let (status, body) = get_with(&app, &unknown, Some(&bearer(ADMIN))).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let organiser = cli_token(&options, "organiser").await;
    let (status, body) = get_with(&app, &path, Some(&bearer(&organiser))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"data": [], "meta": {"total": 0, "page": 1, "limit": 10, "pages": 0}})
    );
}

#[tokio::test]
async fn orders_are_listed_newest_first_filtered_and_paged_and_only_the_events_own() {
    let options = fresh_database().await;
    let app = spawn_app_on(&options, &["--admin-token", ADMIN]).await;
    let here = event(&app, 50).await;
    let there = event(&app, 50).await;
    let admin = bearer(ADMIN);

    // Five orders here, in creation order: paid, held, cancelled, paid, held; one elsewhere
    // (paid), made between them.
    let (first, _) = paid(&app, &here, 1).await;
    let (second, _) = hold(&app, &here, 2).await;
    let (elsewhere, _) = paid(&app, &there, 1).await;
    let (third, third_buyer) = hold(&app, &here, 1).await;
    let (status, body) = app.cancel(&id_of(&third), &third_buyer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (fourth, _) = paid(&app, &here, 3).await;
    let (fifth, _) = hold(&app, &here, 1).await;
    let newest_first: Vec<String> = [&fifth, &fourth, &third, &second, &first]
        .into_iter()
        .map(id_of)
        .collect();

    let list = |query: String| {
        let (app, admin, here) = (&app, &admin, &here);
        async move { get_with(app, &format!("/events/{here}/orders{query}"), Some(admin)).await }
    };
    let (status, all) = list(String::new()).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(ids(&all), newest_first);
    let created: Vec<_> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|order| timestamp(&order["createdAt"]))
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{all}");
    assert!(!ids(&all).contains(&id_of(&elsewhere)));

    // Pages of two: the same order, split.
    let mut paged = Vec::new();
    for page in 1..=3 {
        let (status, body) = list(format!("?page={page}&limit=2")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["meta"],
            json!({"total": 5, "page": page, "limit": 2, "pages": 3})
        );
        paged.extend(ids(&body));
    }
    assert_eq!(paged, newest_first);
    let (status, body) = list("?page=4&limit=2".into()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"], json!([]));

    // By status, newest first.
    let (status, body) = list("?status=purchased".into()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), vec![id_of(&fourth), id_of(&first)]);
    assert_eq!(body["meta"]["total"], 2);
    let (status, body) = list("?status=reserved&limit=1".into()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), vec![id_of(&fifth)]);
    assert_eq!(
        body["meta"],
        json!({"total": 2, "page": 1, "limit": 1, "pages": 2})
    );
    let (status, body) = list("?status=cancelled".into()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), vec![id_of(&third)]);
    let (status, body) = list("?status=refunded".into()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["meta"]["total"], 0);

    // By code: the event's own only, and with a status that must match too.
    let code = |order: &Value| order["confirmationCode"].as_str().unwrap().to_owned();
    let (status, body) = list(format!("?confirmationCode={}", code(&fourth))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), vec![id_of(&fourth)]);
    let (status, body) = list(format!(
        "?confirmationCode={}&status=purchased",
        code(&first)
    ))
    .await;
    assert_eq!(ids(&body), vec![id_of(&first)], "{status} {body}");
    let (status, body) = list(format!(
        "?confirmationCode={}&status=cancelled",
        code(&first)
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"data": [], "meta": {"total": 0, "page": 1, "limit": 10, "pages": 0}})
    );
    let (status, body) = list(format!("?confirmationCode={}", code(&elsewhere))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["meta"]["total"], 0,
        "another event's order is not listed"
    );

    // Bad filters and pages are 400 naming the parameter, as GET /tickets reports them.
    let lower = code(&first).to_lowercase();
    for (query, field) in [
        (format!("?confirmationCode={lower}"), "confirmationCode"),
        (
            "?confirmationCode=BX-0000-0000".to_owned(),
            "confirmationCode",
        ),
        ("?confirmationCode=".to_owned(), "confirmationCode"),
        ("?status=PURCHASED".to_owned(), "status"),
        ("?status=paid".to_owned(), "status"),
        ("?status=".to_owned(), "status"),
        ("?page=0".to_owned(), "page"),
        ("?limit=101".to_owned(), "limit"),
    ] {
        let (status, body) = list(query.clone()).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
        assert_eq!(body["details"][0]["field"], field, "{query}: {body}");
    }
}

/// `boxoffice tokens revoke <id>` of the database's one organiser token.
async fn revoke_the_organiser_token(app: &crate::helpers::TestApp, options: &PgConnectOptions) {
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM api_tokens WHERE scope = 'organiser'")
        .fetch_one(&app.pool)
        .await
        .expect("one organiser token");
    let mut command = boxoffice_command();
    command
        .args(["tokens", "revoke", &id.to_string()])
        .args(["--database-url", &database_url(options)]);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

#[tokio::test]
async fn without_an_admin_token_an_organiser_token_still_finds_and_reads_and_a_revoked_one_does_not()
 {
    let options = fresh_database().await;
    let app = spawn_app_on(&options, &[]).await;
    let (status, event) = app
        .post_json(
            "/events",
            json!({"name": "Open desk", "date": "2027-06-01T19:00:00Z", "totalTickets": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    let event_id = id_of(&event);
    let (order, _) = paid(&app, &event_id, 1).await;
    let id = id_of(&order);
    let organiser = cli_token(&options, "organiser").await;
    let list = format!("/events/{event_id}/orders");
    let read = format!("/tickets/{id}");

    let (status, body) = get_with(&app, &list, Some(&bearer(&organiser))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), vec![id.clone()]);
    let (status, body) = get_with(&app, &read, Some(&bearer(&organiser))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(id_of(&body), id);
    // Never open: without a token, or with one it does not know, the list is 401 and says
    // how to configure one; the read with a token it does not know is 403.
    for authorization in [None, Some(bearer("anything"))] {
        let (status, body) = get_with(&app, &list, authorization.as_deref()).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    let (status, body) = get_with(&app, &read, Some(&bearer("anything"))).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FORBIDDEN");

    revoke_the_organiser_token(&app, &options).await;
    let (status, body) = get_with(&app, &read, Some(&bearer(&organiser))).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, body) = get_with(&app, &list, Some(&bearer(&organiser))).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}
