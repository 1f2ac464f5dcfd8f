//! The two catch-up paths that do not walk the digest tree (see round.rs
//! for how a round picks one): *since* replays the peer's change log after
//! our cursor; *snapshot* copies whole rooms, in pages, when the gap is too
//! large or the log was trimmed past our cursor.

use super::round::Phase;
use super::wire::{Body, RoomChanges, RoomDocument, ROOMS_PER_MESSAGE_MAX};
use super::{Replica, SyncPath};
use crate::hlc::Timestamp;
use crate::ids::{NodeId, RoomId};

impl Replica {
    pub(super) fn on_since(
        &mut self,
        peer: &NodeId,
        id: u64,
        rooms: Vec<RoomChanges>,
        next_cursor: Timestamp,
        complete: bool,
    ) {
        let (known, peer_root) = match self.round_mut(peer, id).map(|r| &mut r.phase) {
            Some(Phase::Since { known, peer_root }) => (std::mem::take(known), *peer_root),
            _ => return,
        };
        let applied = self.apply_room_changes(peer, rooms);
        if let Some(round) = self.peers.get_mut(peer).and_then(|p| p.round.as_mut()) {
            round.changes += applied;
        }
        // Everything up to next_cursor is now staged, ahead of the cursor
        // write, or taken off the task, and the write waits for it.
        self.set_cursor_after_applies(peer, next_cursor);
        let changes = self
            .peers
            .get(peer)
            .and_then(|p| p.round.as_ref())
            .map_or(0, |r| r.changes);
        if complete && changes == 0 && self.rooms.tree().root() != peer_root {
            // The peer's log held nothing we lacked, yet the roots differ:
            // the difference is one a log cannot show (a purge, a change
            // the peer lacks, a trimmed log). Walk the tree in this round
            // rather than leave it to the peer's next incremental turn.
            self.count_finished(peer, SyncPath::Since, 0);
            self.begin_path(peer, id, SyncPath::Incremental, None, peer_root);
        } else if complete {
            self.finish_round(peer, Some(SyncPath::Since));
        } else {
            let body = Body::SinceReq {
                round: id,
                cursor: next_cursor,
                known: known.clone(),
            };
            self.request(peer, Phase::Since { known, peer_root }, body);
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
        // Bounded over the whole round, not just per message: a peer could
        // otherwise list rooms without end. What does not fit is caught
        // by a later incremental round.
        let room_left = ROOMS_PER_MESSAGE_MAX.saturating_sub(big.len());
        big.extend(too_large.into_iter().take(room_left));
        let big = big.clone();
        let mut applied = 0;
        for RoomDocument { room, doc } in rooms {
            // Bounded like an import; what the changes do is validated
            // when they are applied, like any peer's.
            let changes = match crate::room::import::load_document(&doc) {
                Ok(doc) => doc.get_changes(&[]),
                Err(_) => {
                    self.stats.changes_rejected += 1;
                    continue;
                }
            };
            self.stats.changes_received += changes.len() as u64;
            applied += self.take_counted(peer, &room, changes);
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
                // The log head is earned once the large rooms are fetched
                // too: a round that times out before leaves the cursor.
                if let Some(round) = self.peers.get_mut(peer).and_then(|p| p.round.as_mut()) {
                    round.cursor_at_end = Some(head);
                }
                self.fetch_rooms(peer, id, SyncPath::Full, big);
            }
        }
    }
}
