//! Validation of changes written outside this replica's own code: a peer's
//! push, a catch-up response, a snapshot, or an automerge document imported
//! from a client in any language.
//!
//! automerge accepts any well-formed change, and reads of a room skip what
//! they cannot parse. A change that replaces a genesis map, deletes a
//! session, bumps `schema` or writes text objects where the schema has
//! scalars would therefore apply, hide acknowledged writes, or make the room
//! unreadable. Every such change is refused *before* it is applied.
//!
//! The verdict must be the same on every replica, or honest replicas would
//! diverge. It is a pure function of the change and of where the objects it
//! writes to were created (each object's creating op is in the change's
//! causal past, so every replica that can apply it knows that place). It
//! never depends on the current values, which concurrent changes may differ
//! on.

use std::collections::HashMap;
use std::rc::Rc;

use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::{ActorId, Automerge, Change, ChangeHash, ObjType, Prop, ReadDoc, ScalarValue};
use serde::de::DeserializeOwned;

use super::schema as s;
use crate::ids::{validate_id, RegionId, RoomId, SessionId, TenantId, TrackId, UserId};
use crate::limits::{ATTR_VALUE_BYTES_MAX, EPOCH_MAX, PARTICIPANTS_PER_ROOM_MAX};
use crate::model::{Permission, Role, SessionState, Track};

/// Why a change was refused: the schema path it wrote to and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

fn refuse(path: impl Into<String>, reason: impl Into<String>) -> Refusal {
    Refusal {
        path: path.into(),
        reason: reason.into(),
    }
}

/// Where an object sits in the room's layout (`docs/data-model.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Root,
    Meta,
    Config,
    Attrs,
    Permissions,
    Sessions,
    Session(Rc<str>),
    Tracks(Rc<str>),
    Counters,
}

impl Place {
    fn path(&self) -> String {
        match self {
            Place::Root => String::new(),
            Place::Meta => s::META.into(),
            Place::Config => s::CONFIG.into(),
            Place::Attrs => format!("{}/{}", s::CONFIG, s::ATTRS),
            Place::Permissions => s::PERMISSIONS.into(),
            Place::Sessions => s::SESSIONS.into(),
            Place::Session(id) => format!("{}/{id}", s::SESSIONS),
            Place::Tracks(id) => format!("{}/{id}/{}", s::SESSIONS, s::TRACKS),
            Place::Counters => s::COUNTERS.into(),
        }
    }

    /// The map at `key` inside this one, if the layout has one there.
    fn child(&self, key: &str) -> Option<Place> {
        Some(match (self, key) {
            (Place::Root, s::META) => Place::Meta,
            (Place::Root, s::CONFIG) => Place::Config,
            (Place::Config, s::ATTRS) => Place::Attrs,
            (Place::Root, s::PERMISSIONS) => Place::Permissions,
            (Place::Root, s::SESSIONS) => Place::Sessions,
            (Place::Root, s::COUNTERS) => Place::Counters,
            (Place::Sessions, id) => Place::Session(Rc::from(id)),
            (Place::Session(id), s::TRACKS) => Place::Tracks(id.clone()),
            _ => return None,
        })
    }

    fn of_path(path: &[String]) -> Option<Place> {
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        Some(match parts.as_slice() {
            [] => Place::Root,
            [s::META] => Place::Meta,
            [s::CONFIG] => Place::Config,
            [s::CONFIG, s::ATTRS] => Place::Attrs,
            [s::PERMISSIONS] => Place::Permissions,
            [s::SESSIONS] => Place::Sessions,
            [s::COUNTERS] => Place::Counters,
            [s::SESSIONS, id] => Place::Session(Rc::from(*id)),
            [s::SESSIONS, id, s::TRACKS] => Place::Tracks(Rc::from(*id)),
            _ => return None,
        })
    }
}

