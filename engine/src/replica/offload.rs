//! Peers' changes into a large room, applied off the replica's task.
//!
//! automerge walks a room's whole operation set to apply a batch, however
//! few changes it holds: into a room of 10 000 sessions one push or one
//! sync response took a replica 150 to 460 ms, longer than the failure
//! detector's 200 ms probe deadline, and its peers graded it Suspect while
//! it caught up. So with `ReplicaConfig::work_off_task`, a room past
//! `apply_off_task_ops` operations (`ReplicaConfig`) is applied on a copy
//! (`rooms::Fork::prepare_each`, run by the driver as `Output::Work`) and
//! the copy swapped in if the room has not moved meanwhile
//! (`RoomSet::install`); otherwise the changes apply in line, as before,
//! and so do the room's next batches for `APPLY_IN_LINE_AFTER_REDO_MS`:
//! a room this replica writes to steadily gains nothing from copies (each
//! one applied twice), and they kept the worker from its compactions. Each
//! of those batches then costs an in-line apply of its own.
//!
//! While a room's copy is out, later changes for it wait (at most
//! `APPLY_HELD_BYTES_MAX`) and go out together in the next copy, so a
//! catch-up streams through one copy at a time. A peer's since-cursor is
//! written only once every change taken off the task before it (here, or
//! held back by a compaction) is installed, and not at all if one of them
//! was dropped: the cursor invariant of `docs/protocol.md`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use automerge::{Change, ChangeHash};

use super::io::{Job, Work};
use super::overlay::Overlay;
use super::{Event, Output, Replica};
use crate::error::Error;
use crate::hlc::Timestamp;
use crate::ids::{NodeId, RoomId};
use crate::limits::{
    APPLYING_ROOMS_MAX, APPLY_HELD_BYTES_MAX, APPLY_IN_LINE_AFTER_REDO_MS, APPLY_REDONE_ROOMS_MAX,
    COMPACTION_WORK_MS_MAX, DEFERRED_CURSORS_MAX,
};
use crate::rooms::{Fork, Installed, PreparedImport, RemoteWrite};

#[derive(Debug, Default)]
pub(super) struct State {
    rooms: BTreeMap<RoomId, Applying>,
    /// Numbers every batch taken off the task, in order. It starts from
    /// the store's incarnation, so a reopened replica never takes its
    /// predecessor's copy for its own.
    next_ticket: u64,
    /// Since-cursors waiting for the batches taken before them: each is
    /// written once no batch up to its ticket is outstanding.
    cursors: VecDeque<(u64, NodeId, Timestamp)>,
    /// Peers a batch from was dropped since their last cursor was asked
    /// for: that cursor would claim it, so it is not written.
    poisoned: BTreeSet<NodeId>,
    /// Every peer's next cursor is not written (a copy given up, a room
    /// forgotten: their batches came from any peer).
    poisoned_all: bool,
    /// The ticket batches re-offered after a compaction keep (they were
    /// taken off the task when it held them).
    pub(super) carried: Option<u64>,
    /// Rooms whose last copy came back after a write to the room, and
    /// until when their peers' changes apply in line
    /// (`APPLY_IN_LINE_AFTER_REDO_MS`).
    redone: BTreeMap<RoomId, u64>,
}

impl State {
    pub fn new(incarnation: u64) -> Self {
        Self {
            next_ticket: (incarnation & 0xffff_ffff) << 32,
            ..Self::default()
        }
    }

