//! Check-in at the door: exactly one of simultaneous scans of a code admits, over gates and
//! instances; nonces replay the first answer; forged codes, other events' codes and refunded
//! tickets never admit; offline batches keep the earliest scan, record conflicts, and change
//! nothing when uploaded again; the batch route's own body limit; statistics and the export;
//! door tokens on these routes.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use boxoffice::domain::admission::CodeSigner;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::helpers::{
    Api, SseReader, TestApp, assert_error, boxoffice_command, database_url, fresh_database, id_of,
    new_fingerprint, spawn_app_on,
};

const ADMIN: &str = "door-organiser";
const WAIT: Duration = Duration::from_secs(5);

async fn app_on(options: &PgConnectOptions) -> TestApp {
    spawn_app_on(options, &["--admin-token", ADMIN]).await
}

async fn app() -> TestApp {
    app_on(&fresh_database().await).await
}

/// `method path` with `Authorization: Bearer <token>` and an optional JSON body.
async fn call(
    api: &Api,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = api.request(method, path);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    api.send(request).await
}

async fn admin_post(api: &Api, path: &str, body: Value) -> (StatusCode, Value) {
    call(api, Method::POST, path, Some(ADMIN), Some(body)).await
}

async fn admin_get(api: &Api, path: &str) -> (StatusCode, Value) {
    call(api, Method::GET, path, Some(ADMIN), None).await
}

