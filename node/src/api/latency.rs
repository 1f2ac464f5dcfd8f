//! Times every API request for `chorus_http_request_seconds`, by method
//! and matched route. Layered on the whole router (`Router::layer` wraps
//! each route), so the route's pattern is known, and a request the token
//! check refuses is timed too.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// Until the response's head is ready: a streamed body (the change feed)
/// is not part of it.
pub(super) async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // The pattern, not the path: one series per route, whatever the ids.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let response = next.run(request).await;
    crate::metrics::observe_request(&method, route.as_deref(), started.elapsed());
    response
}
