//! Client resume: a client that lost its media node presents its session
//! and resume token to any replica, which checks the token against the hash
//! in the replicated room and answers where the call lives now.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ids::{RegionId, RoomId, SessionId, TrackId};
use crate::model::{resume_token_hash, Lifecycle, Owner, SessionReading, SessionState, Track};

/// What a resuming client needs: who hosts its call and in what state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
    pub room: RoomId,
    pub session: SessionId,
    pub owner: Owner,
    pub region: RegionId,
    pub state: SessionState,
    pub tracks: std::collections::BTreeMap<TrackId, Track>,
}

/// Checks `token` for `session` in `room` (as read on this replica).
pub fn resume(
    room: &RoomId,
    reading: Option<&SessionReading>,
    session: &SessionId,
    token: &str,
) -> Result<Resumed, Error> {
    let reading = reading.ok_or_else(|| Error::UnknownRoom(room.clone()))?;
    let snapshot = &reading.room;
    let refuse = |reason: &'static str| Error::ResumeRefused {
        session: session.clone(),
        reason,
    };
    if snapshot.lifecycle == Lifecycle::Ended {
        return Err(Error::RoomEnded(room.clone()));
    }
    let has_left = "the session has left; join again with a new session";
    if reading.pruned {
        return Err(refuse(has_left));
    }
    let call = snapshot
        .sessions
        .get(session)
        .ok_or_else(|| Error::UnknownSession {
            room: room.clone(),
            session: session.clone(),
        })?;
    if call.state == SessionState::Left {
        return Err(refuse(has_left));
    }
    let Some(expected) = &call.resume_token_hash else {
        return Err(refuse("the session was joined without a resume token"));
    };
    if !constant_time_eq(expected.as_bytes(), resume_token_hash(token).as_bytes()) {
        return Err(refuse("wrong resume token"));
    }
    Ok(Resumed {
        room: room.clone(),
        session: session.clone(),
        owner: call.owner.clone(),
        region: call.region.clone(),
        state: call.state,
        tracks: call.tracks.clone(),
    })
}

/// Compares without an early exit: the hash of a secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
