//! A room document's compacted generations (`compact.rs`): which one the
//! document is in, the request that will start the next, and the switch.

use std::collections::HashSet;

use automerge::{Change, ChangeHash, ObjId, ReadDoc, Value, ROOT};

use super::carry::Carrier;
use super::compact::{self, Cut, Request};
use super::{import, old_import, read, schema as s, RoomDoc};
use crate::error::Error;
use crate::limits::IMPORT_CARRIED_CHANGES_MAX;

/// What a switch to a new generation did.
#[derive(Debug)]
pub struct Switch {
    pub base: Change,
    /// The tail, carried onto the base.
    pub carried: Vec<Change>,
    /// Sessions that left at or before this were pruned.
    pub prune_before_ms: u64,
}

impl RoomDoc {
    /// 0 for a history that starts at the room's genesis, n after n
    /// compactions.
    pub fn generation(&self) -> u64 {
        generation_of(&self.doc)
    }

    /// Changes in the document's history (its base or genesis included).
    pub fn history_len(&self) -> u64 {
        self.doc.stats().num_changes
    }

    /// Operations in the document: what automerge's apply walks through
    /// (its cost grows with them, whatever the number of changes applied).
    pub fn ops(&self) -> u64 {
        self.doc.stats().num_ops
    }

    /// The request the next compaction cuts at, once one was written: of
    /// the requests for the next generation, the newest by stamp, so that
    /// every replica picks the same among concurrent ones.
    pub fn compaction_request(&mut self) -> Option<(ChangeHash, Request)> {
        let meta = self.root_objs().ok()?.meta;
        let next = self.generation().checked_add(1)?;
        let (_, request, op) = self
            .doc
            .get_all(&meta, s::COMPACT)
            .ok()?
            .into_iter()
            .filter_map(|(value, op)| {
                let (stamp, request) = s::decode_stamped::<Request>(scalar_str(&value)?)?;
                (request.generation == next).then_some((stamp, request, op))
            })
            .max_by_key(|(stamp, _, _)| *stamp)?;
        Some((self.change_of(&op)?, request))
    }

    /// Whether the change `hash`, held here, itself wrote a compaction
    /// request for the next generation (one of the requests replicas may
    /// agree on, rather than any change that follows one).
    pub(super) fn writes_next_request(&self, hash: &ChangeHash) -> bool {
        let Some(change) = self.doc.get_change_meta_by_hash(hash) else {
            return false;
        };
        let Ok(objs) = read::RootObjs::find(&self.doc, &self.id) else {
            return false;
        };
        let Some(next) = self.generation().checked_add(1) else {
            return false;
        };
        let Ok(values) = self.doc.get_all_at(&objs.meta, s::COMPACT, &[*hash]) else {
            return false;
        };
        values.into_iter().any(|(value, op)| {
            let made_here = matches!(&op, ObjId::Id(counter, actor, _)
                if actor == change.actor.as_ref()
                    && (change.start_op..=change.max_op).contains(counter));
            let request = scalar_str(&value).and_then(s::decode_stamped::<Request>);
            made_here && request.is_some_and(|(_, r)| r.generation == next)
        })
    }

    /// The change that made op `op`: found walking back from the heads
    /// through change metadata (a request is recent).
    fn change_of(&self, op: &ObjId) -> Option<ChangeHash> {
        let ObjId::Id(counter, actor, _) = op else {
            return None;
        };
        let mut found = None;
        let limit = usize::try_from(self.history_len()).unwrap_or(usize::MAX);
        self.walk_back(limit, |hash| {
            if found.is_none() {
                let made_it = self.doc.get_change_meta_by_hash(hash).is_some_and(|meta| {
                    meta.actor.as_ref() == actor && (meta.start_op..=meta.max_op).contains(counter)
                });
                if made_it {
                    found = Some(*hash);
                }
            }
            found.is_some()
        });
        found
    }

    /// Compacts the history at `request` (a change this document holds
    /// that writes a request for the next generation): the document becomes
    /// the base and the carried tail. Changes still waiting for their
    /// dependencies keep waiting (a carried change may be one).
    pub fn compact_at(&mut self, request: ChangeHash) -> Result<Switch, Error> {
        self.compact_at_format(request, compact::COMPACTION_FORMAT)
    }

    /// `compact_at` writing the base in an older `format`: what a replica
    /// of an earlier build does (tests).
    #[doc(hidden)]
    pub fn compact_at_format(&mut self, request: ChangeHash, format: u32) -> Result<Switch, Error> {
        let (carrier, switch) = self.compacted_at(request, format, None)?;
        self.install(carrier.into_doc());
        Ok(switch)
    }

