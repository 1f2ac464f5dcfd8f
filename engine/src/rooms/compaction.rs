//! A room set's side of history compaction (`room::compact`): where a room
//! stands towards its next compaction, and the compaction itself, stored
//! and logged like any write.

use automerge::{Change, ChangeHash};

use super::index::{index_updates, IndexView};
use super::{head, readable, LogEntry, RoomSet};
use crate::error::Error;
use crate::hlc::Timestamp;
use crate::ids::RoomId;
use crate::model::Head;
use crate::room::Intake;
use crate::storage::{Batch, KvRead};

/// The result of a compaction: the new history, what to persist and log.
#[derive(Debug)]
pub struct Compaction {
    pub generation: u64,
    /// The base, then the carried tail.
    pub changes: Vec<Change>,
    pub batch: Batch,
    /// Log entries still to stamp and write (see `RoomSet::record`).
    pub log_rest: Vec<LogEntry>,
}

/// Where a room stands towards its next compaction.
#[derive(Debug, Clone, Copy)]
pub struct CompactionStatus {
    pub history: u64,
    pub generation: u64,
    /// The request the next compaction cuts at, once one is written.
    pub request: Option<ChangeHash>,
    /// Not ended: an ended room gets no new compaction request.
    pub active: bool,
}

impl RoomSet {
    /// Changes in a hot room's history (`None`: the room is not hot).
    pub fn history_len(&self, room: &RoomId) -> Option<u64> {
        self.hot.peek(room).map(|h| h.doc.history_len())
    }

    pub fn compaction_status(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
    ) -> Result<Option<CompactionStatus>, Error> {
        let Some(hot) = self.load(store, room)? else {
            return Ok(None);
        };
        if hot.doc.is_empty() {
            return Ok(None);
        }
        let active = hot
            .doc
            .summary()
            .is_some_and(|s| s.lifecycle == crate::model::Lifecycle::Active);
        Ok(Some(CompactionStatus {
            history: hot.doc.history_len(),
            generation: hot.doc.generation(),
            request: hot.doc.compaction_request().map(|(hash, _)| hash),
            active,
        }))
    }

    /// Compacts `room` at `request`, the request every replica named
    /// (`room::compact`), if it is still the room's: the stored history
    /// becomes the base and the carried tail, and they are logged under
    /// `stamp` so that peers catching up since a cursor receive them.
    /// Changes that were waiting for the new history (a peer's carried
    /// changes) apply with it. `Ok(None)`: nothing to compact (the room is
    /// gone, ended, or now has another request).
    ///
    /// Atomic like `local_write`.
    pub fn compact(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
        request: ChangeHash,
        stamp: Timestamp,
    ) -> Result<Option<Compaction>, Error> {
        if self.purged.contains(room) || self.load(store, room)?.is_none() {
            return Ok(None);
        }
        let heads = self.hot_heads(room);
        let result = self.compact_hot(room, request, stamp);
        self.evict_if_moved(room, heads, result.is_err());
        result
    }

    fn compact_hot(
        &mut self,
        room: &RoomId,
        request: ChangeHash,
        stamp: Timestamp,
    ) -> Result<Option<Compaction>, Error> {
        let Some(hot) = self.hot.get_mut(room) else {
            return Ok(None);
        };
        // An ended room is compacted too once its request was named by
        // every replica: the others compact, and its end must be carried.
        if hot.doc.compaction_request().map(|(hash, _)| hash) != Some(request) {
            return Ok(None);
        }
        let before = readable(&mut hot.doc)?;
        let switch = hot.doc.compact_at(request)?;
        // Changes parked for the new history (a peer compacted first).
        let released = hot.doc.apply_remote(Vec::new(), Intake::EachChange)?;
        let after = readable(&mut hot.doc)?;
        let mut batch = Batch::default();
        hot.rewrite(&mut batch);
        index_updates(
            room,
            &IndexView::of(before.as_ref()),
            &IndexView::of(after.as_ref()),
            &mut batch,
        );
        let heads: Vec<Head> = hot.doc.heads().iter().map(head).collect();
        let generation = hot.doc.generation();
        let mut changes = vec![switch.base];
        changes.extend(switch.carried);
        changes.extend(released.applied);
        let log_rest = self.record(room, &heads, &changes, stamp, &mut batch);
        Ok(Some(Compaction {
            generation,
            changes,
            batch,
            log_rest,
        }))
    }
}
