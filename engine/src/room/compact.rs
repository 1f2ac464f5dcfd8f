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

use std::collections::{HashMap, HashSet};

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{
    hydrate, Automerge, Change, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, ROOT,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::carry::{self, Carrier};
use super::departed;
use super::read::{self, map_obj, RootObjs};
use super::schema as s;
use crate::error::Error;
use crate::hlc::Timestamp;
use crate::ids::{RegionId, RoomId, SessionId, TenantId};
use crate::model::{Permission, SessionState, Track, SCHEMA_VERSION};

/// The version of what compaction writes (the base's layout, how the tail
/// is carried). Replicas compact only with peers of the same version: two
/// versions would write different bases at one cut. 2: the base is
/// written in one bulk insertion (1 wrote it a put at a time, ordering its
/// operations differently). 3: removals are stamped (`schema::
/// encode_removed`): the base leaves removed keys out, and a replica of
/// this format writes stamped removals once every replica it knows of
/// speaks it (a peer that does not would refuse them). 4: the base
/// remembers the sessions compactions pruned (`room::departed`), so they
/// are refused as "has left" rather than as unknown. 5: the base keeps
/// the removals made after the cut's prune horizon (as stamped removals)
/// and records that horizon (`schema::HORIZON`), so that a document from
/// before the cut can still be merged (`room::old_import`).
pub const COMPACTION_FORMAT: u32 = 5;

/// The formats whose base a replica still recognises in a peer's history:
/// a replica upgraded after it named a cut, but before it compacted, takes
/// its peers' base written by the format they agreed under.
pub const COMPACTION_FORMATS_READ: [u32; 5] = [COMPACTION_FORMAT, 4, 3, 2, 1];

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
    /// The base and the carried tail, the room's new history
    /// (`Carrier::doc`), and what carrying more of the tail needs.
    pub carrier: Carrier,
    pub base: Change,
    /// The tail, carried onto the base, in causal order. Shorter than the
    /// tail when a change had nothing left to say.
    pub carried: Vec<Change>,
}

/// Compacts `old` (room `room`) at `cut`, writing the base in `format`.
/// `known_base`: the base this cut was already found to have (it depends
/// only on the cut's history, which never changes): building it is most of
/// a compaction's cost, so a compaction redone on more changes reuses it.
pub fn compact(
    old: &Automerge,
    room: &RoomId,
    cut: &Cut,
    format: u32,
    known_base: Option<&Change>,
) -> Result<Compacted, Error> {
    let corrupt = |reason: &str| Error::Corrupt {
        room: room.clone(),
        reason: reason.into(),
    };
    let past = causal_past(old, cut.request).ok_or_else(|| corrupt("no compaction request"))?;
    let all = old.get_changes(&[]);
    let (before, tail): (Vec<Change>, Vec<Change>) =
        all.into_iter().partition(|c| past.contains(&c.hash()));
    let base = match known_base {
        Some(base) => base.clone(),
        None => {
            let plain_deletes = before.iter().any(plain_delete);
            let mut at_cut = Automerge::new();
            at_cut.apply_changes(before)?;
            base_change(&at_cut, room, cut, format, plain_deletes)?
        }
    };
    let mut doc = Automerge::new();
    doc.apply_changes([base.clone()])?;
    let (carrier, carried) = carry::carry(old, &base, cut.request, doc, tail)?;
    Ok(Compacted {
        carrier,
        base,
        carried,
    })
}

