//! The rooms part of the API: rooms, participants, resume, and the raw
//! automerge document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use chorus_engine::model::{JoinRequest, Owner, RoomConfig, RoomSnapshot, RoomSummary, WriteAck};
use chorus_engine::resume::Resumed;
use chorus_engine::{ConfigUpdate, RoomId, RoomOp, SessionId, TenantId};

use super::doc::Failures;
use super::{call, room_id, ApiError, ApiState, Body, Json, Path};

/// The routes (all behind the API token, when one is set).
pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_rooms))
        .routes(routes!(upsert_room, get_room, end_room))
        .routes(routes!(join))
        .routes(routes!(batch))
        .routes(routes!(leave))
        .routes(routes!(set_owner))
        .routes(routes!(resume))
        .routes(routes!(export_room, import_room))
}

#[utoipa::path(get, path = "/v1/rooms", tag = "rooms",
    responses((status = 200, description = "Every room this replica holds", body = [RoomSummary]), Failures),
    security(("token" = [])))]
async fn list_rooms(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let rooms = call(&state, |e| e.list_rooms()).await?;
    Ok(axum::Json(rooms).into_response())
}

/// `PUT /v1/rooms/{room}`: every field optional; a new room takes the
/// defaults for the ones left out, an existing one keeps them.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoomBody {
    tenant: Option<String>,
    max_participants: Option<u32>,
    preferred_region: Option<String>,
    recording: Option<bool>,
    #[serde(default)]
    attributes: std::collections::BTreeMap<String, String>,
}

#[utoipa::path(put, path = "/v1/rooms/{room}", tag = "rooms", params(("room" = String, Path, description = "The room id")),
    request_body(content = Option<RoomBody>, description = "Optional: an empty body creates the room with defaults"),
    responses((status = 200, description = "Created or updated, durable", body = WriteAck), Failures),
    security(("token" = [])))]
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

#[utoipa::path(get, path = "/v1/rooms/{room}", tag = "rooms", params(("room" = String, Path, description = "The room id")),
    responses((status = 200, description = "The room as read here after every conflict rule", body = RoomSnapshot), Failures),
    security(("token" = [])))]
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

#[utoipa::path(delete, path = "/v1/rooms/{room}", tag = "rooms", params(("room" = String, Path, description = "The room id")),
    responses((status = 200, description = "Ended, durable", body = WriteAck), Failures),
    security(("token" = [])))]
async fn end_room(
    State(state): State<ApiState>,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    write(&state, room_id(&room)?, RoomOp::End).await
}

#[utoipa::path(post, path = "/v1/rooms/{room}/participants", tag = "rooms", params(("room" = String, Path, description = "The room id")),
    request_body = JoinRequest,
    responses((status = 200, description = "Joined, durable", body = WriteAck), Failures),
    security(("token" = [])))]
async fn join(
    State(state): State<ApiState>,
    Path(room): Path<String>,
    Json(request): Json<JoinRequest>,
) -> Result<Response, ApiError> {
    write(&state, room_id(&room)?, RoomOp::Join { request }).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchBody {
    ops: Vec<RoomOp>,
}

/// Several operations as one transaction (`RoomOp::Batch`): every room
/// operation but `create`, including the ones with no route of their own
/// (session state, tracks, permissions, config).
#[utoipa::path(post, path = "/v1/rooms/{room}/batch", tag = "rooms", params(("room" = String, Path, description = "The room id")),
    request_body = BatchBody,
    responses((status = 200, description = "Every operation applied as one change, durable", body = WriteAck), Failures),
    security(("token" = [])))]
async fn batch(
    State(state): State<ApiState>,
    Path(room): Path<String>,
    Json(body): Json<BatchBody>,
) -> Result<Response, ApiError> {
    write(&state, room_id(&room)?, RoomOp::Batch { ops: body.ops }).await
}

#[utoipa::path(delete, path = "/v1/rooms/{room}/participants/{session}", tag = "rooms", params(("room" = String, Path, description = "The room id"), ("session" = String, Path, description = "The session id")),
    responses((status = 200, description = "Left, durable", body = WriteAck), Failures),
    security(("token" = [])))]
async fn leave(
    State(state): State<ApiState>,
    Path((room, session)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let session = SessionId::parse(session).map_err(|e| ApiError::bad(format!("session: {e}")))?;
    write(&state, room_id(&room)?, RoomOp::Leave { session }).await
}

#[utoipa::path(put, path = "/v1/rooms/{room}/participants/{session}/owner", tag = "rooms", params(("room" = String, Path, description = "The room id"), ("session" = String, Path, description = "The session id")),
    request_body = Owner,
    responses((status = 200, description = "Moved, durable", body = WriteAck), Failures),
    security(("token" = [])))]
async fn set_owner(
    State(state): State<ApiState>,
    Path((room, session)): Path<(String, String)>,
    Json(owner): Json<Owner>,
) -> Result<Response, ApiError> {
    let session = SessionId::parse(session).map_err(|e| ApiError::bad(format!("session: {e}")))?;
    write(&state, room_id(&room)?, RoomOp::SetOwner { session, owner }).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResumeBody {
    token: String,
}

/// A client resuming on this replica: its token is checked against the
/// replicated hash; the answer is the call's current owner and state.
#[utoipa::path(post, path = "/v1/rooms/{room}/participants/{session}/resume", tag = "rooms", params(("room" = String, Path, description = "The room id"), ("session" = String, Path, description = "The session id")),
    request_body = ResumeBody,
    responses((status = 200, description = "Where the call lives now", body = Resumed), Failures),
    security(("token" = [])))]
async fn resume(
    State(state): State<ApiState>,
    Path((room, session)): Path<(String, String)>,
    Json(body): Json<ResumeBody>,
) -> Result<Response, ApiError> {
    let room = room_id(&room)?;
    let session = SessionId::parse(session).map_err(|e| ApiError::bad(format!("session: {e}")))?;
    let resumed = call(&state, move |e| e.resume(&room, &session, &body.token)).await?;
    Ok(axum::Json(resumed).into_response())
}

#[utoipa::path(get, path = "/v1/rooms/{room}/automerge", tag = "rooms", params(("room" = String, Path, description = "The room id")),
    responses((status = 200, description = "The room's whole automerge document", content_type = "application/octet-stream", body = Vec<u8>), Failures),
    security(("token" = [])))]
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

#[utoipa::path(post, path = "/v1/rooms/{room}/automerge", tag = "rooms", params(("room" = String, Path, description = "The room id")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "Automerge changes or a saved document"),
    responses((status = 200, description = "Merged, validated and durable", body = WriteAck), Failures),
    security(("token" = [])))]
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
