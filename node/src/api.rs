//! The HTTP API (JSON). Handlers parse and check input, then call the
//! engine (off the async threads) and wait for its answer. Bad input is a 4xx
//! with `{code, message}`; only a failing store is a 5xx.
//!
//! Submodules: `errors` (the error shape and the extractors that answer in
//! it), `sse` (the change feed), `server` (the HTTP server and its
//! timeouts).

mod errors;
mod fields;
mod lifecycle;
pub mod server;
pub mod sse;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::{Deserialize, Serialize};

use chorus_engine::model::{JoinRequest, Owner, RoomConfig};
use chorus_engine::{ConfigUpdate, Engine, Intent, RoomId, RoomOp, SessionId, TenantId};

use crate::config::Config;
use crate::limits::CALLS_IN_FLIGHT_MAX;
use crate::limits::COMMAND_TIMEOUT;
use crate::limits::INCIDENTS_PER_PAGE_MAX;
use crate::metrics;
use errors::engine_error;
pub use errors::{ApiError, Body, Json, Path, Query};

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

pub fn router(state: ApiState) -> Router {
    let limit = state.body_bytes_max;
    let guarded = Router::new()
        .route("/v1/rooms", get(list_rooms))
        .route(
            "/v1/rooms/{room}",
            put(upsert_room).get(get_room).delete(end_room),
        )
        .route("/v1/rooms/{room}/participants", post(join))
        .route("/v1/rooms/{room}/batch", post(batch))
        .route(
            "/v1/rooms/{room}/participants/{session}",
            axum::routing::delete(leave),
        )
        .route(
            "/v1/rooms/{room}/participants/{session}/owner",
            put(set_owner),
        )
        .route(
            "/v1/rooms/{room}/participants/{session}/resume",
            post(resume),
        )
        .route(
            "/v1/rooms/{room}/automerge",
            get(export_room).post(import_room),
        )
        .route("/v1/cluster", get(cluster))
        .route("/v1/incidents", get(incidents))
        .route("/v1/changes", get(sse::changes))
        .route("/v1/drill/partition", post(drill_partition))
        .route("/v1/drill/heal", post(drill_heal))
        .route("/v1/leave", post(lifecycle::leave_cluster))
        .merge(crate::nodes::routes())
        .merge(fields::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/ready", get(lifecycle::ready))
        .route("/metrics", get(metrics_text))
        .merge(guarded)
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

#[derive(Serialize)]
struct Health {
    status: &'static str,
    name: String,
    peer_id: String,
    connected_peers: usize,
    rooms: usize,
}

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

async fn list_rooms(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let rooms = call(&state, |e| e.list_rooms()).await?;
    Ok(axum::Json(rooms).into_response())
}

/// `PUT /v1/rooms/{room}`: every field optional; a new room takes the
/// defaults for the ones left out, an existing one keeps them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomBody {
    tenant: Option<String>,
    max_participants: Option<u32>,
    preferred_region: Option<String>,
    recording: Option<bool>,
    #[serde(default)]
    attributes: std::collections::BTreeMap<String, String>,
}

async fn upsert_room(
    State(state): State<ApiState>,
    Path(room): Path<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let room = room_id(&room)?;
    // The body is optional: an empty one creates the room with defaults.
    let body: RoomBody = if body.iter().all(u8::is_ascii_whitespace) {
        RoomBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("body: {e}")))?
    };
    let tenant = TenantId::parse(body.tenant.as_deref().unwrap_or("default"))
        .map_err(|e| ApiError::bad(format!("tenant: {e}")))?;
    let region = body
        .preferred_region
        .as_deref()
        .map(chorus_engine::RegionId::parse)
        .transpose()
        .map_err(|e| ApiError::bad(format!("preferred_region: {e}")))?;
    let defaults = RoomConfig::default();
    let config = RoomConfig {
        max_participants: body.max_participants.unwrap_or(defaults.max_participants),
        preferred_region: region.clone(),
        recording: body.recording.unwrap_or(defaults.recording),
        attributes: body.attributes.clone(),
    };
    let update = ConfigUpdate {
        max_participants: body.max_participants,
        preferred_region: region.map(Some),
        recording: body.recording,
        set_attributes: body.attributes,
        remove_attributes: Vec::new(),
    };
    let ack = call(&state, move |e| {
        e.upsert_room(&room, &tenant, config, update)
    })
    .await?;
    Ok(axum::Json(ack).into_response())
}

async fn get_room(
    State(state): State<ApiState>,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    let id = room_id(&room)?;
    let snapshot = call(&state, move |e| e.room(&id)).await?;
    match snapshot {
        Some(snapshot) => Ok(axum::Json(snapshot).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("room {room} does not exist"),
        )),
    }
}

pub(crate) async fn write(
    state: &ApiState,
    room: RoomId,
    op: RoomOp,
) -> Result<Response, ApiError> {
    let ack = call(state, move |e| e.write(&room, op)).await?;
    Ok(axum::Json(ack).into_response())
}

async fn end_room(
    State(state): State<ApiState>,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    write(&state, room_id(&room)?, RoomOp::End).await
}

