//! One anti-entropy round, from our side: open with digests, then bring
//! ourselves level with the peer by whichever path fits the gap.
//!
//! ```text
//! DigestReq ─► DigestResp ─┬─ roots equal ──────────────► done (cursor := peer's log head)
//!                          ├─ cursor covered, gap small ─► SinceReq ⇄ SinceResp … ► done
//!                          ├─ empty, or gap too large ───► SnapshotReq ⇄ SnapshotResp … ► done
//!                          └─ otherwise ─────────────────► TreeReq ⇄ TreeResp (×3)
//!                                                          ► LeafReq ⇄ LeafResp
//!                                                            (LeafHeadsReq ⇄ LeafHeadsResp
//!                                                             with a peer that reads it)
//!                                                          ► ChangesReq ⇄ ChangesResp … ► done
//! ```
//! Each round pulls; the peer pulls in its own rounds (and a `ChangesReq`
//! showing heads it lacks makes it pull back, one peer at a time). The
//! since path takes gaps of at most `SINCE_LIST_ENTRIES_MAX` entries; a
//! larger one is walked, and a walk that finishes moves the cursor to the
//! peer's log head as the digest answer gave it. The walk's steps after
//! the digest (tree, leaves, changes) are in `walk.rs`.

use std::collections::BTreeMap;

use super::wire::{Body, Digest, WireHead, KNOWN_HASHES_MAX};
use super::{Event, Replica, SyncPath};
use crate::hlc::Timestamp;
use crate::ids::{NodeId, RoomId};
use crate::limits::{CHANGES_FIRST_ASK_ROOMS, KNOWN_LOOKBACK_MS};
use crate::limits::{ROUND_REQUESTS_MAX, SINCE_LIST_ENTRIES_MAX};

/// The anti-entropy component's state (each peer's open round lives with
/// the peer).
#[derive(Debug)]
pub(super) struct State {
    /// The id of the next round this replica opens.
    pub next_round: u64,
    pub next_anti_entropy_ms: u64,
    /// The order this replica rounds with its peers in (`anti_entropy_turn`),
    /// and the position of the next peer in it.
    pub order: Vec<NodeId>,
    pub turn: usize,
    /// How many peers there were when `order` was drawn: a near peer is
    /// in it more than once, so its length does not tell.
    pub order_peers: usize,
    /// Whether `order` was drawn knowing which peers are near (from their
    /// health reports): until then the next turn checks again, and draws
    /// anew once they are known rather than at the end of the cycle.
    pub order_near: bool,
    /// The peer a pull-back (`serve_changes`) is out to, and until when
    /// its answer is awaited: one at a time, or every peer that walks us
    /// after a heal would be asked for the same changes.
    pub pulling_back: Option<(NodeId, u64)>,
    /// How many peers have a round open: the next deadline is looked for
    /// among the peers only while one has (at 200 peers, walking them all
    /// after every input was 4 % of a simulated run's time).
    pub rounds_open: usize,
}

impl State {
    pub fn new(now_ms: u64) -> Self {
        Self {
            next_round: 1,
            next_anti_entropy_ms: now_ms,
            order: Vec::new(),
            turn: 0,
            order_peers: 0,
            order_near: false,
            pulling_back: None,
            rounds_open: 0,
        }
    }
}

#[derive(Debug)]
pub struct Round {
    pub id: u64,
    /// When the round opened (`chorus_sync_round_seconds`).
    pub started_ms: u64,
    pub deadline_ms: u64,
    pub requests: u32,
    pub changes: u64,
    pub phase: Phase,
    /// Our root when the round opened.
    pub sent_root: Digest,
    /// A cursor the round earns only by finishing: the full path's log
    /// head covers the large rooms it fetches last.
    pub cursor_at_end: Option<Timestamp>,
    /// The peer's heads of the rooms being fetched, from its leaf answer
    /// (`LeafHeadsResp`): after a cut answer, a room whose heads we now
    /// hold is not asked for again.
    pub peer_heads: BTreeMap<RoomId, Vec<WireHead>>,
    /// Rooms to name in the next `ChangesReq` (`CHANGES_FIRST_ASK_ROOMS`).
    pub batch_rooms: usize,
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
    Since {
        /// Hash prefixes of changes we hold that the peer may list.
        known: Vec<[u8; 8]>,
        /// The peer's root when the round opened.
        peer_root: Digest,
    },
    Snapshot {
        log_head: Option<Timestamp>,
        too_large: Vec<RoomId>,
    },
}