/// Checks a batch of changes, in dependency order, against one room.
/// Objects created by changes earlier in the batch (not yet applied to the
/// document) are remembered, so a batch is checked as a whole before any
/// of it is applied.
pub struct Validator<'a> {
    doc: &'a Automerge,
    room: &'a RoomId,
    /// The genesis change's hash; `None` when no change of the batch is
    /// by the genesis actor (a change of another actor cannot have it).
    genesis: Option<ChangeHash>,
    genesis_actor: ActorId,
    places: HashMap<OpId, Option<Place>>,
    /// `max_op` of the changes accepted so far in this batch (their
    /// dependants' Lamport check needs it before they are applied).
    max_ops: HashMap<ChangeHash, u64>,
    /// The document, or a change accepted earlier in this batch, already
    /// starts a history (a genesis or a base): no other root may follow.
    rooted: bool,
    /// The newest HLC stamp (wall ms) each accepted change other than a
    /// base puts, read from the decoding validation needs anyway: the
    /// replication lag metric's samples (`Latencies::observe_lag`).
    pub stamps: HashMap<ChangeHash, u64>,
    /// Each accepted change's decoding, kept while `keep_decoded`: the
    /// touched parts (`touched::by_changes`) read it instead of decoding
    /// the change again.
    pub decoded: HashMap<ChangeHash, automerge::ExpandedChange>,
    pub keep_decoded: bool,
}

impl<'a> Validator<'a> {
    pub fn new(
        doc: &'a Automerge,
        room: &'a RoomId,
        genesis_actor: ActorId,
        genesis: Option<ChangeHash>,
    ) -> Self {
        Self {
            doc,
            room,
            genesis,
            genesis_actor,
            places: HashMap::new(),
            max_ops: HashMap::new(),
            rooted: !doc.get_heads().is_empty(),
            stamps: HashMap::new(),
            decoded: HashMap::new(),
            keep_decoded: false,
        }
    }

    /// Accepts `change` or says why not. An accepted change's new objects
    /// are remembered for the changes after it.
    pub fn check(&mut self, change: &Change) -> Result<(), Refusal> {
        if change.actor_id() == &self.genesis_actor {
            // The genesis actor writes exactly one change, identical on
            // every replica; anything else under its name is a forgery.
            let genesis = self.genesis;
            return if genesis.is_none() {
                // The caller gives the hash whenever the batch holds a
                // change of this actor.
                Err(refuse("", "the genesis hash was not computed"))
            } else if Some(change.hash()) == genesis && self.rooted {
                // The history already starts (at a compacted base: a
                // genesis held here is skipped before validation), and the
                // genesis belongs to a history it replaced.
                Err(refuse("", "the genesis of a history compacted away"))
            } else if Some(change.hash()) == genesis {
                self.rooted = true;
                self.record_genesis(change);
                self.max_ops.insert(change.hash(), change.max_op());
                Ok(())
            } else {
                Err(refuse("", format!("not the genesis of room {}", self.room)))
            };
        }
        self.check_counters(change)?;
        // automerge's own decoder validated the change's columns; its
        // expansion still has internal assertions, and a library must not
        // take the media node down with it: a panic here is a refusal.
        let expanded = std::panic::catch_unwind(|| change.decode())
            .map_err(|_| refuse("", "the change cannot be decoded"))?;
        let base = is_base(self.room, change, &expanded);
        if base && self.rooted {
            // A replica holding the room compacts it itself (and checks the
            // base it computes against this one): a base only starts an
            // empty document, and only one.
            return Err(refuse("", "a compacted base for a room already held"));
        }
        let mut created = Vec::new();
        match self.check_ops(&expanded, &mut created, base) {
            Ok(()) => {
                self.max_ops.insert(change.hash(), change.max_op());
                self.rooted |= base;
                // A compacted base carries stamps as old as the room's
                // history: no measure of how late this replica heard of a
                // write.
                if let Some(stamp) = (!base).then(|| newest_stamp(&expanded)).flatten() {
                    self.stamps.insert(change.hash(), stamp.wall_ms);
                }
                if self.keep_decoded {
                    self.decoded.insert(change.hash(), expanded);
                }
                Ok(())
            }
            Err(refusal) => {
                // What a refused change created does not exist for the
                // changes after it (they are refused as its dependants
                // anyway).
                for id in created {
                    self.places.remove(&id);
                }
                Err(refusal)
            }
        }
    }

