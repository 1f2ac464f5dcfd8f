//! The set of rooms a replica holds: hot rooms in a bounded LRU, cold rooms
//! on disk, loaded on demand. Reads go through [`KvRead`]; every write
//! leaves as a [`Batch`] for the driver to apply and flush (nothing here
//! touches storage for writing, reads a clock or draws randomness).
//!
//! If the driver fails to apply a batch it must call [`RoomSet::evict`] so
//! the in-memory room, now ahead of storage, is reloaded from what is stored.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;

use automerge::{ActorId, Change, ChangeHash};
use lru::LruCache;

use crate::error::Error;
use crate::events::ChangeKind;
use crate::ids::{RoomId, SessionId};
use crate::limits::CATCH_UP_PERMITS_MAX;
use crate::model::{Head, RemoteOutcome, RoomSnapshot, SessionReading};
use crate::room::end_proof::EndProof;
use crate::room::{Refusal, RoomDoc};
use crate::storage::{keys, Batch, KvRead, StorageError};
use digest::{purged_item, Digest, DigestTree};

mod compaction;
pub mod digest;
mod hot;
mod index;
mod log;
mod prepare;
mod recent;
mod writes;

pub use compaction::{
    Compaction, CompactionInstall, CompactionJob, CompactionStatus, PreparedCompaction,
};
use hot::HotRoom;
pub use index::owned_calls;
use index::{index_updates, IndexView};
pub use log::{LogEntry, TrimmedLog};
pub use prepare::{Fork, Installed, PreparedImport};

/// Rooms by id, with their storage bookkeeping, the digest tree over all of
/// them and the set of purged rooms.
pub struct RoomSet {
    actor: ActorId,
    hot: LruCache<RoomId, HotRoom>,
    tree: DigestTree,
    purged: BTreeSet<RoomId>,
    recent: recent::RecentChanges,
    /// Change-log entries written since the set was opened (`log.rs`).
    logged: u64,
    /// Rooms made hot so far: each gets the next number
    /// (`RoomDoc::beside_heads`), so a copy forked before an eviction
    /// never matches the room loaded again.
    admitted: u64,
    /// Peers' bases a room may catch up on (`RoomDoc::permit_catch_up`),
    /// kept here so that a room evicted and loaded again keeps its permit.
    catch_up_permits: HashMap<RoomId, ChangeHash>,
}

/// The result of a local write: what to persist, send and announce.
#[derive(Debug)]
pub struct LocalWrite {
    pub changes: Vec<Change>,
    pub kinds: Vec<ChangeKind>,
    pub heads: Vec<Head>,
    pub batch: Batch,
    /// Log entries still to stamp and write (see `RoomSet::record`).
    pub log_rest: Vec<LogEntry>,
}

/// The result of applying remote changes.
#[derive(Debug, Default)]
pub struct RemoteWrite {
    pub outcome: RemoteOutcome,
    pub applied: Vec<Change>,
    /// Changes refused by validation, and why (see `room::validate`).
    pub refused: Vec<(Head, Refusal)>,
    pub kinds: Vec<ChangeKind>,
    pub batch: Batch,
    /// Log entries still to stamp and write (see `RoomSet::record`).
    pub log_rest: Vec<LogEntry>,
    /// A peer's base made this replica compact the room first.
    pub compacted: bool,
    /// The newest stamp (wall ms) of each applied change that has one
    /// (`RemoteApply::stamps_ms`).
    pub stamps_ms: Vec<u64>,
    /// A peer's base the room would catch up on if permitted
    /// (`RemoteApply::catch_up_asked`).
    pub catch_up_asked: Option<ChangeHash>,
}

pub fn head(hash: &ChangeHash) -> Head {
    Head(hash.0)
}

pub fn change_hash(head: &Head) -> ChangeHash {
    ChangeHash(head.0)
}

fn malformed(key: &[u8], reason: &str) -> Error {
    Error::Storage(StorageError::Malformed {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    })
}

