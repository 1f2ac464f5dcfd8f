//! The replication protocol as a sans-IO state machine.
//!
//! A [`Replica`] owns no socket, thread, clock or randomness. Its driver
//! (the daemon, the simulator, a test) feeds it [`Input`]s with the current
//! time and drains [`Output`]s after every input:
//!
//! ```
//! use std::sync::Arc;
//! use chorus_engine::replica::{Input, Output, Replica, ReplicaConfig};
//! use chorus_engine::storage::{Kv, MemKv};
//! use chorus_engine::NodeId;
//!
//! let kv = Arc::new(MemKv::new());
//! let config = ReplicaConfig::new(NodeId::parse("a")?, 7);
//! let mut replica = Replica::new(config, kv.clone(), 0)?;
//! let mut now_ms = 0;
//! // 1. Feed an input (a message, a peer change, a local write, or a tick).
//! replica.handle_input(now_ms, Input::Tick);
//! // 2. Drain every output. A `Persist` must be applied — and flushed, if
//! //    `durable` — before acting on any output after it.
//! while let Some(output) = replica.poll_output() {
//!     match output {
//!         Output::Persist { batch, durable } => {
//!             kv.apply(batch)?;
//!             if durable {
//!                 kv.flush()?;
//!             }
//!         }
//!         Output::Send { to: _, bytes: _ } => { /* request-response to one peer */ }
//!         Output::Broadcast { bytes: _ } => { /* gossip to all peers */ }
//!         Output::Datagram { to: _, bytes: _ } => { /* best effort, one peer */ }
//!         Output::Event(_event) => { /* acks, change events, sync reports */ }
//!     }
//! }
//! // 3. Sleep until the next deadline (or an input), then tick.
//! if let Some((deadline, _timer)) = replica.poll_timeout() {
//!     now_ms = deadline;
//!     replica.handle_input(now_ms, Input::Tick);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
pub mod digest;
mod failover;
mod journal;
mod overlay;
mod purge;
mod push;
mod round;
mod serve;
pub mod stats;
mod tuning;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Arc;

use automerge::Change;

pub use config::ReplicaConfig;
pub use failover::{MoveKind, Rehomed};
pub use journal::{Incident, IncidentKind};
pub use stats::ReplicaStats;
pub use tuning::ReplicaTuning;

use crate::error::Error;
use crate::events::{ChangeEvent, ChangeKind, Origin};
use crate::hlc::{Hlc, Timestamp};
use crate::ids::{NodeId, RoomId};
use crate::membership::{AppHealth, GradeChange, Membership};
use crate::model::WriteAck;
use crate::room::{Intake, RoomOp, WriteCtx};
use crate::rooms::{RemoteWrite, RoomSet};
use crate::storage::{keys, Batch, KvRead};
use overlay::{Overlay, Staged};
use round::Round;
use wire::{Body, Envelope};

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
    /// A write from the local API. Its result comes back as
    /// `Event::WriteDone { id }` after the `Persist` that makes it durable.
    LocalWrite {
        id: u64,
        room: RoomId,
        op: RoomOp,
    },
    /// Standard automerge bytes of a room (a whole document or saved
    /// changes) to merge in, from the local API. Answered like a write, by
    /// `Event::WriteDone { id }`; the changes are pushed to peers.
    Import {
        id: u64,
        /// The room the caller names (`None`: the one the document names).
        room: Option<RoomId>,
        bytes: Vec<u8>,
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
}

/// How a sync round brought this replica level with a peer.
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
    },
}

/// The replica's timers; `poll_timeout` names the one due next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    AntiEntropy,
    PushFlush,
    RoundTimeout,
    EndAck,
    LogTrim,
    /// A SWIM timer (probe, indirect probe, suspicion).
    Membership,
    /// This replica's health report is due.
    Health,
    /// Due calls of a failover or drain move.
    Rehome,
}

#[derive(Debug, Default)]
struct Peer {
    up: bool,
    /// Our position in this peer's change log: we hold everything it had
    /// up to this stamp.
    cursor: Option<Timestamp>,
    round: Option<Round>,
    /// Where an interrupted full snapshot resumes.
    snapshot_resume: Option<RoomId>,
}

