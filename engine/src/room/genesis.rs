//! The genesis change every replica builds identically for a room, and a
//! memo of it shared by every replica in the process.
//!
//! Building the genesis change is a whole automerge transaction (about as
//! much work as applying a push), and a replica needs it each time a room
//! arrives from a peer (to tell the genuine genesis from a forgery by its
//! hash) and to recognise an end proof. It is a pure function of the room
//! id, so a memo cannot change any outcome: it only spares the rebuild when
//! a room is evicted and loaded again, or when several replicas share one
//! process (the simulator runs up to 200, each receiving every room).

use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};

use automerge::{Automerge, Change, ChangeHash, ReadDoc};
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

fn build(room: &RoomId) -> Result<Change, Error> {
    let mut doc = Automerge::new().with_actor(schema::genesis_actor(room));
    let success = doc
        .transact(|tx| write::genesis(tx, room))
        .map_err(|failure| failure.error)?;
    success
        .hash
        .and_then(|hash| doc.get_change_by_hash(&hash))
        .ok_or_else(|| Error::Corrupt {
            room: room.clone(),
            reason: "genesis made no change".into(),
        })
}