    /// A new ticket, or the one a re-offered batch carries.
    pub(super) fn ticket(&mut self) -> u64 {
        if let Some(ticket) = self.carried {
            return ticket;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        ticket
    }

    /// A batch taken off the task was dropped (`from`: sent by that peer;
    /// `None`: by any): its sender's cursors waiting now, and the next one
    /// asked for, are not written.
    pub(super) fn poison(&mut self, from: Option<&NodeId>) {
        match from {
            Some(peer) => {
                self.cursors.retain(|(_, p, _)| p != peer);
                self.poisoned.insert(peer.clone());
            }
            None => {
                self.cursors.clear();
                self.poisoned_all = true;
            }
        }
    }

    /// Whether `peer`'s cursor asked for now is not to be written (and the
    /// next one may be).
    fn take_poison(&mut self, peer: &NodeId, known: impl Iterator<Item = NodeId>) -> bool {
        if std::mem::take(&mut self.poisoned_all) {
            self.poisoned.extend(known);
        }
        self.poisoned.remove(peer)
    }
}

/// A room whose peers' changes are applied off the task.
#[derive(Debug, Default)]
struct Applying {
    /// The oldest ticket of the batches on the copy out now.
    running: Option<u64>,
    /// When that copy went out.
    started_ms: u64,
    /// Batches that arrived meanwhile, for the next copy.
    held: Vec<(NodeId, Vec<Change>)>,
    held_bytes: usize,
    held_ticket: Option<u64>,
}

impl Applying {
    fn oldest(&self) -> Option<u64> {
        match (self.running, self.held_ticket) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Peers' changes to apply on a copy of their room.
pub struct ApplyJob {
    fork: Fork,
    batches: Vec<(NodeId, Vec<Change>)>,
    ticket: u64,
}

impl std::fmt::Debug for ApplyJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyJob")
            .field("room", self.fork.room())
            .field("batches", &self.batches.len())
            .finish_non_exhaustive()
    }
}

impl ApplyJob {
    /// Applies the changes on the copy (on any thread).
    pub(super) fn run(self) -> Applied {
        let room = self.fork.room().clone();
        let changes: Vec<Change> = self
            .batches
            .iter()
            .flat_map(|(_, changes)| changes.iter().cloned())
            .collect();
        let fork = self.fork;
        let prepared = crate::room::import::unless_panic("apply", || fork.prepare_each(changes))
            .and_then(|result| result);
        Applied {
            room,
            batches: self.batches,
            ticket: self.ticket,
            prepared,
        }
    }
}

/// An `ApplyJob`'s result, to install.
#[derive(Debug)]
pub struct Applied {
    room: RoomId,
    batches: Vec<(NodeId, Vec<Change>)>,
    ticket: u64,
    prepared: Result<PreparedImport, Error>,
}

/// What became of a peer's changes.
pub(super) enum Taken {
    /// Applied in line (`None`: refused, or the room is purged). Boxed:
    /// a write is large beside a count.
    InLine(Option<Box<RemoteWrite>>),
    /// Handed off or held for the next copy (0: dropped, too many held).
    OffTask(usize),
}

impl Replica {
    /// Takes a peer's changes off the task if their room is large (or
    /// already has a copy out); `None`: apply them in line.
    pub(super) fn take_off_task(
        &mut self,
        from: &NodeId,
        room: &RoomId,
        changes: &mut Vec<Change>,
    ) -> Option<usize> {
        if !self.config.work_off_task || changes.is_empty() {
            return None;
        }
        let n = changes.len();
        if let Some(held) = self.offload.rooms.get(room).map(|a| a.held_bytes) {
            let bytes: usize = changes.iter().map(|c| c.raw_bytes().len()).sum();
            let total = held
                .checked_add(bytes)
                .filter(|t| *t <= APPLY_HELD_BYTES_MAX);
            let Some(total) = total else {
                // They come again by anti-entropy; a cursor must not
                // claim them meanwhile.
                self.stats.apply_held_dropped += 1;
                self.offload.poison(Some(from));
                changes.clear();
                return Some(0);
            };
            let ticket = self.offload.ticket();
            if let Some(applying) = self.offload.rooms.get_mut(room) {
                let oldest = applying.held_ticket.map_or(ticket, |t| t.min(ticket));
                applying.held_ticket = Some(oldest);
                applying.held_bytes = total;
                applying.held.push((from.clone(), std::mem::take(changes)));
            }
            return Some(n);
        }
        let large = self.worth_a_copy(room);
        let busy = self.compacting_off_task(room) || self.offload.rooms.len() >= APPLYING_ROOMS_MAX;
        if !large || busy {
            return None;
        }
        let ticket = self.offload.ticket();
        let batches = vec![(from.clone(), std::mem::take(changes))];
        match self.hand_off(room, batches, ticket) {
            Ok(()) => Some(n),
            Err(mut batches) => {
                if let Some((_, back)) = batches.pop() {
                    *changes = back;
                }
                None
            }
        }
    }

    /// Sends a copy of `room` out with `batches` to apply on it; gives the
    /// batches back if the room cannot be copied (purged, unreadable: the
    /// in-line path says why).
    fn hand_off(
        &mut self,
        room: &RoomId,
        batches: Vec<(NodeId, Vec<Change>)>,
        ticket: u64,
    ) -> Result<(), Vec<(NodeId, Vec<Change>)>> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let Ok(fork) = self.rooms.fork(&view, room) else {
            return Err(batches);
        };
        let applying = self.offload.rooms.entry(room.clone()).or_default();
        applying.running = Some(ticket);
        applying.started_ms = self.now_ms;
        let job = ApplyJob {
            fork,
            batches,
            ticket,
        };
        self.pending_outputs
            .push(Output::Work(Work(Job::Apply(Box::new(job)))));
        self.stats.applies_off_task += 1;
        Ok(())
    }

    /// Whether peers' changes for `room` are being applied off the task.
    pub(super) fn applying_off_task(&self, room: &RoomId) -> bool {
        self.offload.rooms.contains_key(room)
    }

