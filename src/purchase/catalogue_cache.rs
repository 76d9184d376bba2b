//! The ticket types the purchase transaction read last, per event, so that a hot event's
//! transactions need not read them again under its lock.
//!
//! Not a cache that can lag a commit: an entry is used only when the event's
//! `catalogue_version`, read in the same transaction under the event row lock, is the one
//! it was read at. Every change to an event's types or set of quotas bumps that version in
//! the changing transaction (triggers, see the `catalogue_version` migration), and those
//! writers hold the event lock, so a matching version means the types are what a read under
//! this lock would return. Quota counts change with every hold and are never kept here: an
//! event with quotas has them locked and read in every transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::events::SaleLock;
use crate::db::{quotas, sale};
use crate::domain::catalogue::{Quota, TicketType};

/// Most events kept; past it the map starts over (a miss costs one read under the lock).
const MAX_EVENTS: usize = 4096;

/// An event's types as read at one catalogue version.
struct Entry {
    version: i64,
    types: Arc<[TicketType]>,
}

/// The per-instance store of ticket types, shared by every purchase transaction.
#[derive(Clone, Default)]
pub struct CatalogueCache {
    entries: Arc<Mutex<HashMap<Uuid, Entry>>>,
}

impl CatalogueCache {
    /// The event's ticket types (creation order) and its quotas (id order, locked until the
    /// transaction ends). Call right after `events::lock_for_sale`, with what it returned:
    /// the quota locks follow the event lock, as the lock order requires. Round trips: none
    /// for an event without quotas whose types were read at this version, one otherwise.
    pub async fn under_lock(
        &self,
        conn: &mut PgConnection,
        lock: &SaleLock,
    ) -> Result<(Arc<[TicketType]>, Vec<Quota>), sqlx::Error> {
        let event_id = lock.event.id;
        if let Some(types) = self.current(event_id, lock.catalogue_version) {
            let quotas = match lock.quota_count {
                0 => Vec::new(),
                _ => quotas::lock_for_event(conn, event_id).await?,
            };
            return Ok((types, quotas));
        }
        let (types, quotas) = sale::lock_catalogue(conn, event_id).await?;
        let types: Arc<[TicketType]> = types.into();
        self.keep(event_id, lock.catalogue_version, types.clone());
        Ok((types, quotas))
    }

    fn current(&self, event_id: Uuid, version: i64) -> Option<Arc<[TicketType]>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(&event_id)?;
        (entry.version == version).then(|| entry.types.clone())
    }

    fn keep(&self, event_id: Uuid, version: i64, types: Arc<[TicketType]>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_EVENTS && !entries.contains_key(&event_id) {
            entries.clear();
        }
        // Versions only grow: never replace a newer entry another transaction kept meanwhile.
        if entries
            .get(&event_id)
            .is_none_or(|held| held.version < version)
        {
            entries.insert(event_id, Entry { version, types });
        }
    }
}
