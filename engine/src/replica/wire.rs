//! Wire protocol v1: one versioned envelope, a compact codec (postcard:
//! varints, no field names), named size limits, and defensive decoding —
//! garbage is an error, never a panic and never a partly-applied message.
//!
//! Frame: `[version u8][postcard(Envelope)]`. The version byte comes first
//! so a future v2 can change everything after it.

use serde::{Deserialize, Serialize};

use crate::hlc::Timestamp;
use crate::ids::{NodeId, RoomId};
use crate::membership::{DrainOrder, HealthReport, DRAIN_ORDERS_MAX, SWIM_PACKET_MAX};
use crate::model::Head;

pub const PROTOCOL_VERSION: u8 = 1;

pub use crate::limits::ANCESTRY_MAX;
pub use crate::limits::HEADS_MAX;
pub use crate::limits::KNOWN_HASHES_MAX;
pub use crate::limits::LEAF_HEADS_MAX;
pub use crate::limits::LEAF_HEADS_ROOMS_MAX;
pub use crate::limits::MESSAGE_BYTES_MAX;
pub use crate::limits::NODES_PER_REQUEST_MAX;
pub use crate::limits::PURGE_PROOF_BYTES_MAX;
pub use crate::limits::PUSH_BYTES_MAX;
pub use crate::limits::ROOMS_PER_MESSAGE_MAX;
pub use crate::limits::SYNC_BATCH_BYTES_MAX;
pub use crate::rooms::digest::Digest;

/// A digest below the root as a round's walk carries it: its first 8 bytes.
/// A false match needs a 2^-64 coincidence between two authenticated
/// replicas' digests, and the 16-byte roots still differ, so it only hides
/// one subtree from one walk; halving these bytes halves the walk's cost.
pub type ShortDigest = [u8; 8];

/// The first 8 bytes of a digest.
pub fn short(digest: &Digest) -> ShortDigest {
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// One change hash on the wire: 32 raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WireHead(pub [u8; 32]);

impl From<Head> for WireHead {
    fn from(h: Head) -> Self {
        WireHead(h.0)
    }
}

impl From<WireHead> for Head {
    fn from(h: WireHead) -> Self {
        Head(h.0)
    }
}

/// One room in a `ChangesReq`: our heads, and hash prefixes of some of
/// their ancestors (the nearest ones, then sparser). When the peer knows
/// none of our heads (both sides wrote), it finds the newest change we share
/// among these and sends only what came after it, not the room's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomHeads {
    pub room: RoomId,
    pub heads: Vec<WireHead>,
    pub ancestry: Vec<[u8; 8]>,
}

/// One room in a `LeafHeadsResp`: its digest item's prefix, and its heads
/// (empty when it has more than `LEAF_HEADS_MAX`, or past the first
/// `LEAF_HEADS_ROOMS_MAX` rooms of the answer: the asker then asks for the
/// room as it would without).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafRoom {
    pub room: RoomId,
    pub digest: ShortDigest,
    pub heads: Vec<WireHead>,
}

/// Messages a build reads beyond those of the first version, one bit each,
/// announced with `Body::Reads`. A replica sends a peer such a message only
/// once the peer announced its bit: an older build cannot decode it.
pub const READS_LEAF_HEADS: u64 = 1;
/// `WatchCheck` and `WatchSeen` (the ring watch). Unlike the leaf heads,
/// sent to a peer that has not told yet what it reads: at 200 replicas a
/// replica rounds with a given peer, and so hears its `Reads`, once in
/// minutes, and a relay is needed within a second. Only a peer known to
/// lack the bit is spared.
pub const READS_WATCH: u64 = 2;
/// `Suspected` and `Refuted` (`membership/refute.rs`): sent, like the
/// watch's, to a peer that has not told yet what it reads.
pub const READS_REFUTE: u64 = 4;
/// What this build reads.
pub const READS: u64 = READS_LEAF_HEADS | READS_WATCH | READS_REFUTE;

/// Raw automerge change bytes for one room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomChanges {
    pub room: RoomId,
    pub changes: Vec<serde_bytes::ByteBuf>,
}

/// A whole room document (automerge `save()` bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomDocument {
    pub room: RoomId,
    pub doc: serde_bytes::ByteBuf,
}

/// A room purged by the sender, with the proof that it ended: the change
/// that wrote its end marker (`meta.ended`). A replica never purges a room
/// on a peer's word alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeProof {
    pub room: RoomId,
    pub end: serde_bytes::ByteBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Messages from another cluster are refused.
    pub cluster: u64,
    /// The sender's HLC when it sent this (feeds the receiver's HLC).
    pub sent_at: Timestamp,
    pub body: Body,
}

