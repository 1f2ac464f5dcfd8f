//! Changes from outside applied to a room: buffered until their
//! dependencies arrive, validated (`validate`), applied as one batch, and
//! refused one by one when they must be.

use std::collections::{HashMap, HashSet, VecDeque};

use automerge::{Change, ChangeHash};

use super::{
    genesis_change, import, refused_dependency, touched, validate, Intake, Refusal, RemoteApply,
    RoomDoc,
};
use crate::error::Error;
use crate::limits::{
    DECODED_KEPT_BYTES_MAX, PENDING_BYTES_PER_ROOM_MAX, PENDING_CHANGES_PER_ROOM_MAX,
    SUPERSEDED_REMEMBERED_MAX,
};

/// What validation learnt of the changes it accepted, for after it.
#[derive(Default)]
struct Checked {
    /// Each change's newest stamp (wall ms): the lag samples.
    stamps: HashMap<ChangeHash, u64>,
    /// Each change's decoding, when kept (`Validator::keep_decoded`).
    decoded: HashMap<ChangeHash, automerge::ExpandedChange>,
}

impl RoomDoc {
    /// Applies changes from outside (a peer or an import) idempotently,
    /// after validation (`validate`). Changes whose dependencies are missing
    /// wait in a bounded buffer until the dependencies arrive.
    ///
    /// On `Err` the document may be ahead of what the caller persisted: the
    /// caller must reload the room (`RoomSet` evicts it).
    pub fn apply_remote(
        &mut self,
        changes: Vec<Change>,
        intake: Intake,
    ) -> Result<RemoteApply, Error> {
        let mut outcome = RemoteApply::default();
        let changes = self.adopt_newer_base(changes, intake, &mut outcome)?;
        let changes = self.drop_superseded(changes, &mut outcome)?;
        let batch: HashSet<ChangeHash> = changes.iter().map(Change::hash).collect();
        for change in changes {
            let hash = change.hash();
            if self.has_change(&hash) || self.pending.contains_key(&hash) {
                continue;
            }
            if self.refused.contains(&hash) || self.depends_on_refused(&change, &HashSet::new()) {
                outcome.refused.push((hash, refused_dependency()));
                continue;
            }
            // The bound is for changes that wait: one whose dependencies
            // are here (or in this batch) applies now, even when orphans
            // fill the buffer.
            let waits = !change
                .deps()
                .iter()
                .all(|d| batch.contains(d) || self.has_change(d));
            let len = change.raw_bytes().len();
            if waits
                && (self.pending.len() >= PENDING_CHANGES_PER_ROOM_MAX
                    || self.pending_bytes.saturating_add(len) > PENDING_BYTES_PER_ROOM_MAX)
            {
                outcome.dropped += 1;
                continue;
            }
            self.pending_bytes += len;
            self.pending.insert(hash, change);
            self.beside_heads += 1;
        }
        let ready = self.take_ready();
        let mut checked = Checked::default();
        let mut good = self.validate(ready, &mut outcome, &mut checked)?;
        if intake == Intake::Whole && !outcome.refused.is_empty() {
            outcome.pending = self.pending.len();
            return Ok(outcome);
        }
        // What the batch touches, and how that part reads, before it
        // applies: a departed session is not in the cache and is read from
        // the document, which must not hold the batch yet. Changes that
        // automerge then refuses only widen the part.
        let touched = (!good.is_empty() && self.cache.is_some()).then(|| {
            let decoded = std::mem::take(&mut checked.decoded);
            match self.root_objs() {
                Ok(objs) => touched::by_changes(&self.doc, &objs, &mut self.parts, &good, decoded),
                // Not a readable room: nothing of the layout is known.
                Err(_) => touched::Touched::everything(),
            }
        });
        let before = match &touched {
            Some(touched) => self.touched_part(touched)?,
            None => None,
        };
        if !good.is_empty() {
            let given = good.len();
            good = self
                .apply_validated(good, intake, &mut outcome)
                .inspect_err(|_| self.parts = None)?;
            if good.len() < given {
                // `by_changes` learnt the objects of changes automerge then
                // refused: one may claim an id a kept change made.
                self.parts = None;
            }
        }
        for (hash, _) in &outcome.refused {
            self.refused.put(*hash);
            self.beside_heads += 1;
        }
        if let Some(touched) = touched.filter(|_| !good.is_empty()) {
            self.refresh(&touched)?;
            let after = self.touched_part(&touched)?;
            outcome.delta = before.zip(after);
        }
        outcome.stamps_ms = good
            .iter()
            .filter_map(|c| checked.stamps.get(&c.hash()).copied())
            .collect();
        outcome.applied = good;
        outcome.pending = self.pending.len();
        Ok(outcome)
    }

