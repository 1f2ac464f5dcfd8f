//! A few replicas wired directly to each other on a virtual clock (quinn's
//! `Pair`, for more than two): every output is carried out at once, no
//! faults beyond the links a test cuts. For protocol tests that want to see
//! exactly which path a round took and what it cost.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use chorus_engine::replica::wire;
use chorus_engine::replica::{Event, Input, Output, Replica, ReplicaConfig, Work};
use chorus_engine::storage::{Kv, MemKv};
use chorus_engine::{NodeId, RoomId, RoomOp};

pub const CLUSTER: u64 = 42;

pub struct Member {
    pub id: NodeId,
    pub kv: Arc<MemKv>,
    pub replica: Replica,
    pub events: Vec<Event>,
    /// `Output::Work` not yet run (`Net::finish_work`).
    pub work: Vec<Work>,
}

pub struct Net {
    pub now_ms: u64,
    pub members: Vec<Member>,
    /// Directed links that drop everything.
    pub cut: BTreeSet<(usize, usize)>,
    /// Message kinds dropped on every link (a peer that cannot read them).
    pub dropped_kinds: BTreeSet<&'static str>,
    /// Rooms named in `ChangesReq`s, per sender.
    pub rooms_asked: BTreeMap<usize, u64>,
    /// Bytes sent per (from, to, message kind).
    pub bytes: BTreeMap<(usize, usize, &'static str), u64>,
    queue: VecDeque<(usize, usize, Vec<u8>)>,
    next_write: u64,
}

/// Far more than any test's input sets off.
const DELIVERIES_PER_INPUT_MAX: u64 = 100_000;

pub fn config(id: &NodeId, all: &[NodeId], tweak: fn(&mut ReplicaConfig)) -> ReplicaConfig {
    let mut config = ReplicaConfig::new(id.clone(), CLUSTER);
    config.peers = all.iter().filter(|p| *p != id).cloned().collect();
    // Protocol tests count exact bytes per message kind; failure detection
    // (its own tests switch it back on) would add its traffic.
    config.failure_detection = false;
    tweak(&mut config);
    config
}

impl Net {
    pub fn new(n: usize, tweak: fn(&mut ReplicaConfig)) -> Self {
        let ids: Vec<NodeId> = (0..n)
            .map(|i| NodeId::parse(format!("r{i}")).expect("valid"))
            .collect();
        let members = ids
            .iter()
            .map(|id| {
                let kv = Arc::new(MemKv::new());
                let replica =
                    Replica::new(config(id, &ids, tweak), kv.clone(), 0).expect("replica opens");
                Member {
                    id: id.clone(),
                    kv,
                    replica,
                    events: Vec::new(),
                    work: Vec::new(),
                }
            })
            .collect();
        let mut net = Self {
            now_ms: 0,
            members,
            cut: BTreeSet::new(),
            dropped_kinds: BTreeSet::new(),
            rooms_asked: BTreeMap::new(),
            bytes: BTreeMap::new(),
            queue: VecDeque::new(),
            next_write: 1,
        };
        for i in 0..n {
            net.drain(i);
        }
        net
    }

    pub fn connect_all(&mut self) {
        for i in 0..self.members.len() {
            for j in 0..self.members.len() {
                if i != j {
                    let peer = self.members[j].id.clone();
                    self.input(i, Input::PeerUp { peer });
                }
            }
        }
    }

    /// Cuts both directions between `a` and `b` and tells both ends.
    pub fn disconnect(&mut self, a: usize, b: usize) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
        let (ida, idb) = (self.members[a].id.clone(), self.members[b].id.clone());
        self.input(a, Input::PeerDown { peer: idb });
        self.input(b, Input::PeerDown { peer: ida });
    }

    /// Restores both directions; `a` learns of it first (and so starts the
    /// first sync round: this harness runs a round to its end at once).
    pub fn reconnect(&mut self, a: usize, b: usize) {
        self.cut.remove(&(a, b));
        self.cut.remove(&(b, a));
        let (ida, idb) = (self.members[a].id.clone(), self.members[b].id.clone());
        self.input(a, Input::PeerUp { peer: idb });
        self.input(b, Input::PeerUp { peer: ida });
    }

    pub fn write(&mut self, i: usize, room: &RoomId, op: RoomOp) {
        let id = self.next_write;
        self.next_write += 1;
        self.input(
            i,
            Input::LocalWrite {
                id,
                room: room.clone(),
                op,
            },
        );
    }

    pub fn input(&mut self, i: usize, input: Input) {
        self.members[i].replica.handle_input(self.now_ms, input);
        self.drain(i);
        self.deliver();
    }

