//! The LISTEN loop: one connection per instance hears every count change, with reconnects
//! and a refresh of the watched events after each (re)connect.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::{CHECK_IN_POLL, LiveStats};
use crate::db::events::CHANGES_CHANNEL;
use crate::domain::stats::CountsChanged;

impl LiveStats {
    /// Listens for changes and counts the watched events' check-ins until shutdown.
    pub async fn listen(self, pool: PgPool, shutdown: watch::Receiver<bool>) {
        tokio::join!(
            self.clone()
                .listen_for_changes(pool.clone(), shutdown.clone()),
            self.count_check_ins(pool, shutdown),
        );
    }

    /// Counts the check-ins of every watched event every [`CHECK_IN_POLL`], in one statement,
    /// and hands each count to its subscribers. A failed count is skipped: the next one
    /// catches up, as counts only grow.
    async fn count_check_ins(self, pool: PgPool, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CHECK_IN_POLL) => {}
                _ = shutdown.changed() => return,
            }
            let events = self.watched();
            if events.is_empty() {
                continue;
            }
            match crate::db::checkins::checked_in_counts(&pool, &events).await {
                Ok(counts) => {
                    for (event_id, count) in counts {
                        self.record_checked_in(event_id, u64::try_from(count).unwrap_or(0));
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot count check-ins; retrying"),
            }
        }
    }

    /// Listens for changes until shutdown on a connection of its own, outside `pool`: the
    /// `LISTEN` connection is held for as long as the instance runs, and taken from the
    /// requests' pool it left a pool of one (`--db-max-connections 1`) none for requests.
    async fn listen_for_changes(self, pool: PgPool, shutdown: watch::Receiver<bool>) {
        let own = crate::db::lazy_twin(&pool, 1);
        self.listen_on(&own, pool, shutdown).await;
        own.close().await;
    }

    /// Listens for changes on `own` until shutdown, reconnecting after a lost connection.
    /// After a (re)connect, watched events are refreshed from `pool`, since changes made
    /// while disconnected were not heard.
    async fn listen_on(&self, own: &PgPool, pool: PgPool, mut shutdown: watch::Receiver<bool>) {
        loop {
            let listener = async {
                let mut listener = PgListener::connect_with(own).await?;
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
                        // The connection dropped (sqlx's way of saying so): reconnect and
                        // refresh, and say so, as for an error.
                        Ok(None) => {
                            tracing::warn!("lost the change listener; reconnecting");
                            break true;
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "lost the change listener; reconnecting");
                            break true;
                        }
                    },
                    _ = shutdown.changed() => break false,
                }
            };
            // Changes made while disconnected go unheard: forget what was known.
            self.inner.availability.forget_all();
            if !reconnect {
                return;
            }
        }
    }

    async fn refresh_watched(&self, pool: &PgPool) {
        for event_id in self.watched() {
            if let Ok(Some(read)) = crate::db::events::find_with_change_seq(pool, event_id).await {
                // The listener is already connected, so a notification newer than this read
                // may have been published meanwhile: the merge keeps the newer one.
                self.offer_snapshot(&read);
            }
        }
    }
}
