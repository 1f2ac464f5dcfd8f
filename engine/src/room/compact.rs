//! History compaction (`docs/data-model.md`, "Compacted generations").
//!
//! A room's history up to an agreed change, the *cut* (a compaction request
//! and its whole causal past), is replaced by one *base* change that writes
//! the room as read at the cut, without the sessions that had left long
//! enough before it. The changes after the cut, the *tail*, are then carried
//! onto the base one by one.
//!
//! Both steps are pure functions of the changes involved. Every replica that
//! compacts at the same request writes the same base (same actor, same bytes,
//! same hash), and carries a given tail change to the same change: replicas
//! that hold different tails still converge, and a change carried by two
//! replicas is one change, not two.
//!
//! Carrying keeps what each tail change meant. Its writes are re-expressed by
//! path on the base plus the carried changes it depended on, and the conflict
//! rules decide each one against what the base holds: a value that loses to
//! the base's value by the room's rule (an older stamp, a lower owner, a
//! state after `left`) is dropped, because it would have lost in the reading
//! anyway; a delete removes only values the deleting change had seen (add
//! wins, as in automerge); counter increments are carried as increments,
//! since the base counts only the cut's.

use std::collections::{BTreeSet, HashMap, HashSet};

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{Automerge, Change, ChangeHash, ObjId, ObjType, Prop, ReadDoc, ScalarValue, ROOT};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::read::{self, map_obj, RootObjs};
use super::schema as s;
use crate::error::Error;
use crate::hlc::Timestamp;
use crate::ids::{RegionId, RoomId, SessionId, TenantId};
use crate::model::{Permission, SessionState, Track, SCHEMA_VERSION};

/// The version of what compaction writes (the base's layout, how the tail
/// is carried). Replicas compact only with peers of the same version: two
/// versions would write different bases at one cut.
pub const COMPACTION_FORMAT: u32 = 1;

/// What a compaction request (`meta.compact`, stamped) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The generation the compaction starts.
    pub generation: u64,
    /// Sessions that left at or before this wall time (ms) are pruned: the
    /// requester's clock minus its `session_retention_ms`, so every
    /// replica prunes alike whatever its own settings.
    pub prune_before_ms: u64,
}

/// Where a room's history is cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The compaction's request: the cut is this change and its causal past.
    pub request: ChangeHash,
    /// The generation the base starts (one past the compacted one's).
    pub generation: u64,
    /// Sessions that left at or before this wall time (ms), as read at the
    /// cut, are not carried into the base.
    pub prune_before_ms: u64,
}

/// A compacted room.
#[derive(Debug)]
pub struct Compacted {
    /// The base and the carried tail: the room's new history.
    pub doc: Automerge,
    pub base: Change,
    /// The tail, carried onto the base, in causal order. Shorter than the
    /// tail when a change had nothing left to say.
    pub carried: Vec<Change>,
}

/// Compacts `old` (room `room`) at `cut`.
pub fn compact(old: &Automerge, room: &RoomId, cut: &Cut) -> Result<Compacted, Error> {
    let corrupt = |reason: &str| Error::Corrupt {
        room: room.clone(),
        reason: reason.into(),
    };
    let past = causal_past(old, cut.request).ok_or_else(|| corrupt("no compaction request"))?;
    let all = old.get_changes(&[]);
    let (before, tail): (Vec<Change>, Vec<Change>) =
        all.into_iter().partition(|c| past.contains(&c.hash()));
    let mut at_cut = Automerge::new();
    at_cut.apply_changes(before)?;
    let base = base_change(&at_cut, room, cut)?;
    let mut doc = Automerge::new();
    doc.apply_changes([base.clone()])?;
    let mut carry = Carry {
        old,
        doc: doc.clone(),
        base: base.hash(),
        tail: tail.iter().map(Change::hash).collect(),
        stands_for: HashMap::new(),
        objects: HashMap::new(),
        branches: HashMap::from([(vec![base.hash()], doc)]),
        // The base's document is never dropped: `kept` lists the others.
        kept: std::collections::VecDeque::new(),
        made: HashMap::from([(base.hash(), base.clone())]),
    };
    let mut carried = Vec::new();
    for change in causal_order(tail) {
        if let Some(new) = carry.one(&change)? {
            carried.push(new);
        }
    }
    Ok(Compacted {
        doc: carry.doc,
        base,
        carried,
    })
}

