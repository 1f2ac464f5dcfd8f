//! Room bytes from the local API rather than a peer: whole documents
//! (`Input::Import`, all or nothing) and raw changes (`Input::Apply`, change
//! by change). Both are validated like a peer's, then persisted, announced
//! and pushed to peers like a local write.

use automerge::Change;

use super::overlay::Overlay;
use super::{Event, Replica};
use crate::error::Error;
use crate::events::Origin;
use crate::ids::RoomId;
use crate::model::WriteAck;
use crate::room::Intake;
use crate::rooms::RemoteWrite;

impl Replica {
    /// An import (the daemon's HTTP route, `Engine::import_room`): the one
    /// decoding and validation path, all or nothing.
    pub(super) fn on_import(&mut self, id: u64, room: Option<&RoomId>, bytes: &[u8]) {
        let result = self.import(room, bytes);
        if result.is_err() {
            self.stats.local_write_errors += 1;
        }
        self.emit(Event::WriteDone { id, result });
    }

    fn import(&mut self, room: Option<&RoomId>, bytes: &[u8]) -> Result<WriteAck, Error> {
        let (room, changes) = crate::room::import::decode(bytes, room)?;
        self.merge_outside(&room, changes, Intake::Whole, Origin::Local)?;
        let heads = self.heads(&room)?;
        Ok(WriteAck { room, heads })
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
        if self.rooms.is_purged(room) {
            return Err(Error::RoomPurged(room.clone()));
        }
        let stamp = self.hlc.tick(self.now_ms);
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let mut write = self
            .rooms
            .remote_apply(&view, room, changes, stamp, intake)?;
        self.stats.changes_applied += write.applied.len() as u64;
        self.stats.changes_refused += write.refused.len() as u64;
        self.staged.add(std::mem::take(&mut write.batch), true);
        let kinds = std::mem::take(&mut write.kinds);
        // `remote_apply` logs under `stamp` whenever it applied any.
        let logged = (!write.applied.is_empty()).then_some(stamp);
        self.after_change(room, origin, kinds, logged);
        self.queue_push(room, &write.applied);
        Ok(write)
    }
}
