//! The key layout of the store. Ids never contain `/` (see `ids`), so `/`
//! separates segments unambiguously and prefix scans stay inside one room.
//!
//! | key                              | value                                  |
//! |----------------------------------|----------------------------------------|
//! | `s/<room>`                       | automerge snapshot (`save()`)           |
//! | `c/<room>/<seq u64 BE>`          | incremental chunk: raw change bytes    |
//! | `i/<room>`                       | room summary, JSON (for listing)       |
//! | `o/<node>/<room>/<session>`      | owner epoch, u64 BE (calls by node)    |
//! | `m/<name>`                       | engine metadata                        |

use crate::ids::{NodeId, RoomId, SessionId};

pub const SNAPSHOT: &[u8] = b"s/";
pub const CHUNK: &[u8] = b"c/";
pub const INDEX: &[u8] = b"i/";
pub const OWNER: &[u8] = b"o/";
pub const META: &[u8] = b"m/";

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
