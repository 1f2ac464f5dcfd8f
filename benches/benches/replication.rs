//! Replication costs, each against a baseline measured in the same run:
//!
//! (a) bytes to converge two replicas of N rooms (default 10 000) after a
//!     partition in which 1 % of the rooms took 5 writes each, by the since
//!     path (replicas kept their cursors) and by the incremental path
//!     (cursors deleted, replicas restarted), against the minimum: the bytes
//!     of the automerge changes that had to move;
//! (b) against automerge's own per-document sync protocol over every room;
//! (c) against full-state transfer (`save()` of every room);
//! (d) bytes of one idle anti-entropy round between equal replicas of N and
//!     of 100 000 rooms;
//! (e) remote changes applied per second by a replica, against raw automerge
//!     `apply_changes` of the same changes.
//!
//! Two real `Replica`s on in-memory stores, wired directly on a virtual clock
//! (no sleeping; a frame is delivered at once unless the link is down), so
//! byte counts are exact wire frames and deterministic; only (e) uses wall
//! time. Run with `cargo bench -p chorus-benches --bench replication`; under
//! `cargo test` every part runs once at a tiny size. Sizes:
//! `CHORUS_BENCH_ROOMS` (N), `CHORUS_BENCH_IDLE_ROOMS` (the large idle pair,
//! default 100 000), `CHORUS_BENCH_APPLY_CHANGES` (writes in (e), 20 000).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, Change, ChangeHash};
use chorus_engine::limits::SINCE_LIST_ENTRIES_MAX;
use chorus_engine::replica::{wire, Event, Input, Output, Replica, ReplicaConfig, SyncPath};
use chorus_engine::storage::{keys, Batch, Kv, KvRead, MemKv};
use chorus_engine::{
    JoinRequest, NodeId, RegionId, Role, RoomConfig, RoomId, RoomOp, SessionId, TenantId, UserId,
};

const CLUSTER: u64 = 7;
/// Writes each diverged room takes during the partition.
const WRITES_PER_DIVERGED_ROOM: usize = 5;
/// Idle time between the baseline and the partition: rounds move the cursors
/// past the baseline's writes, as in a cluster that has been in sync for a
/// while (a since request lists the asker's log from 5 s before its cursor).
const SETTLE_MS: u64 = 30_000;
/// How long the partition lasts: push timers fire (the pushes are lost) and
/// no round can run, so anti-entropy alone must repair the difference.
const PARTITION_MS: u64 = 10_000;
/// Writes per room in (e): a create and 9 joins.
const WRITES_PER_ROOM: usize = 10;

#[derive(Debug, Clone, Copy)]
struct Sizes {
    rooms: usize,
    idle_rooms: usize,
    apply_writes: usize,
    repeats: usize,
}

impl Sizes {
    fn for_mode(benchmarking: bool) -> Self {
        let env = |name: &str, default: usize| {
            let value = std::env::var(name).ok();
            value.map_or(default, |v| v.parse().expect("a size is a number"))
        };
        let (rooms, idle, apply, repeats) = if benchmarking {
            (10_000, 100_000, 20_000, 3)
        } else {
            (200, 2_000, 500, 1)
        };
        Self {
            rooms: env("CHORUS_BENCH_ROOMS", rooms),
            idle_rooms: env("CHORUS_BENCH_IDLE_ROOMS", idle),
            apply_writes: env("CHORUS_BENCH_APPLY_CHANGES", apply),
            repeats,
        }
    }
}

// ---- ids and writes ---------------------------------------------------------

fn node(i: usize) -> NodeId {
    NodeId::parse(format!("r{i}")).expect("valid node id")
}

fn room(i: usize) -> RoomId {
    RoomId::parse(format!("room-{i:06}")).expect("valid room id")
}

fn create() -> RoomOp {
    let tenant = TenantId::parse("bench").expect("valid tenant id");
    let config = RoomConfig::default();
    RoomOp::Create { tenant, config }
}

/// A join: the most common signalling write.
fn join(session: String) -> RoomOp {
    RoomOp::Join {
        request: JoinRequest {
            user: UserId::parse(format!("u-{session}")).expect("valid user id"),
            session: SessionId::parse(session).expect("valid session id"),
            role: Role::Speaker,
            owner: NodeId::parse("media-1").expect("valid node id"),
            region: RegionId::parse("eu").expect("valid region id"),
            resume_token: None,
        },
    }
}