    /// Runs member `i`'s work handed off so far and hands the results back.
    #[allow(dead_code)] // not every test file uses it
    pub fn finish_work(&mut self, i: usize) {
        for work in std::mem::take(&mut self.members[i].work) {
            let done = work.run();
            self.input(i, done);
        }
    }

    /// Rebuilds member `i`'s replica from what its store holds durably.
    pub fn restart(&mut self, i: usize, tweak: fn(&mut ReplicaConfig)) {
        let ids: Vec<NodeId> = self.members.iter().map(|m| m.id.clone()).collect();
        let m = &mut self.members[i];
        m.kv.crash();
        m.replica =
            Replica::new(config(&m.id, &ids, tweak), m.kv.clone(), self.now_ms).expect("reopens");
        // Work in flight died with the process.
        m.work.clear();
        self.drain(i);
    }

    /// Replaces member `i`'s store with an empty one (its data wiped or
    /// lost) and opens a replica of the same node on it.
    #[allow(dead_code)] // not every test file uses it
    pub fn wipe(&mut self, i: usize, tweak: fn(&mut ReplicaConfig)) {
        self.members[i].kv = Arc::new(MemKv::new());
        self.restart(i, tweak);
    }

    fn drain(&mut self, i: usize) {
        while let Some(output) = self.members[i].replica.poll_output() {
            match output {
                Output::Persist { batch, durable } => {
                    let kv = &self.members[i].kv;
                    kv.apply(batch).expect("apply");
                    if durable {
                        kv.flush().expect("flush");
                    }
                }
                Output::Send { to, bytes } | Output::Datagram { to, bytes } => {
                    let j = self
                        .members
                        .iter()
                        .position(|m| m.id == to)
                        .expect("known peer");
                    self.queue.push_back((i, j, bytes));
                }
                Output::Broadcast { bytes } => {
                    for j in 0..self.members.len() {
                        if j != i {
                            self.queue.push_back((i, j, bytes.clone()));
                        }
                    }
                }
                Output::Event(event) => self.members[i].events.push(event),
                Output::Work(work) => self.members[i].work.push(work),
            }
        }
    }

    fn deliver(&mut self) {
        // Replicas that answer each other without end, with no time
        // passing, would hang the test instead of failing it.
        let mut delivered = 0u64;
        while let Some((from, to, bytes)) = self.queue.pop_front() {
            delivered += 1;
            assert!(
                delivered < DELIVERIES_PER_INPUT_MAX,
                "{delivered} messages delivered with no time passing: replicas \
                 answer each other without end"
            );
            if self.cut.contains(&(from, to)) {
                continue;
            }
            let decoded = wire::decode(&bytes);
            let kind = decoded.as_ref().map(|e| e.body.kind()).unwrap_or("garbage");
            if let Ok(wire::Envelope {
                body: wire::Body::ChangesReq { rooms, .. },
                ..
            }) = &decoded
            {
                *self.rooms_asked.entry(from).or_default() += rooms.len() as u64;
            }
            *self.bytes.entry((from, to, kind)).or_default() += bytes.len() as u64;
            if self.dropped_kinds.contains(kind) {
                continue;
            }
            let peer = self.members[from].id.clone();
            self.members[to]
                .replica
                .handle_input(self.now_ms, Input::Message { from: peer, bytes });
            self.drain(to);
        }
    }

    /// Advances the clock to `until`, firing every timer on the way.
    pub fn run_until(&mut self, until: u64) {
        loop {
            let next = self
                .members
                .iter()
                .filter_map(|m| m.replica.poll_timeout().map(|(t, _)| t))
                .min();
            match next {
                Some(at) if at <= until => {
                    self.now_ms = self.now_ms.max(at);
                    for i in 0..self.members.len() {
                        let due = self.members[i]
                            .replica
                            .poll_timeout()
                            .is_some_and(|(t, _)| t <= self.now_ms);
                        if due {
                            self.input(i, Input::Tick);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now_ms = self.now_ms.max(until);
    }

    pub fn run_for(&mut self, ms: u64) {
        let until = self.now_ms + ms;
        self.run_until(until);
    }

    pub fn converged(&self) -> bool {
        let root = self.members[0].replica.root();
        self.members.iter().all(|m| m.replica.root() == root)
    }

    /// Total bytes between two members, both directions, and per kind.
    pub fn bytes_between(&self, a: usize, b: usize) -> u64 {
        self.bytes
            .iter()
            .filter(|((f, t, _), _)| (*f == a && *t == b) || (*f == b && *t == a))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn reset_bytes(&mut self) {
        self.bytes.clear();
    }
}
