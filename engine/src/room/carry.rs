//! Carrying a compacted room's tail (`compact.rs`): each change after the
//! cut re-done by path on the base and the carried changes it depended on,
//! so that every replica carrying it writes the very same change, and the
//! room reads afterwards what the whole history reads.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{Automerge, Change, ChangeHash, ObjId, ObjType, Prop, ReadDoc, ScalarValue, ROOT};

use super::read::{self, map_obj};
use super::schema as s;
use crate::error::Error;
use crate::hlc::Timestamp;
use crate::model::SessionState;

/// Carries `tail` (changes of `old` after the cut) onto `doc`, which holds
/// only `base`. Returns the carrier, holding the new history, and the
/// carried changes, in causal order (a change with nothing left to say
/// carries to nothing).
pub(super) fn carry(
    old: &Automerge,
    base: &Change,
    cut: ChangeHash,
    doc: Automerge,
    tail: Vec<Change>,
) -> Result<(Carrier, Vec<Change>), Error> {
    let carrier = Carrier {
        doc: doc.clone(),
        base: base.hash(),
        cut,
        tail: HashSet::new(),
        stands_for: HashMap::new(),
        objects: HashMap::new(),
        branches: HashMap::from([(vec![base.hash()], doc)]),
        // The base's document is never dropped: `kept` lists the others.
        kept: VecDeque::new(),
        made: HashMap::from([(base.hash(), base.clone())]),
    };
    carry_more(old, carrier, tail)
}

/// Carries `more` changes after the cut onto what `carrier` already
/// carried; `old` holds them and every change carried before. The result
/// is the one carrying the whole tail at once gives: a change carries to
/// the same change whenever it is carried.
pub(super) fn carry_more(
    old: &Automerge,
    mut carrier: Carrier,
    more: Vec<Change>,
) -> Result<(Carrier, Vec<Change>), Error> {
    carrier.tail.extend(more.iter().map(Change::hash));
    let mut carry = Carry { old, c: carrier };
    let mut carried = Vec::new();
    for change in super::history::causal_order(more) {
        if let Some(new) = carry.one(&change)? {
            carried.push(new);
        }
    }
    Ok((carry.c, carried))
}

/// One op of a tail change, by path. `seen`: the values at that key the
/// change had seen (in its causal past), which its write replaced.
/// `cut_removals`: the removals the cut holds at that key that the change
/// had not seen (the base leaves removed keys out, but a write concurrent
/// with a removal still loses to it if older).
#[derive(Debug)]
enum Step {
    Make {
        at: Vec<String>,
        key: String,
    },
    Put {
        at: Vec<String>,
        key: String,
        value: ScalarValue,
        seen: Vec<String>,
        cut_removals: Vec<String>,
    },
    Delete {
        at: Vec<String>,
        key: String,
        seen: Vec<String>,
        cut_removals: Vec<String>,
    },
    Increment {
        at: Vec<String>,
        key: String,
        by: i64,
    },
}

/// A tail being carried: the new history so far, and what carrying more
/// changes of the same cut needs. A compaction prepared on a copy of the
/// room keeps it, so that installing it carries only the changes the room
/// took since the copy (carrying the whole tail again on the replica's
/// task took seconds under steady writes).
pub struct Carrier {
    doc: Automerge,
    base: ChangeHash,
    /// The compaction's request: the cut is it and its causal past.
    cut: ChangeHash,
    tail: HashSet<ChangeHash>,
    /// A tail change → the changes that stand for it in the new history:
    /// its carried change, or, when nothing of it was left, what it stood on.
    stands_for: HashMap<ChangeHash, Vec<ChangeHash>>,
    /// Object id (`counter@actor`) in the old history → its path and id.
    objects: HashMap<String, Option<(Vec<String>, ObjId)>>,
    /// Documents at points of the new history (by their sorted heads), to
    /// carry the next changes on; `kept` is their order, oldest first.
    branches: HashMap<Vec<ChangeHash>, Automerge>,
    kept: VecDeque<Vec<ChangeHash>>,
    /// The base and every carried change, by hash.
    made: HashMap<ChangeHash, Change>,
}