impl RoomSet {
    /// Opens the room set over `store`: reads the digest items and purge
    /// markers (small, one per room), but no room document.
    pub fn open(
        store: &dyn KvRead,
        actor: ActorId,
        hot_rooms: NonZeroUsize,
    ) -> Result<Self, Error> {
        let mut tree = DigestTree::new();
        for (key, value) in store.scan_prefix(keys::DIGEST)? {
            let room =
                keys::room_of(keys::DIGEST, &key).ok_or_else(|| malformed(&key, "digest key"))?;
            let item: Digest = value
                .as_slice()
                .try_into()
                .map_err(|_| malformed(&key, "digest value"))?;
            tree.set(&room, item);
        }
        let mut purged = BTreeSet::new();
        for (key, _) in store.scan_prefix(keys::PURGED)? {
            let room =
                keys::room_of(keys::PURGED, &key).ok_or_else(|| malformed(&key, "purge key"))?;
            tree.set(&room, purged_item(&room));
            purged.insert(room);
        }
        Ok(Self {
            actor,
            hot: LruCache::new(hot_rooms),
            tree,
            purged,
            recent: recent::RecentChanges::default(),
            logged: 0,
            admitted: 0,
            catch_up_permits: HashMap::new(),
        })
    }

    pub fn tree(&self) -> &DigestTree {
        &self.tree
    }

    /// Up to `n` of the changes of `room` waiting for their dependencies;
    /// `None` when the room is not in memory (its waiting changes went
    /// with it).
    pub fn pending_hashes(&self, room: &RoomId, n: usize) -> Option<Vec<ChangeHash>> {
        self.hot.peek(room).map(|hot| hot.doc.pending_hashes(n))
    }

    /// Up to `n` of `hashes` that wait for their dependencies in `room`
    /// (none if the room is not hot).
    pub fn waiting_among(&self, room: &RoomId, hashes: &[ChangeHash], n: usize) -> Vec<ChangeHash> {
        self.hot.peek(room).map_or_else(Vec::new, |hot| {
            hashes
                .iter()
                .filter(|h| hot.doc.is_pending(h))
                .take(n)
                .copied()
                .collect()
        })
    }

    /// Whether any of `hashes` still waits in `room` (`None`: the room is
    /// not in memory).
    pub fn any_pending(&self, room: &RoomId, hashes: &[ChangeHash]) -> Option<bool> {
        self.hot
            .peek(room)
            .map(|hot| hashes.iter().any(|h| hot.doc.is_pending(h)))
    }

    pub fn is_purged(&self, room: &RoomId) -> bool {
        self.purged.contains(room)
    }

    /// Whether `room` holds the change `hash`, or would refuse or ignore
    /// it (`RoomDoc::would_ignore`): a peer holding it has nothing this
    /// replica would take.
    pub fn has_or_refused(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
        hash: &Head,
    ) -> Result<bool, Error> {
        self.holds(store, room, hash, true)
    }

    /// Whether `room` holds the change `hash` (cheap).
    pub fn has_change(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
        hash: &Head,
    ) -> Result<bool, Error> {
        self.holds(store, room, hash, false)
    }

    fn holds(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
        hash: &Head,
        or_refused: bool,
    ) -> Result<bool, Error> {
        let hash = ChangeHash(hash.0);
        Ok(self
            .load(store, room)?
            .is_some_and(|h| h.doc.has_change(&hash) || (or_refused && h.doc.would_ignore(&hash))))
    }

