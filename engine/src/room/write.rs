//! Applying a [`RoomOp`] inside one automerge transaction. Validation reads
//! the transaction's own view, so a refused op leaves no trace (the
//! transaction rolls back).

use automerge::transaction::{Transactable, Transaction};
use automerge::{ObjId, ObjType, ScalarValue, ROOT};

use super::op::RoomOp;
use super::read::{self, RootObjs};
use super::schema as s;
use crate::error::Error;
use crate::events::ChangeKind;
use crate::hlc::Timestamp;
use crate::ids::{validate_id, RoomId, SessionId};
use crate::limits::{
    ATTRS_PER_ROOM_MAX, ATTR_VALUE_BYTES_MAX, BATCH_OPS_MAX, PARTICIPANTS_PER_ROOM_MAX,
    PERMISSIONS_PER_ROOM_MAX, SIMULCAST_LAYERS_MAX, TRACKS_PER_SESSION_MAX,
};
use crate::model::{ConfigUpdate, Lifecycle, SessionState};

/// Writes the skeleton every room starts with. Run by the genesis actor with
/// commit time 0, it produces a byte-identical change on every replica.
pub fn genesis(tx: &mut Transaction<'_>, room: &RoomId) -> Result<(), Error> {
    tx.put(
        ROOT,
        s::SCHEMA,
        ScalarValue::Uint(crate::model::SCHEMA_VERSION),
    )?;
    tx.put(ROOT, s::ROOM_ID, room.as_str())?;
    tx.put_object(ROOT, s::META, ObjType::Map)?;
    let config = tx.put_object(ROOT, s::CONFIG, ObjType::Map)?;
    tx.put_object(&config, s::ATTRS, ObjType::Map)?;
    tx.put_object(ROOT, s::PERMISSIONS, ObjType::Map)?;
    tx.put_object(ROOT, s::SESSIONS, ObjType::Map)?;
    let counters = tx.put_object(ROOT, s::COUNTERS, ObjType::Map)?;
    for key in s::COUNTER_KEYS {
        tx.put(&counters, key, ScalarValue::counter(0))?;
    }
    Ok(())
}

/// Removes `key` from a map of removable fields (attributes, permissions,
/// tracks): a stamped `null` when `ctx` says every replica reads one (and
/// only over a value, not over nothing or another removal), else
/// automerge's delete.
pub(super) fn remove(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    ctx: &WriteCtx<'_>,
) -> Result<(), Error> {
    if !ctx.stamped_removals {
        tx.delete(obj, key)?;
    } else if read::removable::<_, serde_json::Value>(tx, obj, key).is_some() {
        tx.put(obj, key, s::encode_removed(ctx.stamp))?;
    }
    Ok(())
}

/// Context of one local write.
pub struct WriteCtx<'a> {
    pub room: &'a RoomId,
    pub stamp: Timestamp,
    pub now_ms: u64,
    /// Removals are written as stamped `null`s (`schema::encode_removed`)
    /// rather than automerge deletes: only once every replica reads them
    /// (the replica's version gate), since an older build refuses them.
    pub stamped_removals: bool,
}

