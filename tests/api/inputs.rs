//! Every accepted value round-trips through the database and back out as JSON; every
//! documented limit is accepted at its edge and refused one past it; names that look the
//! same are the same.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::{
    TestApp, assert_error, empty_database, id_of, new_fingerprint, spawn_app, spawn_app_on,
    spawn_app_with,
};

/// The accepted window, as Unix instants in nanoseconds (1970-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999999999Z; PostgreSQL keeps the microseconds).
const WINDOW_START_NANOS: i128 = 0;
const WINDOW_END_NANOS: i128 = 253_402_300_800 * 1_000_000_000 - 1;

async fn post_event(app: &TestApp, name: &str, date: &str) -> (StatusCode, Value) {
    app.post_json(
        "/events",
        json!({"name": name, "date": date, "totalTickets": 5}),
    )
    .await
}

/// Every event of the listing, page by page.
async fn list_all(app: &TestApp) -> Vec<Value> {
    let mut events = Vec::new();
    for page in 1.. {
        let (status, body) = app.get(&format!("/events?limit=100&page={page}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let data = body["data"].as_array().unwrap();
        if data.is_empty() {
            return events;
        }
        events.extend(data.iter().cloned());
    }
    unreachable!()
}

#[tokio::test]
async fn dates_that_cannot_be_stored_or_rendered_are_refused_and_the_listing_survives() {
    let app = spawn_app().await;
    app.create_event("Before", 5, None).await;
    // Year 10000 once in UTC (used to panic in the database layer and drop the connection),
    // and year 0 BC once in UTC (used to be stored, then break every listing).
    for date in ["9999-12-31T23:59:59-01:00", "0000-01-01T00:30:00+01:00"] {
        let (status, body) = post_event(&app, "Out of range", date).await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        assert_eq!(body["details"][0]["field"], "date", "{body}");
    }
    assert_eq!(app.row_count("events").await, 1);
    assert_eq!(list_all(&app).await.len(), 1);
}

/// A small deterministic generator (SplitMix64), so a failing case can be replayed.
struct Cases(u64);

impl Cases {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An RFC 3339 text near one of the window's edges: an instant within two days of the
    /// edge, written in an offset of up to ±23:59, with 0 to 9 fraction digits.
    fn date_near_an_edge(&mut self) -> String {
        let edge = if self.below(2) == 0 {
            WINDOW_START_NANOS
        } else {
            WINDOW_END_NANOS + 1
        };
        let spread = [1_i128, 1_000, 1_000_000, 1_000_000_000, 172_800_000_000_000];
        let scale = spread[self.below(spread.len() as u64) as usize];
        let delta = (self.below(2 * scale as u64 + 1) as i128) - scale;
        let instant = edge + delta;
        let offset_minutes = self.below(2 * 1439 + 1) as i64 - 1439;
        // The instant's wall-clock in that offset, written by hand: the year may be 0 or
        // 10000, which the time crate cannot hold, so compute the fields from days.
        let local = instant + i128::from(offset_minutes) * 60_000_000_000;
        let seconds = local.div_euclid(1_000_000_000) as i64;
        let nanos = local.rem_euclid(1_000_000_000) as u32;
        let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
        let second_of_day = seconds.rem_euclid(86_400);
        let digits = self.below(10) as usize;
        let fraction = if digits == 0 {
            String::new()
        } else {
            format!(".{}", &format!("{nanos:09}")[..digits])
        };
        let sign = if offset_minutes < 0 { '-' } else { '+' };
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}{sign}{:02}:{:02}",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60,
            offset_minutes.abs() / 60,
            offset_minutes.abs() % 60,
        )
    }
}

/// Howard Hinnant's days-to-civil: (year, month, day) of a day count from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The instant an RFC 3339 text names, in nanoseconds. The time crate holds years 1 to 9999
/// in the text's own offset; a text in year 10000 (the end edge in a positive offset) is
/// read as the same day of year 2000 (a leap year like 10000) and shifted by whole days.
fn instant_nanos(text: &str) -> i128 {
    if let Ok(date) = OffsetDateTime::parse(text, &Rfc3339) {
        return date.unix_timestamp_nanos();
    }
    let dash = text.find('-').unwrap();
    let (year, rest) = text.split_at(dash);
    let year: i64 = year.parse().unwrap();
    let shifted = OffsetDateTime::parse(&format!("2000{rest}"), &Rfc3339).unwrap();
    let days_between = days_from_civil(year, 1, 1) - days_from_civil(2000, 1, 1);
    shifted.unix_timestamp_nanos() + i128::from(days_between) * 86_400 * 1_000_000_000
}

/// Inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Property: a date at or beyond the window's edges, in any offset, is either refused with
/// 422 on `date` (exactly when its instant is outside the window) or stored and answered, by
/// `POST`, `GET /events/{id}` and the listing alike, as the same instant to the microsecond.
#[tokio::test]
async fn dates_near_the_window_edges_are_refused_or_round_trip() {
    let app = spawn_app().await;
    let mut cases = Cases(0x5EED_0009);
    let mut created = Vec::new();
    for case in 0..160 {
        let text = cases.date_near_an_edge();
        let instant = instant_nanos(&text);
        // RFC 3339 has four-digit years: "10000-01-01T20:56:59+20:57" names an instant
        // inside the window, but it is not RFC 3339, and it is refused like any other.
        let rfc3339 = text.as_bytes()[4] == b'-';
        let inside = rfc3339 && (WINDOW_START_NANOS..=WINDOW_END_NANOS).contains(&instant);
        let (status, body) = post_event(&app, &format!("Edge {case}"), &text).await;
        if !inside {
            assert_error(
                status,
                &body,
                StatusCode::UNPROCESSABLE_ENTITY,
                "VALIDATION_ERROR",
            );
            assert_eq!(body["details"][0]["field"], "date", "{text}: {body}");
            continue;
        }
        assert_eq!(status, StatusCode::CREATED, "{text}: {body}");
        let stored = OffsetDateTime::parse(body["date"].as_str().unwrap(), &Rfc3339)
            .unwrap()
            .unix_timestamp_nanos();
        // PostgreSQL keeps microseconds: the answer is the instant, truncated.
        assert_eq!(
            stored,
            instant - instant.rem_euclid(1_000),
            "{text}: {body}"
        );
        let read = app.event(&id_of(&body)).await;
        assert_eq!(read["date"], body["date"], "{text}");
        created.push(body);
    }
    assert!(
        created.len() > 20 && created.len() < 140,
        "the cases straddle the edges"
    );
    let listed = list_all(&app).await;
    assert_eq!(listed.len(), created.len());
    for event in &created {
        let found = listed.iter().find(|e| e["id"] == event["id"]).unwrap();
        assert_eq!(found["date"], event["date"]);
    }
}

#[tokio::test]
async fn the_window_edges_themselves() {
    let app = spawn_app().await;
    for (date, accepted) in [
        ("1970-01-01T00:00:00Z", true),
        ("1970-01-01T01:00:00+01:00", true),
        ("1969-12-31T23:59:59.999999Z", false),
        ("1970-01-01T00:59:59+01:00", false),
        ("9999-12-31T23:59:59.999999Z", true),
        ("9999-12-31T22:59:59.999999-01:00", true),
        ("9999-12-31T23:00:00-01:00", false),
        ("9999-12-31T23:59:59+23:59", true),
        ("0001-01-01T00:00:00Z", false),
    ] {
        let answer = post_event(&app, &format!("Edge {date}"), date).await;
        let body = assert_edge(date, accepted, answer, StatusCode::CREATED, INVALID);
        if accepted {
            let read = app.event(&id_of(&body)).await;
            assert_eq!(read["date"], body["date"]);
        }
    }
    let (status, body) = post_event(&app, "Last instant", "9999-12-31T23:59:59.9999999Z").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["date"], "9999-12-31T23:59:59.999999Z");
    list_all(&app).await;
}

