//! What an operator meets at start: the smallest pool, refused settings (blank secrets, a
//! request timeout out of range, an invalid `RUST_LOG`) and the log's form on a pipe.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{id_of, new_fingerprint, spawn_app_with};

/// The smallest pool the flag accepts still serves: the change listener's connection is
/// not one of the requests' (it held the only one, and every request waited for it: 503).
#[tokio::test]
async fn a_pool_of_one_connection_serves_ready_and_a_hold() {
    let app = spawn_app_with(&["--db-max-connections", "1"]).await;
    // The change listener connects once the server runs: let it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let event = app.create_event("Small pool", 10, None).await;
    let (status, body) = app.purchase(&id_of(&event), 2, &new_fingerprint()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.stop().await;
}
