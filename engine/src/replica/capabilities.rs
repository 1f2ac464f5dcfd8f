//! What each peer reads past version 1 of the wire protocol
//! (`Body::Reads`). An older build cannot decode a newer message and drops
//! it, so a replica sends a peer a newer message only once that peer said
//! it reads it, and falls back to version 1 whenever it has not (or no
//! longer) heard so.

use super::round::Phase;
use super::wire::{short, Body, LeafRoom, LEAF_HEADS_MAX, LEAF_HEADS_ROOMS_MAX, READS};
use super::Replica;
use crate::ids::NodeId;

impl Replica {
    /// Before a round's first request: tells the peer what we read, once
    /// (again after it was away), asking for its own if we lack it.
    pub(super) fn tell_reads(&mut self, peer: &NodeId) {
        let Some(state) = self.peers.get_mut(peer) else {
            return;
        };
        if state.told_reads {
            return;
        }
        state.told_reads = true;
        let ask = state.reads == 0;
        self.send(peer, Body::Reads { reads: READS, ask });
    }

    pub(super) fn on_reads(&mut self, from: &NodeId, reads: u64, ask: bool) {
        let Some(state) = self.peers.get_mut(from) else {
            return;
        };
        state.reads = reads;
        if ask || !state.told_reads {
            state.told_reads = true;
            self.send(
                from,
                Body::Reads {
                    reads: READS,
                    ask: false,
                },
            );
        }
    }

    /// Whether `peer` said it reads the messages of `bit`.
    pub(super) fn peer_reads(&self, peer: &NodeId, bit: u64) -> bool {
        self.peers.get(peer).is_some_and(|p| p.reads & bit != 0)
    }

    /// A round that timed out waiting on a newer message's answer: the
    /// peer may have come back as an older build without our noticing, so
    /// it gets version 1 until it says otherwise (and is asked again).
    pub(super) fn forget_reads_on_timeout(&mut self, peer: &NodeId, phase: &Phase) {
        if !matches!(phase, Phase::Leaves) {
            return;
        }
        if let Some(state) = self.peers.get_mut(peer) {
            state.reads = 0;
            state.told_reads = false;
        }
    }

    /// `LeafReq` with heads, so the asker can skip the rooms it is ahead
    /// in. Reading a room's heads loads the room: only the first
    /// `LEAF_HEADS_ROOMS_MAX` rooms of the answer are looked up (whatever
    /// they turn out to hold), so a request naming every bucket costs a
    /// bounded number of loads. The rest go without heads.
    pub(super) fn serve_leaf_heads(&mut self, from: &NodeId, round: u64, buckets: &[u32]) {
        let listed: Vec<_> = buckets
            .iter()
            .flat_map(|b| self.rooms.tree().leaf(*b))
            .collect();
        let mut lookups = LEAF_HEADS_ROOMS_MAX;
        let mut rooms = Vec::with_capacity(listed.len());
        for (room, item) in listed {
            let mut heads = Vec::new();
            if lookups > 0 && !self.rooms.is_purged(&room) {
                lookups -= 1;
                // A room that does not load is listed without heads: the
                // asker then asks for it as it would without them.
                let all = self.heads(&room).unwrap_or_default();
                if all.len() <= LEAF_HEADS_MAX {
                    heads = all.into_iter().map(Into::into).collect();
                }
            }
            rooms.push(LeafRoom {
                room,
                digest: short(&item),
                heads,
            });
        }
        self.send(from, Body::LeafHeadsResp { round, rooms });
    }
}
