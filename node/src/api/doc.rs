//! The API's OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` annotations and the types' `ToSchema` derives. Every
//! route is registered through `utoipa_axum::routes!`, which takes its path
//! and method from the same annotation, so the router and the document
//! cannot name different routes (`node/tests/openapi.rs` checks both ways
//! against a live daemon).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The body of every 4xx and 5xx answer.
#[derive(serde::Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: `invalid`, `unauthorized`, `not_found`,
    /// `exists`, `ended`, `session`, `stale_owner`, `over_capacity`,
    /// `not_permitted`, `resume_refused`, `drills_disabled`,
    /// `unknown_node`, `too_large`, `refused`, `already_leaving`,
    /// `unsupported`, `not_ready`, `unavailable`, `internal`, …
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
}

/// The answers any route behind the token may give besides its own.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Named only in the document.
pub enum Failures {
    /// The request is malformed (a bad id, body or query).
    #[response(status = 400)]
    Invalid(ErrorBody),
    /// A token is configured and the request lacks it.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Refused by a permission or a disabled feature.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such room, session, track or node.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The route does not take this method.
    #[response(status = 405)]
    MethodNotAllowed(ErrorBody),
    /// The room's state does not allow it (exists, ended, stale owner,
    /// over capacity, a departure under way).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The body is over `api.body_bytes_max` (or decompresses past a limit).
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// A JSON body sent without `Content-Type: application/json`.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// The change is well formed but refused by validation.
    #[response(status = 422)]
    Refused(ErrorBody),
    /// The store failed.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// The replica is shutting down, overloaded, or has no network.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The answers of the routes outside the token.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Named only in the document.
pub enum PublicFailures {
    /// The route does not take this method.
    #[response(status = 405)]
    MethodNotAllowed(ErrorBody),
    /// The store failed.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// The replica is shutting down or overloaded (for `/v1/ready`: it
    /// does not see a majority).
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chorus",
        description = "The chorus replica daemon's HTTP API. Bodies are JSON unless a \
                       route says otherwise; errors are `{code, message}`. Every route \
                       but /v1/health, /v1/ready, /v1/openapi.json, /metrics and the \
                       console's /ui/ takes `Authorization: Bearer <api.token>` when a token is configured.",
        license(name = "Apache-2.0"),
    ),
    // Named by `Failures` and `PublicFailures`, which do not collect it.
    components(schemas(ErrorBody)),
    modifiers(&BearerToken),
    tags(
        (name = "rooms", description = "Rooms, participants and their fields"),
        (name = "cluster", description = "The replica, its peers and the incident journal"),
        (name = "failover", description = "Node grades, drains, health and placement"),
        (name = "lifecycle", description = "Liveness, readiness, departure and metrics"),
        (name = "console", description = "The web console's page and assets (no token; the page asks for it)"),
    )
)]
pub struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
