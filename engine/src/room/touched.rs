//! Which parts of a room a set of changes touched, so a hot room refreshes
//! its cached snapshot by re-reading only those parts (a local write's
//! counters are added to, not read: `Touched::counted`).
//!
//! Not from automerge's `diff`: a concurrent value that does not change
//! automerge's visible winner produces no patch, yet the conflict rules
//! (which read *all* values) may pick it. Instead each operation's target
//! object is mapped to the part of the layout it belongs to.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::{Automerge, Change, ChangeHash, ExpandedChange, ReadDoc};

use super::read::{map_obj, session_state, RootObjs};
use super::schema as s;
use super::RoomOp;
use crate::model::SessionState;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Something outside the known layout changed: re-read everything.
    pub everything: bool,
    pub meta: bool,
    pub config: bool,
    pub permissions: bool,
    pub counters: bool,
    /// When `counters` is set, by how much each counter (`COUNTER_KEYS`
    /// order) went up, if known exactly (`None`: read them again). Reading
    /// a counter folds every increment it ever took, so re-reading the
    /// counters after each join cost about as much as the rest of the
    /// refresh. Only a local write knows (`counted_by`). After a peer's
    /// changes the counters are read: in the swarm (seed 439, after a
    /// compaction) twenty peer changes with six increments of `joins`
    /// moved the document's counter by three, cause not established, and
    /// the document is what every replica reads. The price: a cached value
    /// that drifted from the document stays so until the next read of the
    /// counters (debug builds check each addition, `read::refresh`).
    pub counted: Option<[u64; 3]>,
    pub sessions: BTreeSet<String>,
}

impl Touched {
    pub fn everything() -> Self {
        Self {
            everything: true,
            ..Self::default()
        }
    }

    /// The part of `snap` these changes can alter: the room-level fields
    /// and the touched sessions, or everything when the room's meta (its
    /// lifecycle decides every call's index entry) or an unknown part was
    /// touched. Compared before and after a change, it gives the change's
    /// events and index updates at the cost of what it touched, not of
    /// every session the room holds.
    pub fn part(&self, snap: &crate::model::RoomSnapshot) -> crate::model::RoomSnapshot {
        if self.everything || self.meta {
            return snap.clone();
        }
        snap.with_sessions(|id, _| self.sessions.contains(id.as_str()))
    }

    /// What a batch's operations touch together.
    fn of_batch(ops: &[RoomOp]) -> Self {
        let mut t = Self::default();
        for op in ops {
            let one = Self::by_op(op);
            if one.everything {
                return one;
            }
            t.meta |= one.meta;
            t.config |= one.config;
            t.permissions |= one.permissions;
            t.counters |= one.counters;
            t.sessions.extend(one.sessions);
        }
        t
    }

    /// What a local write touched, with its counters' increments.
    pub fn by_write(op: &RoomOp, kinds: &[crate::events::ChangeKind]) -> Self {
        let mut t = match op {
            RoomOp::Create { .. } => Self::everything(),
            _ => Self::by_op(op),
        };
        if t.counters {
            t.counted = Some(counted_by(kinds));
        }
        t
    }

    /// What a local operation touches (it knows what it did).
    pub fn by_op(op: &RoomOp) -> Self {
        let mut t = Self::default();
        let mut session = |id: &crate::ids::SessionId| {
            t.sessions.insert(id.to_string());
        };
        match op {
            RoomOp::Create { .. } => return Self::everything(),
            RoomOp::UpdateConfig { .. } => t.config = true,
            RoomOp::SetPermission { .. } | RoomOp::RemovePermission { .. } => t.permissions = true,
            RoomOp::Join { request } => session(&request.session),
            RoomOp::SetState { session: id, .. }
            | RoomOp::Leave { session: id }
            | RoomOp::Publish { session: id, .. }
            | RoomOp::Unpublish { session: id, .. }
            | RoomOp::SetOwner { session: id, .. } => session(id),
            RoomOp::End => t.meta = true,
            RoomOp::RequestCompaction { .. } => return t,
            RoomOp::Batch { ops } => return Self::of_batch(ops),
        }
        t.counters = true; // joins, leaves and moves bump counters
        t
    }
}

/// Where an object sits in the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Meta,
    Config,
    Permissions,
    Counters,
    Sessions,
    Session(String),
}

/// Object id (as `counter@actor`) → part, for the room-level maps and the
/// live sessions' maps: like the cached reading, it holds what is live, not
/// every session of the retention period. An object it does not hold (a
/// departed session's, or one a local write made) is found through its
/// parents in the document (`resolve`).
#[derive(Debug, Default, Clone)]
pub struct ObjParts {
    parts: BTreeMap<String, Part>,
}

impl ObjParts {
    /// `objs`: the room's maps (`RoomDoc::root_objs`, cached there).
    fn build(doc: &Automerge, objs: &RootObjs) -> Self {
        let mut parts = BTreeMap::new();
        parts.insert(objs.meta.to_string(), Part::Meta);
        parts.insert(objs.config.to_string(), Part::Config);
        parts.insert(objs.attrs.to_string(), Part::Config);
        parts.insert(objs.permissions.to_string(), Part::Permissions);
        parts.insert(objs.counters.to_string(), Part::Counters);
        parts.insert(objs.sessions.to_string(), Part::Sessions);
        for key in doc.keys(&objs.sessions) {
            let Some(session) = map_obj(doc, &objs.sessions, &key) else {
                continue;
            };
            if session_state(doc, &session) == Some(SessionState::Left) {
                continue;
            }
            if let Some(tracks) = map_obj(doc, &session, s::TRACKS) {
                parts.insert(tracks.to_string(), Part::Session(key.clone()));
            }
            parts.insert(session.to_string(), Part::Session(key));
        }
        Self { parts }
    }
}