impl Phase {
    /// Whether the round is bringing changes in right now: asking for
    /// them, not walking the tree, and not parked while the rooms it still
    /// fetches apply (or compact) off the task.
    pub fn fetching(&self) -> bool {
        match self {
            Phase::Changes { in_flight, .. } => !in_flight.is_empty(),
            Phase::Since { .. } | Phase::Snapshot { .. } => true,
            Phase::Digest | Phase::Tree { .. } | Phase::Leaves => false,
        }
    }
}

impl Replica {
    pub(super) fn start_round(&mut self, peer: &NodeId) {
        let id = self.anti_entropy.next_round;
        self.anti_entropy.next_round += 1;
        let deadline_ms = self.now_ms + self.config.round_timeout_ms;
        let cursor = self.peers.get(peer).and_then(|p| p.cursor);
        let Some(state) = self.peers.get_mut(peer) else {
            return;
        };
        // A round is opened only for a peer without one (the callers
        // check), so this counts one more open round.
        debug_assert!(state.round.is_none(), "a second round with one peer");
        let was_open = state.round.is_some();
        state.round = Some(Round {
            id,
            started_ms: self.now_ms,
            deadline_ms,
            requests: 1,
            changes: 0,
            phase: Phase::Digest,
            sent_root: self.rooms.tree().root(),
            cursor_at_end: None,
            peer_heads: BTreeMap::new(),
            batch_rooms: CHANGES_FIRST_ASK_ROOMS,
        });
        if !was_open {
            self.anti_entropy.rounds_open += 1;
        }
        self.stats.rounds_started += 1;
        self.tell_reads(peer);
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
    pub(super) fn round_mut(&mut self, peer: &NodeId, id: u64) -> Option<&mut Round> {
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
    pub(super) fn request(&mut self, peer: &NodeId, phase: Phase, body: Body) {
        let Some(round) = self.peers.get_mut(peer).and_then(|p| p.round.as_mut()) else {
            return;
        };
        round.requests += 1;
        if round.requests > ROUND_REQUESTS_MAX {
            self.stats.rounds_timed_out += 1;
            self.close_round(peer);
            return;
        }
        round.phase = phase;
        self.send(peer, body);
    }

    /// Takes the peer's open round away: the one way a round closes, so
    /// that `State::rounds_open` stays exact (a count too low would hide a
    /// round's deadline from `poll_timeout`).
    pub(super) fn close_round(&mut self, peer: &NodeId) -> Option<Round> {
        let round = self.peers.get_mut(peer).and_then(|p| p.round.take());
        if round.is_some() {
            debug_assert!(
                self.anti_entropy.rounds_open > 0,
                "rounds_open counts rounds"
            );
            self.anti_entropy.rounds_open = self.anti_entropy.rounds_open.saturating_sub(1);
        }
        round
    }

    pub(super) fn finish_round(&mut self, peer: &NodeId, path: Option<SyncPath>) {
        let round = self.close_round(peer);
        if let Some(round) = &round {
            let took_ms = self.now_ms.saturating_sub(round.started_ms);
            self.stats.latency.sync_round.observe_ms(took_ms);
        }
        let Some(path) = path else {
            self.stats.rounds_idle += 1;
            return;
        };
        let changes = round.as_ref().map_or(0, |r| r.changes);
        if let Some(cursor) = round.and_then(|r| r.cursor_at_end) {
            self.set_cursor_after_applies(peer, cursor);
        }
        self.count_finished(peer, path, changes);
    }

    /// Rounds parked while the rooms they still fetch had a copy out
    /// (`fetch_rooms`) fetch them now.
    pub(super) fn resume_rounds(&mut self) {
        let parked: Vec<(NodeId, u64, SyncPath, Vec<RoomId>)> = self
            .peers
            .iter_mut()
            .filter_map(|(peer, p)| {
                let round = p.round.as_mut()?;
                match &mut round.phase {
                    Phase::Changes {
                        path,
                        in_flight,
                        queued,
                    } if in_flight.is_empty() && !queued.is_empty() => {
                        Some((peer.clone(), round.id, *path, std::mem::take(queued)))
                    }
                    _ => None,
                }
            })
            .collect();
        for (peer, id, path, queued) in parked {
            self.fetch_rooms(&peer, id, path, queued);
        }
    }

    pub(super) fn count_finished(&mut self, peer: &NodeId, path: SyncPath, changes: u64) {
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
        let due: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.round.as_ref().is_some_and(|r| r.deadline_ms <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for peer in due {
            if let Some(round) = self.close_round(&peer) {
                self.stats.rounds_timed_out += 1;
                self.forget_reads_on_timeout(&peer, &round.phase);
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
        let Some(round) = self.round_mut(peer, id) else {
            return;
        };
        // Equal to the root we opened with: the peer held nothing we lacked
        // when it answered, even if a push changed our root since. (Without
        // this, that race looks like an uncountable gap and forces a full
        // snapshot.)
        let equal_at_open = root == round.sent_root;
        if equal_at_open || root == self.rooms.tree().root() {
            // Equal roots: we hold everything the peer's log held until now.
            self.set_cursor(peer, log_head);
            self.finish_round(peer, None);
            return;
        }
        if self.pulling_elsewhere(peer) {
            // Another round is already bringing us level (typically every
            // link came up at once after a heal): pulling the same changes
            // from every peer at once would multiply the traffic. The next
            // turn with this peer fetches whatever is still missing.
            self.stats.rounds_deferred += 1;
            self.finish_round(peer, None);
            return;
        }
        let cursor = self.peers.get(peer).and_then(|p| p.cursor);
        let listed = SINCE_LIST_ENTRIES_MAX.min(self.config.since_entries_max);
        let path = match (cursor, since_count) {
            _ if self.rooms.tree().is_empty() => SyncPath::Full,
            (Some(_), Some(n)) if n > 0 && n <= listed => SyncPath::Since,
            // A larger gap is walked: the walk costs what differs now, where
            // the since path costs the peer's whole log since our cursor (and
            // our list of what we hold of it), most of which reached us by
            // push or from a third replica.
            (Some(_), Some(n)) if n <= self.config.since_entries_max => SyncPath::Incremental,
            (Some(_), _) => SyncPath::Full, // past the peer's horizon, or too large a gap
            (None, _) => SyncPath::Incremental,
        };
        self.begin_path(peer, id, path, cursor, root);
        if path == SyncPath::Incremental {
            // A walk that finishes leaves us holding everything the peer's
            // log held when it answered: every room it had then either
            // matched or was fetched. The cursor moves there, so the next
            // round's gap stays small.
            if let Some(round) = self.peers.get_mut(peer).and_then(|p| p.round.as_mut()) {
                round.cursor_at_end = Some(log_head);
            }
        }
    }

    /// Whether a round with another peer is past its digest exchange.
    fn pulling_elsewhere(&self, peer: &NodeId) -> bool {
        self.peers.iter().any(|(id, p)| {
            id != peer
                && p.round
                    .as_ref()
                    .is_some_and(|r| !matches!(r.phase, Phase::Digest))
        })
    }

    pub(super) fn begin_path(
        &mut self,
        peer: &NodeId,
        id: u64,
        path: SyncPath,
        cursor: Option<Timestamp>,
        peer_root: Digest,
    ) {
        self.emit(Event::SyncStarted {
            peer: peer.clone(),
            path,
        });
        match (path, cursor) {
            (SyncPath::Since, Some(cursor)) => {
                let known = self.known_since(&cursor);
                let body = Body::SinceReq {
                    round: id,
                    cursor,
                    known: known.clone(),
                };
                self.request(peer, Phase::Since { known, peer_root }, body);
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
            self.begin_path(peer, id, SyncPath::Full, None, Digest::default());
        }
    }
}

impl Replica {
    /// Hash prefixes of changes in our log from shortly before `cursor`:
    /// the ones the peer's since-answer would otherwise resend (we got them
    /// by push or from a third replica). Purely an optimisation: a change
    /// left off is resent and applied idempotently.
    pub(super) fn known_since(&mut self, cursor: &Timestamp) -> Vec<[u8; 8]> {
        let from = Timestamp {
            wall_ms: cursor.wall_ms.saturating_sub(KNOWN_LOOKBACK_MS),
            logical: 0,
            actor: 0,
        };
        let view = super::overlay::Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let Ok(entries) = crate::rooms::RoomSet::log_after(&view, Some(&from), KNOWN_HASHES_MAX)
        else {
            self.stats.storage_errors += 1;
            return Vec::new();
        };
        let mut known = Vec::new();
        'entries: for (_, entry) in entries {
            for hash in entry.hashes {
                if known.len() == KNOWN_HASHES_MAX {
                    break 'entries;
                }
                known.push(hash_prefix(&hash.0));
            }
        }
        known
    }
}

/// The first 8 bytes of a change hash: enough to tell a log's changes apart
/// (a false match needs a 2^-64 collision and only delays one change to the
/// next incremental round).
pub(super) fn hash_prefix(hash: &[u8; 32]) -> [u8; 8] {
    let mut prefix = [0; 8];
    prefix.copy_from_slice(&hash[..8]);
    prefix
}