    /// Applies validated changes in one call. Should automerge refuse the
    /// batch (it checks a batch whole: one change reusing another's actor
    /// and sequence number fails them all), they are applied one by one
    /// and only the ones it refuses are refused, so one bad change cannot
    /// stop every other writer's changes from arriving. Returns the applied.
    /// An import (`Whole`) stays all or nothing: automerge's refusal is
    /// the import's.
    fn apply_validated(
        &mut self,
        good: Vec<Change>,
        intake: Intake,
        outcome: &mut RemoteApply,
    ) -> Result<Vec<Change>, Error> {
        let doc = &mut self.doc;
        match import::unless_panic("apply", || doc.apply_changes(good.iter().cloned())) {
            Ok(Ok(())) => return Ok(good),
            Ok(Err(err)) if intake == Intake::Whole => return Err(err.into()),
            Ok(Err(_)) => {}
            Err(panic) => {
                self.poisoned = true;
                return Err(panic);
            }
        }
        let mut kept = Vec::with_capacity(good.len());
        let mut refused_now = HashSet::new();
        for change in good {
            let hash = change.hash();
            if self.depends_on_refused(&change, &refused_now) {
                refused_now.insert(hash);
                outcome.refused.push((hash, refused_dependency()));
                continue;
            }
            let doc = &mut self.doc;
            let one = change.clone();
            match import::unless_panic("apply", || doc.apply_changes([one])) {
                Ok(Ok(())) => kept.push(change),
                Ok(Err(err)) => {
                    refused_now.insert(hash);
                    let reason = format!("automerge refuses it: {err}");
                    outcome.refused.push((
                        hash,
                        Refusal {
                            path: String::new(),
                            reason,
                        },
                    ));
                }
                Err(panic) => {
                    self.poisoned = true;
                    return Err(panic);
                }
            }
        }
        Ok(kept)
    }

