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
    /// The last key under `prefix`, in key order. The default reads the
    /// whole prefix; stores that can seek from the end do.
    fn last_key(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.scan_prefix(prefix)?.pop().map(|(key, _)| key))
    }
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
    // Both inputs are in key order: merge them as streams and stop at
    // `limit`, so a small page of a large range (the oldest journal entry,
    // a page of the change log) costs the page, not the range.
    let mut base = base.into_iter().peekable();
    let mut overlay = overlay.into_iter().peekable();
    let mut merged = Vec::new();
    while merged.len() < limit {
        use std::cmp::Ordering;
        let order = match (base.peek(), overlay.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((bk, _)), Some((ok, _))) => bk.as_slice().cmp(ok.as_slice()),
        };
        if order == Ordering::Less {
            if let Some(entry) = base.next() {
                merged.push(entry);
            }
            continue;
        }
        if order == Ordering::Equal {
            // The overlay shadows the base entry with the same key.
            base.next();
        }
        if let Some((k, Some(v))) = overlay.next() {
            merged.push((k.clone(), v.clone()));
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::merge_overlay;

    fn kv(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn the_overlay_shadows_deletes_and_inserts_in_key_order_up_to_the_limit() {
        let base = vec![kv("a", "1"), kv("b", "1"), kv("c", "1"), kv("d", "1")];
        let overlay: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = [
            (b"b".to_vec(), None),
            (b"c".to_vec(), Some(b"2".to_vec())),
            (b"bb".to_vec(), Some(b"2".to_vec())),
            (b"e".to_vec(), Some(b"2".to_vec())),
        ]
        .into_iter()
        .collect();
        let all = merge_overlay(base.clone(), &overlay, usize::MAX);
        assert_eq!(
            all,
            vec![
                kv("a", "1"),
                kv("bb", "2"),
                kv("c", "2"),
                kv("d", "1"),
                kv("e", "2")
            ]
        );
        let page = merge_overlay(base, &overlay, 2);
        assert_eq!(page, vec![kv("a", "1"), kv("bb", "2")]);
    }

    #[test]
    fn a_small_page_of_a_huge_base_reads_only_the_page() {
        let mut pulled = 0usize;
        let base = (0..1_000_000u32).map(|i| {
            pulled += 1;
            (i.to_be_bytes().to_vec(), Vec::new())
        });
        let none: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = Default::default();
        assert_eq!(merge_overlay(base, &none, 3).len(), 3);
        assert!(pulled <= 4, "pulled {pulled} entries for a page of 3");
    }
}