/// The generation and cut of `change` if it is a base of `room`.
pub fn base_of(room: &RoomId, change: &Change) -> Option<(u64, ChangeHash)> {
    if !change.deps().is_empty() {
        return None;
    }
    let expanded = std::panic::catch_unwind(|| change.decode()).ok()?;
    if !super::validate::is_base(room, change, &expanded) {
        return None;
    }
    let mut generation = None;
    let mut cut = None;
    for op in &expanded.operations {
        match (&op.obj, &op.key, &op.action) {
            (ObjectId::Root, Key::Map(key), OpType::Put(ScalarValue::Uint(g)))
                if key == s::GENERATION && generation.is_none() =>
            {
                generation = Some(*g)
            }
            (ObjectId::Root, Key::Map(key), OpType::Put(ScalarValue::Str(text)))
                if key == s::CUT && cut.is_none() =>
            {
                cut = text.parse::<ChangeHash>().ok()
            }
            _ => {}
        }
    }
    Some((generation?, cut?))
}

/// `head` and every change it depends on, from change metadata alone.
fn causal_past(doc: &Automerge, head: ChangeHash) -> Option<HashSet<ChangeHash>> {
    let mut seen = HashSet::from([head]);
    let mut stack = vec![head];
    while let Some(hash) = stack.pop() {
        for dep in doc.get_change_meta_by_hash(&hash)?.deps {
            if seen.insert(dep) {
                stack.push(dep);
            }
        }
    }
    Some(seen)
}

/// `changes` with every change after the ones it depends on.
fn causal_order(mut changes: Vec<Change>) -> Vec<Change> {
    let mut done: HashSet<ChangeHash> = HashSet::new();
    let inside: HashSet<ChangeHash> = changes.iter().map(Change::hash).collect();
    let mut out = Vec::with_capacity(changes.len());
    while !changes.is_empty() {
        let (ready, waiting): (Vec<Change>, Vec<Change>) = changes.into_iter().partition(|c| {
            c.deps()
                .iter()
                .all(|d| !inside.contains(d) || done.contains(d))
        });
        if ready.is_empty() {
            // A cycle cannot happen (hashes chain); keep what is left as is.
            out.extend(waiting);
            break;
        }
        done.extend(ready.iter().map(Change::hash));
        out.extend(ready);
        changes = waiting;
    }
    out
}

// ---- the base ------------------------------------------------------------

/// The change that starts the compacted generation: the room as read at the
/// cut, written by an actor derived from the room and the request, with
/// commit time 0 and no message, in a fixed order. The same on every replica.
pub fn base_change(at_cut: &Automerge, room: &RoomId, cut: &Cut) -> Result<Change, Error> {
    let objs = RootObjs::find(at_cut, room)?;
    let mut doc = Automerge::new().with_actor(s::base_actor(room, &cut.request));
    let success = doc
        .transact_with(
            |_| CommitOptions::default().with_time(0),
            |tx| write_base(tx, at_cut, &objs, room, cut),
        )
        .map_err(|failure| failure.error)?;
    success
        .hash
        .and_then(|hash| doc.get_change_by_hash(&hash))
        .ok_or_else(|| Error::Corrupt {
            room: room.clone(),
            reason: "the base made no change".into(),
        })
}

