//! Asking a pusher for the changes its push depended on but did not
//! bring, once the race that usually explains them is over.
//!
//! A room's waiting changes are counted per room, not per push, so once
//! one change waited, every push into the room asked again: in the
//! three-daemon churn bench about one push in three was followed by a
//! `ChangesReq` (about 110 a second per replica), each costing the pusher
//! a walk of the room's history and the asker an answer to apply, and
//! often a pull back. (Most waited there for good: a compacted room's
//! peers' changes of the replaced history, which are now ignored,
//! `RoomDoc::drop_superseded`.) Pushes from different peers also race: a
//! change that depends on a third replica's may arrive just before that
//! replica's own push of it. So a push that leaves the room with changes
//! waiting is followed by a request `pull_missing_after_ms` later, only
//! if some of the push's own changes that waited then (up to
//! `MISSING_PULL_WATCHED_MAX` of them) still wait; a push all of whose
//! changes applied asks nothing, whatever else waits in the room, and
//! further pushes from the same peer meanwhile ask nothing more. If the
//! watched changes all left but others wait now, the room is looked at
//! again one wait later, watching those. A push truly lost is asked for
//! that much later, or brought by anti-entropy.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use automerge::ChangeHash;

use super::wire::Body;
use super::{unique, Replica};
use crate::ids::{NodeId, RoomId};
use crate::limits::{MISSING_PULL_ROOMS_MAX, MISSING_PULL_WATCHED_MAX};

/// A room left waiting by a peer's push: when to look again, and some of
/// the changes that waited then.
#[derive(Debug)]
struct Entry {
    at: u64,
    room: RoomId,
    peer: NodeId,
    watched: Vec<ChangeHash>,
}

/// Rooms left waiting by peers' pushes, in the order they are due (every
/// room waits as long, and time never goes back).
#[derive(Debug, Default)]
pub struct Waiting {
    queue: VecDeque<Entry>,
    queued: BTreeSet<(RoomId, NodeId)>,
}

impl Waiting {
    pub fn next_ms(&self) -> Option<u64> {
        self.queue.front().map(|e| e.at)
    }

    /// Queues `room` to be looked at again for `peer` at `at`, watching
    /// `watched`; already queued for that peer, it keeps its place
    /// (another peer's push may lack other changes, so it is queued for
    /// that peer too). `false` when the queue is full: the caller asks at
    /// once.
    fn wait(&mut self, room: &RoomId, peer: &NodeId, at: u64, watched: Vec<ChangeHash>) -> bool {
        let key = (room.clone(), peer.clone());
        if self.queued.contains(&key) {
            return true;
        }
        if self.queue.len() >= MISSING_PULL_ROOMS_MAX {
            return false;
        }
        self.queued.insert(key);
        self.queue.push_back(Entry {
            at,
            room: room.clone(),
            peer: peer.clone(),
            watched,
        });
        true
    }

    fn take_due(&mut self, now_ms: u64) -> Vec<Entry> {
        let mut due = Vec::new();
        while self.queue.front().is_some_and(|e| e.at <= now_ms) {
            if let Some(entry) = self.queue.pop_front() {
                self.queued
                    .remove(&(entry.room.clone(), entry.peer.clone()));
                due.push(entry);
            }
        }
        due
    }
}

impl Replica {
    /// Asks `from` for what the changes it sent (`rooms`: each room with
    /// the hashes of the changes sent) wait for: `pull_missing_after_ms`
    /// from now if some still wait then, or at once when that is 0 (or too
    /// many rooms wait already). A room where none of them waits is not
    /// asked about.
    pub(super) fn pull_missing(&mut self, from: &NodeId, rooms: Vec<(RoomId, Vec<ChangeHash>)>) {
        let mut now = Vec::new();
        for (room, sent) in rooms {
            let watched = self
                .rooms
                .waiting_among(&room, &sent, MISSING_PULL_WATCHED_MAX);
            if !watched.is_empty() && !self.wait_for(&room, from, watched) {
                now.push(room);
            }
        }
        self.send_pull(from, now);
    }

