//! The HTTP surface: routing, middleware and the OpenAPI document. Handlers parse the wire
//! shapes into domain types, identify the buyer, call the services (through the keyed
//! wrapper in [`idempotent`] when a request may carry an idempotency key) and shape the
//! answer. The event handlers that create and list call `db` directly: each is one
//! statement, with no transaction to compose; the catalogue's go through `crate::catalogue`.

pub mod catalogue;
pub mod checkins;
pub mod connections;
pub mod currencies;
pub mod error;
pub mod events;
pub mod extract;
pub mod idempotent;
pub mod limits;
pub mod ops;
pub mod peer;
pub mod report;
pub mod response;
pub mod serve;
pub mod state;
pub mod stream;
pub mod tickets;
pub mod waiting_list;
pub mod web;
pub mod wire;

use std::any::Any;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::{Error, panic_message};
use crate::http::state::AppState;
use error::ApiError;
use error::InternalCause;
use extract::{BATCH_BODY_BYTES, BodyLimit, BodyReading, MAX_BODY_BYTES, body_limit};

#[derive(OpenApi)]
#[openapi(
    info(title = "Boxoffice", description = "Sells event tickets without ever overselling."),
    modifiers(&BearerToken),
    tags(
        (name = "events", description = "Organisers create events; buyers list and read them"),
        (name = "catalogue", description = "Organisers sell ticket types against shared quotas"),
        (name = "tickets", description = "Holds: purchase, pay, cancel, read; the organiser finds, reads and refunds orders"),
        (name = "checkin", description = "Admission at the door: scans, offline uploads, statistics"),
        (name = "waiting-list", description = "Sold-out types: buyers line up, and returned tickets are offered to them in join order"),
        (name = "operations", description = "Health and readiness"),
    )
)]
struct ApiDoc;

/// The one security scheme the operations name: `Authorization: Bearer <token>`, so that
/// Swagger UI offers "Authorize" and sends the header, and generated clients carry it.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "The admin token (--admin-token), an organiser token or a door token from \
                 `boxoffice tokens create`. Each operation says which it takes; the \
                 organiser's routes are open to all on a server without --admin-token, the \
                 report, refunds and the order list never are, and the door's always need the \
                 admin, an organiser or a door token.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The API routes with their OpenAPI description, before state is attached.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(events::create_event, events::list_events))
        .routes(routes!(events::get_event, catalogue::update_event))
        .routes(routes!(
            catalogue::list_ticket_types,
            catalogue::create_ticket_type
        ))
        .routes(routes!(
            catalogue::get_ticket_type,
            catalogue::update_ticket_type
        ))
        .routes(routes!(catalogue::list_quotas, catalogue::create_quota))
        .routes(routes!(
            catalogue::get_quota,
            catalogue::update_quota,
            catalogue::delete_quota
        ))
        .routes(routes!(report::sales_report))
        .routes(routes!(stream::event_stream))
        .routes(routes!(tickets::purchase_tickets))
        .routes(routes!(tickets::pay_for_tickets, tickets::cancel_tickets))
        .routes(routes!(tickets::get_ticket))
        .routes(routes!(tickets::admission_qr))
        .routes(routes!(tickets::refund_tickets))
        .routes(routes!(tickets::list_tickets))
        .routes(routes!(tickets::list_event_orders))
        .routes(routes!(
            waiting_list::join_waiting_list,
            waiting_list::list_event_entries
        ))
        .routes(routes!(waiting_list::list_entries))
        .routes(routes!(
            waiting_list::get_entry,
            waiting_list::leave_waiting_list
        ))
        .routes(routes!(checkins::check_in))
        .merge(
            // The one route whose bodies may be larger than 16 KiB (see `body_limit`).
            OpenApiRouter::new()
                .routes(routes!(checkins::upload_batch))
                .layer(DefaultBodyLimit::max(BATCH_BODY_BYTES)),
        )
        .routes(routes!(checkins::list_conflicts))
        .routes(routes!(checkins::checkin_stats))
        .routes(routes!(checkins::checkin_export))
        .routes(routes!(currencies::list_currencies))
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics))
}

/// The complete application: API, OpenAPI document, error mapping and request logging.
pub fn router(
    state: AppState,
    request_timeout: Duration,
    cors_origins: &[String],
) -> Result<Router, String> {
    layers(routes(state), request_timeout, cors_origins)
}

/// Every route (API, web page, OpenAPI document and Swagger UI) with its state, and the JSON
/// answers for unknown paths and methods; no middleware yet (see [`layers`]).
pub fn routes(state: AppState) -> Router {
    let (api, openapi) = api().split_for_parts();
    api.merge(web::routes())
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(async || ApiError::from(Error::NotFound("route")))
        .method_not_allowed_fallback(async || ApiError::MethodNotAllowed)
        .with_state(state)
}

/// The middleware stack every request passes through, around `app`: body limits, request
/// timeout, JSON errors, panic recovery, `nosniff`, the request log and metrics, and CORS.
/// Apart from [`router`], tests use it to serve extra routes behind the real stack.
pub fn layers(
    app: Router,
    request_timeout: Duration,
    cors_origins: &[String],
) -> Result<Router, String> {
    let app = app
        // Every extractor reads at most 16 KiB, except on the batch route, whose own layer
        // raises it; `limit_body` refuses a longer declared body before routing, and the
        // layer under it stops any body, declared or not, at the largest limit of all.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyLimitLayer::new(BATCH_BODY_BYTES))
        .layer(middleware::from_fn(limit_body))
        .layer(middleware::from_fn_with_state(
            request_timeout,
            request_deadline,
        ))
        .layer(middleware::map_response(json_errors))
        // Outside every layer that runs our code, so a panic there is caught too; inside
        // `log_request`, so a panic is logged, counted and answered like any other 500.
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(middleware::from_fn(log_request));
    Ok(match cors(cors_origins)? {
        Some(cors) => app.layer(cors),
        None => app,
    })
}