    fn check_ops(
        &mut self,
        change: &automerge::ExpandedChange,
        created: &mut Vec<OpId>,
        base: bool,
    ) -> Result<(), Refusal> {
        for (index, op) in change.operations.iter().enumerate() {
            let counter = change
                .start_op
                .get()
                .checked_add(index as u64)
                .ok_or_else(|| refuse("", "op counter overflows"))?;
            let place = self.place_of(&op.obj)?;
            let key = match &op.key {
                Key::Map(key) if !op.insert => key.as_str(),
                _ => {
                    return Err(refuse(
                        place.path(),
                        "list and text positions are not part of a room",
                    ))
                }
            };
            let verdict = if base {
                check_base_op(self.room, &place, key, &op.action, op.pred.is_empty())
            } else {
                check_op(&place, key, &op.action, op.pred.is_empty())
            };
            // The path is spelled out only for a refusal: this runs per op.
            let path = || {
                format!("{}/{key}", place.path())
                    .trim_start_matches('/')
                    .to_owned()
            };
            let joins = matches!(
                (&place, &op.action),
                (Place::Sessions, OpType::Make(ObjType::Map))
            );
            if joins && !base && remembers_pruned(self.doc, key) {
                // A session id is never reused (as a local join refuses it),
                // whoever writes the change.
                return Err(refuse(
                    path(),
                    "the session left the room and was pruned: its id is not reused",
                ));
            }
            if let Some(new) = verdict.map_err(|reason| refuse(path(), reason))? {
                // Later ops of this change may write into the new map.
                let id = OpId::new(counter, &change.actor_id);
                self.places.insert(id.clone(), Some(new));
                created.push(id);
            }
        }
        Ok(())
    }

    /// automerge's Lamport rule: a change's first op counter is one more
    /// than the highest of its dependencies (every automerge writes so),
    /// and its ops fit automerge's 32-bit counters. A change past either
    /// would apply, then make every later local write panic or collide.
    fn check_counters(&self, change: &Change) -> Result<(), Refusal> {
        let mut highest = 0;
        for dep in change.deps() {
            let max_op = match self.max_ops.get(dep) {
                Some(max_op) => *max_op,
                None => match self.doc.get_change_meta_by_hash(dep) {
                    Some(meta) => meta.max_op,
                    // Not here: the change waits for it (never reached).
                    None => return Err(refuse("", "a dependency is missing")),
                },
            };
            highest = highest.max(max_op);
        }
        let start = change.start_op().get();
        if highest.checked_add(1) != Some(start) {
            return Err(refuse(
                "",
                format!("its first op is {start}, not one past its dependencies' {highest}"),
            ));
        }
        if change.max_op() > u64::from(u32::MAX) {
            return Err(refuse("", "its op counters overflow 32 bits"));
        }
        Ok(())
    }

    /// Notes the maps the genesis change creates, for the changes after it
    /// in the same batch (the genesis is not in the document yet).
    fn record_genesis(&mut self, change: &Change) {
        let Ok(expanded) = std::panic::catch_unwind(|| change.decode()) else {
            return;
        };
        for (index, op) in expanded.operations.iter().enumerate() {
            let (OpType::Make(ObjType::Map), Key::Map(key)) = (&op.action, &op.key) else {
                continue;
            };
            let Ok(parent) = self.place_of(&op.obj) else {
                continue;
            };
            let Some(counter) = expanded.start_op.get().checked_add(index as u64) else {
                continue;
            };
            let id = OpId::new(counter, &expanded.actor_id);
            self.places.insert(id, parent.child(key));
        }
    }

    /// The place of an object: from this batch, else from the document.
    fn place_of(&mut self, obj: &ObjectId) -> Result<Place, Refusal> {
        let id = match obj {
            ObjectId::Root => return Ok(Place::Root),
            ObjectId::Id(id) => id,
        };
        if let Some(place) = self.places.get(id) {
            return place
                .clone()
                .ok_or_else(|| refuse("", "writes to an object outside the room's layout"));
        }
        // `parents` unwraps inside automerge; an object that passed
        // `import` exists, but a panic here must still be a refusal.
        let place = super::import::unless_panic("walk", || self.find_in_doc(id))
            .ok()
            .flatten();
        self.places.insert(id.clone(), place.clone());
        place.ok_or_else(|| refuse("", "writes to an object outside the room's layout"))
    }

    fn find_in_doc(&self, id: &OpId) -> Option<Place> {
        let text = format!("{}@{}", id.counter(), id.actor());
        let (exid, typ) = self.doc.import(&text).ok()?;
        if typ != ObjType::Map {
            return None;
        }
        let mut path = Vec::new();
        for parent in self.doc.parents(&exid).ok()? {
            match parent.prop {
                Prop::Map(key) => path.push(key),
                Prop::Seq(_) => return None,
            }
        }
        path.reverse();
        Place::of_path(&path)
    }
}