    /// Queues `room` for `peer`, watching `watched` (`false`: ask at once,
    /// with no wait set or the queue full).
    fn wait_for(&mut self, room: &RoomId, peer: &NodeId, watched: Vec<ChangeHash>) -> bool {
        if self.config.pull_missing_after_ms == 0 {
            return false;
        }
        let at = self
            .now_ms
            .saturating_add(self.config.pull_missing_after_ms);
        self.missing.wait(room, peer, at, watched)
    }

    /// On a tick: asks for what the rooms due still wait for. A room whose
    /// watched changes all left `pending` meanwhile (applied, or ignored
    /// as of a replaced history) is spared, or looked at again one wait
    /// later if other changes wait in it now (a later push's). A room
    /// being compacted or applied off the task is looked at again one wait
    /// later, for as long as that work runs (it may hold its changes). A
    /// room no longer in memory lost its waiting changes with it: it is
    /// asked for all the same, and the answer brings them again.
    pub(super) fn pull_missing_due(&mut self) {
        let mut by_peer: BTreeMap<NodeId, Vec<RoomId>> = BTreeMap::new();
        for Entry {
            room,
            peer,
            watched,
            ..
        } in self.missing.take_due(self.now_ms)
        {
            if self.rooms.is_purged(&room) {
                continue;
            }
            let still = self.rooms.any_pending(&room, &watched);
            if still == Some(false) {
                let others = self
                    .rooms
                    .pending_hashes(&room, MISSING_PULL_WATCHED_MAX)
                    .unwrap_or_default();
                if others.is_empty() {
                    self.stats.missing_pulls_spared += 1;
                } else if !self.wait_for(&room, &peer, others) {
                    by_peer.entry(peer).or_default().push(room);
                }
                continue;
            }
            let busy = self.compacting_off_task(&room) || self.applying_off_task(&room);
            if busy && self.wait_for(&room, &peer, watched) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn room(id: &str) -> RoomId {
        RoomId::parse(id).expect("valid")
    }

    fn node(id: &str) -> NodeId {
        NodeId::parse(id).expect("valid")
    }

    fn due(entries: Vec<Entry>) -> Vec<(RoomId, NodeId)> {
        entries.into_iter().map(|e| (e.room, e.peer)).collect()
    }

    #[test]
    fn a_room_is_asked_of_each_peer_whose_push_left_it_waiting_once() {
        let mut waiting = Waiting::default();
        assert!(waiting.wait(&room("r"), &node("a"), 20, Vec::new()));
        assert!(
            waiting.wait(&room("r"), &node("a"), 25, Vec::new()),
            "already queued"
        );
        assert!(waiting.wait(&room("r"), &node("b"), 25, Vec::new()));
        assert!(waiting.wait(&room("s"), &node("a"), 30, Vec::new()));
        assert_eq!(waiting.next_ms(), Some(20));
        assert!(waiting.take_due(19).is_empty());
        assert_eq!(
            due(waiting.take_due(25)),
            vec![(room("r"), node("a")), (room("r"), node("b"))]
        );
        assert_eq!(waiting.next_ms(), Some(30));
        assert!(
            waiting.wait(&room("r"), &node("a"), 40, Vec::new()),
            "queued again once asked"
        );
        assert_eq!(
            due(waiting.take_due(100)),
            vec![(room("s"), node("a")), (room("r"), node("a"))]
        );
        assert_eq!(waiting.next_ms(), None);
    }

    #[test]
    fn past_the_bound_a_room_is_asked_for_at_once() {
        let mut waiting = Waiting::default();
        for i in 0..MISSING_PULL_ROOMS_MAX {
            assert!(waiting.wait(&room(&format!("r{i}")), &node("a"), 20, Vec::new()));
        }
        assert!(!waiting.wait(&room("one-more"), &node("a"), 20, Vec::new()));
        assert!(
            waiting.wait(&room("r0"), &node("a"), 20, Vec::new()),
            "already queued"
        );
    }
}