impl std::fmt::Debug for Carrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Carrier")
            .field("base", &self.base)
            .field("carried", &self.made.len())
            .finish_non_exhaustive()
    }
}

impl Carrier {
    /// The new history: the base and every carried change.
    pub fn doc(&self) -> &Automerge {
        &self.doc
    }

    pub fn into_doc(self) -> Automerge {
        self.doc
    }
}

struct Carry<'a> {
    /// The old history, holding every change carried.
    old: &'a Automerge,
    c: Carrier,
}

/// Documents kept at points of the new history while a tail is carried.
/// Each is the small compacted room; 64 of them cover the changes that
/// replicas write side by side while a compaction is acknowledged.
const BRANCHES_KEPT: usize = 64;

/// Changes carried on the new history's heads between two copies kept of
/// it (`Carry::one_on_tip`): a copy costs about what carrying a change
/// does.
const BRANCH_EVERY: usize = 8;

/// Commits `steps` on `doc` as `change` would have: its actor, time and
/// message. `None` when nothing of it was left to write.
fn commit(doc: &mut Automerge, change: &Change, steps: &[Step]) -> Result<Option<Change>, Error> {
    doc.set_actor(change.actor_id().clone());
    let mut options = CommitOptions::default().with_time(change.timestamp());
    if let Some(message) = change.message() {
        options = options.with_message(message.to_owned());
    }
    let success = doc
        .transact_with(
            |_| options,
            |tx| {
                for step in steps {
                    apply(tx, step)?;
                }
                Ok::<_, automerge::AutomergeError>(())
            },
        )
        .map_err(|failure| failure.error)?;
    Ok(success.hash.and_then(|hash| doc.get_change_by_hash(&hash)))
}

