//! N real replicas on a virtual clock: the simulator's driver. It runs the
//! same `Replica` the daemon runs, feeding it inputs and carrying out its
//! outputs: persists go to an in-memory store that models durability (a
//! crash loses what was not flushed), sends and broadcasts go through the
//! simulated network.

mod events;
mod faults;
pub mod preload;
mod reads;
mod work;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chorus_engine::membership::{AppHealth, Grade};
use chorus_engine::replica::wire::{self, Body};
use chorus_engine::replica::{Event, Input, Output, Replica, ReplicaConfig};
use chorus_engine::storage::{Kv, MemKv};
use chorus_engine::{Head, NodeId, Owner, RoomId, RoomOp, SessionId};

use crate::clock::NodeClock;
use crate::failover::FailoverStats;
use crate::mutation::Mutation;
use crate::net::{Channel, Delivery, NetConfig, Network};
use crate::rng::Rng;
use crate::stats::StatTotals;

/// The cluster id every simulated replica shares.
pub const SIM_CLUSTER: u64 = 0xC0_5E_ED;

/// Steps at one instant before the driver declares a livelock.
const STEPS_PER_INSTANT_MAX: u64 = 200_000;

/// A write the cluster acknowledged: it must survive everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedWrite {
    /// The node that acknowledged the write.
    pub node: usize,
    /// A node whose durable store is known to hold the write: the acking
    /// node, until a wipe moves the duty to a replica that had it.
    pub holder: usize,
    pub room: RoomId,
    pub heads: Vec<Head>,
    pub at_ms: u64,
    /// The owner this write gave a call (a join or a move), if any.
    pub owner: Option<(SessionId, Owner)>,
    /// The operation, for checking a compacted room by content.
    pub op: RoomOp,
}

#[derive(Debug, Clone)]
struct PendingWrite {
    node: usize,
    room: RoomId,
    owner: Option<(SessionId, Owner)>,
    op: RoomOp,
}

/// A replica reported `Event::Purged`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeRecord {
    pub node: usize,
    pub room: RoomId,
    pub at_ms: u64,
}

pub struct SimNode {
    pub id: NodeId,
    pub kv: Arc<MemKv>,
    pub replica: Option<Replica>,
    pub clock: NodeClock,
    /// Started at least once. A late joiner is not a member until it joins,
    /// so no replica counts it among its peers before then.
    pub member: bool,
    /// The replica's next timer, in true time (cached after every input).
    next_timer: Option<u64>,
    /// Results of `Output::Work` and when they come back (true time).
    work: Vec<(u64, Input)>,
    /// Times its store was wiped: each wipe gives the node another seed,
    /// as a daemon gets one from the operating system on each start, so
    /// its new store's identity differs even at the same clock reading.
    wipes: u64,
    /// Times the node started: (node, starts) names one life of it.
    starts: u64,
}

impl SimNode {
    pub fn is_up(&self) -> bool {
        self.replica.is_some()
    }
}

/// Counters of one run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RunCounters {
    pub writes_attempted: u64,
    pub writes_acked: u64,
    pub writes_refused: u64,
    /// Refusals by error kind (`UnknownRoom`, `StaleOwner`, …).
    pub refused_by_reason: BTreeMap<String, u64>,
    pub events: u64,
    pub rejected: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub wipes: u64,
    /// Bytes of the automerge changes local writes produced (as pushed).
    pub local_change_bytes: u64,
    /// A broadcast's copies beyond the one its sender's stats count, in
    /// bytes by message kind: with those stats, the bytes on the network.
    pub broadcast_copies_by_kind: BTreeMap<&'static str, u64>,
}

