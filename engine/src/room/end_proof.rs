//! Whether a change ends a room: the proof a peer gives with a purge
//! (`replica::wire::PurgeProof`). An end change writes a stamped time to
//! `meta.ended` of the room's `meta` map. Before any compaction that map
//! is the genesis change's, whose id every replica derives from the room
//! id alone. A compaction's base writes the room's maps anew, so a
//! compacted room's end change writes to its base's `meta` map, which a
//! replica can only check against a copy of the room at that generation.

use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::{Automerge, Change, ExpandedChange, ObjId, ObjType, Prop, ReadDoc, ScalarValue};

use super::schema as s;
use super::validate::stamped;
use crate::ids::RoomId;

/// Whether `change` ends `room` by the genesis's `meta` map.
pub fn is_end_change(room: &RoomId, genesis: &Change, change: &Change) -> bool {
    let Some(meta) = genesis_map(genesis, s::META) else {
        return false;
    };
    ended_targets(room, change).is_some_and(|targets| targets.contains(&meta))
}

/// The objects `change` writes a stamped `ended` time to (`None`: it does
/// not decode, or it is the genesis actor's). Cheap: decodes one change.
/// Empty means it can end no room, whatever the room holds, so nothing
/// needs to be loaded to refuse it.
pub fn ended_targets(room: &RoomId, change: &Change) -> Option<Vec<OpId>> {
    let expanded: ExpandedChange = std::panic::catch_unwind(|| change.decode()).ok()?;
    if expanded.actor_id == s::genesis_actor(room) {
        return None;
    }
    let targets = expanded
        .operations
        .iter()
        .filter(|op| {
            matches!(&op.key, Key::Map(key) if key == s::ENDED)
                && matches!(&op.action, OpType::Put(ScalarValue::Str(text)) if stamped::<u64>(text))
        })
        .filter_map(|op| match &op.obj {
            ObjectId::Id(id) => Some(id.clone()),
            ObjectId::Root => None,
        })
        .collect();
    Some(targets)
}

/// What a purge's proof says of a copy of its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndProof {
    /// It writes a stamped `ended` time to the `meta` map this copy holds.
    Ends,
    /// It ends nothing here: it writes no `ended` time, or writes one to a
    /// map this copy holds that is not its `meta` (made up).
    NotEnds,
    /// Every map it writes an `ended` time to is unknown to this copy:
    /// the room's `meta` at another generation (the peers compacted while
    /// this replica was away, then the room ended), or made up. Only other
    /// peers' word can tell (`replica::votes`).
    Unknown,
}

/// Whether `change` ends the room `doc` holds: it writes a stamped `ended`
/// time to the `meta` map `doc` holds, whichever change made that map.
pub fn check_in(doc: &Automerge, room: &RoomId, change: &Change) -> EndProof {
    let Some(targets) = ended_targets(room, change).filter(|t| !t.is_empty()) else {
        return EndProof::NotEnds;
    };
    let mut known = false;
    for id in &targets {
        match super::import::unless_panic("walk", || meta_map_or_unknown(doc, id)) {
            Ok(Some(true)) => return EndProof::Ends,
            Ok(Some(false)) => known = true,
            Ok(None) => {}
            // Refused by the walk: nothing to learn from this change.
            Err(_) => return EndProof::NotEnds,
        }
    }
    if known {
        EndProof::NotEnds
    } else {
        EndProof::Unknown
    }
}

/// Whether `id` is the map `doc` holds at root `meta` (`None`: `doc` holds
/// no object `id`).
fn meta_map_or_unknown(doc: &Automerge, id: &OpId) -> Option<bool> {
    let text = format!("{}@{}", id.counter(), id.actor());
    let (exid, kind) = doc.import(&text).ok()?;
    Some(kind == ObjType::Map && is_meta_map(doc, &exid))
}

/// Whether `exid` is the map `doc` holds at root `meta`.
fn is_meta_map(doc: &Automerge, exid: &ObjId) -> bool {
    let Ok(parents) = doc.parents(exid) else {
        return false;
    };
    let path: Vec<Prop> = parents.map(|p| p.prop).collect();
    matches!(path.as_slice(), [Prop::Map(key)] if key == s::META)
}

/// The id of the map the genesis change creates at root `key`.
fn genesis_map(genesis: &Change, key: &str) -> Option<OpId> {
    let expanded = std::panic::catch_unwind(|| genesis.decode()).ok()?;
    let index = expanded.operations.iter().position(|op| {
        op.obj == ObjectId::Root
            && op.action == OpType::Make(ObjType::Map)
            && matches!(&op.key, Key::Map(k) if k == key)
    })?;
    let counter = expanded.start_op.get().checked_add(index as u64)?;
    Some(OpId::new(counter, &expanded.actor_id))
}
