//! The key layout of the store. Ids never contain `/` (see `ids`), so `/`
//! separates segments unambiguously and prefix scans stay inside one room.
//!
//! | key                              | value                                  |
//! |----------------------------------|----------------------------------------|
//! | `s/<room>`                       | automerge snapshot (`save()`)           |
//! | `c/<room>/<seq u64 BE>`          | incremental chunk: raw change bytes    |
//! | `i/<room>`                       | room summary, JSON (for listing)       |
//! | `o/<node>/<room>/<session>`      | owner epoch, u64 BE (calls by node)    |
//! | `d/<room>`                       | digest-tree item of the room (16 B)     |
//! | `p/<room>`                       | purge marker: purge time ms, u64 BE     |
//! | `l/<hlc: wall BE8 logical BE4 actor BE8>` | change-log entry: room + hashes |
//! | `m/<name>`                       | engine metadata                        |
//! | `j/<hlc: as in l/>`              | incident journal entry, JSON           |

use crate::ids::{NodeId, RoomId, SessionId};

pub const SNAPSHOT: &[u8] = b"s/";
pub const CHUNK: &[u8] = b"c/";
pub const INDEX: &[u8] = b"i/";
pub const OWNER: &[u8] = b"o/";
pub const META: &[u8] = b"m/";
pub const DIGEST: &[u8] = b"d/";
pub const PURGED: &[u8] = b"p/";
pub const LOG: &[u8] = b"l/";
pub const JOURNAL: &[u8] = b"j/";

/// An incident-journal key: ordered like the timestamp.
pub fn journal(stamp: &crate::hlc::Timestamp) -> Vec<u8> {
    stamped(JOURNAL, stamp)
}

pub fn digest(room: &RoomId) -> Vec<u8> {
    join(&[DIGEST, room.as_str().as_bytes()])
}

pub fn purged(room: &RoomId) -> Vec<u8> {
    join(&[PURGED, room.as_str().as_bytes()])
}

/// The room id at the end of a `d/`, `p/`, `i/` or `s/` key.
pub fn room_of(prefix: &[u8], key: &[u8]) -> Option<RoomId> {
    let tail = key.strip_prefix(prefix)?;
    RoomId::parse(std::str::from_utf8(tail).ok()?).ok()
}

/// A change-log key: ordered like the timestamp.
pub fn log(stamp: &crate::hlc::Timestamp) -> Vec<u8> {
    stamped(LOG, stamp)
}

/// `prefix` then the timestamp big-endian, so keys sort like timestamps.
fn stamped(prefix: &[u8], stamp: &crate::hlc::Timestamp) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&stamp.wall_ms.to_be_bytes());
    key.extend_from_slice(&stamp.logical.to_be_bytes());
    key.extend_from_slice(&stamp.actor.to_be_bytes());
    key
}

pub fn log_stamp(key: &[u8]) -> Option<crate::hlc::Timestamp> {
    stamp_of(LOG, key)
}

/// The timestamp of a `prefix`-stamped key (change log, journal).
pub fn stamp_of(prefix: &[u8], key: &[u8]) -> Option<crate::hlc::Timestamp> {
    let tail = key.strip_prefix(prefix)?;
    if tail.len() != 20 {
        return None;
    }
    Some(crate::hlc::Timestamp {
        wall_ms: u64::from_be_bytes(tail[0..8].try_into().ok()?),
        logical: u32::from_be_bytes(tail[8..12].try_into().ok()?),
        actor: u64::from_be_bytes(tail[12..20].try_into().ok()?),
    })
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 1 {
            key.push(b'/');
        }
        key.extend_from_slice(part);
    }
    key
}

pub fn snapshot(room: &RoomId) -> Vec<u8> {
    join(&[SNAPSHOT, room.as_str().as_bytes()])
}

/// Prefix of every chunk of `room`.
pub fn chunks(room: &RoomId) -> Vec<u8> {
    let mut key = join(&[CHUNK, room.as_str().as_bytes()]);
    key.push(b'/');
    key
}

pub fn chunk(room: &RoomId, seq: u64) -> Vec<u8> {
    let mut key = chunks(room);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number at the end of a chunk key.
pub fn chunk_seq(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

pub fn index(room: &RoomId) -> Vec<u8> {
    join(&[INDEX, room.as_str().as_bytes()])
}

/// Prefix of every call owned by `node`.
pub fn owned_by(node: &NodeId) -> Vec<u8> {
    let mut key = join(&[OWNER, node.as_str().as_bytes()]);
    key.push(b'/');
    key
}

pub fn owner(node: &NodeId, room: &RoomId, session: &SessionId) -> Vec<u8> {
    join(&[
        OWNER,
        node.as_str().as_bytes(),
        room.as_str().as_bytes(),
        session.as_str().as_bytes(),
    ])
}

/// Splits an owner key's tail (after [`owned_by`]) into room and session.
pub fn owner_tail(tail: &[u8]) -> Option<(RoomId, SessionId)> {
    let text = std::str::from_utf8(tail).ok()?;
    let (room, session) = text.split_once('/')?;
    Some((RoomId::parse(room).ok()?, SessionId::parse(session).ok()?))
}

pub fn meta(name: &str) -> Vec<u8> {
    join(&[META, name.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let room = RoomId::parse("r1").expect("valid");
        assert_eq!(snapshot(&room), b"s/r1");
        assert_eq!(chunk(&room, 1)[..5], *b"c/r1/");
        assert_eq!(chunk_seq(&chunk(&room, 77)), Some(77));
        let node = NodeId::parse("n").expect("valid");
        let session = SessionId::parse("s").expect("valid");
        let key = owner(&node, &room, &session);
        assert_eq!(key, b"o/n/r1/s");
        assert_eq!(
            owner_tail(&key[owned_by(&node).len()..]),
            Some((room, session))
        );
    }
}
