//! Coalesced check-ins: single scans of one event that arrive together on one instance share
//! one transaction (`--purchase-mode batched`), and each is answered exactly as if it had run
//! alone (`per-request`). Every test runs in both modes. "Plugs" make the batches certain: an
//! event's scans run in two lanes by admission (`admission::checkin::lane`), and in each lane
//! a scan whose admission the test's own transaction has locked holds the lane's batch open
//! while the scans under test queue behind it, so all of a lane's land in its next batch.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    Api, BATCHED, Blocker, PER_REQUEST, TestApp, assert_error, id_of, new_fingerprint,
    spawn_app_with,
};

const ADMIN: &str = "door-organiser";

async fn app(mode: &[&str]) -> TestApp {
    let mut flags = vec!["--admin-token", ADMIN];
    flags.extend_from_slice(mode);
    spawn_app_with(&flags).await
}

async fn admin_post(api: &Api, path: &str, body: Value) -> (StatusCode, Value) {
    api.send(
        api.request(reqwest::Method::POST, path)
            .header("Authorization", format!("Bearer {ADMIN}"))
            .json(&body),
    )
    .await
}

/// A new event of 100 tickets: its id.
async fn event(api: &Api) -> String {
    let (status, event) = admin_post(
        api,
        "/events",
        json!({"name": format!("Door {}", new_fingerprint()), "date": "2027-06-01T19:00:00Z",
               "totalTickets": 100, "price": 1000}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    id_of(&event)
}

/// Buys and pays `quantity` tickets: (allocation id, the codes of its admissions).
async fn bought(api: &Api, event_id: &str, quantity: i64) -> (String, Vec<String>) {
    let buyer = new_fingerprint();
    let (status, hold) = api.purchase(event_id, quantity, &buyer).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (status, paid) = api.pay(&id_of(&hold), &buyer, None).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let codes = paid["admissions"]
        .as_array()
        .unwrap_or_else(|| panic!("admissions in {paid}"))
        .iter()
        .map(|a| a["code"].as_str().unwrap().to_owned())
        .collect();
    (id_of(&hold), codes)
}

async fn scan(api: &Api, event_id: &str, body: Value) -> (StatusCode, Value) {
    admin_post(api, &format!("/events/{event_id}/checkins"), body).await
}

/// The admission id a code names (bytes 21..37).
fn admission_of(code: &str) -> Uuid {
    let bytes = URL_SAFE_NO_PAD.decode(code).unwrap();
    Uuid::from_slice(&bytes[21..37]).unwrap()
}

/// The lane a code's scans run in (`admission::checkin::lane`: the admission id modulo 2).
fn lane_of(code: &str) -> u128 {
    admission_of(code).as_u128() % 2
}

/// A plug for each lane: codes of tickets bought (and paid) on the event until one of each
/// lane is in hand.
async fn plugs(api: &Api, event_id: &str) -> [String; 2] {
    let mut found: [Option<String>; 2] = [None, None];
    while found.iter().any(Option::is_none) {
        for code in bought(api, event_id, 1).await.1 {
            let lane = lane_of(&code) as usize;
            found[lane].get_or_insert(code);
        }
    }
    found.map(|code| code.expect("a plug of each lane"))
}

/// Sends `scans` at once while a scan in each lane waits on the test's lock of its admission
/// (the plugs), then releases them: in batched mode every scan queues behind its lane's plug
/// and the scans of each lane run as its next batch. Their answers, in the order given.
async fn behind_plugs(
    app: &TestApp,
    event_id: &str,
    scans: Vec<Value>,
) -> Vec<(StatusCode, Value)> {
    let plugs = plugs(app, event_id).await;
    let mut blocker = Blocker::begin(&app.pool).await;
    for plug in &plugs {
        sqlx::query("SELECT 1 FROM admissions WHERE id = $1 FOR UPDATE")
            .bind(admission_of(plug))
            .fetch_one(blocker.conn())
            .await
            .unwrap();
    }
    let plugged: Vec<_> = plugs
        .iter()
        .map(|plug| {
            let (api, event_id, body) =
                (Api::clone(app), event_id.to_owned(), json!({"code": plug}));
            tokio::spawn(async move { scan(&api, &event_id, body).await })
        })
        .collect();
    blocker.wait_for_waiters(2).await;
    let sent: Vec<_> = scans
        .into_iter()
        .map(|body| {
            let (api, event_id) = (Api::clone(app), event_id.to_owned());
            tokio::spawn(async move { scan(&api, &event_id, body).await })
        })
        .collect();
    // Long enough for every scan to reach its lane's queue, well within the lock timeout.
    tokio::time::sleep(Duration::from_millis(800)).await;
    blocker.commit().await;
    for plug in plugged {
        let (status, body) = plug.await.unwrap();
        assert_eq!(status, StatusCode::OK, "a plug: {body}");
    }
    let mut answers = Vec::new();
    for scan in sent {
        answers.push(scan.await.unwrap());
    }
    answers
}

async fn many_codes_are_all_admitted_at_their_gates(mode: &[&str]) {
    let app = app(mode).await;
    let event_id = event(&app).await;
    let mut codes = Vec::new();
    while codes.len() < 40 {
        codes.extend(bought(&app, &event_id, 5).await.1);
    }
    let scans = codes
        .iter()
        .enumerate()
        .map(|(n, code)| json!({"code": code, "gate": format!("Gate {}", n % 4), "nonce": format!("d:{n}")}))
        .collect();
    let answers = behind_plugs(&app, &event_id, scans).await;
    for (n, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "scan {n}: {body}");
        assert_eq!(body["gate"], format!("Gate {}", n % 4));
        assert_eq!(body["admission"]["id"], admission_of(&codes[n]).to_string());
        assert_eq!(body["admission"]["status"], "checked_in");
        let gate: Option<String> = sqlx::query_scalar(
            "SELECT gate FROM admissions WHERE id = $1 AND status = 'checked_in'",
        )
        .bind(admission_of(&codes[n]))
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(gate, Some(format!("Gate {}", n % 4)));
    }
    assert_eq!(app.row_count("checkin_scans").await, 40);
    if mode == BATCHED {
        // One transaction per lane checked in all of that lane's scans: they share its time.
        for lane in 0..2 {
            let times: HashSet<&str> = answers
                .iter()
                .zip(&codes)
                .filter(|(_, code)| lane_of(code) == lane)
                .map(|((_, body), _)| body["checkedInAt"].as_str().unwrap())
                .collect();
            assert!(times.len() <= 1, "lane {lane}: {times:?}");
        }
    }
}

#[tokio::test]
async fn many_codes_scanned_together_are_all_admitted_at_their_gates_batched() {
    many_codes_are_all_admitted_at_their_gates(BATCHED).await;
}

#[tokio::test]
async fn many_codes_scanned_together_are_all_admitted_at_their_gates_per_request() {
    many_codes_are_all_admitted_at_their_gates(PER_REQUEST).await;
}

async fn one_code_many_times_admits_once(mode: &[&str]) {
    let app = app(mode).await;
    let event_id = event(&app).await;
    for round in 0..3 {
        let (_, codes) = bought(&app, &event_id, 2).await;
        // With and without nonces, over four gates.
        let scans = (0..20)
            .map(|n| match n % 2 {
                0 => json!({"code": codes[0], "gate": format!("Gate {}", n % 4)}),
                _ => json!({"code": codes[0], "gate": format!("Gate {}", n % 4),
                            "nonce": format!("r{round}:{n}")}),
            })
            .collect();
        let answers = behind_plugs(&app, &event_id, scans).await;
        let admitted: Vec<&Value> = answers
            .iter()
            .filter(|(status, _)| *status == StatusCode::OK)
            .map(|(_, body)| body)
            .collect();
        assert_eq!(admitted.len(), 1, "round {round}: {answers:?}");
        let winner = admitted[0];
        for (status, body) in &answers {
            if *status == StatusCode::OK {
                continue;
            }
            assert_error(*status, body, StatusCode::CONFLICT, "ALREADY_CHECKED_IN");
            assert_eq!(body["checkedInAt"], winner["checkedInAt"], "round {round}");
            assert_eq!(body["gate"], winner["gate"], "round {round}");
        }
        let gate: Option<String> = sqlx::query_scalar("SELECT gate FROM admissions WHERE id = $1")
            .bind(admission_of(&codes[0]))
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(gate.as_deref(), winner["gate"].as_str());
    }
}

#[tokio::test]
async fn one_code_scanned_many_times_together_admits_once_batched() {
    one_code_many_times_admits_once(BATCHED).await;
}

#[tokio::test]
async fn one_code_scanned_many_times_together_admits_once_per_request() {
    one_code_many_times_admits_once(PER_REQUEST).await;
}

async fn one_nonce_sent_together_gets_one_answer(mode: &[&str]) {
    let app = app(mode).await;
    let event_id = event(&app).await;
    let (_, codes) = bought(&app, &event_id, 4).await;
    // A retried scan, six times at once; and one nonce used at once for two tickets.
    let mut scans: Vec<Value> = (0..6)
        .map(|_| json!({"code": codes[0], "gate": "North", "nonce": "dev:1"}))
        .collect();
    for n in 0..6 {
        scans.push(json!({"code": codes[1 + n % 2], "gate": "South", "nonce": "dev:2"}));
    }
    let answers = behind_plugs(&app, &event_id, scans).await;
    for (status, body) in &answers[..6] {
        assert_eq!(*status, StatusCode::OK, "{answers:?}");
        assert_eq!(body, &answers[0].1);
    }
    assert_eq!(answers[0].1["gate"], "North");
    // Whichever ticket claimed the nonce is admitted (every scan of it the same answer);
    // the other ticket's scans are told the nonce is another ticket's.
    let shared = &answers[6..];
    let winners: HashSet<String> = shared
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .map(|(_, body)| body["admission"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(winners.len(), 1, "{shared:?}");
    for (status, body) in shared {
        if *status == StatusCode::OK {
            assert_eq!(
                body["checkedInAt"],
                shared.iter().find(|(s, _)| *s == StatusCode::OK).unwrap().1["checkedInAt"]
            );
        } else {
            assert_error(
                *status,
                body,
                StatusCode::UNPROCESSABLE_ENTITY,
                "NONCE_REUSED",
            );
        }
    }
    // One recorded scan per nonce, and the other ticket is still valid.
    assert_eq!(app.row_count("checkin_scans").await, 2);
    let valid: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM admissions WHERE id = ANY($1) AND status = 'valid'",
    )
    .bind(vec![admission_of(&codes[1]), admission_of(&codes[2])])
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(valid, 1);
}

#[tokio::test]
async fn one_nonce_sent_many_times_together_gets_one_answer_batched() {
    one_nonce_sent_together_gets_one_answer(BATCHED).await;
}

#[tokio::test]
async fn one_nonce_sent_many_times_together_gets_one_answer_per_request() {
    one_nonce_sent_together_gets_one_answer(PER_REQUEST).await;
}

async fn revoked_checked_in_and_valid_scanned_together(mode: &[&str]) {
    let app = app(mode).await;
    let event_id = event(&app).await;
    let other_event = event(&app).await;
    let (refunded, revoked) = bought(&app, &event_id, 1).await;
    let (status, body) = admin_post(&app, &format!("/tickets/{refunded}/refund"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, codes) = bought(&app, &event_id, 3).await;
    let (_, elsewhere) = bought(&app, &other_event, 1).await;
    let (status, early) = scan(&app, &event_id, json!({"code": codes[0], "gate": "Early"})).await;
    assert_eq!(status, StatusCode::OK, "{early}");

    let scans = vec![
        json!({"code": revoked[0], "gate": "B", "nonce": "m:1"}),
        json!({"code": codes[0], "gate": "B", "nonce": "m:2"}),
        json!({"code": codes[1], "gate": "B", "nonce": "m:3"}),
        json!({"code": codes[1], "gate": "C", "nonce": "m:4"}),
        json!({"code": codes[1], "gate": "D"}),
        json!({"code": codes[0], "gate": "C"}),
        json!({"code": revoked[0], "gate": "C"}),
        json!({"code": "not a code", "gate": "B", "nonce": "m:5"}),
        json!({"code": elsewhere[0], "gate": "B", "nonce": "m:6"}),
    ];
    let answers = behind_plugs(&app, &event_id, scans.clone()).await;
    for i in [0, 6] {
        let (status, body) = &answers[i];
        assert_error(*status, body, StatusCode::CONFLICT, "TICKET_REVOKED");
    }
    for i in [1, 5] {
        let (status, body) = &answers[i];
        assert_error(*status, body, StatusCode::CONFLICT, "ALREADY_CHECKED_IN");
        assert_eq!(body["checkedInAt"], early["checkedInAt"]);
        assert_eq!(body["gate"], "Early");
    }
    let valid = &answers[2..5];
    let winner = &valid
        .iter()
        .find(|(status, _)| *status == StatusCode::OK)
        .unwrap_or_else(|| panic!("one scan of the valid ticket admits: {valid:?}"))
        .1;
    assert_eq!(
        valid.iter().filter(|(s, _)| *s == StatusCode::OK).count(),
        1,
        "{valid:?}"
    );
    for (status, body) in valid.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_error(*status, body, StatusCode::CONFLICT, "ALREADY_CHECKED_IN");
        assert_eq!(body["checkedInAt"], winner["checkedInAt"]);
        assert_eq!(body["gate"], winner["gate"]);
    }
    let (status, body) = &answers[7];
    assert_error(
        *status,
        body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_TICKET_CODE",
    );
    let (status, body) = &answers[8];
    assert_error(*status, body, StatusCode::CONFLICT, "WRONG_EVENT");

    // Every scan with a nonce, retried one by one, gets its first answer again.
    for (i, body) in scans.iter().enumerate() {
        if body.get("nonce").is_none() {
            continue;
        }
        let again = scan(&app, &event_id, body.clone()).await;
        assert_eq!(again, answers[i], "scan {i} retried");
    }
    // The invalid code and the other event's recorded nothing.
    assert_eq!(app.row_count("checkin_scans").await, 4);
}

#[tokio::test]
async fn revoked_checked_in_and_valid_tickets_scanned_together_batched() {
    revoked_checked_in_and_valid_scanned_together(BATCHED).await;
}

#[tokio::test]
async fn revoked_checked_in_and_valid_tickets_scanned_together_per_request() {
    revoked_checked_in_and_valid_scanned_together(PER_REQUEST).await;
}

/// A scan that admits keeps the answer its nonce's claim was written with (`admitted`, the
/// transaction's time, its own gate; `db::checkins::claim`), and a duplicate's row is
/// rewritten: a retry of either, sent after the first committed, reads back exactly what was
/// first answered, and the stored rows agree with the admission.
async fn retries_read_back_the_recorded_answers(mode: &[&str]) {
    let app = app(mode).await;
    let event_id = event(&app).await;
    let (_, codes) = bought(&app, &event_id, 1).await;
    let admit = json!({"code": codes[0], "gate": "East", "nonce": "door-7:1"});
    let duplicate = json!({"code": codes[0], "gate": "West", "nonce": "door-8:1"});
    let (status, first) = scan(&app, &event_id, admit.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, refused) = scan(&app, &event_id, duplicate.clone()).await;
    assert_error(status, &refused, StatusCode::CONFLICT, "ALREADY_CHECKED_IN");
    for _ in 0..2 {
        assert_eq!(
            scan(&app, &event_id, admit.clone()).await,
            (StatusCode::OK, first.clone())
        );
        assert_eq!(
            scan(&app, &event_id, duplicate.clone()).await,
            (StatusCode::CONFLICT, refused.clone())
        );
    }
    type Row = (String, String, bool, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT s.nonce, s.result, s.first_checked_in_at = d.checked_in_at, s.first_gate \
         FROM checkin_scans s JOIN admissions d ON d.id = s.admission_id \
         WHERE d.id = $1 ORDER BY s.nonce",
    )
    .bind(admission_of(&codes[0]))
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let east = Some("East".to_owned());
    assert_eq!(
        rows,
        vec![
            ("door-7:1".into(), "admitted".into(), true, east.clone()),
            ("door-8:1".into(), "duplicate".into(), true, east),
        ]
    );
}

#[tokio::test]
async fn retries_read_back_the_recorded_answers_batched() {
    retries_read_back_the_recorded_answers(BATCHED).await;
}

#[tokio::test]
async fn retries_read_back_the_recorded_answers_per_request() {
    retries_read_back_the_recorded_answers(PER_REQUEST).await;
}