impl ObjParts {
    /// Forgets the maps of sessions that have left.
    pub fn forget(&mut self, departed: &BTreeSet<String>) {
        if !departed.is_empty() {
            self.parts
                .retain(|_, part| !matches!(part, Part::Session(id) if departed.contains(id)));
        }
    }

    /// The part of an object this map does not hold, from its parents in
    /// `doc` (`None`: not in `doc`, or outside the known layout). A live
    /// session's object is remembered.
    fn resolve(&mut self, doc: &Automerge, objs: &RootObjs, obj: &str) -> Option<Part> {
        let (id, _) = doc.import(obj).ok()?;
        let parents = super::import::unless_panic("parents", || {
            doc.parents(&id).map(|p| p.collect::<Vec<_>>())
        })
        .ok()?
        .ok()?;
        let mut session = None;
        for parent in parents {
            if parent.obj == objs.sessions {
                if let automerge::Prop::Map(key) = parent.prop {
                    session = Some(key);
                }
                break;
            }
        }
        let key = session?;
        let live = map_obj(doc, &objs.sessions, &key)
            .is_some_and(|o| session_state(doc, &o) != Some(SessionState::Left));
        let part = Part::Session(key);
        if live {
            self.parts.insert(obj.to_string(), part.clone());
        }
        Some(part)
    }

    /// Notes the object `op` (the `index`th of its change) creates, if it
    /// is a session's map or its tracks map. Without this every change that
    /// creates a session would rebuild the whole map, one automerge lookup
    /// per session of the room. Validated changes write map keys only, so
    /// an op's id is its change's first op counter plus its index; a wrong
    /// guess is only a missed entry, and the lookup falls back to `resolve`.
    fn learn(
        &mut self,
        change: &automerge::ExpandedChange,
        index: usize,
        op: &automerge::legacy::Op,
        parent: &Part,
    ) {
        use automerge::legacy::{Key, OpId, OpType};
        let (OpType::Make(automerge::ObjType::Map), Key::Map(key)) = (&op.action, &op.key) else {
            return;
        };
        let part = match parent {
            Part::Sessions => Part::Session(key.to_string()),
            Part::Session(id) if key.as_str() == s::TRACKS => Part::Session(id.clone()),
            _ => return,
        };
        let Some(counter) = change.start_op.get().checked_add(index as u64) else {
            return;
        };
        let id = OpId::new(counter, &change.actor_id).to_string();
        // A mapping already known stays: a refused change cannot claim it.
        self.parts.entry(id).or_insert(part);
    }
}

/// What `changes` touch, read before they apply to `doc`: an object one
/// of them creates is known from the creating operation (`learn`). A
/// change's decoding is taken from `decoded` when validation kept it.
pub fn by_changes(
    doc: &Automerge,
    objs: &RootObjs,
    cache: &mut Option<ObjParts>,
    changes: &[Change],
    mut decoded: HashMap<ChangeHash, ExpandedChange>,
) -> Touched {
    let mut out = Touched::default();
    for change in changes {
        let expanded = decoded
            .remove(&change.hash())
            .unwrap_or_else(|| change.decode());
        for (index, op) in expanded.operations.iter().enumerate() {
            let obj = op.obj.to_string();
            if obj == "_root" {
                return Touched::everything();
            }
            let parts = cache.get_or_insert_with(|| ObjParts::build(doc, objs));
            let found = parts.parts.get(&obj).cloned();
            let Some(part) = found.or_else(|| parts.resolve(doc, objs, &obj)) else {
                return Touched::everything();
            };
            parts.learn(&expanded, index, op, &part);
            match part {
                Part::Meta => out.meta = true,
                Part::Config => out.config = true,
                Part::Permissions => out.permissions = true,
                Part::Counters => out.counters = true,
                Part::Sessions => match &op.key {
                    automerge::legacy::Key::Map(key) => {
                        out.sessions.insert(key.to_string());
                    }
                    automerge::legacy::Key::Seq(_) => return Touched::everything(),
                },
                Part::Session(id) => {
                    out.sessions.insert(id);
                }
            }
        }
    }
    out
}

/// By how much a local write's kinds moved the counters: a write adds one
/// to a counter exactly when it reports a join, a leave or a new owner
/// (`session_write`, where each increment says so).
pub fn counted_by(kinds: &[crate::events::ChangeKind]) -> [u64; 3] {
    use crate::events::ChangeKind;
    let mut steps = [0u64; 3];
    for kind in kinds {
        let at = match kind {
            ChangeKind::Joined { .. } => 0,
            ChangeKind::Left { .. } => 1,
            ChangeKind::OwnerChanged { .. } => 2,
            _ => continue,
        };
        steps[at] = steps[at].saturating_add(1);
    }
    steps
}