    /// Hash prefixes of up to `limit` ancestors of the room's heads: the
    /// nearest `NEAR`, then every power of two further back (a peer finds
    /// our newest shared change among them; see `wire::RoomHeads`).
    pub fn ancestry(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
        limit: usize,
    ) -> Result<Vec<[u8; 8]>, Error> {
        const NEAR: usize = 8;
        const SCAN: usize = 256;
        let Some((hot, recent)) = self.load_with_recent(store, room)? else {
            return Ok(Vec::new());
        };
        let all = hot.doc.ancestors(SCAN, recent);
        let picked = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < NEAR || (i + 1).is_power_of_two())
            .map(|(_, hash)| prefix(hash))
            .take(limit)
            .collect();
        Ok(picked)
    }

    /// The changes of `room` a peer lacks, given its heads and ancestry
    /// hints: walks back from our heads to the newest changes it shares.
    pub fn changes_for(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
        their_heads: &[ChangeHash],
        ancestry: &[[u8; 8]],
    ) -> Result<Vec<Change>, Error> {
        /// Changes walked back through while looking for a shared one.
        const SCAN: usize = 512;
        let Some((hot, recent)) = self.load_with_recent(store, room)? else {
            return Ok(Vec::new());
        };
        let known: Vec<ChangeHash> = their_heads
            .iter()
            .filter(|h| hot.doc.has_change(h))
            .copied()
            .collect();
        if known.len() == their_heads.len() || ancestry.is_empty() {
            return Ok(hot.doc.changes_since_known(&known, recent));
        }
        // Some of their heads are unknown here: they wrote too. Anything
        // both hold stops the walk; what it found, they have.
        let hints: std::collections::HashSet<[u8; 8]> = ancestry.iter().copied().collect();
        let mut have: Vec<ChangeHash> = hot
            .doc
            .walk_back_known(
                SCAN,
                |h| known.contains(h) || hints.contains(&prefix(h)),
                recent,
            )
            .into_iter()
            .filter(|(_, shared)| *shared)
            .map(|(hash, _)| hash)
            .collect();
        have.extend(known);
        Ok(hot.doc.changes_since_known(&have, recent))
    }

    /// The changes of a room among `hashes` (for serving the change log):
    /// recent ones from memory, the rest rebuilt by automerge.
    pub fn changes_by_hash(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
        hashes: &[Head],
    ) -> Result<Vec<Change>, Error> {
        let hashes: Vec<ChangeHash> = hashes.iter().map(|h| ChangeHash(h.0)).collect();
        let missing: Vec<ChangeHash> = hashes
            .iter()
            .filter(|h| self.recent.get(h).is_none())
            .copied()
            .collect();
        let mut rebuilt: std::collections::HashMap<ChangeHash, Change> = Default::default();
        if !missing.is_empty() {
            if let Some(hot) = self.load(store, room)? {
                let changes = hot.doc.changes_by_hash(&missing);
                rebuilt.extend(changes.into_iter().map(|c| (c.hash(), c)));
            }
        }
        // In the order asked (the log's: dependencies first).
        Ok(hashes
            .iter()
            .filter_map(|h| rebuilt.remove(h).or_else(|| self.recent.get(h).cloned()))
            .collect())
    }

    /// Removes a room from storage, keeping a marker so that stale replicas'
    /// changes for it are refused, and dropping its owner-index entries.
    ///
    /// The marker keeps the room's end change (`end`, else the one found in
    /// the room here): the proof a replica that never saw the end is given
    /// before it follows the purge.
    pub fn purge(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
        now_ms: u64,
        end: Option<Vec<u8>>,
    ) -> Result<Batch, Error> {
        let mut batch = Batch::default();
        if self.purged.contains(room) {
            return Ok(batch);
        }
        let (before, found) = match self.load(store, room)? {
            Some(hot) => {
                let view = IndexView::of(readable(&mut hot.doc)?.as_ref());
                let found = hot.doc.end_change().map(|c| c.raw_bytes().to_vec());
                (view, found)
            }
            None => (IndexView::default(), None),
        };
        let end = end.or(found).unwrap_or_default();
        index_updates(room, &before, &IndexView::default(), &mut batch);
        batch.delete(keys::snapshot(room));
        for (key, _) in store.scan_prefix(&keys::chunks(room))? {
            batch.delete(key);
        }
        batch.delete(keys::index(room));
        batch.delete(keys::digest(room));
        let mut marker = now_ms.to_be_bytes().to_vec();
        marker.extend(end);
        batch.put(keys::purged(room), marker);
        self.hot.pop(room);
        self.tree.set(room, purged_item(room));
        self.purged.insert(room.clone());
        Ok(batch)
    }

    /// Whether `change` proves that `room` ended: by its genesis, or by the
    /// `meta` map this replica's copy holds (`RoomDoc::ends_this_copy`).
    /// A copy not in memory is loaded only while `loads_left` lasts (one
    /// `Purged` can name thousands of rooms, and each load evicts a hot
    /// room), and only for a change that writes an `ended` time to some
    /// map at all. `None`: not checked, the loads are spent.
    pub fn is_end_proof(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
        change: &Change,
        loads_left: &mut usize,
    ) -> Result<Option<EndProof>, Error> {
        if crate::room::is_end_change(room, change) {
            return Ok(Some(EndProof::Ends));
        }
        let could = crate::room::end_proof::ended_targets(room, change)
            .is_some_and(|targets| !targets.is_empty());
        if !could {
            return Ok(Some(EndProof::NotEnds));
        }
        if !self.hot.contains(room) {
            if *loads_left == 0 {
                return Ok(None);
            }
            *loads_left -= 1;
        }
        Ok(Some(
            self.load(store, room)?
                .map_or(EndProof::NotEnds, |hot| hot.doc.ends_this_copy(change)),
        ))
    }

    /// The end change kept in a purged room's marker (empty if none).
    pub fn purge_proof(&self, store: &dyn KvRead, room: &RoomId) -> Result<Vec<u8>, Error> {
        let marker = store.get(&keys::purged(room))?.unwrap_or_default();
        Ok(marker.get(8..).map(<[u8]>::to_vec).unwrap_or_default())
    }

    pub fn hot_len(&self) -> usize {
        self.hot.len()
    }

    /// Forgets the in-memory copy of `room` (after a failed persist).
    pub fn evict(&mut self, room: &RoomId) {
        self.hot.pop(room);
    }

    /// The room, loading it from storage if it is cold. `Ok(None)` if the
    /// store has nothing for it.
    fn load(&mut self, store: &dyn KvRead, room: &RoomId) -> Result<Option<&mut HotRoom>, Error> {
        if !self.hot.contains(room) {
            let Some(hot) = self.read_stored(store, room)? else {
                return Ok(None);
            };
            self.admit(room, hot);
        }
        Ok(self.hot.get_mut(room))
    }

    /// Lets `room` catch up on the peer's base `base` when it comes again
    /// (`RoomDoc::permit_catch_up`).
    pub fn permit_catch_up(&mut self, room: &RoomId, base: ChangeHash) {
        if !self.catch_up_permits.contains_key(room)
            && self.catch_up_permits.len() >= CATCH_UP_PERMITS_MAX
        {
            // Permits are rare (a replica compacted past); one that is
            // dropped is voted for again when its base comes again.
            if let Some(other) = self.catch_up_permits.keys().next().cloned() {
                self.catch_up_permits.remove(&other);
            }
        }
        self.catch_up_permits.insert(room.clone(), base);
        if let Some(hot) = self.hot.peek_mut(room) {
            hot.doc.permit_catch_up(base);
        }
    }

    /// `room` moved to a newer generation: its permit is spent.
    pub fn forget_catch_up_permit(&mut self, room: &RoomId) {
        self.catch_up_permits.remove(room);
    }

    /// Makes `hot` the room's hot copy, numbered (`admitted`).
    fn admit(&mut self, room: &RoomId, mut hot: HotRoom) {
        self.admitted += 1;
        hot.doc.set_admitted(self.admitted);
        if let Some(base) = self.catch_up_permits.get(room) {
            hot.doc.permit_catch_up(*base);
        }
        self.hot.push(room.clone(), hot);
    }

    /// `load`, with the recent changes beside it (the two are apart, so
    /// a room's walks can read both).
    fn load_with_recent(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
    ) -> Result<Option<(&mut HotRoom, &recent::RecentChanges)>, Error> {
        if self.load(store, room)?.is_none() {
            return Ok(None);
        }
        Ok(self.hot.get_mut(room).map(|hot| (hot, &self.recent)))
    }

    fn read_stored(&self, store: &dyn KvRead, room: &RoomId) -> Result<Option<HotRoom>, Error> {
        let snapshot = store.get(&keys::snapshot(room))?;
        let stored = store.scan_prefix(&keys::chunks(room))?;
        if snapshot.is_none() && stored.is_empty() {
            return Ok(None);
        }
        let mut seqs = Vec::with_capacity(stored.len());
        let mut chunks = Vec::with_capacity(stored.len());
        for (key, value) in stored {
            let seq = keys::chunk_seq(&key).ok_or_else(|| StorageError::Malformed {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason: "chunk key without sequence".into(),
            })?;
            seqs.push(seq);
            chunks.push(value);
        }
        let doc = RoomDoc::load(
            room.clone(),
            self.actor.clone(),
            snapshot.as_deref(),
            &chunks,
        )?;
        Ok(Some(HotRoom {
            doc,
            chunk_first: seqs.first().copied().unwrap_or(0),
            chunk_next: seqs.last().map_or(0, |s| s + 1),
            chunk_bytes: chunks.iter().map(|c| c.len() as u64).sum(),
            snapshot_bytes: snapshot.map_or(0, |s| s.len() as u64),
            cold: true,
        }))
    }

    /// Reads a room; `Ok(None)` if unknown (or known only by changes whose
    /// genesis has not arrived yet).
    /// Sessions that left at or before `left_before_ms` are left out.
    pub fn snapshot(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
        left_before_ms: Option<u64>,
    ) -> Result<Option<RoomSnapshot>, Error> {
        match self.load(store, room)? {
            Some(hot) if !hot.doc.is_empty() => hot.doc.reading(left_before_ms).map(Some),
            _ => Ok(None),
        }
    }

    /// Reads a room with one session only, departed or not (`RoomDoc::reading_of`).
    pub fn snapshot_of(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
        session: &SessionId,
    ) -> Result<Option<SessionReading>, Error> {
        (self.load(store, room)?).map_or(Ok(None), |hot| hot.doc.reading_of(session))
    }

    pub fn export(&mut self, store: &dyn KvRead, room: &RoomId) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .load(store, room)?
            .filter(|h| !h.doc.is_empty())
            .map(|h| h.doc.save()))
    }

    pub fn heads(&mut self, store: &dyn KvRead, room: &RoomId) -> Result<Vec<Head>, Error> {
        Ok(self
            .load(store, room)?
            .map(|h| h.doc.heads().iter().map(head).collect())
            .unwrap_or_default())
    }

    /// Changes of `room` that a peer with heads `have` lacks.
    pub fn changes_since(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
        have: &[Head],
    ) -> Result<Vec<Change>, Error> {
        let have: Vec<ChangeHash> = have.iter().map(change_hash).collect();
        Ok(self
            .load_with_recent(store, room)?
            .map(|(h, recent)| h.doc.changes_since_known(&have, recent))
            .unwrap_or_default())
    }

    fn hot_heads(&mut self, room: &RoomId) -> Vec<ChangeHash> {
        self.hot
            .peek(room)
            .map(|h| h.doc.heads())
            .unwrap_or_default()
    }

    /// After a failed write: if the in-memory room moved past what storage
    /// holds (or is no longer fully known), forget it so the next use
    /// reloads it from storage. A write refused before it changed anything
    /// keeps the room hot.
    fn evict_if_moved(&mut self, room: &RoomId, heads: Vec<ChangeHash>, failed: bool) {
        if !failed {
            return;
        }
        let moved = self
            .hot
            .peek(room)
            .is_none_or(|h| h.doc.is_poisoned() || h.doc.heads() != heads);
        if moved {
            self.hot.pop(room);
        }
    }
}

/// A snapshot, or `None` while the room's genesis has not arrived.
fn readable(doc: &mut RoomDoc) -> Result<Option<RoomSnapshot>, Error> {
    if doc.is_empty() {
        return Ok(None);
    }
    doc.snapshot().map(Some)
}

/// The first 8 bytes of a change hash, as ancestry hints carry them.
fn prefix(hash: &ChangeHash) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(&hash.0[..8]);
    out
}