impl Carry<'_> {
    fn one(&mut self, change: &Change) -> Result<Option<Change>, Error> {
        let mut deps = BTreeSet::new();
        for dep in change.deps() {
            match self.c.stands_for.get(dep) {
                Some(new) if self.c.tail.contains(dep) => deps.extend(new.iter().copied()),
                _ => {
                    deps.insert(self.c.base);
                }
            }
        }
        if deps.is_empty() {
            deps.insert(self.c.base);
        }
        let deps: Vec<ChangeHash> = deps.into_iter().collect();
        let steps = self.steps(change)?;
        let tip = self.c.doc.get_heads();
        // Every head of the new history among the dependencies: the
        // document at them is the new history itself. (They may also name
        // ancestors of those heads, the base for one: a change's
        // dependencies in the cut all stand for the base.)
        if tip.iter().all(|head| deps.contains(head)) {
            return self.one_on_tip(change, deps, &steps);
        }
        let mut fork = self.doc_at(&deps)?;
        let carried = commit(&mut fork, change, &steps)?;
        match &carried {
            Some(new) => {
                self.c.doc.apply_changes([new.clone()])?;
                self.c.stands_for.insert(change.hash(), vec![new.hash()]);
                self.c.made.insert(new.hash(), new.clone());
                self.keep_branch(vec![new.hash()], fork);
            }
            None => {
                self.c.stands_for.insert(change.hash(), deps);
            }
        }
        Ok(carried)
    }

    /// `one` for a change whose new dependencies include every head of the
    /// new history (the usual case: a tail written one change after
    /// another).
    /// It is committed on the new history itself: the same document as a
    /// branch at those heads, so the very same change, without copying a
    /// branch and applying the result a second time (which made carrying
    /// slower than a room's writes, so that a busy room's compaction never
    /// caught up off the task and carried hundreds of changes in line).
    fn one_on_tip(
        &mut self,
        change: &Change,
        deps: Vec<ChangeHash>,
        steps: &[Step],
    ) -> Result<Option<Change>, Error> {
        let carried = commit(&mut self.c.doc, change, steps)?;
        match &carried {
            Some(new) => {
                self.c.stands_for.insert(change.hash(), vec![new.hash()]);
                self.c.made.insert(new.hash(), new.clone());
                // A change carried later may depend on this point rather
                // than on the heads then: a copy now and then keeps that
                // a few changes away (`doc_at`).
                if self.c.made.len() % BRANCH_EVERY == 0 {
                    self.keep_branch(vec![new.hash()], self.c.doc.clone());
                }
            }
            None => {
                self.c.stands_for.insert(change.hash(), deps);
            }
        }
        Ok(carried)
    }

    /// A document holding exactly `deps` (sorted) and their causal past in
    /// the new history: a copy of a kept one, completed with the carried
    /// changes it lacks. automerge's `fork_at` rebuilds every change of
    /// the history from its columns, which made a tail written by three
    /// replicas at once cost seconds.
    fn doc_at(&mut self, deps: &[ChangeHash]) -> Result<Automerge, Error> {
        if let Some(doc) = self.c.branches.get(deps) {
            return Ok(doc.clone());
        }
        // The nearest kept point in their causal past (the base's is
        // always kept).
        let mut start = None;
        let mut visited: HashSet<ChangeHash> = HashSet::new();
        let mut queue: VecDeque<ChangeHash> = deps.iter().copied().collect();
        while let Some(hash) = queue.pop_front() {
            if !visited.insert(hash) {
                continue;
            }
            if let Some(doc) = self.c.branches.get(std::slice::from_ref(&hash)) {
                start = Some(doc);
                break;
            }
            if let Some(change) = self.c.made.get(&hash) {
                queue.extend(change.deps().iter().copied());
            }
        }
        let start = start.or_else(|| self.c.branches.get(std::slice::from_ref(&self.c.base)));
        let mut doc = match start {
            Some(doc) => doc.clone(),
            None => return Ok(self.c.doc.fork_at(deps)?),
        };
        let mut missing = Vec::new();
        let mut seen: HashSet<ChangeHash> = HashSet::new();
        let mut stack: Vec<ChangeHash> = deps.to_vec();
        while let Some(hash) = stack.pop() {
            if !seen.insert(hash) || doc.get_change_meta_by_hash(&hash).is_some() {
                continue;
            }
            let Some(change) = self.c.made.get(&hash) else {
                return Ok(self.c.doc.fork_at(deps)?);
            };
            stack.extend(change.deps().iter().copied());
            missing.push(change.clone());
        }
        doc.apply_changes(missing)?;
        Ok(doc)
    }

    /// Keeps `doc` (at `heads`) for the changes carried next to it, a
    /// bounded number of them (which ones are kept only changes the speed).
    fn keep_branch(&mut self, heads: Vec<ChangeHash>, doc: Automerge) {
        if self.c.kept.len() >= BRANCHES_KEPT {
            if let Some(oldest) = self.c.kept.pop_front() {
                self.c.branches.remove(&oldest);
            }
        }
        self.c.kept.push_back(heads.clone());
        self.c.branches.insert(heads, doc);
    }

    /// `change`'s ops by path, each write with the values it replaced.
    fn steps(&mut self, change: &Change) -> Result<Vec<Step>, Error> {
        let expanded = std::panic::catch_unwind(|| change.decode())
            .map_err(|_| Error::Automerge("a tail change cannot be decoded".into()))?;
        let mut steps = Vec::new();
        for op in &expanded.operations {
            let (Key::Map(key), false) = (&op.key, op.insert) else {
                continue;
            };
            let Some((at, obj)) = self.object(&op.obj) else {
                continue;
            };
            let key = key.to_string();
            let strings_at = |heads: &[ChangeHash]| {
                self.old
                    .get_all_at(&obj, key.as_str(), heads)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(v, _)| match v {
                        automerge::Value::Scalar(scalar) => scalar.as_str().map(str::to_owned),
                        automerge::Value::Object(_) => None,
                    })
                    .collect::<Vec<String>>()
            };
            let seen = || strings_at(change.deps());
            // Only maps of removable fields hold removals: other keys skip
            // the lookup at the cut (a historical read per op).
            let cut_removals = |seen: &[String]| {
                if !holds_removals(&at) {
                    return Vec::new();
                }
                let mut removals = strings_at(&[self.c.cut]);
                removals.retain(|text| s::is_removed(text) && !seen.contains(text));
                removals
            };
            steps.push(match &op.action {
                OpType::Make(ObjType::Map) => Step::Make { at, key },
                OpType::Put(value) => {
                    let seen = seen();
                    Step::Put {
                        cut_removals: cut_removals(&seen),
                        seen,
                        at,
                        key,
                        value: value.clone(),
                    }
                }
                OpType::Delete => {
                    let seen = seen();
                    Step::Delete {
                        cut_removals: cut_removals(&seen),
                        seen,
                        at,
                        key,
                    }
                }
                OpType::Increment(by) => Step::Increment { at, key, by: *by },
                _ => continue,
            });
        }
        Ok(steps)
    }

    /// The path and id of an object of the old history (objects are never
    /// deleted in a room, so every one has a path).
    fn object(&mut self, obj: &ObjectId) -> Option<(Vec<String>, ObjId)> {
        let ObjectId::Id(id) = obj else {
            return Some((Vec::new(), ROOT));
        };
        let text = format!("{}@{}", id.counter(), id.actor());
        if let Some(found) = self.c.objects.get(&text) {
            return found.clone();
        }
        let found = (|| {
            let (exid, _) = self.old.import(&text).ok()?;
            let mut path = Vec::new();
            for parent in self.old.parents(&exid).ok()? {
                match parent.prop {
                    Prop::Map(key) => path.push(key),
                    Prop::Seq(_) => return None,
                }
            }
            path.reverse();
            Some((path, exid))
        })();
        self.c.objects.insert(text, found.clone());
        found
    }
}

