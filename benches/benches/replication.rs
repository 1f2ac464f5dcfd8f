//! Replication costs, each against a baseline measured in the same run:
//!
//! 1. bytes to converge two replicas of N rooms (default 10 000) after a
//!    partition in which 1 % of the rooms took 5 writes, by the since path
//!    and by the incremental path, against (a) the minimum — the bytes of the
//!    changes that had to move —, (b) automerge's per-document sync protocol
//!    run over every room, (c) full-state transfer;
//! 2. bytes of one idle anti-entropy round between equal replicas of 10 000
//!    and of 100 000 rooms;
//! 3. remote changes applied per second, against raw automerge.
//!
//! Two real `Replica`s on in-memory stores, wired directly on a virtual
//! clock; only wall time for (3) is real. Sizes: `CHORUS_BENCH_ROOMS`,
//! `CHORUS_BENCH_IDLE_ROOMS`, `CHORUS_BENCH_APPLY_CHANGES`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use automerge::sync::SyncDoc;
use automerge::{Automerge, Change, ChangeHash};
use chorus_engine::replica::wire;
use chorus_engine::replica::{Event, Input, Output, Replica, ReplicaConfig, SyncPath};
use chorus_engine::storage::{keys, Batch, Kv, KvRead, MemKv};
use chorus_engine::{
    JoinRequest, NodeId, RegionId, Role, RoomConfig, RoomId, RoomOp, SessionId, TenantId, UserId,
};

const CLUSTER: u64 = 7;

/// The baseline is written at time 0; the measured replicas run an hour
/// later (their clocks, HLCs and log cursors are past the baseline's, as in
/// a deployment where the rooms are older than the partition).
const LATER_MS: u64 = 3_600_000;

/// Connected replicas run this long before the partition.
const SETTLE_MS: u64 = 10_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn id(i: usize) -> NodeId {
    NodeId::parse(format!("r{i}")).expect("valid id")
}

fn room(i: usize) -> RoomId {
    RoomId::parse(format!("room-{i:06}")).expect("valid id")
}

fn create(tenant: &TenantId) -> RoomOp {
    RoomOp::Create {
        tenant: tenant.clone(),
        config: RoomConfig::default(),
    }
}

fn join(session: String) -> RoomOp {
    RoomOp::Join {
        request: JoinRequest {
            session: SessionId::parse(session.clone()).expect("valid"),
            user: UserId::parse(format!("u-{session}")).expect("valid"),
            role: Role::Speaker,
            owner: NodeId::parse("media-1").expect("valid"),
            region: RegionId::parse("eu").expect("valid"),
            resume_token: None,
        },
    }
}

struct Member {
    kv: Arc<MemKv>,
    replica: Replica,
}

/// Two replicas on a virtual clock. Messages between them are carried at
/// once unless the link is down; bytes are counted per direction and kind.
struct Pair {
    now: u64,
    m: [Member; 2],
    up: bool,
    /// Bytes sent by replica 0 and by replica 1, per message kind.
    bytes: [BTreeMap<&'static str, u64>; 2],
    paths: Vec<SyncPath>,
    queue: VecDeque<(usize, Vec<u8>)>,
    next_write: u64,
}

impl Pair {
    /// Two replicas over the given stores (copies of one baseline, or empty).
    fn new(stores: [Arc<MemKv>; 2]) -> Self {
        Self::new_at(stores, 0)
    }

    fn new_at(stores: [Arc<MemKv>; 2], now: u64) -> Self {
        let [a, b] = stores;
        let open = |i: usize, kv: Arc<MemKv>| {
            let mut config = ReplicaConfig::new(id(i), CLUSTER);
            config.peers = vec![id(1 - i)];
            let replica = Replica::new(config, kv.clone(), now).expect("replica opens");
            Member { kv, replica }
        };
        let mut pair = Self {
            now,
            m: [open(0, a), open(1, b)],
            up: false,
            bytes: [BTreeMap::new(), BTreeMap::new()],
            paths: Vec::new(),
            queue: VecDeque::new(),
            next_write: 1,
        };
        pair.drain(0);
        pair.drain(1);
        pair
    }

    fn drain(&mut self, i: usize) {
        while let Some(output) = self.m[i].replica.poll_output() {
            match output {
                Output::Persist { batch, durable } => {
                    self.m[i].kv.apply(batch).expect("memory store");
                    if durable {
                        self.m[i].kv.flush().expect("memory store");
                    }
                }
                Output::Send { bytes, .. } | Output::Broadcast { bytes } => {
                    if self.up {
                        let kind = wire::decode(&bytes).map_or("?", |e| e.body.kind());
                        *self.bytes[i].entry(kind).or_default() += bytes.len() as u64;
                        self.queue.push_back((1 - i, bytes));
                    }
                }
                Output::Event(Event::SyncStarted { path, .. }) => self.paths.push(path),
                Output::Event(_) => {}
            }
        }
    }

