//! N real replicas on a virtual clock: the simulator's driver. It runs the
//! same `Replica` the daemon runs, feeding it inputs and carrying out its
//! outputs: persists go to an in-memory store that models durability (a
//! crash loses what was not flushed), sends and broadcasts go through the
//! simulated network.

use std::collections::BTreeMap;
use std::sync::Arc;

use chorus_engine::replica::{Event, Input, Output, Replica, ReplicaConfig};
use chorus_engine::storage::{Kv, MemKv};
use chorus_engine::{Head, NodeId, RoomId, RoomOp, RoomSnapshot};

use crate::net::{Channel, Delivery, NetConfig, Network};
use crate::rng::Rng;

/// The cluster id every simulated replica shares.
pub const SIM_CLUSTER: u64 = 0xC0_5E_ED;

/// A write the cluster acknowledged: it must survive everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedWrite {
    pub node: usize,
    pub room: RoomId,
    pub heads: Vec<Head>,
    pub at_ms: u64,
}

pub struct SimNode {
    pub id: NodeId,
    pub kv: Arc<MemKv>,
    pub replica: Option<Replica>,
    /// This node's clock minus the true time.
    pub clock_offset_ms: i64,
}

impl SimNode {
    pub fn is_up(&self) -> bool {
        self.replica.is_some()
    }

    fn local_time(&self, now: u64) -> u64 {
        now.saturating_add_signed(self.clock_offset_ms)
    }

    fn global_time(&self, local: u64) -> u64 {
        local.saturating_add_signed(-self.clock_offset_ms)
    }
}

/// Counters of one run.
#[derive(Debug, Default, Clone)]
pub struct RunCounters {
    pub writes_attempted: u64,
    pub writes_acked: u64,
    pub writes_refused: u64,
    pub events: u64,
    pub crashes: u64,
    pub restarts: u64,
}

pub struct Cluster {
    pub now_ms: u64,
    pub nodes: Vec<SimNode>,
    pub net: Network,
    pub rng: Rng,
    pub acked: Vec<AckedWrite>,
    pub counters: RunCounters,
    configure: fn(&mut ReplicaConfig),
    next_write: u64,
    pending_writes: BTreeMap<u64, (usize, RoomId)>,
    trace: blake3::Hasher,
}

