//! Field names and value encodings of a room document (schema version 1).
//! `docs/data-model.md` documents the same layout for readers in other
//! languages; keep the two in step.

use automerge::ActorId;
use serde::{de::DeserializeOwned, Serialize};

use crate::hlc::{Timestamp, TIMESTAMP_TEXT_LEN};
use crate::ids::{NodeId, RoomId};
use crate::model::Owner;

// Root keys, all created in the genesis change.
pub const SCHEMA: &str = "schema";
pub const ROOM_ID: &str = "room_id";
pub const META: &str = "meta";
pub const CONFIG: &str = "config";
pub const ATTRS: &str = "attrs";
pub const PERMISSIONS: &str = "permissions";
pub const SESSIONS: &str = "sessions";
pub const COUNTERS: &str = "counters";
/// Written only by a compacted generation's base change: its number, and
/// the hash (hex) of the request it was cut at.
pub const GENERATION: &str = "generation";
pub const CUT: &str = "cut";
/// Written only by a base (compaction format 4 on): bytes, the digests of
/// the sessions the room's compactions pruned (`room::departed`).
pub const DEPARTED: &str = "departed";
/// Written only by a base (compaction format 5 on): a wall time (ms) at
/// or before which the room's compactions may have forgotten a leave (a
/// pruned session) or a removal; none after it (`room::old_import`).
pub const HORIZON: &str = "horizon";

// meta.*
pub const TENANT: &str = "tenant";
pub const CREATED_AT: &str = "created_at";
pub const ENDED: &str = "ended";
/// A stamped compaction request (`room::compact::Request`).
pub const COMPACT: &str = "compact";

// config.*
pub const MAX_PARTICIPANTS: &str = "max_participants";
pub const PREFERRED_REGION: &str = "preferred_region";
pub const RECORDING: &str = "recording";

// sessions.<id>.*
pub const USER: &str = "user";
pub const ROLE: &str = "role";
pub const REGION: &str = "region";
pub const JOINED_AT: &str = "joined_at";
pub const RESUME_HASH: &str = "resume_hash";
pub const OWNER: &str = "owner";
pub const STATE: &str = "state";
pub const TRACKS: &str = "tracks";

// counters.*
pub const JOINS: &str = "joins";
pub const LEAVES: &str = "leaves";
pub const OWNER_CHANGES: &str = "owner_changes";
pub const COUNTER_KEYS: [&str; 3] = [JOINS, LEAVES, OWNER_CHANGES];

/// Separates a stamped value's HLC timestamp from its JSON payload.
const STAMP_SEPARATOR: char = '|';

/// The actor of a room's genesis change, derived from the room id alone so
/// that every replica creating the same room writes the very same change
/// (same hash): the nested maps then exist once, never as concurrent
/// `put_object`s that would hide each other.
pub fn genesis_actor(room: &RoomId) -> ActorId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"chorus-genesis-v1\0");
    hasher.update(room.as_str().as_bytes());
    let digest = hasher.finalize();
    ActorId::from(&digest.as_bytes()[..16])
}

/// The actor of the base change that starts a compacted generation of
/// `room`, derived from the room and the compaction's request alone so that
/// every replica compacting at that request writes the very same change.
pub fn base_actor(room: &RoomId, request: &automerge::ChangeHash) -> ActorId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"chorus-base-v1\0");
    hasher.update(room.as_str().as_bytes());
    hasher.update(b"\0");
    hasher.update(&request.0);
    let digest = hasher.finalize();
    ActorId::from(&digest.as_bytes()[..16])
}

/// The actor of the change that merges an old document's reading onto a
/// room (`room::old_import`), derived from the room's heads and the
/// document's: the same import on the same room writes the same change
/// (same hash), and no two different merges share an actor.
pub fn merge_actor(
    room: &RoomId,
    room_heads: &[automerge::ChangeHash],
    doc_heads: &[automerge::ChangeHash],
) -> ActorId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"chorus-old-import-v1\0");
    hasher.update(room.as_str().as_bytes());
    for heads in [room_heads, doc_heads] {
        let mut sorted = heads.to_vec();
        sorted.sort();
        hasher.update(b"\0");
        for head in sorted {
            hasher.update(&head.0);
        }
    }
    let digest = hasher.finalize();
    ActorId::from(&digest.as_bytes()[..16])
}

