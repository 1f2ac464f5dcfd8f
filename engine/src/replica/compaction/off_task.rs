//! Compactions run off the replica's task (`Output::Work`, with
//! `work_off_task`): handing a copy out, holding back what would move the
//! room meanwhile, installing the result, and giving up one that never
//! comes back.

use automerge::Change;

use super::super::io::{Job, Work};
use super::super::overlay::Overlay;
use super::super::{Output, Replica};
use crate::ids::{NodeId, RoomId};
use crate::limits::{
    COMPACTIONS_FAILED_REMEMBERED_MAX, COMPACTIONS_OFF_TASK_MAX, COMPACTION_HELD_BYTES_MAX,
    COMPACTION_WORK_MS_MAX,
};
use crate::room::compact;
use crate::rooms::{CompactionInstall, PreparedCompaction};

/// A compaction running off the replica's task.
#[derive(Debug, Default)]
pub(super) struct Running {
    /// Peers' changes that carry a newer base, held back until the
    /// compaction is installed: applied meanwhile, they would compact the
    /// room in line. At most `COMPACTION_HELD_BYTES_MAX` bytes.
    held: Vec<(NodeId, Vec<Change>)>,
    held_bytes: usize,
    /// The oldest ticket of the held batches (`offload`: a since-cursor
    /// waits for them).
    held_ticket: Option<u64>,
    /// When the work (or its last top-up) was handed to the driver.
    started_ms: u64,
    /// The request it cuts at.
    request: Option<automerge::ChangeHash>,
    /// The number of the job (or top-up) whose result it waits for: a late
    /// result of a job given up before is not this one's.
    job: u64,
}

impl Replica {
    /// Hands the driver a copy of `room` to compact at its agreed request
    /// (`Output::Work`); `on_compacted` installs the result. Past
    /// `COMPACTIONS_OFF_TASK_MAX` running, the room waits its turn.
    pub(in crate::replica) fn compact_off_task(&mut self, room: &RoomId) {
        if self.compaction.running.len() >= COMPACTIONS_OFF_TASK_MAX {
            return;
        }
        self.compaction.named.remove(room);
        let Some(pending) = self.compaction.pending.remove(room) else {
            return;
        };
        self.start_off_task(room, pending.request);
    }

    /// A peer's `changes` for `room` carry the base of a compaction at the
    /// room's own request, which this replica has not started: a peer saw
    /// every replica name it first. Applied in line, the base would make
    /// this replica compact the room on its task (hundreds of milliseconds
    /// in a busy room); instead the compaction starts off the task now,
    /// and `held_for_compaction` holds the base until the result is back
    /// (`on_compacted` compares the two). Only while no other compaction is
    /// out (`COMPACTIONS_OFF_TASK_MAX`): otherwise, and for a request whose
    /// compaction off the task failed, the base applies like any peer's
    /// change.
    pub(in crate::replica) fn compact_for_peer_base(&mut self, room: &RoomId, changes: &[Change]) {
        if !self.config.work_off_task
            || self.compaction.running.len() >= COMPACTIONS_OFF_TASK_MAX
            || self.compaction.running.contains_key(room)
            || self.applying_off_task(room)
            || !changes.iter().any(|c| c.deps().is_empty())
        {
            return;
        }
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let ours = self.rooms.compaction_status(&view, room).ok().flatten();
        let Some(request) = ours.and_then(|status| status.request) else {
            return;
        };
        if self.compaction.no_peer_start.get(room) == Some(&request) {
            return;
        }
        // A base's actor derives from its room and cut: only a change
        // with that actor is decoded, and it must be a base at that cut
        // (`base_of`, the validator's rule), as `held_for_compaction` and
        // `on_compacted` take it.
        let actor = crate::room::schema::base_actor(room, &request);
        let at_our_cut = changes.iter().any(|c| {
            c.deps().is_empty()
                && c.actor_id() == &actor
                && compact::base_of(room, c).is_some_and(|(_, cut)| cut == request)
        });
        if !at_our_cut {
            return;
        }
        if self.start_off_task(room, request) {
            self.stats.compactions_on_peer_base += 1;
            self.compaction.named.remove(room);
            self.compaction.pending.remove(room);
        }
    }

