//! The digest-tree walk of an anti-entropy round (`round.rs`): descend
//! the levels that differ, list the differing rooms' leaves, then fetch
//! those rooms' changes and apply them.

use super::digest::{purged_item, DEPTH, FANOUT};
use super::round::Phase;
use super::serve::parse_changes;
use super::wire::{
    short, Body, LeafRoom, RoomChanges, ShortDigest, WireHead, READS_LEAF_HEADS,
    ROOMS_PER_MESSAGE_MAX,
};
use super::{Replica, SyncPath};
use crate::ids::{NodeId, RoomId};
use crate::limits::CHANGES_FIRST_ASK_ROOMS;

impl Replica {
    pub(super) fn on_tree(&mut self, peer: &NodeId, id: u64, level: u8, children: &[ShortDigest]) {
        let Some(round) = self.round_mut(peer, id) else {
            return;
        };
        let Phase::Tree {
            level: asked,
            nodes,
        } = &round.phase
        else {
            self.stats.stale_responses += 1;
            return;
        };
        if *asked != level || children.len() != nodes.len() * FANOUT {
            self.stats.stale_responses += 1;
            return;
        }
        let nodes = nodes.clone();
        let mut differing = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let ours = self.rooms.tree().children(level, *node).unwrap_or(&[]);
            let theirs = &children[i * FANOUT..(i + 1) * FANOUT];
            for (child, digest) in theirs.iter().enumerate() {
                if ours.get(child).map(short).as_ref() != Some(digest) {
                    differing.push(node * FANOUT as u32 + child as u32);
                }
            }
        }
        if differing.is_empty() {
            self.finish_round(peer, Some(SyncPath::Incremental));
        } else if level + 1 < DEPTH {
            let next = Phase::Tree {
                level: level + 1,
                nodes: differing.clone(),
            };
            self.request(
                peer,
                next,
                Body::TreeReq {
                    round: id,
                    level: level + 1,
                    nodes: differing,
                },
            );
        } else {
            let body = if self.peer_reads(peer, READS_LEAF_HEADS) {
                Body::LeafHeadsReq {
                    round: id,
                    buckets: differing,
                }
            } else {
                Body::LeafReq {
                    round: id,
                    buckets: differing,
                }
            };
            self.request(peer, Phase::Leaves, body);
        }
    }

    /// The rooms of the differing leaf buckets, with the peer's heads when
    /// it gave them (`LeafHeadsResp`; empty from `LeafResp`).
    pub(super) fn on_leaves(&mut self, peer: &NodeId, id: u64, rooms: Vec<LeafRoom>) {
        let Some(round) = self.round_mut(peer, id) else {
            return;
        };
        if !matches!(round.phase, Phase::Leaves) {
            self.stats.stale_responses += 1;
            return;
        }
        let mut wanted = Vec::new();
        let mut purged_here = Vec::new();
        let mut peer_heads = std::collections::BTreeMap::new();
        for LeafRoom {
            room,
            digest: theirs,
            heads,
        } in rooms
        {
            let ours = self.rooms.tree().item(&room).map(|d| short(&d));
            if ours == Some(theirs) {
                continue;
            }
            if self.holds_all(&room, &heads) {
                // We hold everything the peer has of this room: it is
                // behind (its own rounds pull from us), nothing to ask.
                self.stats.leaf_rooms_skipped += 1;
                continue;
            }
            if !heads.is_empty() {
                peer_heads.insert(room.clone(), heads);
            }
            if theirs == short(&purged_item(&room)) && self.purge.ended.contains_key(&room) {
                // Ended here too: the peer's purge is the last ack.
                self.purge_room(&room, None);
            } else if self.rooms.is_purged(&room) {
                purged_here.push(room);
            } else {
                wanted.push(room);
            }
        }
        if !purged_here.is_empty() {
            // Rounds pull, but the peer may reach us only through the since
            // path, which never compares leaves: tell it now, or a purge
            // spreads only as fast as the peer's rare incremental rounds.
            self.send_purged(peer, purged_here);
        }
        if let Some(round) = self.peers.get_mut(peer).and_then(|p| p.round.as_mut()) {
            round.peer_heads = peer_heads;
        }
        self.fetch_rooms(peer, id, SyncPath::Incremental, wanted);
    }

    /// Whether this replica holds every one of `heads` (none: no).
    fn holds_all(&mut self, room: &RoomId, heads: &[WireHead]) -> bool {
        !heads.is_empty() && heads.iter().all(|h| self.has_change(room, &(*h).into()))
    }

    /// Asks for the changes of `rooms` in batches; finishes when none remain.
    pub(super) fn fetch_rooms(
        &mut self,
        peer: &NodeId,
        id: u64,
        path: SyncPath,
        queued: Vec<RoomId>,
    ) {
        // A room with a copy out waits for it (`resume_rounds`): asked
        // now, the answer would bring the same changes again. So does a
        // room compacted off the task: its peers' compacted history would
        // only be held back meanwhile. Waiting (not leaving them out) keeps
        // the round's claim to the peer's log head true.
        let (waiting, mut queued): (Vec<RoomId>, Vec<RoomId>) = queued
            .into_iter()
            .partition(|room| self.applying_off_task(room) || self.compacting_off_task(room));
        if queued.is_empty() && waiting.is_empty() {
            self.finish_round(peer, Some(path));
            return;
        }
        if queued.is_empty() {
            if let Some(round) = self.peers.get_mut(peer).and_then(|p| p.round.as_mut()) {
                round.phase = Phase::Changes {
                    path,
                    in_flight: Vec::new(),
                    queued: waiting,
                };
            }
            return;
        }
        let batch = self
            .peers
            .get(peer)
            .and_then(|p| p.round.as_ref())
            .map_or(CHANGES_FIRST_ASK_ROOMS, |r| r.batch_rooms);
        let mut rest = queued.split_off(queued.len().min(batch));
        rest.extend(waiting);
        let rooms = self.heads_of(queued.clone());
        let phase = Phase::Changes {
            path,
            in_flight: queued,
            queued: rest,
        };
        self.request(peer, phase, Body::ChangesReq { round: id, rooms });
    }

    pub(super) fn on_changes(
        &mut self,
        peer: &NodeId,
        id: u64,
        rooms: Vec<RoomChanges>,
        truncated: bool,
    ) {
        let answered = rooms.len();
        let applied = self.apply_room_changes(peer, rooms);
        if id == 0 {
            // An unsolicited pull answer: nothing more to do (a truncated
            // one leaves the rest to the rounds).
            if self
                .anti_entropy
                .pulling_back
                .as_ref()
                .is_some_and(|(to, _)| to == peer)
            {
                self.anti_entropy.pulling_back = None;
            }
            return;
        }
        let Some(round) = self.round_mut(peer, id) else {
            return;
        };
        round.changes += applied;
        round.batch_rooms = if truncated {
            answered.saturating_add(answered / 2).max(1)
        } else {
            round.batch_rooms.saturating_mul(2)
        }
        .min(ROOMS_PER_MESSAGE_MAX);
        let Phase::Changes {
            path,
            in_flight,
            queued,
        } = &mut round.phase
        else {
            self.stats.stale_responses += 1;
            return;
        };
        let path = *path;
        let mut next = std::mem::take(queued);
        if truncated && applied == 0 {
            // The rest of these rooms waits for the next round: this one
            // no longer earns the peer's log head.
            round.cursor_at_end = None;
        }
        let mut again = Vec::new();
        if truncated && applied > 0 {
            // Ask again for the same rooms with our new heads. An answer
            // that applied nothing (changes of a history this replica
            // compacted away, or held back while it compacts) would come
            // again the same: the next round asks.
            again = std::mem::take(in_flight)
                .into_iter()
                .map(|room| {
                    let heads = round.peer_heads.get(&room).cloned().unwrap_or_default();
                    (room, heads)
                })
                .collect::<Vec<_>>();
        }
        // Not the rooms whose heads (from the peer's leaf answer) we now
        // hold: asking for thousands of rooms again after each cut answer
        // cost more than the answers after a heal.
        let again: Vec<RoomId> = again
            .into_iter()
            .filter(|(room, heads)| !self.holds_all(room, heads))
            .map(|(room, _)| room)
            .collect();
        next.splice(0..0, again);
        self.fetch_rooms(peer, id, path, next);
    }

    /// Applies each room's changes; returns how many were applied.
    pub(super) fn apply_room_changes(&mut self, peer: &NodeId, rooms: Vec<RoomChanges>) -> u64 {
        let mut applied = 0;
        for RoomChanges { room, changes } in rooms {
            let Some(changes) = parse_changes(changes) else {
                self.stats.changes_rejected += 1;
                continue;
            };
            self.stats.changes_received += changes.len() as u64;
            // A truncated answer's room is asked again once its copy is
            // back (`fetch_rooms`).
            applied += self.take_counted(peer, &room, changes);
        }
        applied
    }
}