/// Metadata key of the per-peer log cursor.
fn cursor_key(peer: &NodeId) -> Vec<u8> {
    keys::meta(&format!("cursor/{peer}"))
}

const LOG_HORIZON: &str = "log_horizon";

/// A tiny xorshift generator: the replica's only randomness, seeded by config.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

pub struct Replica {
    config: ReplicaConfig,
    store: Arc<dyn KvRead>,
    rooms: RoomSet,
    hlc: Hlc,
    now_ms: u64,
    peers: BTreeMap<NodeId, Peer>,
    staged: Staged,
    pending_outputs: Vec<Output>,
    outputs: VecDeque<Output>,
    outbox: push::Outbox,
    ended: BTreeMap<RoomId, purge::Ended>,
    log_horizon: Option<Timestamp>,
    /// Entries in the incident journal (to keep it bounded).
    journal_len: usize,
    next_round: u64,
    next_anti_entropy_ms: u64,
    next_end_ack_ms: u64,
    next_log_trim_ms: u64,
    turn: usize,
    rng: Rng,
    stats: ReplicaStats,
    members: Membership,
    /// Failovers and drains in progress, by the node whose calls move.
    moves: BTreeMap<NodeId, failover::Move>,
    /// The newest drain order per node.
    drains: BTreeMap<NodeId, crate::membership::DrainOrder>,
    next_health_ms: u64,
    next_move_ms: u64,
    /// Since when this replica has seen a majority of the cluster (`None`
    /// while it does not): failovers wait a grace after it returns.
    majority_since_ms: Option<u64>,
}

impl Replica {
    /// A replica over `store`, at time `now_ms`. Reads the digest items,
    /// purge markers, cursors and ended rooms; loads no room.
    pub fn new(config: ReplicaConfig, store: Arc<dyn KvRead>, now_ms: u64) -> Result<Self, Error> {
        config.validate()?;
        let hot = NonZeroUsize::new(config.hot_rooms).ok_or(Error::Invalid {
            field: "hot_rooms",
            reason: "must be at least 1".into(),
        })?;
        let incarnation = incarnation(store.as_ref())?;
        let actor = crate::ids::actor_for(&config.node, incarnation);
        let rooms = RoomSet::open(store.as_ref(), actor, hot)?;
        let members = Membership::new(
            config.node.clone(),
            incarnation,
            crate::membership::DetectorConfig {
                probe_period_ms: config.probe_period_ms,
                probe_rtt_ms: config.probe_rtt_ms,
                indirect_probes: config.indirect_probes,
                suspect_to_down_ms: config.suspect_to_down_ms,
                silence_ms: config.silence_ms,
                degraded_load_permille: config.degraded_load_permille,
                degraded_setup_failure_permille: config.degraded_setup_failure_permille,
            },
            config.seed,
        );
        let mut replica = Self {
            hlc: Hlc::new(crate::ids::hlc_actor(&config.node)),
            rooms,
            store,
            now_ms,
            peers: BTreeMap::new(),
            staged: Staged::default(),
            pending_outputs: Vec::new(),
            outputs: VecDeque::new(),
            outbox: push::Outbox::default(),
            ended: BTreeMap::new(),
            log_horizon: None,
            journal_len: 0,
            next_round: 1,
            next_anti_entropy_ms: now_ms,
            next_end_ack_ms: now_ms + config.end_ack_interval_ms,
            next_log_trim_ms: now_ms + config.log_trim_interval_ms,
            turn: 0,
            rng: Rng(config.seed | 1),
            stats: ReplicaStats::default(),
            members,
            moves: BTreeMap::new(),
            drains: BTreeMap::new(),
            next_health_ms: now_ms,
            next_move_ms: now_ms,
            majority_since_ms: None,
            config,
        };
        replica.restore(incarnation)?;
        Ok(replica)
    }

