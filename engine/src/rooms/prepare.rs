//! Imports prepared away from the replica's task. Merging a large document
//! (decode, validate, apply, read back) takes long enough that a replica
//! doing it in line stops answering failure-detection probes and is graded
//! Suspect. So the replica only forks the room ([`RoomSet::fork`]); the
//! caller merges on the fork ([`Fork::prepare`]); the replica then swaps
//! the result in ([`RoomSet::install`]) if the room still has the heads it
//! was forked at, in the same replica instance (same actor), and otherwise
//! prepares the same changes again on a fresh copy, in line, and swaps
//! that in. Either way the import is validated by the same code
//! (`RoomDoc::apply_remote` with `Intake::Whole`), all or nothing.
//!
//! Equal heads mean equal applied history, so the swap loses nothing that
//! is stored or acknowledged. What the room knows beside its history
//! (peers' changes waiting for a dependency, refusals, changes of a
//! replaced history) may have grown meanwhile without moving the heads;
//! the swap would drop it, so then the import is merged in line too
//! (`RoomDoc::beside_heads`).

use automerge::{ActorId, Change, ChangeHash};

use super::{head, index_updates, readable, HotRoom, IndexView, RemoteWrite, RoomSet};
use crate::error::Error;
use crate::events;
use crate::hlc::Timestamp;
use crate::ids::RoomId;
use crate::model::{Head, RemoteOutcome, RoomSnapshot};
use crate::room::{Intake, Refusal, RoomDoc};
use crate::storage::KvRead;

/// A copy of a room to merge an import on.
pub struct Fork {
    room: RoomId,
    doc: RoomDoc,
    base: Base,
}

/// What the room was when forked: the set's actor (one per replica
/// instance: a reopened replica has another), the room's heads (`None`:
/// no such room) and how often what it knows beside them changed
/// (`RoomDoc::beside_heads`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Base {
    actor: ActorId,
    heads: Option<Vec<ChangeHash>>,
    beside_heads: (u64, u64),
}

/// An import merged on a fork, ready to install.
pub struct PreparedImport {
    room: RoomId,
    base: Base,
    doc: RoomDoc,
    /// The import's changes as given (merged again in line if the room
    /// moved since the fork).
    changes: Vec<Change>,
    outcome: RemoteOutcome,
    applied: Vec<Change>,
    before: Option<RoomSnapshot>,
    after: Option<RoomSnapshot>,
    /// The merged document saved, in case installing it compacts.
    saved: Option<Vec<u8>>,
    /// The import carried a newer base, so the copy compacted the room
    /// first: installed by the in-line merge, which stores a compaction.
    compacted: bool,
    /// Peers' changes refused one by one (`Fork::prepare_each`).
    refused: Vec<(Head, Refusal)>,
    /// The newest stamp of each applied change (`RemoteApply::stamps_ms`).
    stamps_ms: Vec<u64>,
    /// `RemoteApply::catch_up_asked`.
    catch_up_asked: Option<ChangeHash>,
}

impl std::fmt::Debug for PreparedImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedImport")
            .field("room", &self.room)
            .field("base", &self.base.heads)
            .field("applied", &self.applied.len())
            .finish_non_exhaustive()
    }
}

/// What installing a prepared import did.
pub enum Installed {
    Done(RemoteWrite),
    /// These changes are to be merged in line instead: the room changed
    /// since the fork, or (`checked`: the room is as forked, so the copy's
    /// checks hold for it) the import compacted the copy, which only the
    /// in-line merge stores.
    Moved {
        room: RoomId,
        changes: Vec<Change>,
        checked: bool,
    },
}

impl PreparedImport {
    pub fn room(&self) -> &RoomId {
        &self.room
    }
}

impl Fork {
    pub fn room(&self) -> &RoomId {
        &self.room
    }

    /// Merges `changes` on the copy, all or nothing, validated like a
    /// peer's: the costly part of an import, on the caller's thread.
    /// A document from before the room's last compaction is carried onto
    /// its base first (`RoomDoc::carried_import`).
    pub fn prepare(self, changes: Vec<Change>) -> Result<PreparedImport, Error> {
        // The room may move before the install: the in-line merge then
        // carries the import as given onto the room as it is by then (a
        // merge of an old document's reading depends on the room's heads).
        self.prepare_whole(changes, true)
    }

    /// `prepare`, on the replica's task (an import whose room moved): the
    /// merged document is not saved ahead (installing saves it if it must).
    pub fn prepare_in_line(self, changes: Vec<Change>) -> Result<PreparedImport, Error> {
        self.prepare_whole(changes, false)
    }

    fn prepare_whole(self, changes: Vec<Change>, save: bool) -> Result<PreparedImport, Error> {
        let given = changes.clone();
        let carried = self.carried_import(changes)?;
        let mut prepared = self.prepare_as(carried, Intake::Whole, save)?;
        prepared.changes = given;
        Ok(prepared)
    }

    /// An import's changes as the copied room takes them
    /// (`RoomDoc::carried_import`).
    pub fn carried_import(&self, changes: Vec<Change>) -> Result<Vec<Change>, Error> {
        self.doc.carried_import(changes)
    }

    /// Merges a peer's `changes` on the copy, each valid one applied and
    /// each invalid one refused, as `RoomSet::remote_apply` would.
    pub fn prepare_each(self, changes: Vec<Change>) -> Result<PreparedImport, Error> {
        self.prepare_as(changes, Intake::EachChange, true)
    }

