//! History compaction across replicas (`room::compact`; `docs/protocol.md`,
//! "Compacting long-lived rooms").
//!
//! A replica whose room holds `history_changes_max` changes since its base
//! writes a compaction request into the room, once every replica it knows
//! has said it can compact (the version gate). Every replica then tells the
//! others which request it would cut at (the newest-stamped it holds); once
//! all of them name the same one, each compacts at it on its own (a replica
//! held Down for `compaction_absent_ms` is not waited for: `absent.rs`). The base
//! and the carried tail are the same everywhere, so nothing more has to be
//! agreed. A replica that has not yet compacted when a peer's base reaches
//! it compacts first (`RoomDoc::apply_remote`).

mod absent;
mod catch_up;
mod off_task;

use off_task::Running;

use std::collections::{BTreeMap, BTreeSet};

use automerge::ChangeHash;

use super::overlay::Overlay;
use super::votes::Votes;
use super::wire::{Body, WireHead, ROOMS_PER_MESSAGE_MAX};
use super::{Replica, ReplicaConfig};
use crate::ids::{NodeId, RoomId};
use crate::limits::COMPACTION_ASK_EVERY;
use crate::room::compact::{Request, COMPACTION_FORMAT};
use crate::room::RoomOp;
use crate::rooms::Compaction;

#[derive(Debug, Default)]
pub(super) struct State {
    /// Rooms whose history grew past half the bound: looked at next tick.
    candidates: BTreeSet<RoomId>,
    /// Rooms with a request: the one this replica would cut at, and the
    /// peers that named the same.
    pending: BTreeMap<RoomId, Pending>,
    /// Requests peers named that this replica does not hold (yet): when
    /// replication brings one, it is named back at once, not at the next
    /// tick. At most `ROOMS_PER_MESSAGE_MAX` rooms.
    named: BTreeMap<RoomId, (ChangeHash, BTreeSet<NodeId>)>,
    /// Rooms looked at on a peer's name this interval: once each, however
    /// often peers name them (cleared every tick).
    looked: BTreeSet<RoomId>,
    /// Peers that said they can compact.
    capable: BTreeSet<NodeId>,
    /// Peers that said they speak compaction format 3 or later, and so
    /// read stamped removals. A format-3 peer says so only when it asks or
    /// names requests itself (this build does not answer another format's
    /// question), so during an upgrade from 3 to 4 removals may fall back
    /// to automerge's delete for a while: safe, as before format 3.
    reads_removals: BTreeSet<NodeId>,
    /// When each peer that has not said so was last asked: an older build
    /// answers nothing (it cannot decode the question, and counts a decode
    /// error), so it is asked again only every `COMPACTION_ASK_EVERY`
    /// intervals.
    asked_ms: BTreeMap<NodeId, u64>,
    /// Rooms being compacted off the replica's task (`Output::Work`).
    running: BTreeMap<RoomId, Running>,
    /// Requests whose compaction off the task failed, was given up, or met
    /// a peer's base that differs from the one it computed: a peer's base
    /// at one of them applies like any peer's change (where every format
    /// this build reads is tried and a base that matches none is refused)
    /// rather than starting the same work again. At most
    /// `COMPACTIONS_FAILED_REMEMBERED_MAX` (cleared when full).
    no_peer_start: BTreeMap<RoomId, ChangeHash>,
    /// The number the next job off the task gets (`Running::job`). It
    /// starts from the store's incarnation, as `offload`'s tickets do.
    next_job: u64,
    pub next_ms: u64,
    /// Peers' bases whose cut this replica does not hold, and the peers
    /// that sent each (`catch_up.rs`).
    catch_up_votes: Votes,
    /// When this replica opened: a replica SWIM has not known since counts
    /// as Down from then (`absent.rs`).
    opened_ms: u64,
    /// The replicas compaction went on without at the last tick, for the
    /// journal.
    absent: BTreeSet<NodeId>,
}

#[derive(Debug)]
struct Pending {
    request: ChangeHash,
    acks: BTreeSet<NodeId>,
}

impl State {
    pub fn new(now_ms: u64, config: &ReplicaConfig, incarnation: u64) -> Self {
        Self {
            next_job: (incarnation & 0xffff_ffff) << 32,
            next_ms: now_ms + config.end_ack_interval_ms,
            opened_ms: now_ms,
            ..Self::default()
        }
    }

