//! Whether a change ends a room: the proof a peer gives with a purge
//! (`replica::wire::PurgeProof`). An end change writes a stamped time to
//! `meta.ended` of the room's `meta` map. Before any compaction that map
//! is the genesis change's, whose id every replica derives from the room
//! id alone. A compaction's base writes the room's maps anew, so a
//! compacted room's end change writes to its base's `meta` map, which a
//! replica can only check against a copy of the room at that generation.

use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::{Automerge, Change, ExpandedChange, ObjType, Prop, ReadDoc, ScalarValue};

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

/// Whether `change` ends the room `doc` holds: it writes a stamped `ended`
/// time to the `meta` map `doc` holds, whichever change made that map.
pub fn ends_room_in(doc: &Automerge, room: &RoomId, change: &Change) -> bool {
    ended_targets(room, change).is_some_and(|targets| {
        targets
            .iter()
            .any(|id| super::import::unless_panic("walk", || is_meta_map(doc, id)).unwrap_or(false))
    })
}

/// Whether `id` is the map `doc` holds at root `meta`.
fn is_meta_map(doc: &Automerge, id: &OpId) -> bool {
    let text = format!("{}@{}", id.counter(), id.actor());
    let Ok((exid, ObjType::Map)) = doc.import(&text) else {
        return false;
    };
    let Ok(parents) = doc.parents(&exid) else {
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