impl Cluster {
    /// `n` replicas named `node-0..`, all connected.
    pub fn new(n: usize, seed: u64, net: NetConfig, configure: fn(&mut ReplicaConfig)) -> Self {
        let ids: Vec<NodeId> = (0..n).map(node_id).collect();
        let mut cluster = Self {
            now_ms: 0,
            nodes: Vec::with_capacity(n),
            net: Network::new(net),
            rng: Rng::new(seed),
            acked: Vec::new(),
            counters: RunCounters::default(),
            configure,
            next_write: 1,
            pending_writes: BTreeMap::new(),
            trace: blake3::Hasher::new(),
        };
        for id in ids {
            let kv = Arc::new(MemKv::new());
            cluster.nodes.push(SimNode {
                id,
                kv,
                replica: None,
                clock_offset_ms: 0,
            });
        }
        for i in 0..n {
            cluster.start(i);
        }
        cluster
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn config_for(&self, i: usize) -> ReplicaConfig {
        let mut config = ReplicaConfig::new(self.nodes[i].id.clone(), SIM_CLUSTER);
        config.peers = self
            .nodes
            .iter()
            .filter(|n| n.id != self.nodes[i].id)
            .map(|n| n.id.clone())
            .collect();
        config.seed = self.nodes.len() as u64 * 1_000 + i as u64;
        (self.configure)(&mut config);
        config
    }

    /// Starts (or restarts) node `i` from what its store holds durably.
    pub fn start(&mut self, i: usize) {
        let config = self.config_for(i);
        let local = self.nodes[i].local_time(self.now_ms);
        let kv = self.nodes[i].kv.clone();
        // A store the simulator made itself cannot fail to open; if it does,
        // that is a bug in the engine the run must surface.
        let replica = Replica::new(config, kv, local).expect("replica opens on its own store");
        self.nodes[i].replica = Some(replica);
        self.drain(i);
        for j in 0..self.nodes.len() {
            if j != i
                && self.nodes[j].is_up()
                && !self.net.is_blocked(i, j)
                && !self.net.is_blocked(j, i)
            {
                self.input(
                    i,
                    Input::PeerUp {
                        peer: self.nodes[j].id.clone(),
                    },
                );
                self.input(
                    j,
                    Input::PeerUp {
                        peer: self.nodes[i].id.clone(),
                    },
                );
            }
        }
    }

    /// Kills node `i`: unflushed writes are lost, messages to it vanish.
    pub fn crash(&mut self, i: usize) {
        if self.nodes[i].replica.take().is_none() {
            return;
        }
        self.counters.crashes += 1;
        self.nodes[i].kv.crash();
        self.net.drop_node(i);
        self.pending_writes.retain(|_, (node, _)| *node != i);
        let id = self.nodes[i].id.clone();
        for j in 0..self.nodes.len() {
            if j != i && self.nodes[j].is_up() {
                self.input(j, Input::PeerDown { peer: id.clone() });
            }
        }
    }

    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].is_up() {
            return;
        }
        self.counters.restarts += 1;
        self.start(i);
    }

    /// Cuts the cluster into groups that cannot talk to each other.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        let group_of = |n: usize| groups.iter().position(|g| g.contains(&n));
        for a in 0..self.nodes.len() {
            for b in 0..self.nodes.len() {
                if a != b && group_of(a) != group_of(b) {
                    self.cut(a, b);
                }
            }
        }
    }

    /// `from` can no longer reach `to` (the other direction still works).
    pub fn cut(&mut self, from: usize, to: usize) {
        if self.net.is_blocked(from, to) {
            return;
        }
        self.net.block(from, to);
        // A connection needs both directions: both ends see it drop.
        self.link_event(from, to, false);
    }

    pub fn heal(&mut self) {
        let mut was_blocked = Vec::new();
        for a in 0..self.nodes.len() {
            for b in 0..self.nodes.len() {
                if self.net.is_blocked(a, b) {
                    was_blocked.push((a, b));
                }
            }
        }
        self.net.heal();
        for (a, b) in was_blocked {
            self.link_event(a, b, true);
        }
    }

    fn link_event(&mut self, a: usize, b: usize, up: bool) {
        for (x, y) in [(a, b), (b, a)] {
            if self.nodes[x].is_up() && self.nodes[y].is_up() {
                let peer = self.nodes[y].id.clone();
                let input = if up {
                    Input::PeerUp { peer }
                } else {
                    Input::PeerDown { peer }
                };
                self.input(x, input);
            }
        }
    }

    pub fn set_clock_offset(&mut self, i: usize, offset_ms: i64) {
        self.nodes[i].clock_offset_ms = offset_ms;
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
        self.pending_writes.insert(id, (i, room.clone()));
        self.input(
            i,
            Input::LocalWrite {
                id,
                room: room.clone(),
                op,
            },
        );
        true
    }

    fn input(&mut self, i: usize, input: Input) {
        let local = self.nodes[i].local_time(self.now_ms);
        let Some(replica) = self.nodes[i].replica.as_mut() else {
            return;
        };
        replica.handle_input(local, input);
        self.drain(i);
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
                    let kv = &self.nodes[i].kv;
                    let ok = kv.apply(batch).is_ok() && (!durable || kv.flush().is_ok());
                    assert!(ok, "the in-memory store only fails when told to");
                }
                Output::Send { to, bytes } => {
                    if let Some(j) = self.index_of(&to) {
                        self.trace_bytes(b"send", i, &bytes);
                        let d = Delivery {
                            from: i,
                            to: j,
                            channel: Channel::Stream,
                            bytes,
                        };
                        self.net.send(self.now_ms, d, &mut self.rng);
                    }
                }
                Output::Broadcast { bytes } => {
                    self.trace_bytes(b"bcast", i, &bytes);
                    for j in 0..self.nodes.len() {
                        if j != i {
                            let d = Delivery {
                                from: i,
                                to: j,
                                channel: Channel::Gossip,
                                bytes: bytes.clone(),
                            };
                            self.net.send(self.now_ms, d, &mut self.rng);
                        }
                    }
                }
                Output::Event(event) => self.on_event(i, event),
            }
        }
    }

    fn on_event(&mut self, i: usize, event: Event) {
        self.counters.events += 1;
        if let Event::WriteDone { id, result } = event {
            let Some((_, room)) = self.pending_writes.remove(&id) else {
                return;
            };
            match result {
                Ok(ack) => {
                    self.counters.writes_acked += 1;
                    self.acked.push(AckedWrite {
                        node: i,
                        room,
                        heads: ack.heads,
                        at_ms: self.now_ms,
                    });
                }
                Err(_) => self.counters.writes_refused += 1,
            }
        }
    }

    fn trace_bytes(&mut self, tag: &[u8], node: usize, bytes: &[u8]) {
        self.trace.update(tag);
        self.trace.update(&self.now_ms.to_le_bytes());
        self.trace.update(&(node as u64).to_le_bytes());
        self.trace.update(bytes);
    }

    /// A hash of every message sent, with its time and sender: equal for
    /// equal runs.
    pub fn trace_hash(&self) -> String {
        self.trace.finalize().to_hex()[..16].to_string()
    }

    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| &n.id == id)
    }

    /// The earliest moment something happens (a delivery or a timer).
    pub fn next_event_ms(&self) -> Option<u64> {
        let timers = self.nodes.iter().filter_map(|n| {
            let (local, _) = n.replica.as_ref()?.poll_timeout()?;
            Some(n.global_time(local))
        });
        timers.chain(self.net.next_due()).min()
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
        while let Some(delivery) = self.net.pop_due(self.now_ms) {
            let Some(d) = delivery else { continue };
            if self.nodes[d.to].is_up() {
                let from = self.nodes[d.from].id.clone();
                self.input(
                    d.to,
                    Input::Message {
                        from,
                        bytes: d.bytes,
                    },
                );
            }
        }
        for i in 0..self.nodes.len() {
            let due = self.nodes[i]
                .replica
                .as_ref()
                .and_then(|r| r.poll_timeout())
                .is_some_and(|(local, _)| self.nodes[i].global_time(local) <= self.now_ms);
            if due {
                self.input(i, Input::Tick);
            }
        }
    }

    /// Live replicas' digest roots are all equal.
    pub fn converged(&self) -> bool {
        let mut roots = self
            .nodes
            .iter()
            .filter_map(|n| n.replica.as_ref().map(Replica::root));
        match roots.next() {
            Some(first) => roots.all(|r| r == first),
            None => true,
        }
    }

    /// Runs until converged (checked every `check_ms`) or `budget_ms` passes.
    /// Returns the time convergence was first seen.
    pub fn run_until_converged(&mut self, budget_ms: u64, check_ms: u64) -> Option<u64> {
        let deadline = self.now_ms + budget_ms;
        loop {
            if self.converged() {
                return Some(self.now_ms);
            }
            if self.now_ms >= deadline {
                return None;
            }
            let next = (self.now_ms + check_ms).min(deadline);
            self.run_until(next);
        }
    }

    /// A room as node `i` sees it.
    pub fn room(&mut self, i: usize, room: &RoomId) -> Option<RoomSnapshot> {
        self.nodes[i].replica.as_mut()?.room(room).ok().flatten()
    }
}

pub fn node_id(i: usize) -> NodeId {
    NodeId::parse(format!("node-{i}")).expect("generated ids are valid")
}