// ---- two replicas on a virtual clock ---------------------------------------

/// Replica `i`'s config: the other replica is its only peer; defaults
/// otherwise (1 s anti-entropy interval, 2 ms push delay).
fn config(i: usize) -> ReplicaConfig {
    let mut config = ReplicaConfig::new(node(i), CLUSTER);
    // This bench measures the replication protocol alone.
    config.failure_detection = false;
    config.peers = vec![node(1 - i)];
    config
}

/// Two replicas wired directly, after `engine/tests/common/pair.rs`: frames
/// are delivered at once, in order, while the link is up and dropped while
/// it is down; delivered bytes are counted per sender and message kind.
struct Pair {
    now: u64,
    kv: [Arc<MemKv>; 2],
    replica: [Replica; 2],
    up: bool,
    /// When set, r0's pushes are kept here instead of delivered (for (e)).
    capture: Option<Vec<Vec<u8>>>,
    sent: [BTreeMap<&'static str, u64>; 2],
    /// Sync events: replica, path, changes of a finished round (`None`: started).
    paths: Vec<(usize, SyncPath, Option<u64>)>,
    queue: VecDeque<(usize, Vec<u8>)>,
    next_write: u64,
}

impl Pair {
    fn open(kv: [Arc<MemKv>; 2], now: u64) -> Self {
        let replica = [0, 1].map(|i| Replica::new(config(i), kv[i].clone(), now).expect("opens"));
        let mut pair = Self {
            now,
            kv,
            replica,
            up: false,
            capture: None,
            sent: Default::default(),
            paths: Vec::new(),
            queue: VecDeque::new(),
            next_write: 1,
        };
        pair.drain(0);
        pair.drain(1);
        pair
    }

    fn empty() -> Self {
        Self::open([Arc::new(MemKv::new()), Arc::new(MemKv::new())], 0)
    }

    /// Carries out replica `i`'s outputs as the driver contract asks (the
    /// doctest of `engine/src/replica/mod.rs`): a `Persist` first, flushed if
    /// durable; sends and broadcasts to the other replica.
    fn drain(&mut self, i: usize) {
        while let Some(output) = self.replica[i].poll_output() {
            match output {
                Output::Persist { batch, durable } => {
                    self.kv[i].apply(batch).expect("memory store");
                    if durable {
                        self.kv[i].flush().expect("memory store");
                    }
                }
                Output::Broadcast { bytes } if i == 0 && self.capture.is_some() => {
                    self.capture.as_mut().expect("capturing").push(bytes);
                }
                Output::Send { bytes, .. } | Output::Broadcast { bytes } if self.up => {
                    let kind = wire::decode(&bytes).expect("valid frame").body.kind();
                    *self.sent[i].entry(kind).or_default() += bytes.len() as u64;
                    self.queue.push_back((1 - i, bytes));
                }
                Output::Send { .. } | Output::Broadcast { .. } => {} // link down: lost
                Output::Datagram { .. } => {}                        // failure detection is off
                Output::Event(Event::WriteDone { result, .. }) => {
                    result.expect("every benchmark write succeeds");
                }
                Output::Event(Event::SyncStarted { path, .. }) => self.paths.push((i, path, None)),
                Output::Event(Event::SyncFinished { path, changes, .. }) => {
                    self.paths.push((i, path, Some(changes)));
                }
                Output::Event(Event::Rejected { reason, .. }) => panic!("rejected: {reason}"),
                Output::Event(_) => {}
                Output::Work(_) => unreachable!("work_off_task is off"),
            }
        }
    }

    /// One input, then every frame it causes, to the end (a whole round runs
    /// within the input that opens it).
    fn input(&mut self, i: usize, input: Input) {
        self.replica[i].handle_input(self.now, input);
        self.drain(i);
        while let Some((to, bytes)) = self.queue.pop_front() {
            let from = node(1 - to);
            self.replica[to].handle_input(self.now, Input::Message { from, bytes });
            self.drain(to);
        }
    }