/// The HLC stamp of a stamped value, without parsing its JSON.
pub fn stamp_of(text: &str) -> Option<Timestamp> {
    Timestamp::parse(text.get(..TIMESTAMP_TEXT_LEN)?)
}

/// `"<hlc>|<json>"`: a value that merges last-writer-wins by its HLC stamp.
/// The stamp's text form sorts like the stamp, so `max` on the strings'
/// prefixes is the LWW rule.
pub fn encode_stamped<T: Serialize>(stamp: Timestamp, value: &T) -> String {
    // Serializing our own plain types to JSON cannot fail (no maps with
    // non-string keys, no custom Serialize that errors).
    let json = serde_json::to_string(value).expect("model types serialize to JSON");
    format!("{stamp}{STAMP_SEPARATOR}{json}")
}

/// A removal of an attribute, a permission or a track: a stamped `null`,
/// which merges last-writer-wins with the key's values. automerge's own
/// delete removes only the values its writer had seen, so a concurrent
/// value that compaction dropped (it lost by stamp) would come back in the
/// whole history and not in the compacted one; a stamped removal is a
/// value like any other (`docs/data-model.md`, "Removals").
pub fn encode_removed(stamp: Timestamp) -> String {
    format!("{stamp}{STAMP_SEPARATOR}null")
}

/// Whether `text` is a stamped removal: decoded as the readers decode it
/// (JSON `null`, whitespace and all), so that compaction's base, its carry
/// and the readers agree on what a removal is, whoever wrote it.
pub fn is_removed(text: &str) -> bool {
    matches!(
        decode_stamped::<Option<serde::de::IgnoredAny>>(text),
        Some((_, None))
    )
}

/// Decodes a stamped value; `None` for anything malformed (a foreign writer).
pub fn decode_stamped<T: DeserializeOwned>(text: &str) -> Option<(Timestamp, T)> {
    if text.len() <= TIMESTAMP_TEXT_LEN || !text.is_char_boundary(TIMESTAMP_TEXT_LEN) {
        return None;
    }
    let (stamp, rest) = text.split_at(TIMESTAMP_TEXT_LEN);
    let json = rest.strip_prefix(STAMP_SEPARATOR)?;
    Some((Timestamp::parse(stamp)?, serde_json::from_str(json).ok()?))
}

/// `"<epoch>:<node>"`; node ids cannot contain `:`.
pub fn encode_owner(owner: &Owner) -> String {
    format!("{}:{}", owner.epoch, owner.node)
}

pub fn decode_owner(text: &str) -> Option<Owner> {
    let (epoch, node) = text.split_once(':')?;
    Some(Owner {
        epoch: epoch.parse().ok()?,
        node: NodeId::parse(node).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_round_trip_and_garbage() {
        let ts = Timestamp {
            wall_ms: 1,
            logical: 2,
            actor: 3,
        };
        let text = encode_stamped(ts, &"eu-west");
        assert_eq!(
            decode_stamped::<String>(&text),
            Some((ts, "eu-west".to_string()))
        );
        assert_eq!(decode_stamped::<String>("junk"), None);
        assert_eq!(decode_stamped::<u32>(&text), None);
        assert_eq!(decode_stamped::<String>(&"é".repeat(30)), None);
    }

    #[test]
    fn a_removal_is_a_stamped_null() {
        let ts = Timestamp {
            wall_ms: 1,
            logical: 2,
            actor: 3,
        };
        let removed = encode_removed(ts);
        assert!(is_removed(&removed));
        assert_eq!(decode_stamped::<Option<String>>(&removed), Some((ts, None)));
        assert!(!is_removed(&encode_stamped(ts, &"null")));
        assert!(!is_removed("junk|null"));
        // A foreign writer's spacing reads as a removal everywhere.
        assert!(is_removed(&format!("{ts}| null ")));
    }

    #[test]
    fn owner_round_trip_and_garbage() {
        let owner = Owner {
            epoch: 7,
            node: NodeId::parse("sfu-1").expect("valid"),
        };
        assert_eq!(decode_owner(&encode_owner(&owner)), Some(owner));
        assert_eq!(decode_owner("x:sfu"), None);
        assert_eq!(decode_owner("7"), None);
    }

    #[test]
    fn genesis_actor_depends_only_on_the_room() {
        let a = RoomId::parse("r1").expect("valid");
        let b = RoomId::parse("r2").expect("valid");
        assert_eq!(genesis_actor(&a), genesis_actor(&a));
        assert_ne!(genesis_actor(&a), genesis_actor(&b));
    }
}