/// Every message. `round` ties a response to the request that asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// New changes, gossiped to every peer.
    Push {
        rooms: Vec<RoomChanges>,
    },
    /// Anti-entropy opener: my root digest, and my cursor into your log.
    DigestReq {
        round: u64,
        root: Digest,
        cursor: Option<Timestamp>,
    },
    /// `since_count`: entries in my log after your cursor (capped), if I
    /// still hold the log back to it.
    DigestResp {
        round: u64,
        root: Digest,
        log_head: Timestamp,
        since_count: Option<u64>,
    },
    /// Children of these nodes of level `level` (0 is the root).
    TreeReq {
        round: u64,
        level: u8,
        nodes: Vec<u32>,
    },
    TreeResp {
        round: u64,
        level: u8,
        children: Vec<ShortDigest>,
    },
    /// The rooms (and their digests) in these leaf buckets.
    LeafReq {
        round: u64,
        buckets: Vec<u32>,
    },
    LeafResp {
        round: u64,
        rooms: Vec<(RoomId, ShortDigest)>,
    },
    /// "These are my heads of each room; send what I lack."
    ChangesReq {
        round: u64,
        rooms: Vec<RoomHeads>,
    },
    /// `truncated`: the byte budget cut the answer; ask again.
    ChangesResp {
        round: u64,
        rooms: Vec<RoomChanges>,
        truncated: bool,
    },
    /// Everything in your log after `cursor`, except changes whose hash
    /// starts with one of `known` (the asker already holds them, mostly
    /// from pushes; see `docs/protocol.md`).
    SinceReq {
        round: u64,
        cursor: Timestamp,
        known: Vec<[u8; 8]>,
    },
    SinceResp {
        round: u64,
        rooms: Vec<RoomChanges>,
        next_cursor: Timestamp,
        complete: bool,
    },
    /// Whole documents of rooms ordered after `after`.
    SnapshotReq {
        round: u64,
        after: Option<RoomId>,
    },
    /// `too_large`: rooms over the batch budget, to fetch with `ChangesReq`.
    SnapshotResp {
        round: u64,
        rooms: Vec<RoomDocument>,
        too_large: Vec<RoomId>,
        next: Option<RoomId>,
        log_head: Timestamp,
    },
    /// "I cannot serve that request (e.g. your cursor is past my log's
    /// horizon); choose another path."
    Unavailable {
        round: u64,
    },
    /// These rooms ended and were purged here (each with its end change as
    /// proof); purge yours and refuse their changes.
    Purged {
        rooms: Vec<PurgeProof>,
    },
    /// I hold these rooms as ended (towards purging them everywhere).
    EndAck {
        rooms: Vec<RoomId>,
    },
    /// A SWIM datagram (foca's encoding; see `membership`).
    Swim {
        data: serde_bytes::ByteBuf,
    },
    /// My periodic self-report, with the drain orders I know of.
    Health {
        report: HealthReport,
    },
    /// An operator's drain order, spread at once (reports repeat it).
    Drain {
        order: DrainOrder,
    },
    /// History compaction (`docs/protocol.md`): "I can compact rooms" (the
    /// version gate: an older build never sends this), and the request each
    /// of these rooms will be compacted at, as far as I know. `ask`: answer
    /// with yours (I have not heard from you yet).
    Compaction {
        /// `room::compact::COMPACTION_FORMAT` of the sender.
        format: u32,
        ask: bool,
        requests: Vec<(RoomId, WireHead)>,
    },
    /// "I am stopping on purpose" (`membership::Intent`): a restart (hold
    /// my calls) or a stop (take them now). An older build cannot decode
    /// it and detects the departure as a failure.
    Leaving {
        intent: crate::membership::Intent,
        /// The sender's SWIM incarnation: which instance of it leaves.
        incarnation: u64,
    },
    /// "I heard that you are leaving."
    LeavingAck,
    /// My report, and "answer with yours" (`replica/reports.rs`): to a node
    /// I suspect, or whose report I lack. An older build cannot decode it;
    /// it sends its report to everyone anyway.
    HealthAsk {
        report: HealthReport,
    },
    /// "Besides version 1, I read these messages" (`READS_*` bits), sent
    /// to a peer before the first round with it; `ask`: answer with yours.
    /// An older build cannot decode it and drops it: never told, a replica
    /// sends that peer version-1 messages only.
    Reads {
        reads: u64,
        ask: bool,
    },
    /// `LeafReq`, to be answered with each room's heads too
    /// (`READS_LEAF_HEADS`): the asker skips the rooms it is ahead in.
    LeafHeadsReq {
        round: u64,
        buckets: Vec<u32>,
    },
    LeafHeadsResp {
        round: u64,
        rooms: Vec<LeafRoom>,
    },
    /// "I hear nothing from `target`: ask it, and tell me if it answers"
    /// (the ring watch's indirect check, `membership/watch.rs`). An older
    /// build cannot decode it (`READS_WATCH`): once it told what it reads
    /// it is not asked, and a watcher with no relay that answers goes on
    /// its own silence.
    WatchCheck {
        target: NodeId,
    },
    /// "I heard from `target`", to a watcher that asked.
    WatchSeen {
        target: NodeId,
    },
    /// "I hold you Suspect, as identity `incarnation`, at SWIM incarnation
    /// `swim`": sent with each ask to a suspect, which refutes at once
    /// (`membership/refute.rs`, `READS_REFUTE`).
    Suspected {
        incarnation: u64,
        swim: u16,
    },
    /// "I am alive, as identity `incarnation`, at SWIM incarnation `swim`
    /// or later": the answer to `Suspected`.
    Refuted {
        incarnation: u64,
        swim: u16,
    },
}

