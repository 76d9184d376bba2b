//! Live statistics: count changes reach every instance through PostgreSQL `LISTEN/NOTIFY`
//! (one listening connection per instance, `listener.rs`) and are fanned out in process to the
//! subscribers of each event (this file). The last availability heard is kept apart, as the
//! hint the purchase path reads (`availability.rs`).
//!
//! Each event has one `watch` channel holding its latest state, so a burst of changes costs
//! a subscriber nothing until it reads, and it always reads the newest. A subscriber's
//! stream sends at most one message per [`MIN_INTERVAL`] (longer with thousands of
//! subscribers, up to [`MAX_INTERVAL`]: [`LiveStats::interval`]), and always ends on the
//! latest state.
//!
//! Message ids are the event's change sequence from the database (`events.change_seq`) plus
//! its admissions ever checked in (`checkedIn`), so they grow across restarts and are the same
//! on every instance for the same state. Both parts only grow, and the hub keeps the newest of
//! each (sale counts from notifications and snapshots, check-ins from a count polled every
//! [`CHECK_IN_POLL`] while the event is watched: a check-in takes no event lock and sends no
//! notification), so a channel only ever moves to a newer state, and a subscription never
//! yields an id it has already passed: ids never go down within a stream.

mod availability;
mod listener;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::watch;
use uuid::Uuid;

pub use availability::AvailabilityHint;

use crate::db::events::EventSnapshot;
use crate::domain::stats::{CountsChanged, StatsMessage};
use crate::metrics;

/// Shortest gap between two messages to one subscriber.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// How often the watched events' check-ins are counted. A check-in sends no notification: a
/// `NOTIFY` serializes every notifying commit of the database, and the door must not queue
/// behind it. One statement counts every watched event's check-ins.
pub const CHECK_IN_POLL: Duration = Duration::from_millis(250);

/// Most stream messages per second an instance aims to send over all its subscribers. Each
/// message to each subscriber is a write of its own; with 10,000 watchers at one message per
/// [`MIN_INTERVAL`] the writes alone took most of a 2-core machine from the sales they
/// watch. Past `MESSAGE_BUDGET × MIN_INTERVAL` subscribers, the gap grows with their number
/// (see [`LiveStats::interval`]), up to [`MAX_INTERVAL`].
pub const MESSAGE_BUDGET: u32 = 20_000;

/// Longest gap between two messages to one subscriber, however many there are. A change
/// reaches a subscriber within one gap and the write's own delay: past this gap, a change
/// would reach some watchers more than a second after its commit. Past
/// `MESSAGE_BUDGET × MAX_INTERVAL` subscribers (15,000) the instance sends more than
/// [`MESSAGE_BUDGET`] messages a second rather than let its streams fall behind.
pub const MAX_INTERVAL: Duration = Duration::from_millis(750);

/// A message with its stream id: the event's change sequence as of the state it shows. Its
/// Server-Sent Events frame is written once, when the state is published, and shared by
/// every subscriber: with thousands watching one event, writing it per subscriber cost more
/// than the change itself.
#[derive(Debug, Clone)]
pub struct Published {
    pub id: u64,
    /// The whole `stats` event as sent: `event: stats`, `id: {id}`, and one `data:` line
    /// holding the [`StatsMessage`] as compact JSON (which has no line break: JSON escapes
    /// them inside strings), then the blank line that ends an event.
    pub frame: Bytes,
}

impl Published {
    /// The state numbered `id`, its message written as an SSE frame.
    pub fn new(id: u64, message: &StatsMessage) -> Result<Self, serde_json::Error> {
        let data = serde_json::to_string(message)?;
        Ok(Self {
            id,
            frame: Bytes::from(format!("event: stats\nid: {id}\ndata: {data}\n\n")),
        })
    }

    /// A snapshot message of an event as read from the database, numbered with the change
    /// sequence and the check-ins read by the same statement.
    pub fn snapshot(read: EventSnapshot) -> Result<Self, serde_json::Error> {
        Self::new(
            read.change_seq + read.checked_in,
            &StatsMessage::snapshot(
                &read.event,
                read.ticket_types,
                read.checked_in,
                OffsetDateTime::now_utc(),
            ),
        )
    }
}

/// An event's channel and the newest state heard of each of its two parts.
struct Channel {
    sender: watch::Sender<Option<Published>>,
    /// The newest sale state: its change sequence and its message (whose `checkedIn` is
    /// replaced by [`Channel::checked_in`] when published). None until one is heard or read.
    sale: Option<(u64, StatsMessage)>,
    /// The most check-ins counted.
    checked_in: u64,
}

impl Channel {
    fn new() -> Self {
        Self {
            sender: watch::channel(None).0,
            sale: None,
            checked_in: 0,
        }
    }