/// Whether `change` is the base of a compacted generation of `room`: no
/// dependencies, and written by the actor derived from the room and the
/// request hash it names at the root (`room::compact`).
pub fn is_base(room: &RoomId, change: &Change, expanded: &automerge::ExpandedChange) -> bool {
    if !change.deps().is_empty() || change.seq() != 1 {
        return false;
    }
    let cut = expanded
        .operations
        .iter()
        .find_map(|op| match (&op.obj, &op.key, &op.action) {
            (ObjectId::Root, Key::Map(key), OpType::Put(ScalarValue::Str(text)))
                if key == s::CUT =>
            {
                text.parse::<ChangeHash>().ok()
            }
            _ => None,
        });
    cut.is_some_and(|cut| change.actor_id() == &s::base_actor(room, &cut))
}

/// One op of a base: the skeleton a genesis writes, with the room's values
/// and counter totals in it; everything inside the maps obeys the usual
/// rules.
fn check_base_op(
    room: &RoomId,
    place: &Place,
    key: &str,
    action: &OpType,
    overwrites_nothing: bool,
) -> Result<Option<Place>, String> {
    match (place, key, action) {
        (Place::Root, s::SCHEMA, OpType::Put(ScalarValue::Uint(crate::model::SCHEMA_VERSION))) => {
            Ok(None)
        }
        (Place::Root, s::GENERATION, OpType::Put(ScalarValue::Uint(g)))
            if (1..=crate::limits::GENERATION_MAX).contains(g) =>
        {
            Ok(None)
        }
        (Place::Root, s::ROOM_ID, OpType::Put(ScalarValue::Str(text)))
            if text.as_str() == room.as_str() =>
        {
            Ok(None)
        }
        (Place::Root, s::CUT, OpType::Put(ScalarValue::Str(_))) => Ok(None),
        (Place::Root, s::HORIZON, OpType::Put(ScalarValue::Uint(_))) => Ok(None),
        (Place::Root, s::DEPARTED, OpType::Put(ScalarValue::Bytes(list)))
            if super::departed::is_well_formed(list) =>
        {
            Ok(None)
        }
        (
            Place::Root,
            s::META | s::CONFIG | s::PERMISSIONS | s::SESSIONS | s::COUNTERS,
            OpType::Make(ObjType::Map),
        )
        | (Place::Config, s::ATTRS, OpType::Make(ObjType::Map))
            if overwrites_nothing =>
        {
            Ok(place.child(key))
        }
        (Place::Root, _, _) => Err(why("not part of a base's skeleton")),
        (Place::Counters, _, OpType::Put(ScalarValue::Counter(c)))
            if s::COUNTER_KEYS.contains(&key) && i64::from(c) >= 0 =>
        {
            Ok(None)
        }
        _ => check_op(place, key, action, overwrites_nothing),
    }
}