/// Applies `op` (anything but `Create`'s genesis) and says what changed.
pub fn apply(
    tx: &mut Transaction<'_>,
    objs: &RootObjs,
    ctx: &WriteCtx<'_>,
    op: &RoomOp,
    live_sessions: usize,
) -> Result<Vec<ChangeKind>, Error> {
    let is_create = matches!(op, RoomOp::Create { .. });
    if !is_create && read::lifecycle(tx, &objs.meta) == Lifecycle::Ended {
        return Err(Error::RoomEnded(ctx.room.clone()));
    }
    match op {
        RoomOp::Batch { ops } => batch(tx, objs, ctx, ops, live_sessions),
        RoomOp::Create { tenant, config } => create(tx, objs, ctx, tenant, config),
        RoomOp::UpdateConfig { update } => {
            update_config(tx, objs, ctx, update)?;
            Ok(vec![ChangeKind::ConfigUpdated])
        }
        RoomOp::SetPermission { user, permission } => {
            set_permission(tx, objs, ctx, user, permission)
        }
        RoomOp::RemovePermission { user } => {
            remove(tx, &objs.permissions, user.as_str(), ctx)?;
            Ok(vec![ChangeKind::PermissionRemoved { user: user.clone() }])
        }
        RoomOp::Join { request } => {
            super::session_write::join(tx, objs, ctx, request, live_sessions)
        }
        RoomOp::SetState { session, state } => {
            super::session_write::set_state(tx, objs, ctx, session, *state)
        }
        RoomOp::Leave { session } => {
            super::session_write::set_state(tx, objs, ctx, session, SessionState::Left)
        }
        RoomOp::Publish {
            session,
            track_id,
            track,
        } => {
            if track.simulcast_layers == 0 || track.simulcast_layers > SIMULCAST_LAYERS_MAX {
                return Err(invalid(
                    "simulcast_layers",
                    format!("must be 1..={SIMULCAST_LAYERS_MAX}"),
                ));
            }
            super::session_write::publish(
                tx,
                objs,
                ctx,
                session,
                track_id,
                track,
                TRACKS_PER_SESSION_MAX,
            )
        }
        RoomOp::Unpublish { session, track_id } => {
            super::session_write::unpublish(tx, objs, ctx, session, track_id)
        }
        RoomOp::SetOwner { session, owner } => {
            super::session_write::set_owner(tx, objs, ctx, session, owner)
        }
        RoomOp::RequestCompaction { request } => {
            tx.put(
                &objs.meta,
                s::COMPACT,
                s::encode_stamped(ctx.stamp, request),
            )?;
            Ok(Vec::new())
        }
        RoomOp::End => {
            tx.put(
                &objs.meta,
                s::ENDED,
                s::encode_stamped(ctx.stamp, &ctx.now_ms),
            )?;
            Ok(vec![ChangeKind::RoomEnded])
        }
    }
}

fn create(
    tx: &mut Transaction<'_>,
    objs: &RootObjs,
    ctx: &WriteCtx<'_>,
    tenant: &crate::ids::TenantId,
    config: &crate::model::RoomConfig,
) -> Result<Vec<ChangeKind>, Error> {
    tx.put(&objs.meta, s::TENANT, s::encode_stamped(ctx.stamp, tenant))?;
    tx.put(
        &objs.meta,
        s::CREATED_AT,
        s::encode_stamped(ctx.stamp, &ctx.now_ms),
    )?;
    let update = ConfigUpdate {
        max_participants: Some(config.max_participants),
        preferred_region: Some(config.preferred_region.clone()),
        recording: Some(config.recording),
        set_attributes: config.attributes.clone(),
        remove_attributes: Vec::new(),
    };
    update_config(tx, objs, ctx, &update)?;
    Ok(vec![ChangeKind::RoomCreated])
}

fn set_permission(
    tx: &mut Transaction<'_>,
    objs: &RootObjs,
    ctx: &WriteCtx<'_>,
    user: &crate::ids::UserId,
    permission: &crate::model::Permission,
) -> Result<Vec<ChangeKind>, Error> {
    let exists =
        read::removable::<_, serde_json::Value>(tx, &objs.permissions, user.as_str()).is_some();
    if !exists && read::present_keys(tx, &objs.permissions) >= PERMISSIONS_PER_ROOM_MAX {
        return Err(invalid(
            "permissions",
            format!("at most {PERMISSIONS_PER_ROOM_MAX} per room"),
        ));
    }
    tx.put(
        &objs.permissions,
        user.as_str(),
        s::encode_stamped(ctx.stamp, permission),
    )?;
    Ok(vec![ChangeKind::PermissionSet { user: user.clone() }])
}