    fn input(&mut self, i: usize, input: Input) {
        self.m[i].replica.handle_input(self.now, input);
        self.drain(i);
        while let Some((to, bytes)) = self.queue.pop_front() {
            let from = id(1 - to);
            self.m[to]
                .replica
                .handle_input(self.now, Input::Message { from, bytes });
            self.drain(to);
        }
    }

    fn write(&mut self, i: usize, room: &RoomId, op: RoomOp) {
        let id = self.next_write;
        self.next_write += 1;
        let room = room.clone();
        self.input(i, Input::LocalWrite { id, room, op });
    }

    fn connect(&mut self) {
        self.up = true;
        self.input(0, Input::PeerUp { peer: id(1) });
        self.input(1, Input::PeerUp { peer: id(0) });
    }

    fn disconnect(&mut self) {
        self.up = false;
        self.input(0, Input::PeerDown { peer: id(1) });
        self.input(1, Input::PeerDown { peer: id(0) });
    }

    fn equal(&self) -> bool {
        self.m[0].replica.root() == self.m[1].replica.root()
    }

    /// Fires timers until the roots are equal (and no round is running).
    fn run_until_equal(&mut self, budget_ms: u64) -> bool {
        let end = self.now + budget_ms;
        while self.now < end {
            if self.equal() && self.queue.is_empty() {
                return true;
            }
            let next = (0..2)
                .filter_map(|i| self.m[i].replica.poll_timeout().map(|(at, _)| at))
                .min()
                .unwrap_or(end);
            self.now = self.now.max(next);
            self.input(0, Input::Tick);
            self.input(1, Input::Tick);
        }
        self.equal()
    }

    fn reset_counts(&mut self) {
        self.bytes = [BTreeMap::new(), BTreeMap::new()];
        self.paths.clear();
    }

    fn sent(&self, i: usize) -> u64 {
        self.bytes[i].values().sum()
    }

