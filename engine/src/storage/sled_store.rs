//! The sled (0.34) store. One tree; batches are atomic (`apply_batch`);
//! `flush` fsyncs. The engine's core never imports this module.

use std::path::Path;

use super::{Batch, Entry, Kv, KvRead, StorageError};
use crate::limits::STORE_LOCK_WAIT_MS;

#[derive(Debug, Clone)]
pub struct SledKv {
    db: sled::Db,
}

/// sled 0.34 reports a held file lock as an `Other` I/O error with this
/// message (its `config.rs`).
fn is_lock_held(err: &sled::Error) -> bool {
    matches!(err, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

fn backend(err: sled::Error) -> StorageError {
    StorageError::Backend(err.to_string())
}

impl SledKv {
    /// Opens (or creates) the store in directory `path`. Opening does not
    /// read the rooms: they are loaded on demand.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let started = std::time::Instant::now();
        let wait = std::time::Duration::from_millis(STORE_LOCK_WAIT_MS);
        let mut pause = std::time::Duration::from_millis(10);
        loop {
            let opened = sled::Config::new()
                .path(path)
                // sled's own periodic flush is switched off: durability
                // points are the engine's group-commit flushes, so none is
                // wasted.
                .flush_every_ms(None)
                .open();
            match opened {
                Ok(db) => return Ok(Self { db }),
                // See `STORE_LOCK_WAIT_MS`: the lock of a handle just
                // dropped is released a moment later.
                Err(err) if is_lock_held(&err) && started.elapsed() < wait => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(200));
                }
                Err(err) => return Err(backend(err)),
            }
        }
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        self.db.size_on_disk().map_err(backend)
    }
}

impl KvRead for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn last_key(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        match self.db.scan_prefix(prefix).next_back() {
            Some(entry) => Ok(Some(entry.map_err(backend)?.0.to_vec())),
            None => Ok(None),
        }
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StorageError> {
        self.db
            .scan_prefix(prefix)
            .map(|entry| {
                let (k, v) = entry.map_err(backend)?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn scan_after(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        self.db
            .range::<Vec<u8>, _>(super::scan_range(prefix, after))
            .take_while(|entry| entry.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .take(limit)
            .map(|entry| {
                let (k, v) = entry.map_err(backend)?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }
}

impl Kv for SledKv {
    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.writes {
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        self.db.apply_batch(sled_batch).map_err(backend)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush().map(|_| ()).map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_waits_for_a_lock_released_meanwhile_and_reports_one_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = SledKv::open(dir.path()).expect("open");
        let err = SledKv::open(dir.path()).expect_err("held: an error");
        assert!(err.to_string().contains("could not acquire lock"), "{err}");
        // Released while the second open waits: it gets the store.
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(first);
        });
        SledKv::open(dir.path()).expect("opened once the lock is free");
        release.join().expect("joined");
    }
}