/// A new event of `total` tickets at 10.00 EUR: its id.
async fn event(api: &Api, total: i64) -> String {
    let (status, event) = admin_post(
        api,
        "/events",
        json!({"name": format!("Door {}", new_fingerprint()), "date": "2027-06-01T19:00:00Z",
               "totalTickets": total, "price": 1000}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    id_of(&event)
}

/// Buys and pays `quantity` tickets for a new buyer: (allocation id, the codes of its
/// admissions).
async fn bought(api: &Api, event_id: &str, quantity: i64) -> (String, Vec<String>) {
    let buyer = new_fingerprint();
    let (status, hold) = api.purchase(event_id, quantity, &buyer).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (status, paid) = api.pay(&id_of(&hold), &buyer, None).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let codes: Vec<String> = paid["admissions"]
        .as_array()
        .unwrap_or_else(|| panic!("admissions in {paid}"))
        .iter()
        .map(|a| a["code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len() as i64, quantity, "{paid}");
    (id_of(&hold), codes)
}

async fn scan(api: &Api, event_id: &str, body: Value) -> (StatusCode, Value) {
    admin_post(api, &format!("/events/{event_id}/checkins"), body).await
}

async fn batch(api: &Api, event_id: &str, scans: Value) -> (StatusCode, Value) {
    admin_post(
        api,
        &format!("/events/{event_id}/checkins/batch"),
        json!({ "scans": scans }),
    )
    .await
}

/// The admission id a code names (bytes 21..37).
fn admission_of(code: &str) -> Uuid {
    let bytes = URL_SAFE_NO_PAD.decode(code).unwrap();
    Uuid::from_slice(&bytes[21..37]).unwrap()
}

/// The signer the server keeps in the database.
async fn server_signer(app: &TestApp) -> CodeSigner {
    let stored: String =
        sqlx::query_scalar("SELECT value FROM settings WHERE key = 'ticket_signing_key'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let seed: [u8; 32] = URL_SAFE_NO_PAD
        .decode(stored.trim())
        .unwrap()
        .try_into()
        .unwrap();
    CodeSigner::from_seed(&seed)
}

#[tokio::test]
async fn of_twenty_simultaneous_scans_over_four_gates_and_two_instances_exactly_one_admits() {
    let options = fresh_database().await;
    let first = app_on(&options).await;
    let second = app_on(&options).await;
    let event_id = event(&first, 100).await;
    const ROUNDS: usize = 20;
    let mut codes = Vec::new();
    while codes.len() < ROUNDS {
        codes.extend(bought(&first, &event_id, 5).await.1);
    }
    let instances = [Api::clone(&first), Api::clone(&second)];
    for (round, code) in codes.iter().enumerate() {
        let barrier = Arc::new(Barrier::new(20));
        let mut scans = tokio::task::JoinSet::new();
        for n in 0..20 {
            let api = instances[n % 2].clone();
            let barrier = barrier.clone();
            let body = json!({"code": code, "gate": format!("Gate {}", n % 4 + 1)});
            let event_id = event_id.clone();
            scans.spawn(async move {
                barrier.wait().await;
                scan(&api, &event_id, body).await
            });
        }
        let answers = scans.join_all().await;
        let admitted: Vec<&Value> = answers
            .iter()
            .filter(|(status, _)| *status == StatusCode::OK)
            .map(|(_, body)| body)
            .collect();
        assert_eq!(admitted.len(), 1, "round {round}: {answers:?}");
        let winner = admitted[0];
        assert_eq!(winner["result"], "admitted");
        assert_eq!(winner["admission"]["status"], "checked_in");
        for (status, body) in &answers {
            if *status == StatusCode::OK {
                continue;
            }
            assert_error(*status, body, StatusCode::CONFLICT, "ALREADY_CHECKED_IN");
            assert_eq!(body["checkedInAt"], winner["checkedInAt"], "round {round}");
            assert_eq!(body["gate"], winner["gate"], "round {round}");
        }
        let (status, gate): (String, Option<String>) =
            sqlx::query_as("SELECT status, gate FROM admissions WHERE id = $1")
                .bind(admission_of(code))
                .fetch_one(&first.pool)
                .await
                .unwrap();
        assert_eq!(status, "checked_in");
        assert_eq!(gate.as_deref(), winner["gate"].as_str());
    }
}

#[tokio::test]
async fn a_retried_nonce_gets_the_first_answer_even_when_both_arrive_at_once() {
    let app = app().await;
    let event_id = event(&app, 10).await;
    let (_, codes) = bought(&app, &event_id, 3).await;

    let (status, first) = scan(
        &app,
        &event_id,
        json!({"code": codes[0], "gate": "A", "nonce": "dev-1:1"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    // The scanner lost the answer and retries: green again, with the first time and gate.
    let (status, again) = scan(
        &app,
        &event_id,
        json!({"code": codes[0], "gate": "A", "nonce": "dev-1:1"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["checkedInAt"], first["checkedInAt"]);
    assert_eq!(again["gate"], "A");
    // Another scan of it is a duplicate, and its retry answers the same.
    for _ in 0..2 {
        let (status, body) = scan(
            &app,
            &event_id,
            json!({"code": codes[0], "gate": "B", "nonce": "dev-2:1"}),
        )
        .await;
        assert_error(status, &body, StatusCode::CONFLICT, "ALREADY_CHECKED_IN");
        assert_eq!(body["checkedInAt"], first["checkedInAt"]);
        assert_eq!(body["gate"], "A");
    }
    // The nonce of a scan of one ticket, reused for another ticket.
    let (status, body) = scan(
        &app,
        &event_id,
        json!({"code": codes[1], "nonce": "dev-1:1"}),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "NONCE_REUSED",
    );

    // Two scans with one nonce at the same moment: both green, one check-in.
    let barrier = Arc::new(Barrier::new(2));
    let mut scans = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (api, barrier, event_id) = (Api::clone(&app), barrier.clone(), event_id.clone());
        let body = json!({"code": codes[2], "gate": "C", "nonce": "dev-3:7"});
        scans.spawn(async move {
            barrier.wait().await;
            scan(&api, &event_id, body).await
        });
    }
    let answers = scans.join_all().await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{answers:?}");
        assert_eq!(body["checkedInAt"], answers[0].1["checkedInAt"]);
    }
    assert_eq!(app.row_count("checkin_scans").await, 3);
}

#[tokio::test]
async fn forged_malformed_and_unknown_codes_are_invalid_and_change_nothing() {
    let app = app().await;
    let event_id = event(&app, 10).await;
    let (_, codes) = bought(&app, &event_id, 1).await;
    let event_uuid = Uuid::parse_str(&event_id).unwrap();

    let mut bytes = URL_SAFE_NO_PAD.decode(&codes[0]).unwrap();
    bytes[60] ^= 1;
    let forged_signature = URL_SAFE_NO_PAD.encode(&bytes);
    let other_key = CodeSigner::from_seed(&[42; 32]).code(event_uuid, admission_of(&codes[0]));
    let no_such_admission = server_signer(&app).await.code(event_uuid, Uuid::new_v4());
    for code in [
        forged_signature,
        other_key,
        no_such_admission,
        "not a code".to_owned(),
        codes[0][..134].to_owned(),
    ] {
        let (status, body) = scan(&app, &event_id, json!({"code": code, "gate": "A"})).await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_TICKET_CODE",
        );
    }
    let (status, body) = scan(&app, &event_id, json!({"gate": "A"})).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(body["details"][0]["field"], "code");
    // The real code still admits: nothing above touched it.
    let (status, body) = scan(&app, &event_id, json!({"code": codes[0]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["gate"].is_null());
}

/// Registers a new signing key's public half, as an instance started with that key does.
async fn register_key(app: &TestApp, seed: u8) -> CodeSigner {
    let signer = CodeSigner::from_seed(&[seed; 32]);
    sqlx::query("INSERT INTO signing_keys (id, public_key) VALUES ($1, $2)")
        .bind(signer.key_id().to_hex())
        .bind(signer.verifying_key().as_bytes().as_slice())
        .execute(&app.pool)
        .await
        .unwrap();
    signer
}

#[tokio::test]
async fn a_key_registered_just_after_an_unknown_one_was_met_admits_at_once() {
    // An unknown key id makes an instance read the registered keys again, at most once a
    // second. A code of a key registered within that second (another instance started with a
    // new key) must still admit, online and offline: the instance waits for its next read
    // rather than answering from keys read before the scan arrived.
    let app = app().await;
    let event_id = event(&app, 10).await;
    let (_, codes) = bought(&app, &event_id, 2).await;
    let event_uuid = Uuid::parse_str(&event_id).unwrap();
    let forged = |seed: u8| CodeSigner::from_seed(&[seed; 32]).code(event_uuid, Uuid::new_v4());

    let (status, body) = scan(&app, &event_id, json!({"code": forged(71)})).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_TICKET_CODE",
    );
    let online = register_key(&app, 72).await;
    let code = online.code(event_uuid, admission_of(&codes[0]));
    let (status, body) = scan(&app, &event_id, json!({"code": code, "gate": "A"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = scan(&app, &event_id, json!({"code": forged(73)})).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_TICKET_CODE",
    );
    let offline_key = register_key(&app, 74).await;
    let code = offline_key.code(event_uuid, admission_of(&codes[1]));
    // Scans of unknown keys in one batch share one read of the keys: a batch of the new key's
    // code among forged codes of six more keys waits for one read, not a second for each.
    let mut scans = vec![offline(&code, "B", "2026-06-01T10:00:00Z", "n0")];
    scans.extend((1..=6).map(|k| {
        offline(
            &forged(74 + k),
            "B",
            "2026-06-01T10:00:00Z",
            &format!("n{k}"),
        )
    }));
    scans.swap(0, 3);
    let started = std::time::Instant::now();
    let (status, body) = batch(&app, &event_id, json!(scans)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    let mut expected = ["invalid"; 7];
    expected[3] = "admitted";
    assert_eq!(results, expected, "{body}");
    // One read is at most a second away; one per forged key would take six.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the batch took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_code_of_another_event_is_wrong_event() {
    let app = app().await;
    let here = event(&app, 10).await;
    let there = event(&app, 10).await;
    let (_, codes) = bought(&app, &there, 1).await;
    let (status, body) = scan(&app, &here, json!({"code": codes[0]})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "WRONG_EVENT");
    let (status, _) = scan(&app, &there, json!({"code": codes[0]})).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_refunded_ticket_is_revoked_online_offline_and_in_the_export() {
    let app = app().await;
    let event_id = event(&app, 10).await;
    let (allocation, codes) = bought(&app, &event_id, 1).await;
    let (status, body) =
        admin_post(&app, &format!("/tickets/{allocation}/refund"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = scan(&app, &event_id, json!({"code": codes[0], "nonce": "r-1"})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "TICKET_REVOKED");
    let (status, body) = batch(
        &app,
        &event_id,
        json!([{"code": codes[0], "gate": "A", "scannedAt": "2027-06-01T18:00:00Z", "nonce": "r-2"}]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["result"], "revoked");

    let (status, export) = admin_get(&app, &format!("/events/{event_id}/checkin/export")).await;
    assert_eq!(status, StatusCode::OK, "{export}");
    assert_eq!(
        export["revoked"],
        json!([admission_of(&codes[0]).to_string()])
    );
    assert_eq!(export["admitted"], json!([]));
}

/// A scan of `code` for a batch.
fn offline(code: &str, gate: &str, at: &str, nonce: &str) -> Value {
    json!({"code": code, "gate": gate, "scannedAt": at, "nonce": nonce})
}

/// Two devices that scanned one ticket at the same instant: the scan with the lower nonce
/// stands, whichever device uploads first (docs/admission.md: time, then nonce). Red when a
/// later upload moved the check-in only for a strictly earlier time: the first upload stood.
#[tokio::test]
async fn scans_at_one_instant_from_two_devices_end_the_same_whichever_uploads_first() {
    let app = app().await;
    let event_id = event(&app, 10).await;
    let (_, codes) = bought(&app, &event_id, 2).await;
    let instant = "2026-06-01T10:00:00Z";
    for (ticket, order) in [(0, ["a", "b"]), (1, ["b", "a"])] {
        for device in order {
            let nonce = format!("t{ticket}:{device}");
            let scans = json!([offline(
                &codes[ticket],
                &format!("Gate {device}"),
                instant,
                &nonce
            )]);
            let (status, body) = batch(&app, &event_id, scans).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    let (status, export) = admin_get(&app, &format!("/events/{event_id}/checkin/export")).await;
    assert_eq!(status, StatusCode::OK, "{export}");
    let (status, listed) = admin_get(&app, &format!("/events/{event_id}/checkins/conflicts")).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    for (ticket, code) in codes[..2].iter().enumerate() {
        let id = admission_of(code).to_string();
        let admitted = export["admitted"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} not checked in: {export}"));
        assert_eq!(admitted["gate"], "Gate a", "{export}");
        let conflict = listed["conflicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["admissionId"] == id.as_str())
            .unwrap_or_else(|| panic!("no conflict for {id}: {listed}"));
        assert_eq!(
            conflict["admitted"]["nonce"],
            format!("t{ticket}:a"),
            "{listed}"
        );
        assert_eq!(
            conflict["conflicting"]["nonce"],
            format!("t{ticket}:b"),
            "{listed}"
        );
    }
}

#[tokio::test]
async fn an_offline_scan_earlier_than_the_online_check_in_becomes_it_and_the_other_a_conflict() {
    let app = app().await;
    let event_id = event(&app, 10).await;
    let (_, codes) = bought(&app, &event_id, 3).await;
    let (status, online) = scan(
        &app,
        &event_id,
        json!({"code": codes[0], "gate": "Online", "nonce": "on-1"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{online}");

    // A device offline since before: it let the first ticket in earlier than the online scan,
    // the second ticket twice (its own duplicate: no conflict), the third once.
    let scans = json!([
        offline(&codes[0], "Side", "2026-01-01T18:00:00Z", "dev-a:1"),
        offline(&codes[1], "Side", "2026-01-01T18:01:00Z", "dev-a:2"),
        offline(&codes[1], "Side", "2026-01-01T18:02:00Z", "dev-a:3"),
        offline(&codes[2], "Side", "2026-01-01T18:03:00Z", "dev-a:4"),
        offline("garbage", "Side", "2026-01-01T18:04:00Z", "dev-a:5"),
    ]);
    let (status, first_upload) = batch(&app, &event_id, scans.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first_upload}");
    let results: Vec<&str> = first_upload["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(
        results,
        ["admitted", "admitted", "duplicate", "admitted", "invalid"]
    );
    assert_eq!(
        first_upload["results"][2]["firstCheckedInAt"],
        "2026-01-01T18:01:00Z"
    );
    assert_eq!(first_upload["results"][2]["firstGate"], "Side");

    // The first ticket's check-in moved back to the offline scan.
    let (status, export) = admin_get(&app, &format!("/events/{event_id}/checkin/export")).await;
    assert_eq!(status, StatusCode::OK);
    let moved = export["admitted"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == admission_of(&codes[0]).to_string())
        .unwrap()
        .clone();
    assert_eq!(moved["checkedInAt"], "2026-01-01T18:00:00Z");
    assert_eq!(moved["gate"], "Side");
    // And a later online scan is told of that first check-in.
    let (status, body) = scan(&app, &event_id, json!({"code": codes[0]})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "ALREADY_CHECKED_IN");
    assert_eq!(body["checkedInAt"], "2026-01-01T18:00:00Z");
    assert_eq!(body["gate"], "Side");

    let (status, listed) = admin_get(&app, &format!("/events/{event_id}/checkins/conflicts")).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let conflicts = listed["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{listed}");
    let conflict = &conflicts[0];
    assert_eq!(conflict["admissionId"], admission_of(&codes[0]).to_string());
    assert_eq!(conflict["admitted"]["scannedAt"], "2026-01-01T18:00:00Z");
    assert_eq!(conflict["admitted"]["nonce"], "dev-a:1");
    assert_eq!(conflict["conflicting"]["scannedAt"], online["checkedInAt"]);
    assert_eq!(conflict["conflicting"]["gate"], "Online");
    assert_eq!(conflict["conflicting"]["nonce"], "on-1");

    // Uploading the same batch again: the same results, nothing new.
    let (status, again) = batch(&app, &event_id, scans).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, first_upload);
    assert_eq!(app.row_count("checkin_conflicts").await, 1);

    // A second device that let the third ticket in later: a conflict the other way round.
    let (status, body) = batch(
        &app,
        &event_id,
        json!([offline(
            &codes[2],
            "Back",
            "2026-01-01T19:00:00Z",
            "dev-b:1"
        )]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["results"][0]["result"], "duplicate");
    assert_eq!(
        body["results"][0]["firstCheckedInAt"],
        "2026-01-01T18:03:00Z"
    );
    let (_, listed) = admin_get(&app, &format!("/events/{event_id}/checkins/conflicts")).await;
    let last = &listed["conflicts"][1];
    assert_eq!(last["admitted"]["nonce"], "dev-a:4");
    assert_eq!(last["conflicting"]["nonce"], "dev-b:1");
    assert_eq!(last["conflicting"]["gate"], "Back");
}

#[tokio::test]
async fn a_batch_holds_1_to_1000_scans_and_has_its_own_body_limit() {
    let app = app().await;
    let event_id = event(&app, 10).await;
    let path = format!("/events/{event_id}/checkins/batch");
    // The largest codes and nonces a device sends: 1,000 of them are far over 16 KiB.
    let scans = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| {
                offline(
                    &"A".repeat(135),
                    "Main entrance",
                    "2027-06-01T18:00:00.123456Z",
                    &format!("{i:0>128}"),
                )
            })
            .collect()
    };
    let (status, body) = admin_post(&app, &path, json!({"scans": scans(1001)})).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(body["details"][0]["field"], "scans");
    let (status, body) = admin_post(&app, &path, json!({"scans": []})).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );

    let thousand = json!({"scans": scans(1000)});
    assert!(serde_json::to_vec(&thousand).unwrap().len() > 256 * 1024);
    let (status, body) = admin_post(&app, &path, thousand).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 1000);
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["result"] == "invalid")
    );

    // Every other route keeps 16 KiB, the single scan among them.
    let (status, body) = scan(&app, &event_id, json!({"code": "x".repeat(17 * 1024)})).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    );
    let (status, body) = admin_post(&app, "/events", json!({"name": "x".repeat(17 * 1024)})).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    );
    // And the batch route refuses more than its own limit.
    let (status, body) = admin_post(
        &app,
        &path,
        json!({"scans": [], "pad": "x".repeat(700 * 1024)}),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    );

    // A nonce twice in one batch is refused, naming the second.
    let twice = json!([
        offline("a", "G", "2027-06-01T18:00:00Z", "same"),
        offline("b", "G", "2027-06-01T18:00:00Z", "same"),
    ]);
    let (status, body) = batch(&app, &event_id, twice).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(body["details"][0]["field"], "scans[1].nonce");
}

#[tokio::test]
async fn statistics_and_the_export_count_what_happened() {
    let app = app().await;
    let event_id = event(&app, 10).await;
    let (_, codes) = bought(&app, &event_id, 4).await;
    let (refunded, refunded_codes) = bought(&app, &event_id, 1).await;
    let (status, _) = admin_post(&app, &format!("/tickets/{refunded}/refund"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    for (code, gate) in [
        (&codes[0], Some("North")),
        (&codes[1], Some("North")),
        (&codes[2], None),
    ] {
        let (status, body) = scan(&app, &event_id, json!({"code": code, "gate": gate})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    let (status, stats) = admin_get(&app, &format!("/events/{event_id}/checkins/stats")).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["admitted"], 3);
    assert_eq!(stats["valid"], 1);
    assert_eq!(stats["revoked"], 1);
    assert_eq!(stats["byTicketType"][0]["name"], "General admission");
    assert_eq!(stats["byTicketType"][0]["admitted"], 3);
    assert_eq!(
        stats["byGate"],
        json!([{"gate": null, "admitted": 1}, {"gate": "North", "admitted": 2}])
    );

    let (status, export) = admin_get(&app, &format!("/events/{event_id}/checkin/export")).await;
    assert_eq!(status, StatusCode::OK, "{export}");
    assert_eq!(export["eventId"], event_id);
    assert_eq!(export["admitted"].as_array().unwrap().len(), 3);
    assert_eq!(
        export["revoked"],
        json!([admission_of(&refunded_codes[0]).to_string()])
    );
    let key = &export["keys"][0];
    assert_eq!(key["algorithm"], "Ed25519");
    let signer = server_signer(&app).await;
    assert_eq!(key["id"], signer.key_id().to_hex());
    assert_eq!(
        key["publicKey"],
        URL_SAFE_NO_PAD.encode(signer.verifying_key().as_bytes())
    );
    assert!(export["generatedAt"].as_str().unwrap().ends_with('Z'));

    let unknown = Uuid::new_v4();
    for route in ["checkins/stats", "checkin/export", "checkins/conflicts"] {
        let (status, body) = admin_get(&app, &format!("/events/{unknown}/{route}")).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
}

/// A token made by the real CLI on the test's database: its text.
async fn door_token(options: &PgConnectOptions, event_id: &str) -> String {
    let mut command = boxoffice_command();
    command
        .args(["tokens", "create", "--scope", "door", "--event", event_id])
        .args(["--database-url", &database_url(options)]);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn check_in_routes_need_a_door_token_of_their_event() {
    let options = fresh_database().await;
    let app = app_on(&options).await;
    let here = event(&app, 10).await;
    let there = event(&app, 10).await;
    let (_, codes) = bought(&app, &here, 1).await;
    let door_here = door_token(&options, &here).await;
    let door_there = door_token(&options, &there).await;
    let routes = [
        (Method::POST, format!("/events/{here}/checkins")),
        (Method::POST, format!("/events/{here}/checkins/batch")),
        (Method::GET, format!("/events/{here}/checkins/stats")),
        (Method::GET, format!("/events/{here}/checkins/conflicts")),
        (Method::GET, format!("/events/{here}/checkin/export")),
    ];
    for (method, path) in &routes {
        let (status, body) = call(&app, method.clone(), path, None, Some(json!({}))).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        for wrong in [door_there.as_str(), "not-a-token"] {
            let (status, body) =
                call(&app, method.clone(), path, Some(wrong), Some(json!({}))).await;
            assert_error(status, &body, StatusCode::FORBIDDEN, "FORBIDDEN");
        }
        // The token is checked before the path's id: a caller without a token the server
        // knows learns nothing of ids, not even which are well-formed.
        let malformed = path.replace(&here, "not-a-uuid");
        let (status, body) = call(&app, method.clone(), &malformed, None, Some(json!({}))).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        let (status, body) = call(
            &app,
            method.clone(),
            &malformed,
            Some("not-a-token"),
            Some(json!({})),
        )
        .await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "FORBIDDEN");
        let (status, body) = call(
            &app,
            method.clone(),
            &malformed,
            Some(ADMIN),
            Some(json!({})),
        )
        .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    let (status, body) = call(
        &app,
        Method::POST,
        &format!("/events/{here}/checkins"),
        Some(&door_here),
        Some(json!({"code": codes[0], "gate": "Door"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(
        &app,
        Method::GET,
        &format!("/events/{here}/checkins/stats"),
        Some(&door_here),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["admitted"], 1);
    // A door token cannot do an organiser's work.
    let (status, body) = call(
        &app,
        Method::POST,
        "/events",
        Some(&door_here),
        Some(json!({"name": "No", "date": "2027-06-01T19:00:00Z", "totalTickets": 1})),
    )
    .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FORBIDDEN");
}

#[tokio::test]
async fn the_stream_carries_check_ins_from_every_instance_with_growing_ids() {
    let options = fresh_database().await;
    let watching = app_on(&options).await;
    let scanning = app_on(&options).await;
    let event_id = event(&watching, 10).await;
    let (_, codes) = bought(&watching, &event_id, 3).await;
    let (status, _) = scan(&scanning, &event_id, json!({"code": codes[0]})).await;
    assert_eq!(status, StatusCode::OK);

    let mut stream = SseReader::connect(&watching, &format!("/events/{event_id}/stream")).await;
    let snapshot = stream.next(WAIT).await.unwrap();
    assert_eq!(snapshot.data["statistics"]["checkedIn"], 1);
    // The id counts the sale's changes (a purchase and its payment) and the check-ins.
    assert_eq!(snapshot.id, Some(2 + 1));

    // Check-ins take no event lock and send no notification: the hub counts them.
    let (status, _) = scan(&scanning, &event_id, json!({"code": codes[1]})).await;
    assert_eq!(status, StatusCode::OK);
    let message = stream
        .until(WAIT, |m| m.data["statistics"]["checkedIn"] == 2)
        .await
        .pop()
        .unwrap();
    assert_eq!(message.id, Some(2 + 2));
    assert_eq!(message.data["statistics"]["confirmedTickets"], 3);

    // A sale change after it keeps the count and takes the next id.
    let (status, _) = watching.purchase(&event_id, 1, &new_fingerprint()).await;
    assert_eq!(status, StatusCode::CREATED);
    let message = stream
        .until(WAIT, |m| m.last_type() == Some("ticket_allocated"))
        .await
        .pop()
        .unwrap();
    assert_eq!(message.id, Some(3 + 2));
    assert_eq!(message.data["statistics"]["checkedIn"], 2);
}

#[tokio::test]
async fn two_devices_uploading_the_same_tickets_in_opposite_orders_never_deadlock() {
    let options = fresh_database().await;
    let first = app_on(&options).await;
    let second = app_on(&options).await;
    let event_id = event(&first, 200).await;
    let at = |minute: usize, second: usize| format!("2026-01-01T18:{minute:02}:{second:02}Z");
    for round in 0..10 {
        let (_, codes) = bought(&first, &event_id, 10).await;
        // Device A scanned the even tickets first, device B the odd ones; each uploads its
        // scans in its own order, B's reversed.
        let scans_of = |device: &str, earlier: usize| -> Vec<Value> {
            codes
                .iter()
                .enumerate()
                .map(|(i, code)| {
                    let second = if i % 2 == earlier { 0 } else { 30 };
                    offline(
                        code,
                        device,
                        &at(i, second),
                        &format!("{device}-{round}-{i}"),
                    )
                })
                .collect()
        };
        let a = json!(scans_of("A", 0));
        let mut reversed = scans_of("B", 1);
        reversed.reverse();
        let b = json!(reversed);
        let barrier = Arc::new(Barrier::new(2));
        let mut uploads = tokio::task::JoinSet::new();
        for (api, scans) in [(Api::clone(&first), a), (Api::clone(&second), b)] {
            let (barrier, event_id) = (barrier.clone(), event_id.clone());
            uploads.spawn(async move {
                barrier.wait().await;
                batch(&api, &event_id, scans).await
            });
        }
        for (status, body) in uploads.join_all().await {
            assert_eq!(status, StatusCode::OK, "round {round}: {body}");
        }
        // Whichever committed first, each ticket's check-in is its earlier scan, and each
        // ticket let in by both devices is one conflict.
        for (i, code) in codes.iter().enumerate() {
            let (checked_in_at, gate): (time::OffsetDateTime, String) =
                sqlx::query_as("SELECT checked_in_at, gate FROM admissions WHERE id = $1")
                    .bind(admission_of(code))
                    .fetch_one(&first.pool)
                    .await
                    .unwrap();
            let expected = time::OffsetDateTime::parse(
                &at(i, 0),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            assert_eq!(checked_in_at, expected, "round {round}, ticket {i}");
            assert_eq!(gate, if i % 2 == 0 { "A" } else { "B" });
        }
    }
    assert_eq!(first.row_count("checkin_conflicts").await, 100);
}

/// An upload whose scans record conflicts, racing refunds of the same orders, never
/// deadlocks. The upload locks admissions, then inserts its conflicts, whose key to `events`
/// makes PostgreSQL lock the event row `FOR KEY SHARE`; a refund locks the event row, then
/// (by trigger) the admissions it revokes. While the event lock was `FOR UPDATE`, which
/// conflicts with `FOR KEY SHARE`, the two waited on each other: PostgreSQL broke the cycle,
/// one of them answered 503, and a refund so broken was left `pending` for recovery (a
/// helper probing the door found it on 2 December 2026). Row locks are now `FOR NO KEY
/// UPDATE`, which a foreign key's check does not wait for. Red with the event lock back at
/// `FOR UPDATE`: 503s and `deadlock detected` in a few rounds.
#[tokio::test]
async fn uploads_recording_conflicts_and_refunds_of_the_same_orders_never_deadlock() {
    let app = app().await;
    let event_id = event(&app, 1_000).await;
    for round in 0..8 {
        let mut orders = Vec::new();
        for _ in 0..4 {
            orders.push(bought(&app, &event_id, 5).await);
        }
        let codes: Vec<String> = orders.iter().flat_map(|(_, codes)| codes.clone()).collect();
        // Checked in at the door first, so that every scan uploaded is a conflict.
        for code in &codes {
            let (status, body) = scan(&app, &event_id, json!({"code": code, "gate": "door"})).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let barrier = Arc::new(Barrier::new(7));
        let mut calls = tokio::task::JoinSet::new();
        for device in 0..3 {
            let scans: Vec<Value> = codes
                .iter()
                .enumerate()
                .map(|(i, code)| {
                    offline(
                        code,
                        &format!("dev{device}"),
                        "2026-01-01T18:00:00Z",
                        &format!("r{round}-d{device}-{i}"),
                    )
                })
                .collect();
            let (api, barrier, event_id) = (Api::clone(&app), barrier.clone(), event_id.clone());
            calls.spawn(async move {
                barrier.wait().await;
                ("upload", batch(&api, &event_id, json!(scans)).await)
            });
        }
        for (order, _) in &orders {
            let (api, barrier, path) = (
                Api::clone(&app),
                barrier.clone(),
                format!("/tickets/{order}/refund"),
            );
            calls.spawn(async move {
                barrier.wait().await;
                ("refund", admin_post(&api, &path, json!({})).await)
            });
        }
        for (what, (status, body)) in calls.join_all().await {
            assert_eq!(status, StatusCode::OK, "round {round}, {what}: {body}");
        }
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM refunds WHERE status = 'pending'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(pending, 0, "round {round}");
    }
}

#[tokio::test]
async fn scan_times_outside_the_date_window_and_unknown_events_change_nothing() {
    let app = app().await;
    let event_id = event(&app, 10).await;
    let (_, codes) = bought(&app, &event_id, 1).await;
    // Before 1970 once in UTC (year 0000 at +01:00 is year -1), after 9999, or not a
    // date-time: refused by field, nothing checked in, the ticket still valid.
    for at in [
        json!("0000-01-01T00:00:00+01:00"),
        json!("1969-12-31T23:59:59Z"),
        json!("9999-12-31T23:59:59-01:00"),
        json!("yesterday"),
        json!(1_700_000_000),
    ] {
        let (status, body) = batch(
            &app,
            &event_id,
            json!([{"code": codes[0], "gate": "Z", "scannedAt": at, "nonce": "early"}]),
        )
        .await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        assert_eq!(
            body["details"][0]["field"], "scans[0].scannedAt",
            "{at}: {body}"
        );
        let message = body["details"][0]["message"].as_str().unwrap();
        assert!(!message.contains("OffsetDateTime"), "{message}");
    }
    let (status, stats) = admin_get(&app, &format!("/events/{event_id}/checkins/stats")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (stats["admitted"].as_i64(), stats["valid"].as_i64()),
        (Some(0), Some(1))
    );

    // A scan that is not an object names no Rust type in its error.
    let (status, body) = batch(&app, &event_id, json!([null])).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    let message = body["details"][0]["message"].as_str().unwrap();
    assert_eq!(message, "invalid type: null, expected a JSON object");
    // Nor is an array of a scan's fields in order, which serde would take for one.
    let (status, body) = batch(
        &app,
        &event_id,
        json!([[codes[0], "Z", "2027-06-01T18:00:00Z", "arr"]]),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(body["details"][0]["field"], "scans[0]", "{body}");
    assert_eq!(
        body["details"][0]["message"],
        "invalid type: sequence, expected a JSON object"
    );

    // A batch for an event that does not exist is a 404, as the other check-in routes answer.
    let (status, body) = batch(
        &app,
        &Uuid::new_v4().to_string(),
        json!([{"code": codes[0], "gate": "Z", "scannedAt": "2027-06-01T18:00:00Z", "nonce": "x"}]),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");

    // The one valid scan then admits, at its own time.
    let (status, body) = batch(
        &app,
        &event_id,
        json!([{"code": codes[0], "gate": "Z", "scannedAt": "1970-01-01T00:00:00Z", "nonce": "ok"}]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["result"], "admitted", "{body}");
}

/// An upload that waited for an online check-in of its ticket records the conflict with
/// that check-in's nonce: the nonce is read once the admission's lock is held, not by the
/// locking statement itself, whose reads of other tables are from before its wait (it saw
/// the check-in's admission row, but not its scan: `null`, which api.md keeps for a scan
/// sent without a nonce, and which sorted first in a tie). Found by a tester racing the two
/// on two instances (13 of 21 conflicts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_behind_an_online_check_in_records_that_check_ins_nonce() {
    let app = app().await;
    let event_id = event(&app, 10).await;
    let (_, codes) = bought(&app, &event_id, 1).await;
    let mut blocker = crate::helpers::Blocker::begin(&app.pool).await;
    sqlx::query("SELECT 1 FROM admissions WHERE id = $1 FOR NO KEY UPDATE")
        .bind(admission_of(&codes[0]))
        .execute(blocker.conn())
        .await
        .unwrap();
    let (api, event, code) = (Api::clone(&app), event_id.clone(), codes[0].clone());
    let online = tokio::spawn(async move {
        scan(
            &api,
            &event,
            json!({"code": code, "gate": "Main", "nonce": "online-1"}),
        )
        .await
    });
    blocker.wait_for_waiters(1).await;
    let later = (time::OffsetDateTime::now_utc() + Duration::from_secs(600))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (api, event, code) = (Api::clone(&app), event_id.clone(), codes[0].clone());
    let upload = tokio::spawn(async move {
        batch(
            &api,
            &event,
            json!([offline(&code, "Side", &later, "offline-1")]),
        )
        .await
    });
    blocker.wait_for_waiters(2).await;
    blocker.release().await;

    let (status, body) = online.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = upload.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, listed) = admin_get(&app, &format!("/events/{event_id}/checkins/conflicts")).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let conflicts = listed["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{listed}");
    assert_eq!(conflicts[0]["admitted"]["gate"], "Main", "{listed}");
    assert_eq!(conflicts[0]["admitted"]["nonce"], "online-1", "{listed}");
    assert_eq!(
        conflicts[0]["conflicting"]["nonce"], "offline-1",
        "{listed}"
    );
}
