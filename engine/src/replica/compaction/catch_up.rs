//! When a replica takes a peer's base whose cut it does not hold.
//!
//! Such a base cannot be checked here: its peers compacted past this
//! replica (`room::catch_up`), or one peer made it up, naming a cut nobody
//! holds. Taking it replaces the room's history, with this replica's room
//! merged onto it; so a replica takes one only once `catch_up_peers_min`
//! ([`CATCH_UP_PEERS_MIN`] by default) distinct peers sent the same (or
//! every peer it knows of, if it knows of fewer). Honest peers that compacted past it all send the same base
//! (every replica computes the same base at a cut); until enough of them
//! did, the base waits, and comes again with the next sync round.
//!
//! Each peer has one vote per room, for the last such base it sent: a
//! peer cannot outvote others by sending many. A peer whose base waits is
//! not pulled back from for that room (`serve_changes`): the pull would
//! bring the base again at once, to wait again, and the two replicas
//! answered each other without end.

use std::collections::BTreeMap;

use automerge::ChangeHash;

use crate::ids::{NodeId, RoomId};
#[cfg(doc)]
use crate::limits::CATCH_UP_PEERS_MIN;
use crate::limits::CATCH_UP_VOTES_MAX;
use crate::replica::Replica;

/// Per room, the base each peer last sent whose cut is not held here.
#[derive(Debug, Default)]
pub(super) struct Votes(BTreeMap<RoomId, BTreeMap<NodeId, ChangeHash>>);

impl Replica {
    /// `from` sent a base for `room` whose cut is not held here: counts it,
    /// and lets the room take the base once enough peers sent the same.
    pub(in crate::replica) fn vote_catch_up(
        &mut self,
        from: &NodeId,
        room: &RoomId,
        base: ChangeHash,
    ) {
        let needed = self
            .config
            .catch_up_peers_min
            .min(self.known_replicas().len())
            .max(1);
        let votes = &mut self.compaction.catch_up_votes.0;
        if !votes.contains_key(room) && votes.len() >= CATCH_UP_VOTES_MAX {
            // Bounded: one room's votes start again (its bases come again
            // with the next sync rounds).
            votes.pop_first();
        }
        let by_peer = votes.entry(room.clone()).or_default();
        by_peer.insert(from.clone(), base);
        if by_peer.values().filter(|b| **b == base).count() >= needed {
            votes.remove(room);
            self.rooms.permit_catch_up(room, base);
            self.stats.catch_ups_permitted += 1;
        }
    }

    /// Whether `from` sent a base for `room` that waits for more peers.
    pub(in crate::replica) fn catch_up_waits_on(&self, room: &RoomId, from: &NodeId) -> bool {
        self.compaction
            .catch_up_votes
            .0
            .get(room)
            .is_some_and(|by_peer| by_peer.contains_key(from))
    }

    /// The room moved to a newer generation: what waited for it is moot.
    pub(super) fn forget_catch_up(&mut self, room: &RoomId) {
        self.compaction.catch_up_votes.0.remove(room);
        self.rooms.forget_catch_up_permit(room);
    }
}
