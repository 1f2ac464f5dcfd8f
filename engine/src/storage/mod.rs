//! Storage: a small ordered key-value interface with two implementations
//! (sled on disk, a map in memory with fault switches), and the key layout
//! of rooms on top of it.
//!
//! The read side ([`KvRead`]) is all the engine's core needs; writes leave
//! the core as a [`Batch`] that the driver applies and then makes durable
//! with [`Kv::flush`] — nothing is acknowledged before that flush.

use std::ops::Bound;

pub mod keys;
mod mem;
mod sled_store;

pub use mem::MemKv;
pub use sled_store::SledKv;

/// A storage failure. The message comes from the backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("storage backend: {0}")]
    Backend(String),
    #[error("stored value under {key} is malformed: {reason}")]
    Malformed { key: String, reason: String },
}

/// One stored key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Reads; the engine's core sees storage only through this.
pub trait KvRead: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StorageError>;
    /// Up to `limit` entries under `prefix` whose keys sort after `after`
    /// (from the start of the prefix if `None`), in key order.
    fn scan_after(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError>;
}

/// Reads plus atomic batched writes and an explicit durability point.
pub trait Kv: KvRead {
    /// Applies every write of `batch` atomically. Not yet durable.
    fn apply(&self, batch: Batch) -> Result<(), StorageError>;
    /// Makes every write applied so far durable.
    fn flush(&self) -> Result<(), StorageError>;
}

/// Writes to apply atomically, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push((key, Some(value)));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.push((key, None));
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    pub fn extend(&mut self, other: Batch) {
        self.writes.extend(other.writes);
    }

    /// Bytes of keys and values, for metrics.
    pub fn bytes(&self) -> usize {
        self.writes
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum()
    }
}

/// The key range of `scan_after(prefix, after, _)`: everything after
/// `after` (or from the start of `prefix`); callers stop at the prefix's end.
pub(crate) fn scan_range(prefix: &[u8], after: Option<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let start = match after {
        Some(key) => Bound::Excluded(key.to_vec()),
        None => Bound::Included(prefix.to_vec()),
    };
    (start, Bound::Unbounded)
}

/// Entries of `base` with `overlay` (pending writes: `None` deletes) laid
/// over them, in key order, at most `limit`. Both inputs must already be
/// restricted to the same range and prefix.
pub(crate) fn merge_overlay<'a>(
    base: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    overlay: impl IntoIterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
    limit: usize,
) -> Vec<Entry> {
    let mut merged: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> =
        base.into_iter().map(|(k, v)| (k, Some(v))).collect();
    for (k, v) in overlay {
        merged.insert(k.clone(), v.clone());
    }
    merged
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .take(limit)
        .collect()
}
