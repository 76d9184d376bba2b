//! The web page: plain HTML, CSS and JavaScript embedded in the binary (no CDN, no build
//! step), served with headers that forbid inline script, sniffing and framing.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::http::state::AppState;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const FINGERPRINT_JS: &str = include_str!("../../web/fingerprint.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");

/// Scripts and styles only from this origin; API calls only to this origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(async || asset("text/html; charset=utf-8", INDEX_HTML)),
        )
        .route(
            "/assets/app.js",
            get(async || asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/assets/fingerprint.js",
            get(async || asset("text/javascript; charset=utf-8", FINGERPRINT_JS)),
        )
        .route(
            "/assets/style.css",
            get(async || asset("text/css; charset=utf-8", STYLE_CSS)),
        )
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        ))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
