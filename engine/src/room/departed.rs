//! The sessions a compacted room remembers as pruned.
//!
//! A compaction leaves out the sessions that left before its retention
//! horizon, so the room's state follows its live sessions. Without a trace
//! of them, a client resuming such a session, or a late write naming it,
//! would be told the session is unknown, and a join could reuse its id.
//! So the base keeps, at the root key `departed`, one bytes value: an
//! 8-byte digest per pruned session, oldest prune first, at most
//! [`DEPARTED_REMEMBERED_MAX`]. A digest, not the id: ids are the
//! caller's and unbounded in length; a false match costs only a refusal
//! worded "has left" for an id that never joined, about one in 2^64 / 2048.

use std::collections::HashSet;

use automerge::{ReadDoc, ScalarValue, Value, ROOT};

use super::schema as s;
use crate::ids::SessionId;
use crate::limits::DEPARTED_REMEMBERED_MAX;

/// Bytes of one remembered session.
pub const DIGEST_LEN: usize = 8;

/// The digest of `session` as the base stores it.
pub fn digest(session: &SessionId) -> [u8; DIGEST_LEN] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"chorus-departed-v1\0");
    hasher.update(session.as_str().as_bytes());
    let mut out = [0; DIGEST_LEN];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..DIGEST_LEN]);
    out
}

/// The remembered digests of a room as `doc` reads them: empty for a room
/// never compacted, or compacted before format 4. A value of another shape
/// (a foreign writer's) remembers nothing rather than failing a read.
pub fn remembered<R: ReadDoc>(doc: &R) -> Vec<u8> {
    with_remembered(doc, <[u8]>::to_vec)
}

/// `f` on the remembered digests, read in place (a join checks them).
fn with_remembered<R: ReadDoc, T>(doc: &R, f: impl FnOnce(&[u8]) -> T) -> T {
    match doc.get(&ROOT, s::DEPARTED) {
        Ok(Some((Value::Scalar(value), _))) => match value.as_ref() {
            ScalarValue::Bytes(bytes) if is_well_formed(bytes) => f(bytes),
            _ => f(&[]),
        },
        _ => f(&[]),
    }
}

/// Whether `bytes` is a list of digests within the bound.
pub fn is_well_formed(bytes: &[u8]) -> bool {
    bytes.len() % DIGEST_LEN == 0 && bytes.len() <= DEPARTED_REMEMBERED_MAX * DIGEST_LEN
}

/// Whether the room read through `doc` remembers `session` as pruned.
pub fn remembers<R: ReadDoc>(doc: &R, session: &SessionId) -> bool {
    let wanted = digest(session);
    with_remembered(doc, |list| {
        list.chunks_exact(DIGEST_LEN).any(|d| d == wanted)
    })
}

/// The list a new base writes: `before` (the list at the cut) followed by
/// `pruned` (in the order given, which the caller fixes for every
/// replica), without repeats, keeping the newest
/// [`DEPARTED_REMEMBERED_MAX`].
pub fn extended(before: &[u8], pruned: &[SessionId]) -> Vec<u8> {
    let mut list: Vec<[u8; DIGEST_LEN]> = before
        .chunks_exact(DIGEST_LEN)
        .filter_map(|d| d.try_into().ok())
        .collect();
    // A set beside the list: a cut may prune many sessions at once.
    let mut held: HashSet<[u8; DIGEST_LEN]> = list.iter().copied().collect();
    for session in pruned {
        let d = digest(session);
        if held.insert(d) {
            list.push(d);
        }
    }
    let skip = list.len().saturating_sub(DEPARTED_REMEMBERED_MAX);
    list[skip..].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> SessionId {
        SessionId::parse(format!("s-{n}")).expect("a valid id")
    }

    #[test]
    fn keeps_the_newest_prunes_in_order_without_repeats() {
        let first: Vec<SessionId> = (0..3).map(id).collect();
        let list = extended(&[], &first);
        assert_eq!(list.len(), 3 * DIGEST_LEN);
        let again = extended(&list, &[id(1), id(3)]);
        assert_eq!(again.len(), 4 * DIGEST_LEN, "s-1 is not repeated");
        assert_eq!(&again[3 * DIGEST_LEN..], &digest(&id(3)));
        let many: Vec<SessionId> = (0..DEPARTED_REMEMBERED_MAX + 10).map(id).collect();
        let full = extended(&again, &many);
        assert!(is_well_formed(&full));
        assert_eq!(full.len(), DEPARTED_REMEMBERED_MAX * DIGEST_LEN);
        assert_eq!(&full[..DIGEST_LEN], &digest(&id(10)), "the oldest go first");
    }
}
