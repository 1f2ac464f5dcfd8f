//! The node's lifecycle in the API: readiness for orchestrators, and a
//! planned departure (`docs/failover.md`, "Planned restarts").

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use chorus_engine::Intent;

use super::doc::{Failures, PublicFailures};
use super::{call, no_network, ApiError, ApiState};

#[derive(Serialize, ToSchema)]
pub(crate) struct Ready {
    status: &'static str,
    connected_peers: usize,
    sees_majority: bool,
}

/// `GET /v1/ready`: 200 once the replica answers (its store is open) and
/// sees a majority of the cluster (it may then fail calls over), else 503
/// with the reason. `/v1/health` stays liveness only.
#[utoipa::path(get, path = "/v1/ready", tag = "lifecycle",
    responses((status = 200, description = "Ready: the store is open and a majority is seen", body = Ready), PublicFailures))]
pub(super) async fn ready(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let (view, nodes) = call(&state, |e| {
        Ok((e.cluster_view()?.ok_or_else(no_network)?, e.nodes_view()?))
    })
    .await?;
    let connected_peers = view.peers.iter().filter(|p| p.connected).count();
    if !nodes.majority {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!(
                "this replica does not see a majority of the cluster \
                 ({connected_peers} peers connected)"
            ),
        ));
    }
    Ok(axum::Json(Ready {
        status: "ready",
        connected_peers,
        sees_majority: true,
    })
    .into_response())
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaveBody {
    intent: Option<Intent>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Leaving {
    status: &'static str,
    intent: Intent,
}

/// `POST /v1/leave`: the daemon tells its peers it is leaving (a restart:
/// they hold its calls; a stop: they take them now), then exits. 202: the
/// departure has started; the process ends once peers acknowledged (at
/// most a second).
#[utoipa::path(post, path = "/v1/leave", tag = "lifecycle",
    request_body(content = Option<LeaveBody>, description = "Optional: the configured `shutdown_intent` if absent"),
    responses((status = 202, description = "The departure has started", body = Leaving), Failures),
    security(("token" = [])))]
pub(super) async fn leave_cluster(
    State(state): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // The body is optional: none (or `{}`) announces the configured intent.
    let body: LeaveBody = if body.iter().all(u8::is_ascii_whitespace) {
        LeaveBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad(format!(
                "body: {e} (expected {{\"intent\": \"restart\" | \"stop\"}})"
            ))
        })?
    };
    let intent = body.intent.unwrap_or(state.shutdown_intent);
    let tx = state.leave.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "unsupported",
            "this server cannot leave on request",
        )
    })?;
    if state
        .leaving
        .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_leaving",
            "a departure is already under way",
        ));
    }
    match tx.try_send(intent) {
        Ok(()) => {}
        Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_leaving",
                "a departure is already under way",
            ))
        }
        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "unsupported",
                "this server cannot leave on request",
            ))
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Leaving {
            status: "leaving",
            intent,
        }),
    )
        .into_response())
}