    /// Hands the driver a copy of `room` to compact at `request`; whether
    /// it did.
    fn start_off_task(&mut self, room: &RoomId, request: automerge::ChangeHash) -> bool {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        match self.rooms.compaction_job(&view, room, request) {
            Ok(Some(mut job)) => {
                let number = self.compaction.next_job();
                job.number(number);
                let running = Running {
                    started_ms: self.now_ms,
                    request: Some(request),
                    job: number,
                    ..Running::default()
                };
                self.compaction.running.insert(room.clone(), running);
                let work = Work(Job::Compaction(Box::new(job)));
                self.pending_outputs.push(Output::Work(work));
                true
            }
            Ok(None) => false,
            Err(_) => {
                self.stats.storage_errors += 1;
                false
            }
        }
    }

    /// Remembers that `room`'s compaction at its current request went
    /// wrong off the task (`State::no_peer_start`).
    fn no_peer_start(&mut self, room: &RoomId, request: automerge::ChangeHash) {
        let remembered = &mut self.compaction.no_peer_start;
        if remembered.len() >= COMPACTIONS_FAILED_REMEMBERED_MAX && !remembered.contains_key(room) {
            remembered.clear();
        }
        remembered.insert(room.clone(), request);
    }

    /// A compaction prepared off the task is back: installed (finished in
    /// line if the room changed meanwhile, or topped up off the task first
    /// if it changed much), then the peers' changes held back apply, and
    /// the next room waiting for a turn starts.
    pub(in crate::replica) fn on_compacted(&mut self, prepared: PreparedCompaction) {
        let room = prepared.room().clone();
        // Not running (the room was purged, or the replica reopened), or
        // the late result of a job given up before this one started.
        let waited = self.compaction.running.get(&room).map(|r| r.job);
        if waited != Some(prepared.job()) {
            return;
        }
        let Some(running) = self.compaction.running.remove(&room) else {
            return;
        };
        if prepared.failed() {
            self.no_peer_start(&room, prepared.request());
            self.compaction_failed(&room, running);
            return;
        }
        // A peer's base at the same cut that differs from the one computed
        // here (another compaction format, during an upgrade, or a forged
        // one) is counted. Unless a peer's base matches it, the result is
        // dropped, and the held changes apply like any peer's, where every
        // format this build reads is tried and a base that matches none is
        // refused. When one matches, the result is installed and the other
        // is ignored as of a generation the room has (one forged base must
        // not cost the task a compaction in line).
        if let Some(ours) = prepared.base_hash() {
            let actor = crate::room::schema::base_actor(&room, &prepared.request());
            let (mut differs, mut matches) = (false, false);
            let held = running.held.iter().flat_map(|(_, changes)| changes);
            for c in held.filter(|c| c.deps().is_empty() && c.actor_id() == &actor) {
                if c.hash() == ours {
                    matches = true;
                } else {
                    differs = true;
                }
            }
            if differs {
                self.stats.compaction_base_mismatches += 1;
            }
            if differs && !matches {
                self.no_peer_start(&room, prepared.request());
                // Not named again while the held changes apply (a name
                // collected meanwhile would start the same work again).
                self.compaction.named.remove(&room);
                self.compaction.candidates.insert(room.clone());
                self.release_held(&room, running);
                self.compact_acknowledged();
                self.resume_rounds();
                return;
            }
        }
        let stamp = self.hlc.tick(self.now_ms);
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let request = prepared.request();
        match self.rooms.install_compaction(&view, prepared, stamp) {
            Ok(CompactionInstall::Done(done, redone)) => {
                if redone {
                    self.stats.compactions_redone += 1;
                }
                self.compacted(&room, stamp, done);
            }
            Ok(CompactionInstall::TopUp(mut job)) => {
                // Still running: what it holds back stays held. Each round
                // has `COMPACTION_WORK_MS_MAX` to come back.
                self.stats.compaction_top_ups += 1;
                let number = self.compaction.next_job();
                job.number(number);
                let running = Running {
                    started_ms: self.now_ms,
                    job: number,
                    ..running
                };
                self.compaction.running.insert(room, running);
                let work = Work(Job::Compaction(job));
                self.pending_outputs.push(Output::Work(work));
                return;
            }
            Ok(CompactionInstall::Nothing) => {}
            Err(_) => {
                self.stats.storage_errors += 1;
                self.no_peer_start(&room, request);
            }
        }
        self.release_held(&room, running);
        self.compact_acknowledged();
        // Rounds that parked this room's fetch (`fetch_rooms`) go on.
        self.resume_rounds();
    }

