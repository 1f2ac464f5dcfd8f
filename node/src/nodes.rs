//! The failover part of the API: node grades, drains, this node's
//! application health, placement, read from and given to the engine.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use chorus_engine::membership::{AppHealth, DrainOrder};
use chorus_engine::replica::NodesView;
use chorus_engine::{NodeId, RegionId, RoomId, SessionId};

use crate::api::doc::Failures;
use crate::api::{call, ApiError, ApiState, Body, Json, Path, Query};

#[utoipa::path(get, path = "/v1/nodes", tag = "failover",
    responses((status = 200, description = "Grades, moves and drains as this replica sees them", body = NodesView), Failures),
    security(("token" = [])))]
async fn list(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let view = call(&state, |e| e.nodes_view()).await?;
    Ok(axum::Json(view).into_response())
}

fn node_id(text: &str) -> Result<NodeId, ApiError> {
    NodeId::parse(text).map_err(|e| ApiError::bad(format!("node: {e}")))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainBody {
    /// Calls per second; the configured `drain_rate_per_s` if absent.
    #[serde(default)]
    pub rate_per_s: Option<u32>,
}

#[utoipa::path(post, path = "/v1/nodes/{node}/drain", tag = "failover", params(("node" = String, Path, description = "The node id")),
    request_body(content = Option<DrainBody>, description = "Optional: the configured rate if absent"),
    responses((status = 202, description = "The drain order, spreading", body = Option<DrainOrder>), Failures),
    security(("token" = [])))]
async fn drain(
    State(state): State<ApiState>,
    Path(node): Path<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let node = node_id(&node)?;
    // The body is optional: no body drains at the configured rate.
    let body: DrainBody = if body.iter().all(u8::is_ascii_whitespace) {
        DrainBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("body: {e}")))?
    };
    let rate_per_s = body.rate_per_s;
    order(&state, node, rate_per_s, true).await
}

#[utoipa::path(delete, path = "/v1/nodes/{node}/drain", tag = "failover", params(("node" = String, Path, description = "The node id")),
    responses((status = 202, description = "The drain order, now inactive", body = Option<DrainOrder>), Failures),
    security(("token" = [])))]
async fn undrain(
    State(state): State<ApiState>,
    Path(node): Path<String>,
) -> Result<Response, ApiError> {
    order(&state, node_id(&node)?, None, false).await
}

async fn order(
    state: &ApiState,
    node: NodeId,
    rate_per_s: Option<u32>,
    active: bool,
) -> Result<Response, ApiError> {
    // A typo must not spread an order for a node nobody knows.
    let known = call(state, |e| e.nodes_view()).await?;
    if !known.nodes.iter().any(|n| n.node == node) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_node",
            format!("node {node} is not known to this replica (see GET /v1/nodes)"),
        ));
    }
    let target = node.clone();
    call(state, move |e| e.drain(&target, rate_per_s, active)).await?;
    // Commands run in order: this view includes the order just given.
    let view = call(state, |e| e.nodes_view()).await?;
    let order = view.drains.into_iter().find(|o| o.node == node);
    Ok((StatusCode::ACCEPTED, axum::Json(order)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthBody {
    /// Load relative to declared capacity (1.0 = at capacity).
    pub load: f64,
    /// Share of recent call setups that failed (0 to 1).
    #[serde(default)]
    pub setup_failure_rate: f64,
}

#[utoipa::path(post, path = "/v1/health/app", tag = "failover",
    request_body = HealthBody,
    responses((status = 204, description = "Taken; spreads with the next health report"), Failures),
    security(("token" = [])))]
async fn report_health(
    State(state): State<ApiState>,
    Json(body): Json<HealthBody>,
) -> Result<Response, ApiError> {
    let valid = |v: f64| v.is_finite() && v >= 0.0;
    if !valid(body.load) || !valid(body.setup_failure_rate) || body.setup_failure_rate > 1.0 {
        return Err(ApiError::bad(
            "load must be a finite number ≥ 0, setup_failure_rate between 0 and 1",
        ));
    }
    let app = AppHealth::from_ratios(body.load, body.setup_failure_rate);
    call(&state, move |e| e.report_health(app)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PlaceQuery {
    pub room: String,
    pub session: String,
    pub region: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Placement {
    node: Option<NodeId>,
}

#[utoipa::path(get, path = "/v1/placement", tag = "failover", params(PlaceQuery),
    responses((status = 200, description = "Where a new call should go (null: no candidate)", body = Placement), Failures),
    security(("token" = [])))]
async fn place(
    State(state): State<ApiState>,
    Query(q): Query<PlaceQuery>,
) -> Result<Response, ApiError> {
    let room = RoomId::parse(q.room).map_err(|e| ApiError::bad(format!("room: {e}")))?;
    let session =
        SessionId::parse(q.session).map_err(|e| ApiError::bad(format!("session: {e}")))?;
    let region = RegionId::parse(q.region).map_err(|e| ApiError::bad(format!("region: {e}")))?;
    let node = call(&state, move |e| {
        e.inspect(move |r, _| r.place(&room, &session, &region))
    })
    .await?;
    Ok(axum::Json(Placement { node }).into_response())
}

/// The routes (all behind the API token, when one is set).
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(drain, undrain))
        .routes(routes!(place))
        .routes(routes!(report_health))
}