pub struct Cluster {
    pub now_ms: u64,
    pub nodes: Vec<SimNode>,
    pub net: Network,
    pub rng: Rng,
    pub acked: Vec<AckedWrite>,
    /// Every session whose leave was ever acknowledged. Kept even when a
    /// wipe releases the leave itself: a compaction may have pruned the
    /// session meanwhile, and its join must not then count as lost.
    pub left_acked: BTreeSet<(RoomId, SessionId)>,
    pub purges: Vec<PurgeRecord>,
    pub counters: RunCounters,
    pub failover: FailoverStats,
    /// Counters of replicas that crashed (their successors start at zero).
    retired: StatTotals,
    /// Lines of the `--trace` file, when asked for.
    pub trace_lines: Option<Vec<String>>,
    configure: Box<dyn Fn(&mut ReplicaConfig)>,
    /// Nodes still running the previous build (`older_builds`).
    older: BTreeSet<usize>,
    /// Set when a room was compacted while an older build was a member.
    pub gate_breach: Option<String>,
    seed: u64,
    mutation: Option<Mutation>,
    next_write: u64,
    pending_writes: BTreeMap<u64, PendingWrite>,
    /// Unordered pairs whose replicas have been told the link is up.
    links: BTreeSet<(usize, usize)>,
    /// When each blocked direction last opened again (a heal, an uncut, a
    /// partition replaced): a conviction whose suspicion began while the
    /// pair was cut is a partition conviction even if it lands just after.
    pub(crate) unblocked_at: BTreeMap<(usize, usize), u64>,
    trace: blake3::Hasher,
    steps_at_instant: (u64, u64),
    /// How long a replica's `Output::Work` takes, `[min, max]` ms.
    work_ms: (u64, u64),
    /// Nodes the others do not list among their configured peers.
    unlisted: BTreeSet<usize>,
}

impl Cluster {
    /// `n` replicas named `node-0..`, all started and connected.
    pub fn new(
        n: usize,
        seed: u64,
        net: NetConfig,
        configure: impl Fn(&mut ReplicaConfig) + 'static,
    ) -> Self {
        Self::with_absent(n, seed, net, configure, &[], &[], &[])
    }

