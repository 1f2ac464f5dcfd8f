//! The two write paths into a room: a local operation, and peers' changes.
//! Each leaves its storage writes in a [`Batch`] and keeps the room hot
//! only if it matches what storage will hold.

use automerge::Change;

use super::hot::HotRoom;
use super::index::{index_scope, index_updates, IndexView};
use super::{compaction, head, readable, LocalWrite, RemoteWrite, RoomSet};
use crate::error::Error;
use crate::events;
use crate::hlc::Timestamp;
use crate::ids::RoomId;
use crate::model::{Head, RemoteOutcome};
use crate::room::{Intake, Refusal, RoomDoc, RoomOp, WriteCtx};
use crate::storage::{Batch, KvRead};

impl RoomSet {
    /// Applies a local operation. The room must exist unless `op` creates it.
    ///
    /// Atomic: on error the in-memory room is exactly what storage holds
    /// (reloaded if the failed write had moved it).
    pub fn local_write(
        &mut self,
        store: &dyn KvRead,
        ctx: &WriteCtx<'_>,
        op: &RoomOp,
    ) -> Result<LocalWrite, Error> {
        let room = ctx.room;
        if self.purged.contains(room) {
            return Err(Error::RoomPurged(room.clone()));
        }
        if self.load(store, room)?.is_none() {
            if !matches!(op, RoomOp::Create { .. }) {
                return Err(Error::UnknownRoom(room.clone()));
            }
            let doc = RoomDoc::empty(room.clone(), self.actor.clone());
            self.admit(room, HotRoom::new(doc));
        }
        let heads = self.hot_heads(room);
        let result = self.local_write_hot(ctx, op);
        self.evict_if_moved(room, heads, result.is_err());
        result
    }

    fn local_write_hot(&mut self, ctx: &WriteCtx<'_>, op: &RoomOp) -> Result<LocalWrite, Error> {
        let room = ctx.room;
        let hot = self
            .hot
            .get_mut(room)
            .ok_or_else(|| Error::UnknownRoom(room.clone()))?;
        let scope = index_scope(op);
        let before = hot.index_view(&scope)?;
        let (changes, kinds) = hot.doc.apply_local(ctx, op)?;
        let after = hot.index_view(&scope)?;
        let mut batch = Batch::default();
        hot.persist(&changes, &mut batch);
        index_updates(room, &before, &after, &mut batch);
        let heads: Vec<Head> = hot.doc.heads().iter().map(head).collect();
        let log_rest = self.record(room, &heads, &changes, ctx.stamp, &mut batch);
        Ok(LocalWrite {
            changes,
            kinds,
            heads,
            batch,
            log_rest,
        })
    }

    /// Applies changes from outside (a peer, or an import when `intake` is
    /// `Whole`); `stamp` keys the log entry. Invalid changes are refused
    /// (`room::validate`): with `Whole`, any refusal refuses the batch as
    /// `Error::Refused` and nothing changes.
    ///
    /// Atomic like `local_write`: on error the in-memory room is what
    /// storage holds.
    pub fn remote_apply(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
        changes: Vec<Change>,
        stamp: Timestamp,
        intake: Intake,
    ) -> Result<RemoteWrite, Error> {
        if self.purged.contains(room) {
            return Err(Error::RoomPurged(room.clone()));
        }
        if self.load(store, room)?.is_none() {
            let doc = RoomDoc::empty(room.clone(), self.actor.clone());
            self.admit(room, HotRoom::new(doc));
        }
        let heads = self.hot_heads(room);
        let result = self.remote_apply_hot(room, changes, stamp, intake);
        self.evict_if_moved(room, heads, result.is_err());
        result
    }

    fn remote_apply_hot(
        &mut self,
        room: &RoomId,
        changes: Vec<Change>,
        stamp: Timestamp,
        intake: Intake,
    ) -> Result<RemoteWrite, Error> {
        let hot = self
            .hot
            .get_mut(room)
            .ok_or_else(|| Error::UnknownRoom(room.clone()))?;
        // Warm, the reading reports what the apply touched (`delta`), so the
        // events and index updates cost what the changes touched.
        hot.doc.ensure_reading()?;
        // Debug builds (every test) check the delta against the whole
        // readings: that the touched part loses nothing the diff would see
        // (`index::WHOLE_CHECK_SESSIONS_MAX` says in which rooms).
        #[cfg(debug_assertions)]
        let whole_before = (hot.doc.sessions_held() <= super::index::WHOLE_CHECK_SESSIONS_MAX)
            .then(|| readable(&mut hot.doc))
            .transpose()?;
        let mut applied = hot.doc.apply_remote(changes, intake)?;
        let refused: Vec<(Head, Refusal)> = applied
            .refused
            .into_iter()
            .map(|(hash, why)| (head(&hash), why))
            .collect();
        if intake == Intake::Whole {
            if let Some((change, why)) = refused.first().cloned() {
                return Err(Error::Refused {
                    room: room.clone(),
                    change,
                    path: why.path,
                    reason: why.reason,
                });
            }
        }
        let mut write = RemoteWrite {
            outcome: RemoteOutcome {
                applied: applied.applied.len(),
                pending: applied.pending,
                dropped: applied.dropped,
                superseded: applied.superseded,
                bases_deferred: applied.bases_deferred,
                bases_merged: applied.bases_merged,
                refused: refused.len(),
            },
            refused,
            catch_up_asked: applied.catch_up_asked,
            ..RemoteWrite::default()
        };
        if applied.applied.is_empty() && applied.compacted.is_none() {
            return Ok(write);
        }
        let mut logged = applied.applied.clone();
        write.compacted = applied.compacted.is_some();
        let (before, after) = match &applied.compacted {
            // Pruned sessions are gone from the history, not events.
            Some(switch) => {
                hot.rewrite(&mut write.batch);
                logged.splice(
                    0..0,
                    std::iter::once(switch.base.clone()).chain(switch.carried.iter().cloned()),
                );
                let before = applied.replaced_reading.take();
                let after = readable(&mut hot.doc)?;
                let kept = before.map(|b| compaction::kept(&b, after.as_ref(), switch));
                (kept, after)
            }
            None => {
                hot.persist(&applied.applied, &mut write.batch);
                match applied.delta.take() {
                    Some((before, after)) => (Some(before), Some(after)),
                    // Not warm before the apply: the room had no genesis.
                    None => (None, readable(&mut hot.doc)?),
                }
            }
        };
        if let Some(after_snap) = &after {
            write.kinds = events::diff(before.as_ref(), after_snap);
        }
        #[cfg(debug_assertions)]
        if let (None, Some(whole_before)) = (&applied.compacted, whole_before) {
            let whole = (whole_before, readable(&mut hot.doc)?);
            super::index::check_touched_part(
                room,
                &whole,
                &(before.clone(), after.clone()),
                &write.kinds,
            );
        }
        index_updates(
            room,
            &IndexView::of(before.as_ref()),
            &IndexView::of(after.as_ref()),
            &mut write.batch,
        );
        let heads: Vec<Head> = hot.doc.heads().iter().map(head).collect();
        write.log_rest = self.record(room, &heads, &logged, stamp, &mut write.batch);
        write.applied = applied.applied;
        write.stamps_ms = applied.stamps_ms;
        Ok(write)
    }
}