    fn write(&mut self, i: usize, room: &RoomId, op: RoomOp) {
        let id = self.next_write;
        self.next_write += 1;
        let room = room.clone();
        self.input(i, Input::LocalWrite { id, room, op });
    }

    /// Link up; r0 learns of it first. `PeerUp` starts a round at once.
    fn connect(&mut self) {
        self.up = true;
        self.input(0, Input::PeerUp { peer: node(1) });
        self.input(1, Input::PeerUp { peer: node(0) });
    }

    fn disconnect(&mut self) {
        self.up = false;
        self.input(0, Input::PeerDown { peer: node(1) });
        self.input(1, Input::PeerDown { peer: node(0) });
    }

    /// Moves the clock to the next deadline (at most `until`) and ticks the
    /// replicas that are due; false, with the clock at `until`, when none is.
    fn step(&mut self, until: u64) -> bool {
        let due = |r: &Replica| r.poll_timeout().map(|(at, _)| at);
        match self.replica.iter().filter_map(due).min() {
            Some(at) if at <= until => {
                self.now = self.now.max(at);
                for i in 0..2 {
                    if due(&self.replica[i]).is_some_and(|at| at <= self.now) {
                        self.input(i, Input::Tick);
                    }
                }
                true
            }
            _ => {
                self.now = self.now.max(until);
                false
            }
        }
    }

    fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        while self.step(until) {}
    }

    fn equal(&self) -> bool {
        self.replica[0].root() == self.replica[1].root()
    }

    /// Fires timers until the digest roots are equal, within `budget_ms`.
    fn run_until_equal(&mut self, budget_ms: u64) -> bool {
        let until = self.now + budget_ms;
        while !self.equal() {
            if !self.step(until) {
                return self.equal();
            }
        }
        true
    }

    fn reset_counts(&mut self) {
        self.sent = Default::default();
        self.paths.clear();
    }

    fn bytes_sent(&self, i: usize) -> u64 {
        self.sent[i].values().sum()
    }

    /// Replica `i`'s document of `room`, through the public export.
    fn doc(&mut self, i: usize, room: &RoomId) -> Automerge {
        let bytes = self.replica[i].export_room(room).expect("read");
        Automerge::load(&bytes.expect("the room exists")).expect("valid document")
    }
}

/// A copy of every entry of `kv` (flushed or not) in a fresh store.
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

fn kinds(bytes: &BTreeMap<&'static str, u64>) -> String {
    let parts: Vec<String> = bytes.iter().map(|(k, b)| format!("{k} {b}")).collect();
    parts.join(", ")
}