    /// Publishes the newest of both parts, numbered by their sum (see [`offer`]).
    fn publish(&self) {
        let Some((seq, message)) = &self.sale else {
            return;
        };
        // Built now: a message published for a check-in alone must not carry the time the
        // sale part was built, which may be long before (and before the previous message).
        let message = message.with_checked_in(self.checked_in, OffsetDateTime::now_utc());
        let id = seq + self.checked_in;
        match Published::new(id, &message) {
            Ok(published) => offer(&self.sender, published),
            // A client must never receive a message it cannot parse: skip it; the next
            // change is sent as usual.
            Err(err) => {
                tracing::error!(id, error = %err, "stats message not serializable; skipped");
            }
        }
    }
}

/// Makes `published` the event's latest state unless the channel already holds that change
/// or a newer one. Notifications arrive in commit order, but a snapshot read after a listener
/// reconnect can race with them: keeping the highest sequence means the channel never goes
/// back to an older state.
pub(crate) fn offer(sender: &watch::Sender<Option<Published>>, published: Published) {
    sender.send_if_modified(|latest| {
        if latest.as_ref().is_some_and(|held| held.id >= published.id) {
            return false;
        }
        *latest = Some(published);
        true
    });
}

struct Inner {
    channels: Mutex<HashMap<Uuid, Channel>>,
    /// Open subscriptions over all events, for [`LiveStats::interval`].
    subscribers: AtomicUsize,
    /// Each changed event's available tickets as of the last notification heard.
    availability: AvailabilityHint,
    closed: watch::Sender<bool>,
}

/// The per-instance hub between the listener and the subscribers.
#[derive(Clone)]
pub struct LiveStats {
    inner: Arc<Inner>,
}

impl LiveStats {
    /// A hub with no subscribers and nothing heard yet; [`LiveStats::listen`] feeds it.
    #[expect(
        clippy::new_without_default,
        reason = "one hub per instance, built on purpose"
    )]
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                channels: Mutex::new(HashMap::new()),
                subscribers: AtomicUsize::new(0),
                availability: AvailabilityHint::default(),
                closed: watch::channel(false).0,
            }),
        }
    }

    /// Starts watching an event. The snapshot is built by the caller from a read made after
    /// this call, so no change can fall between the snapshot and the first update; the caller
    /// then passes the snapshot's id to [`Subscription::resume_after`].
    pub fn subscribe(&self, event_id: Uuid) -> Subscription {
        let updates = {
            let mut channels = self.inner.channels.lock().expect("channel map poisoned");
            channels
                .entry(event_id)
                .or_insert_with(Channel::new)
                .sender
                .subscribe()
        };
        self.inner.subscribers.fetch_add(1, Ordering::Relaxed);
        metrics::sse_subscribers(1.0);
        Subscription {
            hub: self.clone(),
            event_id,
            updates: Some(updates),
            closed: self.inner.closed.subscribe(),
            last_id: 0,
        }
    }

    /// Hands a change to the event's subscribers, if it has any.
    pub fn publish(&self, change: &CountsChanged) {
        self.inner
            .availability
            .record(change.event_id, change.available);
        let mut channels = self.inner.channels.lock().expect("channel map poisoned");
        if let Some(channel) = channels.get_mut(&change.event_id) {
            if channel
                .sale
                .as_ref()
                .is_some_and(|(seq, _)| *seq >= change.seq)
            {
                return;
            }
            let message =
                StatsMessage::from_change(change, channel.checked_in, OffsetDateTime::now_utc());
            channel.sale = Some((change.seq, message));
            channel.publish();
        }
    }

    /// Hands an event's check-ins as counted to its subscribers, if it has any and the count
    /// is higher than any before.
    pub fn record_checked_in(&self, event_id: Uuid, checked_in: u64) {
        let mut channels = self.inner.channels.lock().expect("channel map poisoned");
        if let Some(channel) = channels.get_mut(&event_id)
            && checked_in > channel.checked_in
        {
            channel.checked_in = checked_in;
            channel.publish();
        }
    }

    /// Merges a snapshot read from the database into the event's channel, if it still has
    /// subscribers: each part is kept if newer than the one held (a snapshot can race with
    /// notifications and counts), and the result published if it is a newer state. A stream
    /// offers its own snapshot, so check-ins are published before any sale change is heard.
    pub fn offer_snapshot(&self, read: &EventSnapshot) {
        let mut channels = self.inner.channels.lock().expect("channel map poisoned");
        if let Some(channel) = channels.get_mut(&read.event.id) {
            if channel
                .sale
                .as_ref()
                .is_none_or(|(seq, _)| *seq < read.change_seq)
            {
                let message = StatsMessage::snapshot(
                    &read.event,
                    read.ticket_types.clone(),
                    read.checked_in,
                    OffsetDateTime::now_utc(),
                );
                channel.sale = Some((read.change_seq, message));
            }
            channel.checked_in = channel.checked_in.max(read.checked_in);
            channel.publish();
        }
    }

    /// The gap a subscriber leaves between two messages now: [`MIN_INTERVAL`], or longer
    /// when there are more than `MESSAGE_BUDGET × MIN_INTERVAL` subscribers (2,000), so the
    /// instance sends about [`MESSAGE_BUDGET`] messages a second at most (10,000 subscribers:
    /// 500 ms), but never longer than [`MAX_INTERVAL`] (from 15,000 subscribers on). Every
    /// stream still ends on the latest state.
    pub fn interval(&self) -> Duration {
        let subscribers = self.inner.subscribers.load(Ordering::Relaxed) as u32;
        (Duration::from_secs(1) * subscribers / MESSAGE_BUDGET).clamp(MIN_INTERVAL, MAX_INTERVAL)
    }

    /// The handle the purchase path reads the last heard availability through.
    pub fn availability(&self) -> AvailabilityHint {
        self.inner.availability.clone()
    }

    /// Ends every stream (on shutdown), so graceful shutdown is not held up by them.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// The events that have subscribers now.
    fn watched(&self) -> Vec<Uuid> {
        let channels = self.inner.channels.lock().expect("channel map poisoned");
        channels.keys().copied().collect()
    }

    /// Drops an event's channel once its last subscriber has gone.
    fn forget_if_unwatched(&self, event_id: Uuid) {
        let mut channels = self.inner.channels.lock().expect("channel map poisoned");
        if channels
            .get(&event_id)
            .is_some_and(|channel| channel.sender.receiver_count() == 0)
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
    /// The highest id this subscriber has been given (its snapshot's, then each update's).
    last_id: u64,
}