fn write_base(
    tx: &mut Transaction<'_>,
    at: &Automerge,
    objs: &RootObjs,
    room: &RoomId,
    cut: &Cut,
) -> Result<(), Error> {
    tx.put(ROOT, s::SCHEMA, ScalarValue::Uint(SCHEMA_VERSION))?;
    tx.put(ROOT, s::ROOM_ID, room.as_str())?;
    tx.put(ROOT, s::GENERATION, ScalarValue::Uint(cut.generation))?;
    tx.put(ROOT, s::CUT, cut.request.to_string())?;
    let meta = tx.put_object(ROOT, s::META, ObjType::Map)?;
    copy::<TenantId>(tx, at, (&objs.meta, &meta), s::TENANT)?;
    copy::<u64>(tx, at, (&objs.meta, &meta), s::CREATED_AT)?;
    copy::<u64>(tx, at, (&objs.meta, &meta), s::ENDED)?;
    let config = tx.put_object(ROOT, s::CONFIG, ObjType::Map)?;
    copy::<u32>(tx, at, (&objs.config, &config), s::MAX_PARTICIPANTS)?;
    copy::<Option<RegionId>>(tx, at, (&objs.config, &config), s::PREFERRED_REGION)?;
    copy::<bool>(tx, at, (&objs.config, &config), s::RECORDING)?;
    let attrs = tx.put_object(&config, s::ATTRS, ObjType::Map)?;
    for key in at.keys(&objs.attrs) {
        copy::<String>(tx, at, (&objs.attrs, &attrs), &key)?;
    }
    let permissions = tx.put_object(ROOT, s::PERMISSIONS, ObjType::Map)?;
    for key in at.keys(&objs.permissions) {
        copy::<Permission>(tx, at, (&objs.permissions, &permissions), &key)?;
    }
    let sessions = tx.put_object(ROOT, s::SESSIONS, ObjType::Map)?;
    for key in at.keys(&objs.sessions) {
        if SessionId::parse(key.as_str()).is_err() {
            continue;
        }
        let Some(from) = map_obj(at, &objs.sessions, &key) else {
            continue;
        };
        // A session the reading skips (malformed by a foreign writer) is
        // not carried; one that left long enough before the cut is pruned.
        let Some(session) = read::session(at, &from) else {
            continue;
        };
        if session.departed_by(cut.prune_before_ms) {
            continue;
        }
        let to = tx.put_object(&sessions, &key, ObjType::Map)?;
        tx.put(&to, s::USER, session.user.as_str())?;
        let role = serde_json::to_value(session.role)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        tx.put(&to, s::ROLE, role)?;
        tx.put(&to, s::REGION, session.region.as_str())?;
        tx.put(&to, s::JOINED_AT, ScalarValue::Uint(session.joined_at_ms))?;
        if let Some(hash) = &session.resume_token_hash {
            tx.put(&to, s::RESUME_HASH, hash.as_str())?;
        }
        tx.put(&to, s::OWNER, s::encode_owner(&session.owner))?;
        if let Some(state) = state_winner(at, &from) {
            tx.put(&to, s::STATE, state)?;
        }
        let tracks = tx.put_object(&to, s::TRACKS, ObjType::Map)?;
        if let Some(old_tracks) = map_obj(at, &from, s::TRACKS) {
            for key in at.keys(&old_tracks) {
                copy::<Track>(tx, at, (&old_tracks, &tracks), &key)?;
            }
        }
    }
    let counters = tx.put_object(ROOT, s::COUNTERS, ObjType::Map)?;
    let read = read::snapshot(at, room)?.counters;
    for (key, value) in [
        (s::JOINS, read.joins),
        (s::LEAVES, read.leaves),
        (s::OWNER_CHANGES, read.owner_changes),
    ] {
        tx.put(&counters, key, ScalarValue::counter(value))?;
    }
    Ok(())
}

/// Copies the winning stamped value of `key` (last writer by stamp among
/// the values that parse as `T`, as the reading picks it), stamp included.
fn copy<T: DeserializeOwned>(
    tx: &mut Transaction<'_>,
    at: &Automerge,
    (from, to): (&ObjId, &ObjId),
    key: &str,
) -> Result<(), Error> {
    let winner = read::all_strings(at, from, key)
        .into_iter()
        .filter_map(|text| s::decode_stamped::<T>(&text).map(|(stamp, _)| (stamp, text)))
        .max_by_key(|(stamp, _)| *stamp);
    if let Some((_, text)) = winner {
        tx.put(to, key, text)?;
    }
    Ok(())
}

/// The state value the reading's rule picks: the newest `left` if any,
/// else the newest value.
fn state_winner(at: &Automerge, session: &ObjId) -> Option<String> {
    let values: Vec<(Timestamp, SessionState, String)> = read::all_strings(at, session, s::STATE)
        .into_iter()
        .filter_map(|text| s::decode_stamped(&text).map(|(stamp, state)| (stamp, state, text)))
        .collect();
    let left = values
        .iter()
        .any(|(_, state, _)| *state == SessionState::Left);
    values
        .into_iter()
        .filter(|(_, state, _)| !left || *state == SessionState::Left)
        .max_by_key(|(stamp, _, _)| *stamp)
        .map(|(_, _, text)| text)
}

// ---- the tail ------------------------------------------------------------

/// One op of a tail change, by path. `seen`: the values at that key the
/// change had seen (in its causal past), which its write replaced.
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
    },
    Delete {
        at: Vec<String>,
        key: String,
        seen: Vec<String>,
    },
    Increment {
        at: Vec<String>,
        key: String,
        by: i64,
    },
}

struct Carry<'a> {
    old: &'a Automerge,
    doc: Automerge,
    base: ChangeHash,
    tail: HashSet<ChangeHash>,
    /// A tail change → the changes that stand for it in the new history:
    /// its carried change, or, when nothing of it was left, what it stood on.
    stands_for: HashMap<ChangeHash, Vec<ChangeHash>>,
    /// Object id (`counter@actor`) in the old history → its path and id.
    objects: HashMap<String, Option<(Vec<String>, ObjId)>>,
    /// Documents at points of the new history (by their sorted heads), to
    /// carry the next changes on; `kept` is their order, oldest first.
    branches: HashMap<Vec<ChangeHash>, Automerge>,
    kept: std::collections::VecDeque<Vec<ChangeHash>>,
    /// The base and every carried change, by hash.
    made: HashMap<ChangeHash, Change>,
}