    /// A number for a job handed off the task.
    fn next_job(&mut self) -> u64 {
        let number = self.next_job;
        self.next_job = self.next_job.wrapping_add(1);
        number
    }

    /// Whether the compaction timer has anything to do (a running
    /// compaction is watched for a result that never comes).
    pub fn busy(&self) -> bool {
        !self.candidates.is_empty() || !self.pending.is_empty() || !self.running.is_empty()
    }
}

impl Replica {
    /// Notes a room after a write: a long history makes it a candidate.
    pub(super) fn note_history(&mut self, room: &RoomId) {
        if !self.config.compaction {
            return;
        }
        let long = self
            .rooms
            .history_len(room)
            .is_some_and(|n| n >= self.config.history_changes_max / 2);
        if long && !self.compaction.busy() {
            // The timer was idle: it runs one interval from now.
            self.compaction.next_ms = self.now_ms + self.config.end_ack_interval_ms;
        }
        if long {
            self.compaction.candidates.insert(room.clone());
        }
        if self.compaction.named.contains_key(room) {
            self.agree_now(room);
        }
    }

    /// Whether every replica awaited has said it can compact.
    fn gate_open(&self) -> bool {
        let known = self.awaited_replicas();
        known.iter().all(|p| self.compaction.capable.contains(p))
    }

    /// Whether this replica writes removals as stamped `null`s: every
    /// replica it awaits reads them (`absent.rs`: as for the gate, a
    /// replica gone that long cannot read compacted rooms anyway, and
    /// rooms compacted while removals fell back to automerge's delete
    /// could not carry them exactly). They came with compaction format 3,
    /// so a peer that said it speaks format 3 or later reads them; a
    /// replica that does not compact, or still waits to hear from a peer,
    /// deletes as older builds do (`docs/data-model.md`, "Removals").
    pub(super) fn stamped_removals(&self) -> bool {
        self.config.compaction
            && self
                .awaited_replicas()
                .iter()
                .all(|p| self.compaction.reads_removals.contains(p))
    }

    /// A peer named a request for `room` that this replica does not hold,
    /// or replication may just have brought it: if the room now holds the
    /// request the peer named, this replica names it back to every peer at
    /// once. The cut is agreed within a round trip of the request reaching
    /// every replica, so the tail carried onto the base (the writes made
    /// meanwhile) stays short; waiting a tick each way made it 5 to 10
    /// seconds of writes.
    fn agree_now(&mut self, room: &RoomId) {
        let had = self.compaction.pending.get(room).map(|p| p.request);
        self.look_at(room, self.gate_open(), false);
        let Some(pending) = self.compaction.pending.get_mut(room) else {
            return;
        };
        let request = pending.request;
        if let Some((head, _)) = self.compaction.named.get(room) {
            if *head != request {
                // Another request than the one named: the ticks' exchange
                // settles which is the newest.
                self.compaction.named.remove(room);
                return;
            }
        }
        if let Some((_, peers)) = self.compaction.named.remove(room) {
            pending.acks.extend(peers);
        }
        if had != Some(request) {
            self.announce(&[(room.clone(), WireHead(request.0))]);
        }
        self.compact_acknowledged();
    }

    /// A peer's base made this replica compact `room`.
    pub(super) fn compacted_by_peer(&mut self, room: &RoomId) {
        self.forget_catch_up(room);
        self.compaction.pending.remove(room);
        self.compaction.named.remove(room);
        self.stats.compactions += 1;
    }

    /// Every replica this one knows of.
    pub(super) fn known_replicas(&self) -> BTreeSet<NodeId> {
        let known = self.peers.keys().chain(self.config.peers.iter()).cloned();
        #[cfg(feature = "mutations")]
        if crate::mutation::compaction_ignores_gate() {
            return known
                .filter(|p| self.compaction.capable.contains(p))
                .collect();
        }
        known.collect()
    }

    pub(super) fn compaction_tick(&mut self) {
        let gate_open = self.gate_open();
        // Names heard but not matched are repeated every tick: the eager
        // path lasts one interval, so a name that never matches (a peer's
        // stale request) stops costing a look per write.
        self.compaction.named.clear();
        self.compaction.looked.clear();
        self.journal_absent();
        self.give_up_late_work();
        for room in std::mem::take(&mut self.compaction.candidates) {
            self.look_at(&room, gate_open, true);
        }
        self.announce_requests();
        self.compact_acknowledged();
    }

