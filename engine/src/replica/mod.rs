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
//!         Output::Work(work) => {
//!             // Only with `work_off_task`: run it on another thread and
//!             // feed back what `run` returns (here, in place).
//!             replica.handle_input(now_ms, work.run());
//!         }
//!     }
//! }
//! // 3. Sleep until the next deadline (or an input), then tick.
//! if let Some((deadline, _timer)) = replica.poll_timeout() {
//!     now_ms = deadline;
//!     replica.handle_input(now_ms, Input::Tick);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod capabilities;
mod catchup;
mod compaction;
pub mod config;
mod departure;
mod drain;
mod failover;
mod io;
mod journal;
mod late_calls;
mod missing;
mod nodes;
mod offload;
mod outside;
mod overlay;
mod purge;
mod push;
mod quorum;
mod reads;
mod reports;
mod round;
mod serve;
pub mod stats;
mod timers;
mod votes;
mod walk;
pub mod wire;
mod writes;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Arc;

/// The digest tree lives with the room set it summarises.
pub use crate::rooms::digest;
pub use config::ReplicaConfig;
pub use failover::{MoveKind, Rehomed};
pub use io::{Event, Input, Output, SyncPath, Timer, Work, Worked};
pub use journal::{Incident, IncidentKind};
pub use nodes::{MoveView, NodesView};
pub use stats::ReplicaStats;

use crate::error::Error;
use crate::hlc::{Hlc, Timestamp};
use crate::ids::{NodeId, RoomId, StoreId};
use crate::membership::Membership;
use crate::rooms::RoomSet;
use crate::storage::{keys, Batch, KvRead, StorageError};
use overlay::Staged;
use round::Round;
use wire::{Body, Envelope};

