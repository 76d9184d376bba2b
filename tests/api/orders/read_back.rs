//! An order's 201 is the allocation as it reads back: `GET /tickets/{id}` gives the same
//! lines, in the same order (the event's type order, whatever order they were asked in), the
//! same total and money fields.

use reqwest::StatusCode;
use serde_json::json;

use super::{create_type, lines_body, order};
use crate::helpers::{id_of, new_fingerprint, spawn_app};

#[tokio::test]
async fn an_order_answers_as_it_reads_back_whatever_the_order_of_its_lines() {
    let app = spawn_app().await;
    let event_id = id_of(&app.create_event("Read back", 100, None).await);
    let a = id_of(&create_type(&app, &event_id, json!({ "name": "A", "price": 300 })).await);
    let b = id_of(&create_type(&app, &event_id, json!({ "name": "B", "price": 200 })).await);
    let c = id_of(&create_type(&app, &event_id, json!({ "name": "C", "price": 100 })).await);
    for asked in [
        [(c.as_str(), 1), (a.as_str(), 2), (b.as_str(), 3)],
        [(a.as_str(), 1), (b.as_str(), 1), (c.as_str(), 1)],
    ] {
        let buyer = new_fingerprint();
        let (status, created) = order(&app, &event_id, &buyer, lines_body(&asked)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let (status, read) = app.ticket(&id_of(&created), &buyer).await;
        assert_eq!(status, StatusCode::OK, "{read}");
        assert_eq!(created, read, "the 201 is the allocation read back");
        let types: Vec<&str> = read["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .map(|line| line["ticketTypeId"].as_str().expect("ticketTypeId"))
            .collect();
        assert_eq!(types, [a.as_str(), b.as_str(), c.as_str()], "{read}");
    }
}