    /// Whether a copy is out (its result is watched for).
    pub(super) fn offloading(&self) -> bool {
        !self.offload.rooms.is_empty()
    }

    /// Writes `peer`'s since-cursor now, or once every batch taken off
    /// the task before it is installed; not at all if one was dropped.
    pub(super) fn set_cursor_after_applies(&mut self, peer: &NodeId, cursor: Timestamp) {
        let known: Vec<NodeId> = self.peers.keys().cloned().collect();
        if self.offload.take_poison(peer, known.into_iter()) {
            return;
        }
        if self.oldest_outstanding().is_none() {
            self.set_cursor(peer, cursor);
            return;
        }
        if self.offload.cursors.len() >= DEFERRED_CURSORS_MAX {
            self.offload.cursors.pop_front();
        }
        let last = self.offload.next_ticket.saturating_sub(1);
        self.offload.cursors.push_back((last, peer.clone(), cursor));
    }

    /// The oldest ticket of a batch taken off the task and not installed
    /// yet: on a copy, held for the next one, or held by a compaction.
    fn oldest_outstanding(&self) -> Option<u64> {
        let applying = self.offload.rooms.values().filter_map(Applying::oldest);
        applying.chain(self.compaction_held_ticket()).min()
    }

    /// Writes the since-cursors no outstanding batch holds back (never
    /// moving a peer's cursor back).
    pub(super) fn release_cursors(&mut self) {
        let oldest = self.oldest_outstanding();
        while let Some((ticket, _, _)) = self.offload.cursors.front() {
            if oldest.is_some_and(|o| o <= *ticket) {
                break;
            }
            if let Some((_, peer, cursor)) = self.offload.cursors.pop_front() {
                let newer = self
                    .peers
                    .get(&peer)
                    .and_then(|p| p.cursor)
                    .is_some_and(|c| c >= cursor);
                if !newer {
                    self.set_cursor(&peer, cursor);
                }
            }
        }
    }

    /// A copy is back: swapped in if its room has not moved, otherwise its
    /// changes apply in line; then the changes held meanwhile go out on
    /// the next copy.
    pub(super) fn on_applied(&mut self, applied: Applied) {
        let Applied {
            room,
            batches,
            ticket,
            prepared,
        } = applied;
        let running = self
            .offload
            .rooms
            .get(&room)
            .and_then(|a| a.running)
            .is_some_and(|t| t == ticket);
        if !running {
            // Not this replica's copy (it was reopened, or gave the copy
            // up), or the room went.
            return;
        }
        match prepared {
            Ok(prepared) => self.install_applied(&room, batches, prepared),
            Err(_) => {
                // The copy failed (automerge panicked): the changes apply
                // in line, where a failure is refused and reported as usual.
                self.stats.applies_redone += 1;
                self.apply_in_line_together(&room, batches);
            }
        }
        let Some(applying) = self.offload.rooms.remove(&room) else {
            return;
        };
        self.next_copy(&room, applying);
        self.release_cursors();
        self.resume_rounds();
    }

    fn install_applied(
        &mut self,
        room: &RoomId,
        batches: Vec<(NodeId, Vec<Change>)>,
        prepared: PreparedImport,
    ) {
        let stamp = self.hlc.tick(self.now_ms);
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let first = batches.first().map(|(from, _)| from.clone());
        let first = first.unwrap_or_else(|| self.node().clone());
        match self.rooms.install(&view, prepared, stamp) {
            Ok(Installed::Done(mut write)) => {
                // Each refusal is reported against the peer that sent it.
                let refused = std::mem::take(&mut write.refused);
                self.stats.changes_refused += refused.len() as u64;
                for (change, why) in refused {
                    let peer = batches
                        .iter()
                        .find(|(_, cs)| cs.iter().any(|c| c.hash().0 == change.0))
                        .map_or_else(|| first.clone(), |(from, _)| from.clone());
                    self.emit(Event::Rejected {
                        peer,
                        reason: format!("room {room}: change {change} refused at {why}"),
                    });
                }
                // A base waiting to be caught up on is the vote of the peer
                // that sent it.
                if let Some(base) = write.catch_up_asked.take() {
                    let peer = batches
                        .iter()
                        .find(|(_, cs)| cs.iter().any(|c| c.hash() == base))
                        .map_or_else(|| first.clone(), |(from, _)| from.clone());
                    self.vote_catch_up(&peer, room, base);
                }
                let write = self.after_remote(&first, room, write, stamp);
                if write.outcome.pending > 0 {
                    // Some dependency has not arrived: ask the sender.
                    let sent = batches
                        .iter()
                        .flat_map(|(_, cs)| cs.iter().map(Change::hash));
                    self.pull_missing(&first, vec![(room.clone(), sent.collect())]);
                }
            }
            Ok(Installed::Moved { .. }) => {
                // Written to meanwhile (or it took changes that wait, or
                // refused some, which the swap would drop): applied in
                // line, as before, and so for a while
                // (`APPLY_IN_LINE_AFTER_REDO_MS`).
                self.stats.applies_redone += 1;
                let redone = &mut self.offload.redone;
                if redone.len() < APPLY_REDONE_ROOMS_MAX || redone.contains_key(room) {
                    let until = self.now_ms.saturating_add(APPLY_IN_LINE_AFTER_REDO_MS);
                    redone.insert(room.clone(), until);
                }
                self.apply_in_line_together(room, batches);
            }
            Err(err) => {
                // The batches are lost here (they come again by
                // anti-entropy); no cursor may claim them.
                self.stats.changes_rejected += 1;
                self.offload.poison(None);
                self.emit(Event::Rejected {
                    peer: first,
                    reason: format!("room {room}: {err}"),
                });
            }
        }
    }

