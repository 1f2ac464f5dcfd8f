//! The one way automerge bytes from outside this replica are decoded: a
//! document imported by a client (library or HTTP, any language), a room
//! document in a peer's snapshot, and single changes from a peer's push or
//! catch-up response. Each is bounded before automerge inflates it
//! (`inflate`); what the changes then *do* is checked by `validate` when
//! they are applied.

use automerge::{Automerge, Change, ReadDoc, Value, ROOT};

use super::{genesis_hash, inflate, schema};
use crate::error::Error;
use crate::ids::RoomId;
use crate::limits::{DECOMPRESSED_BYTES_MAX, IMPORT_BYTES_MAX};

/// Decodes a room document from outside: bounded, then loaded.
pub fn load_document(bytes: &[u8]) -> Result<Automerge, Error> {
    inflate::check(bytes, DECOMPRESSED_BYTES_MAX)?;
    Ok(unless_panic("load", || Automerge::load(bytes))??)
}

/// Decodes one change from outside: bounded, then parsed.
pub fn parse_change(bytes: Vec<u8>) -> Result<Change, Error> {
    inflate::check(&bytes, DECOMPRESSED_BYTES_MAX)?;
    unless_panic("parse", || Change::from_bytes(bytes))?
        .map_err(|e| Error::Automerge(e.to_string()))
}

/// Decodes the changes of one message from outside. The bound is on all of
/// them together: each parsed change keeps its inflated bytes, so a bound
/// per change would let one 8 MiB frame of small compressed changes hold
/// gigabytes.
pub fn parse_changes(raw: impl IntoIterator<Item = Vec<u8>>) -> Result<Vec<Change>, Error> {
    let mut left = DECOMPRESSED_BYTES_MAX;
    let mut out = Vec::new();
    for bytes in raw {
        let size = inflate::check(&bytes, left)?;
        left -= size.min(left);
        let change = unless_panic("parse", || Change::from_bytes(bytes))?
            .map_err(|e| Error::Automerge(e.to_string()))?;
        out.push(change);
    }
    Ok(out)
}

/// Runs automerge on bytes from outside, turning a panic into an error.
/// automerge 0.12 panics on some malformed inputs instead of returning an
/// error (found by fuzzing: a truncated column in `load`; see
/// `engine/tests/fuzz_regressions.rs`), and a library must not take the
/// media node down with it.
pub fn unless_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| Error::Automerge(format!("automerge could not {what} these bytes")))
}

/// An imported document's room and its changes, all of them (the ones this
/// replica already holds are skipped when applied).
///
/// The document must hold the genesis change of the room it is imported
/// as, or a compacted base of it (`room::compact`): `expected` when the caller names the room (the HTTP route does),
/// else the one room its `room_id` names. Its changes are then validated
/// like a peer's, all or nothing, when applied.
pub fn decode(bytes: &[u8], expected: Option<&RoomId>) -> Result<(RoomId, Vec<Change>), Error> {
    if bytes.len() > IMPORT_BYTES_MAX {
        return Err(Error::ImportTooLarge {
            len: bytes.len(),
            max: IMPORT_BYTES_MAX,
        });
    }
    let doc = load_document(bytes)?;
    let room = match expected {
        Some(room) => {
            if !holds_genesis(&doc, room)? {
                let named = named_rooms(&doc);
                return Err(Error::Invalid {
                    field: "room_id",
                    reason: format!(
                        "the document is not room {room} (it names {}); \
                         import a room's own export, or changes made on it",
                        if named.is_empty() {
                            "no room".to_owned()
                        } else {
                            named.join(", ")
                        }
                    ),
                });
            }
            room.clone()
        }
        None => {
            let mut found = Vec::new();
            for name in named_rooms(&doc) {
                if let Ok(room) = RoomId::parse(name) {
                    if holds_genesis(&doc, &room)? {
                        found.push(room);
                    }
                }
            }
            match found.as_slice() {
                [room] => room.clone(),
                [] => {
                    return Err(Error::Invalid {
                        field: "room_id",
                        reason: "the document holds no room's genesis change".into(),
                    })
                }
                _ => {
                    return Err(Error::Invalid {
                        field: "room_id",
                        reason: "the document holds more than one room".into(),
                    })
                }
            }
        }
    };
    Ok((room, doc.get_changes(&[])))
}

/// Whether `doc` starts where a history of `room` starts: at its genesis,
/// or at a compacted base of it (its `cut` written by the base actor that
/// room and cut derive; the validator checks the base itself).
fn holds_genesis(doc: &Automerge, room: &RoomId) -> Result<bool, Error> {
    let hash = genesis_hash(room)?;
    if doc.get_change_meta_by_hash(&hash).is_some() {
        return Ok(true);
    }
    let based = doc
        .get_all(ROOT, schema::CUT)
        .unwrap_or_default()
        .into_iter()
        .any(|(value, op)| {
            let cut = match value {
                Value::Scalar(s) => s
                    .as_str()
                    .and_then(|t| t.parse::<automerge::ChangeHash>().ok()),
                Value::Object(_) => None,
            };
            let automerge::ObjId::Id(_, actor, _) = op else {
                return false;
            };
            cut.is_some_and(|cut| actor == schema::base_actor(room, &cut))
        });
    Ok(based)
}

/// Every `room_id` string at the root, conflicts included.
fn named_rooms(doc: &Automerge) -> Vec<String> {
    doc.get_all(ROOT, schema::ROOM_ID)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(value, _)| match value {
            Value::Scalar(s) => s.as_str().map(str::to_owned),
            Value::Object(_) => None,
        })
        .collect()
}
