//! One route per write the library has on a room's fields: a session's
//! state and tracks, permissions, attributes. Each is the same `RoomOp`
//! the batch route takes, for clients that write one thing at a time.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use chorus_engine::model::{Permission, SessionState, Track, WriteAck};
use chorus_engine::{ConfigUpdate, RoomOp, SessionId, TrackId, UserId};

use super::doc::Failures;
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StateBody {
    state: SessionState,
}

/// `PUT /v1/rooms/{room}/participants/{session}/state`: `{"state": "active"}`.
/// Leaving is `DELETE` on the participant, not a state set here.
#[utoipa::path(put, path = "/v1/rooms/{room}/participants/{session}/state", tag = "rooms", params(("room" = String, Path, description = "The room id"), ("session" = String, Path, description = "The session id")),
    request_body = StateBody,
    responses((status = 200, description = "Set, durable", body = WriteAck), Failures),
    security(("token" = [])))]
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
#[utoipa::path(put, path = "/v1/rooms/{room}/participants/{session}/tracks/{track}", tag = "rooms", params(("room" = String, Path, description = "The room id"), ("session" = String, Path, description = "The session id"), ("track" = String, Path, description = "The track id")),
    request_body = Track,
    responses((status = 200, description = "Published, durable", body = WriteAck), Failures),
    security(("token" = [])))]
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
#[utoipa::path(delete, path = "/v1/rooms/{room}/participants/{session}/tracks/{track}", tag = "rooms", params(("room" = String, Path, description = "The room id"), ("session" = String, Path, description = "The session id"), ("track" = String, Path, description = "The track id")),
    responses((status = 200, description = "Unpublished, durable", body = WriteAck), Failures),
    security(("token" = [])))]
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
#[utoipa::path(put, path = "/v1/rooms/{room}/permissions/{user}", tag = "rooms", params(("room" = String, Path, description = "The room id"), ("user" = String, Path, description = "The user id")),
    request_body = Permission,
    responses((status = 200, description = "Set, durable", body = WriteAck), Failures),
    security(("token" = [])))]
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
#[utoipa::path(delete, path = "/v1/rooms/{room}/permissions/{user}", tag = "rooms", params(("room" = String, Path, description = "The room id"), ("user" = String, Path, description = "The user id")),
    responses((status = 200, description = "Removed, durable", body = WriteAck), Failures),
    security(("token" = [])))]
async fn remove_permission(
    State(state): State<ApiState>,
    Path((room, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let op = RoomOp::RemovePermission {
        user: user_id(user)?,
    };
    write(&state, room_id(&room)?, op).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttributeBody {
    value: String,
}

/// `PUT /v1/rooms/{room}/attributes/{key}`: `{"value": "..."}`.
#[utoipa::path(put, path = "/v1/rooms/{room}/attributes/{key}", tag = "rooms", params(("room" = String, Path, description = "The room id"), ("key" = String, Path, description = "The attribute key")),
    request_body = AttributeBody,
    responses((status = 200, description = "Set, durable", body = WriteAck), Failures),
    security(("token" = [])))]
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
#[utoipa::path(delete, path = "/v1/rooms/{room}/attributes/{key}", tag = "rooms", params(("room" = String, Path, description = "The room id"), ("key" = String, Path, description = "The attribute key")),
    responses((status = 200, description = "Removed, durable", body = WriteAck), Failures),
    security(("token" = [])))]
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

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(set_state))
        .routes(routes!(publish, unpublish))
        .routes(routes!(set_permission, remove_permission))
        .routes(routes!(set_attribute, remove_attribute))
}
