//! One anti-entropy round, from our side: open with digests, then bring
//! ourselves level with the peer by whichever path fits the gap.
//!
//! ```text
//! DigestReq ─► DigestResp ─┬─ roots equal ──────────────► done (cursor := peer's log head)
//!                          ├─ cursor covered, gap small ─► SinceReq ⇄ SinceResp … ► done
//!                          ├─ empty, or gap too large ───► SnapshotReq ⇄ SnapshotResp … ► done
//!                          └─ otherwise ─────────────────► TreeReq ⇄ TreeResp (×3)
//!                                                          ► LeafReq ⇄ LeafResp
//!                                                          ► ChangesReq ⇄ ChangesResp … ► done
//! ```
//! Each round pulls; the peer pulls in its own rounds (and a `ChangesReq`
//! showing heads it lacks makes it pull back at once).

use serde_bytes::ByteBuf;

use super::digest::{purged_item, DEPTH, FANOUT};
use super::serve::parse_changes;
use super::wire::{Body, Digest, RoomChanges, RoomDocument, ROOMS_PER_MESSAGE_MAX};
use super::{Event, Replica, SyncPath};
use crate::hlc::Timestamp;
use crate::ids::{NodeId, RoomId};

/// Requests one round may make before it is cut short: bounds the work a
/// peer that keeps answering "truncated" can cause.
const ROUND_REQUESTS_MAX: u32 = 10_000;

#[derive(Debug)]
pub struct Round {
    pub id: u64,
    pub deadline_ms: u64,
    pub requests: u32,
    pub changes: u64,
    pub phase: Phase,
}

#[derive(Debug)]
pub enum Phase {
    Digest,
    Tree {
        level: u8,
        nodes: Vec<u32>,
    },
    Leaves,
    /// Rooms still to fetch (beyond the ones in flight).
    Changes {
        path: SyncPath,
        in_flight: Vec<RoomId>,
        queued: Vec<RoomId>,
    },
    Since,
    Snapshot {
        log_head: Option<Timestamp>,
        too_large: Vec<RoomId>,
    },
}

impl Replica {
    pub(super) fn start_round(&mut self, peer: &NodeId) {
        let id = self.next_round;
        self.next_round += 1;
        let deadline_ms = self.now_ms + self.config.round_timeout_ms;
        let cursor = self.peers.get(peer).and_then(|p| p.cursor);
        let Some(state) = self.peers.get_mut(peer) else {
            return;
        };
        state.round = Some(Round {
            id,
            deadline_ms,
            requests: 1,
            changes: 0,
            phase: Phase::Digest,
        });
        self.stats.rounds_started += 1;
        let root = self.rooms.tree().root();
        self.send(
            peer,
            Body::DigestReq {
                round: id,
                root,
                cursor,
            },
        );
    }

    /// The round with `peer` if `id` is its id; counts stale responses.
    fn round_mut(&mut self, peer: &NodeId, id: u64) -> Option<&mut Round> {
        let now = self.now_ms;
        let timeout = self.config.round_timeout_ms;
        let round = self
            .peers
            .get_mut(peer)
            .and_then(|p| p.round.as_mut())
            .filter(|r| r.id == id);
        match round {
            Some(round) => {
                round.deadline_ms = now + timeout; // progress: extend the deadline
                Some(round)
            }
            None => {
                self.stats.stale_responses += 1;
                None
            }
        }
    }

    /// Sends the next request of the round, within the request budget.
    fn request(&mut self, peer: &NodeId, phase: Phase, body: Body) {
        let Some(round) = self.peers.get_mut(peer).and_then(|p| p.round.as_mut()) else {
            return;
        };
        round.requests += 1;
        if round.requests > ROUND_REQUESTS_MAX {
            self.stats.rounds_timed_out += 1;
            self.peers.get_mut(peer).map(|p| p.round.take());
            return;
        }
        round.phase = phase;
        self.send(peer, body);
    }