impl Subscription {
    /// Waits for the next state with a higher id than any given so far; `None` when the hub
    /// closes.
    pub async fn next(&mut self) -> Option<Published> {
        let updates = self.updates.as_mut()?;
        loop {
            if *self.closed.borrow() {
                return None;
            }
            tokio::select! {
                changed = updates.changed() => {
                    changed.ok()?;
                    let latest = updates.borrow_and_update().clone();
                    if let Some(published) = latest.filter(|p| p.id > self.last_id) {
                        self.last_id = published.id;
                        return Some(published);
                    }
                }
                _ = self.closed.changed() => return None,
            }
        }
    }

    /// Skips every state up to `id`, the snapshot's: the notification of a change that the
    /// snapshot read already included may still arrive after it, and must not take the
    /// stream's id back.
    pub fn resume_after(&mut self, id: u64) {
        self.last_id = self.last_id.max(id);
    }

    /// Waits out the hub's current [`LiveStats::interval`] unless the hub closes first;
    /// returns false if it closed.
    pub async fn pause(&mut self) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(self.hub.interval()) => !*self.closed.borrow(),
            _ = self.closed.changed() => false,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Drop the receiver first so the count below no longer includes it.
        self.updates.take();
        self.hub.forget_if_unwatched(self.event_id);
        self.hub.inner.subscribers.fetch_sub(1, Ordering::Relaxed);
        metrics::sse_subscribers(-1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stats::ChangeKind;

    /// The `data` of a published frame, as JSON.
    fn data(published: &Published) -> serde_json::Value {
        let frame = std::str::from_utf8(&published.frame).unwrap();
        let line = frame
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap();
        serde_json::from_str(line).unwrap()
    }

    #[tokio::test]
    async fn a_message_for_a_check_in_is_built_when_it_is_published() {
        let hub = LiveStats::new();
        let event_id = Uuid::nil();
        let mut subscription = hub.subscribe(event_id);
        let changed_at = OffsetDateTime::now_utc() - Duration::from_secs(60);
        hub.publish(&CountsChanged {
            event_id,
            total: 10,
            available: 9,
            reserved: 0,
            purchased: 1,
            waiting_list_length: 0,
            set_aside: 0,
            seq: 3,
            organiser_change_seq: 0,
            kind: ChangeKind::TicketPurchased,
            actor: "3fa85f64".into(),
            ticket_types: Vec::new(),
            changed_at: Some(changed_at),
        });
        let sale = data(&subscription.next().await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
        hub.record_checked_in(event_id, 1);
        let check_in = data(&subscription.next().await.unwrap());

        assert_eq!(check_in["statistics"]["checkedIn"], 1);
        let at = |message: &serde_json::Value| {
            let text = message["timestamp"].as_str().unwrap();
            OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
        };
        assert!(
            at(&check_in) >= at(&sale) + Duration::from_millis(20),
            "{sale} then {check_in}"
        );
        // The sale part is the last one heard, its change included.
        assert_eq!(check_in["lastEvent"], sale["lastEvent"]);
        assert_eq!(check_in["changedAt"], sale["changedAt"]);
    }

    #[test]
    fn the_gap_grows_past_the_message_budget_up_to_its_bound_and_shrinks_back() {
        let hub = LiveStats::new();
        let event = Uuid::nil();
        let mut subscriptions: Vec<_> = (0..2_000).map(|_| hub.subscribe(event)).collect();
        assert_eq!(hub.interval(), MIN_INTERVAL);
        subscriptions.extend((0..1_000).map(|_| hub.subscribe(event)));
        assert_eq!(hub.interval(), Duration::from_millis(150));
        subscriptions.extend((0..27_000).map(|_| hub.subscribe(event)));
        assert_eq!(hub.interval(), MAX_INTERVAL, "30,000 would be 1.5 s");
        subscriptions.truncate(1_000);
        assert_eq!(hub.interval(), MIN_INTERVAL);
    }
}