fn ratio(x: u64, base: u64) -> f64 {
    x as f64 / base.max(1) as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

// ---- (a)-(c): convergence after a partition -----------------------------------

/// Each room created and joined on r0 while r1 is connected: the rooms reach
/// r1 by push (or a round), as in a live cluster. The clock runs 1 ms per
/// room, so pushes batch as under a steady load.
fn synced_pair(n: usize) -> Pair {
    let start = Instant::now();
    let mut pair = Pair::empty();
    pair.connect();
    for i in 0..n {
        pair.write(0, &room(i), create());
        pair.write(0, &room(i), join(format!("s{i}")));
        pair.run_for(1);
    }
    assert!(pair.run_until_equal(60_000), "the baseline converges");
    pair.run_for(SETTLE_MS);
    assert!(pair.equal() && pair.replica[1].room_count() == n);
    let secs = start.elapsed().as_secs_f64();
    println!("FIGURE baseline_build = {n} rooms (create + join) on r0, synced to r1: {secs:.1} s");
    pair
}

/// The partition's writes, in 1 % of the rooms spread over the id space
/// (at most 72): a third written on r0 only, a third on r1 only, a third
/// on both (3 on r0, 2 on r1: neither side knows the other's heads).
/// Returns each diverged room's heads before the partition.
fn diverge(pair: &mut Pair, n: usize) -> BTreeMap<RoomId, Vec<ChangeHash>> {
    // r0 writes 8 changes for every 3 rooms. Its peer's gap (log entries
    // past a cursor that trails a little) must stay within what a since
    // round closes (`SINCE_LIST_ENTRIES_MAX`), or the peer walks the
    // digest tree instead in the scenario meant to measure the since
    // path: three quarters of it, 192 changes in 72 rooms.
    let cap = usize::try_from(SINCE_LIST_ENTRIES_MAX * 3 / 4 * 3 / 8).unwrap_or(usize::MAX);
    let d = (n / 100).clamp(1, cap);
    let mut before = BTreeMap::new();
    for k in 0..d {
        let r = room(k * (n / d));
        let heads = pair.doc(0, &r).get_heads();
        assert_eq!(heads, pair.doc(1, &r).get_heads(), "equal before");
        before.insert(r, heads);
    }
    pair.disconnect();
    for (k, r) in before.keys().enumerate() {
        for w in 0..WRITES_PER_DIVERGED_ROOM {
            let side = [0, 1, usize::from(w >= 3)][k % 3];
            pair.write(side, r, join(format!("p{k}-{w}")));
        }
        pair.run_for(1);
    }
    pair.run_for(PARTITION_MS);
    before
}

/// The minimum to move: bytes and number of the changes each side made
/// during the partition (the other side lacks exactly these), as
/// `raw_bytes`, the form the wire carries.
fn minimum(pair: &mut Pair, before: &BTreeMap<RoomId, Vec<ChangeHash>>) -> (u64, u64) {
    let (mut bytes, mut count) = (0, 0);
    for (r, heads) in before {
        for side in 0..2 {
            for change in pair.doc(side, r).get_changes(heads) {
                bytes += change.raw_bytes().len() as u64;
                count += 1;
            }
        }
    }
    (bytes, count)
}

/// automerge's sync protocol room by room, a fresh `sync::State` per room
/// and side, until neither side has a message. Bytes r0->r1 and r1->r0.
fn automerge_sync(pair: &mut Pair, rooms: &[RoomId]) -> [u64; 2] {
    let mut bytes = [0, 0];
    for r in rooms {
        let mut docs = [pair.doc(0, r), pair.doc(1, r)];
        let mut states = [sync::State::new(), sync::State::new()];
        let mut quiet = false;
        while !quiet {
            quiet = true;
            for from in 0..2 {
                if let Some(message) = docs[from].generate_sync_message(&mut states[from]) {
                    let encoded = message.encode();
                    bytes[from] += encoded.len() as u64;
                    let message = sync::Message::decode(&encoded).expect("valid");
                    let to = 1 - from;
                    let state = &mut states[to];
                    docs[to]
                        .receive_sync_message(state, message)
                        .expect("valid");
                    quiet = false;
                }
            }
        }
        assert_eq!(docs[0].get_heads(), docs[1].get_heads(), "automerge sync");
    }
    bytes
}

/// Deletes each store's `cursor/<peer>` meta key (see `cursor_key` in
/// `engine/src/replica/mod.rs`), so replicas reopened over them have none.
fn forget_cursors(kv: &[Arc<MemKv>; 2]) {
    for (i, kv) in kv.iter().enumerate() {
        let key = keys::meta(&format!("cursor/{}", node(1 - i)));
        assert!(kv.get(&key).expect("read").is_some(), "a cursor was kept");
        let mut batch = Batch::default();
        batch.delete(key);
        kv.apply(batch).expect("memory store");
        kv.flush().expect("memory store");
    }
}

/// Reconnects `pair`, runs until the roots are equal, checks the result and
/// prints what it cost; returns the bytes of both directions.
fn reconnect_and_measure(
    label: &str,
    pair: &mut Pair,
    before: &BTreeMap<RoomId, Vec<ChangeHash>>,
    min: (u64, u64),
) -> u64 {
    pair.reset_counts();
    let stats = |p: &Pair, i: usize| {
        let s = p.replica[i].stats();
        (s.bytes_sent(), s.changes_applied)
    };
    let at_start = [stats(pair, 0), stats(pair, 1)];
    pair.connect();
    assert!(pair.run_until_equal(120_000), "{label}: no convergence");
    let mut applied = [0, 0];
    for i in 0..2 {
        let (sent, changes) = stats(pair, i);
        assert_eq!(sent - at_start[i].0, pair.bytes_sent(i), "stats agree");
        assert!(!pair.sent[i].contains_key("push"), "anti-entropy alone");
        applied[i] = changes - at_start[i].1;
    }
    // Each partition change applied once, on the side that lacked it. (The
    // replicas' counters, not SyncFinished: changes pulled back by a peer's
    // unsolicited `ChangesReq` belong to no round of the receiver.)
    assert_eq!(applied[0] + applied[1], min.1, "{label}: changes applied");
    for r in before.keys() {
        let heads = pair.doc(0, r).get_heads();
        assert_eq!(heads, pair.doc(1, r).get_heads(), "{label}: heads of {r}");
        let view = pair.replica[0].room(r).expect("read");
        assert_eq!(view, pair.replica[1].room(r).expect("read"), "{label}: {r}");
    }
    let paths: Vec<String> = (pair.paths.iter())
        .map(|(i, path, changes)| match changes {
            None => format!("r{i} {path:?} started"),
            Some(c) => format!("r{i} {path:?} finished ({c} changes)"),
        })
        .collect();
    let (paths, [to_r0, to_r1]) = (paths.join("; "), applied);
    println!("FIGURE converge_paths[{label}] = {paths} (applied: r0 {to_r0}, r1 {to_r1} changes)");
    let (a, b, ka, kb) = (
        pair.bytes_sent(0),
        pair.bytes_sent(1),
        &pair.sent[0],
        &pair.sent[1],
    );
    let (total, ka, kb) = (a + b, kinds(ka), kinds(kb));
    println!("FIGURE converge_bytes[{label}] = r0->r1 {a} B, r1->r0 {b} B, total {total} B");
    println!("FIGURE converge_kinds[{label}] r0->r1 = {ka}");
    println!("FIGURE converge_kinds[{label}] r1->r0 = {kb}");
    total
}

/// (a)-(c). Returns the converged pair for (d).
fn convergence(n: usize) -> Pair {
    let w = WRITES_PER_DIVERGED_ROOM;
    println!("== (a)-(c) converge {n} rooms after 1 % of them diverged ({w} writes each)");
    let mut pair = synced_pair(n);
    let before = diverge(&mut pair, n);
    let min = minimum(&mut pair, &before);
    let all: Vec<RoomId> = (0..n).map(room).collect();
    let diverged: Vec<RoomId> = before.keys().cloned().collect();
    let [am_a, am_b] = automerge_sync(&mut pair, &all);
    let am_all = am_a + am_b;
    let am_diverged: u64 = automerge_sync(&mut pair, &diverged).iter().sum();
    let saved = |r| {
        pair.replica[0]
            .export_room(r)
            .expect("read")
            .map_or(0, |b| b.len())
    };
    let full: u64 = all.iter().map(saved).sum::<usize>() as u64;
    let ((m, count), d) = (min, diverged.len());
    println!(
        "BASELINE minimum_bytes = {m} B ({count} changes in {d} rooms had to move, raw_bytes)"
    );
    println!(
        "BASELINE automerge_sync_bytes[every room] = {am_all} B (r0->r1 {am_a}, r1->r0 {am_b}; \
         fresh sync::State per room)"
    );
    // Can be below the minimum: when more than a third of a document's
    // changes are missing, automerge sends the whole compressed `save()`.
    println!("BASELINE automerge_sync_bytes[diverged rooms only, as if known] = {am_diverged} B");
    println!("BASELINE full_state_bytes = {full} B (save() of every room of r0)");

    // The incremental scenario starts from copies of this very state, taken
    // before the since scenario reconnects, with the cursors deleted and
    // the replicas reopened over the copies (as after a restart).
    let copies = [copy(&pair.kv[0]), copy(&pair.kv[1])];
    forget_cursors(&copies);
    let mut incremental = Pair::open(copies, pair.now);

    let mut totals = Vec::new();
    for (label, p, path) in [
        ("since", &mut pair, SyncPath::Since),
        ("incremental", &mut incremental, SyncPath::Incremental),
    ] {
        let total = reconnect_and_measure(label, p, &before, min);
        let took = |q| p.paths.iter().any(|(_, taken, _)| *taken == q);
        assert!(took(path), "{label}: the {path:?} path ran");
        let others = [SyncPath::Since, SyncPath::Incremental, SyncPath::Full];
        assert!(
            !others.into_iter().any(|q| q != path && took(q)),
            "one path"
        );
        totals.push((label, total));
    }
    for (label, total) in totals {
        let r = ratio(total, m);
        println!("RATIO converge_bytes[{label}] / minimum_bytes = {r:.3} ({total} / {m} B; target <= 1.3)");
        let r = ratio(total, am_all);
        println!("RATIO converge_bytes[{label}] / automerge_sync_bytes[every room] = {r:.4}");
        let r = ratio(total, am_diverged);
        println!("RATIO converge_bytes[{label}] / automerge_sync_bytes[diverged only] = {r:.3}");
        let r = ratio(total, full);
        println!("RATIO converge_bytes[{label}] / full_state_bytes = {r:.5}");
    }
    pair
}

// ---- (d): an idle round ---------------------------------------------------------

/// Bytes of exactly one anti-entropy round that r0 opens with an equal r1.
fn idle_round(pair: &mut Pair, n: usize) {
    assert!(pair.run_until_equal(60_000), "the replicas are equal");
    pair.run_for(5_000); // the rounds opened by PeerUp and by timers are over
    assert!(pair.equal());
    pair.reset_counts();
    let rounds = |p: &Pair| p.replica.each_ref().map(|r| r.stats().rounds_started);
    let before = rounds(pair);
    // Tick r0 alone, at its deadlines, until its anti-entropy timer opens a
    // round (which runs to its end within that tick); r1 only answers.
    while rounds(pair)[0] == before[0] {
        let (at, _) = pair.replica[0].poll_timeout().expect("timers are set");
        pair.now = pair.now.max(at);
        pair.input(0, Input::Tick);
    }
    assert_eq!(rounds(pair), [before[0] + 1, before[1]], "one round");
    assert!(pair.equal() && pair.paths.is_empty(), "the round was idle");
    let (a, b) = (pair.bytes_sent(0), pair.bytes_sent(1));
    let (ka, kb) = (kinds(&pair.sent[0]), kinds(&pair.sent[1]));
    println!(
        "FIGURE idle_round[{n} rooms] = r0->r1 {a} B ({ka}), r1->r0 {b} B ({kb}) \
         (target <= 128 each way)"
    );
}

/// Two equal replicas of `n` rooms, built cheaply: the rooms are created on
/// r0 alone, and r1 opens over a copy of r0's store (the digest tree depends
/// only on room ids and heads; r1 still writes as an actor of its own).
fn idle_pair(n: usize) -> Pair {
    let start = Instant::now();
    let mut builder = Pair::empty();
    for i in 0..n {
        builder.write(0, &room(i), create());
    }
    builder.run_for(1_000);
    let kv = builder.kv[0].clone();
    drop(builder);
    let mut pair = Pair::open([kv.clone(), copy(&kv)], 2_000);
    assert!(pair.equal() && pair.replica[1].room_count() == n);
    pair.connect();
    let secs = start.elapsed().as_secs_f64();
    println!("FIGURE idle_build = {n} rooms created on r0, store copied to r1: {secs:.1} s");
    pair
}

// ---- (e): remote changes applied per second ------------------------------------

/// r0 alone makes `writes` writes (`WRITES_PER_ROOM` per room) and its
/// pushes are captured: the frames a fresh replica must take to catch up.
fn captured_pushes(writes: usize) -> (Pair, Vec<Vec<u8>>) {
    let mut pair = Pair::empty();
    pair.capture = Some(Vec::new());
    for w in 0..writes {
        let (i, k) = (w / WRITES_PER_ROOM, w % WRITES_PER_ROOM);
        let op = match k {
            0 => create(),
            _ => join(format!("a{i}-{k}")),
        };
        pair.write(0, &room(i), op);
        if k + 1 == WRITES_PER_ROOM {
            pair.run_for(1); // 1 ms per room; pushes leave every 2 ms
        }
    }
    pair.run_for(1_000);
    assert_eq!(pair.replica[0].stats().local_writes as usize, writes);
    let pushes = pair.capture.take().expect("capturing");
    (pair, pushes)
}

/// Wall time for a fresh replica to take every push, driven as a driver
/// would (decode, apply, persist to the in-memory store, flush).
fn replay(pushes: &[Vec<u8>], now: u64) -> (f64, Replica) {
    let kv = Arc::new(MemKv::new());
    let mut replica = Replica::new(config(1), kv.clone(), now).expect("opens");
    let drain = |replica: &mut Replica| {
        while let Some(output) = replica.poll_output() {
            match output {
                Output::Persist { batch, durable } => {
                    kv.apply(batch).expect("memory");
                    if durable {
                        kv.flush().expect("memory");
                    }
                }
                Output::Send { .. } => panic!("a push in order lacks no dependency"),
                _ => {}
            }
        }
    };
    drain(&mut replica);
    let frames = pushes.to_vec();
    // The writer built every room's genesis change in this process: a
    // replica on its own machine builds each one again to check it.
    chorus_engine::room::forget_genesis_changes();
    let start = Instant::now();
    for bytes in frames {
        let from = node(0);
        replica.handle_input(now, Input::Message { from, bytes });
        drain(&mut replica);
    }
    (start.elapsed().as_secs_f64(), replica)
}

fn apply_rate(sizes: Sizes) {
    let writes = sizes.apply_writes;
    let per_room = WRITES_PER_ROOM;
    println!("== (e) remote changes applied per second ({writes} writes, {per_room} per room)");
    let (mut source, pushes) = captured_pushes(writes);
    let rooms: Vec<RoomId> = (0..writes.div_ceil(WRITES_PER_ROOM)).map(room).collect();
    let changes: Vec<Vec<Change>> = rooms
        .iter()
        .map(|r| source.doc(0, r).get_changes(&[]))
        .collect();
    // A create brings the room's genesis change too: one more per room.
    let k = changes.iter().map(Vec::len).sum::<usize>();
    let change_bytes: usize = changes.iter().flatten().map(|c| c.raw_bytes().len()).sum();
    let push_bytes: usize = pushes.iter().map(Vec::len).sum();
    let (mut replica_rates, mut raw_rates) = (Vec::new(), Vec::new());
    for _ in 0..sizes.repeats {
        let (secs, replica) = replay(&pushes, source.now);
        assert_eq!(replica.stats().changes_applied as usize, k, "all applied");
        assert_eq!(replica.root(), source.replica[0].root(), "equal replicas");
        replica_rates.push(k as f64 / secs);

        // Baseline: the same changes into fresh documents, one call per room.
        let batches = changes.clone();
        let start = Instant::now();
        let docs: Vec<Automerge> = (batches.into_iter())
            .map(|batch| {
                let mut doc = Automerge::new();
                doc.apply_changes(batch).expect("valid changes");
                doc
            })
            .collect();
        raw_rates.push(k as f64 / start.elapsed().as_secs_f64());
        std::hint::black_box(docs);
    }
    let (replica, raw, reps) = (median(replica_rates), median(raw_rates), sizes.repeats);
    let frames = pushes.len();
    let r = ratio(push_bytes as u64, change_bytes as u64);
    println!("FIGURE push_bytes = {push_bytes} B in {frames} frames for {k} changes of {change_bytes} B ({r:.3}x)");
    println!(
        "BASELINE raw_automerge_apply_changes_per_sec = {raw:.0} (fresh doc per room, one \
         apply_changes call per room, median of {reps})"
    );
    println!(
        "FIGURE replica_remote_apply_per_sec = {replica:.0} (push frames into a fresh replica: \
         decode, apply, index, change log, digest, persist to memory; median of {reps})"
    );
    let r = replica / raw;
    println!("RATIO replica_remote_apply_per_sec / raw_automerge_apply_changes_per_sec = {r:.3}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--list") {
        return;
    }
    // Like criterion: `cargo bench` passes --bench; `cargo test` does not.
    let sizes = Sizes::for_mode(has("--bench") && !has("--test"));
    let start = Instant::now();
    let mut pair = convergence(sizes.rooms);
    println!("== (d) one idle anti-entropy round");
    idle_round(&mut pair, sizes.rooms);
    drop(pair);
    let mut big = idle_pair(sizes.idle_rooms);
    idle_round(&mut big, sizes.idle_rooms);
    drop(big);
    apply_rate(sizes);
    println!("(whole run {:.1} s)", start.elapsed().as_secs_f64());
}
