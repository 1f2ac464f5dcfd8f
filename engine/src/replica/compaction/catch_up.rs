//! When a replica takes a peer's base whose cut it does not hold.
//!
//! Such a base cannot be checked here: its peers compacted past this
//! replica (`room::catch_up`), or one peer made it up, naming a cut nobody
//! holds. Taking it replaces the room's history, with this replica's room
//! merged onto it, on every replica that gets it; so a replica takes one
//! only once [`CATCH_UP_PEERS_MIN`] distinct peers sent it (or every peer
//! it knows of, if it knows of fewer). Honest peers that compacted past it
//! all send the same base (every replica computes the same base at a cut);
//! until enough of them did, the base waits, and comes again with the next
//! sync round.

use std::collections::{BTreeMap, BTreeSet};

use automerge::ChangeHash;

use crate::ids::{NodeId, RoomId};
use crate::limits::{CATCH_UP_PEERS_MIN, CATCH_UP_VOTES_MAX};
use crate::replica::Replica;

/// The peers that sent each base waiting for a permit.
#[derive(Debug, Default)]
pub(super) struct Votes(BTreeMap<(RoomId, ChangeHash), BTreeSet<NodeId>>);

impl Replica {
    /// `from` sent a base for `room` whose cut is not held here: counts it,
    /// and lets the room take the base once enough peers did.
    pub(in crate::replica) fn vote_catch_up(
        &mut self,
        from: &NodeId,
        room: &RoomId,
        base: ChangeHash,
    ) {
        let needed = CATCH_UP_PEERS_MIN.min(self.known_replicas().len()).max(1);
        let votes = &mut self.compaction.catch_up_votes.0;
        if votes.len() >= CATCH_UP_VOTES_MAX && !votes.contains_key(&(room.clone(), base)) {
            votes.clear();
        }
        let key = (room.clone(), base);
        let peers = votes.entry(key.clone()).or_default();
        peers.insert(from.clone());
        if peers.len() >= needed {
            votes.remove(&key);
            self.rooms.permit_catch_up(room, base);
            self.stats.catch_ups_permitted += 1;
        }
    }
}