async fn join(
    State(state): State<ApiState>,
    Path(room): Path<String>,
    Json(request): Json<JoinRequest>,
) -> Result<Response, ApiError> {
    write(&state, room_id(&room)?, RoomOp::Join { request }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    ops: Vec<RoomOp>,
}

/// Several operations as one transaction (`RoomOp::Batch`): every room
/// operation but `create`, including the ones with no route of their own
/// (session state, tracks, permissions, config).
async fn batch(
    State(state): State<ApiState>,
    Path(room): Path<String>,
    Json(body): Json<BatchBody>,
) -> Result<Response, ApiError> {
    write(&state, room_id(&room)?, RoomOp::Batch { ops: body.ops }).await
}

async fn leave(
    State(state): State<ApiState>,
    Path((room, session)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let session = SessionId::parse(session).map_err(|e| ApiError::bad(format!("session: {e}")))?;
    write(&state, room_id(&room)?, RoomOp::Leave { session }).await
}

async fn set_owner(
    State(state): State<ApiState>,
    Path((room, session)): Path<(String, String)>,
    Json(owner): Json<Owner>,
) -> Result<Response, ApiError> {
    let session = SessionId::parse(session).map_err(|e| ApiError::bad(format!("session: {e}")))?;
    write(&state, room_id(&room)?, RoomOp::SetOwner { session, owner }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeBody {
    token: String,
}

/// A client resuming on this replica: its token is checked against the
/// replicated hash; the answer is the call's current owner and state.
async fn resume(
    State(state): State<ApiState>,
    Path((room, session)): Path<(String, String)>,
    Json(body): Json<ResumeBody>,
) -> Result<Response, ApiError> {
    let room = room_id(&room)?;
    let session = SessionId::parse(session).map_err(|e| ApiError::bad(format!("session: {e}")))?;
    let id = room.clone();
    let snapshot = call(&state, move |e| e.room(&id)).await?;
    let resumed = chorus_engine::resume::resume(&room, snapshot.as_ref(), &session, &body.token)
        .map_err(engine_error)?;
    Ok(axum::Json(resumed).into_response())
}

async fn export_room(
    State(state): State<ApiState>,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    let id = room_id(&room)?;
    match call(&state, move |e| {
        e.inspect(move |r, _| r.export_room(&id))?
    })
    .await?
    {
        Some(bytes) => {
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("room {room} does not exist"),
        )),
    }
}

async fn import_room(
    State(state): State<ApiState>,
    Path(room): Path<String>,
    Body(bytes): Body,
) -> Result<Response, ApiError> {
    let room = room_id(&room)?;
    if bytes.is_empty() {
        return Err(ApiError::bad("the body must hold automerge bytes"));
    }
    let bytes = bytes.to_vec();
    let ack = call(&state, move |e| e.import_room_as(&room, &bytes)).await?;
    Ok(axum::Json(ack).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncidentQuery {
    /// The `at` of the last entry already seen.
    after: Option<String>,
    limit: Option<usize>,
}

/// The incident journal, oldest first; page with `after`.
async fn incidents(
    State(state): State<ApiState>,
    Query(query): Query<IncidentQuery>,
) -> Result<Response, ApiError> {
    let after = match query.after.as_deref() {
        Some(text) => Some(
            chorus_engine::hlc::Timestamp::parse(text)
                .ok_or_else(|| ApiError::bad("after: not a journal timestamp"))?,
        ),
        None => None,
    };
    let limit = query
        .limit
        .unwrap_or(INCIDENTS_PER_PAGE_MAX)
        .min(INCIDENTS_PER_PAGE_MAX);
    let entries = call(&state, move |e| e.incidents(after, limit)).await?;
    Ok(axum::Json(entries).into_response())
}

async fn cluster(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let view = call(&state, |e| e.cluster_view()?.ok_or_else(no_network)).await?;
    Ok(axum::Json(view).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrillBody {
    peers: Vec<String>,
}

#[derive(Serialize)]
struct DrillResult {
    cut: Vec<String>,
}

fn drills_enabled(state: &ApiState) -> Result<(), ApiError> {
    if state.drills {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "drills_disabled",
            "drills are disabled (set drills = true in the config)",
        ))
    }
}

async fn drill_partition(
    State(state): State<ApiState>,
    Json(body): Json<DrillBody>,
) -> Result<Response, ApiError> {
    drills_enabled(&state)?;
    let peers = body
        .peers
        .iter()
        .map(|p| {
            p.parse::<libp2p::PeerId>()
                .map_err(|e| ApiError::bad(format!("peers: {p:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cut = call(&state, move |e| e.drill(Some(peers))).await?;
    Ok(axum::Json(DrillResult {
        cut: cut.iter().map(|p| p.to_base58()).collect(),
    })
    .into_response())
}

async fn drill_heal(State(state): State<ApiState>) -> Result<Response, ApiError> {
    drills_enabled(&state)?;
    let cut = call(&state, |e| e.drill(None)).await?;
    Ok(axum::Json(DrillResult {
        cut: cut.iter().map(|p| p.to_base58()).collect(),
    })
    .into_response())
}
