//! One route per write the library has on a room's fields: a session's
//! state and tracks, permissions, attributes. Each is the same `RoomOp`
//! the batch route takes, for clients that write one thing at a time.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

use chorus_engine::model::{Permission, SessionState, Track};
use chorus_engine::{ConfigUpdate, RoomOp, SessionId, TrackId, UserId};

use super::{room_id, write, ApiError, ApiState, Json, Path};

fn session_id(text: String) -> Result<SessionId, ApiError> {
    SessionId::parse(text).map_err(|e| ApiError::bad(format!("session: {e}")))
}

fn track_id(text: String) -> Result<TrackId, ApiError> {
    TrackId::parse(text).map_err(|e| ApiError::bad(format!("track: {e}")))
}

fn user_id(text: String) -> Result<UserId, ApiError> {
    UserId::parse(text).map_err(|e| ApiError::bad(format!("user: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    state: SessionState,
}

/// `PUT /v1/rooms/{room}/participants/{session}/state`: `{"state": "active"}`.
/// Leaving is `DELETE` on the participant, not a state set here.
async fn set_state(
    State(state): State<ApiState>,
    Path((room, session)): Path<(String, String)>,
    Json(body): Json<StateBody>,
) -> Result<Response, ApiError> {
    if body.state == SessionState::Left {
        return Err(ApiError::bad(
            "state: \"left\" is not set here; leave with DELETE /v1/rooms/{room}/participants/{session}",
        ));
    }
    let op = RoomOp::SetState {
        session: session_id(session)?,
        state: body.state,
    };
    write(&state, room_id(&room)?, op).await
}

/// `PUT /v1/rooms/{room}/participants/{session}/tracks/{track}`: publish
/// (or change) a track, `{"kind": "video", "simulcast_layers": 3}`.
async fn publish(
    State(state): State<ApiState>,
    Path((room, session, track)): Path<(String, String, String)>,
    Json(body): Json<Track>,
) -> Result<Response, ApiError> {
    let op = RoomOp::Publish {
        session: session_id(session)?,
        track_id: track_id(track)?,
        track: body,
    };
    write(&state, room_id(&room)?, op).await
}

/// `DELETE /v1/rooms/{room}/participants/{session}/tracks/{track}`.
async fn unpublish(
    State(state): State<ApiState>,
    Path((room, session, track)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let op = RoomOp::Unpublish {
        session: session_id(session)?,
        track_id: track_id(track)?,
    };
    write(&state, room_id(&room)?, op).await
}

/// `PUT /v1/rooms/{room}/permissions/{user}`:
/// `{"role": "speaker", "publish": true, "subscribe": true}`.
async fn set_permission(
    State(state): State<ApiState>,
    Path((room, user)): Path<(String, String)>,
    Json(permission): Json<Permission>,
) -> Result<Response, ApiError> {
    let op = RoomOp::SetPermission {
        user: user_id(user)?,
        permission,
    };
    write(&state, room_id(&room)?, op).await
}

/// `DELETE /v1/rooms/{room}/permissions/{user}`: the role's default again.
async fn remove_permission(
    State(state): State<ApiState>,
    Path((room, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let op = RoomOp::RemovePermission {
        user: user_id(user)?,
    };
    write(&state, room_id(&room)?, op).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttributeBody {
    value: String,
}

/// `PUT /v1/rooms/{room}/attributes/{key}`: `{"value": "..."}`.
async fn set_attribute(
    State(state): State<ApiState>,
    Path((room, key)): Path<(String, String)>,
    Json(body): Json<AttributeBody>,
) -> Result<Response, ApiError> {
    let mut update = ConfigUpdate::default();
    update.set_attributes.insert(key, body.value);
    write(&state, room_id(&room)?, RoomOp::UpdateConfig { update }).await
}

/// `DELETE /v1/rooms/{room}/attributes/{key}`.
async fn remove_attribute(
    State(state): State<ApiState>,
    Path((room, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let update = ConfigUpdate {
        remove_attributes: vec![key],
        ..ConfigUpdate::default()
    };
    write(&state, room_id(&room)?, RoomOp::UpdateConfig { update }).await
}

pub fn routes() -> axum::Router<ApiState> {
    use axum::routing::put;
    axum::Router::new()
        .route(
            "/v1/rooms/{room}/participants/{session}/state",
            put(set_state),
        )
        .route(
            "/v1/rooms/{room}/participants/{session}/tracks/{track}",
            put(publish).delete(unpublish),
        )
        .route(
            "/v1/rooms/{room}/permissions/{user}",
            put(set_permission).delete(remove_permission),
        )
        .route(
            "/v1/rooms/{room}/attributes/{key}",
            put(set_attribute).delete(remove_attribute),
        )
}
