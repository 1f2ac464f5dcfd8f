//! Deliberate bugs, for checking that the simulator notices them. A
//! mutation corrupts what the *driver* does for one node (the engine is
//! untouched), the way a broken disk or a broken transport would. Never
//! used by scenarios or the swarm; tests and `chorus-sim run --mutate` only.

use std::fmt;
use std::str::FromStr;

use chorus_engine::replica::wire::{self, Body};
use chorus_engine::{RoomId, RoomSnapshot};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// The node's disk lies: durable persists are never flushed, so the
    /// node acknowledges writes a crash then loses. Breaks the durability
    /// rule behind invariant (ii).
    LyingDisk { node: usize },
    /// The node never receives remote changes of one room (its transport
    /// drops them from pushes and sync responses). Breaks delivery, which
    /// convergence (i) and acknowledged writes (ii) depend on.
    DeafToRoom { node: usize, room: RoomId },
    /// Every replica resolves concurrent ownership claims by the *lowest*
    /// `(epoch, node)` instead of the highest: a broken merge rule in the
    /// engine itself (feature `mutations`). Breaks invariant (v).
    OwnershipMin,
    /// History compaction forgets the joins of the tail it carries: a
    /// broken compaction in the engine itself (feature `mutations`).
    /// Breaks invariant (ii), which then checks content, not hashes.
    CompactionDropsJoins,
    /// Replicas leave the replicas that never advertised compaction out of
    /// it: a broken version gate in the engine itself (feature
    /// `mutations`). Breaks invariant (vii).
    CompactionIgnoresGate,
    /// The node reads every room without one of its sessions (the first
    /// held), whatever its document holds: a broken read path, such as a
    /// cached reading left stale. Breaks invariant (iii).
    MisreadRoom { node: usize },
}

impl Mutation {
    /// The node the mutation breaks (`None`: every node).
    pub fn node(&self) -> Option<usize> {
        match self {
            Mutation::LyingDisk { node }
            | Mutation::DeafToRoom { node, .. }
            | Mutation::MisreadRoom { node } => Some(*node),
            Mutation::OwnershipMin
            | Mutation::CompactionDropsJoins
            | Mutation::CompactionIgnoresGate => None,
        }
    }

    /// Whether a durable persist on `node` is flushed.
    pub fn flushes(&self, node: usize) -> bool {
        !matches!(self, Mutation::LyingDisk { node: n } if *n == node)
    }

    /// What node `i` reads of a room instead of `reading`.
    pub fn filter_reading(&self, i: usize, mut reading: RoomSnapshot) -> RoomSnapshot {
        if matches!(self, Mutation::MisreadRoom { node } if *node == i) {
            reading.sessions.pop_first();
        }
        reading
    }

    /// The bytes `to` receives instead of `bytes`.
    pub fn filter_delivery(&self, to: usize, bytes: Vec<u8>) -> Vec<u8> {
        let Mutation::DeafToRoom { node, room } = self else {
            return bytes;
        };
        if *node != to {
            return bytes;
        }
        let Ok(mut envelope) = wire::decode(&bytes) else {
            return bytes;
        };
        let keep = |name: &RoomId| name != room;
        match &mut envelope.body {
            Body::Push { rooms }
            | Body::ChangesResp { rooms, .. }
            | Body::SinceResp { rooms, .. } => rooms.retain(|r| keep(&r.room)),
            Body::SnapshotResp { rooms, .. } => rooms.retain(|r| keep(&r.room)),
            _ => return bytes,
        }
        wire::encode(&envelope)
    }
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mutation::LyingDisk { node } => write!(f, "lying-disk:{node}"),
            Mutation::DeafToRoom { node, room } => write!(f, "deaf-to-room:{node}:{room}"),
            Mutation::OwnershipMin => write!(f, "ownership-min"),
            Mutation::CompactionDropsJoins => write!(f, "compaction-drops-joins"),
            Mutation::CompactionIgnoresGate => write!(f, "compaction-ignores-gate"),
            Mutation::MisreadRoom { node } => write!(f, "misread-room:{node}"),
        }
    }
}

impl FromStr for Mutation {
    type Err = String;

    /// `lying-disk:NODE`, `deaf-to-room:NODE:ROOM`, `misread-room:NODE`,
    /// `ownership-min`, `compaction-drops-joins` or `compaction-ignores-gate`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let node = |text: &str| {
            text.parse::<usize>()
                .map_err(|_| format!("mutation {s:?}: {text:?} is not a node index"))
        };
        match parts.as_slice() {
            ["ownership-min"] => Ok(Mutation::OwnershipMin),
            ["compaction-drops-joins"] => Ok(Mutation::CompactionDropsJoins),
            ["compaction-ignores-gate"] => Ok(Mutation::CompactionIgnoresGate),
            ["lying-disk", n] => Ok(Mutation::LyingDisk { node: node(n)? }),
            ["misread-room", n] => Ok(Mutation::MisreadRoom { node: node(n)? }),
            ["deaf-to-room", n, room] => Ok(Mutation::DeafToRoom {
                node: node(n)?,
                room: RoomId::parse(*room).map_err(|e| format!("mutation {s:?}: {e}"))?,
            }),
            _ => Err(format!(
                "mutation {s:?}: expected lying-disk:NODE, deaf-to-room:NODE:ROOM, misread-room:NODE, ownership-min, compaction-drops-joins or compaction-ignores-gate"
            )),
        }
    }
}
