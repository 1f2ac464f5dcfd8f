//! The sled (0.34) store. One tree; batches are atomic (`apply_batch`);
//! `flush` fsyncs. The engine's core never imports this module.

use std::path::Path;

use super::{Batch, Entry, Kv, KvRead, StorageError};

#[derive(Debug, Clone)]
pub struct SledKv {
    db: sled::Db,
}

fn backend(err: sled::Error) -> StorageError {
    StorageError::Backend(err.to_string())
}

impl SledKv {
    /// Opens (or creates) the store in directory `path`. Opening does not
    /// read the rooms: they are loaded on demand.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let db = sled::Config::new()
            .path(path)
            // sled's own periodic flush is switched off: durability points
            // are the engine's group-commit flushes, so none is wasted.
            .flush_every_ms(None)
            .open()
            .map_err(backend)?;
        Ok(Self { db })
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
