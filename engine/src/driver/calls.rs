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

/// Turns the replica's events of one driver turn into [`NodeEvent`]s, in
/// the order the changes happened. The reason of an acquisition is filled
/// in at the end of the turn, because the replica reports a take-over
/// (`Rehomed`, which says why) after the change it made.
#[derive(Debug)]
pub(crate) struct CallEvents {
    me: NodeId,
    /// Why calls moved here this turn (cleared every turn).
    reasons: HashMap<(RoomId, SessionId), AcquireReason>,
}

impl CallEvents {
    pub fn new(me: NodeId) -> Self {
        Self {
            me,
            reasons: HashMap::new(),
        }
    }

    /// A room changed: calls placed on, moved to or moved away from this
    /// node become events (in `out`, in order).
    pub fn on_change(&mut self, change: &ChangeEvent, out: &mut Vec<NodeEvent>) {
        for kind in &change.changes {
            match kind {
                // A call placed here at join, unless it has already left.
                ChangeKind::Joined { session, owner } if owner.node == self.me => {
                    let left = change
                        .changes
                        .iter()
                        .any(|k| matches!(k, ChangeKind::Left { session: s } if s == session));
                    if !left {
                        out.push(acquired(&change.room, session, owner.epoch, None));
                    }
                }
                ChangeKind::OwnerChanged {
                    session,
                    owner,
                    previous,
                } => {
                    let was_mine = previous.as_ref() == Some(&self.me);
                    let is_mine = owner.node == self.me;
                    if is_mine && !was_mine {
                        let from = previous.clone();
                        out.push(acquired(&change.room, session, owner.epoch, from));
                    } else if was_mine && !is_mine {
                        out.push(NodeEvent::Released {
                            room: change.room.clone(),
                            session: session.clone(),
                            epoch: owner.epoch,
                            to: owner.node.clone(),
                        });
                    }
                }
                _ => {}
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

    /// The end of a turn: every acquisition of the turn gets its reason.
    pub fn finish(&mut self, events: &mut [NodeEvent]) {
        if self.reasons.is_empty() {
            return;
        }
        for event in events.iter_mut() {
            if let NodeEvent::Acquired {
                room,
                session,
                reason,
                ..
            } = event
            {
                if let Some(why) = self.reasons.get(&(room.clone(), session.clone())) {
                    *reason = *why;
                }
            }
        }
        self.reasons.clear();
    }
}

fn acquired(room: &RoomId, session: &SessionId, epoch: u64, from: Option<NodeId>) -> NodeEvent {
    NodeEvent::Acquired {
        room: room.clone(),
        session: session.clone(),
        epoch,
        from,
        reason: AcquireReason::Assigned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Origin;
    use crate::model::Owner;

    fn id(s: &str) -> NodeId {
        NodeId::parse(s).expect("id")
    }

    fn change(kinds: Vec<ChangeKind>) -> ChangeEvent {
        ChangeEvent {
            room: RoomId::parse("r").expect("room"),
            origin: Origin::Remote,
            changes: kinds,
        }
    }

    fn owner_changed(session: &str, to: &str, epoch: u64, from: Option<&str>) -> ChangeKind {
        ChangeKind::OwnerChanged {
            session: SessionId::parse(session).expect("session"),
            owner: Owner {
                epoch,
                node: id(to),
            },
            previous: from.map(id),
        }
    }

    #[test]
    fn a_call_placed_here_at_join_is_acquired_unless_it_left() {
        let mut calls = CallEvents::new(id("me"));
        let joined = |s: &str, owner: &str| ChangeKind::Joined {
            session: SessionId::parse(s).expect("session"),
            owner: Owner {
                epoch: 1,
                node: id(owner),
            },
        };
        let left = ChangeKind::Left {
            session: SessionId::parse("gone").expect("session"),
        };
        let mut out = Vec::new();
        calls.on_change(
            &change(vec![
                joined("here", "me"),
                joined("there", "other"),
                joined("gone", "me"),
                left,
            ]),
            &mut out,
        );
        calls.finish(&mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(matches!(
            &out[0],
            NodeEvent::Acquired { session, epoch: 1, from: None, reason: AcquireReason::Assigned, .. }
                if session.as_str() == "here"
        ));
    }

    #[test]
    fn moves_in_one_turn_keep_their_order_and_reasons() {
        let mut calls = CallEvents::new(id("me"));
        let mut out = Vec::new();
        // Here and away again in one turn: acquired, then released.
        calls.on_change(
            &change(vec![owner_changed("c1", "me", 2, Some("dead"))]),
            &mut out,
        );
        calls.on_change(
            &change(vec![owner_changed("c1", "other", 3, Some("me"))]),
            &mut out,
        );
        // Taken over by failover, reported after the change.
        calls.on_change(
            &change(vec![owner_changed("c2", "me", 2, Some("dead"))]),
            &mut out,
        );
        calls.on_rehomed(
            &RoomId::parse("r").expect("room"),
            &SessionId::parse("c2").expect("session"),
            MoveKind::Failover,
        );
        // Someone else's move: nothing for us.
        calls.on_change(
            &change(vec![owner_changed("c3", "other", 2, Some("dead"))]),
            &mut out,
        );
        calls.finish(&mut out);
        let summary: Vec<String> = out
            .iter()
            .map(|e| match e {
                NodeEvent::Acquired {
                    session,
                    reason,
                    from,
                    ..
                } => format!("+{session} {reason:?} from {from:?}"),
                NodeEvent::Released { session, to, .. } => format!("-{session} to {to}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "+c1 Assigned from Some(NodeId(\"dead\"))",
                "-c1 to other",
                "+c2 Failover from Some(NodeId(\"dead\"))",
            ]
        );
        // Reasons do not leak into the next turn.
        let mut next = Vec::new();
        calls.on_change(
            &change(vec![owner_changed("c2", "me", 9, Some("x"))]),
            &mut next,
        );
        calls.finish(&mut next);
        assert!(matches!(
            next[0],
            NodeEvent::Acquired {
                reason: AcquireReason::Assigned,
                ..
            }
        ));
    }
}