/// Whether the map at `path` holds removable fields (attributes,
/// permissions, a session's tracks).
fn holds_removals(path: &[String]) -> bool {
    let place: Vec<&str> = path.iter().map(String::as_str).collect();
    matches!(
        place.as_slice(),
        [s::CONFIG, s::ATTRS] | [s::PERMISSIONS] | [s::SESSIONS, _, s::TRACKS]
    )
}

/// The map at `path`, if every step of it exists.
fn resolve<R: ReadDoc>(doc: &R, path: &[String]) -> Option<ObjId> {
    let mut obj = ROOT;
    for key in path {
        obj = map_obj(doc, &obj, key)?;
    }
    Some(obj)
}

/// Applies one step to the carried change. A write leaves its key holding
/// what the old history reads after it: the room's rule over the written
/// value and the values the writer had *not* seen (concurrent ones, which
/// automerge keeps beside it). A step on a map the base does not hold (a
/// pruned session) is dropped.
fn apply(tx: &mut Transaction<'_>, step: &Step) -> Result<(), automerge::AutomergeError> {
    match step {
        Step::Make { at, key } => {
            let Some(obj) = resolve(tx, at) else {
                return Ok(());
            };
            let place: Vec<&str> = at.iter().map(String::as_str).collect();
            let creates_a_map = matches!(
                (place.as_slice(), key.as_str()),
                ([s::SESSIONS], _) | ([s::SESSIONS, _], s::TRACKS)
            );
            #[cfg(feature = "mutations")]
            if crate::mutation::compaction_drops_joins() && place.as_slice() == [s::SESSIONS] {
                return Ok(());
            }
            // A pruned session stays pruned, as the validator refuses a
            // change that would create it again (`departed.rs`).
            let pruned = place.as_slice() == [s::SESSIONS]
                && crate::ids::SessionId::parse(key.as_str())
                    .is_ok_and(|id| super::departed::remembers(tx, &id));
            if creates_a_map && !pruned && map_obj(tx, &obj, key).is_none() {
                tx.put_object(&obj, key.as_str(), ObjType::Map)?;
            }
        }
        Step::Put {
            at,
            key,
            value,
            seen,
            cut_removals,
        } => {
            let Some(obj) = resolve(tx, at) else {
                return Ok(());
            };
            let ScalarValue::Str(text) = value else {
                // Plain numbers (`joined_at`) are written once, by the join.
                if matches!(tx.get(&obj, key.as_str()), Ok(None)) {
                    tx.put(&obj, key.as_str(), value.clone())?;
                }
                return Ok(());
            };
            let current = read::all_strings(tx, &obj, key);
            let mut candidates: Vec<String> = unseen(&current, seen);
            candidates.extend(cut_removals.iter().cloned());
            candidates.push(text.to_string());
            settle(tx, &obj, at, key, &current, &candidates)?;
        }
        Step::Delete {
            at,
            key,
            seen,
            cut_removals,
        } => {
            let Some(obj) = resolve(tx, at) else {
                return Ok(());
            };
            let current = read::all_strings(tx, &obj, key);
            let mut candidates = unseen(&current, seen);
            candidates.extend(cut_removals.iter().cloned());
            if candidates.is_empty() {
                if !current.is_empty() {
                    tx.delete(&obj, key.as_str())?;
                }
            } else {
                // Add wins: what the delete had not seen stays.
                settle(tx, &obj, at, key, &current, &candidates)?;
            }
        }
        Step::Increment { at, key, by } => {
            let Some(obj) = resolve(tx, at) else {
                return Ok(());
            };
            let is_counter = matches!(
                tx.get(&obj, key.as_str()),
                Ok(Some((automerge::Value::Scalar(v), _)))
                    if matches!(v.as_ref(), ScalarValue::Counter(_))
            );
            if is_counter {
                tx.increment(&obj, key.as_str(), *by)?;
            }
        }
    }
    Ok(())
}

