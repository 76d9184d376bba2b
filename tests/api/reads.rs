//! `GET /events/{id}` is coalesced (`reads::EventReads`), yet every read reflects the changes
//! committed before it was sent: many readers race many buyers, and no read may show fewer
//! holds than had been acknowledged when it was sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{PER_REQUEST, id_of, new_fingerprint, spawn_app_with};

/// Concurrent buyers, each holding one ticket at a time, one after another.
const BUYERS: usize = 16;
/// Concurrent readers, each reading the event again after a short pause, so a read is
/// nearly always in flight when another is sent.
const READERS: usize = 48;
/// How long the race runs.
const RACE: Duration = Duration::from_secs(4);

#[tokio::test]
async fn a_coalesced_read_shows_every_hold_acknowledged_before_it_was_sent() {
    // Per-request holds commit one by one, spread over time rather than in batches.
    let app = Arc::new(spawn_app_with(PER_REQUEST).await);
    let event_id = id_of(&app.create_event("Refreshed", 1_000_000, None).await);
    // Holds acknowledged (201 received) so far: a read sent after loading it must show them.
    let acknowledged = Arc::new(AtomicI64::new(0));
    let until = Instant::now() + RACE;

    let mut buyers = Vec::new();
    for _ in 0..BUYERS {
        let (app, event_id, acknowledged) = (app.clone(), event_id.clone(), acknowledged.clone());
        buyers.push(tokio::spawn(async move {
            while Instant::now() < until {
                let (status, body) = app.purchase(&event_id, 1, &new_fingerprint()).await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let mut readers = Vec::new();
    for reader in 0..READERS {
        let (app, event_id, acknowledged) = (app.clone(), event_id.clone(), acknowledged.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0_u64;
            while Instant::now() < until {
                // A pause of 0 to 20 ms (longer than a read), varied per reader and read, so
                // readers arrive at every moment of a read in flight, not in waves that all
                // join one read before its snapshot is taken.
                let jitter = (reads * 7919 + reader as u64 * 104_729) % 20_000;
                tokio::time::sleep(Duration::from_micros(jitter)).await;
                let floor = acknowledged.load(Ordering::SeqCst);
                let event = app.event(&event_id).await;
                let reserved = event["reservedTickets"].as_i64().expect("reservedTickets");
                assert!(
                    reserved >= floor,
                    "a read sent after {floor} holds were acknowledged shows {reserved}"
                );
                reads += 1;
            }
            reads
        }));
    }
    for buyer in buyers {
        buyer.await.expect("a buyer panicked");
    }
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.expect("a reader saw a stale read");
    }
    assert!(reads > 0, "no read finished");
    let event = app.assert_balanced(&event_id).await;
    assert_eq!(
        event["reservedTickets"].as_i64(),
        Some(acknowledged.load(Ordering::SeqCst))
    );
}
