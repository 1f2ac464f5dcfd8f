//! Change events for subscribers, and how they are derived for remote merges.

use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, RoomId, SessionId, TrackId, UserId};
use crate::model::{Lifecycle, Owner, RoomSnapshot, SessionState};

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Local,
    Remote,
}

/// What changed in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChangeKind {
    RoomCreated,
    ConfigUpdated,
    PermissionSet {
        user: UserId,
    },
    PermissionRemoved {
        user: UserId,
    },
    Joined {
        session: SessionId,
        /// Who hosts the call when this replica first saw it.
        owner: Owner,
    },
    StateChanged {
        session: SessionId,
        state: SessionState,
    },
    Left {
        session: SessionId,
    },
    TrackPublished {
        session: SessionId,
        track: TrackId,
    },
    TrackUnpublished {
        session: SessionId,
        track: TrackId,
    },
    OwnerChanged {
        session: SessionId,
        owner: Owner,
        /// The owner this replica saw before the change (`None`: none).
        previous: Option<NodeId>,
    },
    RoomEnded,
}

/// One event on the change stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    pub room: RoomId,
    pub origin: Origin,
    pub changes: Vec<ChangeKind>,
}

/// The changes between two readings of a room (`before` is `None` for a room
/// first seen). Used for remote merges, whose content the engine did not
/// choose; local writes know what they did.
pub fn diff(before: Option<&RoomSnapshot>, after: &RoomSnapshot) -> Vec<ChangeKind> {
    let mut out = Vec::new();
    let empty;
    let before = match before {
        Some(before) => before,
        None => {
            // A room first seen: created, plus whatever it already holds.
            out.push(ChangeKind::RoomCreated);
            empty = RoomSnapshot {
                permissions: Default::default(),
                sessions: Default::default(),
                lifecycle: Lifecycle::Active,
                ..after.clone()
            };
            &empty
        }
    };
    if before.config != after.config || before.tenant != after.tenant {
        out.push(ChangeKind::ConfigUpdated);
    }
    diff_permissions(before, after, &mut out);
    diff_sessions(before, after, &mut out);
    if before.lifecycle != after.lifecycle && after.lifecycle == Lifecycle::Ended {
        out.push(ChangeKind::RoomEnded);
    }
    out
}

fn diff_permissions(before: &RoomSnapshot, after: &RoomSnapshot, out: &mut Vec<ChangeKind>) {
    for (user, perm) in &after.permissions {
        if before.permissions.get(user) != Some(perm) {
            out.push(ChangeKind::PermissionSet { user: user.clone() });
        }
    }
    for user in before.permissions.keys() {
        if !after.permissions.contains_key(user) {
            out.push(ChangeKind::PermissionRemoved { user: user.clone() });
        }
    }
}

fn diff_sessions(before: &RoomSnapshot, after: &RoomSnapshot, out: &mut Vec<ChangeKind>) {
    for (id, now) in &after.sessions {
        let session = id.clone();
        let Some(was) = before.sessions.get(id) else {
            out.push(ChangeKind::Joined {
                session: session.clone(),
                owner: now.owner.clone(),
            });
            if now.state == SessionState::Left {
                out.push(ChangeKind::Left { session });
            }
            continue;
        };
        if was.state != now.state {
            out.push(if now.state == SessionState::Left {
                ChangeKind::Left {
                    session: session.clone(),
                }
            } else {
                ChangeKind::StateChanged {
                    session: session.clone(),
                    state: now.state,
                }
            });
        }
        if was.owner != now.owner {
            out.push(ChangeKind::OwnerChanged {
                session: session.clone(),
                owner: now.owner.clone(),
                previous: Some(was.owner.node.clone()),
            });
        }
        for track in now.tracks.keys().filter(|t| !was.tracks.contains_key(*t)) {
            out.push(ChangeKind::TrackPublished {
                session: session.clone(),
                track: track.clone(),
            });
        }
        for track in was.tracks.keys().filter(|t| !now.tracks.contains_key(*t)) {
            out.push(ChangeKind::TrackUnpublished {
                session: session.clone(),
                track: track.clone(),
            });
        }
    }
}
