//! The change log: what each write or merge added to a room, keyed by the
//! HLC stamp of that moment. The since-a-timestamp catch-up path and the
//! change feed replay it.

use automerge::Change;

use super::digest::room_item;
use super::{malformed, RoomSet};
use crate::error::Error;
use crate::hlc::Timestamp;
use crate::ids::RoomId;
use crate::limits::LOG_ENTRY_BYTES_MAX;
use crate::model::Head;
use crate::storage::{keys, Batch, KvRead};

/// One entry of the change log: the changes one write or merge added to a
/// room, under the HLC stamp of that moment (the key). The since-a-timestamp
/// catch-up path replays these.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogEntry {
    pub room: RoomId,
    /// Stored as 32 raw bytes each (not the API's hex).
    #[serde(with = "raw_heads")]
    pub hashes: Vec<Head>,
}

/// Heads as raw 32-byte arrays: the stored log's encoding.
mod raw_heads {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::model::Head;

    pub fn serialize<S: Serializer>(heads: &[Head], s: S) -> Result<S::Ok, S::Error> {
        let raw: Vec<[u8; 32]> = heads.iter().map(|h| h.0).collect();
        raw.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Head>, D::Error> {
        let raw = Vec::<[u8; 32]>::deserialize(d)?;
        Ok(raw.into_iter().map(Head).collect())
    }
}

impl LogEntry {
    /// The entries that log `changes`, in order: as few as possible with
    /// at most `LOG_ENTRY_BYTES_MAX` of change bytes each (a larger change
    /// gets an entry of its own).
    pub fn pieces(room: &RoomId, changes: &[Change]) -> Vec<LogEntry> {
        let mut pieces: Vec<LogEntry> = Vec::new();
        let mut bytes = 0;
        for change in changes {
            let len = change.raw_bytes().len();
            match pieces.last_mut() {
                Some(last) if bytes + len <= LOG_ENTRY_BYTES_MAX => {
                    bytes += len;
                    last.hashes.push(Head(change.hash().0));
                }
                _ => {
                    bytes = len;
                    pieces.push(LogEntry {
                        room: room.clone(),
                        hashes: vec![Head(change.hash().0)],
                    });
                }
            }
        }
        pieces
    }

    /// Writes this entry under `stamp`.
    pub fn put(&self, stamp: &Timestamp, batch: &mut Batch) {
        // LogEntry holds only ids and fixed arrays: postcard cannot fail on it.
        let value = postcard::to_stdvec(self).expect("log entry serializes");
        batch.put(keys::log(stamp), value);
    }
}

/// What a trim of the change log removes (`RoomSet::trim_log`).
#[derive(Debug, Default)]
pub struct TrimmedLog {
    pub batch: Batch,
    /// The newest stamp removed: the new horizon.
    pub horizon: Option<Timestamp>,
    pub removed: usize,
    /// Of `removed`, the entries stamped after the given stamp.
    pub counted: usize,
}

impl RoomSet {
    /// Log entries after `after` (from the start if `None`), up to `limit`.
    pub fn log_after(
        store: &dyn KvRead,
        after: Option<&Timestamp>,
        limit: usize,
    ) -> Result<Vec<(Timestamp, LogEntry)>, Error> {
        let after_key = after.map(keys::log);
        let entries = store.scan_after(keys::LOG, after_key.as_deref(), limit)?;
        entries
            .into_iter()
            .map(|(key, value)| {
                let stamp = keys::log_stamp(&key).ok_or_else(|| malformed(&key, "log key"))?;
                let entry =
                    postcard::from_bytes(&value).map_err(|_| malformed(&key, "log entry"))?;
                Ok((stamp, entry))
            })
            .collect()
    }

    /// Deletes up to `max` of the oldest log entries: whatever their age
    /// until `excess` of those stamped after `counted_after` (all if
    /// `None`) are gone, with every older one on the way; then those
    /// stamped before `before_wall_ms`. Returns the batch, the newest stamp
    /// removed (the new horizon), how many were removed, and how many of
    /// those were stamped after `counted_after`.
    pub fn trim_log(
        store: &dyn KvRead,
        before_wall_ms: u64,
        excess: usize,
        max: usize,
        counted_after: Option<&Timestamp>,
    ) -> Result<TrimmedLog, Error> {
        let mut trimmed = TrimmedLog::default();
        for (key, _) in store.scan_after(keys::LOG, None, max)? {
            let Some(stamp) = keys::log_stamp(&key) else {
                continue;
            };
            if trimmed.counted >= excess && stamp.wall_ms >= before_wall_ms {
                break;
            }
            trimmed.batch.delete(key);
            trimmed.removed += 1;
            if counted_after.is_none_or(|after| stamp > *after) {
                trimmed.counted += 1;
            }
            trimmed.horizon = Some(stamp);
        }
        Ok(trimmed)
    }

    /// Log entries written since this set was opened.
    pub fn logged(&self) -> u64 {
        self.logged
    }

    /// Counts `n` more log entries written (`Replica::log_rest`).
    pub fn note_logged(&mut self, n: usize) {
        self.logged = self.logged.saturating_add(n as u64);
    }

    /// Updates the room's digest item and appends a change-log entry
    /// under `stamp`. Returns the entries still to log when the changes
    /// are too many for one (`LogEntry::pieces`): the caller stamps them.
    pub(super) fn record(
        &mut self,
        room: &RoomId,
        heads: &[Head],
        changes: &[Change],
        stamp: Timestamp,
        batch: &mut Batch,
    ) -> Vec<LogEntry> {
        if changes.is_empty() {
            return Vec::new();
        }
        self.recent.add(changes);
        let item = room_item(room, heads);
        self.tree.set(room, item);
        batch.put(keys::digest(room), item.to_vec());
        let mut pieces = LogEntry::pieces(room, changes).into_iter();
        if let Some(first) = pieces.next() {
            first.put(&stamp, batch);
            self.logged = self.logged.saturating_add(1);
        }
        pieces.collect()
    }
}
