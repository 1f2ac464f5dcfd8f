//! When a replica takes a peer's base whose cut it does not hold.
//!
//! Such a base cannot be checked here: its peers compacted past this
//! replica (`room::catch_up`), or one peer made it up, naming a cut nobody
//! holds. Taking it replaces the room's history, with this replica's room
//! merged onto it; so a replica takes one only once enough distinct peers
//! sent the same (`votes.rs`; `catch_up_peers_min`, [`CATCH_UP_PEERS_MIN`]
//! by default). Honest peers that compacted past it all send the same base
//! (every replica computes the same base at a cut); until enough of them
//! did, the base waits, and comes again with the next sync round.
//!
//! A peer whose base waits is not pulled back from for that room
//! (`serve_changes`): the pull would bring the base again at once, to wait
//! again, and the two replicas answered each other without end.

use automerge::ChangeHash;

use crate::ids::{NodeId, RoomId};
#[cfg(doc)]
use crate::limits::CATCH_UP_PEERS_MIN;
use crate::replica::Replica;

impl Replica {
    /// `from` sent a base for `room` whose cut is not held here: counts it,
    /// and lets the room take the base once enough peers sent the same.
    pub(in crate::replica) fn vote_catch_up(
        &mut self,
        from: &NodeId,
        room: &RoomId,
        base: ChangeHash,
    ) {
        let needed = self.votes_needed();
        if self
            .compaction
            .catch_up_votes
            .vote(from, room, base, needed)
        {
            self.rooms.permit_catch_up(room, base);
            self.stats.catch_ups_permitted += 1;
        }
    }

    /// Whether `from` sent a base for `room` that waits for more peers.
    pub(in crate::replica) fn catch_up_waits_on(&self, room: &RoomId, from: &NodeId) -> bool {
        self.compaction.catch_up_votes.waits_on(room, from)
    }

    /// The room moved to a newer generation: what waited for it is moot.
    pub(super) fn forget_catch_up(&mut self, room: &RoomId) {
        self.compaction.catch_up_votes.forget(room);
        self.rooms.forget_catch_up_permit(room);
    }
}