/// The current values the writer had not seen.
fn unseen(current: &[String], seen: &[String]) -> Vec<String> {
    current
        .iter()
        .filter(|value| !seen.contains(value))
        .cloned()
        .collect()
}

/// Makes `key` hold the winner among `candidates` by its field's rule,
/// unless it already holds exactly that.
///
/// automerge turns a put of the value it shows among several into a
/// *delete* of the others (a conflict resolution), which the validator
/// refuses at a key that is never removed (an owner, a state): every peer
/// would refuse the change. So there, one of the others is put first and
/// the winner over it: two puts, both valid. Every other case writes the
/// one put it always did (a carried change keeps its writer's actor and
/// sequence number: builds that carried one change differently would
/// refuse each other's).
pub(super) fn settle(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    at: &[String],
    key: &str,
    current: &[String],
    candidates: &[String],
) -> Result<(), automerge::AutomergeError> {
    let Some(winner) = winner(at, key, candidates) else {
        return Ok(());
    };
    if current.len() == 1 && current[0] == winner {
        return Ok(());
    }
    let shown = match tx.get(obj, key) {
        Ok(Some((automerge::Value::Scalar(value), _))) => value.as_str().map(str::to_owned),
        _ => None,
    };
    if current.len() > 1 && shown.as_deref() == Some(winner.as_str()) {
        if let Some(other) = current.iter().find(|v| **v != winner) {
            tx.put(obj, key, other.clone())?;
        }
    }
    tx.put(obj, key, winner)?;
    Ok(())
}

#[cfg(test)]
#[path = "carry_settle_tests.rs"]
mod settle_tests;

/// The value the reading picks among `values` (`docs/data-model.md`,
/// "Conflict rules"); values that do not parse never win.
fn winner(at: &[String], key: &str, values: &[String]) -> Option<String> {
    let place: Vec<&str> = at.iter().map(String::as_str).collect();
    match (place.as_slice(), key) {
        ([s::SESSIONS, _], s::STATE) => {
            let parsed: Vec<(Timestamp, SessionState, &String)> = values
                .iter()
                .filter_map(|t| s::decode_stamped(t).map(|(stamp, v)| (stamp, v, t)))
                .collect();
            let left = parsed.iter().any(|(_, v, _)| *v == SessionState::Left);
            parsed
                .into_iter()
                .filter(|(_, v, _)| !left || *v == SessionState::Left)
                .max_by_key(|(stamp, _, _)| *stamp)
                .map(|(_, _, t)| t.clone())
        }
        ([s::SESSIONS, _], s::OWNER) => values
            .iter()
            .filter_map(|t| s::decode_owner(t).map(|owner| (owner, t)))
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, t)| t.clone()),
        ([s::SESSIONS, _], s::USER | s::ROLE | s::REGION | s::RESUME_HASH) => {
            values.iter().max().cloned()
        }
        _ => values
            .iter()
            .filter_map(|t| s::stamp_of(t).map(|stamp| (stamp, t)))
            .max_by_key(|(stamp, _)| *stamp)
            .map(|(_, t)| t.clone()),
    }
}
