//! Admissions in the holder's view: one per ticket once purchased, whatever made it purchased
//! (a payment alone or in a batch, a free order, recovery, a keyed replay), each with a code
//! the server's public key verifies; their QR codes; refunds revoking them; the schema's
//! backstops; and `--signing-key-file`.

use std::time::Duration;

use boxoffice::config::{Cli, Command};
use boxoffice::domain::admission::{AdmissionCode, KeyId, public_key, verify_code};
use boxoffice::server::Server;
use clap::Parser;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::helpers::{
    BATCHED, PER_REQUEST, TestApp, assert_error, database_url, fresh_database, id_of,
    new_fingerprint, spawn_app_with,
};

const ADMIN: &str = "admissions-organiser";

/// An app with an admin token, and payment recovery by hand after one second.
async fn app_with(flags: &[&str]) -> TestApp {
    let mut all = vec![
        "--admin-token",
        ADMIN,
        "--payment-recovery-seconds",
        "1",
        "--sweep-interval-ms",
        "3600000",
    ];
    all.extend_from_slice(flags);
    spawn_app_with(&all).await
}

fn admin(app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.request(method, path)
        .header("Authorization", format!("Bearer {ADMIN}"))
}

/// An event of 100 tickets whose default type costs `price`, and a second type "VIP" at
/// `price`: (event id, default type id, VIP type id).
async fn event_with_types(app: &TestApp, price: i64) -> (String, String, String) {
    let (status, event) = app
        .send(admin(app, Method::POST, "/events").json(&json!({
            "name": format!("Admissions {}", new_fingerprint()),
            "date": "2027-06-01T19:00:00Z",
            "totalTickets": 100,
            "price": price,
        })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    let event_id = id_of(&event);
    let default_type = event["ticketTypes"][0]["id"].as_str().unwrap().to_owned();
    let (status, vip) = app
        .send(
            admin(
                app,
                Method::POST,
                &format!("/events/{event_id}/ticket-types"),
            )
            .json(&json!({"name": "VIP", "price": price})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{vip}");
    (event_id, default_type, id_of(&vip))
}

/// A hold of `lines` ((type, quantity)) for a new buyer: (hold, buyer).
async fn hold(app: &TestApp, event_id: &str, lines: &[(&str, i64)]) -> (Value, String) {
    let buyer = new_fingerprint();
    let lines: Vec<Value> = lines
        .iter()
        .map(|(t, q)| json!({"ticketTypeId": t, "quantity": q}))
        .collect();
    let (status, hold) = app
        .send(
            app.request(Method::POST, &format!("/events/{event_id}/tickets"))
                .header("X-Device-Fingerprint", &buyer)
                .json(&json!({ "lines": lines })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    (hold, buyer)
}

/// Holds and pays `lines` for a new buyer: (the payment's answer, buyer).
async fn bought(app: &TestApp, event_id: &str, lines: &[(&str, i64)]) -> (Value, String) {
    let (hold, buyer) = hold(app, event_id, lines).await;
    let (status, paid) = app.pay(&id_of(&hold), &buyer, None).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    (paid, buyer)
}

/// Every registered public key, as the database keeps them.
async fn registered_keys(pool: &PgPool) -> Vec<(String, Vec<u8>)> {
    sqlx::query_as("SELECT id, public_key FROM signing_keys ORDER BY created_at, id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// `code` read and verified with the keys registered in the database.
async fn verified(pool: &PgPool, code: &str) -> AdmissionCode {
    let keys = registered_keys(pool).await;
    verify_code(code, |id| {
        keys.iter()
            .find(|(stored, _)| *stored == id.to_hex())
            .and_then(|(_, raw)| public_key(raw))
    })
    .unwrap_or_else(|err| panic!("{code} does not verify: {err}"))
}

/// The admission rows of an allocation in ticket order: (id, ticket type, status).
async fn admission_rows(pool: &PgPool, allocation: &str) -> Vec<(Uuid, Uuid, String)> {
    sqlx::query_as(
        "SELECT id, ticket_type_id, status FROM admissions \
         WHERE allocation_id = $1 ORDER BY position",
    )
    .bind(Uuid::parse_str(allocation).unwrap())
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Asserts that `allocation`'s admissions are exactly its stored ones, in ticket order, each
/// of `statuses` (by position), with codes that verify and name the admission and its event;
/// and that there are as many of each type as the line's tickets.
async fn assert_admissions(pool: &PgPool, allocation: &Value, statuses: &[&str]) {
    let id = id_of(allocation);
    let admissions = allocation["admissions"].as_array().expect("admissions");
    let rows = admission_rows(pool, &id).await;
    assert_eq!(admissions.len(), rows.len(), "{allocation}");
    assert_eq!(admissions.len(), statuses.len(), "{allocation}");
    for line in allocation["lines"].as_array().unwrap() {
        let of_line = admissions
            .iter()
            .filter(|a| a["ticketTypeId"] == line["ticketTypeId"])
            .collect::<Vec<_>>();
        assert_eq!(of_line.len() as i64, line["quantity"].as_i64().unwrap());
        for admission in of_line {
            assert_eq!(admission["ticketTypeName"], line["ticketTypeName"]);
        }
    }
    let event_id = Uuid::parse_str(allocation["eventId"].as_str().unwrap()).unwrap();
    for ((admission, (row_id, row_type, row_status)), status) in
        admissions.iter().zip(&rows).zip(statuses)
    {
        assert_eq!(admission["id"], row_id.to_string(), "{admission}");
        assert_eq!(admission["ticketTypeId"], row_type.to_string());
        assert_eq!(admission["status"], *status, "{admission}");
        assert_eq!(row_status, status);
        // A revoked admission keeps the time and gate of a check-in it had.
        if *status == "valid" {
            assert_eq!(admission["checkedInAt"], Value::Null, "{admission}");
            assert_eq!(admission["gate"], Value::Null, "{admission}");
        }
        let code = admission["code"].as_str().expect("a code");
        assert_eq!(code.len(), 135, "{code}");
        let read = verified(pool, code).await;
        assert_eq!(
            (read.event_id, read.admission_id),
            (event_id, *row_id),
            "{admission}"
        );
    }
}

fn all(status: &'static str, n: usize) -> Vec<&'static str> {
    vec![status; n]
}

#[tokio::test]
async fn paying_makes_one_valid_admission_per_ticket_whose_code_the_servers_key_verifies() {
    for mode in [BATCHED, PER_REQUEST] {
        let app = app_with(mode).await;
        let (event_id, default_type, vip) = event_with_types(&app, 2500).await;
        let (held, buyer) = hold(&app, &event_id, &[(&default_type, 2), (&vip, 3)]).await;
        assert_eq!(held["admissions"], json!([]), "{held}");
        let id = id_of(&held);
        let (status, reserved) = app.ticket(&id, &buyer).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(reserved["admissions"], json!([]), "{reserved}");

        let (status, paid) = app.pay(&id, &buyer, None).await;
        assert_eq!(status, StatusCode::OK, "{paid}");
        assert_admissions(&app.pool, &paid, &all("valid", 5)).await;

        // The holder's other views show the same admissions, with the same codes.
        let (status, read) = app.ticket(&id, &buyer).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read["admissions"], paid["admissions"]);
        let (status, list) = app
            .send(
                app.request(Method::GET, "/tickets")
                    .header("X-Device-Fingerprint", &buyer),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(list["data"][0]["admissions"], paid["admissions"]);

        // Signed with the one registered key, whose id the code carries.
        let keys = registered_keys(&app.pool).await;
        assert_eq!(keys.len(), 1);
        let code = paid["admissions"][0]["code"].as_str().unwrap();
        assert_eq!(verified(&app.pool, code).await.key_id.to_hex(), keys[0].0);
        app.stop().await;
    }
}

#[tokio::test]
async fn payments_settled_together_each_get_their_own_admissions() {
    let app = app_with(BATCHED).await;
    let (event_id, default_type, vip) = event_with_types(&app, 1000).await;
    let mut holds = Vec::new();
    for n in 1..=8 {
        holds.push(
            hold(
                &app,
                &event_id,
                &[(&default_type, n % 3 + 1), (&vip, n % 2 + 1)],
            )
            .await,
        );
    }
    let mut payments = JoinSet::new();
    for (held, buyer) in holds {
        let request = app.pay_request(&id_of(&held), &buyer, None);
        payments.spawn(async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        });
    }
    while let Some(answer) = payments.join_next().await {
        let (status, paid) = answer.unwrap();
        assert_eq!(status, StatusCode::OK, "{paid}");
        let tickets = paid["quantity"].as_u64().unwrap() as usize;
        assert_admissions(&app.pool, &paid, &all("valid", tickets)).await;
    }
}

#[tokio::test]
async fn a_keyed_payments_replay_carries_the_same_admissions() {
    let app = app_with(&[]).await;
    let (event_id, default_type, _) = event_with_types(&app, 1000).await;
    let (held, buyer) = hold(&app, &event_id, &[(&default_type, 3)]).await;
    let pay = || {
        app.request(Method::POST, &format!("/tickets/{}/payment", id_of(&held)))
            .header("X-Device-Fingerprint", &buyer)
            .header("Idempotency-Key", "pay-admissions")
            .json(&json!({}))
    };
    let (status, paid) = app.send(pay()).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_admissions(&app.pool, &paid, &all("valid", 3)).await;
    let response = pay().send().await.unwrap();
    assert!(response.headers().contains_key("idempotent-replayed"));
    let replayed: Value = response.json().await.unwrap();
    assert_eq!(replayed, paid, "the stored answer carries the admissions");
}

#[tokio::test]
async fn a_free_order_gets_its_admissions() {
    let app = app_with(&[]).await;
    let (event_id, default_type, vip) = event_with_types(&app, 0).await;
    let (paid, _) = bought(&app, &event_id, &[(&default_type, 1), (&vip, 2)]).await;
    assert_eq!(paid["total"], 0, "{paid}");
    assert_admissions(&app.pool, &paid, &all("valid", 3)).await;
}

#[tokio::test]
async fn a_payment_settled_by_recovery_gets_its_admissions() {
    let app = app_with(&[]).await;
    let (event_id, default_type, _) = event_with_types(&app, 1000).await;
    let (held, buyer) = hold(&app, &event_id, &[(&default_type, 2)]).await;
    let id = id_of(&held);
    let (status, body) = app.pay(&id, &buyer, Some("tok_lostAfterCharge")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(admission_rows(&app.pool, &id).await.is_empty());

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, settled) = boxoffice::sweeper::sweep_once(&app.state.sweeper)
        .await
        .unwrap();
    assert_eq!(settled, 1);
    let (status, read) = app.ticket(&id, &buyer).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["status"], "purchased", "{read}");
    assert_admissions(&app.pool, &read, &all("valid", 2)).await;
}

#[tokio::test]
async fn the_qr_code_of_an_admission_is_an_svg_for_its_holder_only() {
    let app = app_with(&[]).await;
    let (event_id, default_type, _) = event_with_types(&app, 1000).await;
    let (paid, buyer) = bought(&app, &event_id, &[(&default_type, 2)]).await;
    let (other, other_buyer) = bought(&app, &event_id, &[(&default_type, 1)]).await;
    let id = id_of(&paid);
    let admission = paid["admissions"][1]["id"].as_str().unwrap();
    let qr = |allocation: &str, admission: &str, buyer: &str| {
        app.request(
            Method::GET,
            &format!("/tickets/{allocation}/admissions/{admission}/qr.svg"),
        )
        .header("X-Device-Fingerprint", buyer.to_owned())
    };

    let response = qr(&id, admission, &buyer).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "image/svg+xml");
    assert_eq!(headers[header::CACHE_CONTROL], "private, no-store");
    let svg = response.text().await.unwrap();
    assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"), "{svg}");
    assert!(svg.contains("<svg") && svg.ends_with("</svg>"), "{svg}");
    // Deterministic: the same code draws the same image; another admission another one.
    let again = qr(&id, admission, &buyer).send().await.unwrap();
    assert_eq!(again.text().await.unwrap(), svg);
    let first = paid["admissions"][0]["id"].as_str().unwrap();
    let first = qr(&id, first, &buyer).send().await.unwrap();
    assert_ne!(first.text().await.unwrap(), svg);

    // Another buyer is answered as on GET /tickets/{id}.
    let (status, body) = app.send(qr(&id, admission, &other_buyer)).await;
    let (read_status, read) = app.ticket(&id, &other_buyer).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FINGERPRINT_MISMATCH");
    assert_eq!((status, &body["code"]), (read_status, &read["code"]));
    // Another allocation's admission, an unknown one, an unknown allocation: not found.
    let others = other["admissions"][0]["id"].as_str().unwrap();
    let (status, body) = app.send(qr(&id, others, &buyer)).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(body["error"], "admission not found");
    let unknown = Uuid::new_v4().to_string();
    let (status, body) = app.send(qr(&id, &unknown, &buyer)).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, body) = app.send(qr(&unknown, admission, &buyer)).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(body["error"], "allocation not found");
    // Ids that are not UUIDs, named as the other id paths name them.
    let (status, body) = app.send(qr(&id, "nope", &buyer)).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_eq!(body["details"][0]["field"], "admissionId", "{body}");
    let (status, body) = app.send(qr("nope", admission, &buyer)).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_eq!(body["details"][0]["field"], "id", "{body}");
}

/// Refunds `body` of `allocation` as the organiser: the answer.
async fn refund(app: &TestApp, allocation: &str, body: Value) -> Value {
    let (status, refunded) = app
        .send(admin(app, Method::POST, &format!("/tickets/{allocation}/refund")).json(&body))
        .await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    refunded
}

#[tokio::test]
async fn a_refund_revokes_as_many_admissions_as_it_gives_back_tickets() {
    let app = app_with(&[]).await;
    let (event_id, default_type, vip) = event_with_types(&app, 1000).await;
    let (paid, buyer) = bought(&app, &event_id, &[(&default_type, 2), (&vip, 3)]).await;
    let id = id_of(&paid);
    let vip_positions: Vec<usize> = (0..5)
        .filter(|&i| paid["admissions"][i]["ticketTypeId"] == vip.as_str())
        .collect();
    assert_eq!(vip_positions.len(), 3);

    // Two of the three VIP tickets: exactly two VIP admissions revoked, the last ones.
    let partial = refund(
        &app,
        &id,
        json!({"lines": [{"ticketTypeId": vip, "quantity": 2}]}),
    )
    .await;
    let mut expected = all("valid", 5);
    expected[vip_positions[1]] = "revoked";
    expected[vip_positions[2]] = "revoked";
    assert_admissions(&app.pool, &partial, &expected).await;
    let (_, read) = app.ticket(&id, &buyer).await;
    assert_eq!(read["admissions"], partial["admissions"]);

    // The rest: every admission revoked; the order is refunded and still lists them.
    let full = refund(&app, &id, json!({})).await;
    assert_eq!(full["status"], "refunded", "{full}");
    assert_admissions(&app.pool, &full, &all("revoked", 5)).await;
}

#[tokio::test]
async fn a_refund_revokes_admissions_not_yet_checked_in_first() {
    let app = app_with(&[]).await;
    let (event_id, default_type, _) = event_with_types(&app, 1000).await;
    let (paid, _) = bought(&app, &event_id, &[(&default_type, 3)]).await;
    let id = id_of(&paid);
    // The last ticket, the one a refund would take first, is checked in (as a scan does).
    let last = paid["admissions"][2]["id"].as_str().unwrap();
    sqlx::query(
        "UPDATE admissions SET status = 'checked_in', checked_in_at = now(), gate = 'north' \
         WHERE id = $1",
    )
    .bind(Uuid::parse_str(last).unwrap())
    .execute(&app.pool)
    .await
    .unwrap();

    let partial = refund(
        &app,
        &id,
        json!({"lines": [{"ticketTypeId": default_type, "quantity": 1}]}),
    )
    .await;
    assert_admissions(&app.pool, &partial, &["valid", "revoked", "checked_in"]).await;
    let checked_in = &partial["admissions"][2];
    assert_eq!(checked_in["gate"], "north", "{checked_in}");
    crate::helpers::documented_timestamp(&checked_in["checkedInAt"]);

    // Refunding the rest revokes the checked-in one too, keeping its time and gate.
    let full = refund(&app, &id, json!({})).await;
    assert_admissions(&app.pool, &full, &all("revoked", 3)).await;
    assert_eq!(full["admissions"][2]["gate"], "north");
    assert_eq!(
        full["admissions"][2]["checkedInAt"],
        checked_in["checkedInAt"]
    );
}

#[tokio::test]
async fn the_database_makes_admissions_for_any_writer_that_purchases() {
    let app = app_with(&[]).await;
    let (event_id, default_type, vip) = event_with_types(&app, 1000).await;
    let (held, _) = hold(&app, &event_id, &[(&default_type, 2), (&vip, 1)]).await;
    let id = Uuid::parse_str(&id_of(&held)).unwrap();
    // Purchased by a writer that is not the payment code: the trigger still makes them, in
    // ticket order (by type id, then one per ticket), positions from 1.
    sqlx::query(
        "UPDATE ticket_allocations SET status = 'payment_pending', payment_pending_at = now(), \
             payment_reference = 'by-hand' WHERE id = $1",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM admissions WHERE allocation_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(none, 0, "no admission before the purchase");
    sqlx::query(
        "UPDATE ticket_allocations SET status = 'purchased', purchased_at = now(), \
             confirmation_code = 'BX-HAND-MADE' WHERE id = $1",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    let rows: Vec<(i32, Uuid, String)> = sqlx::query_as(
        "SELECT position, ticket_type_id, status FROM admissions \
         WHERE allocation_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut types = vec![
        Uuid::parse_str(&default_type).unwrap(),
        Uuid::parse_str(&default_type).unwrap(),
        Uuid::parse_str(&vip).unwrap(),
    ];
    types.sort();
    let expected: Vec<(i32, Uuid, String)> = (1..)
        .zip(types)
        .map(|(position, t)| (position, t, "valid".to_owned()))
        .collect();
    assert_eq!(rows, expected);
}

/// The constraint that refused `statement` on the admission `id`, run in a transaction that
/// is rolled back.
async fn refused_by(pool: &PgPool, statement: &'static str, id: Uuid) -> Option<String> {
    let mut tx = pool.begin().await.unwrap();
    let outcome = sqlx::query(statement).bind(id).execute(&mut *tx).await;
    tx.rollback().await.unwrap();
    outcome
        .err()
        .and_then(|err| err.as_database_error()?.constraint().map(str::to_owned))
}

#[tokio::test]
async fn the_schema_refuses_admissions_that_break_its_rules() {
    let app = app_with(&[]).await;
    let (event_id, default_type, _) = event_with_types(&app, 1000).await;
    let (paid, _) = bought(&app, &event_id, &[(&default_type, 2)]).await;
    let (_, other_type, _) = event_with_types(&app, 1000).await;
    let id = Uuid::parse_str(paid["admissions"][0]["id"].as_str().unwrap()).unwrap();
    // PostgreSQL tests CHECK constraints in the order of their names and reports the first
    // that fails. `admissions_valid_untouched` never fails alone: with the status known, the
    // two `…_has_time` constraints imply it, and come first.
    let cases: &[(&'static str, &str)] = &[
        (
            "UPDATE admissions SET status = 'used' WHERE id = $1",
            "admissions_status_known",
        ),
        (
            "UPDATE admissions SET checked_in_at = now() WHERE id = $1",
            "admissions_checked_in_has_time",
        ),
        (
            "UPDATE admissions SET status = 'checked_in' WHERE id = $1",
            "admissions_checked_in_has_time",
        ),
        (
            "UPDATE admissions SET status = 'checked_in', checked_in_at = now(), \
                 revoked_at = now() WHERE id = $1",
            "admissions_checked_in_has_time",
        ),
        (
            "UPDATE admissions SET status = 'revoked' WHERE id = $1",
            "admissions_revoked_has_time",
        ),
        (
            "UPDATE admissions SET revoked_at = now() WHERE id = $1",
            "admissions_revoked_has_time",
        ),
        (
            "UPDATE admissions SET gate = 'north' WHERE id = $1",
            "admissions_gate_only_when_checked_in",
        ),
        (
            "UPDATE admissions SET status = 'checked_in', checked_in_at = now(), \
                 gate = repeat('g', 65) WHERE id = $1",
            "admissions_gate_length",
        ),
        (
            "UPDATE admissions SET status = 'checked_in', checked_in_at = now(), gate = '' \
                 WHERE id = $1",
            "admissions_gate_length",
        ),
        (
            "UPDATE admissions SET position = 0 WHERE id = $1",
            "admissions_position_positive",
        ),
        (
            "UPDATE admissions SET position = position + 1 WHERE id = $1",
            "admissions_allocation_position_key",
        ),
    ];
    for (statement, constraint) in cases {
        assert_eq!(
            refused_by(&app.pool, statement, id).await.as_deref(),
            Some(*constraint),
            "{statement}"
        );
    }
    // A ticket type of another event.
    let mut tx = app.pool.begin().await.unwrap();
    let outcome = sqlx::query("UPDATE admissions SET ticket_type_id = $2 WHERE id = $1")
        .bind(id)
        .bind(Uuid::parse_str(&other_type).unwrap())
        .execute(&mut *tx)
        .await;
    tx.rollback().await.unwrap();
    let refused = outcome
        .err()
        .and_then(|err| err.as_database_error()?.constraint().map(str::to_owned));
    assert_eq!(refused.as_deref(), Some("admissions_ticket_type_fkey"));
    // What the rules allow: checked in with a time and a gate, then revoked keeping both.
    sqlx::query(
        "UPDATE admissions SET status = 'checked_in', checked_in_at = now(), gate = 'north' \
         WHERE id = $1",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE admissions SET status = 'revoked', revoked_at = now() WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
}

/// A file under the system's temporary directory holding `text`, named for this test.
fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("boxoffice-{name}-{}", Uuid::new_v4()));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn codes_are_signed_with_the_key_of_the_signing_key_file() {
    let key = SigningKey::from_bytes(&rand_seed());
    let pem = key.to_pkcs8_pem(Default::default()).unwrap();
    let path = temp_file("signing-key", &pem);
    let app = app_with(&["--signing-key-file", path.to_str().unwrap()]).await;
    let public = key.verifying_key();
    let key_id = KeyId::of(&public);

    let registered = registered_keys(&app.pool).await;
    assert_eq!(
        registered,
        vec![(key_id.to_hex(), public.as_bytes().to_vec())],
        "the file's public key is registered by its id, and no generated key"
    );
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM settings WHERE key = 'ticket_signing_key'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, 0, "a key from a file is never stored");

    let (event_id, default_type, _) = event_with_types(&app, 1000).await;
    let (paid, _) = bought(&app, &event_id, &[(&default_type, 2)]).await;
    assert_eq!(paid["admissions"].as_array().unwrap().len(), 2, "{paid}");
    for admission in paid["admissions"].as_array().unwrap() {
        let code = admission["code"].as_str().unwrap();
        let read = verify_code(code, |id| (id == key_id).then_some(public)).unwrap();
        assert_eq!(read.key_id, key_id);
        assert_eq!(
            read.admission_id.to_string(),
            admission["id"].as_str().unwrap()
        );
    }
    app.stop().await;
    std::fs::remove_file(path).unwrap();
}

fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    seed[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    seed
}

#[tokio::test]
async fn an_unreadable_or_garbage_signing_key_file_stops_the_start() {
    let options = fresh_database().await;
    let url = database_url(&options);
    let garbage = temp_file(
        "garbage-key",
        "-----BEGIN PRIVATE KEY-----\nbm9wZQ==\n-----END PRIVATE KEY-----\n",
    );
    let missing = std::env::temp_dir().join(format!("boxoffice-missing-{}", Uuid::new_v4()));
    for (path, expected) in [
        (&garbage, "not a PKCS#8 PEM Ed25519 private key"),
        (&missing, "cannot read the signing key file"),
    ] {
        let argv = [
            "boxoffice",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &url,
            "--signing-key-file",
            path.to_str().unwrap(),
        ];
        let Some(Command::Serve(args)) = Cli::try_parse_from(argv).unwrap().command else {
            unreachable!("argv names serve")
        };
        let err = match Server::build(&args).await {
            Ok(_) => panic!("started with the key file {}", path.display()),
            Err(err) => err.to_string(),
        };
        assert!(err.contains(expected), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
    std::fs::remove_file(garbage).unwrap();
}

/// Instances starting at once on a fresh database all register the same signing key: every
/// registration succeeds and one row remains. The key's own unique index, not only its id,
/// may be where the racing inserts meet (the CI chaos run's three instances failed to start
/// on it).
#[tokio::test]
async fn instances_registering_one_key_at_once_all_start() {
    let app = spawn_app_with(&[]).await;
    for round in 0..5u8 {
        let key = SigningKey::from_bytes(&[round + 100; 32]).verifying_key();
        let id = KeyId::of(&key).to_hex();
        let registrations = futures_util::future::join_all(
            (0..16).map(|_| boxoffice::db::signing_keys::register(&app.pool, &id, key.as_bytes())),
        )
        .await;
        for registered in registrations {
            registered.expect("a racing registration of the same key succeeds");
        }
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM signing_keys WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(rows, 1, "round {round}");
    }
}