fn update_config(
    tx: &mut Transaction<'_>,
    objs: &RootObjs,
    ctx: &WriteCtx<'_>,
    update: &ConfigUpdate,
) -> Result<(), Error> {
    if let Some(max) = update.max_participants {
        if max == 0 || max > PARTICIPANTS_PER_ROOM_MAX {
            return Err(invalid(
                "max_participants",
                format!("must be 1..={PARTICIPANTS_PER_ROOM_MAX}"),
            ));
        }
        tx.put(
            &objs.config,
            s::MAX_PARTICIPANTS,
            s::encode_stamped(ctx.stamp, &max),
        )?;
    }
    if let Some(region) = &update.preferred_region {
        tx.put(
            &objs.config,
            s::PREFERRED_REGION,
            s::encode_stamped(ctx.stamp, region),
        )?;
    }
    if let Some(recording) = update.recording {
        tx.put(
            &objs.config,
            s::RECORDING,
            s::encode_stamped(ctx.stamp, &recording),
        )?;
    }
    for key in &update.remove_attributes {
        remove(tx, &objs.attrs, key.as_str(), ctx)?;
    }
    for (key, value) in &update.set_attributes {
        validate_id("attribute", key)?;
        if value.len() > ATTR_VALUE_BYTES_MAX {
            return Err(invalid(
                "attribute value",
                format!("at most {ATTR_VALUE_BYTES_MAX} bytes"),
            ));
        }
        tx.put(
            &objs.attrs,
            key.as_str(),
            s::encode_stamped(ctx.stamp, value),
        )?;
    }
    if read::present_keys(tx, &objs.attrs) > ATTRS_PER_ROOM_MAX {
        return Err(invalid(
            "attributes",
            format!("at most {ATTRS_PER_ROOM_MAX} per room"),
        ));
    }
    Ok(())
}

/// A batch's operations in one transaction: the first refused refuses the
/// batch, and the transaction rolls back.
fn batch(
    tx: &mut Transaction<'_>,
    objs: &RootObjs,
    ctx: &WriteCtx<'_>,
    ops: &[RoomOp],
    mut live_sessions: usize,
) -> Result<Vec<ChangeKind>, Error> {
    if ops.is_empty() || ops.len() > BATCH_OPS_MAX {
        return Err(invalid(
            "ops",
            format!("a batch holds 1..={BATCH_OPS_MAX} operations"),
        ));
    }
    let mut kinds = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if matches!(
            op,
            RoomOp::Create { .. } | RoomOp::Batch { .. } | RoomOp::RequestCompaction { .. }
        ) {
            return Err(invalid(
                "ops",
                format!("operation {i}: a batch cannot create a room or hold a batch"),
            ));
        }
        kinds.extend(apply(tx, objs, ctx, op, live_sessions)?);
        // What the capacity check of a later join counts, as the cached
        // reading would after each op (a refused op refused the batch).
        match op {
            RoomOp::Join { .. } => live_sessions += 1,
            RoomOp::Leave { .. }
            | RoomOp::SetState {
                state: SessionState::Left,
                ..
            } => live_sessions = live_sessions.saturating_sub(1),
            _ => {}
        }
    }
    Ok(kinds)
}

pub fn invalid(field: &'static str, reason: String) -> Error {
    Error::Invalid { field, reason }
}

/// The session map of `session`, refusing unknown and left sessions.
pub fn live_session(
    tx: &Transaction<'_>,
    objs: &RootObjs,
    room: &RoomId,
    session: &SessionId,
) -> Result<ObjId, Error> {
    let Some(obj) = read::map_obj(tx, &objs.sessions, session.as_str()) else {
        // A session compacted away is refused as the left session it was.
        let (room, session) = (room.clone(), session.clone());
        return Err(if super::departed::remembers(tx, &session) {
            Error::SessionLeft { room, session }
        } else {
            Error::UnknownSession { room, session }
        });
    };
    if read::session_state(tx, &obj) == Some(SessionState::Left) {
        return Err(Error::SessionLeft {
            room: room.clone(),
            session: session.clone(),
        });
    }
    Ok(obj)
}
