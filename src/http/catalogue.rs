//! The catalogue's organiser routes: `PATCH /events/{id}`, `/events/{id}/ticket-types…` and
//! `/events/{id}/quotas…`. Thin: parse, call `crate::catalogue`, answer. Every write, and
//! every quota route (reads included), needs the organiser token when one is configured;
//! the ticket-type reads are public.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, EventItemPath, IdPath, Organiser};
use super::response::json;
use super::wire::{
    CreateQuotaRequest, CreateTicketTypeRequest, UpdateEventRequest, UpdateQuotaRequest,
    UpdateTicketTypeRequest,
};
use crate::catalogue;
use crate::domain::catalogue::{QuotaSettings, QuotaView, TicketTypeSettings, TicketTypeView};
use crate::domain::event::Event;
use crate::error::Error;
use crate::http::state::AppState;

/// A 201 with `Location: location` and `body`.
fn created(location: String, body: &impl serde::Serialize) -> ApiResult<Response> {
    Ok((
        [(header::LOCATION, location)],
        json(StatusCode::CREATED, body)?,
    )
        .into_response())
}

/// Change an event: name, date, capacity, per-buyer cap, sales window.
#[utoipa::path(
    patch, path = "/events/{id}", tag = "events",
    security((), ("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Event id")),
    request_body(content = Option<UpdateEventRequest>, description = "Optional: a field left out is unchanged, so no body changes nothing and answers the event as it is"),
    responses(
        (status = 200, description = "The event as changed", body = Event),
        (status = 400, description = "BAD_REQUEST: malformed JSON, wrong content type or id", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: the server runs with --admin-token and no token was sent", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: the token is neither the admin token nor a live organiser token (a door token, say)", body = ErrorBody),
        (status = 404, description = "NOT_FOUND", body = ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT: the body stopped arriving within the request timeout; the connection is closed", body = ErrorBody),
        (status = 409, description = "EVENT_EXISTS: same name and date as another event; CAPACITY_BELOW_SOLD: totalTickets below the tickets reserved and purchased (carries reservedTickets and purchasedTickets), or maxTicketsPerFingerprint below what one buyer holds (carries held)", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR, with details per field", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn update_event(
    State(state): State<AppState>,
    _organiser: Organiser,
    IdPath(id): IdPath,
    ApiJson(request): ApiJson<UpdateEventRequest>,
) -> ApiResult<Response> {
    let event = catalogue::update_event(&state.pool, id, request.into()).await?;
    json(StatusCode::OK, &event)
}

/// List an event's ticket types in creation order, with what is available of each.
#[utoipa::path(
    get, path = "/events/{id}/ticket-types", tag = "catalogue",
    params(("id" = uuid::Uuid, Path, description = "Event id")),
    responses(
        (status = 200, description = "The event's types", body = Vec<TicketTypeView>),
        (status = 400, description = "BAD_REQUEST: id is not a UUID", body = ErrorBody),
        (status = 404, description = "NOT_FOUND", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn list_ticket_types(
    State(state): State<AppState>,
    IdPath(event_id): IdPath,
) -> ApiResult<Response> {
    let types = catalogue::ticket_types(&state.pool, event_id).await?;
    json(StatusCode::OK, &types)
}

/// Add a ticket type to an event.
#[utoipa::path(
    post, path = "/events/{id}/ticket-types", tag = "catalogue",
    security((), ("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Event id")),
    request_body = CreateTicketTypeRequest,
    responses(
        (status = 201, description = "Created; `Location` names the new type", body = TicketTypeView,
         headers(("Location" = String, description = "/events/{id}/ticket-types/{typeId}"))),
        (status = 400, description = "BAD_REQUEST: malformed JSON, wrong content type or id", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: the server runs with --admin-token and no token was sent", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: the token is neither the admin token nor a live organiser token (a door token, say)", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event", body = ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT: the body stopped arriving within the request timeout; the connection is closed", body = ErrorBody),
        (status = 409, description = "TICKET_TYPE_EXISTS: the event has a type of this name", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR, with details per field", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn create_ticket_type(
    State(state): State<AppState>,
    _organiser: Organiser,
    IdPath(event_id): IdPath,
    ApiJson(mut request): ApiJson<CreateTicketTypeRequest>,
) -> ApiResult<Response> {
    let currency = request.currency.take();
    let settings = TicketTypeSettings::create(request.into()).map_err(Error::Validation)?;
    let view = catalogue::create_ticket_type(&state.pool, event_id, settings, currency).await?;
    created(
        format!("/events/{event_id}/ticket-types/{}", view.id),
        &view,
    )
}

/// Read one of an event's ticket types, as the list shows it. `Location` of its creation.
#[utoipa::path(
    get, path = "/events/{id}/ticket-types/{typeId}", tag = "catalogue",
    params(
        ("id" = uuid::Uuid, Path, description = "Event id"),
        ("typeId" = uuid::Uuid, Path, description = "Ticket type id"),
    ),
    responses(
        (status = 200, description = "The type, as `GET /events/{id}/ticket-types` lists it", body = TicketTypeView),
        (status = 400, description = "BAD_REQUEST: an id is not a UUID", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event, or no such type in it", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn get_ticket_type(
    State(state): State<AppState>,
    path: EventItemPath,
) -> ApiResult<Response> {
    let view = catalogue::ticket_type(&state.pool, path.event_id, path.item_id).await?;
    json(StatusCode::OK, &view)
}

/// Change a ticket type: absent fields stay, null clears the nullable ones. A new price
/// applies to new orders only.
#[utoipa::path(
    patch, path = "/events/{id}/ticket-types/{typeId}", tag = "catalogue",
    security((), ("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "Event id"),
        ("typeId" = uuid::Uuid, Path, description = "Ticket type id"),
    ),
    request_body(content = Option<UpdateTicketTypeRequest>, description = "Optional: a field left out is unchanged, so no body changes nothing and answers the type as it is"),
    responses(
        (status = 200, description = "The type as changed", body = TicketTypeView),
        (status = 400, description = "BAD_REQUEST: malformed JSON, wrong content type or id", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: the server runs with --admin-token and no token was sent", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: the token is neither the admin token nor a live organiser token (a door token, say)", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event, or no such type in it", body = ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT: the body stopped arriving within the request timeout; the connection is closed", body = ErrorBody),
        (status = 409, description = "TICKET_TYPE_EXISTS: the event has another type of this name", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR, with details per field", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn update_ticket_type(
    State(state): State<AppState>,
    _organiser: Organiser,
    path: EventItemPath,
    ApiJson(mut request): ApiJson<UpdateTicketTypeRequest>,
) -> ApiResult<Response> {
    let currency = request.currency.take();
    let view = catalogue::update_ticket_type(
        &state.pool,
        path.event_id,
        path.item_id,
        request.into(),
        currency,
    )
    .await?;
    json(StatusCode::OK, &view)
}

/// List an event's quotas in id order, with their counts.
#[utoipa::path(
    get, path = "/events/{id}/quotas", tag = "catalogue",
    security((), ("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Event id")),
    responses(
        (status = 200, description = "The event's quotas", body = Vec<QuotaView>),
        (status = 400, description = "BAD_REQUEST: id is not a UUID", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: the server runs with --admin-token and no token was sent", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: the token is neither the admin token nor a live organiser token (a door token, say)", body = ErrorBody),
        (status = 404, description = "NOT_FOUND", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn list_quotas(
    State(state): State<AppState>,
    _organiser: Organiser,
    IdPath(event_id): IdPath,
) -> ApiResult<Response> {
    let quotas = catalogue::quotas(&state.pool, event_id).await?;
    json(StatusCode::OK, &quotas)
}

/// Add a quota: a pool of tickets shared by some of the event's types. What those types
/// already hold counts against it from the start.
#[utoipa::path(
    post, path = "/events/{id}/quotas", tag = "catalogue",
    security((), ("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Event id")),
    request_body = CreateQuotaRequest,
    responses(
        (status = 201, description = "Created; `Location` names the new quota", body = QuotaView,
         headers(("Location" = String, description = "/events/{id}/quotas/{quotaId}"))),
        (status = 400, description = "BAD_REQUEST: malformed JSON, wrong content type or id", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: the server runs with --admin-token and no token was sent", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: the token is neither the admin token nor a live organiser token (a door token, say)", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event", body = ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT: the body stopped arriving within the request timeout; the connection is closed", body = ErrorBody),
        (status = 409, description = "CAPACITY_BELOW_SOLD: its types already hold more than size (carries reservedTickets and purchasedTickets)", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR, with details per field (ticketTypeIds naming types of other events)", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn create_quota(
    State(state): State<AppState>,
    _organiser: Organiser,
    IdPath(event_id): IdPath,
    ApiJson(request): ApiJson<CreateQuotaRequest>,
) -> ApiResult<Response> {
    let settings = QuotaSettings::create(request.into()).map_err(Error::Validation)?;
    let view = catalogue::create_quota(&state.pool, event_id, settings).await?;
    created(format!("/events/{event_id}/quotas/{}", view.id), &view)
}

/// Read one of an event's quotas, as the list shows it. `Location` of its creation.
#[utoipa::path(
    get, path = "/events/{id}/quotas/{quotaId}", tag = "catalogue",
    security((), ("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "Event id"),
        ("quotaId" = uuid::Uuid, Path, description = "Quota id"),
    ),
    responses(
        (status = 200, description = "The quota, as `GET /events/{id}/quotas` lists it", body = QuotaView),
        (status = 400, description = "BAD_REQUEST: an id is not a UUID", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: the server runs with --admin-token and no token was sent", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: the token is neither the admin token nor a live organiser token (a door token, say)", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event, or no such quota in it", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn get_quota(
    State(state): State<AppState>,
    // Before the path, as on the list: the token is checked first.
    _organiser: Organiser,
    path: EventItemPath,
) -> ApiResult<Response> {
    let view = catalogue::quota(&state.pool, path.event_id, path.item_id).await?;
    json(StatusCode::OK, &view)
}

/// Change a quota's name, size or types; its counts are recounted from the orders' lines.
#[utoipa::path(
    patch, path = "/events/{id}/quotas/{quotaId}", tag = "catalogue",
    security((), ("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "Event id"),
        ("quotaId" = uuid::Uuid, Path, description = "Quota id"),
    ),
    request_body(content = Option<UpdateQuotaRequest>, description = "Optional: a field left out is unchanged, so no body changes nothing and answers the quota as it is"),
    responses(
        (status = 200, description = "The quota as changed", body = QuotaView),
        (status = 400, description = "BAD_REQUEST: malformed JSON, wrong content type or id", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: the server runs with --admin-token and no token was sent", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: the token is neither the admin token nor a live organiser token (a door token, say)", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event, or no such quota in it", body = ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT: the body stopped arriving within the request timeout; the connection is closed", body = ErrorBody),
        (status = 409, description = "CAPACITY_BELOW_SOLD: its types hold more than the new size (carries reservedTickets and purchasedTickets)", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR, with details per field", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn update_quota(
    State(state): State<AppState>,
    _organiser: Organiser,
    path: EventItemPath,
    ApiJson(request): ApiJson<UpdateQuotaRequest>,
) -> ApiResult<Response> {
    let view =
        catalogue::update_quota(&state.pool, path.event_id, path.item_id, request.into()).await?;
    json(StatusCode::OK, &view)
}

/// Delete a quota; its types then sell against the event and their other quotas only.
#[utoipa::path(
    delete, path = "/events/{id}/quotas/{quotaId}", tag = "catalogue",
    security((), ("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "Event id"),
        ("quotaId" = uuid::Uuid, Path, description = "Quota id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "BAD_REQUEST: an id is not a UUID", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: the server runs with --admin-token and no token was sent", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: the token is neither the admin token nor a live organiser token (a door token, say)", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such event, or no such quota in it", body = ErrorBody),
        (status = 503, description = "SERVICE_UNAVAILABLE", body = ErrorBody),
    )
)]
pub async fn delete_quota(
    State(state): State<AppState>,
    _organiser: Organiser,
    path: EventItemPath,
) -> ApiResult<Response> {
    catalogue::delete_quota(&state.pool, path.event_id, path.item_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
