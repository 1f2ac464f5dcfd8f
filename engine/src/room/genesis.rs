//! The genesis change every replica builds identically for a room, and a
//! memo of it shared by every replica in the process.
//!
//! A replica needs a room's genesis change each time the room arrives from
//! a peer (to tell the genuine genesis from a forgery by its hash), when it
//! creates a room, and to recognise an end proof. It was built by an
//! automerge transaction, about as much work as applying a push; it is now
//! encoded from a template (`from_template`), the transaction kept as the
//! fallback. It is a pure function of the room id, so the memo cannot
//! change any outcome: it spares the work when a room is evicted and
//! loaded again, or when several replicas share one process (the
//! simulator runs up to 200, each receiving every room).

use std::num::NonZeroUsize;
use std::sync::{Mutex, OnceLock, PoisonError};

use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::{ActorId, Automerge, Change, ChangeHash, ExpandedChange, ScalarValue};
use lru::LruCache;

use super::{end_proof, schema, write};
use crate::error::Error;
use crate::ids::RoomId;
use crate::limits::GENESIS_MEMO_ROOMS;

/// Rooms whose genesis change is remembered, most recently used first.
static MEMO: Mutex<Option<LruCache<RoomId, Change>>> = Mutex::new(None);

/// The hash of `room`'s genesis change (the same on every replica).
pub fn genesis_hash(room: &RoomId) -> Result<ChangeHash, Error> {
    Ok(genesis_change(room)?.hash())
}

/// Whether `change` ends `room` by its genesis (`end_proof::is_end_change`).
pub fn is_end_change(room: &RoomId, change: &Change) -> bool {
    genesis_change(room).is_ok_and(|genesis| end_proof::is_end_change(room, &genesis, change))
}

/// The first change of every room, identical on every replica.
pub fn genesis_change(room: &RoomId) -> Result<Change, Error> {
    // A poisoned lock only means another thread panicked while holding
    // it; the memo is still a valid cache of a pure function.
    if let Some(change) = MEMO
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()
        .and_then(|memo| memo.get(room).cloned())
    {
        return Ok(change);
    }
    let change = build(room)?;
    let cap = NonZeroUsize::new(GENESIS_MEMO_ROOMS).unwrap_or(NonZeroUsize::MIN);
    MEMO.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(|| LruCache::new(cap))
        .put(room.clone(), change.clone());
    Ok(change)
}

/// Forgets every remembered genesis change: a benchmark that runs several
/// replicas in one process calls it to time one of them as if it ran
/// alone (building each room's genesis itself, as on its own machine).
pub fn forget_genesis_changes() {
    if let Some(memo) = MEMO.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
        memo.clear();
    }
}

fn build(room: &RoomId) -> Result<Change, Error> {
    match from_template(room) {
        Some(change) => Ok(change),
        None => transact(room),
    }
}

/// A room id the template is built for once.
const TEMPLATE_ROOM: &str = "chorus-genesis-template";

/// The genesis of `TEMPLATE_ROOM`, decoded, and its actor.
struct Template {
    actor: ActorId,
    change: ExpandedChange,
}

static TEMPLATE: OnceLock<Option<Template>> = OnceLock::new();

/// The genesis of `room` encoded from the template's operations, with the
/// room's id and actor in place of the template's: the operations are
/// encoded directly, not inserted into a document first. Every room's
/// genesis differs from another's only by those two, and automerge's
/// encoding of a change is a function of its operations and metadata;
/// `the_template_builds_what_the_transaction_builds` checks it byte for
/// byte for every id length, and the template checks itself once per
/// process (`template`).
fn from_template(room: &RoomId) -> Option<Change> {
    encode(template()?, room)
}

/// The template, once it has encoded the genesis of a short and a
/// longest id exactly as the transaction does. Should another automerge
/// release ever encode the two ways differently, this replica builds every
/// genesis by the transaction, as older builds do, instead of writing
/// genesis changes they would refuse.
fn template() -> Option<&'static Template> {
    TEMPLATE
        .get_or_init(|| {
            let id = RoomId::parse(TEMPLATE_ROOM).ok()?;
            let change = transact(&id).ok()?;
            let change = std::panic::catch_unwind(|| change.decode()).ok()?;
            let template = Template {
                actor: schema::genesis_actor(&id),
                change,
            };
            let longest = "r".repeat(crate::limits::ID_BYTES_MAX);
            for text in ["a", longest.as_str()] {
                let probe = RoomId::parse(text).ok()?;
                let built = transact(&probe).ok()?;
                let encoded = encode(&template, &probe)?;
                if encoded.raw_bytes() != built.raw_bytes() {
                    tracing::warn!(
                        "automerge encodes a change apart from its transaction: \
                         genesis changes are built by transaction"
                    );
                    return None;
                }
            }
            Some(template)
        })
        .as_ref()
}

/// `template`'s genesis re-addressed to `room`. Only the operations' object
/// ids name an actor: the genesis puts each key once (no predecessors)
/// and holds no list (no element ids).
fn encode(template: &Template, room: &RoomId) -> Option<Change> {
    let actor = schema::genesis_actor(room);
    let mut change = template.change.clone();
    change.actor_id = actor.clone();
    change.hash = None;
    for op in &mut change.operations {
        if let ObjectId::Id(id) = &mut op.obj {
            if id.actor() == &template.actor {
                *id = OpId::new(id.counter(), &actor);
            }
        }
        if matches!((&op.obj, &op.key), (ObjectId::Root, Key::Map(key)) if key == schema::ROOM_ID) {
            op.action = OpType::Put(ScalarValue::Str(room.as_str().into()));
        }
    }
    std::panic::catch_unwind(|| Change::from(change)).ok()
}

/// The genesis as a transaction on an empty document writes it.
fn transact(room: &RoomId) -> Result<Change, Error> {
    let mut doc = Automerge::new().with_actor(schema::genesis_actor(room));
    let success = doc
        .transact(|tx| write::genesis(tx, room))
        .map_err(|failure| failure.error)?;
    super::made_change(&doc, success.hash, room, "genesis")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_builds_what_the_transaction_builds() {
        let mut ids: Vec<String> = (0..500).map(|i| format!("room-{i}")).collect();
        // Every length an id may have, and the template's own.
        ids.extend((1..=crate::limits::ID_BYTES_MAX).map(|n| "r".repeat(n)));
        ids.extend(["A.b_C-9", "_", "-", "a.", "Z"].map(String::from));
        ids.push(TEMPLATE_ROOM.to_owned());
        for text in ids {
            let room = RoomId::parse(&text).expect("a valid id");
            let built = transact(&room).expect("built");
            let templated = from_template(&room).expect("templated");
            assert_eq!(templated.hash(), built.hash(), "room {text}");
            assert_eq!(templated.raw_bytes(), built.raw_bytes(), "room {text}");
        }
    }
}
