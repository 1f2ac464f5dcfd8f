//! Asking a pusher for the changes its push depended on but did not
//! bring, once the race that usually explains them is over.
//!
//! Pushes from different peers race: a peer's change that depends on a
//! third replica's change often arrives before that replica's own push of
//! it. Asking at once asked for what was already on its way: in the
//! three-daemon churn bench, about one push in three was followed by a
//! `ChangesReq`, each costing the pusher a walk of the room's history and
//! the asker an answer to apply, and often a pull back. So a room left
//! waiting is asked for `pull_missing_after_ms` later, and only if it
//! still waits then. A push truly lost is asked for that much later, or
//! brought by anti-entropy.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::wire::Body;
use super::{unique, Replica};
use crate::ids::{NodeId, RoomId};
use crate::limits::MISSING_PULL_ROOMS_MAX;

/// Rooms left waiting by a peer's push, each with the peer to ask and
/// when, in the order they are due (every room waits as long).
#[derive(Debug, Default)]
pub struct Waiting {
    queue: VecDeque<(u64, RoomId, NodeId)>,
    rooms: BTreeSet<RoomId>,
}

impl Waiting {
    pub fn next_ms(&self) -> Option<u64> {
        self.queue.front().map(|(at, _, _)| *at)
    }

    /// Queues `room` to be asked of `peer` at `at`; a room already queued
    /// keeps its place (and its peer). `false` when the queue is full: the
    /// caller asks at once.
    fn wait(&mut self, room: &RoomId, peer: &NodeId, at: u64) -> bool {
        if self.rooms.contains(room) {
            return true;
        }
        if self.queue.len() >= MISSING_PULL_ROOMS_MAX {
            return false;
        }
        self.rooms.insert(room.clone());
        self.queue.push_back((at, room.clone(), peer.clone()));
        true
    }

    fn take_due(&mut self, now_ms: u64) -> Vec<(RoomId, NodeId)> {
        let mut due = Vec::new();
        while self.queue.front().is_some_and(|(at, _, _)| *at <= now_ms) {
            if let Some((_, room, peer)) = self.queue.pop_front() {
                self.rooms.remove(&room);
                due.push((room, peer));
            }
        }
        due
    }
}

impl Replica {
    /// Asks `from` for what `rooms` wait for: `pull_missing_after_ms` from
    /// now if they still wait then, or at once when that is 0 (or too many
    /// rooms wait already).
    pub(super) fn pull_missing(&mut self, from: &NodeId, rooms: Vec<RoomId>) {
        let delay = self.config.pull_missing_after_ms;
        let at = self.now_ms.saturating_add(delay);
        let now: Vec<RoomId> = rooms
            .into_iter()
            .filter(|room| delay == 0 || !self.missing.wait(room, from, at))
            .collect();
        self.send_pull(from, now);
    }

    /// On a tick: asks for what the rooms due still wait for. A room
    /// compacted or applied off the task meanwhile is left to that work,
    /// which asks again if its room still waits when it ends.
    pub(super) fn pull_missing_due(&mut self) {
        let mut by_peer: BTreeMap<NodeId, Vec<RoomId>> = BTreeMap::new();
        for (room, peer) in self.missing.take_due(self.now_ms) {
            if self.rooms.pending_len(&room) == 0 {
                self.stats.missing_pulls_spared += 1;
                continue;
            }
            if self.compacting_off_task(&room) || self.applying_off_task(&room) {
                continue;
            }
            by_peer.entry(peer).or_default().push(room);
        }
        for (peer, rooms) in by_peer {
            self.send_pull(&peer, rooms);
        }
    }

    fn send_pull(&mut self, from: &NodeId, rooms: Vec<RoomId>) {
        if rooms.is_empty() {
            return;
        }
        let rooms = unique(rooms);
        self.stats.missing_pulls += rooms.len() as u64;
        let rooms = self.heads_of(rooms);
        self.send(from, Body::ChangesReq { round: 0, rooms });
    }
}
