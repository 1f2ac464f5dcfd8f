//! The incident journal: what happened to this replica, for a person
//! reviewing an incident afterwards — peers lost and regained, catch-ups
//! that moved changes (and by which path), purges, refused messages. Each
//! entry is stamped by the HLC, persisted with the replica's other writes,
//! and the journal keeps only the newest `journal_entries_max` entries.

use serde::{Deserialize, Serialize};

use super::overlay::Overlay;
use super::{Event, Replica};
use crate::error::Error;
use crate::hlc::Timestamp;
use crate::membership::Grade;
use crate::storage::{keys, Batch, KvRead};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    PeerUp,
    PeerDown,
    /// A sync round that applied changes.
    CatchUp,
    Purge,
    Rejected,
    /// A node's probes failed; the cluster waits for a refutation.
    Suspected,
    /// A suspect answered: the suspicion is dropped.
    Refuted,
    /// A node graded Down: its calls fail over.
    Convicted,
    /// Other grade changes (Healthy ↔ Degraded, back after conviction).
    Graded,
    /// A call moved (or a failover finished).
    Rehomed,
    Drain,
    /// A failover or drain stopped before moving every call.
    Rollback,
    /// This replica was convicted by the cluster and rejoined.
    Rejoined,
    /// Compaction goes on without a replica held Down for
    /// `compaction_absent_ms`, or waits for it again.
    Compaction,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Serialized as the stamp's text form (`wall_ms-logical-actor` in
    /// hex), the string `GET /v1/incidents?after=` takes; an entry stored
    /// by an older build (an object) still reads.
    #[serde(with = "stamp_text")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[0-9a-f]{16}-[0-9a-f]{8}-[0-9a-f]{16}$"))]
    pub at: Timestamp,
    pub kind: IncidentKind,
    pub detail: String,
}

impl Replica {
    /// Counts the journal after a restart.
    pub(super) fn restore_journal(&mut self) -> Result<(), Error> {
        self.journal_len = self.store.scan_prefix(keys::JOURNAL)?.len();
        Ok(())
    }

    /// Journals what an event says about an incident, if anything.
    pub(super) fn journal_event(&mut self, event: &Event) {
        let (kind, detail) = match event {
            Event::SyncFinished {
                peer,
                path,
                changes,
            } if *changes > 0 => (
                IncidentKind::CatchUp,
                format!("{changes} changes from {peer} by the {path:?} path"),
            ),
            Event::Purged { room } => (IncidentKind::Purge, format!("room {room}")),
            Event::Rejected { peer, reason } => {
                (IncidentKind::Rejected, format!("from {peer}: {reason}"))
            }
            Event::Grade(change) => (
                match (change.from, change.to) {
                    (_, Grade::Down) => IncidentKind::Convicted,
                    (_, Grade::Suspect) => IncidentKind::Suspected,
                    (Grade::Suspect, _) => IncidentKind::Refuted,
                    _ => IncidentKind::Graded,
                },
                format!(
                    "{}: {:?} -> {:?}: {}",
                    change.node, change.from, change.to, change.reason
                ),
            ),
            Event::Rehomed(moved) => (
                IncidentKind::Rehomed,
                format!(
                    "{}/{}: {} -> {} (epoch {}, {:?})",
                    moved.room, moved.session, moved.from, moved.to, moved.epoch, moved.kind
                ),
            ),
            Event::Drain {
                node,
                active: true,
                rate_per_s,
            } => (
                IncidentKind::Drain,
                format!("{node}: drain started, {rate_per_s} calls/s"),
            ),
            Event::Drain {
                node,
                active: false,
                ..
            } => (IncidentKind::Drain, format!("{node}: drain cancelled")),
            Event::MoveStopped {
                node,
                kind,
                calls_left,
                moved_here,
                why,
            } => (
                IncidentKind::Rollback,
                format!(
                    "{node}: {kind:?} stopped ({why}); {moved_here} calls moved here, {calls_left} stay"
                ),
            ),
            _ => return,
        };
        self.journal(kind, detail);
    }

    pub(super) fn journal(&mut self, kind: IncidentKind, detail: String) {
        let at = self.hlc.tick(self.now_ms);
        let entry = Incident { at, kind, detail };
        let Ok(value) = serde_json::to_vec(&entry) else {
            return;
        };
        let mut batch = Batch::default();
        batch.put(keys::journal(&at), value);
        self.journal_len += 1;
        let excess = self
            .journal_len
            .saturating_sub(self.config.journal_entries_max);
        if excess > 0 {
            let view = Overlay {
                base: self.store.as_ref(),
                staged: &self.staged,
            };
            match view.scan_after(keys::JOURNAL, None, excess) {
                Ok(oldest) => {
                    for (key, _) in oldest {
                        batch.delete(key);
                        self.journal_len -= 1;
                    }
                }
                Err(_) => self.stats.storage_errors += 1,
            }
        }
        self.staged.add(batch, false);
    }

    /// Journal entries after `after` (from the oldest if `None`), oldest
    /// first, at most `limit`.
    pub fn incidents(
        &self,
        after: Option<&Timestamp>,
        limit: usize,
    ) -> Result<Vec<Incident>, Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let after = after.map(keys::journal);
        let entries = view.scan_after(keys::JOURNAL, after.as_deref(), limit)?;
        Ok(entries
            .into_iter()
            .filter_map(|(_, value)| serde_json::from_slice(&value).ok())
            .collect())
    }
}

/// An incident's stamp as text (JSON readers: the actor does not fit a
/// JavaScript number, and `after=` takes the text form).
mod stamp_text {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    use crate::hlc::Timestamp;

    pub fn serialize<S: Serializer>(stamp: &Timestamp, to: S) -> Result<S::Ok, S::Error> {
        to.collect_str(stamp)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Timestamp, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Text(String),
            Object(Timestamp),
        }
        match Stored::deserialize(from)? {
            Stored::Text(text) => {
                Timestamp::parse(&text).ok_or_else(|| D::Error::custom("not an HLC stamp"))
            }
            Stored::Object(stamp) => Ok(stamp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incident_reads_as_text_and_old_entries_still_load() {
        let at = Timestamp {
            wall_ms: 0x19a_b3c4_d5e6,
            logical: 2,
            actor: u64::MAX,
        };
        let entry = Incident {
            at,
            kind: IncidentKind::Graded,
            detail: "x".into(),
        };
        let json = serde_json::to_value(&entry).expect("serializes");
        assert_eq!(json["at"], at.to_string());
        let back: Incident = serde_json::from_value(json).expect("reads");
        assert_eq!(back, entry);
        let old = serde_json::json!({
            "at": {"wall_ms": at.wall_ms, "logical": 2, "actor": u64::MAX},
            "kind": "graded",
            "detail": "x",
        });
        let back: Incident = serde_json::from_value(old).expect("an old entry reads");
        assert_eq!(back, entry);
    }
}