/// Rows stored before the window was checked are moved into it by the migration, and the
/// schema refuses new ones.
#[tokio::test]
async fn the_migration_moves_stored_dates_into_the_window_and_normalizes_names() {
    let options = empty_database().await;
    let pool = sqlx::PgPool::connect_with(options.clone()).await.unwrap();
    boxoffice::db::MIGRATOR
        .run_to(20261124000002, &pool)
        .await
        .unwrap();
    for (name, date) in [
        ("Year zero", "0001-12-31 23:30:00+00 BC"),
        // An event inside the window already sits on the edge the next row moves to.
        ("Gala", "1970-01-01 00:00:00+00"),
        ("Gala", "0001-12-31 23:30:00+00 BC"),
        ("Year ten thousand", "10000-01-01 00:59:59+00"),
        ("Year ten thousand", "10000-01-02 00:00:00+00"),
        ("Cafe\u{301}", "2027-01-01 00:00:00+00"),
        ("Caf\u{e9}", "2027-01-01 00:00:00+00"),
    ] {
        sqlx::query(
            "INSERT INTO events (id, name, date, total_tickets, available_tickets) \
             VALUES (gen_random_uuid(), $1, $2::timestamptz, 1, 1)",
        )
        .bind(name)
        .bind(date)
        .execute(&pool)
        .await
        .unwrap();
    }
    boxoffice::db::migrate(&pool).await.unwrap();
    pool.close().await;

    let app = spawn_app_on(&options, &[]).await;
    let listed = list_all(&app).await;
    let mut seen: Vec<(String, String)> = listed
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["date"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(seen.len(), 7);
    assert_eq!(seen[0].0, "Caf\u{e9}", "the NFC row keeps its name");
    assert!(
        seen[1].0.starts_with("Caf\u{e9} ("),
        "the NFD twin is told apart: {seen:?}"
    );
    assert_eq!(seen[2], ("Gala".into(), "1970-01-01T00:00:00Z".into()));
    assert!(
        seen[3].0.starts_with("Gala (") && seen[3].1 == "1970-01-01T00:00:00Z",
        "the moved row is told apart from the one already on the edge: {seen:?}"
    );
    assert_eq!(
        seen[4],
        (
            "Year ten thousand".into(),
            "9999-12-31T23:59:59.999998Z".into()
        )
    );
    assert_eq!(
        seen[5],
        (
            "Year ten thousand".into(),
            "9999-12-31T23:59:59.999999Z".into()
        )
    );
    assert_eq!(seen[6], ("Year zero".into(), "1970-01-01T00:00:00Z".into()));

    for statement in [
        "UPDATE events SET date = '1969-12-31 23:59:59+00'",
        "UPDATE events SET date = '10000-01-01 00:00:00+00'",
        "UPDATE events SET name = 'Cafe\u{301}' WHERE name = 'Caf\u{e9}'",
    ] {
        let refused = sqlx::query(statement).execute(&app.pool).await.unwrap_err();
        assert!(
            refused
                .as_database_error()
                .and_then(|e| e.constraint())
                .is_some(),
            "{statement}: {refused}"
        );
    }
}

#[tokio::test]
async fn names_are_normalized_and_invisible_names_are_blank() {
    let app = spawn_app().await;
    let date = "2027-05-01T20:00:00Z";
    let (status, first) = post_event(&app, "Caf\u{e9}", date).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    // The same text with a combining accent is the same name.
    let (status, body) = post_event(&app, "Cafe\u{301}", date).await;
    assert_error(status, &body, StatusCode::CONFLICT, "EVENT_EXISTS");
    // Stored in NFC: an NFD name comes back composed.
    let (status, body) = post_event(&app, "Cre\u{300}me", date).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "Cr\u{e8}me");
    // Invisible characters around a name are dropped, so it is the same name too.
    let (status, body) = post_event(&app, "\u{200b}Caf\u{e9}\u{feff} ", date).await;
    assert_error(status, &body, StatusCode::CONFLICT, "EVENT_EXISTS");
    // Spacing variants and invisible characters that a reader cannot see are the same name.
    let (status, gala) = post_event(&app, "Gala Night", date).await;
    assert_eq!(status, StatusCode::CREATED, "{gala}");
    for twin in [
        "Gala  Night",
        "Gala\u{a0}Night",
        "Gala\tNight",
        "Gala \u{200b}Night",
        "Gala Ni\u{ad}ght",
        "Gala Night\u{3164}",
        "Gala Night\u{2800}",
        "Gala Night\u{34f}",
        "\u{2060}Gala Night\u{200e}",
    ] {
        let (status, body) = post_event(&app, twin, date).await;
        assert_error(status, &body, StatusCode::CONFLICT, "EVENT_EXISTS");
    }
    // Nothing visible is blank.
    for blank in [
        "\u{200b}\u{200b}\u{200b}",
        " \u{200d}\u{2060} ",
        "\u{feff}",
        "\u{3000}\u{200e}",
        "\u{3164}",
        "\u{115f}\u{1160}",
        "\u{ffa0}",
        "\u{2800}",
        "\u{fe0f}",
        "\u{34f}",
        "\u{17b4}",
        "\u{301}\u{301}",
    ] {
        let (status, body) = post_event(&app, blank, date).await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        assert_eq!(body["details"][0]["message"], "must not be blank");
    }
    // A joiner inside a name is kept (emoji sequences use it).
    let (status, body) = post_event(&app, "Family \u{1f468}\u{200d}\u{1f469}", date).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "Family \u{1f468}\u{200d}\u{1f469}");
    assert_eq!(app.row_count("events").await, 4);
}

