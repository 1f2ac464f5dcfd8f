//! The driver contract: what goes into a replica ([`Input`]), what comes
//! out ([`Output`], [`Event`]) and its timers.

use crate::error::Error;
use crate::events::ChangeEvent;
use crate::hlc::Timestamp;
use crate::ids::{NodeId, RoomId};
use crate::membership::{AppHealth, GradeChange};
use crate::model::WriteAck;
use crate::room::RoomOp;
use crate::storage::Batch;

use super::{MoveKind, Rehomed};

/// Everything that can happen to a replica.
#[derive(Debug)]
pub enum Input {
    /// Bytes a peer sent (push or sync message).
    Message {
        from: NodeId,
        bytes: Vec<u8>,
    },
    /// A connection to `peer` is up; a sync round with it starts at once.
    PeerUp {
        peer: NodeId,
    },
    PeerDown {
        peer: NodeId,
    },
    /// Time passed; due timers fire.
    Tick,
    /// The result of an `Output::Work`, run by the driver ([`Work::run`]).
    Worked(Worked),
    /// A write from the local API. Its result comes back as
    /// `Event::WriteDone { id }` after the `Persist` that makes it durable.
    LocalWrite {
        id: u64,
        room: RoomId,
        op: RoomOp,
    },
    /// Standard automerge bytes of a room (a whole document or saved
    /// changes) to merge in, all on the replica's task (a driver without
    /// threads, the simulator, tests; `Engine` prepares imports off its
    /// task and sends `ImportPrepared`). Answered like a write, by
    /// `Event::WriteDone { id }`; the changes are pushed to peers.
    Import {
        id: u64,
        /// The room the caller names (`None`: the one the document names).
        room: Option<RoomId>,
        bytes: Vec<u8>,
    },
    /// An import already decoded, validated and merged on a fork of its
    /// room (`Replica::fork_room`, then `Fork::prepare`, off this task):
    /// swapped in if the room has not changed since the fork, merged in
    /// line otherwise. Answered like `Import`.
    ImportPrepared {
        id: u64,
        prepared: Box<crate::rooms::PreparedImport>,
    },
    /// Raw automerge changes of one room from outside the protocol (the
    /// library's `Engine::apply_remote`), validated one by one like a
    /// peer's. Answered by `Event::Applied { id }`; what applies is pushed
    /// to peers.
    Apply {
        id: u64,
        room: RoomId,
        changes: Vec<Vec<u8>>,
    },
    /// This media node's application health (load, call-setup failures),
    /// from the library or the API. Over a threshold it grades Degraded.
    Health {
        app: AppHealth,
    },
    /// An operator drains `node` (`active: false` cancels): its calls move
    /// away at `rate_per_s` (the configured default if `None`).
    Drain {
        node: NodeId,
        rate_per_s: Option<u32>,
        active: bool,
    },
    /// This replica is about to stop on purpose: it tells its peers
    /// (`membership::Intent`). `Replica::departure_acknowledged` says when
    /// they all know.
    Leave {
        intent: crate::membership::Intent,
    },
}

/// Everything a replica asks its driver to do.
#[derive(Debug)]
pub enum Output {
    Send {
        to: NodeId,
        bytes: Vec<u8>,
    },
    Broadcast {
        bytes: Vec<u8>,
    },
    /// A small, droppable message to one peer (failure detection, health):
    /// best effort, no retries, order irrelevant. Losing it is expected.
    Datagram {
        to: NodeId,
        bytes: Vec<u8>,
    },
    /// Apply atomically; if `durable`, flush before acting on later outputs.
    Persist {
        batch: Batch,
        durable: bool,
    },
    Event(Event),
    /// Work to run away from the replica's task, so that it keeps
    /// answering probes and writes meanwhile (a long room's compaction, or
    /// peers' changes into a room so large that automerge takes longer to
    /// apply them than the failure detector waits for a probe). The
    /// driver runs it on another thread and hands back what
    /// [`Work::run`] returns as an input; a driver without threads may run
    /// it in place. Emitted only with `ReplicaConfig::work_off_task`.
    Work(Work),
}

/// Work handed to the driver (`Output::Work`).
#[derive(Debug)]
pub struct Work(pub(super) Job);

#[derive(Debug)]
pub(super) enum Job {
    Compaction(Box<crate::rooms::CompactionJob>),
    Apply(Box<super::offload::ApplyJob>),
}

impl Work {
    /// Does the work (on any thread); returns the input that hands its
    /// result back to the replica.
    pub fn run(self) -> Input {
        let done = match self.0 {
            Job::Compaction(job) => Done::Compaction(Box::new(job.run())),
            Job::Apply(job) => Done::Apply(Box::new(job.run())),
        };
        Input::Worked(Worked(done))
    }
}

/// What a [`Work`] produced (`Input::Worked`).
#[derive(Debug)]
pub struct Worked(pub(super) Done);

#[derive(Debug)]
pub(super) enum Done {
    Compaction(Box<crate::rooms::PreparedCompaction>),
    Apply(Box<super::offload::Applied>),
}

/// How a sync round brought this replica level with a peer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncPath {
    /// Digest-tree walk, then changes since our heads, room by room.
    Incremental,
    /// Every change in the peer's log after our cursor.
    Since,
    /// Whole documents of every room.
    Full,
}

#[derive(Debug)]
pub enum Event {
    WriteDone {
        id: u64,
        result: Result<WriteAck, Error>,
    },
    /// The answer to `Input::Apply { id }`.
    Applied {
        id: u64,
        result: Result<crate::model::RemoteOutcome, Error>,
    },
    /// A room changed. `stamp` keys the change-log entry that holds the
    /// changes (see [`Replica::change_log`]); `None` when the write changed
    /// nothing stored (no log entry).
    Changed {
        change: ChangeEvent,
        stamp: Option<Timestamp>,
    },
    SyncStarted {
        peer: NodeId,
        path: SyncPath,
    },
    SyncFinished {
        peer: NodeId,
        path: SyncPath,
        changes: u64,
    },
    Purged {
        room: RoomId,
    },
    Rejected {
        peer: NodeId,
        reason: String,
    },
    /// This replica's grade of a node changed.
    Grade(GradeChange),
    /// This replica took over a call.
    Rehomed(Rehomed),
    /// A drain order took effect here (or was cancelled).
    Drain {
        node: NodeId,
        active: bool,
        rate_per_s: u32,
    },
    /// A failover or drain stopped before moving every call (rollback).
    MoveStopped {
        node: NodeId,
        kind: MoveKind,
        calls_left: usize,
        /// Calls this replica had moved before it stopped.
        moved_here: u64,
        /// Why it stopped (for the journal).
        why: &'static str,
    },
}

/// The replica's timers; `poll_timeout` names the one due next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    AntiEntropy,
    PushFlush,
    /// A room a push left waiting for changes is due to be asked for them.
    MissingPull,
    RoundTimeout,
    EndAck,
    /// History compaction's requests and acknowledgements.
    Compaction,
    LogTrim,
    /// A SWIM timer (probe, indirect probe, suspicion).
    Membership,
    /// This replica's health report is due.
    Health,
    /// Due calls of a failover or drain move.
    Rehome,
}
