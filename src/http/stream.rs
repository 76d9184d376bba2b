//! `GET /events/{id}/stream`: live statistics over Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;
use futures_util::stream;

use super::error::{ApiResult, ErrorBody};
use super::extract::IdPath;
use super::peer::{PeerEvent, PeerWatch};
use crate::db;
use crate::domain::stats::StatsMessage;
use crate::error::Error;
use crate::http::state::AppState;
use crate::live::{Published, Subscription};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};

/// Idle connections get a comment line after this long without a message, so proxies keep
/// them open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The keep-alive: an empty SSE comment, which clients ignore.
const KEEP_ALIVE_FRAME: &[u8] = b":\n\n";

/// Stream an event's ticket statistics: a snapshot on connect, then a message after every
/// change (at most one per 100 ms, always ending on the latest state). Each message's `id`
/// is the event's change sequence as of the state it shows, the same on every instance and
/// across restarts. A reconnecting client's `Last-Event-ID` is not needed: it gets the
/// current snapshot first, whose id is at least any id it saw before.
#[utoipa::path(
    get, path = "/events/{id}/stream", tag = "events",
    params(("id" = uuid::Uuid, Path, description = "Event id")),
    responses(
        (status = 200, description = "`text/event-stream` of `stats` messages (`event: stats`; `id:` is the event's change sequence, increasing within a stream and the same on every instance and across restarts; `Last-Event-ID` is ignored: a stream always starts with the current snapshot)",
         content_type = "text/event-stream", body = StatsEvent),
        (status = 400, description = "BAD_REQUEST: id is not a UUID", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event (before any stream starts)", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn event_stream(
    State(state): State<AppState>,
    IdPath(event_id): IdPath,
    peer: Option<Extension<PeerWatch>>,
) -> ApiResult<Response> {
    // Subscribe before reading the snapshot, so no change can slip between the two.
    let mut subscription = state.live.subscribe(event_id);
    let read = db::events::find_with_change_seq(&state.pool, event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    // The hub learns the state too, so check-ins counted later have a sale state to go with.
    state.live.offer_snapshot(&read);
    let snapshot = Published::snapshot(read)
        .map_err(|err| Error::internal(format!("serializing the snapshot: {err}")))?;
    // Changes the snapshot includes may still be announced after it: only newer ones follow.
    subscription.resume_after(snapshot.id);
    // The stream ends as soon as its client leaves (see `http::peer`); without a watch (a
    // router served some other way), as before, at the first write that fails.
    let peer = peer.map(|Extension(peer)| peer);
    // The frames are written once per state and shared (see [`Published`]), so the body is
    // their stream as is; the headers are those of any SSE response.
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(messages(snapshot, subscription, peer)),
    )
        .into_response())
}

/// The snapshot, then each newer state, no two closer than [`crate::live::MIN_INTERVAL`] (or the longer
/// gap of [`crate::live::LiveStats::interval`] with thousands of subscribers), each as the
/// frame written once when its state was published (see [`Published`]); a keep-alive
/// comment after [`KEEP_ALIVE`] without one. With `peer`, a keep-alive comment also as soon
/// as the client sends its FIN (a client that closed its socket answers it with a reset),
/// and the end of the stream once the connection is reset.
fn messages(
    snapshot: Published,
    subscription: Subscription,
    peer: Option<PeerWatch>,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    stream::unfold(
        (Some(snapshot), subscription, false, peer),
        |(pending, mut subscription, sent_one, mut peer)| async move {
            let next = match pending {
                Some(first) => first.frame,
                None => {
                    let waited = async {
                        if sent_one && !subscription.pause().await {
                            return None;
                        }
                        // Nothing new within the keep-alive time: a comment.
                        Some(tokio::time::timeout(KEEP_ALIVE, subscription.next()).await)
                    };
                    let left = async {
                        match peer.as_mut() {
                            Some(peer) => peer.next().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        waited = waited => match waited? {
                            Ok(next) => next?.frame,
                            // No pause before the next message after a comment.
                            Err(_) => {
                                let comment = Bytes::from_static(KEEP_ALIVE_FRAME);
                                return Some((Ok(comment), (None, subscription, false, peer)));
                            }
                        },
                        event = left => match event {
                            // The write tells a closed socket (it answers with a reset, which
                            // the watch sees next) from a half-closed one, which still reads
                            // and is served; the pause before the next message starts again.
                            PeerEvent::Closed => {
                                let comment = Bytes::from_static(KEEP_ALIVE_FRAME);
                                return Some((Ok(comment), (None, subscription, sent_one, peer)));
                            }
                            PeerEvent::Gone => return None,
                        },
                    }
                }
            };
            Some((Ok(next), (None, subscription, true, peer)))
        },
    )
}

/// One event of the stream, as the OpenAPI document describes it: `event: stats`, an `id`,
/// and `data` carrying a [`StatsMessage`] as JSON text.
pub struct StatsEvent;

impl utoipa::PartialSchema for StatsEvent {
    fn schema() -> RefOr<Schema> {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        ObjectBuilder::new()
            .property("event", text().enum_values(Some(["stats"])))
            .property(
                "id",
                text().description(Some(
                    "The event's change sequence as of this message: increases within a \
                     stream, the same on every instance and across restarts",
                )),
            )
            .property(
                "data",
                text()
                    .content_media_type("application/json")
                    .content_schema(Some(Ref::from_schema_name("StatsMessage"))),
            )
            .required("event")
            .required("id")
            .required("data")
            .into()
    }
}

impl utoipa::ToSchema for StatsEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((
            StatsMessage::name().into_owned(),
            <StatsMessage as utoipa::PartialSchema>::schema(),
        ));
        <StatsMessage as utoipa::ToSchema>::schemas(schemas);
    }
}
