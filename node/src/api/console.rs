//! The web console at `/ui/`: a read-only page of nodes, rooms, calls and
//! incidents, updated live, built into the binary (`include_str!`, no build
//! step) so that a daemon needs no files beside it.
//!
//! The page and its assets are served without the API token: they hold no
//! data, and a browser cannot put a bearer token on a page load. The script
//! then calls the API like any other client, with `Authorization: Bearer`
//! (taken from `#token=...` or a form, kept in `sessionStorage`), so every
//! piece of data stays behind the token.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const STYLE_CSS: &str = include_str!("console/style.css");

/// Only this origin's own script, style and API: no inline script (the
/// data shown comes from the cluster, so an injection must not run), no
/// framing (clickjacking), no forms posted anywhere, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `/ui` (redirected to `/ui/`, so relative asset paths resolve), the page
/// and its assets; none behind the token (see the module docs). Registered
/// like every route, so the OpenAPI document lists them too.
pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(to_page))
        .routes(routes!(page))
        .routes(routes!(script))
        .routes(routes!(style))
}

/// The console's address without its slash.
#[utoipa::path(get, path = "/ui", tag = "console",
    responses((status = 308, description = "To `/ui/`")))]
async fn to_page() -> Redirect {
    Redirect::permanent("/ui/")
}

/// The web console (read-only; it asks for the token itself).
#[utoipa::path(get, path = "/ui/", tag = "console",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// The console's script.
#[utoipa::path(get, path = "/ui/app.js", tag = "console",
    responses((status = 200, description = "The script", content_type = "text/javascript", body = String)))]
async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// The console's style sheet.
#[utoipa::path(get, path = "/ui/style.css", tag = "console",
    responses((status = 200, description = "The style sheet", content_type = "text/css", body = String)))]
async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            // The type above is the only one a browser may assume.
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            // A link followed from the page tells nobody where it was.
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            // The assets change with the binary: a browser revalidates
            // rather than running an old script against a new API.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
        ],
        body,
    )
        .into_response()
}
