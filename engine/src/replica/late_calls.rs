//! Calls a failover would miss: ones whose join reached only some replicas
//! before their node died. The node's last push got to some replicas; the
//! rest learn of the call by anti-entropy, a round a second with one peer.
//! If placement names one of those, every replica that holds the call
//! waits for it (at 200 replicas such a call moved 5.2 s after its node
//! was Down everywhere, `docs/scale.md`). Two rules:
//!
//! - **Hand-off.** A replica that holds a due call which placement gives
//!   to another node sends that node the room's newest changes once the
//!   call has waited `HANDOFF_AFTER_MS` plus a spread drawn from a hash of
//!   (this replica, call), at most once per failover. Only some holders
//!   do, drawn by the same hash (about `HANDOFF_HOLDERS` of the cluster's
//!   replicas): the node placement names usually holds the call and is
//!   only late (it convicted later), and 200 replicas each pushing it
//!   every call would be a storm. The node applies the changes, asks for
//!   what they depend on that it lacks (`replica::missing`), and learns
//!   the call.
//! - **Restart.** A call of a node held Down that a replica learns of after
//!   that node's failover ended (it found none of its calls) starts the
//!   failover again, as the conviction did.

use serde_bytes::ByteBuf;

use super::wire::{Body, RoomChanges, PUSH_BYTES_MAX};
use super::Replica;
use crate::events::ChangeKind;
use crate::ids::{NodeId, RoomId, SessionId};
use crate::limits::{HANDOFF_AFTER_MS, HANDOFF_HOLDERS, HANDOFF_SPREAD_MS, PUSH_FRAMING_BYTES};
use crate::membership::Grade;

use super::failover::MoveKind;

impl Replica {
    /// Calls this replica just learnt of (a join, or an owner change) owned
    /// by a node it holds Down with no failover in progress, while the owner
    /// index still gives that node a call: the failover starts again.
    pub(super) fn on_calls_learnt(&mut self, kinds: &[ChangeKind]) {
        for kind in kinds {
            let (session, owner) = match kind {
                ChangeKind::Joined { session, owner } => (session, owner),
                ChangeKind::OwnerChanged { session, owner, .. } => (session, owner),
                _ => continue,
            };
            // A room first read whole reports every session it holds as
            // joined, the departed ones too (then as left).
            let left = kinds
                .iter()
                .any(|k| matches!(k, ChangeKind::Left { session: s } if s == session));
            let moving = self
                .failover
                .moves
                .get(&owner.node)
                .is_some_and(|m| m.kind == MoveKind::Failover);
            if left
                || moving
                || owner.node == self.config.node
                || self.members.grade(&owner.node) != Some(Grade::Down)
                || self.calls_owned_by(&owner.node).is_empty()
            {
                continue;
            }
            self.stats.failovers_restarted += 1;
            self.start_failover(owner.node.clone());
        }
    }

    /// Hands `call` (due `overdue_ms` ago, a call of `from` that placement
    /// gives to `to`) to `to` if this replica is one of its drawn holders,
    /// its wait is over, and it has not yet in this failover. Returns
    /// whether it sent anything.
    pub(super) fn maybe_hand_off(
        &mut self,
        from: &NodeId,
        to: &NodeId,
        call: (RoomId, SessionId),
        overdue_ms: f64,
        cluster: usize,
    ) -> bool {
        let draw = self.draw(&call.0, &call.1);
        // About HANDOFF_HOLDERS of `cluster` replicas hand a call off.
        let drawn = draw % (cluster.max(1) as u64) < HANDOFF_HOLDERS;
        let wait = HANDOFF_AFTER_MS + (draw >> 32) % HANDOFF_SPREAD_MS.max(1);
        let handed = self
            .failover
            .moves
            .get(from)
            .is_none_or(|m| m.handed.contains(&call));
        if !drawn || overdue_ms < wait as f64 || handed {
            return false;
        }
        let sent = self.hand_call_to(to, &call.0);
        if let Some(live) = self.failover.moves.get_mut(from) {
            live.handed.insert(call);
        }
        sent
    }

    /// A number drawn from (this replica, call), the same at every tick.
    fn draw(&self, room: &RoomId, session: &SessionId) -> u64 {
        let mut hasher = blake3::Hasher::new();
        hasher.update(self.config.node.as_str().as_bytes());
        hasher.update(&[0]);
        hasher.update(room.as_str().as_bytes());
        hasher.update(&[0]);
        hasher.update(session.as_str().as_bytes());
        let mut top = [0u8; 8];
        top.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
        u64::from_le_bytes(top)
    }

    /// Sends `to` the newest changes of `room` (its heads): what makes the
    /// call known there, or, if they depend on what `to` lacks, what makes
    /// it ask. Nothing if they do not fit a push (anti-entropy brings
    /// them), or on a storage error (counted). Returns whether it sent.
    fn hand_call_to(&mut self, to: &NodeId, room: &RoomId) -> bool {
        let view = super::overlay::Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let changes = self
            .rooms
            .heads(&view, room)
            .and_then(|heads| self.rooms.changes_by_hash(&view, room, &heads));
        let changes = match changes {
            Ok(changes) => changes,
            Err(_) => {
                self.stats.storage_errors += 1;
                return false;
            }
        };
        let bytes: usize = changes.iter().map(|c| c.raw_bytes().len()).sum();
        if changes.is_empty() || bytes + PUSH_FRAMING_BYTES > PUSH_BYTES_MAX {
            return false;
        }
        self.stats.handoffs += 1;
        let changes = changes
            .iter()
            .map(|c| ByteBuf::from(c.raw_bytes().to_vec()))
            .collect();
        self.send(
            to,
            Body::Push {
                rooms: vec![RoomChanges {
                    room: room.clone(),
                    changes,
                }],
            },
        );
        true
    }
}