    fn finish_round(&mut self, peer: &NodeId, path: Option<SyncPath>) {
        let round = self.peers.get_mut(peer).and_then(|p| p.round.take());
        let Some(path) = path else {
            self.stats.rounds_idle += 1;
            return;
        };
        let changes = round.map_or(0, |r| r.changes);
        match path {
            SyncPath::Incremental => self.stats.sync_incremental += 1,
            SyncPath::Since => self.stats.sync_since += 1,
            SyncPath::Full => self.stats.sync_full += 1,
        }
        self.emit(Event::SyncFinished {
            peer: peer.clone(),
            path,
            changes,
        });
    }

    pub(super) fn expire_rounds(&mut self) {
        let now = self.now_ms;
        for peer in self.peers.values_mut() {
            if peer.round.as_ref().is_some_and(|r| r.deadline_ms <= now) {
                peer.round = None;
                self.stats.rounds_timed_out += 1;
            }
        }
    }

    pub(super) fn on_digest(
        &mut self,
        peer: &NodeId,
        id: u64,
        root: Digest,
        log_head: Timestamp,
        since_count: Option<u64>,
    ) {
        if self.round_mut(peer, id).is_none() {
            return;
        }
        if root == self.rooms.tree().root() {
            // Equal roots: we hold everything the peer's log held until now.
            self.set_cursor(peer, log_head);
            self.finish_round(peer, None);
            return;
        }
        let cursor = self.peers.get(peer).and_then(|p| p.cursor);
        let path = match (cursor, since_count) {
            _ if self.rooms.tree().is_empty() => SyncPath::Full,
            (Some(_), Some(n)) if n > 0 && n <= self.config.since_entries_max => SyncPath::Since,
            (Some(_), Some(0)) => SyncPath::Incremental,
            (Some(_), _) => SyncPath::Full, // past the peer's horizon, or too large a gap
            (None, _) => SyncPath::Incremental,
        };
        self.begin_path(peer, id, path, cursor);
    }

    fn begin_path(&mut self, peer: &NodeId, id: u64, path: SyncPath, cursor: Option<Timestamp>) {
        self.emit(Event::SyncStarted {
            peer: peer.clone(),
            path,
        });
        match (path, cursor) {
            (SyncPath::Since, Some(cursor)) => {
                self.request(peer, Phase::Since, Body::SinceReq { round: id, cursor });
            }
            (SyncPath::Full, _) | (SyncPath::Since, None) => {
                let after = self.peers.get(peer).and_then(|p| p.snapshot_resume.clone());
                let phase = Phase::Snapshot {
                    log_head: None,
                    too_large: Vec::new(),
                };
                self.request(peer, phase, Body::SnapshotReq { round: id, after });
            }
            (SyncPath::Incremental, _) => {
                let phase = Phase::Tree {
                    level: 0,
                    nodes: vec![0],
                };
                self.request(
                    peer,
                    phase,
                    Body::TreeReq {
                        round: id,
                        level: 0,
                        nodes: vec![0],
                    },
                );
            }
        }
    }

    pub(super) fn on_unavailable(&mut self, peer: &NodeId, id: u64) {
        if self.round_mut(peer, id).is_some() {
            self.begin_path(peer, id, SyncPath::Full, None);
        }
    }

    pub(super) fn on_tree(&mut self, peer: &NodeId, id: u64, level: u8, children: &[Digest]) {
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
                if ours.get(child) != Some(digest) {
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
            self.request(
                peer,
                Phase::Leaves,
                Body::LeafReq {
                    round: id,
                    buckets: differing,
                },
            );
        }
    }

    pub(super) fn on_leaves(&mut self, peer: &NodeId, id: u64, rooms: Vec<(RoomId, Digest)>) {
        let Some(round) = self.round_mut(peer, id) else {
            return;
        };
        if !matches!(round.phase, Phase::Leaves) {
            self.stats.stale_responses += 1;
            return;
        }
        let mut wanted = Vec::new();
        for (room, theirs) in rooms {
            let ours = self.rooms.tree().item(&room);
            if ours == Some(theirs) {
                continue;
            }
            if theirs == purged_item(&room) {
                self.purge_room(&room);
            } else if !self.rooms.is_purged(&room) {
                wanted.push(room);
            }
        }
        self.fetch_rooms(peer, id, SyncPath::Incremental, wanted);
    }