    /// Compacts every room whose request every known replica has named
    /// (not while peers' changes into it are applied off the task: the two
    /// copies would each find the room moved when they came back).
    pub(super) fn compact_acknowledged(&mut self) {
        let known = self.awaited_replicas();
        let running = &self.compaction.running;
        let due: Vec<RoomId> = self
            .compaction
            .pending
            .iter()
            .filter(|(room, _)| !running.contains_key(*room))
            .filter(|(room, _)| !self.applying_off_task(room))
            .filter(|(_, p)| known.iter().all(|k| p.acks.contains(k)))
            .map(|(room, _)| room.clone())
            .collect();
        for room in due {
            self.compact_room(&room);
        }
    }

    /// Finds `room`'s request, or (`may_request`) writes one when its
    /// history is long and every replica can compact.
    fn look_at(&mut self, room: &RoomId, gate_open: bool, may_request: bool) {
        if self.compaction.running.contains_key(room) {
            // Its request is agreed and being compacted.
            return;
        }
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let Ok(Some(status)) = self.rooms.compaction_status(&view, room) else {
            self.compaction.pending.remove(room);
            return;
        };
        // An ended room gets no new request (it is purged, not compacted),
        // but one already written is completed: a replica that ended the
        // room while the others compacted must carry its end with them.
        let due = may_request
            && status.request.is_none()
            && status.active
            && status.history >= self.config.history_changes_max;
        if due && !gate_open {
            // Looked at again once every replica has said it can compact.
            self.compaction.candidates.insert(room.clone());
            return;
        }
        let next = status.generation.checked_add(1);
        if let (true, Some(generation)) = (due, next) {
            let request = Request {
                generation,
                prune_before_ms: self.now_ms.saturating_sub(self.config.session_retention_ms),
            };
            if self
                .write_local(room, &RoomOp::RequestCompaction { request })
                .is_err()
            {
                return;
            }
        }
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let Ok(Some(status)) = self.rooms.compaction_status(&view, room) else {
            self.compaction.pending.remove(room);
            return;
        };
        match status.request {
            Some(request) => {
                let known = self
                    .compaction
                    .pending
                    .get(room)
                    .is_some_and(|p| p.request == request);
                if !known {
                    let pending = Pending {
                        request,
                        acks: BTreeSet::new(),
                    };
                    self.compaction.pending.insert(room.clone(), pending);
                }
            }
            None => {
                self.compaction.pending.remove(room);
            }
        }
    }

    /// Tells every peer the requests this replica would cut at.
    fn announce_requests(&mut self) {
        let requests: Vec<(RoomId, WireHead)> = self
            .compaction
            .pending
            .iter()
            .take(ROOMS_PER_MESSAGE_MAX)
            .map(|(room, p)| (room.clone(), WireHead(p.request.0)))
            .collect();
        let peers = self.up_peers();
        let ask_every = self
            .config
            .end_ack_interval_ms
            .saturating_mul(COMPACTION_ASK_EVERY);
        for peer in peers {
            let now = self.now_ms;
            let ask = !self.compaction.capable.contains(&peer)
                && self
                    .compaction
                    .asked_ms
                    .get(&peer)
                    .is_none_or(|at| now.saturating_sub(*at) >= ask_every);
            if ask {
                self.compaction.asked_ms.insert(peer.clone(), now);
            }
            if requests.is_empty() && !ask {
                continue;
            }
            let requests = requests.clone();
            self.send(
                &peer,
                Body::Compaction {
                    format: COMPACTION_FORMAT,
                    ask,
                    requests,
                },
            );
        }
    }

