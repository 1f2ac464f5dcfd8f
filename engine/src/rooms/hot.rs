//! One room held in memory, with the bookkeeping of its stored chunks.

use super::index::{IndexScope, IndexView};
use super::readable;
use crate::error::Error;
use crate::limits::COMPACTION_MIN_CHUNK_BYTES;
use crate::room::RoomDoc;
use crate::storage::{keys, Batch};
use automerge::Change;

/// A hot room: its document and where its chunks are in storage.
pub(super) struct HotRoom {
    pub(super) doc: RoomDoc,
    /// Sequence numbers of this room's stored chunks: `first..next`.
    pub(super) chunk_first: u64,
    pub(super) chunk_next: u64,
    pub(super) chunk_bytes: u64,
    pub(super) snapshot_bytes: u64,
    /// Read from storage and not written since: its next write stores a
    /// snapshot (`persist_saved`).
    pub(super) cold: bool,
}

impl HotRoom {
    pub(super) fn new(doc: RoomDoc) -> Self {
        Self {
            doc,
            chunk_first: 0,
            chunk_next: 0,
            chunk_bytes: 0,
            snapshot_bytes: 0,
            cold: false,
        }
    }

    pub(super) fn index_view(&mut self, scope: &IndexScope) -> Result<IndexView, Error> {
        Ok(match scope {
            IndexScope::Nothing => IndexView::default(),
            IndexScope::Session(session) => IndexView {
                summary: None,
                owners: self.doc.live_owners(Some(session)),
            },
            IndexScope::Room => IndexView::of(readable(&mut self.doc)?.as_ref()),
        })
    }

    /// Stores the whole document anew (after a compaction replaced its
    /// history): one snapshot, no chunks.
    pub(super) fn rewrite(&mut self, batch: &mut Batch) {
        let snapshot = self.doc.save();
        self.store_snapshot(snapshot, batch);
    }

    /// `snapshot` (the document's `save()`, deflated or not) in place of
    /// the stored snapshot and every chunk.
    fn store_snapshot(&mut self, snapshot: Vec<u8>, batch: &mut Batch) {
        self.cold = false;
        let room = self.doc.id().clone();
        self.snapshot_bytes = snapshot.len() as u64;
        batch.put(keys::snapshot(&room), snapshot);
        for seq in self.chunk_first..self.chunk_next {
            batch.delete(keys::chunk(&room, seq));
        }
        self.chunk_first = self.chunk_next;
        self.chunk_bytes = 0;
    }

    /// Appends `changes` as one chunk, compacting into a fresh snapshot when
    /// the chunks have outgrown it (automerge-repo's rule), so a room's
    /// stored size stays within about twice its snapshot.
    ///
    /// A small room's first write, and its first write after it was read
    /// from storage (let go by the hot set, or after a restart), store a
    /// snapshot instead: loading a change from a chunk applies it, while a
    /// snapshot is rebuilt column by column (a 610-byte room loads in
    /// 17 µs from a snapshot, 36 µs from its chunk). A room read from
    /// storage is likely to be let go and read again; without this, every
    /// write to a cold room adds a change its next load must apply. Not
    /// deflated (automerge deflates only columns over 256 bytes, and the
    /// set-up per call cost as much as the loads saved), and only up to
    /// `COMPACTION_MIN_CHUNK_BYTES` stored: a large room is stored as
    /// before, so its stored size keeps to twice a deflated snapshot
    /// (`docs/data-model.md`).
    pub(super) fn persist(&mut self, changes: &[Change], batch: &mut Batch) {
        self.persist_saved(changes, batch, None);
    }

    /// `persist`, with the document's `save()` already made (elsewhere) in
    /// case this write compacts.
    pub(super) fn persist_saved(
        &mut self,
        changes: &[Change],
        batch: &mut Batch,
        saved: Option<Vec<u8>>,
    ) {
        if changes.is_empty() {
            return;
        }
        let len: usize = changes.iter().map(|c| c.raw_bytes().len()).sum();
        self.chunk_bytes += len as u64;
        let first = self.snapshot_bytes == 0 && self.chunk_first == self.chunk_next;
        let cold = std::mem::take(&mut self.cold);
        if self.chunk_bytes > self.snapshot_bytes.max(COMPACTION_MIN_CHUNK_BYTES) {
            self.store_snapshot(saved.unwrap_or_else(|| self.doc.save()), batch);
            return;
        }
        let small = self.snapshot_bytes + self.chunk_bytes <= COMPACTION_MIN_CHUNK_BYTES;
        if (first || cold) && small {
            self.store_snapshot(saved.unwrap_or_else(|| self.doc.save_nocompress()), batch);
            return;
        }
        let mut bytes = Vec::with_capacity(len);
        for change in changes {
            bytes.extend_from_slice(change.raw_bytes());
        }
        batch.put(keys::chunk(self.doc.id(), self.chunk_next), bytes);
        self.chunk_next += 1;
    }
}