    fn doc(&mut self, i: usize, room: &RoomId) -> Automerge {
        let bytes = self.m[i]
            .replica
            .export_room(room)
            .expect("read")
            .expect("the room exists");
        Automerge::load(&bytes).expect("valid document")
    }
}

/// A copy of every entry of `kv` in a fresh store.
fn copy(kv: &MemKv) -> Arc<MemKv> {
    let copy = Arc::new(MemKv::new());
    let mut batch = Batch::default();
    for (key, value) in kv.scan_prefix(&[]).expect("memory store") {
        batch.put(key, value);
    }
    copy.apply(batch).expect("memory store");
    copy.flush().expect("memory store");
    copy
}

/// One replica's store holding `n` rooms, each created and joined once.
fn baseline(n: usize) -> Arc<MemKv> {
    let kv = Arc::new(MemKv::new());
    let mut pair = Pair::new([kv.clone(), Arc::new(MemKv::new())]);
    let tenant = TenantId::parse("bench").expect("valid");
    for i in 0..n {
        pair.write(0, &room(i), create(&tenant));
        pair.write(0, &room(i), join(format!("s{i}-0")));
    }
    kv
}

fn ratio(x: u64, base: u64) -> f64 {
    x as f64 / base.max(1) as f64
}

fn kinds(bytes: &BTreeMap<&'static str, u64>) -> String {
    let parts: Vec<String> = bytes.iter().map(|(k, b)| format!("{k} {b}")).collect();
    parts.join(", ")
}

struct Divergence {
    rooms: Vec<RoomId>,
    heads_before: BTreeMap<RoomId, Vec<ChangeHash>>,
}

/// While cut off, the first 1 % of rooms take 5 writes: 3 on replica 0 and
/// 2 on replica 1.
fn diverge(pair: &mut Pair, n: usize, round: usize) -> Divergence {
    let diverged = (n / 100).max(1);
    let rooms: Vec<RoomId> = (0..diverged).map(|i| room(i * 97 % n)).collect();
    let mut heads_before = BTreeMap::new();
    for r in &rooms {
        heads_before.insert(r.clone(), pair.doc(0, r).get_heads());
    }
    pair.disconnect();
    for (k, r) in rooms.iter().enumerate() {
        for w in 0..5 {
            let side = usize::from(w >= 3);
            pair.write(side, r, join(format!("p{round}-{k}-{w}")));
        }
    }
    Divergence {
        rooms,
        heads_before,
    }
}

/// Bytes of the changes each side made while cut off: what had to move.
fn minimum(pair: &mut Pair, d: &Divergence) -> u64 {
    let mut total = 0;
    for r in &d.rooms {
        let before = &d.heads_before[r];
        for side in 0..2 {
            let doc = pair.doc(side, r);
            let changes: Vec<Change> = doc.get_changes(before);
            total += changes
                .iter()
                .map(|c| c.raw_bytes().len() as u64)
                .sum::<u64>();
        }
    }
    total
}

/// automerge's own sync protocol, a fresh state per room, over `rooms`.
fn automerge_sync_bytes(pair: &mut Pair, rooms: &[RoomId]) -> u64 {
    let mut total = 0;
    for r in rooms {
        let mut a = pair.doc(0, r);
        let mut b = pair.doc(1, r);
        let (mut sa, mut sb) = (automerge::sync::State::new(), automerge::sync::State::new());
        loop {
            let mut quiet = true;
            if let Some(m) = a.generate_sync_message(&mut sa) {
                let bytes = m.encode();
                total += bytes.len() as u64;
                let m = automerge::sync::Message::decode(&bytes).expect("valid");
                b.receive_sync_message(&mut sb, m).expect("valid");
                quiet = false;
            }
            if let Some(m) = b.generate_sync_message(&mut sb) {
                let bytes = m.encode();
                total += bytes.len() as u64;
                let m = automerge::sync::Message::decode(&bytes).expect("valid");
                a.receive_sync_message(&mut sa, m).expect("valid");
                quiet = false;
            }
            if quiet {
                break;
            }
        }
        assert_eq!(a.get_heads(), b.get_heads(), "automerge sync converged");
    }
    total
}

fn convergence(n: usize, base: &MemKv) {
    println!("== converge {n} rooms after 1 % diverged (5 writes each, both sides)");
    let all: Vec<RoomId> = (0..n).map(room).collect();
    for (label, forget_cursors) in [("since", false), ("incremental", true)] {
        let mut pair = Pair::new_at([copy(base), copy(base)], LATER_MS);
        pair.connect();
        assert!(pair.run_until_equal(60_000), "the copies start equal");
        let settled = pair.now + SETTLE_MS;
        pair.run_until_equal(SETTLE_MS);
        pair.now = pair.now.max(settled);
        let d = diverge(&mut pair, n, 1);
        let min = minimum(&mut pair, &d);
        let am_sync = automerge_sync_bytes(&mut pair, &all);
        let full: u64 = all
            .iter()
            .map(|r| {
                pair.m[0]
                    .replica
                    .export_room(r)
                    .expect("read")
                    .map_or(0, |b| b.len() as u64)
            })
            .sum();
        if forget_cursors {
            // A replica that lost its cursors (or never had one): restart
            // both without them, so the round walks the digest tree.
            let stores = [pair.m[0].kv.clone(), pair.m[1].kv.clone()];
            for (i, kv) in stores.iter().enumerate() {
                let mut batch = Batch::default();
                batch.delete(keys::meta(&format!("cursor/{}", id(1 - i))));
                kv.apply(batch).expect("memory store");
                kv.flush().expect("memory store");
            }
            pair = Pair::new_at(stores, pair.now);
        }
        pair.reset_counts();
        pair.connect();
        assert!(pair.run_until_equal(120_000), "the replicas converge");
        for r in &d.rooms {
            assert_eq!(
                pair.doc(0, r).get_heads().len(),
                pair.doc(1, r).get_heads().len()
            );
            assert_eq!(
                pair.m[0].replica.room(r).expect("read"),
                pair.m[1].replica.room(r).expect("read")
            );
        }
        let (a, b) = (pair.sent(0), pair.sent(1));
        let total = a + b;
        let paths: Vec<String> = pair.paths.iter().map(|p| format!("{p:?}")).collect();
        println!("{label} path (rounds took: {}):", paths.join(", "));
        println!("  bytes 0->1 {a}, 1->0 {b}, total {total}");
        println!("    0->1: {}", kinds(&pair.bytes[0]));
        println!("    1->0: {}", kinds(&pair.bytes[1]));
        println!("  BASELINE minimum (changes that had to move) {min}");
        println!("  BASELINE automerge per-doc sync, every room {am_sync}");
        println!("  BASELINE full state (save() of every room) {full}");
        println!(
            "  RATIO {label} / minimum {:.3} (target <= 1.3)",
            ratio(total, min)
        );
        println!(
            "  RATIO {label} / automerge sync {:.4}",
            ratio(total, am_sync)
        );
        println!("  RATIO {label} / full state {:.5}", ratio(total, full));
    }
}

fn idle_round(n: usize, base: &MemKv) {
    let mut pair = Pair::new_at([copy(base), copy(base)], LATER_MS);
    pair.connect();
    assert!(pair.run_until_equal(60_000), "the copies start equal");
    // Let the first rounds finish, then measure exactly one more.
    pair.run_until_equal(5_000);
    pair.reset_counts();
    let rounds_before = pair.m[0].replica.stats().rounds_started;
    while pair.m[0].replica.stats().rounds_started == rounds_before {
        let next = pair.m[0]
            .replica
            .poll_timeout()
            .map_or(pair.now + 1, |(at, _)| at);
        pair.now = pair.now.max(next);
        pair.input(0, Input::Tick);
    }
    assert!(pair.equal());
    let (a, b) = (pair.sent(0), pair.sent(1));
    println!(
        "FIGURE idle round, {n} equal rooms: {a} bytes 0->1 ({}), {b} bytes 1->0 ({}) (target <= 128 each way)",
        kinds(&pair.bytes[0]),
        kinds(&pair.bytes[1])
    );
}

fn apply_rate(changes_wanted: usize) {
    println!("== remote changes applied per second");
    // Replica 0 writes while cut off; its pushes are captured and replayed
    // into replica 1.
    let mut pair = Pair::new([Arc::new(MemKv::new()), Arc::new(MemKv::new())]);
    let tenant = TenantId::parse("bench").expect("valid");
    let rooms = (changes_wanted / 10).max(1);
    let mut captured = Vec::new();
    for i in 0..rooms {
        pair.write(0, &room(i), create(&tenant));
        for w in 0..9 {
            pair.write(0, &room(i), join(format!("a{i}-{w}")));
        }
        // Flush the outbox as a push (the push timer fires).
        pair.now += 10;
        pair.m[0].replica.handle_input(pair.now, Input::Tick);
        while let Some(output) = pair.m[0].replica.poll_output() {
            match output {
                Output::Persist { batch, .. } => pair.m[0].kv.apply(batch).expect("memory"),
                Output::Broadcast { bytes } => captured.push(bytes),
                _ => {}
            }
        }
    }
    let changes: usize = (0..rooms)
        .map(|i| pair.doc(0, &room(i)).get_changes(&[]).len())
        .sum();
    let start = Instant::now();
    for bytes in &captured {
        pair.m[1].replica.handle_input(
            pair.now,
            Input::Message {
                from: id(0),
                bytes: bytes.clone(),
            },
        );
        while let Some(output) = pair.m[1].replica.poll_output() {
            if let Output::Persist { batch, .. } = output {
                pair.m[1].kv.apply(batch).expect("memory");
            }
        }
    }
    let replica_s = start.elapsed().as_secs_f64();
    assert_eq!(pair.m[1].replica.stats().changes_applied as usize, changes);
    // Baseline: the same changes applied to fresh automerge documents.
    let docs: Vec<Vec<Change>> = (0..rooms)
        .map(|i| pair.doc(0, &room(i)).get_changes(&[]))
        .collect();
    let start = Instant::now();
    for changes in docs {
        let mut doc = Automerge::new();
        doc.apply_changes(changes).expect("valid changes");
    }
    let raw_s = start.elapsed().as_secs_f64();
    let replica_rate = changes as f64 / replica_s;
    let raw_rate = changes as f64 / raw_s;
    println!("BASELINE raw automerge apply_changes: {raw_rate:.0} changes/s");
    println!("FIGURE replica remote apply (decode, apply, index, log, digest, persist to memory): {replica_rate:.0} changes/s");
    println!(
        "RATIO replica / raw automerge {:.3}",
        replica_rate / raw_rate
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is ignored.
    let n = env_usize("CHORUS_BENCH_ROOMS", 10_000);
    let idle_n = env_usize("CHORUS_BENCH_IDLE_ROOMS", 100_000);
    let apply_changes = env_usize("CHORUS_BENCH_APPLY_CHANGES", 20_000);
    let t = Instant::now();
    let base = baseline(n);
    println!("(built {n} rooms in {:.1} s)", t.elapsed().as_secs_f64());
    convergence(n, &base);
    println!("== idle anti-entropy round");
    idle_round(n, &base);
    let t = Instant::now();
    let big = baseline(idle_n);
    println!(
        "(built {idle_n} rooms in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    idle_round(idle_n, &big);
    apply_rate(apply_changes);
}