    /// Like [`Cluster::new`], but the nodes in `absent` have not joined:
    /// they start with empty stores when [`Cluster::start`]ed. The nodes in
    /// `older` run the previous build until [`Cluster::upgrade`]d. The
    /// others start with `preloaded` in their stores (`preload::rooms`).
    pub fn with_absent(
        n: usize,
        seed: u64,
        net: NetConfig,
        configure: impl Fn(&mut ReplicaConfig) + 'static,
        absent: &[usize],
        older: &[usize],
        preloaded: &[chorus_engine::storage::Entry],
    ) -> Self {
        let mut cluster = Self {
            now_ms: 0,
            nodes: Vec::with_capacity(n),
            net: Network::new(net),
            rng: Rng::new(seed),
            acked: Vec::new(),
            left_acked: BTreeSet::new(),
            purges: Vec::new(),
            counters: RunCounters::default(),
            failover: FailoverStats::default(),
            retired: StatTotals::default(),
            trace_lines: None,
            configure: Box::new(configure),
            older: older.iter().copied().collect(),
            gate_breach: None,
            seed,
            mutation: None,
            next_write: 1,
            pending_writes: BTreeMap::new(),
            links: BTreeSet::new(),
            unblocked_at: BTreeMap::new(),
            trace: blake3::Hasher::new(),
            steps_at_instant: (0, 0),
            work_ms: (0, 0),
            unlisted: BTreeSet::new(),
        };
        for i in 0..n {
            cluster.nodes.push(SimNode {
                id: node_id(i),
                kv: Arc::new(MemKv::new()),
                replica: None,
                clock: NodeClock::default(),
                member: !absent.contains(&i),
                next_timer: None,
                work: Vec::new(),
                wipes: 0,
                starts: 0,
            });
        }
        for i in 0..n {
            if !absent.contains(&i) {
                preload::install(&cluster.nodes[i].kv, preloaded);
                cluster.start(i);
            }
        }
        cluster
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Test only: corrupts one node's driver (see [`Mutation`]).
    pub fn set_mutation(&mut self, mutation: Option<Mutation>) {
        self.mutation = mutation;
    }

    /// Keeps a line per notable event (for `--trace`).
    pub fn enable_trace_lines(&mut self) {
        self.trace_lines.get_or_insert_with(Vec::new);
    }

    fn config_for(&self, i: usize) -> ReplicaConfig {
        let mut config = ReplicaConfig::new(self.nodes[i].id.clone(), SIM_CLUSTER);
        config.peers = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, n)| *j != i && n.member && !self.unlisted.contains(j))
            .map(|(_, n)| n.id.clone())
            .collect();
        // Every simulated node serves the workload's region unless the
        // scenario says otherwise (through `configure`).
        config.region = chorus_engine::RegionId::parse("region-a").expect("a valid region");
        config.seed = self
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(i as u64)
            ^ self.nodes[i].wipes.wrapping_mul(0xD1B5_4A32_D192_ED03);
        (self.configure)(&mut config);
        if self.older.contains(&i) {
            // A build from before history compaction: it neither advertises
            // nor performs it.
            config.compaction = false;
        }
        config
    }

    /// Starts (or restarts) node `i` from what its store holds durably. A
    /// node that has not joined yet joins.
    pub fn start(&mut self, i: usize) {
        if self.nodes[i].is_up() {
            return;
        }
        let joining = !self.nodes[i].member;
        self.nodes[i].member = true;
        self.failover.restarted(i, self.now_ms);
        let config = self.config_for(i);
        let local = self.nodes[i].clock.local(self.now_ms);
        let kv = self.nodes[i].kv.clone();
        // A store the simulator made itself cannot fail to open; if it does,
        // that is a bug in the engine the run must surface (as a panic the
        // runner reports).
        let replica = match Replica::new(config, kv, local) {
            Ok(replica) => replica,
            Err(err) => panic!("node {i}: the replica does not open on its own store: {err}"),
        };
        self.nodes[i].replica = Some(replica);
        self.nodes[i].starts += 1;
        self.fault(if joining { "join" } else { "start" }, Some(i), "");
        self.drain(i);
        self.refresh_timer(i);
        self.refresh_links();
    }

    /// Kills node `i`: unflushed writes are lost, messages to it vanish.
    pub fn crash(&mut self, i: usize) {
        let Some(replica) = self.nodes[i].replica.take() else {
            return;
        };
        self.retired.add(replica.stats());
        self.counters.crashes += 1;
        let witnesses = (0..self.nodes.len())
            .filter(|&j| self.nodes[j].is_up())
            .collect();
        self.failover.crashed(i, self.now_ms, witnesses);
        self.fault("crash", Some(i), "");
        self.nodes[i].kv.crash();
        self.nodes[i].next_timer = None;
        // Work in flight dies with the process.
        self.nodes[i].work.clear();
        self.net.drop_node(i);
        self.pending_writes.retain(|_, w| w.node != i);
        self.refresh_links();
    }

    /// Node `i` loses its disk (crashing first if it is up). It stays down
    /// until restarted, then rejoins with an empty store.
    /// A wiped disk takes with it the writes no other replica had yet: the
    /// node's acknowledged writes stay owed only if a live replica holds
    /// them, and its purges are forgotten (it is a new replica).
    pub fn wipe(&mut self, i: usize) {
        self.crash(i);
        self.counters.wipes += 1;
        self.fault("wipe", Some(i), "");
        self.nodes[i].kv = Arc::new(MemKv::new());
        self.nodes[i].wipes += 1;
        self.purges.retain(|p| p.node != i);
        let acked = std::mem::take(&mut self.acked);
        for mut write in acked {
            if write.holder != i {
                self.acked.push(write);
            } else if let Some(j) = self.held_elsewhere(i, &write) {
                write.holder = j;
                self.acked.push(write);
            }
        }
    }

    /// A live replica other than `i` that holds `write` (remote changes
    /// are persisted durably, so its store keeps it through a crash).
    fn held_elsewhere(&mut self, i: usize, write: &AckedWrite) -> Option<usize> {
        self.nodes.iter_mut().enumerate().position(|(j, node)| {
            j != i
                && node
                    .replica
                    .as_mut()
                    .is_some_and(|r| write.heads.iter().all(|h| r.has_change(&write.room, h)))
        })
    }

    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].is_up() {
            return;
        }
        self.counters.restarts += 1;
        self.start(i);
    }

    /// Submits a local write on node `i`; its ack (or refusal) arrives as
    /// an event. Returns false if the node is down.
    pub fn write(&mut self, i: usize, room: &RoomId, op: RoomOp) -> bool {
        if !self.nodes[i].is_up() {
            return false;
        }
        self.counters.writes_attempted += 1;
        let id = self.next_write;
        self.next_write += 1;
        let owner = match &op {
            RoomOp::Join { request } => Some((
                request.session.clone(),
                Owner {
                    epoch: 1,
                    node: request.owner.clone(),
                },
            )),
            RoomOp::SetOwner { session, owner } => Some((session.clone(), owner.clone())),
            _ => None,
        };
        let pending = PendingWrite {
            node: i,
            room: room.clone(),
            owner,
            op: op.clone(),
        };
        self.pending_writes.insert(id, pending);
        let room = room.clone();
        self.input(i, Input::LocalWrite { id, room, op });
        true
    }

    fn input(&mut self, i: usize, input: Input) {
        let local = self.nodes[i].clock.local(self.now_ms);
        let Some(replica) = self.nodes[i].replica.as_mut() else {
            return;
        };
        replica.handle_input(local, input);
        self.drain(i);
        self.refresh_timer(i);
    }

    fn refresh_timer(&mut self, i: usize) {
        let now = self.now_ms;
        let node = &mut self.nodes[i];
        node.next_timer = node
            .replica
            .as_ref()
            .and_then(Replica::poll_timeout)
            .map(|(local, _)| node.clock.true_time_for(local, now));
    }

    /// Carries out every output of node `i`.
    fn drain(&mut self, i: usize) {
        loop {
            let Some(replica) = self.nodes[i].replica.as_mut() else {
                return;
            };
            let Some(output) = replica.poll_output() else {
                return;
            };
            match output {
                Output::Persist { batch, durable } => {
                    let flush = durable && self.mutation.as_ref().is_none_or(|m| m.flushes(i));
                    let kv = &self.nodes[i].kv;
                    let ok = kv.apply(batch).is_ok() && (!flush || kv.flush().is_ok());
                    assert!(ok, "the in-memory store only fails when told to");
                }
                Output::Send { to, bytes } => {
                    if let Some(j) = self.index_of(&to) {
                        self.trace_bytes(b"send", i, &bytes);
                        self.send(i, j, Channel::Stream, bytes);
                    }
                }
                Output::Broadcast { bytes } => {
                    self.trace_bytes(b"bcast", i, &bytes);
                    if let Ok(envelope) = wire::decode(&bytes) {
                        let copies = self.nodes.len().saturating_sub(2) as u64;
                        *self
                            .counters
                            .broadcast_copies_by_kind
                            .entry(envelope.body.kind())
                            .or_default() += copies * bytes.len() as u64;
                        if let Body::Push { rooms } = envelope.body {
                            let changes = rooms.iter().flat_map(|r| r.changes.iter());
                            self.counters.local_change_bytes +=
                                changes.map(|c| c.len() as u64).sum::<u64>();
                        }
                    }
                    for j in 0..self.nodes.len() {
                        if j != i {
                            self.send(i, j, Channel::Gossip, bytes.clone());
                        }
                    }
                }
                Output::Datagram { to, bytes } => {
                    if let Some(j) = self.index_of(&to) {
                        self.trace_bytes(b"dgram", i, &bytes);
                        self.send(i, j, Channel::Gossip, bytes);
                    }
                }
                Output::Event(event) => self.on_event(i, event),
                Output::Work(work) => self.hand_off(i, work),
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, channel: Channel, bytes: Vec<u8>) {
        let delivery = Delivery {
            from,
            to,
            channel,
            bytes,
        };
        self.net.send(self.now_ms, delivery, &mut self.rng);
    }

    /// A fault or lifecycle change: hashed into the trace and noted.
    fn fault(&mut self, what: &str, node: Option<usize>, detail: &str) {
        self.trace.update(b"fault");
        self.trace.update(&self.now_ms.to_le_bytes());
        self.trace.update(what.as_bytes());
        self.trace
            .update(&node.map_or(u64::MAX, |n| n as u64).to_le_bytes());
        self.trace.update(detail.as_bytes());
        self.note(node, || format!("{what} {detail}").trim_end().to_string());
    }

    /// Adds a line to the trace file, if one is kept.
    pub fn note(&mut self, node: Option<usize>, line: impl FnOnce() -> String) {
        if let Some(lines) = self.trace_lines.as_mut() {
            let who = node.map_or("cluster".to_string(), |n| format!("node-{n}"));
            lines.push(format!("{:>9} {who:<8} {}", self.now_ms, line()));
        }
    }

    fn trace_bytes(&mut self, tag: &[u8], node: usize, bytes: &[u8]) {
        self.trace.update(tag);
        self.trace.update(&self.now_ms.to_le_bytes());
        self.trace.update(&(node as u64).to_le_bytes());
        self.trace.update(bytes);
    }

    /// A hash of every message sent and every fault, with its time and
    /// sender: equal for equal runs.
    pub fn trace_hash(&self) -> String {
        self.trace.finalize().to_hex()[..16].to_string()
    }

    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| &n.id == id)
    }

    /// The earliest moment something happens (a delivery or a timer).
    pub fn next_event_ms(&self) -> Option<u64> {
        let timers = self.nodes.iter().filter_map(|n| n.next_timer);
        let work = self
            .nodes
            .iter()
            .flat_map(|n| n.work.iter().map(|(at, _)| *at));
        timers.chain(work).chain(self.net.next_due()).min()
    }

    /// Processes everything due at or before `until`, advancing the clock.
    pub fn run_until(&mut self, until: u64) {
        while let Some(at) = self.next_event_ms() {
            if at > until {
                break;
            }
            self.now_ms = self.now_ms.max(at);
            self.step_now();
        }
        self.now_ms = self.now_ms.max(until);
    }

    /// Delivers every due message and fires every due timer at `now_ms`.
    fn step_now(&mut self) {
        let (instant, steps) = self.steps_at_instant;
        let steps = if instant == self.now_ms { steps + 1 } else { 1 };
        self.steps_at_instant = (self.now_ms, steps);
        assert!(
            steps < STEPS_PER_INSTANT_MAX,
            "livelock: {steps} steps at {} ms without time advancing",
            self.now_ms
        );
        while let Some(delivery) = self.net.pop_due(self.now_ms) {
            let Some(d) = delivery else { continue };
            if !self.nodes[d.to].is_up() {
                self.net.stats.dropped += 1;
                continue;
            }
            let bytes = match &self.mutation {
                Some(m) => m.filter_delivery(d.to, d.bytes),
                None => d.bytes,
            };
            let from = self.nodes[d.from].id.clone();
            self.input(d.to, Input::Message { from, bytes });
        }
        self.deliver_work();
        for i in 0..self.nodes.len() {
            if self.nodes[i].next_timer.is_some_and(|t| t <= self.now_ms) {
                self.input(i, Input::Tick);
            }
        }
    }
}

/// The index of a simulated node's id (`node-7` → 7).
pub fn node_index(id: &NodeId) -> Option<usize> {
    id.as_str().strip_prefix("node-")?.parse().ok()
}

pub fn node_id(i: usize) -> NodeId {
    NodeId::parse(format!("node-{i}")).expect("generated ids are valid")
}
