//! Events a media node acts on, derived from the replica's: calls that
//! became this node's, calls that moved away, grades, drain orders.

use std::collections::HashMap;

use serde::Serialize;

use crate::events::{ChangeEvent, ChangeKind};
use crate::ids::{NodeId, RoomId, SessionId};
use crate::membership::GradeChange;
use crate::replica::MoveKind;

/// Why a call became this node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AcquireReason {
    /// Its owner was convicted dead; this node re-homed it.
    Failover,
    /// Its owner is draining; this node took it over.
    Drain,
    /// A write (here or on another replica) named this node.
    Assigned,
}

/// Something a media node acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// Call `session` of `room` is now this node's, at `epoch`.
    Acquired {
        room: RoomId,
        session: SessionId,
        epoch: u64,
        /// The owner before (`None`: the call had none).
        from: Option<NodeId>,
        reason: AcquireReason,
    },
    /// Call `session` of `room` was this node's and now belongs to `to`.
    Released {
        room: RoomId,
        session: SessionId,
        epoch: u64,
        to: NodeId,
    },
    /// This replica's grade of a node changed.
    Grade(GradeChange),
    /// A drain of this node was ordered (`active`) or cancelled.
    Drain { active: bool, rate_per_s: u32 },
}

/// Turns the replica's events of one driver turn into [`NodeEvent`]s.
/// Acquisitions wait for the end of the turn, because the replica reports
/// a take-over (`Rehomed`, which says why) after the change it made.
#[derive(Debug)]
pub(crate) struct CallEvents {
    me: NodeId,
    acquired: Vec<NodeEvent>,
    /// Why calls moved here this turn (cleared every turn).
    reasons: HashMap<(RoomId, SessionId), AcquireReason>,
}

impl CallEvents {
    pub fn new(me: NodeId) -> Self {
        Self {
            me,
            acquired: Vec::new(),
            reasons: HashMap::new(),
        }
    }

    /// A room changed: ownership moves to or from this node are noted;
    /// releases are returned at once.
    pub fn on_change(&mut self, change: &ChangeEvent, out: &mut Vec<NodeEvent>) {
        for kind in &change.changes {
            let ChangeKind::OwnerChanged {
                session,
                owner,
                previous,
            } = kind
            else {
                continue;
            };
            let was_mine = previous.as_ref() == Some(&self.me);
            let is_mine = owner.node == self.me;
            if is_mine && !was_mine {
                self.acquired.push(NodeEvent::Acquired {
                    room: change.room.clone(),
                    session: session.clone(),
                    epoch: owner.epoch,
                    from: previous.clone(),
                    reason: AcquireReason::Assigned,
                });
            } else if was_mine && !is_mine {
                out.push(NodeEvent::Released {
                    room: change.room.clone(),
                    session: session.clone(),
                    epoch: owner.epoch,
                    to: owner.node.clone(),
                });
            }
        }
    }

    /// This replica took a call over (failover or drain).
    pub fn on_rehomed(&mut self, room: &RoomId, session: &SessionId, kind: MoveKind) {
        let reason = match kind {
            MoveKind::Failover => AcquireReason::Failover,
            MoveKind::Drain => AcquireReason::Drain,
        };
        self.reasons.insert((room.clone(), session.clone()), reason);
    }

    /// The end of a turn: acquisitions, each with its reason.
    pub fn finish(&mut self, out: &mut Vec<NodeEvent>) {
        for mut event in self.acquired.drain(..) {
            if let NodeEvent::Acquired {
                room,
                session,
                reason,
                ..
            } = &mut event
            {
                if let Some(why) = self.reasons.get(&(room.clone(), session.clone())) {
                    *reason = *why;
                }
            }
            out.push(event);
        }
        self.reasons.clear();
    }
}
