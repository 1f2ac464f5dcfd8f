//! The write path: a local write and a peer's changes, each staged,
//! logged, announced as `Changed` and queued for the next push.

use automerge::Change;

use super::offload::Taken;
use super::overlay::Overlay;
use super::{Event, Replica};
use crate::error::Error;
use crate::events::{ChangeEvent, ChangeKind, Origin};
use crate::hlc::Timestamp;
use crate::ids::{NodeId, RoomId};
use crate::model::WriteAck;
use crate::room::{Intake, RoomOp, WriteCtx};
use crate::rooms::{LogEntry, RemoteWrite};
use crate::storage::Batch;

impl Replica {
    pub(super) fn on_local_write(&mut self, id: u64, room: &RoomId, op: &RoomOp) {
        let result = if matches!(op, RoomOp::RequestCompaction { .. }) {
            // The replica decides when to compact (`compaction/`).
            Err(Error::Invalid {
                field: "op",
                reason: "compaction requests are written by the replica itself".into(),
            })
        } else {
            self.write_local(room, op)
        };
        self.emit(Event::WriteDone { id, result });
    }

    /// Applies a local write: staged, announced as `Changed`, queued for
    /// the next push.
    pub(super) fn write_local(&mut self, room: &RoomId, op: &RoomOp) -> Result<WriteAck, Error> {
        let stamp = self.hlc.tick(self.now_ms);
        let ctx = WriteCtx {
            room,
            stamp,
            now_ms: self.now_ms,
            stamped_removals: self.stamped_removals(),
        };
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        match self.rooms.local_write(&view, &ctx, op) {
            Ok(write) => {
                self.stats.local_writes += 1;
                self.staged.add(write.batch, true);
                let ack = WriteAck {
                    room: room.clone(),
                    heads: write.heads,
                };
                let logged =
                    (!write.changes.is_empty()).then(|| self.log_rest(stamp, write.log_rest));
                self.after_change(room, Origin::Local, write.kinds, logged);
                self.queue_push(room, &write.changes);
                self.note_history(room);
                Ok(ack)
            }
            Err(err) => {
                self.stats.local_write_errors += 1;
                Err(err)
            }
        }
    }

    /// Applies changes from a peer to one room; returns the outcome or
    /// `None` when the room is purged, the changes were refused, or they
    /// are applied off the task (`offload`).
    pub(super) fn apply_remote(
        &mut self,
        from: &NodeId,
        room: &RoomId,
        changes: Vec<Change>,
    ) -> Option<RemoteWrite> {
        match self.take_remote(from, room, changes) {
            Taken::InLine(write) => write.map(|w| *w),
            Taken::OffTask(_) => None,
        }
    }

    /// `take_remote`, counting what was applied. Changes taken off the task
    /// count as applied: they will be.
    pub(super) fn take_counted(
        &mut self,
        peer: &NodeId,
        room: &RoomId,
        changes: Vec<Change>,
    ) -> u64 {
        match self.take_remote(peer, room, changes) {
            Taken::InLine(Some(write)) => write.applied.len() as u64,
            Taken::InLine(None) => 0,
            Taken::OffTask(n) => n as u64,
        }
    }

    /// Applies a peer's changes in line, holds them for a compaction, or
    /// takes them off the task.
    pub(super) fn take_remote(
        &mut self,
        from: &NodeId,
        room: &RoomId,
        changes: Vec<Change>,
    ) -> Taken {
        if self.rooms.is_purged(room) {
            self.stats.purged_refused += 1;
            return Taken::InLine(None);
        }
        let mut changes = changes;
        self.compact_for_peer_base(room, &changes);
        if self.held_for_compaction(from, room, &mut changes) {
            return Taken::InLine(None);
        }
        if let Some(n) = self.take_off_task(from, room, &mut changes) {
            return Taken::OffTask(n);
        }
        Taken::InLine(self.apply_remote_in_line(from, room, changes).map(Box::new))
    }

    /// Applies a peer's changes to one room on the replica's task.
    pub(super) fn apply_remote_in_line(
        &mut self,
        from: &NodeId,
        room: &RoomId,
        changes: Vec<Change>,
    ) -> Option<RemoteWrite> {
        if self.rooms.is_purged(room) {
            self.stats.purged_refused += 1;
            return None;
        }
        let stamp = self.hlc.tick(self.now_ms);
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        match self
            .rooms
            .remote_apply(&view, room, changes, stamp, Intake::EachChange)
        {
            Ok(write) => Some(self.after_remote(from, room, write, stamp)),
            Err(err) => {
                self.stats.changes_rejected += 1;
                self.emit(Event::Rejected {
                    peer: from.clone(),
                    reason: format!("room {room}: {err}"),
                });
                None
            }
        }
    }

    /// Stages, logs and announces what a peer's changes did.
    pub(super) fn after_remote(
        &mut self,
        from: &NodeId,
        room: &RoomId,
        mut write: RemoteWrite,
        stamp: Timestamp,
    ) -> RemoteWrite {
        self.stats.changes_applied += write.applied.len() as u64;
        // A peer's compacted base carries stamps as old as the room's
        // history: no measure of how late this replica heard of a write.
        if !write.compacted {
            let now_ms = self.now_ms;
            self.stats.latency.observe_lag(&write.stamps_ms, now_ms);
        }
        self.stats.pending_dropped += write.outcome.dropped as u64;
        self.stats.peer_bases_deferred += write.outcome.bases_deferred as u64;
        self.stats.peer_bases_merged += write.outcome.bases_merged as u64;
        if let Some(base) = write.catch_up_asked.take() {
            self.vote_catch_up(from, room, base);
        }
        self.stats.changes_superseded += write.outcome.superseded as u64;
        self.stats.changes_refused += write.refused.len() as u64;
        for (change, why) in std::mem::take(&mut write.refused) {
            self.emit(Event::Rejected {
                peer: from.clone(),
                reason: format!("room {room}: change {change} refused at {why}"),
            });
        }
        self.staged.add(std::mem::take(&mut write.batch), true);
        let kinds = std::mem::take(&mut write.kinds);
        // `remote_apply` logs under `stamp` whenever it applied any.
        let rest = std::mem::take(&mut write.log_rest);
        let logged =
            (!write.applied.is_empty() || write.compacted).then(|| self.log_rest(stamp, rest));
        self.after_change(room, Origin::Remote, kinds, logged);
        if write.compacted {
            self.compacted_by_peer(room);
        }
        self.note_history(room);
        write
    }

    /// Stamps and stages the log entries a large write left over
    /// (`RoomSet::record`); returns the stamp of the write's last entry.
    pub(super) fn log_rest(&mut self, stamp: Timestamp, rest: Vec<LogEntry>) -> Timestamp {
        if rest.is_empty() {
            return stamp;
        }
        self.rooms.note_logged(rest.len());
        let mut batch = Batch::default();
        let mut last = stamp;
        for entry in rest {
            last = self.hlc.tick(self.now_ms);
            entry.put(&last, &mut batch);
        }
        self.staged.add(batch, true);
        last
    }

    pub(super) fn after_change(
        &mut self,
        room: &RoomId,
        origin: Origin,
        kinds: Vec<ChangeKind>,
        stamp: Option<Timestamp>,
    ) {
        if kinds.is_empty() {
            return;
        }
        if kinds.contains(&ChangeKind::RoomEnded) {
            self.note_ended(room);
        }
        self.on_calls_learnt(&kinds);
        let change = ChangeEvent {
            room: room.clone(),
            origin,
            changes: kinds,
        };
        self.emit(Event::Changed { change, stamp });
    }
}