/// Carries the changes `old` took after `copied` onto `carrier`, a
/// compaction prepared on a copy of the room whose heads were `copied`
/// (`old` holds the copy's history): together with the copy's carried
/// changes, the carried tail `compact` gives on `old`, without carrying
/// again what the copy carried.
pub fn carry_since(
    old: &Automerge,
    carrier: Carrier,
    copied: &[ChangeHash],
) -> Result<(Carrier, Vec<Change>), Error> {
    carry::carry_more(old, carrier, old.get_changes(copied))
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

// ---- the base ------------------------------------------------------------

/// The change that starts the compacted generation: the room as read at the
/// cut, written by an actor derived from the room and the request, with
/// commit time 0 and no message, in a fixed order. The same on every replica.
pub fn base_change(
    at_cut: &Automerge,
    room: &RoomId,
    cut: &Cut,
    format: u32,
    plain_deletes: bool,
) -> Result<Change, Error> {
    let objs = RootObjs::find(at_cut, room)?;
    let fields = base_fields(at_cut, &objs, room, cut, format, plain_deletes)?;
    let mut doc = Automerge::new().with_actor(s::base_actor(room, &cut.request));
    let success = doc
        .transact_with(
            |_| CommitOptions::default().with_time(0),
            |tx| match format {
                1 => fields.put_each(tx, &ROOT),
                _ => tx
                    .init_root_from_hydrate(&fields.hydrated())
                    .map_err(Error::from),
            },
        )
        .map_err(|failure| failure.error)?;
    super::made_change(&doc, success.hash, room, "the base")
}

/// The room as read at the cut, as the base writes it. Format 2 writes it
/// in one bulk insertion: a put per value (format 1) costs a search of the
/// new document's op columns per put. automerge orders the bulk
/// insertion's keys itself, so every replica writes the same bytes.
/// Format 3 leaves removed keys out (formats 1 and 2, from before stamped
/// removals, copy the newest value that parses, as they did).
fn base_fields(
    at: &Automerge,
    objs: &RootObjs,
    room: &RoomId,
    cut: &Cut,
    format: u32,
    plain_deletes: bool,
) -> Result<Fields, Error> {
    let removals = format >= 3;
    let mut root = Fields::default();
    root.put(s::SCHEMA, ScalarValue::Uint(SCHEMA_VERSION));
    root.put(s::ROOM_ID, room.as_str());
    root.put(s::GENERATION, ScalarValue::Uint(cut.generation));
    root.put(s::CUT, cut.request.to_string());
    // Format 5 remembers what happened after the prune horizon: removals
    // made since stay in the base, and the horizon is recorded.
    let keep_after = (format >= 5).then_some(cut.prune_before_ms);
    if let Some(prune_before_ms) = keep_after {
        // What a compaction forgot lies in its request's causal past: the
        // request's time bounds it where nothing finer is known (a plain
        // delete has no stamp; a base of format 4 or older forgot every
        // removal and prune up to its own cut, without saying when).
        let mut horizon = prune_before_ms;
        let previous = horizon_of(at);
        if plain_deletes || (previous.is_none() && super::generation::generation_of(at) > 0) {
            let request_ms =
                request_wall_ms(at, objs, cut.generation).ok_or_else(|| Error::Corrupt {
                    room: room.clone(),
                    reason: "no compaction request at the cut".into(),
                })?;
            horizon = horizon.max(request_ms);
        }
        root.put(
            s::HORIZON,
            ScalarValue::Uint(previous.map_or(horizon, |h| h.max(horizon))),
        );
    }
    let mut meta = Fields::default();
    meta.copy::<TenantId>(at, &objs.meta, s::TENANT);
    meta.copy::<u64>(at, &objs.meta, s::CREATED_AT);
    meta.copy::<u64>(at, &objs.meta, s::ENDED);
    root.map(s::META, meta);
    let mut config = Fields::default();
    config.copy::<u32>(at, &objs.config, s::MAX_PARTICIPANTS);
    config.copy::<Option<RegionId>>(at, &objs.config, s::PREFERRED_REGION);
    config.copy::<bool>(at, &objs.config, s::RECORDING);
    let mut attrs = Fields::default();
    for key in at.keys(&objs.attrs) {
        attrs.copy_removable::<String>(at, &objs.attrs, &key, removals, keep_after);
    }
    config.map(s::ATTRS, attrs);
    root.map(s::CONFIG, config);
    let mut permissions = Fields::default();
    for key in at.keys(&objs.permissions) {
        permissions.copy_removable::<Permission>(at, &objs.permissions, &key, removals, keep_after);
    }
    root.map(s::PERMISSIONS, permissions);
    let mut sessions = Fields::default();
    let mut pruned = Vec::new();
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
            pruned.push((session.left_at_ms, key));
            continue;
        }
        let mut to = Fields::default();
        to.put(s::USER, session.user.as_str());
        let role = serde_json::to_value(session.role)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        to.put(s::ROLE, role);
        to.put(s::REGION, session.region.as_str());
        to.put(s::JOINED_AT, ScalarValue::Uint(session.joined_at_ms));
        if let Some(hash) = &session.resume_token_hash {
            to.put(s::RESUME_HASH, hash.as_str());
        }
        to.put(s::OWNER, s::encode_owner(&session.owner));
        if let Some(state) = state_winner(at, &from) {
            to.put(s::STATE, state);
        }
        let mut tracks = Fields::default();
        if let Some(old_tracks) = map_obj(at, &from, s::TRACKS) {
            for key in at.keys(&old_tracks) {
                tracks.copy_removable::<Track>(at, &old_tracks, &key, removals, keep_after);
            }
        }
        to.map(s::TRACKS, tracks);
        sessions.map(&key, to);
    }
    root.map(s::SESSIONS, sessions);
    if format >= 4 {
        // Oldest leave first, so the bound forgets the oldest prunes.
        pruned.sort();
        let pruned: Vec<SessionId> = pruned
            .into_iter()
            .filter_map(|(_, key)| SessionId::parse(key).ok())
            .collect();
        let list = departed::extended(&departed::remembered(at), &pruned);
        if !list.is_empty() {
            root.put(s::DEPARTED, ScalarValue::Bytes(list));
        }
    }
    let mut counters = Fields::default();
    let read = read::counters(at, &objs.counters);
    for (key, value) in [
        (s::JOINS, read.joins),
        (s::LEAVES, read.leaves),
        (s::OWNER_CHANGES, read.owner_changes),
    ] {
        counters.put(key, ScalarValue::counter(value));
    }
    root.map(s::COUNTERS, counters);
    Ok(root)
}