/// Documents kept at points of the new history while a tail is carried.
/// Each is the small compacted room; 64 of them cover the changes that
/// replicas write side by side while a compaction is acknowledged.
const BRANCHES_KEPT: usize = 64;

impl Carry<'_> {
    fn one(&mut self, change: &Change) -> Result<Option<Change>, Error> {
        let mut deps = BTreeSet::new();
        for dep in change.deps() {
            match self.stands_for.get(dep) {
                Some(new) if self.tail.contains(dep) => deps.extend(new.iter().copied()),
                _ => {
                    deps.insert(self.base);
                }
            }
        }
        if deps.is_empty() {
            deps.insert(self.base);
        }
        let deps: Vec<ChangeHash> = deps.into_iter().collect();
        let steps = self.steps(change)?;
        let mut fork = self.doc_at(&deps)?;
        fork.set_actor(change.actor_id().clone());
        let mut options = CommitOptions::default().with_time(change.timestamp());
        if let Some(message) = change.message() {
            options = options.with_message(message.to_owned());
        }
        let success = fork
            .transact_with(
                |_| options,
                |tx| {
                    for step in &steps {
                        apply(tx, step)?;
                    }
                    Ok::<_, automerge::AutomergeError>(())
                },
            )
            .map_err(|failure| failure.error)?;
        let carried = success.hash.and_then(|hash| fork.get_change_by_hash(&hash));
        match &carried {
            Some(new) => {
                self.doc.apply_changes([new.clone()])?;
                self.stands_for.insert(change.hash(), vec![new.hash()]);
                self.made.insert(new.hash(), new.clone());
                self.keep_branch(vec![new.hash()], fork);
            }
            None => {
                self.stands_for.insert(change.hash(), deps);
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
        if let Some(doc) = self.branches.get(deps) {
            return Ok(doc.clone());
        }
        let start = deps
            .iter()
            .find_map(|dep| self.branches.get(std::slice::from_ref(dep)))
            .or_else(|| self.branches.get(std::slice::from_ref(&self.base)));
        let mut doc = match start {
            Some(doc) => doc.clone(),
            None => return Ok(self.doc.fork_at(deps)?),
        };
        let mut missing = Vec::new();
        let mut seen: HashSet<ChangeHash> = HashSet::new();
        let mut stack: Vec<ChangeHash> = deps.to_vec();
        while let Some(hash) = stack.pop() {
            if !seen.insert(hash) || doc.get_change_meta_by_hash(&hash).is_some() {
                continue;
            }
            let Some(change) = self.made.get(&hash) else {
                return Ok(self.doc.fork_at(deps)?);
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
        if self.kept.len() >= BRANCHES_KEPT {
            if let Some(oldest) = self.kept.pop_front() {
                self.branches.remove(&oldest);
            }
        }
        self.kept.push_back(heads.clone());
        self.branches.insert(heads, doc);
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
            let seen = || {
                self.old
                    .get_all_at(&obj, key.as_str(), change.deps())
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(v, _)| match v {
                        automerge::Value::Scalar(scalar) => scalar.as_str().map(str::to_owned),
                        automerge::Value::Object(_) => None,
                    })
                    .collect::<Vec<String>>()
            };
            steps.push(match &op.action {
                OpType::Make(ObjType::Map) => Step::Make { at, key },
                OpType::Put(value) => Step::Put {
                    seen: seen(),
                    at,
                    key,
                    value: value.clone(),
                },
                OpType::Delete => Step::Delete {
                    seen: seen(),
                    at,
                    key,
                },
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
        if let Some(found) = self.objects.get(&text) {
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
        self.objects.insert(text, found.clone());
        found
    }
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
            if creates_a_map && map_obj(tx, &obj, key).is_none() {
                tx.put_object(&obj, key.as_str(), ObjType::Map)?;
            }
        }
        Step::Put {
            at,
            key,
            value,
            seen,
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
            candidates.push(text.to_string());
            settle(tx, &obj, at, key, &current, &candidates)?;
        }
        Step::Delete { at, key, seen } => {
            let Some(obj) = resolve(tx, at) else {
                return Ok(());
            };
            let current = read::all_strings(tx, &obj, key);
            let candidates = unseen(&current, seen);
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
fn settle(
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
    if current.len() != 1 || current[0] != winner {
        tx.put(obj, key, winner)?;
    }
    Ok(())
}

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