    /// `compact_at`, reusing `base`, the base a compaction of this cut
    /// already built (on a copy of the room that has fewer changes since).
    pub(crate) fn compact_at_with_base(
        &mut self,
        request: ChangeHash,
        base: &Change,
    ) -> Result<Switch, Error> {
        let (carrier, switch) =
            self.compacted_at(request, compact::COMPACTION_FORMAT, Some(base))?;
        self.install(carrier.into_doc());
        Ok(switch)
    }

    /// Installs a compaction prepared on a copy of this document whose
    /// heads were `copied`, carrying the changes taken since then onto it
    /// (`compact::carry_since`): the same new history `compact_at` writes,
    /// without carrying again what the copy carried. `Ok(None)` if the
    /// document no longer holds the copy's heads (it was reloaded with
    /// less): the caller compacts in line instead.
    pub(crate) fn compact_on_copy(
        &mut self,
        copied: &[ChangeHash],
        carrier: Carrier,
        mut switch: Switch,
    ) -> Result<Option<Switch>, Error> {
        if !self.holds_all(copied) {
            return Ok(None);
        }
        let doc = &self.doc;
        let (carrier, more) =
            import::unless_panic("compact", || compact::carry_since(doc, carrier, copied))??;
        switch.carried.extend(more);
        self.install(carrier.into_doc());
        Ok(Some(switch))
    }

    /// The live reading, if it is warm, leaving it cold.
    pub(crate) fn take_live_reading(&mut self) -> Option<crate::model::RoomSnapshot> {
        self.cache.take()
    }

    /// Takes `live` as the live reading of a document just compacted: how
    /// the room read before (a compaction changes no live session). Debug
    /// builds check it against the document.
    pub(crate) fn keep_reading(&mut self, live: crate::model::RoomSnapshot) {
        debug_assert!(
            read::live_snapshot(&self.doc, &self.id).map_or(true, |read| read == live),
            "a compaction changed how {} reads",
            self.id
        );
        self.cache = Some(live);
    }

    /// Whether the document holds every change of `heads`.
    pub(crate) fn holds_all(&self, heads: &[ChangeHash]) -> bool {
        self.doc.get_missing_deps(heads).is_empty()
    }

    /// Carries the changes this document (a copy of the room) took since
    /// `copied` onto a compaction prepared on an earlier copy, off the
    /// replica's task: the compaction then installs with little or nothing
    /// left to carry in line. Returns what `prepare_compaction` returns.
    pub(crate) fn top_up_compaction(
        &self,
        copied: &[ChangeHash],
        carrier: Carrier,
        mut switch: Switch,
        read: bool,
    ) -> Result<(Carrier, Switch, Option<crate::model::RoomSnapshot>), Error> {
        if !self.holds_all(copied) {
            return Err(self.corrupt("a compaction's copy is not in the room's history"));
        }
        let doc = &self.doc;
        let (carrier, more) =
            import::unless_panic("compact", || compact::carry_since(doc, carrier, copied))??;
        switch.carried.extend(more);
        let reading = self.read_compacted(&carrier, read)?;
        Ok((carrier, switch, reading))
    }

    /// The costly part of `compact_at`, on a copy of the room (see
    /// `rooms::compaction`): the compacted document, what the switch did,
    /// and, if `read`, how the compacted room's live sessions read (the
    /// hot room's cache).
    pub(crate) fn prepare_compaction(
        &self,
        request: ChangeHash,
        read: bool,
    ) -> Result<(Carrier, Switch, Option<crate::model::RoomSnapshot>), Error> {
        let (carrier, switch) = self.compacted_at(request, compact::COMPACTION_FORMAT, None)?;
        let reading = self.read_compacted(&carrier, read)?;
        Ok((carrier, switch, reading))
    }

    /// How `carrier`'s document reads (live sessions only), if `read`.
    fn read_compacted(
        &self,
        carrier: &Carrier,
        read: bool,
    ) -> Result<Option<crate::model::RoomSnapshot>, Error> {
        if !read {
            return Ok(None);
        }
        let reading =
            import::unless_panic("read", || read::live_snapshot(carrier.doc(), &self.id))??;
        Ok(Some(reading))
    }

    /// Makes `doc`, a compaction of this document prepared on a copy of
    /// it with the same heads (`prepare_compaction`), the room's document;
    /// `reading` is how it reads, live sessions only (`read::live_snapshot`);
    /// without it the reading is cold (read again when asked for).
    pub(crate) fn install_compacted(
        &mut self,
        doc: automerge::Automerge,
        reading: Option<crate::model::RoomSnapshot>,
    ) {
        self.install(doc);
        self.cache = reading;
    }

