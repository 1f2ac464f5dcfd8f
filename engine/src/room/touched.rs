//! Which parts of a room a set of changes touched, so a hot room refreshes
//! its cached snapshot by re-reading only those parts.
//!
//! Not from automerge's `diff`: a concurrent value that does not change
//! automerge's visible winner produces no patch, yet the conflict rules
//! (which read *all* values) may pick it. Instead each operation's target
//! object is mapped to the part of the layout it belongs to.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Automerge, Change, ReadDoc};

use super::read::{map_obj, RootObjs};
use super::schema as s;
use super::RoomOp;
use crate::ids::RoomId;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Something outside the known layout changed: re-read everything.
    pub everything: bool,
    pub meta: bool,
    pub config: bool,
    pub permissions: bool,
    pub counters: bool,
    pub sessions: BTreeSet<String>,
}

impl Touched {
    pub fn everything() -> Self {
        Self {
            everything: true,
            ..Self::default()
        }
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

/// Object id (as `counter@actor`) → part. Rebuilt when an unknown object
/// shows up (a session created by the changes just applied).
#[derive(Debug, Default, Clone)]
pub struct ObjParts {
    parts: BTreeMap<String, Part>,
}

impl ObjParts {
    fn build(doc: &Automerge, room: &RoomId) -> Self {
        let mut parts = BTreeMap::new();
        let Ok(objs) = RootObjs::find(doc, room) else {
            return Self { parts };
        };
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
            if let Some(tracks) = map_obj(doc, &session, s::TRACKS) {
                parts.insert(tracks.to_string(), Part::Session(key.clone()));
            }
            parts.insert(session.to_string(), Part::Session(key));
        }
        Self { parts }
    }
}

/// What `changes` (already applied to `doc`) touched.
pub fn by_changes(
    doc: &Automerge,
    room: &RoomId,
    cache: &mut Option<ObjParts>,
    changes: &[Change],
) -> Touched {
    let mut out = Touched::default();
    let mut rebuilt = false;
    for change in changes {
        for op in change.decode().operations {
            let obj = op.obj.to_string();
            if obj == "_root" {
                return Touched::everything();
            }
            let parts = cache.get_or_insert_with(|| ObjParts::build(doc, room));
            let part = match parts.parts.get(&obj) {
                Some(part) => part.clone(),
                None if !rebuilt => {
                    rebuilt = true;
                    let fresh = ObjParts::build(doc, room);
                    let found = fresh.parts.get(&obj).cloned();
                    *parts = fresh;
                    match found {
                        Some(part) => part,
                        None => return Touched::everything(),
                    }
                }
                None => return Touched::everything(),
            };
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