/// One request at a limit's edge: `accepted` means the `ok` status, otherwise the refusal
/// `status_refused` with `code`. Returns the body.
fn assert_edge(
    what: &str,
    accepted: bool,
    (status, body): (StatusCode, Value),
    ok: StatusCode,
    (status_refused, code): (StatusCode, &str),
) -> Value {
    if accepted {
        assert_eq!(status, ok, "{what}: {body}");
    } else {
        assert_error(status, &body, status_refused, code);
    }
    body
}

const INVALID: (StatusCode, &str) = (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");
const BAD: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "BAD_REQUEST");

/// Each documented limit: the limit itself accepted, one past it refused with its code.
#[tokio::test]
async fn every_documented_limit_at_its_edge() {
    let app = spawn_app_with(&["--max-tickets-per-purchase", "10"]).await;

    // Name: 200 characters after NFC (here 400 code points before it).
    let (status, body) = post_event(&app, &"e\u{301}".repeat(200), "2027-01-01T00:00:00Z").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = post_event(&app, &"\u{e9}".repeat(201), "2027-01-01T00:00:00Z").await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );

    // Body: 16 KiB exactly is read (and judged on its content), one byte more is refused.
    let event =
        json!({"name": "Sized", "date": "2027-01-02T00:00:00Z", "totalTickets": 10}).to_string();
    for (size, expected) in [
        (16 * 1024, StatusCode::CREATED),
        (16 * 1024 + 1, StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let padded = format!("{event}{}", " ".repeat(size - event.len()));
        let (status, body) = app
            .send(
                app.request(Method::POST, "/events")
                    .header("content-type", "application/json")
                    .body(padded),
            )
            .await;
        assert_eq!(status, expected, "{size} bytes: {body}");
    }
    let (status, page) = app.get("/events?limit=100").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let sized = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "Sized");
    assert!(sized.is_some(), "the 16 KiB body made its event");

    let event_id = id_of(&app.create_event("Quantities", 100, None).await);

    // Quantity: 1 and the configured maximum accepted; 0 and one more refused.
    for (quantity, accepted) in [(1, true), (10, true), (0, false), (11, false)] {
        let answer = app.purchase(&event_id, quantity, &new_fingerprint()).await;
        let what = format!("quantity {quantity}");
        assert_edge(&what, accepted, answer, StatusCode::CREATED, INVALID);
    }

    // Fingerprint: 256 characters accepted, 257 refused, in the header and in the body alike
    // (characters, not bytes: 256 × "é" is 512 bytes).
    let fresh = app.create_event("Fingerprints", 100, None).await;
    let fresh_id = id_of(&fresh);
    for (fingerprint, accepted) in [
        ("f".repeat(256), true),
        ("f".repeat(257), false),
        ("\u{e9}".repeat(256), true),
        ("\u{e9}".repeat(257), false),
    ] {
        let value = reqwest::header::HeaderValue::from_bytes(fingerprint.as_bytes()).unwrap();
        let answer = app
            .send(
                app.request(Method::POST, &format!("/events/{fresh_id}/tickets"))
                    .header("X-Device-Fingerprint", value)
                    .json(&json!({"quantity": 1})),
            )
            .await;
        let body = assert_edge("header", accepted, answer, StatusCode::CREATED, BAD);
        if !accepted {
            assert_eq!(body["details"][0]["field"], "X-Device-Fingerprint");
        }
    }
    for (fingerprint, accepted) in [("\u{e9}".repeat(256), true), ("\u{e9}".repeat(257), false)] {
        let answer = app
            .post_json(
                &format!("/events/{fresh_id}/tickets"),
                json!({"quantity": 1, "userFingerprint": fingerprint}),
            )
            .await;
        let body = assert_edge("body", accepted, answer, StatusCode::CREATED, INVALID);
        if !accepted {
            assert_eq!(body["details"][0]["field"], "userFingerprint");
        }
    }

    // Page and limit.
    for (query, accepted) in [
        ("page=1", true),
        ("page=1000000000", true),
        ("page=0", false),
        ("page=1000000001", false),
        ("limit=1", true),
        ("limit=100", true),
        ("limit=0", false),
        ("limit=101", false),
    ] {
        let answer = app.get(&format!("/events?{query}")).await;
        assert_edge(query, accepted, answer, StatusCode::OK, BAD);
    }
}

