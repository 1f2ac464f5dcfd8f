//! Room bytes from the local API rather than a peer: whole documents
//! (`Input::Import` / `Input::ImportPrepared`, all or nothing) and raw
//! changes (`Input::Apply`, change by change). Both are validated like a
//! peer's, then persisted, announced and pushed to peers like a local
//! write. An import is merged on a fork of the room (`rooms::prepare`):
//! the library prepares it on the caller's thread, so the replica's task
//! only forks and installs.

use automerge::Change;

use super::overlay::Overlay;
use super::{Event, Replica};
use crate::error::Error;
use crate::events::Origin;
use crate::hlc::Timestamp;
use crate::ids::RoomId;
use crate::model::WriteAck;
use crate::room::Intake;
use crate::rooms::{Fork, Installed, PreparedImport, RemoteWrite};

impl Replica {
    /// An import merged here, in line (the simulator's and tests' route;
    /// the library prepares it off this task and sends `ImportPrepared`).
    pub(super) fn on_import(&mut self, id: u64, room: Option<&RoomId>, bytes: &[u8]) {
        let result = crate::room::import::decode(bytes, room).and_then(|(room, changes)| {
            let prepared = self.fork_room(&room)?.prepare(changes)?;
            self.install_import(prepared)
        });
        self.on_import_done(id, result);
    }

    pub(super) fn on_import_prepared(&mut self, id: u64, prepared: PreparedImport) {
        let result = self.install_import(prepared);
        self.on_import_done(id, result);
    }

    fn on_import_done(&mut self, id: u64, result: Result<WriteAck, Error>) {
        if result.is_err() {
            self.note_refused_import();
        }
        self.emit(Event::WriteDone { id, result });
    }

    /// Counts an import refused before it reached the replica (prepared
    /// elsewhere) or here.
    pub fn note_refused_import(&mut self) {
        self.stats.local_write_errors += 1;
    }

    /// A copy of `room` to merge an import on (see `rooms::prepare`).
    pub fn fork_room(&mut self, room: &RoomId) -> Result<Fork, Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        self.rooms.fork(&view, room)
    }

    /// Swaps a prepared import in, or merges its changes in line if the
    /// room changed since its fork.
    fn install_import(&mut self, prepared: PreparedImport) -> Result<WriteAck, Error> {
        let room = prepared.room().clone();
        let stamp = self.hlc.tick(self.now_ms);
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        match self.rooms.install(&view, prepared, stamp)? {
            Installed::Done(write) => {
                self.after_outside(&room, write, stamp, Origin::Local);
            }
            Installed::Moved {
                room,
                changes,
                checked,
            } => {
                self.stats.imports_in_line += 1;
                self.import_in_line(&room, changes, checked, stamp)?;
            }
        }
        let heads = self.heads(&room)?;
        Ok(WriteAck { room, heads })
    }

    /// An import whose room moved since its fork, merged on the room as it
    /// is now. It is checked whole on a fresh copy first, as a prepared
    /// one is (`Fork::prepare`: nothing refused, nothing left waiting or
    /// dropped), so an import is acknowledged on one rule whichever way it
    /// went; then that copy is swapped in (nothing reaches this task
    /// between the two). An import that carried a newer base compacts the
    /// copy, which only the in-line merge stores: it is merged on the room
    /// itself, once a copy of the room as it is (`checked`, or the fresh
    /// one) took it whole.
    fn import_in_line(
        &mut self,
        room: &RoomId,
        changes: Vec<Change>,
        checked: bool,
        stamp: Timestamp,
    ) -> Result<(), Error> {
        let changes = if checked {
            changes
        } else {
            let prepared = self.fork_room(room)?.prepare_in_line(changes)?;
            let view = Overlay {
                base: self.store.as_ref(),
                staged: &self.staged,
            };
            match self.rooms.install(&view, prepared, stamp)? {
                Installed::Done(write) => {
                    self.after_outside(room, write, stamp, Origin::Local);
                    return Ok(());
                }
                Installed::Moved { changes, .. } => changes,
            }
        };
        // The room may have been compacted since the import was written:
        // its changes are carried, or refused, never dropped.
        let changes = self.fork_room(room)?.carried_import(changes)?;
        self.merge_outside_at(room, changes, Intake::Whole, Origin::Local, stamp)?;
        Ok(())
    }

    pub(super) fn on_apply(&mut self, id: u64, room: &RoomId, changes: Vec<Vec<u8>>) {
        let result = crate::room::import::parse_changes(changes).and_then(|changes| {
            self.merge_outside(room, changes, Intake::EachChange, Origin::Remote)
                .map(|write| write.outcome)
        });
        if result.is_err() {
            self.stats.changes_rejected += 1;
        }
        self.emit(Event::Applied { id, result });
    }

    fn merge_outside(
        &mut self,
        room: &RoomId,
        changes: Vec<Change>,
        intake: Intake,
        origin: Origin,
    ) -> Result<RemoteWrite, Error> {
        let stamp = self.hlc.tick(self.now_ms);
        self.merge_outside_at(room, changes, intake, origin, stamp)
    }

    /// `merge_outside` under a stamp already taken.
    fn merge_outside_at(
        &mut self,
        room: &RoomId,
        changes: Vec<Change>,
        intake: Intake,
        origin: Origin,
        stamp: Timestamp,
    ) -> Result<RemoteWrite, Error> {
        if self.rooms.is_purged(room) {
            return Err(Error::RoomPurged(room.clone()));
        }
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let write = self
            .rooms
            .remote_apply(&view, room, changes, stamp, intake)?;
        Ok(self.after_outside(room, write, stamp, origin))
    }

    /// Stages, announces and queues for push what a merge applied.
    fn after_outside(
        &mut self,
        room: &RoomId,
        mut write: RemoteWrite,
        stamp: Timestamp,
        origin: Origin,
    ) -> RemoteWrite {
        self.stats.changes_applied += write.applied.len() as u64;
        self.stats.changes_refused += write.refused.len() as u64;
        self.staged.add(std::mem::take(&mut write.batch), true);
        let kinds = std::mem::take(&mut write.kinds);
        // The merge logs under `stamp` whenever it applied any, or
        // adopted a newer base.
        let rest = std::mem::take(&mut write.log_rest);
        let logged =
            (!write.applied.is_empty() || write.compacted).then(|| self.log_rest(stamp, rest));
        self.after_change(room, origin, kinds, logged);
        self.queue_push(room, &write.applied);
        if write.compacted {
            self.compacted_by_peer(room);
        }
        // An imported long history is compacted like a written one.
        self.note_history(room);
        write
    }
}