    /// Gives up the compactions off the task whose result is later than
    /// `COMPACTION_WORK_MS_MAX`: a lost result must not keep the room's
    /// held changes back for ever.
    pub(in crate::replica) fn give_up_late_work(&mut self) {
        let now = self.now_ms;
        let late: Vec<RoomId> = self
            .compaction
            .running
            .iter()
            .filter(|(_, r)| now.saturating_sub(r.started_ms) >= COMPACTION_WORK_MS_MAX)
            .map(|(room, _)| room.clone())
            .collect();
        for room in late {
            if let Some(running) = self.compaction.running.remove(&room) {
                if let Some(request) = running.request {
                    self.no_peer_start(&room, request);
                }
                self.compaction_failed(&room, running);
            }
        }
    }

    /// A compaction off the task failed or was given up: the changes it
    /// held apply (a peer's base compacts the room in line), and the room
    /// is looked at again next tick. A result that comes back later is
    /// ignored, unless the room is being compacted again by then: results
    /// are checked before they are installed (the request and the heads,
    /// `RoomSet::install_compaction`).
    fn compaction_failed(&mut self, room: &RoomId, running: Running) {
        self.stats.compactions_failed += 1;
        self.compaction.candidates.insert(room.clone());
        self.release_held(room, running);
        self.compact_acknowledged();
        self.resume_rounds();
    }

    /// Whether `room` is being compacted off the replica's task.
    pub(in crate::replica) fn compacting_off_task(&self, room: &RoomId) -> bool {
        self.compaction.running.contains_key(room)
    }

    /// Whether `changes` for `room` are held back until its compaction off
    /// the task is installed: they carry a newer base, and applied now they
    /// would compact the room in line (`RoomDoc::apply_remote`).
    pub(in crate::replica) fn held_for_compaction(
        &mut self,
        from: &NodeId,
        room: &RoomId,
        changes: &mut Vec<Change>,
    ) -> bool {
        let Some(running) = self.compaction.running.get_mut(room) else {
            return false;
        };
        let carries_base = changes
            .iter()
            .any(|c| c.deps().is_empty() && compact::base_of(room, c).is_some());
        // Other batches apply (in line: `offload` takes no copy of a
        // compacting room). Held until the install, a change of the
        // history being replaced would arrive too late to be carried.
        if !carries_base {
            return false;
        }
        let bytes: usize = changes.iter().map(|c| c.raw_bytes().len()).sum();
        match running.held_bytes.checked_add(bytes) {
            Some(total) if total <= COMPACTION_HELD_BYTES_MAX => {
                running.held_bytes = total;
                running.held.push((from.clone(), std::mem::take(changes)));
                let ticket = self.offload.ticket();
                if let Some(running) = self.compaction.running.get_mut(room) {
                    let oldest = running.held_ticket.map_or(ticket, |t| t.min(ticket));
                    running.held_ticket = Some(oldest);
                }
            }
            _ => {
                self.stats.compaction_held_dropped += 1;
                self.offload.poison(Some(from));
            }
        }
        true
    }

    /// The oldest ticket of the batches compactions hold back.
    pub(in crate::replica) fn compaction_held_ticket(&self) -> Option<u64> {
        let running = self.compaction.running.values();
        running.filter_map(|r| r.held_ticket).min()
    }

    /// Applies what a compaction held back, each batch keeping its ticket
    /// if it goes off the task again.
    fn release_held(&mut self, room: &RoomId, running: Running) {
        self.offload.carried = running.held_ticket;
        for (from, changes) in running.held {
            self.apply_remote(&from, room, changes);
        }
        self.offload.carried = None;
        self.release_cursors();
    }
}
