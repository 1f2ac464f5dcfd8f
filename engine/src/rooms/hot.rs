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
}

impl HotRoom {
    pub(super) fn new(doc: RoomDoc) -> Self {
        Self {
            doc,
            chunk_first: 0,
            chunk_next: 0,
            chunk_bytes: 0,
            snapshot_bytes: 0,
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

    /// `snapshot` (the document's `save()`) in place of the stored
    /// snapshot and every chunk.
    fn store_snapshot(&mut self, snapshot: Vec<u8>, batch: &mut Batch) {
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
        let room = self.doc.id().clone();
        let bytes: Vec<u8> = changes
            .iter()
            .flat_map(|c| c.raw_bytes().iter().copied())
            .collect();
        self.chunk_bytes += bytes.len() as u64;
        if self.chunk_bytes > self.snapshot_bytes.max(COMPACTION_MIN_CHUNK_BYTES) {
            self.store_snapshot(saved.unwrap_or_else(|| self.doc.save()), batch);
            return;
        }
        batch.put(keys::chunk(&room, self.chunk_next), bytes);
        self.chunk_next += 1;
    }
}
