//! The availability hint: each event's available tickets as last heard from the change
//! listener. The purchase path reads it to skip a database read for events that surely have
//! tickets; it never refuses on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

/// Each changed event's available tickets as of the last notification heard: always a
/// committed value, updated in commit order. Emptied whenever the listener is not connected,
/// since changes may then go unheard. Cheap to clone; clones share one map.
#[derive(Clone, Default)]
pub struct AvailabilityHint {
    known: Arc<Mutex<HashMap<Uuid, i32>>>,
}

impl AvailabilityHint {
    /// The event's available tickets as of the last change heard, if one has been heard since
    /// the listener (re)connected. A hint only: it arrives after its commit was acknowledged,
    /// so it may be older than what a client has already seen, and must never be the ground
    /// for a refusal (see `purchase::Purchaser::reserve`).
    pub fn known_available(&self, event_id: Uuid) -> Option<i32> {
        // Held only for a map read or write, never across an await.
        let known = self.known.lock().expect("availability map poisoned");
        known.get(&event_id).copied()
    }

    /// Records the availability a change notification carried.
    pub(super) fn record(&self, event_id: Uuid, available: i32) {
        self.known
            .lock()
            .expect("availability map poisoned")
            .insert(event_id, available);
    }

    /// Forgets everything heard: called when the listener disconnects.
    pub(super) fn forget_all(&self) {
        self.known
            .lock()
            .expect("availability map poisoned")
            .clear();
    }
}