    /// Asks for the changes of `rooms` in batches; finishes when none remain.
    fn fetch_rooms(&mut self, peer: &NodeId, id: u64, path: SyncPath, mut queued: Vec<RoomId>) {
        if queued.is_empty() {
            self.finish_round(peer, Some(path));
            return;
        }
        let rest = queued.split_off(queued.len().min(ROOMS_PER_MESSAGE_MAX));
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
        let applied = self.apply_room_changes(peer, rooms);
        if id == 0 {
            return; // an unsolicited pull answer: nothing more to do
        }
        let Some(round) = self.round_mut(peer, id) else {
            return;
        };
        round.changes += applied;
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
        if truncated {
            // Ask again for the same rooms with our new heads.
            next.splice(0..0, std::mem::take(in_flight));
        }
        self.fetch_rooms(peer, id, path, next);
    }

    /// Applies each room's changes; returns how many were applied.
    fn apply_room_changes(&mut self, peer: &NodeId, rooms: Vec<RoomChanges>) -> u64 {
        let mut applied = 0;
        for RoomChanges { room, changes } in rooms {
            let Some(changes) = parse_changes(changes) else {
                self.stats.changes_rejected += 1;
                continue;
            };
            if let Some(write) = self.apply_remote(peer, &room, changes) {
                applied += write.applied.len() as u64;
            }
        }
        applied
    }

    pub(super) fn on_since(
        &mut self,
        peer: &NodeId,
        id: u64,
        rooms: Vec<RoomChanges>,
        next_cursor: Timestamp,
        complete: bool,
    ) {
        if self
            .round_mut(peer, id)
            .is_none_or(|r| !matches!(r.phase, Phase::Since))
        {
            return;
        }
        let applied = self.apply_room_changes(peer, rooms);
        if let Some(round) = self.peers.get_mut(peer).and_then(|p| p.round.as_mut()) {
            round.changes += applied;
        }
        // Everything up to next_cursor is now staged, ahead of the cursor write.
        self.set_cursor(peer, next_cursor);
        if complete {
            self.finish_round(peer, Some(SyncPath::Since));
        } else {
            self.request(
                peer,
                Phase::Since,
                Body::SinceReq {
                    round: id,
                    cursor: next_cursor,
                },
            );
        }
    }

    pub(super) fn on_snapshot(
        &mut self,
        peer: &NodeId,
        id: u64,
        rooms: Vec<RoomDocument>,
        too_large: Vec<RoomId>,
        next: Option<RoomId>,
        log_head: Timestamp,
    ) {
        let Some(round) = self.round_mut(peer, id) else {
            return;
        };
        let Phase::Snapshot {
            log_head: first_head,
            too_large: big,
        } = &mut round.phase
        else {
            self.stats.stale_responses += 1;
            return;
        };
        // The peer's log head when the snapshot began: everything after it
        // reaches us through the next rounds.
        let head = *first_head.get_or_insert(log_head);
        big.extend(too_large);
        let big = big.clone();
        let mut applied = 0;
        for RoomDocument { room, doc } in rooms {
            let changes = match automerge::Automerge::load(&doc) {
                Ok(doc) => doc.get_changes(&[]),
                Err(_) => {
                    self.stats.changes_rejected += 1;
                    continue;
                }
            };
            let raw = changes
                .iter()
                .map(|c| ByteBuf::from(c.raw_bytes().to_vec()))
                .collect();
            applied += self.apply_room_changes(peer, vec![RoomChanges { room, changes: raw }]);
        }
        if let Some(round) = self.peers.get_mut(peer).and_then(|p| p.round.as_mut()) {
            round.changes += applied;
        }
        if let Some(state) = self.peers.get_mut(peer) {
            state.snapshot_resume = next.clone();
        }
        match next {
            Some(after) => {
                let phase = Phase::Snapshot {
                    log_head: Some(head),
                    too_large: big,
                };
                self.request(
                    peer,
                    phase,
                    Body::SnapshotReq {
                        round: id,
                        after: Some(after),
                    },
                );
            }
            None => {
                self.set_cursor(peer, head);
                self.fetch_rooms(peer, id, SyncPath::Full, big);
            }
        }
    }
}
