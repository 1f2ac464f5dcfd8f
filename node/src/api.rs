//! The HTTP API (JSON). Handlers parse and check input, then call the
//! engine (off the async threads) and wait for its answer. Bad input is a 4xx
//! with `{code, message}`; only a failing store is a 5xx.
//!
//! Submodules: `rooms`, `fields`, `cluster`, `lifecycle` and
//! `crate::nodes` (the routes, by part), `sse` (the change feed), `errors`
//! (the error shape and the extractors that answer in it), `doc` (the
//! OpenAPI document), `server` (the HTTP server and its timeouts).

mod cluster;
mod console;
pub mod doc;
mod errors;
mod fields;
mod latency;
mod lifecycle;
mod rooms;
pub mod server;
pub mod sse;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use chorus_engine::{Engine, Intent, RoomId};

use crate::config::Config;
use crate::limits::CALLS_IN_FLIGHT_MAX;
use crate::limits::COMMAND_TIMEOUT;
use crate::metrics;
use doc::PublicFailures;
use errors::engine_error;
pub use errors::{ApiError, Body, Json, Path, Query};
pub(crate) use rooms::write;

#[derive(Clone)]
pub struct ApiState {
    pub(crate) engine: Arc<Engine>,
    /// Engine calls in flight: a bound on the blocking threads (and the
    /// request bodies they hold) while the replica is slow.
    in_flight: Arc<tokio::sync::Semaphore>,
    token: Option<Arc<str>>,
    drills: bool,
    body_bytes_max: usize,
    /// Where `POST /v1/leave` goes (the daemon's main task), and the
    /// intent it announces by default.
    leave: Option<tokio::sync::mpsc::Sender<Intent>>,
    shutdown_intent: Intent,
    /// Set by the first `POST /v1/leave` taken: later ones get 409.
    leaving: Arc<std::sync::atomic::AtomicBool>,
}

impl ApiState {
    pub fn new(config: &Config, engine: Arc<Engine>) -> Self {
        Self {
            engine,
            in_flight: Arc::new(tokio::sync::Semaphore::new(CALLS_IN_FLIGHT_MAX)),
            token: config.api.token.as_deref().map(Arc::from),
            drills: config.drills,
            body_bytes_max: config.api.body_bytes_max,
            leave: None,
            shutdown_intent: config.shutdown_intent,
            leaving: Arc::default(),
        }
    }

    /// Lets `POST /v1/leave` ask the daemon to leave, through `tx`.
    pub fn with_leave(mut self, tx: tokio::sync::mpsc::Sender<Intent>) -> Self {
        self.leave = Some(tx);
        self
    }
}

pub(crate) fn room_id(text: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(text).map_err(|e| ApiError::bad(format!("room: {e}")))
}

/// Runs `f` with the engine on a blocking thread (the engine's calls wait
/// for its driver), answering 503 if no slot frees up or the answer takes
/// longer than `COMMAND_TIMEOUT`. A call that already reached the engine
/// cannot be taken back: after a 503 a write's outcome is unknown (read the
/// room, or retry: writes carry their own ids and epochs).
pub(crate) async fn call<T, F>(state: &ApiState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Engine) -> chorus_engine::Result<T> + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
    let slot = tokio::time::timeout_at(deadline, state.in_flight.clone().acquire_owned())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(ApiError::unavailable)?;
    let engine = state.engine.clone();
    let task = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        f(&engine)
    });
    match tokio::time::timeout_at(deadline, task).await {
        Ok(Ok(result)) => result.map_err(engine_error),
        _ => Err(ApiError::unavailable()),
    }
}

pub(crate) fn no_network() -> chorus_engine::Error {
    chorus_engine::Error::Network("the daemon runs without a network".into())
}

/// The API's routes and its OpenAPI document, from the same annotations:
/// the public ones, and the ones behind the token.
fn routes() -> (OpenApiRouter<ApiState>, OpenApiRouter<ApiState>) {
    let public = OpenApiRouter::with_openapi(doc::ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(lifecycle::ready))
        .routes(routes!(metrics_text))
        .routes(routes!(openapi_json))
        .merge(console::routes());
    let guarded = OpenApiRouter::new()
        .merge(rooms::routes())
        .merge(fields::routes())
        .merge(cluster::routes())
        .merge(crate::nodes::routes())
        .routes(routes!(sse::changes))
        .routes(routes!(lifecycle::leave_cluster));
    (public, guarded)
}

/// The API's OpenAPI 3.1 document (what `GET /v1/openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (public, guarded) = routes();
    public.merge(guarded).into_openapi()
}

pub fn router(state: ApiState) -> Router {
    let limit = state.body_bytes_max;
    let (public, guarded) = routes();
    let guarded = guarded.route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let (router, _) = public.merge(guarded).split_for_parts();
    router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        // The access log: one line per request (method, path, status,
        // latency) at INFO, target `tower_http::trace` (quiet it with
        // `RUST_LOG=info,tower_http=warn`).
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(
                    tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO),
                )
                .on_request(())
                // A 5xx is an answer like any other here (a 503 from
                // `/v1/ready` on a minority node is expected): no ERROR
                // line beside its access line.
                .on_failure(())
                .on_response(
                    tower_http::trace::DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                ),
        )
        .layer(middleware::from_fn(latency::observe))
        .with_state(state)
}

async fn require_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Constant-time compare: the token is a secret.
        let ok = given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !ok {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            )
            .into_response();
        }
    }
    next.run(request).await
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    status: &'static str,
    name: String,
    peer_id: String,
    connected_peers: usize,
    rooms: usize,
}

/// Liveness: the replica answers. Readiness is `/v1/ready`.
#[utoipa::path(get, path = "/v1/health", tag = "lifecycle",
    responses((status = 200, description = "The replica answers", body = Health), PublicFailures))]
async fn health(State(state): State<ApiState>) -> Result<axum::Json<Health>, ApiError> {
    let view = call(&state, |e| e.cluster_view()?.ok_or_else(no_network)).await?;
    Ok(axum::Json(Health {
        status: "ok",
        connected_peers: view.peers.iter().filter(|p| p.connected).count(),
        rooms: view.rooms,
        name: view.name,
        peer_id: view.peer_id,
    }))
}

/// The document is built once, on first request.
static OPENAPI_JSON: std::sync::LazyLock<Result<String, String>> =
    std::sync::LazyLock::new(|| openapi().to_json().map_err(|e| e.to_string()));

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "lifecycle",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object), PublicFailures))]
async fn openapi_json() -> Result<Response, ApiError> {
    match &*OPENAPI_JSON {
        Ok(text) => {
            Ok(([(header::CONTENT_TYPE, "application/json")], text.clone()).into_response())
        }
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.clone(),
        )),
    }
}

/// Counters, gauges and histograms in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "lifecycle",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String), PublicFailures))]
async fn metrics_text(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let (stats, nodes) = call(&state, |e| {
        Ok((e.net_stats()?.ok_or_else(no_network)?, e.nodes_view()?))
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::render(&stats, &nodes),
    )
        .into_response())
}