    /// The ids of the room's maps, cached: only the genesis or a compacted
    /// base writes the root (validation), and a new base comes with
    /// `install`, which drops them (as does a refresh of everything).
    pub(super) fn root_objs(&mut self) -> Result<read::RootObjs, Error> {
        if let Some(objs) = &self.objs {
            return Ok(objs.clone());
        }
        let objs = read::RootObjs::find(&self.doc, &self.id)?;
        self.objs = Some(objs.clone());
        Ok(objs)
    }

    /// Like `install`, and returns the whole reading of the replaced
    /// history, departed sessions included (when it was warm).
    pub(super) fn install_taking_reading(
        &mut self,
        doc: automerge::Automerge,
    ) -> Option<crate::model::RoomSnapshot> {
        let reading = match self.cache {
            Some(_) => self.snapshot().ok(),
            None => None,
        };
        self.install(doc);
        reading
    }

    /// The compacted document and what the switch did, leaving this one
    /// as it is (a peer's base is checked against it before the swap).
    pub(super) fn compacted_at(
        &self,
        request: ChangeHash,
        format: u32,
        known_base: Option<&Change>,
    ) -> Result<(Carrier, Switch), Error> {
        let meta = read::RootObjs::find(&self.doc, &self.id)?.meta;
        let next = self
            .generation()
            .checked_add(1)
            .ok_or_else(|| self.corrupt("no generation after the last"))?;
        let asked = self
            .doc
            .get_all_at(&meta, s::COMPACT, &[request])
            .map_err(|_| self.corrupt("the compaction request is not in the history"))?
            .into_iter()
            .filter_map(|(value, _)| s::decode_stamped::<Request>(scalar_str(&value)?))
            .filter(|(_, r)| r.generation == next)
            .max_by_key(|(stamp, _)| *stamp)
            .map(|(_, r)| r)
            .ok_or_else(|| self.corrupt("no compaction request at the cut"))?;
        let cut = Cut {
            request,
            generation: asked.generation,
            prune_before_ms: asked.prune_before_ms,
        };
        let id = self.id.clone();
        let doc = &self.doc;
        let compacted = import::unless_panic("compact", || {
            compact::compact(doc, &id, &cut, format, known_base)
        })??;
        let switch = Switch {
            base: compacted.base,
            carried: compacted.carried,
            prune_before_ms: cut.prune_before_ms,
        };
        Ok((compacted.carrier, switch))
    }

    /// Makes `doc` (a compaction of this one) the room's document. The
    /// replaced history's changes still waiting here are dropped, with
    /// what waits on them, and remembered with that history (so that
    /// their dependants are ignored when they come, as `drop_superseded`
    /// does). The new document writes as this one's actor.
    pub(super) fn install(&mut self, mut doc: automerge::Automerge) {
        doc.set_actor(self.doc.get_actor().clone());
        let limit = usize::try_from(self.history_len()).unwrap_or(usize::MAX);
        self.replaced = self
            .walk_back(limit, |_| false)
            .into_iter()
            .map(|(hash, _)| hash)
            .collect();
        let mut gone = std::collections::HashSet::new();
        let replaced = &self.replaced;
        super::history::spread_to_dependants(&mut gone, self.pending.values(), |d| {
            replaced.contains(d)
        });
        for hash in gone {
            self.pending.remove(&hash);
            if self.replaced.len() < crate::limits::SUPERSEDED_REMEMBERED_MAX {
                self.replaced.insert(hash);
            }
        }
        self.pending_bytes = self.pending.values().map(|c| c.raw_bytes().len()).sum();
        self.doc = doc;
        self.cache = None;
        self.parts = None;
        self.objs = None;
    }

