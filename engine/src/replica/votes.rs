//! What peers say that this replica cannot check, taken once enough of
//! them say the same: a compacted base whose cut it never held
//! (`compaction::catch_up`), and the end change of a room it holds at
//! another generation (`purge::on_purged`). One peer could make either up;
//! honest peers that did the work all send the same change, so a replica
//! takes it once `catch_up_peers_min` distinct peers sent it (or every
//! peer it knows of, if it knows of fewer).
//!
//! Each peer has one vote per room, for the last change it sent: a peer
//! cannot outvote others by sending many.

use std::collections::BTreeMap;

use automerge::ChangeHash;

use super::Replica;
use crate::ids::{NodeId, RoomId};
use crate::limits::CATCH_UP_VOTES_MAX;

/// Per room, the change each peer last sent.
#[derive(Debug, Default)]
pub(super) struct Votes(BTreeMap<RoomId, BTreeMap<NodeId, ChangeHash>>);

impl Votes {
    /// `from` sent `hash` for `room`. True once `needed` distinct peers
    /// sent the same; the room's votes are then forgotten.
    pub fn vote(&mut self, from: &NodeId, room: &RoomId, hash: ChangeHash, needed: usize) -> bool {
        if !self.0.contains_key(room) && self.0.len() >= CATCH_UP_VOTES_MAX {
            // Bounded: one room's votes start again (what was voted for
            // comes again with the next sync rounds).
            self.0.pop_first();
        }
        let by_peer = self.0.entry(room.clone()).or_default();
        by_peer.insert(from.clone(), hash);
        let agreed = by_peer.values().filter(|h| **h == hash).count() >= needed;
        if agreed {
            self.0.remove(room);
        }
        agreed
    }

    /// Whether `from` sent something for `room` that waits for more peers.
    pub fn waits_on(&self, room: &RoomId, from: &NodeId) -> bool {
        self.0
            .get(room)
            .is_some_and(|by_peer| by_peer.contains_key(from))
    }

    pub fn forget(&mut self, room: &RoomId) {
        self.0.remove(room);
    }
}

impl Replica {
    /// How many distinct peers must send the same unchecked change.
    pub(super) fn votes_needed(&self) -> usize {
        self.config
            .catch_up_peers_min
            .min(self.known_replicas().len())
            .max(1)
    }
}
