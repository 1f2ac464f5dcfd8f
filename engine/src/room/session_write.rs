//! Writes that touch one call session.

use automerge::transaction::{Transactable, Transaction};
use automerge::{ObjType, ReadDoc, ScalarValue};

use super::read::{self, RootObjs};
use super::schema as s;
use super::write::{invalid, live_session, WriteCtx};
use crate::error::Error;
use crate::events::ChangeKind;
use crate::ids::{SessionId, TrackId};
use crate::limits::{EPOCH_MAX, EPOCH_STEP_MAX};
use crate::model::{resume_token_hash, JoinRequest, Owner, Role, SessionState, Track};

pub fn join(
    tx: &mut Transaction<'_>,
    objs: &RootObjs,
    ctx: &WriteCtx<'_>,
    req: &JoinRequest,
    live_sessions: usize,
) -> Result<Vec<ChangeKind>, Error> {
    let room = ctx.room;
    // An id compacted away stays taken, like one still in the document.
    if tx.get(&objs.sessions, req.session.as_str())?.is_some()
        || super::departed::remembers(tx, &req.session)
    {
        return Err(Error::DuplicateSession {
            room: room.clone(),
            session: req.session.clone(),
        });
    }
    let max = read::lww(tx, &objs.config, s::MAX_PARTICIPANTS).map_or(
        crate::model::RoomConfig::default().max_participants,
        |(_, v): (_, u32)| v,
    );
    if live_sessions >= max as usize {
        return Err(Error::OverCapacity {
            room: room.clone(),
            max,
        });
    }
    // The session map and its tracks map are created here, once, by the
    // joining replica: session ids are unique per join, so no other replica
    // creates the same maps concurrently.
    let obj = tx.put_object(&objs.sessions, req.session.as_str(), ObjType::Map)?;
    tx.put(&obj, s::USER, req.user.as_str())?;
    tx.put(&obj, s::ROLE, role_name(req.role))?;
    tx.put(&obj, s::REGION, req.region.as_str())?;
    tx.put(&obj, s::JOINED_AT, ScalarValue::Uint(ctx.now_ms))?;
    if let Some(token) = &req.resume_token {
        tx.put(&obj, s::RESUME_HASH, resume_token_hash(token))?;
    }
    let owner = Owner {
        epoch: 1,
        node: req.owner.clone(),
    };
    tx.put(&obj, s::OWNER, s::encode_owner(&owner))?;
    tx.put(
        &obj,
        s::STATE,
        s::encode_stamped(ctx.stamp, &SessionState::Connecting),
    )?;
    tx.put_object(&obj, s::TRACKS, ObjType::Map)?;
    // Reported below: `touched::counted_by` counts it from that.
    tx.increment(&objs.counters, s::JOINS, 1)?;
    Ok(vec![ChangeKind::Joined {
        session: req.session.clone(),
        owner,
    }])
}

pub fn set_state(
    tx: &mut Transaction<'_>,
    objs: &RootObjs,
    ctx: &WriteCtx<'_>,
    session: &SessionId,
    state: SessionState,
) -> Result<Vec<ChangeKind>, Error> {
    let obj = live_session(tx, objs, ctx.room, session)?;
    tx.put(&obj, s::STATE, s::encode_stamped(ctx.stamp, &state))?;
    let session = session.clone();
    if state == SessionState::Left {
        // Reported below: `touched::counted_by` counts it from that.
        tx.increment(&objs.counters, s::LEAVES, 1)?;
        return Ok(vec![ChangeKind::Left { session }]);
    }
    Ok(vec![ChangeKind::StateChanged { session, state }])
}

pub fn publish(
    tx: &mut Transaction<'_>,
    objs: &RootObjs,
    ctx: &WriteCtx<'_>,
    session: &SessionId,
    track_id: &TrackId,
    track: &Track,
    tracks_max: usize,
) -> Result<Vec<ChangeKind>, Error> {
    let obj = live_session(tx, objs, ctx.room, session)?;
    let info = read::session(tx, &obj).ok_or_else(|| Error::Corrupt {
        room: ctx.room.clone(),
        reason: format!("session {session}"),
    })?;
    let permission = read::removable(tx, &objs.permissions, info.user.as_str())
        .map_or_else(|| info.role.default_permission(), |(_, p)| p);
    if !permission.publish {
        return Err(Error::NotPermitted {
            room: ctx.room.clone(),
            user: info.user,
        });
    }
    let tracks = read::map_obj(tx, &obj, s::TRACKS).ok_or_else(|| Error::Corrupt {
        room: ctx.room.clone(),
        reason: format!("session {session} tracks"),
    })?;
    let exists = read::removable::<_, serde_json::Value>(tx, &tracks, track_id.as_str()).is_some();
    if !exists && read::present_keys(tx, &tracks) >= tracks_max {
        return Err(invalid(
            "tracks",
            format!("at most {tracks_max} per session"),
        ));
    }
    tx.put(
        &tracks,
        track_id.as_str(),
        s::encode_stamped(ctx.stamp, track),
    )?;
    Ok(vec![ChangeKind::TrackPublished {
        session: session.clone(),
        track: track_id.clone(),
    }])
}

pub fn unpublish(
    tx: &mut Transaction<'_>,
    objs: &RootObjs,
    ctx: &WriteCtx<'_>,
    session: &SessionId,
    track_id: &TrackId,
) -> Result<Vec<ChangeKind>, Error> {
    let obj = live_session(tx, objs, ctx.room, session)?;
    let tracks = read::map_obj(tx, &obj, s::TRACKS);
    let Some(tracks) = tracks
        .filter(|t| read::removable::<_, serde_json::Value>(tx, t, track_id.as_str()).is_some())
    else {
        return Err(Error::UnknownTrack {
            session: session.clone(),
            track: track_id.clone(),
        });
    };
    super::write::remove(tx, &tracks, track_id.as_str(), ctx)?;
    Ok(vec![ChangeKind::TrackUnpublished {
        session: session.clone(),
        track: track_id.clone(),
    }])
}

pub fn set_owner(
    tx: &mut Transaction<'_>,
    objs: &RootObjs,
    ctx: &WriteCtx<'_>,
    session: &SessionId,
    owner: &Owner,
) -> Result<Vec<ChangeKind>, Error> {
    if owner.epoch == 0 || owner.epoch > EPOCH_MAX {
        return Err(invalid(
            "epoch",
            format!("must be 1..={EPOCH_MAX} (one more than the current owner's)"),
        ));
    }
    let obj = live_session(tx, objs, ctx.room, session)?;
    let current = read::owner(tx, &obj);
    let previous = current.as_ref().map(|c| c.node.clone());
    if let Some(current) = current {
        if *owner <= current {
            return Err(Error::StaleOwner {
                current,
                given: owner.clone(),
            });
        }
        if owner.epoch > current.epoch.saturating_add(EPOCH_STEP_MAX) {
            return Err(invalid(
                "epoch",
                format!(
                    "at most {EPOCH_STEP_MAX} past the current epoch {}",
                    current.epoch
                ),
            ));
        }
    }
    tx.put(&obj, s::OWNER, s::encode_owner(owner))?;
    // Reported below: `touched::counted_by` counts it from that.
    tx.increment(&objs.counters, s::OWNER_CHANGES, 1)?;
    Ok(vec![ChangeKind::OwnerChanged {
        session: session.clone(),
        owner: owner.clone(),
        previous,
    }])
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Host => "host",
        Role::Speaker => "speaker",
        Role::Audience => "audience",
    }
}