/// The wall time (ms) of the newest request for `generation` at the cut:
/// the one the cut was made at (`RoomDoc::compaction_request`).
fn request_wall_ms(at: &Automerge, objs: &RootObjs, generation: u64) -> Option<u64> {
    read::all_strings(at, &objs.meta, s::COMPACT)
        .iter()
        .filter_map(|text| s::decode_stamped::<Request>(text))
        .filter(|(_, request)| request.generation == generation)
        .map(|(stamp, _)| stamp.wall_ms)
        .max()
}

/// Whether `change` holds a plain automerge delete (no stamp): one that
/// cannot be decoded counts as one.
pub(super) fn plain_delete(change: &Change) -> bool {
    // A genesis or a base (no dependencies) writes puts only: the largest
    // changes, not decoded for nothing.
    if change.deps().is_empty() {
        return false;
    }
    std::panic::catch_unwind(|| change.decode()).map_or(true, |expanded| {
        expanded
            .operations
            .iter()
            .any(|op| matches!(op.action, OpType::Delete))
    })
}

/// The horizon a base recorded (`schema::HORIZON`): `None` for a room
/// never compacted, or compacted before format 5.
pub fn horizon_of<R: ReadDoc>(doc: &R) -> Option<u64> {
    doc.get(ROOT, s::HORIZON)
        .ok()
        .flatten()
        .and_then(|(value, _)| value.as_u64())
}

/// The keys of one map of the base, in the order format 1 writes them.
#[derive(Default)]
struct Fields(Vec<(String, Field)>);

enum Field {
    Scalar(ScalarValue),
    Map(Fields),
}

impl Fields {
    fn put(&mut self, key: &str, value: impl Into<ScalarValue>) {
        self.0.push((key.to_owned(), Field::Scalar(value.into())));
    }

    fn map(&mut self, key: &str, fields: Fields) {
        self.0.push((key.to_owned(), Field::Map(fields)));
    }

    /// Format 1: a put per value, depth first, in order.
    fn put_each(&self, tx: &mut Transaction<'_>, obj: &ObjId) -> Result<(), Error> {
        for (key, field) in &self.0 {
            match field {
                Field::Scalar(value) => tx.put(obj, key.as_str(), value.clone())?,
                Field::Map(fields) => {
                    let child = tx.put_object(obj, key.as_str(), ObjType::Map)?;
                    fields.put_each(tx, &child)?;
                }
            }
        }
        Ok(())
    }

    /// Format 2: the map for one bulk insertion.
    fn hydrated(&self) -> hydrate::Map {
        let map: HashMap<String, hydrate::Value> = self
            .0
            .iter()
            .map(|(key, field)| {
                let value = match field {
                    Field::Scalar(v) => hydrate::Value::Scalar(v.clone()),
                    Field::Map(fields) => hydrate::Value::Map(fields.hydrated()),
                };
                (key.clone(), value)
            })
            .collect();
        hydrate::Map::from(map)
    }

    /// Copies the winning stamped value of `key` (last writer by stamp
    /// among the values that parse as `T`, as the reading picks it), stamp
    /// included.
    fn copy<T: DeserializeOwned>(&mut self, at: &Automerge, from: &ObjId, key: &str) {
        let winner = read::all_strings(at, from, key)
            .into_iter()
            .filter_map(|text| s::decode_stamped::<T>(&text).map(|(stamp, _)| (stamp, text)))
            .max_by_key(|(stamp, _)| *stamp);
        if let Some((_, text)) = winner {
            self.put(key, text);
        }
    }
}

impl Fields {
    /// Copies a removable field's winner (`read::removable`), unless it is
    /// a removal: a removed key is left out of the base. A tail value
    /// written without having seen the removal is carried against the
    /// cut's removals (`carry.rs`), so leaving them out loses nothing.
    /// From format 5 a removal made after `keep_after` (ms) is kept: an old
    /// document's value merged later must still lose to it
    /// (`room::old_import`).
    fn copy_removable<T: DeserializeOwned>(
        &mut self,
        at: &Automerge,
        from: &ObjId,
        key: &str,
        removals: bool,
        keep_after: Option<u64>,
    ) {
        if !removals {
            return self.copy::<T>(at, from, key);
        }
        let winner = read::all_strings(at, from, key)
            .into_iter()
            .filter_map(|text| {
                s::decode_stamped::<Option<T>>(&text).map(|(stamp, v)| (stamp, v.is_some(), text))
            })
            .max_by_key(|(stamp, _, _)| *stamp);
        match winner {
            Some((_, true, text)) => self.put(key, text),
            Some((stamp, false, text)) if keep_after.is_some_and(|h| stamp.wall_ms > h) => {
                self.put(key, text)
            }
            _ => {}
        }
    }
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