/// A body that is an object but breaks a rule no field owns (a field given twice) is a 400
/// that says so.
#[tokio::test]
async fn a_field_given_twice_is_named() {
    let app = spawn_app().await;
    let (status, body) = app
        .send(
            app.request(Method::POST, "/events")
                .header("content-type", "application/json")
                .body(r#"{"name":"a","name":"b","date":"2027-01-01T00:00:00Z","totalTickets":1}"#),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("duplicate field `name`"),
        "{body}"
    );
    assert_eq!(app.row_count("events").await, 0);
}

/// A query parameter read as one value and given twice is a 400 naming it, whichever route
/// reads it (the listing's `page` and `limit`, the orders' `status`), as a repeated header is;
/// a parameter no route reads is ignored, repeated or not.
#[tokio::test]
async fn a_query_parameter_given_twice_is_named() {
    let token = "twice-organiser";
    let app = spawn_app_with(&["--admin-token", token]).await;
    let (status, event) = app
        .send(
            app.request(Method::POST, "/events")
                .bearer_auth(token)
                .json(
                    &json!({"name": "Twice", "date": "2027-06-01T19:00:00Z", "totalTickets": 10}),
                ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    let event_id = id_of(&event);
    for (path, field) in [
        ("/events?page=1&page=2".to_owned(), "page"),
        ("/events?limit=5&page=1&limit=5".to_owned(), "limit"),
        ("/events?page=1&pa%67e=1".to_owned(), "page"),
        (
            format!("/events/{event_id}/orders?status=purchased&status=refunded"),
            "status",
        ),
        (
            format!("/events/{event_id}/waiting-list?limit=1&limit=2"),
            "limit",
        ),
    ] {
        let (status, body) = app
            .send(app.request(Method::GET, &path).bearer_auth(token))
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "BAD_REQUEST");
        assert_eq!(
            body["details"],
            json!([{"field": field, "message": "must be given once, not repeated"}]),
            "{path}: {body}"
        );
        assert_eq!(
            body["error"],
            format!("invalid parameter `{field}`: must be given once, not repeated"),
            "{path}"
        );
    }
    let (status, body) = app.get("/events?utm=a&utm=b&page=1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A body that is not UTF-8 is malformed JSON (400), even where the bad byte sits in a field
/// the route ignores, which serde skips without reading: nothing is made.
#[tokio::test]
async fn a_body_that_is_not_utf8_is_malformed_even_in_an_ignored_field() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Bytes", 10, None).await);
    let mut body = br#"{"quantity":1,"note":""#.to_vec();
    body.push(0xFF);
    body.extend_from_slice(br#""}"#);
    let (status, answer) = app
        .send(
            app.request(Method::POST, &format!("/events/{event_id}/tickets"))
                .header("X-Device-Fingerprint", new_fingerprint())
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_eq!(app.row_count("ticket_allocations").await, 0);
}

#[tokio::test]
async fn json_errors_never_name_the_apps_rust_types() {
    let app = spawn_app().await;
    let (_, event) = post_event(&app, "Type names", "2030-01-01T20:00:00Z").await;
    let tickets = format!("/events/{}/tickets", id_of(&event));
    for body in [
        json!({"lines": [null]}),
        json!({"lines": [1, 2]}),
        json!({"quantity": "two"}),
        json!({"quantity": 1, "lines": "x"}),
        json!({"lines": {"a": 1}}),
    ] {
        let (status, answer) = app.post_json(&tickets, body.clone()).await;
        assert!(status.is_client_error(), "{body}: {status} {answer}");
        let text = answer.to_string();
        for leak in ["struct ", "enum ", "Request", "OffsetDateTime"] {
            assert!(!text.contains(leak), "{body} → {text}");
        }
    }
}

/// A request head of 64 KiB (request line and headers through the blank line, 65,536 bytes)
/// is served; one byte more of head is refused 431 by the HTTP server, before the
/// application sees it. The longer head is sent unfinished, so the server has read all of
/// it when it answers (an unread byte would turn its close into a reset).
#[tokio::test]
async fn a_request_head_of_64_kib_is_served_and_a_longer_one_is_431() {
    const LIMIT: usize = 64 * 1024;
    let app = spawn_app().await;
    let start = format!(
        "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nX-Padding: ",
        app.socket_address()
    );
    let end = "\r\n\r\n";

    let mut at_the_edge = start.clone().into_bytes();
    at_the_edge.resize(LIMIT - end.len(), b'a');
    at_the_edge.extend_from_slice(end.as_bytes());
    assert_eq!(at_the_edge.len(), LIMIT);
    let answer = app.raw_answer(&at_the_edge).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:.200}");

    // All 64 KiB sent and the head not finished: it is longer than the limit.
    let mut past_the_edge = start.into_bytes();
    past_the_edge.resize(LIMIT, b'a');
    let answer = app.raw_answer(&past_the_edge).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:.200}");
    app.stop().await;
}

/// U+0000 cannot be stored in PostgreSQL's text: a body holding it in any string, at any
/// depth, is refused 422 `VALIDATION_ERROR` naming the field, and nothing changes. Before,
/// a ticket type's description holding it was a 500, and a payment token holding it began
/// the payment (the provider's ledger refused the token) and left the hold `payment_pending`
/// for recovery, a minute without a way to pay. A backslash followed by `u0000` is text
/// like any other and round-trips. (Red without `http::extract`'s guard: 500, and 503 for
/// the payment.)
#[tokio::test]
async fn a_string_holding_u0000_is_refused_wherever_it_is_and_changes_nothing() {
    let app = spawn_app().await;
    let (event_id, hold, buyer) = app.event_with_hold("Nul bytes", 10, 1).await;
    let types = format!("/events/{event_id}/ticket-types");
    let refused = |body: &Value, field: &str| {
        assert_eq!(body["code"], "VALIDATION_ERROR", "{body}");
        assert_eq!(body["details"][0]["field"], field, "{body}");
    };

    let (status, body) = app
        .post_json(
            &types,
            json!({"name": "Balcony", "price": 100, "description": "a\u{0}b"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    refused(&body, "description");
    let (status, body) = app
        .post_json(
            &types,
            json!({"name": "Balcony", "price": 100, "description": "a\\u0000b"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["description"], "a\\u0000b", "{body}");
    let patch = format!("{types}/{}", id_of(&body));
    let (status, body) = app
        .send(
            app.request(Method::PATCH, &patch)
                .json(&json!({"description": "\u{0}"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    refused(&body, "description");
    let (_, listed) = app.get(&types).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");

    let (status, body) = app
        .send(
            app.pay_request(&hold, &buyer, None)
                .json(&json!({"paymentToken": "tok\u{0}visa"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    refused(&body, "paymentToken");
    assert_eq!(app.allocation_row(&hold).await.status, "reserved");
    let (status, body) = app.pay(&hold, &buyer, Some("tok_visa")).await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("purchased")),
        "{body}"
    );

    // At any depth, in an array, even in a field the route ignores.
    let holds = app.row_count("ticket_allocations").await;
    let (status, body) = app
        .send(
            app.request(Method::POST, &format!("/events/{event_id}/tickets"))
                .header("X-Device-Fingerprint", new_fingerprint())
                .json(&json!({"quantity": 1, "note": {"list": ["fine", "a\u{0}"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    refused(&body, "note.list[1]");
    assert_eq!(app.row_count("ticket_allocations").await, holds);
}