/// What the receiver does with a frame that is not a valid v1 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty frame")]
    Empty,
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("protocol version {0} is not supported (this build speaks 1)")]
    Version(u8),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("{trailing} trailing bytes after the message")]
    Trailing { trailing: usize },
    #[error("message names {count} {what}; the limit is {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
}

impl DecodeError {
    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Version(_) => "version",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::Trailing { .. } => "trailing",
            DecodeError::TooMany { .. } => "too_many",
        }
    }
}

pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let mut frame = vec![PROTOCOL_VERSION];
    // postcard cannot fail on these types when writing to a Vec.
    let body = postcard::to_stdvec(envelope).expect("wire types serialize");
    frame.extend_from_slice(&body);
    frame
}

pub fn decode(frame: &[u8]) -> Result<Envelope, DecodeError> {
    let (&version, rest) = frame.split_first().ok_or(DecodeError::Empty)?;
    if frame.len() > MESSAGE_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            len: frame.len(),
            max: MESSAGE_BYTES_MAX,
        });
    }
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::Version(version));
    }
    let (envelope, trailing) = postcard::take_from_bytes::<Envelope>(rest)
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !trailing.is_empty() {
        return Err(DecodeError::Trailing {
            trailing: trailing.len(),
        });
    }
    envelope.body.check_counts()?;
    Ok(envelope)
}

impl Body {
    /// Count limits that the byte limit alone does not imply.
    fn check_counts(&self) -> Result<(), DecodeError> {
        let check = |what, count: usize, max| {
            if count > max {
                return Err(DecodeError::TooMany { what, count, max });
            }
            Ok(())
        };
        match self {
            Body::Push { rooms }
            | Body::ChangesResp { rooms, .. }
            | Body::SinceResp { rooms, .. } => check("rooms", rooms.len(), ROOMS_PER_MESSAGE_MAX),
            Body::ChangesReq { rooms, .. } => {
                check("rooms", rooms.len(), ROOMS_PER_MESSAGE_MAX)?;
                for r in rooms {
                    check("heads", r.heads.len(), HEADS_MAX)?;
                    check("ancestry", r.ancestry.len(), ANCESTRY_MAX)?;
                }
                Ok(())
            }
            Body::LeafResp { .. } | Body::TreeResp { .. } => Ok(()),
            Body::TreeReq { nodes, .. } => check("nodes", nodes.len(), NODES_PER_REQUEST_MAX),
            Body::LeafReq { buckets, .. } | Body::LeafHeadsReq { buckets, .. } => {
                check("buckets", buckets.len(), NODES_PER_REQUEST_MAX)
            }
            Body::LeafHeadsResp { rooms, .. } => {
                for r in rooms {
                    check("heads", r.heads.len(), LEAF_HEADS_MAX)?;
                }
                Ok(())
            }
            Body::SnapshotResp {
                rooms, too_large, ..
            } => check(
                "rooms",
                rooms.len() + too_large.len(),
                ROOMS_PER_MESSAGE_MAX,
            ),
            Body::Purged { rooms } => {
                check("rooms", rooms.len(), ROOMS_PER_MESSAGE_MAX)?;
                let longest = rooms.iter().map(|p| p.end.len()).max().unwrap_or(0);
                check("purge proof bytes", longest, PURGE_PROOF_BYTES_MAX)
            }
            Body::EndAck { rooms } => check("rooms", rooms.len(), ROOMS_PER_MESSAGE_MAX),
            Body::Compaction { requests, .. } => {
                check("rooms", requests.len(), ROOMS_PER_MESSAGE_MAX)
            }
            Body::SinceReq { known, .. } => check("known", known.len(), KNOWN_HASHES_MAX),
            Body::Swim { data } => check("swim bytes", data.len(), SWIM_PACKET_MAX),
            Body::Health { report } | Body::HealthAsk { report } => {
                check("drains", report.drains.len(), DRAIN_ORDERS_MAX)
            }
            Body::Drain { .. }
            | Body::Leaving { .. }
            | Body::LeavingAck
            | Body::WatchCheck { .. }
            | Body::WatchSeen { .. }
            | Body::Suspected { .. }
            | Body::Refuted { .. }
            | Body::Reads { .. }
            | Body::Unavailable { .. }
            | Body::DigestReq { .. }
            | Body::DigestResp { .. }
            | Body::SnapshotReq { .. } => Ok(()),
        }
    }