#[derive(Debug, Default)]
struct Peer {
    up: bool,
    /// Our position in this peer's change log: we hold everything it had
    /// up to this stamp.
    cursor: Option<Timestamp>,
    round: Option<Round>,
    /// Where an interrupted full snapshot resumes.
    snapshot_resume: Option<RoomId>,
    /// The messages past version 1 the peer said it reads (`Body::Reads`);
    /// 0 until it says.
    reads: u64,
    /// Whether we told the peer what we read.
    told_reads: bool,
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
    /// Seeded by `seed` and the node's id: replicas given the same seed
    /// (a daemon's is 0) must still draw apart (jitter, anti-entropy order).
    fn for_replica(seed: u64, node: &NodeId) -> Self {
        let hash = blake3::hash(node.as_str().as_bytes());
        let mut top = [0u8; 8];
        top.copy_from_slice(&hash.as_bytes()[..8]);
        Self((seed ^ u64::from_le_bytes(top)) | 1)
    }

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
    /// Components, each with its own state: push, purge, anti-entropy,
    /// failover and drains.
    outbox: push::Outbox,
    /// Rooms a push left waiting for changes, to ask for once the race is over.
    missing: missing::Waiting,
    purge: purge::State,
    compaction: compaction::State,
    offload: offload::State,
    anti_entropy: round::State,
    failover: failover::State,
    departure: departure::State,
    /// Entries in the incident journal (to keep it bounded).
    journal_len: usize,
    rng: Rng,
    stats: ReplicaStats,
    members: Membership,
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
        let (incarnation, store_id) = identity(store.as_ref(), &config, now_ms)?;
        let actor =
            crate::ids::actor_for(&config.node, store_id.as_ref(), incarnation, config.seed);
        let rooms = RoomSet::open(store.as_ref(), actor, hot)?;
        let members = Membership::new(
            config.node.clone(),
            incarnation,
            config.detector.clone(),
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
            missing: missing::Waiting::default(),
            purge: purge::State::new(now_ms, &config),
            compaction: compaction::State::new(now_ms, &config, incarnation),
            offload: offload::State::new(incarnation),
            anti_entropy: round::State::new(now_ms),
            failover: failover::State::new(now_ms),
            departure: departure::State::default(),
            journal_len: 0,
            rng: Rng::for_replica(config.seed, &config.node),
            stats: ReplicaStats::default(),
            members,
            config,
        };
        replica.restore(incarnation, store_id)?;
        Ok(replica)
    }

    /// Reads what survives a restart and stages the incarnation bump (and
    /// a new store's identity).
    fn restore(&mut self, incarnation: u64, store_id: Option<StoreId>) -> Result<(), Error> {
        let mut batch = Batch::default();
        batch.put(
            keys::meta("incarnation"),
            incarnation.to_be_bytes().to_vec(),
        );
        if let Some(id) = store_id {
            batch.put(keys::meta(STORE_ID), id.0.to_vec());
        }
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
            self.purge.log_horizon = postcard::from_bytes(&bytes).ok();
        }
        // Stamps continue after the newest this store holds, even if the
        // wall clock is now behind them (see `Hlc::restore`).
        for prefix in [keys::LOG, keys::JOURNAL] {
            let key = self.store.last_key(prefix)?;
            if let Some(stamp) = key.and_then(|key| keys::stamp_of(prefix, &key)) {
                self.hlc.restore(stamp);
                if prefix == keys::LOG {
                    self.purge.log_newest_at_open = Some(stamp);
                }
            }
        }
        if let Some(horizon) = self.purge.log_horizon {
            self.hlc.restore(horizon);
        }
        self.restore_ended()?;
        self.restore_journal()?;
        self.finish_input();
        Ok(())
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Moves this replica's clock to `now_ms` (never backwards) without an
    /// input: reads between inputs (which session left long enough ago to
    /// leave the room JSON) then go by the driver's clock.
    pub fn observe_time(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    pub fn handle_input(&mut self, now_ms: u64, input: Input) {
        // Time never goes backwards, whatever the driver's clock does.
        self.now_ms = self.now_ms.max(now_ms);
        match input {
            Input::Message { from, bytes } => self.on_message(from, &bytes),
            Input::PeerUp { peer } => self.on_peer_up(peer),
            Input::PeerDown { peer } => self.on_peer_down(&peer),
            Input::Tick => self.on_tick(),
            Input::Worked(io::Worked(io::Done::Compaction(prepared))) => {
                self.on_compacted(*prepared)
            }
            Input::Worked(io::Worked(io::Done::Apply(applied))) => self.on_applied(*applied),
            Input::LocalWrite { id, room, op } => self.on_local_write(id, &room, &op),
            Input::Import { id, room, bytes } => self.on_import(id, room.as_ref(), &bytes),
            Input::ImportPrepared { id, prepared } => self.on_import_prepared(id, *prepared),
            Input::Apply { id, room, changes } => self.on_apply(id, &room, changes),
            Input::Health { app } => self.on_local_health(app),
            Input::Drain {
                node,
                rate_per_s,
                active,
            } => self.on_local_drain(node, rate_per_s, active),
            Input::Leave { intent } => self.on_local_leave(intent),
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
        self.send_watch();
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
            Body::LeafResp { round, rooms } => {
                let rooms = rooms
                    .into_iter()
                    .map(|(room, digest)| wire::LeafRoom {
                        room,
                        digest,
                        heads: Vec::new(),
                    })
                    .collect();
                self.on_leaves(from, round, rooms)
            }
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
            Body::Compaction {
                format,
                ask,
                requests,
            } => self.on_compaction(from, format, ask, requests),
            Body::Swim { data } => self.on_swim(from, &data),
            Body::Health { report } => self.on_health_report(from, report),
            Body::HealthAsk { report } => {
                self.on_health_report(from, report);
                self.answer_ask(from);
            }
            Body::Drain { order } => self.on_peer_drain(from, order),
            Body::Leaving {
                intent,
                incarnation,
            } => self.on_leaving(from, intent, incarnation),
            Body::LeavingAck => self.on_leaving_ack(from),
            Body::Reads { reads, ask } => self.on_reads(from, reads, ask),
            Body::LeafHeadsReq { round, buckets } => self.serve_leaf_heads(from, round, &buckets),
            Body::LeafHeadsResp { round, rooms } => self.on_leaves(from, round, rooms),
            // Without failure detection nothing would send what these
            // queue (`send_watch`).
            Body::WatchCheck { .. }
            | Body::WatchSeen { .. }
            | Body::Suspected { .. }
            | Body::Refuted { .. }
                if !self.config.failure_detection => {}
            Body::WatchCheck { target } => {
                self.members.on_watch_check(self.now_ms, from, &target);
            }
            Body::WatchSeen { target } => self.members.on_watch_seen(self.now_ms, from, &target),
            Body::Suspected { incarnation, swim } => self.on_suspected(from, incarnation, swim),
            Body::Refuted { incarnation, swim } => {
                self.members
                    .on_refuted(self.now_ms, from, incarnation, swim);
                self.after_membership();
            }
        }
    }

    fn on_peer_up(&mut self, peer: NodeId) {
        if peer == self.config.node {
            return;
        }
        let state = self.peers.entry(peer.clone()).or_default();
        let was_up = std::mem::replace(&mut state.up, true);
        if !was_up {
            // It may come back as another build: what it reads is said again.
            state.reads = 0;
            state.told_reads = false;
        }
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
        self.close_round(peer);
        if let Some(state) = self.peers.get_mut(peer) {
            let was_up = std::mem::replace(&mut state.up, false);
            if was_up {
                self.journal(journal::IncidentKind::PeerDown, format!("{peer}"));
            }
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

/// The meta key of the store's identity (`ids::StoreId`).
const STORE_ID: &str = "store-id";

/// The next incarnation number of this store (see `Engine::with_storage`)
/// and its identity. A new store (no incarnation yet) gets an identity
/// here; a store from a build that kept none goes on without one, so its
/// actors do not change.
fn identity(
    store: &dyn KvRead,
    config: &ReplicaConfig,
    now_ms: u64,
) -> Result<(u64, Option<StoreId>), Error> {
    let current = store.get(&keys::meta("incarnation"))?;
    let stored = store.get(&keys::meta(STORE_ID))?;
    let stored_id = stored.is_some();
    let id = match stored {
        Some(bytes) => match <[u8; 16]>::try_from(bytes.as_slice()) {
            Ok(id) => Some(StoreId(id)),
            // A store whose identity is unreadable cannot tell its
            // actors from another life's: refuse to open it.
            Err(_) => {
                return Err(StorageError::Malformed {
                    key: STORE_ID.into(),
                    reason: format!("{} bytes, not 16", bytes.len()),
                }
                .into())
            }
        },
        None if current.is_none() => Some(StoreId::new(&config.node, config.seed, now_ms)),
        None => None,
    };
    // An unreadable (or, beside an identity, missing) incarnation would
    // start again at 1 and reuse an earlier run's actors: refuse to open.
    let malformed = |reason: String| StorageError::Malformed {
        key: "incarnation".into(),
        reason,
    };
    let current = match current {
        Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| malformed(format!("{} bytes, not 8", bytes.len())))?,
        None if stored_id => {
            return Err(malformed("missing beside the store's identity".into()).into())
        }
        None => 0,
    };
    let next = current
        .checked_add(1)
        .ok_or_else(|| malformed("at its largest value".into()))?;
    Ok((next, id))
}

/// Rooms named in a batch of ids, deduplicated (for `Purged` replies).
fn unique(rooms: Vec<RoomId>) -> Vec<RoomId> {
    rooms
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
