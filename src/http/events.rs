//! `/events`: create, list and read events.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, IdPath, Organiser};
use super::response::json;
use super::wire::{CreateEventRequest, PageQuery};
use crate::catalogue;
use crate::db;
use crate::domain::catalogue::EventDetails;
use crate::domain::event::{Event, NewEvent};
use crate::domain::page::{Page, PageRequest};
use crate::error::Error;
use crate::http::state::AppState;

/// Create an event with all its tickets available and its default ticket type; answered as
/// `GET /events/{id}` answers it.
#[utoipa::path(
    post, path = "/events", tag = "events",
    security((), ("bearer" = [])),
    request_body = CreateEventRequest,
    responses(
        (status = 201, description = "Created; `Location` names the new event", body = EventDetails,
         headers(("Location" = String, description = "/events/{id}"))),
        (status = 400, description = "BAD_REQUEST: malformed JSON or wrong content type", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: the server runs with --admin-token and no token was sent", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: the token is neither the admin token nor a live organiser token (a door token, say)", body = ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT: the body stopped arriving within the request timeout; the connection is closed", body = ErrorBody),
        (status = 409, description = "EVENT_EXISTS: same name and date", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR, with details per field", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn create_event(
    State(state): State<AppState>,
    _organiser: Organiser,
    ApiJson(request): ApiJson<CreateEventRequest>,
) -> ApiResult<Response> {
    let new_event =
        NewEvent::parse(request.into(), state.rules.default_currency).map_err(Error::Validation)?;
    let event = catalogue::create_event(&state.pool, &new_event).await?;
    let location = format!("/events/{}", event.event.id);
    Ok((
        [(header::LOCATION, location)],
        json(StatusCode::CREATED, &event)?,
    )
        .into_response())
}

/// List events by date, a page at a time.
#[utoipa::path(
    get, path = "/events", tag = "events",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of events", body = Page<Event>),
        (status = 400, description = "BAD_REQUEST: page or limit out of range", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn list_events(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let page = PageRequest::parse(query.page.as_deref(), query.limit.as_deref())
        .map_err(|(field, message)| ApiError::bad_parameter(field, message))?;
    let (events, total) = db::events::list(&state.pool, page).await?;
    json(StatusCode::OK, &Page::new(events, total, page))
}

/// Read one event with its live counts and its ticket types (each with what is available of
/// it), all from one snapshot.
#[utoipa::path(
    get, path = "/events/{id}", tag = "events",
    params(("id" = uuid::Uuid, Path, description = "Event id")),
    responses(
        (status = 200, description = "The event", body = EventDetails),
        (status = 400, description = "BAD_REQUEST: id is not a UUID", body = ErrorBody),
        (status = 404, description = "NOT_FOUND", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn get_event(State(state): State<AppState>, IdPath(id): IdPath) -> ApiResult<Response> {
    // Concurrent reads of one event share one read made after they all arrived, and its JSON.
    let read = state.reads.event(id).await?;
    let body = read
        .json()
        .map_err(|err| ApiError::internal(format!("serializing the response body: {err}")))?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}
