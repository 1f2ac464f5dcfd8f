//! Two replicas of one room as bare documents (`RoomDoc`), written with
//! stamps that follow causality, and synced by hand.

use automerge::ActorId;
use chorus_engine::events::diff;
use chorus_engine::hlc::Timestamp;
use chorus_engine::room::{Intake, RoomDoc, WriteCtx};
use chorus_engine::*;

use super::{join_request, room, session, tenant};

pub const START_MS: u64 = 1_000_000;

/// Two replicas of one room, written with stamps that follow causality.
pub struct Pair {
    pub room: RoomId,
    pub docs: [RoomDoc; 2],
    pub step: u64,
}

impl Pair {
    pub fn new() -> Self {
        let room = room("standing");
        let docs = [1u8, 2].map(|i| RoomDoc::empty(room.clone(), ActorId::from(vec![i; 16])));
        let mut pair = Self {
            room,
            docs,
            step: 0,
        };
        pair.write(
            0,
            RoomOp::Create {
                tenant: tenant("t"),
                config: RoomConfig::default(),
            },
        );
        pair.sync(0, 1);
        for doc in &mut pair.docs {
            doc.ensure_reading().expect("reads");
        }
        pair
    }

    pub fn now_ms(&self) -> u64 {
        START_MS + self.step * 10
    }

    pub fn write(&mut self, at: usize, op: RoomOp) {
        self.step += 1;
        let now_ms = self.now_ms();
        write_at(&self.room, &mut self.docs[at], at as u64, now_ms, &op).expect("writes");
    }

    /// Replica 0 requests the next compaction, pruning what left before
    /// now; both name the request (as replicas agree on a cut); replica 0
    /// compacts and replica 1 takes its base. Returns the cut.
    pub fn compact(&mut self) -> automerge::ChangeHash {
        self.step += 1;
        self.compact_pruning(self.now_ms())
    }

    /// `compact`, pruning what left before `horizon_ms`.
    pub fn compact_pruning(&mut self, horizon_ms: u64) -> automerge::ChangeHash {
        let request = chorus_engine::room::compact::Request {
            generation: self.docs[0].generation() + 1,
            prune_before_ms: horizon_ms,
        };
        self.write(0, RoomOp::RequestCompaction { request });
        let cut = *self.docs[0].heads().first().expect("a head");
        self.sync(0, 1);
        self.docs[0].compact_at(cut).expect("compacts");
        self.sync(0, 1);
        assert_eq!(self.docs[1].generation(), self.docs[0].generation());
        cut
    }

    /// Applies what `to` lacks of `from`; returns the events of the apply
    /// from its touched part, and from the whole readings around it.
    pub fn sync(&mut self, from: usize, to: usize) -> (Vec<ChangeKind>, Vec<ChangeKind>) {
        let changes = self.docs[from].changes_since(&self.docs[to].heads());
        let whole_before = self.docs[to].snapshot().ok();
        let applied = self.docs[to]
            .apply_remote(changes, Intake::EachChange)
            .expect("applies");
        let whole_after = self.docs[to].snapshot().expect("reads");
        let part = applied
            .delta
            .map(|(before, after)| diff(Some(&before), &after))
            .unwrap_or_default();
        (part, diff(whole_before.as_ref(), &whole_after))
    }
}

/// `op` written on `doc` (of `room`) by `actor` at `now_ms`.
pub fn write_at(
    room: &RoomId,
    doc: &mut RoomDoc,
    actor: u64,
    now_ms: u64,
    op: &RoomOp,
) -> Result<(), Error> {
    let ctx = WriteCtx {
        room,
        stamp: Timestamp {
            wall_ms: now_ms,
            logical: 0,
            actor,
        },
        now_ms,
        stamped_removals: true,
    };
    doc.apply_local(&ctx, op).map(|_| ())
}

pub fn join(s: &str) -> RoomOp {
    RoomOp::Join {
        request: join_request(s, s, "sfu-1"),
    }
}

pub fn leave(s: &str) -> RoomOp {
    RoomOp::Leave {
        session: session(s),
    }
}
