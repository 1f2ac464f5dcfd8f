//! Handing a call to the node placement names when that node does not move
//! it: it may not hold the call yet. A call joined just before its node
//! died reached only the replicas the node's last push got to; the rest
//! learn of it by anti-entropy, a round a second with one peer. If
//! placement names one of those, every replica that holds the call waits
//! for it (at 200 replicas such a call moved 5 s after its node was Down).
//!
//! So a replica that holds a call whose slot is due, and that placement
//! gives to another node, sends that node the room's newest changes once
//! the call has waited `HANDOFF_AFTER_MS` plus a spread drawn from a hash
//! of (this replica, call), at most once per failover. The node applies
//! them, asks for whatever they depend on that it lacks
//! (`replica::missing`), learns the call and moves it (`on_calls_learnt`).
//! The spread makes the first holder's hand-off the one that usually
//! does it: the others see the call moved before their turn.

use serde_bytes::ByteBuf;

use super::wire::{Body, RoomChanges};
use super::Replica;
use crate::ids::{NodeId, RoomId, SessionId};
use crate::limits::{HANDOFF_AFTER_MS, HANDOFF_SPREAD_MS};

impl Replica {
    /// How long after its slot a call this replica holds, but placement
    /// gives to another node, waits before it is handed to that node.
    pub(super) fn handoff_delay_ms(&self, room: &RoomId, session: &SessionId) -> u64 {
        let mut hasher = blake3::Hasher::new();
        hasher.update(self.config.node.as_str().as_bytes());
        hasher.update(&[0]);
        hasher.update(room.as_str().as_bytes());
        hasher.update(&[0]);
        hasher.update(session.as_str().as_bytes());
        let mut top = [0u8; 8];
        top.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
        HANDOFF_AFTER_MS + u64::from_le_bytes(top) % HANDOFF_SPREAD_MS.max(1)
    }

    /// Sends `to` the newest changes of `room` (its heads): what makes the
    /// call known there, or, if they depend on what `to` lacks, what makes
    /// it ask. A storage error sends nothing (counted).
    pub(super) fn hand_call_to(&mut self, to: &NodeId, room: &RoomId) {
        let view = super::overlay::Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let changes = self
            .rooms
            .heads(&view, room)
            .and_then(|heads| self.rooms.changes_by_hash(&view, room, &heads));
        let changes = match changes {
            Ok(changes) if !changes.is_empty() => changes,
            Ok(_) => return,
            Err(_) => {
                self.stats.storage_errors += 1;
                return;
            }
        };
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
    }
}