/// Refuses a body whose `Content-Length` is over its path's limit ([`body_limit`]) with 413
/// before routing, and hands the limit on to the extractors ([`BodyLimit`]), which stop a body
/// without a `Content-Length` there.
async fn limit_body(mut request: Request, next: Next) -> Response {
    let limit = body_limit(request.uri().path());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return ApiError::PayloadTooLarge { limit }.into_response();
    }
    request.extensions_mut().insert(BodyLimit(limit));
    next.run(request).await
}

/// Ends a request still unanswered after `timeout` (`--request-timeout-ms`): 408
/// `REQUEST_TIMEOUT` if its body was still arriving (the client held it up; the connection
/// is closed, as the rest of that body cannot be told from a next request), otherwise 503
/// `SERVICE_UNAVAILABLE` with `Retry-After: 1`. Dropping the request's future drops its
/// work: an unkeyed purchase rolls back, a keyed one runs on in its own task.
async fn request_deadline(
    State(timeout): State<Duration>,
    mut request: Request,
    next: Next,
) -> Response {
    let body = BodyReading::default();
    request.extensions_mut().insert(body.clone());
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) if body.is_reading() => {
            let mut response = ApiError::RequestTimeout.into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
        Err(_) => ApiError::from(Error::ServiceUnavailable).into_response(),
    }
}

/// A panic in a handler or layer becomes the usual 500 JSON error; its message is the cause
/// that `log_request` logs with the request's method and path.
fn panic_response(payload: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::internal(format!("panic: {}", panic_message(payload.as_ref()))).into_response()
}

/// CORS for the configured origins only; none configured means no CORS headers at all, so
/// browsers keep other sites' pages from calling the API.
fn cors(origins: &[String]) -> Result<Option<CorsLayer>, String> {
    if origins.is_empty() {
        return Ok(None);
    }
    let origins = origins
        .iter()
        .map(|o| HeaderValue::from_str(o.trim()).map_err(|_| format!("invalid CORS origin {o:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("x-device-fingerprint"),
                HeaderName::from_static("idempotency-key"),
            ])
            .max_age(Duration::from_secs(600)),
    ))
}

/// How much of a layer's error body is kept as the logged cause of a 500.
const CAUSE_BYTES: usize = 4 * 1024;

/// Responses made by the framework or a layer (not by our handlers) carry plain-text or empty
/// bodies; give them the same JSON error body as every other error. A 5xx keeps the original
/// body's start as its logged cause (axum's `Json`, for one, explains a failure there).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let error = match status {
        StatusCode::NOT_FOUND => Error::NotFound("route").into(),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        },
        StatusCode::REQUEST_TIMEOUT => ApiError::RequestTimeout,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
            Error::ServiceUnavailable.into()
        }
        s if s.is_client_error() => {
            ApiError::bad_request(s.canonical_reason().unwrap_or("bad request"))
        }
        s => ApiError::internal(format!("layer answered {s}: {}", body_start(body).await)),
    };
    let mut replaced = error.into_response();
    // Keep the layer's status (e.g. 411, 431) and headers such as Allow.
    *replaced.status_mut() = status;
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            replaced.headers_mut().insert(name.clone(), value.clone());
        }
    }
    replaced
}

/// The first [`CAUSE_BYTES`] of a body as text, for the log; reading stops there.
async fn body_start(body: Body) -> String {
    let mut start = Vec::new();
    let mut chunks = body.into_data_stream();
    while start.len() < CAUSE_BYTES {
        match chunks.next().await {
            Some(Ok(chunk)) => start.extend_from_slice(&chunk),
            Some(Err(err)) => {
                start.extend_from_slice(format!(" (body unreadable: {err})").as_bytes());
                break;
            }
            None => break,
        }
    }
    start.truncate(CAUSE_BYTES);
    if start.is_empty() {
        return "(empty body)".to_owned();
    }
    String::from_utf8_lossy(&start).into_owned()
}

/// One log line per request: method, path, status and latency; at error level with the cause
/// when the response is a 500 that carries one ([`InternalCause`]).
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // The route template (`/events/{id}`), not the path, labels metrics: bounded cardinality.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let response = next.run(request).await;
    let latency = started.elapsed();
    let latency_ms = milliseconds(latency);
    let status = response.status().as_u16();
    match response.extensions().get::<InternalCause>() {
        Some(InternalCause(cause)) => tracing::error!(
            target: "boxoffice::request",
            %method,
            %path,
            status,
            latency_ms,
            %cause,
            "request failed"
        ),
        None => tracing::info!(
            target: "boxoffice::request",
            %method,
            %path,
            status,
            latency_ms,
            "request"
        ),
    }
    crate::metrics::http_request(method.as_str(), &route, status, latency);
    response
}

/// A duration in milliseconds to the microsecond, for the log: `0.245`, where
/// `as_secs_f64() * 1000.0` wrote binary noise such as `0.24505000000000002`.
pub(crate) fn milliseconds(duration: std::time::Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::milliseconds;

    #[test]
    fn logged_latencies_are_milliseconds_to_the_microsecond() {
        assert_eq!(
            milliseconds(Duration::from_nanos(245_050)).to_string(),
            "0.245"
        );
        assert_eq!(
            milliseconds(Duration::from_micros(1_500_001)).to_string(),
            "1500.001"
        );
        assert_eq!(milliseconds(Duration::ZERO).to_string(), "0");
    }
}