    /// A peer's base of the next generation: this replica compacts at the
    /// same cut itself (every replica holds it: each acknowledged the
    /// request before anyone compacted) and swaps its document only if it
    /// computed the very same base. The cut must be a request for the next
    /// generation held here. A peer's base whose cut is not held here (of
    /// a later generation, or cut at a request this replica never held)
    /// is taken with this room merged onto it (`catch_up.rs`); an
    /// import's waits (neither applied nor remembered as refused).
    fn adopt_newer_base(
        &mut self,
        mut changes: Vec<Change>,
        intake: Intake,
        outcome: &mut RemoteApply,
    ) -> Result<Vec<Change>, Error> {
        // Only a change without dependencies can be a base: most batches
        // hold none, and reading the generation costs a look into the
        // document per batch.
        if self.is_empty() || changes.iter().all(|c| !c.deps().is_empty()) {
            return Ok(changes);
        }
        let generation = self.generation();
        let Some(index) = changes.iter().position(|c| {
            c.deps().is_empty()
                && super::compact::base_of(&self.id, c).is_some_and(|(g, _)| g > generation)
        }) else {
            return Ok(changes);
        };
        let base = changes.remove(index);
        // Another newer base in the batch (the same from a second peer, or
        // another) is left for a later batch: validated now, it would be
        // refused as a second base, and remembered so.
        changes.retain(|c| {
            !(c.deps().is_empty()
                && super::compact::base_of(&self.id, c).is_some_and(|(g, _)| g > generation))
        });
        let Some((_, cut)) = super::compact::base_of(&self.id, &base) else {
            return Ok(changes);
        };
        // Refused before: not computed again (a base costs a compaction
        // per format tried).
        if self.refused.contains(&base.hash()) {
            outcome.refused.push((base.hash(), refused_dependency()));
            return Ok(changes);
        }
        // The cut is normally the request this replica would cut at
        // itself. From a peer, it may also be another change that wrote a
        // request for the next generation, held here: the peers agreed on
        // that request while this replica, which they did not know of yet
        // (it joined cut off from them), wrote its own, newer one; it
        // would otherwise wait for ever for peers that moved on to name
        // its request. The base is a pure function of the cut, so it is
        // taken only if computed here the same. Not from an import: a
        // client could build a base at any request and split this replica
        // from peers that agreed on another.
        let ours = self.compaction_request().map(|(hash, _)| hash);
        let own = ours == Some(cut);
        let agreed_elsewhere =
            !own && intake == Intake::EachChange && self.writes_next_request(&cut);
        // A peer's base whose cut is not held here (this replica was
        // compacted past: its peers did not know of it) cannot be computed
        // here ever: it is taken, with this room merged onto it. Not when
        // the cut comes in this batch, or waits here, with its
        // dependencies held or in the batch: it applies now, and the base
        // is computed exactly when it comes again. (A cut that waits for
        // changes of a history its peers replaced waits for ever.)
        let in_batch = |h: &ChangeHash| changes.iter().any(|c| c.hash() == *h);
        let cut_on_its_way = changes
            .iter()
            .find(|c| c.hash() == cut)
            .or_else(|| self.pending.get(&cut))
            .is_some_and(|c| c.deps().iter().all(|d| self.has_change(d) || in_batch(d)));
        if intake == Intake::EachChange && !self.has_change(&cut) && !cut_on_its_way {
            // Nothing here can check such a base: it is taken only once the
            // replica saw enough of its peers send it (a single peer could
            // make one up).
            if self.catch_up_permit != Some(base.hash()) {
                outcome.bases_deferred += 1;
                outcome.catch_up_asked = Some(base.hash());
                return Ok(changes);
            }
            return self.catch_up_on(base, changes, outcome);
        }
        if !own && !agreed_elsewhere {
            outcome.bases_deferred += 1;
            return Ok(changes);
        }
        // The base of any format this build reads: a replica upgraded
        // between naming a cut and compacting at it takes the base its
        // peers wrote under the format they agreed with.
        let mut computed = Err(Error::Corrupt {
            room: self.id.clone(),
            reason: "no compaction format".into(),
        });
        for format in super::compact::COMPACTION_FORMATS_READ {
            computed = self.compacted_at(cut, format, None);
            if matches!(&computed, Ok((_, switch)) if switch.base.hash() == base.hash()) {
                break;
            }
        }
        match computed {
            Ok((doc, switch)) if switch.base.hash() == base.hash() => {
                outcome.replaced_reading = self.install_taking_reading(doc.into_doc());
                outcome.compacted = Some(switch);
            }
            Ok(_) => outcome.refused.push((
                base.hash(),
                Refusal {
                    path: String::new(),
                    reason: "a base that differs from the one computed here at its cut".into(),
                },
            )),
            Err(err) => outcome.refused.push((
                base.hash(),
                Refusal {
                    path: String::new(),
                    reason: format!("its cut cannot be compacted here: {err}"),
                },
            )),
        }
        Ok(changes)
    }

    /// In a compacted room, the changes of the history it replaced (its
    /// genesis, an older base, and what depends on them) are ignored, not
    /// refused: a peer that has not compacted yet sends them in good
    /// faith, and carries what it wrote itself when it compacts. What is
    /// ignored is remembered with the replaced history, so that a later
    /// batch's changes that depend on it are known for what they are too,
    /// and so are those already waiting here. Before, each such change
    /// waited in `pending` for a dependency that never comes, and every
    /// push into the room asked its pusher for it again (the churn bench:
    /// 50 changes waiting for seconds, until the writer compacted).
    fn drop_superseded(
        &mut self,
        changes: Vec<Change>,
        outcome: &mut RemoteApply,
    ) -> Result<Vec<Change>, Error> {
        let generation = self.generation();
        if generation == 0 {
            return Ok(changes);
        }
        let genesis = self.genesis_hash()?;
        let mut gone: HashSet<ChangeHash> = changes
            .iter()
            .filter(|c| !self.has_change(&c.hash()))
            .filter(|c| {
                c.hash() == genesis
                    || self.replaced.contains(&c.hash())
                    || c.deps().iter().any(|d| self.replaced.contains(d))
                    || super::compact::base_of(&self.id, c).is_some_and(|(g, _)| g <= generation)
            })
            .map(Change::hash)
            .collect();
        if gone.is_empty() {
            return Ok(changes);
        }
        // Their dependants in the batch and among the changes waiting here,
        // whatever the order they came in.
        super::history::spread_to_dependants(
            &mut gone,
            changes.iter().chain(self.pending.values()),
            |_| false,
        );
        let waiting: Vec<ChangeHash> = self
            .pending
            .keys()
            .filter(|h| gone.contains(h))
            .copied()
            .collect();
        for hash in &waiting {
            if let Some(change) = self.pending.remove(hash) {
                self.pending_bytes = self.pending_bytes.saturating_sub(change.raw_bytes().len());
            }
        }
        self.beside_heads += 1;
        for hash in &gone {
            if self.replaced.len() >= SUPERSEDED_REMEMBERED_MAX {
                break;
            }
            self.replaced.insert(*hash);
        }
        let (old, kept): (Vec<Change>, Vec<Change>) =
            changes.into_iter().partition(|c| gone.contains(&c.hash()));
        outcome.superseded += old.len() + waiting.len();
        Ok(kept)
    }

