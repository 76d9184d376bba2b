//! Live statistics: count changes reach every instance through PostgreSQL `LISTEN/NOTIFY`
//! (one listening connection per instance) and are fanned out in process to the
//! subscribers of each event.
//!
//! Each event has one `watch` channel holding its latest state, so a burst of changes costs
//! a subscriber nothing until it reads, and it always reads the newest. A subscriber's
//! stream sends at most one message per [`MIN_INTERVAL`], and always ends on the latest state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use time::OffsetDateTime;
use tokio::sync::watch;
use uuid::Uuid;

use crate::db::events::CHANGES_CHANNEL;
use crate::domain::event::Event;
use crate::domain::stats::{CountsChanged, Statistics, StatsMessage};
use crate::metrics;

/// Shortest gap between two messages to one subscriber.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// A message with its stream id (ids increase within an instance).
#[derive(Debug, Clone)]
pub struct Published {
    pub id: u64,
    pub message: Arc<StatsMessage>,
}

struct Inner {
    channels: Mutex<HashMap<Uuid, watch::Sender<Option<Published>>>>,
    /// Each changed event's available tickets as of the last notification heard: always a
    /// committed value, updated in commit order. Emptied whenever the listener is not
    /// connected, since changes may then go unheard.
    known_available: Mutex<HashMap<Uuid, i32>>,
    next_id: AtomicU64,
    closed: watch::Sender<bool>,
}

/// The per-instance hub between the listener and the subscribers.
#[derive(Clone)]
pub struct LiveStats {
    inner: Arc<Inner>,
}

impl Default for LiveStats {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveStats {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                channels: Mutex::new(HashMap::new()),
                known_available: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                closed: watch::channel(false).0,
            }),
        }
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts watching an event. The snapshot is built by the caller from a read made after
    /// this call, so no change can fall between the snapshot and the first update.
    pub fn subscribe(&self, event_id: Uuid) -> Subscription {
        let updates = {
            let mut channels = self.inner.channels.lock().expect("channel map poisoned");
            channels
                .entry(event_id)
                .or_insert_with(|| watch::channel(None).0)
                .subscribe()
        };
        metrics::sse_subscribers(1.0);
        Subscription {
            hub: self.clone(),
            event_id,
            updates: Some(updates),
            closed: self.inner.closed.subscribe(),
        }
    }

    /// A snapshot message for an event as read from the database.
    pub fn snapshot(&self, event: &Event) -> Published {
        Published {
            id: self.next_id(),
            message: Arc::new(StatsMessage {
                event_id: event.id,
                timestamp: OffsetDateTime::now_utc(),
                statistics: Statistics {
                    total_tickets: event.total_tickets,
                    remaining_tickets: event.available_tickets,
                    allocated_tickets: event.reserved_tickets,
                    confirmed_tickets: event.purchased_tickets,
                },
                last_event: None,
            }),
        }
    }

    /// Hands a change to the event's subscribers, if it has any.
    pub fn publish(&self, change: &CountsChanged) {
        self.inner
            .known_available
            .lock()
            .expect("availability map poisoned")
            .insert(change.event_id, change.available);
        let channels = self.inner.channels.lock().expect("channel map poisoned");
        if let Some(sender) = channels.get(&change.event_id) {
            let published = Published {
                id: self.next_id(),
                message: Arc::new(StatsMessage::from_change(change, OffsetDateTime::now_utc())),
            };
            sender.send_replace(Some(published));
        }
    }

    /// The event's available tickets as last committed, if a change to it has been heard
    /// since the listener (re)connected.
    pub fn known_available(&self, event_id: Uuid) -> Option<i32> {
        let known = self
            .inner
            .known_available
            .lock()
            .expect("availability map poisoned");
        known.get(&event_id).copied()
    }

    fn forget_known_available(&self) {
        self.inner
            .known_available
            .lock()
            .expect("availability map poisoned")
            .clear();
    }

    /// Ends every stream (on shutdown), so graceful shutdown is not held up by them.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// Listens for changes until shutdown, reconnecting after a lost connection. After a
    /// (re)connect, watched events are refreshed from the database, since changes made while
    /// disconnected were not heard.
    pub async fn listen(self, pool: PgPool, mut shutdown: watch::Receiver<bool>) {
        loop {
            let listener = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen(CHANGES_CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = tokio::select! {
                connected = listener => match connected {
                    Ok(listener) => listener,
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot listen for count changes; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = shutdown.changed() => return,
                        }
                    }
                },
                _ = shutdown.changed() => return,
            };
            self.refresh_watched(&pool).await;
            let reconnect = loop {
                tokio::select! {
                    notification = listener.try_recv() => match notification {
                        Ok(Some(notification)) => match serde_json::from_str::<CountsChanged>(notification.payload()) {
                            Ok(change) => self.publish(&change),
                            Err(err) => tracing::warn!(error = %err, "unreadable change notification"),
                        },
                        // The connection dropped: reconnect and refresh.
                        Ok(None) => break true,
                        Err(err) => {
                            tracing::warn!(error = %err, "lost the change listener; reconnecting");
                            break true;
                        }
                    },
                    _ = shutdown.changed() => break false,
                }
            };
            // Changes made while disconnected go unheard: forget what was known.
            self.forget_known_available();
            if !reconnect {
                return;
            }
        }
    }

    async fn refresh_watched(&self, pool: &PgPool) {
        let watched: Vec<Uuid> = {
            let channels = self.inner.channels.lock().expect("channel map poisoned");
            channels.keys().copied().collect()
        };
        for event_id in watched {
            if let Ok(Some(event)) = crate::db::events::find(pool, event_id).await {
                let snapshot = self.snapshot(&event);
                let channels = self.inner.channels.lock().expect("channel map poisoned");
                if let Some(sender) = channels.get(&event_id) {
                    sender.send_replace(Some(snapshot));
                }
            }
        }
    }

    /// Drops an event's channel once its last subscriber has gone.
    fn forget_if_unwatched(&self, event_id: Uuid) {
        let mut channels = self.inner.channels.lock().expect("channel map poisoned");
        if channels
            .get(&event_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            channels.remove(&event_id);
        }
    }
}

/// One subscriber's view of an event.
pub struct Subscription {
    hub: LiveStats,
    event_id: Uuid,
    updates: Option<watch::Receiver<Option<Published>>>,
    closed: watch::Receiver<bool>,
}

impl Subscription {
    /// Waits for the next state newer than the last one read; `None` when the hub closes.
    pub async fn next(&mut self) -> Option<Published> {
        let updates = self.updates.as_mut()?;
        loop {
            if *self.closed.borrow() {
                return None;
            }
            tokio::select! {
                changed = updates.changed() => {
                    changed.ok()?;
                    if let Some(published) = updates.borrow_and_update().clone() {
                        return Some(published);
                    }
                }
                _ = self.closed.changed() => return None,
            }
        }
    }

    /// Marks everything published so far as seen (the snapshot covers it).
    pub fn mark_seen(&mut self) {
        if let Some(updates) = self.updates.as_mut() {
            updates.borrow_and_update();
        }
    }

    /// Waits out `duration` unless the hub closes first; returns false if it closed.
    pub async fn pause(&mut self, duration: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(duration) => !*self.closed.borrow(),
            _ = self.closed.changed() => false,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Drop the receiver first so the count below no longer includes it.
        self.updates.take();
        self.hub.forget_if_unwatched(self.event_id);
        metrics::sse_subscribers(-1.0);
    }
}
