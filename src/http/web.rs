//! The web page: plain HTML, CSS and JavaScript embedded in the binary (no CDN, no build
//! step), served with headers that forbid inline script, sniffing and framing.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::http::state::AppState;

/// Every embedded file: the path it is served at, its content type and its content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../web/index.html"),
    ),
    (
        "/assets/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/app.js"),
    ),
    (
        "/assets/fingerprint.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/fingerprint.js"),
    ),
    (
        "/assets/scan.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/scan.js"),
    ),
    (
        "/assets/style.css",
        "text/css; charset=utf-8",
        include_str!("../../web/style.css"),
    ),
    // The QR decoder of the scanner page, from the npm registry (web/vendor/README.md), and
    // the licence it is distributed under.
    (
        "/assets/vendor/jsQR.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/vendor/jsQR.js"),
    ),
    (
        "/assets/vendor/jsQR-LICENSE.txt",
        "text/plain; charset=utf-8",
        include_str!("../../web/vendor/jsQR-LICENSE.txt"),
    ),
];

/// Scripts and styles only from this origin; API calls only to this origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The web page's routes, one per embedded file, behind the page's security headers.
pub fn routes() -> Router<AppState> {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(async move || asset(content_type, body)))
        })
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
