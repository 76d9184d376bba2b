//! The HTTP surface: routing, middleware and the OpenAPI document. Handlers are thin: they
//! parse input, call one function of the purchase/holds/db layers and shape the answer.

pub mod error;
pub mod events;
pub mod extract;
pub mod limits;
pub mod ops;
pub mod page;
pub mod stream;
pub mod tickets;

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::Error;
use crate::state::AppState;
use extract::MAX_BODY_BYTES;

#[derive(OpenApi)]
#[openapi(
    info(title = "Boxoffice", description = "Sells event tickets without ever overselling."),
    tags(
        (name = "events", description = "Organisers create events; buyers list and read them"),
        (name = "tickets", description = "Holds: purchase, pay, cancel, read"),
        (name = "operations", description = "Health and readiness"),
    )
)]
struct ApiDoc;

/// The API routes with their OpenAPI description, before state is attached.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(events::create_event, events::list_events))
        .routes(routes!(events::get_event))
        .routes(routes!(stream::event_stream))
        .routes(routes!(tickets::purchase_tickets))
        .routes(routes!(tickets::pay_for_tickets, tickets::cancel_tickets))
        .routes(routes!(tickets::get_ticket))
        .routes(routes!(tickets::list_tickets))
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
    let (api, openapi) = api().split_for_parts();
    let app = api
        .merge(page::routes())
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(async || Error::NotFound("route"))
        .method_not_allowed_fallback(async || Error::MethodNotAllowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ))
        .layer(middleware::map_response(json_errors))
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
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("x-device-fingerprint"),
                HeaderName::from_static("idempotency-key"),
            ])
            .max_age(Duration::from_secs(600)),
    ))
}

/// Responses made by the framework or a layer (not by our handlers) carry plain-text or empty
/// bodies; give them the same JSON error body as every other error.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let error = match status {
        StatusCode::NOT_FOUND => Error::NotFound("route"),
        StatusCode::METHOD_NOT_ALLOWED => Error::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        },
        StatusCode::REQUEST_TIMEOUT
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Error::ServiceUnavailable,
        s if s.is_client_error() => {
            Error::bad_request(s.canonical_reason().unwrap_or("bad request"))
        }
        s => Error::internal(format!("layer answered {s}")),
    };
    let mut replaced = error.into_response();
    // Keep the layer's status (e.g. 411, 431) and headers such as Allow.
    *replaced.status_mut() = status;
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            replaced.headers_mut().insert(name.clone(), value.clone());
        }
    }
    replaced
}

/// One log line per request: method, path, status and latency.
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
    let status = response.status().as_u16();
    tracing::info!(
        target: "boxoffice::request",
        %method,
        %path,
        status,
        latency_ms = latency.as_secs_f64() * 1000.0,
        "request"
    );
    crate::metrics::http_request(method.as_str(), &route, status, latency);
    response
}
