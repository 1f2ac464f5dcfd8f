//! An in-memory store that models durability: applied writes sit in a
//! volatile overlay until `flush`, and `crash` throws the overlay away — what
//! a power cut does to writes that were never flushed. Tests and the
//! simulator use it; `fail_writes` injects storage errors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{Batch, Entry, Kv, KvRead, StorageError};

#[derive(Debug, Default)]
pub struct MemKv {
    maps: Mutex<Maps>,
    fail_writes: AtomicBool,
}

#[derive(Debug, Default)]
struct Maps {
    durable: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Writes applied but not flushed; `None` is a delete.
    volatile: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl MemKv {
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops every write not yet flushed.
    pub fn crash(&self) {
        self.lock().volatile.clear();
    }

    /// Makes `apply` and `flush` fail until switched off.
    pub fn set_fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Ordering::SeqCst);
    }

    /// Bytes held durably (keys and values).
    pub fn durable_bytes(&self) -> usize {
        self.lock()
            .durable
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        // A panic while holding this lock leaves plain maps in a consistent
        // state (every mutation is a single insert/remove), so poisoning
        // carries no information here.
        self.maps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_faults(&self) -> Result<(), StorageError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(StorageError::Backend("injected write failure".into()));
        }
        Ok(())
    }
}

impl KvRead for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let maps = self.lock();
        Ok(match maps.volatile.get(key) {
            Some(value) => value.clone(),
            None => maps.durable.get(key).cloned(),
        })
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
        let maps = self.lock();
        let range = super::scan_range(prefix, after);
        let durable = maps.durable.range::<Vec<u8>, _>(range.clone());
        let durable = durable
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()));
        let volatile = maps.volatile.range::<Vec<u8>, _>(range);
        let volatile = volatile.take_while(|(k, _)| k.starts_with(prefix));
        Ok(super::merge_overlay(durable, volatile, limit))
    }
}

impl Kv for MemKv {
    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        self.check_faults()?;
        let mut maps = self.lock();
        for (key, value) in batch.writes {
            maps.volatile.insert(key, value);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.check_faults()?;
        let mut maps = self.lock();
        let volatile = std::mem::take(&mut maps.volatile);
        for (key, value) in volatile {
            match value {
                Some(value) => maps.durable.insert(key, value),
                None => maps.durable.remove(&key),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_loses_only_unflushed_writes() {
        let kv = MemKv::new();
        let mut batch = Batch::default();
        batch.put(b"a".to_vec(), b"1".to_vec());
        kv.apply(batch).expect("apply");
        kv.flush().expect("flush");
        let mut batch = Batch::default();
        batch.put(b"b".to_vec(), b"2".to_vec());
        batch.delete(b"a".to_vec());
        kv.apply(batch).expect("apply");
        assert_eq!(kv.get(b"a").expect("get"), None);
        assert_eq!(kv.scan_prefix(b"").expect("scan").len(), 1);
        kv.crash();
        assert_eq!(kv.get(b"a").expect("get"), Some(b"1".to_vec()));
        assert_eq!(kv.get(b"b").expect("get"), None);
    }

    #[test]
    fn injected_failures_are_errors() {
        let kv = MemKv::new();
        kv.set_fail_writes(true);
        assert!(kv.apply(Batch::default()).is_err());
        assert!(kv.flush().is_err());
    }
}