    /// Reads what survives a restart and stages the incarnation bump.
    fn restore(&mut self, incarnation: u64) -> Result<(), Error> {
        let mut batch = Batch::default();
        batch.put(
            keys::meta("incarnation"),
            incarnation.to_be_bytes().to_vec(),
        );
        self.staged.add(batch, true);
        for peer in self.config.peers.clone() {
            let cursor = match self.store.get(&cursor_key(&peer))? {
                Some(bytes) => postcard::from_bytes(&bytes).ok(),
                None => None,
            };
            self.peers.insert(
                peer,
                Peer {
                    cursor,
                    ..Peer::default()
                },
            );
        }
        if let Some(bytes) = self.store.get(&keys::meta(LOG_HORIZON))? {
            self.log_horizon = postcard::from_bytes(&bytes).ok();
        }
        self.restore_ended()?;
        self.restore_journal()?;
        self.finish_input();
        Ok(())
    }

    pub fn node(&self) -> &NodeId {
        &self.config.node
    }

    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// The root of the digest tree: equal roots mean equal replicas.
    pub fn root(&self) -> wire::Digest {
        self.rooms.tree().root()
    }

    /// Reads a room (through writes not yet handed to the driver).
    pub fn room(&mut self, room: &RoomId) -> Result<Option<crate::model::RoomSnapshot>, Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        self.rooms.snapshot(&view, room)
    }

    pub fn heads(&mut self, room: &RoomId) -> Result<Vec<crate::model::Head>, Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        self.rooms.heads(&view, room)
    }

    /// Whether this replica holds the change `head` of `room`.
    pub fn has_change(&mut self, room: &RoomId, head: &crate::model::Head) -> bool {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        matches!(
            self.rooms.has_change(&view, room, &wire::WireHead(head.0)),
            Ok(true)
        )
    }

    pub fn is_purged(&self, room: &RoomId) -> bool {
        self.rooms.is_purged(room)
    }

    /// Every room in the index (live and ended, not purged), without
    /// loading any room.
    pub fn list_rooms(&self) -> Result<Vec<crate::model::RoomSummary>, Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let mut rooms = Vec::new();
        for (_, value) in view.scan_prefix(keys::INDEX)? {
            if let Ok(summary) = serde_json::from_slice(&value) {
                rooms.push(summary);
            }
        }
        Ok(rooms)
    }

    /// A room as standard automerge bytes (`None`: no such room).
    pub fn export_room(&mut self, room: &RoomId) -> Result<Option<Vec<u8>>, Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        self.rooms.export(&view, room)
    }

    /// Change-log entries after `after` (from the oldest held if `None`),
    /// oldest first, at most `limit`.
    pub fn change_log(
        &self,
        after: Option<&Timestamp>,
        limit: usize,
    ) -> Result<Vec<(Timestamp, crate::rooms::LogEntry)>, Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        RoomSet::log_after(&view, after, limit)
    }

    /// The newest change-log stamp trimmed away (`None`: nothing trimmed
    /// yet): entries after it are all held.
    pub fn log_horizon(&self) -> Option<Timestamp> {
        self.log_horizon
    }

    /// Rooms loaded in memory.
    pub fn hot_rooms(&self) -> usize {
        self.rooms.hot_len()
    }

    /// Raw bytes of the changes of `room` a replica with heads `have` lacks.
    pub fn changes_since(
        &mut self,
        room: &RoomId,
        have: &[crate::model::Head],
    ) -> Result<Vec<Vec<u8>>, Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let changes = self.rooms.changes_since(&view, room, have)?;
        Ok(changes
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect())
    }

    /// Rooms with a digest item (live or purged).
    pub fn room_count(&self) -> usize {
        self.rooms.tree().len()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next deadline and the timer it belongs to.
    pub fn poll_timeout(&self) -> Option<(u64, Timer)> {
        let mut next = vec![
            (self.next_anti_entropy_ms, Timer::AntiEntropy),
            (self.next_log_trim_ms, Timer::LogTrim),
        ];
        if let Some(at) = self.outbox.due_ms(self.config.push_delay_ms) {
            next.push((at, Timer::PushFlush));
        }
        if !self.ended.is_empty() {
            next.push((self.next_end_ack_ms, Timer::EndAck));
        }
        if self.config.failure_detection {
            next.push((self.next_health_ms, Timer::Health));
            if let Some(at) = self.members.next_timer_ms() {
                next.push((at, Timer::Membership));
            }
            if self.moving() {
                next.push((self.next_move_ms, Timer::Rehome));
            }
        }
        next.extend(
            self.peers
                .values()
                .filter_map(|p| p.round.as_ref())
                .map(|r| (r.deadline_ms, Timer::RoundTimeout)),
        );
        next.into_iter().min_by_key(|(at, _)| *at)
    }

    pub fn handle_input(&mut self, now_ms: u64, input: Input) {
        // Time never goes backwards, whatever the driver's clock does.
        self.now_ms = self.now_ms.max(now_ms);
        match input {
            Input::Message { from, bytes } => self.on_message(from, &bytes),
            Input::PeerUp { peer } => self.on_peer_up(peer),
            Input::PeerDown { peer } => self.on_peer_down(&peer),
            Input::Tick => self.on_tick(),
            Input::LocalWrite { id, room, op } => self.on_local_write(id, &room, &op),
            Input::Import { id, room, bytes } => self.on_import(id, room.as_ref(), &bytes),
            Input::Apply { id, room, changes } => self.on_apply(id, &room, changes),
            Input::Health { app } => self.on_local_health(app),
            Input::Drain {
                node,
                rate_per_s,
                active,
            } => self.on_local_drain(node, rate_per_s, active),
        }
        self.finish_input();
    }

    /// Emits the staged writes first, then everything the input produced.
    fn finish_input(&mut self) {
        if let Some((batch, durable)) = self.staged.take() {
            self.outputs.push_back(Output::Persist { batch, durable });
        }
        self.outputs.extend(self.pending_outputs.drain(..));
    }

    fn emit(&mut self, event: Event) {
        self.journal_event(&event);
        self.pending_outputs.push(Output::Event(event));
    }

    fn send(&mut self, to: &NodeId, body: Body) {
        let bytes = self.encode(body);
        self.pending_outputs.push(Output::Send {
            to: to.clone(),
            bytes,
        });
    }

    fn broadcast(&mut self, body: Body) {
        let bytes = self.encode(body);
        self.pending_outputs.push(Output::Broadcast { bytes });
    }

    fn encode(&mut self, body: Body) -> Vec<u8> {
        let kind = body.kind();
        let envelope = Envelope {
            cluster: self.config.cluster,
            sent_at: self.hlc.tick(self.now_ms),
            body,
        };
        let bytes = wire::encode(&envelope);
        self.stats.record_sent(kind, bytes.len());
        bytes
    }

    fn on_local_write(&mut self, id: u64, room: &RoomId, op: &RoomOp) {
        let result = self.write_local(room, op);
        self.emit(Event::WriteDone { id, result });
    }

    /// Applies a local write: staged, announced as `Changed`, queued for
    /// the next push.
    fn write_local(&mut self, room: &RoomId, op: &RoomOp) -> Result<WriteAck, Error> {
        let stamp = self.hlc.tick(self.now_ms);
        let ctx = WriteCtx {
            room,
            stamp,
            now_ms: self.now_ms,
        };
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        match self.rooms.local_write(&view, &ctx, op) {
            Ok(write) => {
                self.stats.local_writes += 1;
                self.staged.add(write.batch, true);
                let ack = WriteAck {
                    room: room.clone(),
                    heads: write.heads,
                };
                let logged = (!write.changes.is_empty()).then_some(stamp);
                self.after_change(room, Origin::Local, write.kinds, logged);
                self.outbox.add(room, &write.changes, self.now_ms);
                if self.outbox.full() {
                    self.flush_push();
                }
                Ok(ack)
            }
            Err(err) => {
                self.stats.local_write_errors += 1;
                Err(err)
            }
        }
    }

    /// An import (the daemon's HTTP route): the same decoding and
    /// validation as `Engine::import_room_as`, all or nothing.
    fn on_import(&mut self, id: u64, room: Option<&RoomId>, bytes: &[u8]) {
        let result = self.import(room, bytes);
        if result.is_err() {
            self.stats.local_write_errors += 1;
        }
        self.emit(Event::WriteDone { id, result });
    }

    fn import(&mut self, room: Option<&RoomId>, bytes: &[u8]) -> Result<WriteAck, Error> {
        let (room, changes) = crate::room::import::decode(bytes, room)?;
        if self.rooms.is_purged(&room) {
            return Err(Error::RoomPurged(room));
        }
        let stamp = self.hlc.tick(self.now_ms);
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let mut write = self
            .rooms
            .remote_apply(&view, &room, changes, stamp, Intake::Whole)?;
        self.stats.changes_applied += write.applied.len() as u64;
        self.staged.add(std::mem::take(&mut write.batch), true);
        let kinds = std::mem::take(&mut write.kinds);
        // `remote_apply` logs under `stamp` whenever it applied any.
        let logged = (!write.applied.is_empty()).then_some(stamp);
        self.after_change(&room, Origin::Local, kinds, logged);
        self.outbox.add(&room, &write.applied, self.now_ms);
        if self.outbox.full() {
            self.flush_push();
        }
        let heads = self.heads(&room)?;
        Ok(WriteAck { room, heads })
    }

    fn on_apply(&mut self, id: u64, room: &RoomId, changes: Vec<Vec<u8>>) {
        let result = self.apply_outside(room, changes);
        if result.is_err() {
            self.stats.changes_rejected += 1;
        }
        self.emit(Event::Applied { id, result });
    }

    fn apply_outside(
        &mut self,
        room: &RoomId,
        changes: Vec<Vec<u8>>,
    ) -> Result<crate::model::RemoteOutcome, Error> {
        let changes = crate::room::import::parse_changes(changes)?;
        if self.rooms.is_purged(room) {
            return Err(Error::RoomPurged(room.clone()));
        }
        let stamp = self.hlc.tick(self.now_ms);
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let mut write = self
            .rooms
            .remote_apply(&view, room, changes, stamp, Intake::EachChange)?;
        self.stats.changes_applied += write.applied.len() as u64;
        self.stats.changes_refused += write.refused.len() as u64;
        self.staged.add(std::mem::take(&mut write.batch), true);
        let kinds = std::mem::take(&mut write.kinds);
        let logged = (!write.applied.is_empty()).then_some(stamp);
        self.after_change(room, Origin::Remote, kinds, logged);
        self.outbox.add(room, &write.applied, self.now_ms);
        if self.outbox.full() {
            self.flush_push();
        }
        Ok(write.outcome)
    }

    /// Applies changes from a peer to one room; returns the outcome or
    /// `None` when the room is purged or the changes were refused.
    fn apply_remote(
        &mut self,
        from: &NodeId,
        room: &RoomId,
        changes: Vec<Change>,
    ) -> Option<RemoteWrite> {
        if self.rooms.is_purged(room) {
            self.stats.purged_refused += 1;
            return None;
        }
        let stamp = self.hlc.tick(self.now_ms);
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        match self
            .rooms
            .remote_apply(&view, room, changes, stamp, Intake::EachChange)
        {
            Ok(mut write) => {
                self.stats.changes_applied += write.applied.len() as u64;
                self.stats.pending_dropped += write.outcome.dropped as u64;
                self.stats.changes_refused += write.refused.len() as u64;
                for (change, why) in std::mem::take(&mut write.refused) {
                    self.emit(Event::Rejected {
                        peer: from.clone(),
                        reason: format!("room {room}: change {change} refused at {why}"),
                    });
                }
                self.staged.add(std::mem::take(&mut write.batch), true);
                let kinds = std::mem::take(&mut write.kinds);
                // `remote_apply` logs under `stamp` whenever it applied any.
                let logged = (!write.applied.is_empty()).then_some(stamp);
                self.after_change(room, Origin::Remote, kinds, logged);
                Some(write)
            }
            Err(err) => {
                self.stats.changes_rejected += 1;
                self.emit(Event::Rejected {
                    peer: from.clone(),
                    reason: format!("room {room}: {err}"),
                });
                None
            }
        }
    }

    fn after_change(
        &mut self,
        room: &RoomId,
        origin: Origin,
        kinds: Vec<ChangeKind>,
        stamp: Option<Timestamp>,
    ) {
        if kinds.is_empty() {
            return;
        }
        if kinds.contains(&ChangeKind::RoomEnded) {
            self.note_ended(room);
        }
        let change = ChangeEvent {
            room: room.clone(),
            origin,
            changes: kinds,
        };
        self.emit(Event::Changed { change, stamp });
    }

    fn on_message(&mut self, from: NodeId, bytes: &[u8]) {
        let envelope = match wire::decode(bytes) {
            Ok(envelope) => envelope,
            Err(err) => {
                *self.stats.decode_errors.entry(err.label()).or_default() += 1;
                self.emit(Event::Rejected {
                    peer: from,
                    reason: err.to_string(),
                });
                return;
            }
        };
        self.stats
            .record_received(envelope.body.kind(), bytes.len());
        if envelope.cluster != self.config.cluster {
            self.stats.foreign_cluster += 1;
            let reason = format!(
                "cluster {} is not ours ({})",
                envelope.cluster, self.config.cluster
            );
            self.emit(Event::Rejected { peer: from, reason });
            return;
        }
        if self.hlc.observe(envelope.sent_at, self.now_ms).is_err() {
            self.stats.clock_drift_refused += 1;
        }
        self.peers.entry(from.clone()).or_default();
        // Any valid message is evidence of life for failure detection.
        self.members.heard(self.now_ms, &from);
        self.dispatch(&from, envelope.body);
    }

    fn dispatch(&mut self, from: &NodeId, body: Body) {
        match body {
            Body::Push { rooms } => self.on_push(from, rooms),
            Body::DigestReq {
                round,
                root,
                cursor,
            } => self.serve_digest(from, round, root, cursor),
            Body::TreeReq {
                round,
                level,
                nodes,
            } => self.serve_tree(from, round, level, &nodes),
            Body::LeafReq { round, buckets } => self.serve_leaves(from, round, &buckets),
            Body::ChangesReq { round, rooms } => self.serve_changes(from, round, rooms),
            Body::SinceReq {
                round,
                cursor,
                known,
            } => self.serve_since(from, round, cursor, &known),
            Body::SnapshotReq { round, after } => self.serve_snapshot(from, round, after),
            Body::DigestResp {
                round,
                root,
                log_head,
                since_count,
            } => self.on_digest(from, round, root, log_head, since_count),
            Body::TreeResp {
                round,
                level,
                children,
            } => self.on_tree(from, round, level, &children),
            Body::LeafResp { round, rooms } => self.on_leaves(from, round, rooms),
            Body::ChangesResp {
                round,
                rooms,
                truncated,
            } => self.on_changes(from, round, rooms, truncated),
            Body::SinceResp {
                round,
                rooms,
                next_cursor,
                complete,
            } => self.on_since(from, round, rooms, next_cursor, complete),
            Body::SnapshotResp {
                round,
                rooms,
                too_large,
                next,
                log_head,
            } => self.on_snapshot(from, round, rooms, too_large, next, log_head),
            Body::Unavailable { round } => self.on_unavailable(from, round),
            Body::Purged { rooms } => self.on_purged(from, rooms),
            Body::EndAck { rooms } => self.on_end_ack(from, rooms),
            Body::Swim { data } => self.on_swim(from, &data),
            Body::Health { report } => self.on_health_report(from, report),
            Body::Drain { order } => self.on_peer_drain(from, order),
        }
    }

    fn on_peer_up(&mut self, peer: NodeId) {
        if peer == self.config.node {
            return;
        }
        let state = self.peers.entry(peer.clone()).or_default();
        let was_up = std::mem::replace(&mut state.up, true);
        let idle = state.round.is_none();
        if !was_up {
            self.journal(journal::IncidentKind::PeerUp, format!("{peer}"));
        }
        if idle {
            self.start_round(&peer);
        }
        if self.config.failure_detection && !was_up {
            self.members.announce(self.now_ms, &peer);
            self.after_membership();
        }
    }

    fn on_peer_down(&mut self, peer: &NodeId) {
        if let Some(state) = self.peers.get_mut(peer) {
            let was_up = std::mem::replace(&mut state.up, false);
            state.round = None;
            if was_up {
                self.journal(journal::IncidentKind::PeerDown, format!("{peer}"));
            }
        }
    }

    fn on_tick(&mut self) {
        let now = self.now_ms;
        if self
            .outbox
            .due_ms(self.config.push_delay_ms)
            .is_some_and(|at| at <= now)
        {
            self.flush_push();
        }
        self.expire_rounds();
        if now >= self.next_anti_entropy_ms {
            self.anti_entropy_turn();
            let interval = self.config.anti_entropy_interval_ms;
            // ±10 % jitter so replicas started together do not sync in lockstep.
            let jitter = self.rng.next() % (interval / 5 + 1);
            self.next_anti_entropy_ms = now + interval - interval / 10 + jitter;
        }
        if now >= self.next_end_ack_ms {
            self.announce_ended();
            self.next_end_ack_ms = now + self.config.end_ack_interval_ms;
        }
        if now >= self.next_log_trim_ms {
            self.trim_log();
            self.next_log_trim_ms = now + self.config.log_trim_interval_ms;
        }
        self.purge_due();
        if self.config.failure_detection {
            self.members.tick(now);
            self.after_membership();
            if now >= self.next_health_ms {
                self.health_tick();
                self.next_health_ms = now + self.config.health_interval_ms;
            }
            if self.moving() && now >= self.next_move_ms {
                self.move_tick();
                self.next_move_ms = now + failover::MOVE_INTERVAL_MS;
            }
        }
    }

    /// Starts a round with the next up peer (in turn) that has none running.
    fn anti_entropy_turn(&mut self) {
        let candidates: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.up && p.round.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        if candidates.is_empty() {
            return;
        }
        let peer = candidates[self.turn % candidates.len()].clone();
        self.turn = self.turn.wrapping_add(1);
        self.start_round(&peer);
    }

    fn trim_log(&mut self) {
        // Bounded work per tick; the next tick continues.
        const TRIM_PER_TICK: usize = 4096;
        let before = self.now_ms.saturating_sub(self.config.log_retention_ms);
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        match RoomSet::trim_log(&view, before, TRIM_PER_TICK) {
            Ok((batch, Some(horizon))) => {
                self.staged.add(batch, false);
                self.log_horizon = Some(horizon);
                let mut meta = Batch::default();
                let value = postcard::to_stdvec(&horizon).expect("timestamps serialize");
                meta.put(keys::meta(LOG_HORIZON), value);
                self.staged.add(meta, false);
            }
            Ok((_, None)) => {}
            Err(_) => self.stats.storage_errors += 1,
        }
    }

    fn set_cursor(&mut self, peer: &NodeId, cursor: Timestamp) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.cursor = Some(cursor);
        }
        let mut batch = Batch::default();
        batch.put(
            cursor_key(peer),
            postcard::to_stdvec(&cursor).expect("timestamps serialize"),
        );
        self.staged.add(batch, false);
    }
}

/// The next incarnation number of this store (see `Engine::with_storage`).
fn incarnation(store: &dyn KvRead) -> Result<u64, Error> {
    let current = match store.get(&keys::meta("incarnation"))? {
        Some(bytes) => bytes
            .as_slice()
            .try_into()
            .map(u64::from_be_bytes)
            .unwrap_or(0),
        None => 0,
    };
    Ok(current + 1)
}

/// Rooms named in a batch of ids, deduplicated (for `Purged` replies).
fn unique(rooms: Vec<RoomId>) -> Vec<RoomId> {
    rooms
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