    /// Splits `ready` (in dependency order) into the changes that pass
    /// validation, returned, and the refused, added to `outcome`.
    fn validate(
        &mut self,
        ready: Vec<Change>,
        outcome: &mut RemoteApply,
        checked: &mut Checked,
    ) -> Result<Vec<Change>, Error> {
        if ready.is_empty() {
            return Ok(ready);
        }
        // The genesis change is built (from a template, `genesis.rs`) only
        // for a batch with a change of the genesis actor: no other change
        // can have its hash.
        let genesis_actor = super::schema::genesis_actor(&self.id);
        let genesis = if ready.iter().any(|c| c.actor_id() == &genesis_actor) {
            Some(self.genesis_hash()?)
        } else {
            None
        };
        let mut validator = validate::Validator::new(&self.doc, &self.id, genesis_actor, genesis);
        // The touched parts are read (from each change's decoding) only
        // while the reading is warm; a large batch is decoded again rather
        // than held expanded twice over.
        let bytes: usize = ready.iter().map(|c| c.raw_bytes().len()).sum();
        validator.keep_decoded = self.cache.is_some() && bytes <= DECODED_KEPT_BYTES_MAX;
        let mut refused_now = HashSet::new();
        let mut good = Vec::with_capacity(ready.len());
        for change in ready {
            let hash = change.hash();
            let verdict = if self.depends_on_refused(&change, &refused_now) {
                Err(refused_dependency())
            } else {
                validator.check(&change)
            };
            match verdict {
                Ok(()) => good.push(change),
                Err(refusal) => {
                    refused_now.insert(hash);
                    outcome.refused.push((hash, refusal));
                }
            }
        }
        checked.stamps = validator.stamps;
        checked.decoded = validator.decoded;
        Ok(good)
    }

    fn depends_on_refused(&self, change: &Change, also: &HashSet<ChangeHash>) -> bool {
        change
            .deps()
            .iter()
            .any(|dep| also.contains(dep) || self.refused.contains(dep))
    }

    fn genesis_hash(&mut self) -> Result<ChangeHash, Error> {
        if let Some(hash) = self.genesis {
            return Ok(hash);
        }
        let hash = genesis_change(&self.id)?.hash();
        self.genesis = Some(hash);
        Ok(hash)
    }

    /// Removes from `pending` every change whose dependencies are all in the
    /// document or themselves ready, in dependency order.
    fn take_ready(&mut self) -> Vec<Change> {
        // Kahn's algorithm over the pending changes: one pass to count each
        // change's dependencies still pending (or missing), then release in
        // dependency order. Linear: an import of a long history (thousands
        // of changes in one chain) would otherwise take one pass per change.
        let mut waiting: HashMap<ChangeHash, usize> = HashMap::new();
        let mut children: HashMap<ChangeHash, Vec<ChangeHash>> = HashMap::new();
        let mut queue = VecDeque::new();
        for (hash, change) in &self.pending {
            let mut count = 0;
            for dep in change.deps() {
                if self.pending.contains_key(dep) {
                    count += 1;
                    children.entry(*dep).or_default().push(*hash);
                } else if !self.has_change(dep) {
                    // Missing everywhere: never released by this call.
                    count = usize::MAX;
                    break;
                }
            }
            if count == 0 {
                queue.push_back(*hash);
            } else {
                waiting.insert(*hash, count);
            }
        }
        let mut ready = Vec::new();
        while let Some(hash) = queue.pop_front() {
            let Some(change) = self.pending.remove(&hash) else {
                continue;
            };
            self.pending_bytes = self.pending_bytes.saturating_sub(change.raw_bytes().len());
            ready.push(change);
            for child in children.remove(&hash).unwrap_or_default() {
                if let Some(count) = waiting.get_mut(&child) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        waiting.remove(&child);
                        queue.push_back(child);
                    }
                }
            }
        }
        ready
    }
}