    /// What a room held while its copy was out goes out on the next copy,
    /// unless a compaction is due first (a busy room would otherwise keep
    /// it waiting for ever): then the compaction holds it.
    fn next_copy(&mut self, room: &RoomId, applying: Applying) {
        self.compact_acknowledged();
        if applying.held.is_empty() {
            return;
        }
        let ticket = applying.held_ticket;
        if self.compacting_off_task(room) {
            self.offload.carried = ticket;
            for (from, changes) in applying.held {
                self.apply_remote(&from, room, changes);
            }
            self.offload.carried = None;
            return;
        }
        let held = match (self.worth_a_copy(room), ticket) {
            (true, Some(ticket)) => self.hand_off(room, applying.held, ticket).err(),
            _ => Some(applying.held),
        };
        if let Some(held) = held {
            self.apply_in_line_together(room, held);
        }
    }

    /// Whether peers' changes for `room` go on a copy: the room is large,
    /// and no recent copy of it came back after a write to it.
    fn worth_a_copy(&self, room: &RoomId) -> bool {
        let large = self
            .rooms
            .ops(room)
            .is_some_and(|ops| ops >= self.config.apply_off_task_ops);
        let redone = self
            .offload
            .redone
            .get(room)
            .is_some_and(|until| self.now_ms < *until);
        large && !redone
    }

    /// Applies batches in line in one apply: automerge walks the room
    /// once, not once per batch.
    fn apply_in_line_together(&mut self, room: &RoomId, batches: Vec<(NodeId, Vec<Change>)>) {
        // The sender of the first newer base in them, if any: the one the
        // room looks at, whose vote it is if it waits to be caught up on.
        let generation = self.rooms.generation(room).unwrap_or(0);
        let with_base = batches.iter().find(|(_, cs)| {
            cs.iter().any(|c| {
                c.deps().is_empty()
                    && crate::room::compact::base_of(room, c).is_some_and(|(g, _)| g > generation)
            })
        });
        let Some(from) = with_base.or(batches.first()).map(|(from, _)| from.clone()) else {
            return;
        };
        let changes: Vec<Change> = batches.into_iter().flat_map(|(_, c)| c).collect();
        let sent: Vec<ChangeHash> = changes.iter().map(Change::hash).collect();
        let write = self.apply_remote_in_line(&from, room, changes);
        if write.is_some_and(|w| w.outcome.pending > 0) {
            // Some dependency has not arrived: ask the (first) sender.
            self.pull_missing(&from, vec![(room.clone(), sent)]);
        }
    }

    /// Gives up the copies whose result is later than
    /// `COMPACTION_WORK_MS_MAX` (a lost result must not keep a room's
    /// changes back for ever): what they carried comes again by
    /// anti-entropy, what was held meanwhile applies.
    pub(super) fn give_up_late_applies(&mut self) {
        let now = self.now_ms;
        self.offload.redone.retain(|_, until| now < *until);
        let late: Vec<RoomId> = self
            .offload
            .rooms
            .iter()
            .filter(|(_, a)| now.saturating_sub(a.started_ms) >= COMPACTION_WORK_MS_MAX)
            .map(|(room, _)| room.clone())
            .collect();
        for room in late {
            if let Some(applying) = self.offload.rooms.remove(&room) {
                self.stats.applies_failed += 1;
                self.offload.poison(None);
                self.apply_in_line_together(&room, applying.held);
            }
        }
        self.release_cursors();
    }

    /// Forgets `room` (purged): its copy's result is ignored.
    pub(super) fn offload_forget(&mut self, room: &RoomId) {
        if self.offload.rooms.remove(room).is_some() {
            self.offload.poison(None);
        }
        self.offload.redone.remove(room);
        // A compaction's hold of the room may have been all that kept a
        // cursor back.
        self.release_cursors();
    }
}
