//! Reads through the writes staged during the current input. The replica
//! emits its writes as one `Persist` at the end of each input; until the
//! driver applies it, reads of the same keys (a room evicted and reloaded in
//! the same input, say) must see the staged values.

use std::collections::BTreeMap;

use crate::storage::{merge_overlay, scan_range, Batch, Entry, KvRead, StorageError};

/// Staged writes: key → new value (`None`: deleted).
#[derive(Debug, Default)]
pub struct Staged {
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    durable: bool,
}

impl Staged {
    pub fn add(&mut self, batch: Batch, durable: bool) {
        self.durable |= durable && !batch.is_empty();
        for (key, value) in batch.writes {
            self.writes.insert(key, value);
        }
    }

    /// The staged writes as one batch, and whether it must be flushed
    /// before any later output is acted on.
    pub fn take(&mut self) -> Option<(Batch, bool)> {
        if self.writes.is_empty() {
            return None;
        }
        let durable = std::mem::take(&mut self.durable);
        let writes = std::mem::take(&mut self.writes).into_iter().collect();
        Some((Batch { writes }, durable))
    }
}

/// A store seen through the staged writes.
pub struct Overlay<'a> {
    pub base: &'a dyn KvRead,
    pub staged: &'a Staged,
}

impl KvRead for Overlay<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        match self.staged.writes.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.base.get(key),
        }
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StorageError> {
        self.scan_after(prefix, None, usize::MAX)
    }

    fn scan_after(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        // Enough base entries to fill `limit` even if staged deletes hide some.
        let deletes = self.staged.writes.values().filter(|v| v.is_none()).count();
        let base = self
            .base
            .scan_after(prefix, after, limit.saturating_add(deletes))?;
        let staged = self
            .staged
            .writes
            .range::<Vec<u8>, _>(scan_range(prefix, after));
        let staged = staged.take_while(|(k, _)| k.starts_with(prefix));
        Ok(merge_overlay(base, staged, limit))
    }
}