    /// A short, stable label for per-kind metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Push { .. } => "push",
            Body::DigestReq { .. } => "digest_req",
            Body::DigestResp { .. } => "digest_resp",
            Body::TreeReq { .. } => "tree_req",
            Body::TreeResp { .. } => "tree_resp",
            Body::LeafReq { .. } => "leaf_req",
            Body::LeafResp { .. } => "leaf_resp",
            Body::ChangesReq { .. } => "changes_req",
            Body::ChangesResp { .. } => "changes_resp",
            Body::SinceReq { .. } => "since_req",
            Body::SinceResp { .. } => "since_resp",
            Body::SnapshotReq { .. } => "snapshot_req",
            Body::SnapshotResp { .. } => "snapshot_resp",
            Body::Unavailable { .. } => "unavailable",
            Body::Purged { .. } => "purged",
            Body::EndAck { .. } => "end_ack",
            Body::Compaction { .. } => "compaction",
            Body::Swim { .. } => "swim",
            Body::Health { .. } => "health",
            Body::HealthAsk { .. } => "health_ask",
            Body::WatchCheck { .. } => "watch_check",
            Body::WatchSeen { .. } => "watch_seen",
            Body::Suspected { .. } => "suspected",
            Body::Refuted { .. } => "refuted",
            Body::Drain { .. } => "drain",
            Body::Leaving { .. } => "leaving",
            Body::LeavingAck => "leaving_ack",
            Body::Reads { .. } => "reads",
            Body::LeafHeadsReq { .. } => "leaf_heads_req",
            Body::LeafHeadsResp { .. } => "leaf_heads_resp",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            cluster: 7,
            sent_at: Timestamp {
                wall_ms: 1_700_000_000_000,
                logical: 3,
                actor: 9,
            },
            body: Body::DigestReq {
                round: 1,
                root: [0xab; 16],
                cursor: None,
            },
        }
    }

    #[test]
    fn round_trip() {
        let env = sample();
        assert_eq!(decode(&encode(&env)), Ok(env));
    }

    #[test]
    fn idle_digest_request_is_small() {
        let len = encode(&sample()).len();
        assert!(len <= 64, "idle opener is {len} bytes");
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(&[2, 0]), Err(DecodeError::Version(2)));
        assert!(matches!(
            decode(&[1, 0xff, 0xff]),
            Err(DecodeError::Malformed(_))
        ));
        let mut frame = encode(&sample());
        frame.push(0);
        assert_eq!(decode(&frame), Err(DecodeError::Trailing { trailing: 1 }));
        let big = vec![1u8; MESSAGE_BYTES_MAX + 1];
        assert!(matches!(decode(&big), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn invalid_room_ids_are_refused() {
        let env = Envelope {
            body: Body::EndAck {
                rooms: vec![RoomId::parse("ok").expect("valid")],
            },
            ..sample()
        };
        let mut frame = encode(&env);
        let at = frame.len() - 2; // inside "ok"
        frame[at] = b'/';
        assert!(matches!(decode(&frame), Err(DecodeError::Malformed(_))));
    }
}
