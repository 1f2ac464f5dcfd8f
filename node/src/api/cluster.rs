//! The cluster part of the API: this replica's view of its peers, the
//! incident journal, and drills.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use chorus_engine::net::ClusterView;
use chorus_engine::replica::Incident;

use super::doc::Failures;
use super::{call, no_network, ApiError, ApiState, Json, Query};
use crate::limits::INCIDENTS_PER_PAGE_MAX;

/// The routes (all behind the API token, when one is set).
pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(incidents))
        .routes(routes!(cluster))
        .routes(routes!(drill_partition))
        .routes(routes!(drill_heal))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct IncidentQuery {
    /// The `at` of the last entry already seen.
    after: Option<String>,
    limit: Option<usize>,
}

/// The incident journal, oldest first; page with `after`.
#[utoipa::path(get, path = "/v1/incidents", tag = "cluster", params(IncidentQuery),
    responses((status = 200, description = "Journal entries, oldest first", body = [Incident]), Failures),
    security(("token" = [])))]
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

#[utoipa::path(get, path = "/v1/cluster", tag = "cluster",
    responses((status = 200, description = "This replica and its peers", body = ClusterView), Failures),
    security(("token" = [])))]
async fn cluster(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let view = call(&state, |e| e.cluster_view()?.ok_or_else(no_network)).await?;
    Ok(axum::Json(view).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DrillBody {
    peers: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct DrillResult {
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

#[utoipa::path(post, path = "/v1/drill/partition", tag = "cluster",
    request_body = DrillBody,
    responses((status = 200, description = "The peers now cut off (403 unless `drills = true`)", body = DrillResult), Failures),
    security(("token" = [])))]
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

#[utoipa::path(post, path = "/v1/drill/heal", tag = "cluster",
    responses((status = 200, description = "Every cut healed; `cut` is empty (403 unless `drills = true`)", body = DrillResult), Failures),
    security(("token" = [])))]
async fn drill_heal(State(state): State<ApiState>) -> Result<Response, ApiError> {
    drills_enabled(&state)?;
    let cut = call(&state, |e| e.drill(None)).await?;
    Ok(axum::Json(DrillResult {
        cut: cut.iter().map(|p| p.to_base58()).collect(),
    })
    .into_response())
}