    /// An import's changes as this room can take them. A document exported
    /// before the room's last compaction holds the history that compaction
    /// replaced: if it holds the change the room was cut at, its changes
    /// after the cut are carried onto the room's base, as the replicas
    /// carried theirs (a carried change is a pure function of the change
    /// and its past, so what the room already holds is recognised, and the
    /// import's own writes arrive as the changes they would have become).
    /// The changes of the room's current generation (its base and what
    /// follows it) go as they are, should a document hold both histories
    /// (automerge refuses to merge them when an actor wrote in both, as a
    /// carried change keeps its actor and sequence number), and so does a
    /// document of a newer generation (the room adopts its base). A
    /// document without the cut (exported before it, the history needed to
    /// carry its changes is gone on every replica) has its reading merged
    /// onto the room instead, as one change (`old_import`). What cannot be
    /// taken is refused, saying what to do instead: a change written on
    /// both histories at once, a tail longer than
    /// [`IMPORT_CARRIED_CHANGES_MAX`] (carrying costs a copy of the
    /// document per change), a document without the cut whose own history
    /// is incomplete, or one without the cut on a room whose base predates
    /// compaction format 5 (it does not record its horizon).
    pub fn carried_import(&self, changes: Vec<Change>) -> Result<Vec<Change>, Error> {
        let generation = self.generation();
        if generation == 0 {
            return Ok(changes);
        }
        let newer = changes
            .iter()
            .filter_map(|c| compact::base_of(&self.id, c))
            .any(|(g, _)| g > generation);
        if newer {
            return Ok(changes);
        }
        let ours = self
            .doc
            .get_changes(&[])
            .into_iter()
            .find_map(|c| compact::base_of(&self.id, &c).map(|(_, cut)| (c, cut)));
        let Some((base, cut)) = ours else {
            return Err(self.corrupt("a compacted room without its base"));
        };
        // Changes come in causal order: a change is of this generation if
        // it is the base or follows only changes that are.
        let mut current = HashSet::from([base.hash()]);
        let (mut now, mut older) = (Vec::new(), Vec::new());
        for change in changes {
            let on_current = change
                .deps()
                .iter()
                .filter(|d| current.contains(*d))
                .count();
            if change.hash() == base.hash() || (on_current > 0 && on_current == change.deps().len())
            {
                current.insert(change.hash());
                now.push(change);
            } else if on_current == 0 {
                older.push(change);
            } else {
                return Err(self.not_carried(
                    generation,
                    "it holds a change written on the history before the compaction and after \
                     it at once",
                ));
            }
        }
        if older.is_empty() {
            return Ok(now);
        }
        let mut old = automerge::Automerge::new();
        import::unless_panic("load", || old.apply_changes(older))??;
        if old.get_change_meta_by_hash(&cut).is_none() {
            return self
                .merged_import(generation, &old, &cut)
                .map(|merged| merged.into_iter().chain(now).collect());
        }
        let tail = old.get_changes(&[cut]).len();
        if tail > IMPORT_CARRIED_CHANGES_MAX {
            return Err(self.not_carried(
                generation,
                &format!(
                    "it holds {tail} changes after the cut, more than the \
                     {IMPORT_CARRIED_CHANGES_MAX} an import carries"
                ),
            ));
        }
        let cut = Cut {
            request: cut,
            generation,
            // Only the base uses it, and the base is the room's own.
            prune_before_ms: 0,
        };
        let id = self.id.clone();
        let compacted = import::unless_panic("compact", || {
            compact::compact(&old, &id, &cut, compact::COMPACTION_FORMAT, Some(&base))
        })??;
        Ok(std::iter::once(compacted.base)
            .chain(compacted.carried)
            .chain(now)
            .collect())
    }

    /// An import without the room's cut: its reading merged onto the room
    /// (`old_import`), as one change. Needs the room's horizon, which
    /// bases record since compaction format 5.
    fn merged_import(
        &self,
        generation: u64,
        old: &automerge::Automerge,
        cut: &ChangeHash,
    ) -> Result<Option<Change>, Error> {
        if !old.get_missing_deps(&[]).is_empty() {
            return Err(self.not_carried(
                generation,
                "it lacks changes its own depend on, so it cannot be read",
            ));
        }
        let Some(horizon_ms) = compact::horizon_of(&self.doc) else {
            return Err(self.not_carried(
                generation,
                &format!(
                    "it does not hold the change the room was cut at ({cut}), and the \
                     room's base does not record what its compactions forgot (compacted \
                     before format 5)"
                ),
            ));
        };
        let doc = &self.doc;
        let id = &self.id;
        import::unless_panic("merge", || {
            old_import::merge(doc, id, old, horizon_ms, old_import::Source::Import)
        })?
    }

    fn not_carried(&self, generation: u64, why: &str) -> Error {
        Error::Invalid {
            field: "document",
            reason: format!(
                "the document is from before room {}'s compaction to generation {generation} \
                 and its writes cannot be carried onto the compacted room ({why}): export \
                 the room again and redo them on that document",
                self.id
            ),
        }
    }

    fn corrupt(&self, reason: &str) -> Error {
        Error::Corrupt {
            room: self.id.clone(),
            reason: reason.into(),
        }
    }
}

pub(super) fn generation_of<R: ReadDoc>(doc: &R) -> u64 {
    doc.get(ROOT, s::GENERATION)
        .ok()
        .flatten()
        .and_then(|(value, _)| value.as_u64())
        .unwrap_or(0)
}

fn scalar_str<'a>(value: &'a Value<'_>) -> Option<&'a str> {
    match value {
        Value::Scalar(scalar) => scalar.as_str(),
        Value::Object(_) => None,
    }
}
