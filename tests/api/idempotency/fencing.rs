//! A claim taken over as stale while its attempt still runs: the attempt it was taken from
//! can no longer record under the key, so the key never gets two effects (the claim's attempt
//! id is a fencing token), and in a batch only that attempt's request is left out.

use std::time::Duration;

use reqwest::StatusCode;

use super::keyed_purchase;
use crate::helpers::{Api, BATCHED, PER_REQUEST, assert_error, eventually, id_of, spawn_app_with};
use crate::timeouts::lock_event;

/// The reviewer's probe: a first attempt waits for a blocked event lock (the lock timeout is
/// far longer than the staleness age), its claim is aged past the stale age (35 s by default), and a retry takes it
/// over. Once the blocker lets go, only the retry's hold exists under the key; in the batched
/// mode the first attempt shares a batch with the retry and another buyer, who both get
/// their holds.
#[tokio::test]
async fn an_attempt_whose_claim_was_taken_over_makes_no_hold_and_only_it_fails() {
    for mode in [PER_REQUEST, BATCHED] {
        let mut flags = vec![
            "--request-timeout-ms",
            "1000",
            "--lock-timeout-ms",
            "600000",
            "--statement-timeout-ms",
            "600000",
        ];
        flags.extend_from_slice(mode);
        let app = spawn_app_with(&flags).await;
        let id = id_of(&app.create_event("Taken over", 10, None).await);
        let blocker = lock_event(&app.pool, &id).await;
        // Batched: this unkeyed buyer's batch waits for the lock, so the keyed requests
        // below queue together for the next batch.
        let ahead = {
            let api = Api::clone(&app);
            let id = id.clone();
            tokio::spawn(async move { api.purchase(&id, 1, "ahead").await })
        };
        let (status, body, _) = keyed_purchase(&app, &id, 2, "buyer", "order").await;
        assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
        );
        // The first attempt still waits for the lock, under its claim: age it past the stale age.
        sqlx::query(
            "UPDATE idempotency_keys SET claimed_at = claimed_at - interval '121 seconds' \
             WHERE key = 'order'",
        )
        .execute(&app.pool)
        .await
        .unwrap();
        let retry = {
            let app_api = Api::clone(&app);
            let id = id.clone();
            tokio::spawn(async move {
                let response = app_api
                    .purchase_request(&id, 2, "buyer")
                    .header("Idempotency-Key", "order")
                    .send()
                    .await
                    .unwrap();
                (response.status(), response.text().await.unwrap())
            })
        };
        let beside = {
            let api = Api::clone(&app);
            let id = id.clone();
            tokio::spawn(async move { api.purchase(&id, 1, "beside").await })
        };
        // The retry has taken the claim over once its attempt id is the row's.
        eventually(
            "the retry to take the claim over",
            Duration::from_secs(10),
            || async {
                let age: f64 = sqlx::query_scalar(
                    "SELECT extract(epoch FROM now() - claimed_at)::float8 \
                     FROM idempotency_keys WHERE key = 'order'",
                )
                .fetch_one(&app.pool)
                .await
                .unwrap();
                (age < 60.0).then_some(())
            },
        )
        .await;
        blocker.rollback().await.unwrap();

        let (status, hold) = retry.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{mode:?}: {hold}");
        let hold: serde_json::Value = serde_json::from_str(&hold).unwrap();
        // Cut off by the request timeout like the first attempt: its hold may or may not be
        // made, and the counts below do not depend on it.
        ahead.await.unwrap();
        assert_eq!(beside.await.unwrap().0, StatusCode::CREATED, "{mode:?}");
        // The first attempt got the lock too, found its claim gone and made nothing: one
        // hold for the key, and the key replays it.
        let buyer_holds: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ticket_allocations WHERE quantity = 2")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(buyer_holds, 1, "{mode:?}: two holds under one key");
        let (status, again, replayed) = keyed_purchase(&app, &id, 2, "buyer", "order").await;
        assert_eq!((status, replayed), (StatusCode::CREATED, true), "{again}");
        assert_eq!(again["id"], hold["id"], "{mode:?}");
        app.assert_balanced(&id).await;
        app.stop().await;
    }
}