/// One op's verdict. `Some(place)` when it creates a map at `place`.
fn check_op(
    place: &Place,
    key: &str,
    action: &OpType,
    overwrites_nothing: bool,
) -> Result<Option<Place>, String> {
    let put = |check: fn(&str) -> bool, what: &str| match action {
        OpType::Put(ScalarValue::Str(text)) if check(text) => Ok(None),
        OpType::Put(ScalarValue::Str(_)) => Err(why(format!("not {what}"))),
        OpType::Make(ObjType::Text) => {
            Err(why("a text object where the schema has a scalar string \
             (JavaScript: write an ImmutableString)"))
        }
        OpType::Delete => Err(why("may not be deleted")),
        _ => Err(why(format!("must be a string: {what}"))),
    };
    let removable = |check: fn(&str) -> bool, what: &str| match action {
        OpType::Delete => Ok(None),
        _ => put(check, what),
    };
    match place {
        Place::Root => Err(why(
            "the root and its maps are written only by the room's genesis change",
        )),
        Place::Meta => match key {
            s::TENANT => put(stamped::<TenantId>, "a stamped tenant id"),
            s::CREATED_AT | s::ENDED => put(stamped::<u64>, "a stamped time"),
            s::COMPACT => put(
                stamped::<crate::room::compact::Request>,
                "a stamped compaction request",
            ),
            _ => Err(why("not a field of meta")),
        },
        Place::Config => match key {
            s::MAX_PARTICIPANTS => put(participants, "a stamped participant limit"),
            s::PREFERRED_REGION => put(stamped::<Option<RegionId>>, "a stamped region"),
            s::RECORDING => put(stamped::<bool>, "a stamped boolean"),
            _ => Err(why("not a field of config")),
        },
        Place::Attrs => {
            if validate_id("attribute", key).is_err() {
                return Err(why("not a valid attribute name"));
            }
            removable(attribute, "a stamped attribute value or removal")
        }
        Place::Permissions => {
            if UserId::parse(key).is_err() {
                return Err(why("not a valid user id"));
            }
            removable(
                stamped::<Option<Permission>>,
                "a stamped permission or removal",
            )
        }
        Place::Sessions => {
            if SessionId::parse(key).is_err() {
                return Err(why("not a valid session id"));
            }
            new_map(action, overwrites_nothing, Place::Session(Rc::from(key)))
        }
        Place::Session(id) => match key {
            s::USER => put(parses::<UserId>, "a user id"),
            s::ROLE => put(role, "a role"),
            s::REGION => put(parses::<RegionId>, "a region"),
            s::RESUME_HASH => put(token_hash, "a resume token hash (64 hex digits)"),
            s::OWNER => put(owner, "an owner \"epoch:node\" within the epoch limit"),
            s::STATE => put(stamped::<SessionState>, "a stamped session state"),
            s::JOINED_AT => match action {
                OpType::Put(ScalarValue::Uint(_)) => Ok(None),
                OpType::Put(ScalarValue::Int(ms)) if *ms >= 0 => Ok(None),
                _ => Err(why("must be a non-negative integer (ms)")),
            },
            s::TRACKS => new_map(action, overwrites_nothing, Place::Tracks(id.clone())),
            _ => Err(why("not a field of a session")),
        },
        Place::Tracks(_) => {
            if TrackId::parse(key).is_err() {
                return Err(why("not a valid track id"));
            }
            removable(stamped::<Option<Track>>, "a stamped track or removal")
        }
        Place::Counters => match (s::COUNTER_KEYS.contains(&key), action) {
            (true, OpType::Increment(1)) => Ok(None),
            _ => Err(why("counters only count up, by one")),
        },
    }
}

/// A map created where the layout has one, overwriting nothing: a session
/// or a tracks map exists once (replacing it would hide what it holds).
fn new_map(
    action: &OpType,
    overwrites_nothing: bool,
    place: Place,
) -> Result<Option<Place>, String> {
    match action {
        OpType::Make(ObjType::Map) if overwrites_nothing => Ok(Some(place)),
        OpType::Make(ObjType::Map) => Err(why("may not be replaced")),
        OpType::Delete => Err(why("may not be deleted")),
        _ => Err(why("must be a map")),
    }
}

/// Whether the room remembers `key` as a pruned session (`departed.rs`).
fn remembers_pruned(doc: &Automerge, key: &str) -> bool {
    crate::ids::SessionId::parse(key).is_ok_and(|id| super::departed::remembers(doc, &id))
}

fn why(reason: impl Into<String>) -> String {
    reason.into()
}

pub(super) fn stamped<T: DeserializeOwned>(text: &str) -> bool {
    s::decode_stamped::<T>(text).is_some()
}

fn parses<T: std::str::FromStr>(text: &str) -> bool {
    text.parse::<T>().is_ok()
}

fn participants(text: &str) -> bool {
    s::decode_stamped::<u32>(text)
        .is_some_and(|(_, n)| (1..=PARTICIPANTS_PER_ROOM_MAX).contains(&n))
}

/// A stamped attribute value within the size limit, or a removal.
fn attribute(text: &str) -> bool {
    s::decode_stamped::<Option<String>>(text)
        .is_some_and(|(_, v)| v.is_none_or(|v| v.len() <= ATTR_VALUE_BYTES_MAX))
}

fn role(text: &str) -> bool {
    serde_json::from_value::<Role>(serde_json::Value::String(text.to_owned())).is_ok()
}

fn token_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn owner(text: &str) -> bool {
    s::decode_owner(text).is_some_and(|o| o.epoch >= 1 && o.epoch <= EPOCH_MAX)
}

/// The newest HLC stamp among a change's stamped string values (every
/// write of a room stamps the values it puts; a genesis or a removal-only
/// change has none).
fn newest_stamp(change: &automerge::ExpandedChange) -> Option<crate::hlc::Timestamp> {
    change
        .operations
        .iter()
        .filter_map(|op| match &op.action {
            OpType::Put(ScalarValue::Str(text)) => s::stamp_of(text),
            _ => None,
        })
        .max()
}