    fn up_peers(&self) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.up)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Names `requests` to every peer that is up, at once.
    fn announce(&mut self, requests: &[(RoomId, WireHead)]) {
        for peer in self.up_peers() {
            self.send(
                &peer,
                Body::Compaction {
                    format: COMPACTION_FORMAT,
                    ask: false,
                    requests: requests.to_vec(),
                },
            );
        }
    }

    pub(super) fn on_compaction(
        &mut self,
        from: &NodeId,
        format: u32,
        ask: bool,
        requests: Vec<(RoomId, WireHead)>,
    ) {
        if !self.config.compaction {
            // An older build does not understand the message.
            return;
        }
        if format >= 3 {
            self.compaction.reads_removals.insert(from.clone());
        } else {
            self.compaction.reads_removals.remove(from);
        }
        if format != COMPACTION_FORMAT {
            // A build that would write another base at the same cut: not
            // capable (it may have been, before a downgrade), and what it
            // named before does not count.
            self.compaction.capable.remove(from);
            for pending in self.compaction.pending.values_mut() {
                pending.acks.remove(from);
            }
            for (_, peers) in self.compaction.named.values_mut() {
                peers.remove(from);
            }
            return;
        }
        self.compaction.capable.insert(from.clone());
        if ask {
            let ours = self
                .compaction
                .pending
                .iter()
                .take(ROOMS_PER_MESSAGE_MAX)
                .map(|(room, p)| (room.clone(), WireHead(p.request.0)))
                .collect();
            self.send(
                from,
                Body::Compaction {
                    format: COMPACTION_FORMAT,
                    ask: false,
                    requests: ours,
                },
            );
        }
        let was_busy = self.compaction.busy();
        // A room named twice in one message counts once: repeats would
        // only repeat the work of looking at it.
        let mut seen = BTreeSet::new();
        for (room, head) in requests {
            if !seen.insert(room.clone()) {
                continue;
            }
            match self.compaction.pending.get_mut(&room) {
                Some(p) if p.request.0 == head.0 => {
                    p.acks.insert(from.clone());
                }
                // Not (yet) the request this replica would cut at: it looks
                // again next tick, once replication has brought it.
                // Only rooms held here, and a bounded number: a peer cannot
                // make this replica load rooms it does not hold.
                _ => {
                    let held = self.rooms.history_len(&room).is_some();
                    if held && self.compaction.candidates.len() < ROOMS_PER_MESSAGE_MAX {
                        self.compaction.candidates.insert(room.clone());
                    }
                    if held {
                        self.heard_name(from, room, ChangeHash(head.0));
                    }
                }
            }
        }
        if !was_busy && self.compaction.busy() {
            // The timer was idle: it runs one interval from now.
            self.compaction.next_ms = self.now_ms + self.config.end_ack_interval_ms;
        }
        // The last ack may have arrived: compact without waiting.
        self.compact_acknowledged();
    }

    /// `from` named `request` for `room`, which this replica does not cut
    /// at (yet). The first time a request is heard of, the room is looked
    /// at right away; later names only join it.
    fn heard_name(&mut self, from: &NodeId, room: RoomId, request: ChangeHash) {
        let named = &mut self.compaction.named;
        let full = named.len() >= ROOMS_PER_MESSAGE_MAX;
        let first = match named.get_mut(&room) {
            Some((head, peers)) if *head == request => {
                peers.insert(from.clone());
                false
            }
            Some(entry) => {
                *entry = (request, BTreeSet::from([from.clone()]));
                true
            }
            None if !full => {
                named.insert(room.clone(), (request, BTreeSet::from([from.clone()])));
                true
            }
            None => false,
        };
        let looked = &mut self.compaction.looked;
        if first && looked.len() < ROOMS_PER_MESSAGE_MAX && looked.insert(room.clone()) {
            self.agree_now(&room);
        }
    }

    /// Forgets `room` (purged, or gone): nothing to acknowledge any more.
    pub(super) fn compaction_forget(&mut self, room: &RoomId) {
        self.compaction.running.remove(room);
        self.compaction.no_peer_start.remove(room);
        self.compaction.pending.remove(room);
        self.compaction.candidates.remove(room);
        self.compaction.named.remove(room);
    }

    fn compact_room(&mut self, room: &RoomId) {
        if self.config.work_off_task {
            self.compact_off_task(room);
            return;
        }
        self.compaction.named.remove(room);
        let Some(pending) = self.compaction.pending.remove(room) else {
            return;
        };
        let stamp = self.hlc.tick(self.now_ms);
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        match self.rooms.compact(&view, room, pending.request, stamp) {
            Ok(Some(done)) => self.compacted(room, stamp, done),
            Ok(None) => {}
            Err(_) => self.stats.storage_errors += 1,
        }
    }

    fn compacted(&mut self, room: &RoomId, stamp: crate::hlc::Timestamp, done: Compaction) {
        self.staged.add(done.batch, true);
        let logged = self.log_rest(stamp, done.log_rest);
        self.stats.compactions += 1;
        self.forget_catch_up(room);
        // Peers' changes parked for the new history applied with it: they
        // are announced like any peer's changes (an end among them is
        // acknowledged, a moved call is seen).
        let origin = crate::events::Origin::Remote;
        self.after_change(room, origin, done.kinds, Some(logged));
        // A tail carried under a high write rate may already be long
        // enough for the next compaction.
        self.note_history(room);
    }
}