    fn prepare_as(
        mut self,
        changes: Vec<Change>,
        intake: Intake,
        save: bool,
    ) -> Result<PreparedImport, Error> {
        let before = readable(&mut self.doc)?;
        let applied = self.doc.apply_remote(changes.clone(), intake)?;
        let refused: Vec<(Head, Refusal)> = applied
            .refused
            .iter()
            .map(|(hash, why)| (head(hash), why.clone()))
            .collect();
        if let (Intake::Whole, Some((change, why))) = (intake, refused.first()) {
            return Err(Error::Refused {
                room: self.room,
                change: *change,
                path: why.path.clone(),
                reason: why.reason.clone(),
            });
        }
        // An import is acknowledged only if all of it is in the room: not
        // left waiting for changes it lacks (or a base for a cut it lacks),
        // nor dropped as part of a history the room replaced
        // (`RoomDoc::carried_import` carries what can be carried before
        // this). Its own changes only: a
        // peer's change already waiting in the room is no reason to
        // refuse it (`applied.pending` counts the whole room).
        let waiting = changes
            .iter()
            .filter(|c| self.doc.is_pending(&c.hash()))
            .count();
        let unmerged = waiting + applied.dropped + applied.bases_deferred + applied.superseded;
        if intake == Intake::Whole && unmerged > 0 {
            return Err(Error::Invalid {
                field: "document",
                reason: format!(
                    "{unmerged} of its changes cannot be merged into room {}: they depend \
                     on changes the document lacks, or belong to a history the room's \
                     compaction replaced; export the room again and redo them on that \
                     document",
                    self.room
                ),
            });
        }
        let (after, saved) = if applied.applied.is_empty() {
            (before.clone(), None)
        } else {
            (readable(&mut self.doc)?, save.then(|| self.doc.save()))
        };
        Ok(PreparedImport {
            outcome: RemoteOutcome {
                applied: applied.applied.len(),
                pending: applied.pending,
                dropped: applied.dropped,
                refused: refused.len(),
                superseded: applied.superseded,
                bases_deferred: applied.bases_deferred,
                bases_merged: applied.bases_merged,
            },
            refused,
            compacted: applied.compacted.is_some(),
            room: self.room,
            base: self.base,
            doc: self.doc,
            changes,
            applied: applied.applied,
            stamps_ms: applied.stamps_ms,
            catch_up_asked: applied.catch_up_asked,
            before,
            after,
            saved,
        })
    }
}

impl RoomSet {
    /// Operations in a hot room's document (`None`: the room is not hot).
    pub fn ops(&self, room: &RoomId) -> Option<u64> {
        self.hot.peek(room).map(|h| h.doc.ops())
    }

    /// A copy of `room` to prepare an import on: the hot room's document,
    /// or an empty one if the room is new.
    pub fn fork(&mut self, store: &dyn KvRead, room: &RoomId) -> Result<Fork, Error> {
        if self.purged.contains(room) {
            return Err(Error::RoomPurged(room.clone()));
        }
        let (doc, heads, beside_heads) = match self.load(store, room)? {
            Some(hot) => (
                hot.doc.fork(),
                Some(hot.doc.heads()),
                hot.doc.beside_heads(),
            ),
            None => (
                RoomDoc::empty(room.clone(), self.actor.clone()),
                None,
                (0, 0),
            ),
        };
        Ok(Fork {
            room: room.clone(),
            doc,
            base: Base {
                actor: self.actor.clone(),
                heads,
                beside_heads,
            },
        })
    }

    /// Swaps a prepared import in if the room is as it was forked; `stamp`
    /// keys the log entry. Persists, indexes and logs like `remote_apply`.
    pub fn install(
        &mut self,
        store: &dyn KvRead,
        prepared: PreparedImport,
        stamp: Timestamp,
    ) -> Result<Installed, Error> {
        let room = prepared.room.clone();
        if self.purged.contains(&room) {
            return Err(Error::RoomPurged(room));
        }
        let actor = self.actor.clone();
        let live = self.load(store, &room)?;
        let current = Base {
            actor,
            heads: live.as_ref().map(|hot| hot.doc.heads()),
            beside_heads: live.map_or((0, 0), |hot| hot.doc.beside_heads()),
        };
        if current != prepared.base || prepared.compacted {
            return Ok(Installed::Moved {
                room,
                changes: prepared.changes,
                checked: current == prepared.base,
            });
        }
        if current.heads.is_none() {
            let empty = RoomDoc::empty(room.clone(), self.actor.clone());
            self.admit(&room, HotRoom::new(empty));
        }
        let hot = self
            .hot
            .get_mut(&room)
            .ok_or_else(|| Error::UnknownRoom(room.clone()))?;
        // The copy keeps the number of the room it replaces.
        let (admitted, _) = hot.doc.beside_heads();
        hot.doc = prepared.doc;
        hot.doc.set_admitted(admitted);
        let mut write = RemoteWrite {
            outcome: prepared.outcome,
            refused: prepared.refused,
            catch_up_asked: prepared.catch_up_asked,
            ..RemoteWrite::default()
        };
        if prepared.applied.is_empty() {
            return Ok(Installed::Done(write));
        }
        if let Some(after) = &prepared.after {
            write.kinds = events::diff(prepared.before.as_ref(), after);
        }
        hot.persist_saved(&prepared.applied, &mut write.batch, prepared.saved);
        index_updates(
            &room,
            &IndexView::of(prepared.before.as_ref()),
            &IndexView::of(prepared.after.as_ref()),
            &mut write.batch,
        );
        let heads: Vec<Head> = hot.doc.heads().iter().map(head).collect();
        write.log_rest = self.record(&room, &heads, &prepared.applied, stamp, &mut write.batch);
        write.applied = prepared.applied;
        write.stamps_ms = prepared.stamps_ms;
        Ok(Installed::Done(write))
    }
}
