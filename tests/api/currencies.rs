//! `GET /currencies`: the currencies events may be priced in, with the digits of each one's
//! minor unit, so that a client (the web page) formats and parses amounts as the server
//! counts them.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_error, spawn_app};

/// The table: sorted by code, one entry per code, each `{code, digits, name}`, with ISO 4217's
/// digits where the browser's CLDR data differs (HUF, IDR, IQD) and where it agrees (EUR,
/// JPY, KWD); codes that are not money in circulation are not listed.
#[tokio::test]
async fn currencies_lists_each_code_with_its_iso_4217_digits() {
    let app = spawn_app().await;
    let (status, body) = app.get("/currencies").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list = body
        .as_array()
        .unwrap_or_else(|| panic!("an array: {body}"));
    let codes: Vec<&str> = list
        .iter()
        .map(|entry| entry["code"].as_str().unwrap_or_else(|| panic!("{entry}")))
        .collect();
    assert!(
        codes.windows(2).all(|pair| pair[0] < pair[1]),
        "sorted by code, each once: {codes:?}"
    );
    for entry in list {
        let fields = entry.as_object().unwrap_or_else(|| panic!("{entry}"));
        let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["code", "digits", "name"], "{entry}");
        let code = entry["code"].as_str().unwrap();
        assert!(
            code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()),
            "{entry}"
        );
        assert!(entry["digits"].as_u64().is_some_and(|d| d <= 4), "{entry}");
        assert!(
            entry["name"].as_str().is_some_and(|n| !n.is_empty()),
            "{entry}"
        );
    }
    let entry = |code: &str| -> &Value {
        list.iter()
            .find(|entry| entry["code"] == code)
            .unwrap_or_else(|| panic!("{code} is listed"))
    };
    for (code, digits) in [
        ("EUR", 2),
        ("USD", 2),
        ("JPY", 0),
        ("KWD", 3),
        ("BHD", 3),
        ("HUF", 2),
        ("IDR", 2),
        ("COP", 2),
        ("IQD", 3),
    ] {
        assert_eq!(entry(code)["digits"], digits, "{}", entry(code));
    }
    // Only money people pay with: no "no currency", test code, metal, fund or superseded
    // code.
    for code in ["XXX", "XTS", "XAU", "XDR", "BOV", "HRK", "VES"] {
        assert!(!codes.contains(&code), "{code} is not for sale");
    }
    assert_eq!(entry("EUR")["name"], "Euro");
    assert_eq!(entry("HUF")["name"], "Hungarian forint");
}

/// The table is the server's own list: every code in it is accepted by `POST /events` (and
/// kept as given), and codes outside it are refused. The converse, that no code outside it is
/// accepted, is the domain's unit test over every three-letter code.
#[tokio::test]
async fn every_listed_currency_is_accepted_and_no_other() {
    let app = spawn_app().await;
    let (status, body) = app.get("/currencies").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let codes: Vec<String> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["code"].as_str().unwrap().to_owned())
        .collect();
    assert!(codes.len() > 150, "{} codes", codes.len());
    for code in &codes {
        let (status, event) = app
            .post_json(
                "/events",
                json!({
                    "name": format!("Priced in {code}"),
                    "date": "2027-06-01T19:00:00Z",
                    "totalTickets": 10,
                    "currency": code,
                    "price": 150_000,
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{code}: {event}");
        assert_eq!(event["currency"], code.as_str(), "{event}");
        assert_eq!(event["ticketTypes"][0]["price"], 150_000, "{event}");
    }
    for code in [
        "XYZ", "AAA", "eur", "EURO", "XXX", "XTS", "XAU", "HRK", "BOV",
    ] {
        assert!(!codes.iter().any(|listed| listed == code), "{code}");
        let (status, body) = app
            .post_json(
                "/events",
                json!({
                    "name": format!("Priced in {code}"),
                    "date": "2027-06-01T19:00:00Z",
                    "totalTickets": 10,
                    "currency": code,
                }),
            )
            .await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        assert_eq!(body["details"][0]["field"], "currency", "{body}");
    }
}
