//! What the replica answers its driver outside the protocol: its id and
//! counters, and reads of rooms, the log and the indexes, each through the
//! writes staged in the current input.

use super::overlay::Overlay;
use super::{wire, Replica, ReplicaConfig, ReplicaStats};
use crate::error::Error;
use crate::hlc::Timestamp;
use crate::ids::{NodeId, RoomId};
use crate::rooms::RoomSet;
use crate::storage::{keys, KvRead};

impl Replica {
    pub fn node(&self) -> &NodeId {
        &self.config.node
    }

    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// The root of the digest tree: equal roots mean equal replicas.
    pub fn root(&self) -> wire::Digest {
        self.rooms.tree().root()
    }

    /// Reads a room (through writes not yet handed to the driver), without
    /// the sessions that left more than `session_retention_ms` ago by this
    /// replica's clock.
    pub fn room(&mut self, room: &RoomId) -> Result<Option<crate::model::RoomSnapshot>, Error> {
        let left_before = self.now_ms.saturating_sub(self.config.session_retention_ms);
        self.room_as_of(room, Some(left_before))
    }

    /// Reads a room without the sessions that left at or before
    /// `left_before_ms` (`None`: every session the document still holds).
    /// Checks that must tell a departed session from an unknown one (a
    /// resume) read with `None`; a simulator compares replicas whose
    /// clocks differ with one common bound.
    pub fn room_as_of(
        &mut self,
        room: &RoomId,
        left_before_ms: Option<u64>,
    ) -> Result<Option<crate::model::RoomSnapshot>, Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        self.rooms.snapshot(&view, room, left_before_ms)
    }

    /// Reads a room with one session, even one that left long ago: what a
    /// resume must tell from an unknown session, at the cost of that
    /// session (not of every departed one the document still holds).
    pub fn room_with_session(
        &mut self,
        room: &RoomId,
        session: &crate::ids::SessionId,
    ) -> Result<Option<crate::model::SessionReading>, Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        self.rooms.snapshot_of(&view, room, session)
    }

    /// The generation of a room's history: 0 until it is first compacted
    /// (`None`: no such room here).
    pub fn room_generation(&mut self, room: &RoomId) -> Result<Option<u64>, Error> {
        Ok(self
            .compaction_status(room)?
            .map(|status| status.generation))
    }

    /// The changes in a room's history since its base (or genesis): what
    /// compaction bounds (`None`: no such room here).
    pub fn room_history_len(&mut self, room: &RoomId) -> Result<Option<u64>, Error> {
        Ok(self.compaction_status(room)?.map(|status| status.history))
    }

    fn compaction_status(
        &mut self,
        room: &RoomId,
    ) -> Result<Option<crate::rooms::CompactionStatus>, Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        self.rooms.compaction_status(&view, room)
    }

    pub fn heads(&mut self, room: &RoomId) -> Result<Vec<crate::model::Head>, Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        self.rooms.heads(&view, room)
    }

    /// Whether this replica holds the change `head` of `room`.
    pub fn has_change(&mut self, room: &RoomId, head: &crate::model::Head) -> bool {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        matches!(self.rooms.has_change(&view, room, head), Ok(true))
    }

    pub fn is_purged(&self, room: &RoomId) -> bool {
        self.rooms.is_purged(room)
    }

    /// Every room in the index (live and ended, not purged), without
    /// loading any room.
    pub fn list_rooms(&self) -> Result<Vec<crate::model::RoomSummary>, Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let mut rooms = Vec::new();
        for (_, value) in view.scan_prefix(keys::INDEX)? {
            if let Ok(summary) = serde_json::from_slice(&value) {
                rooms.push(summary);
            }
        }
        Ok(rooms)
    }

    /// A room as standard automerge bytes (`None`: no such room).
    pub fn export_room(&mut self, room: &RoomId) -> Result<Option<Vec<u8>>, Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        self.rooms.export(&view, room)
    }

    /// Change-log entries after `after` (from the oldest held if `None`),
    /// oldest first, at most `limit`.
    pub fn change_log(
        &self,
        after: Option<&Timestamp>,
        limit: usize,
    ) -> Result<Vec<(Timestamp, crate::rooms::LogEntry)>, Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        RoomSet::log_after(&view, after, limit)
    }

    /// The newest change-log stamp trimmed away (`None`: nothing trimmed
    /// yet): entries after it are all held.
    pub fn log_horizon(&self) -> Option<Timestamp> {
        self.purge.log_horizon
    }

    /// Rooms loaded in memory.
    pub fn hot_rooms(&self) -> usize {
        self.rooms.hot_len()
    }

    /// Raw bytes of the changes of `room` a replica with heads `have` lacks.
    pub fn changes_since(
        &mut self,
        room: &RoomId,
        have: &[crate::model::Head],
    ) -> Result<Vec<Vec<u8>>, Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let changes = self.rooms.changes_since(&view, room, have)?;
        Ok(changes
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect())
    }

    /// Rooms with a digest item (live or purged).
    pub fn room_count(&self) -> usize {
        self.rooms.tree().len()
    }
}
