//! A long-lived room: one room, N join+leave cycles, written in turn through
//! three library replicas (real engines on sled in temp dirs, wired by an
//! in-process transport), with a short session retention so that pruning
//! and history compaction happen during the run. Reported, each against its
//! baseline in the same run:
//!
//! (a) p50 and p99 of a join+leave pair over cycles 1,000–2,000 and over
//!     the last 1,000, and their ratio; the longest pair;
//! (b) the same writes with compaction off (`history_changes_max` at its
//!     maximum), for the first cycles only: how a write's cost grows with
//!     the room's past without it;
//! (c) per replica after the run: compactions, changes in the history,
//!     export bytes; the room's stored bytes (live keys and values) and its
//!     hot memory (the room's document and cached reading, loaded from the
//!     store as the engine loads it),
//!     each against the bound of `docs/data-model.md`: twice a fresh room
//!     holding the same live sessions, plus the changes made within the
//!     retention, those after the room's base and the base's list of pruned
//!     sessions; the time to reopen and
//!     read; the replica's whole store by key kind, sled's files, and the
//!     process heap per replica;
//! (d) that the three replicas converge (same heads, same reading).
//!
//! Run: `cargo bench -p chorus-benches --bench churn` (100 000 cycles;
//! `CHORUS_BENCH_CYCLES` to change it). Without `--bench` (e.g. under
//! `cargo test --benches`) it runs 3 000 cycles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_benches::{dir_bytes, live_bytes, thread_net_bytes, Counting};
use chorus_engine::replica::Input;
use chorus_engine::storage::SledKv;
use chorus_engine::*;
use tokio::sync::mpsc;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const REPLICAS: usize = 3;
/// The acceptance run's retention: short, so pruning happens in the run.
const RETENTION_MS: u64 = 5_000;

// ---- an in-process network --------------------------------------------------

type Frame = (NodeId, Vec<u8>);

/// Every frame reaches its peer at once, in order; no loss.
struct Loopback {
    me: NodeId,
    peers: Vec<(NodeId, mpsc::UnboundedSender<Frame>)>,
    inbox: mpsc::UnboundedReceiver<Frame>,
    /// `PeerUp`s still to report.
    up: Vec<NodeId>,
}

impl Transport for Loopback {
    fn send(&mut self, to: &NodeId, bytes: Vec<u8>) {
        for (id, tx) in &self.peers {
            if id == to {
                let _ = tx.send((self.me.clone(), bytes.clone()));
            }
        }
    }

    fn broadcast(&mut self, bytes: Vec<u8>) {
        for (_, tx) in &self.peers {
            let _ = tx.send((self.me.clone(), bytes.clone()));
        }
    }

    fn datagram(&mut self, to: &NodeId, bytes: Vec<u8>) {
        self.send(to, bytes);
    }

    async fn next(&mut self) -> Option<Input> {
        if let Some(peer) = self.up.pop() {
            return Some(Input::PeerUp { peer });
        }
        let (from, bytes) = self.inbox.recv().await?;
        Some(Input::Message { from, bytes })
    }

    fn connected(&self) -> Vec<NodeId> {
        self.peers.iter().map(|(id, _)| id.clone()).collect()
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

fn node(i: usize) -> NodeId {
    NodeId::parse(format!("r{i}")).expect("valid node id")
}

fn config(i: usize, history_changes_max: u64) -> EngineConfig {
    let mut config = EngineConfig::new(node(i));
    config.replica.peers = (0..REPLICAS).filter(|&j| j != i).map(node).collect();
    config.replica.session_retention_ms = RETENTION_MS;
    config.replica.history_changes_max = history_changes_max;
    // Replication and compaction only: this measures a room's writes.
    config.replica.failure_detection = false;
    config
}

/// Three engines on sled in `dirs`, wired to each other.
fn cluster(dirs: &[tempfile::TempDir], history_changes_max: u64) -> Vec<Engine> {
    let channels: Vec<_> = (0..REPLICAS).map(|_| mpsc::unbounded_channel()).collect();
    let senders: Vec<mpsc::UnboundedSender<Frame>> =
        channels.iter().map(|(tx, _)| tx.clone()).collect();
    channels
        .into_iter()
        .enumerate()
        .map(|(i, (_, inbox))| {
            let peers: Vec<(NodeId, mpsc::UnboundedSender<Frame>)> = (0..REPLICAS)
                .filter(|&j| j != i)
                .map(|j| (node(j), senders[j].clone()))
                .collect();
            let up = peers.iter().map(|(id, _)| id.clone()).collect();
            let transport = Loopback {
                me: node(i),
                peers,
                inbox,
                up,
            };
            let kv = Arc::new(SledKv::open(dirs[i].path()).expect("sled opens"));
            Engine::start(
                kv,
                config(i, history_changes_max),
                Arc::new(SystemClock),
                move || async move { Ok(transport) },
            )
            .expect("engine starts")
        })
        .collect()
}

fn room() -> RoomId {
    RoomId::parse("standing-room").expect("valid room id")
}

fn join(i: usize) -> RoomOp {
    RoomOp::Join {
        request: JoinRequest {
            session: SessionId::parse(format!("s{i}")).expect("valid session id"),
            user: UserId::parse(format!("u{i}")).expect("valid user id"),
            role: Role::Speaker,
            owner: NodeId::parse("media-1").expect("valid node id"),
            region: RegionId::parse("eu").expect("valid region id"),
            resume_token: None,
        },
    }
}

fn leave(i: usize) -> RoomOp {
    let session = SessionId::parse(format!("s{i}")).expect("valid session id");
    RoomOp::Leave { session }
}

fn create(engine: &Engine) {
    let tenant = TenantId::parse("bench").expect("valid tenant id");
    engine
        .write(
            &room(),
            RoomOp::Create {
                tenant,
                config: RoomConfig::default(),
            },
        )
        .expect("create");
    // One participant stays for the whole run.
    engine.write(&room(), join(usize::MAX)).expect("join");
}

/// Join+leave pairs `from..to`, written in turn through the engines;
/// returns each pair's time.
fn churn(engines: &[Engine], from: usize, to: usize) -> Vec<Duration> {
    (from..to)
        .map(|i| {
            let engine = &engines[i % engines.len()];
            let start = Instant::now();
            engine.write(&room(), join(i)).expect("join");
            engine.write(&room(), leave(i)).expect("leave");
            start.elapsed()
        })
        .collect()
}

fn quantile(pairs: &[Duration], q: f64) -> Duration {
    let mut sorted = pairs.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn converge(engines: &[Engine]) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let heads: Vec<_> = engines
            .iter()
            .map(|e| {
                let mut h = e.heads(&room()).expect("heads");
                h.sort();
                h
            })
            .collect();
        if heads.iter().all(|h| *h == heads[0]) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the three replicas did not converge within 60 s");
}

/// The key kinds of the store: the room's own, then the replica's.
const KINDS: [(&str, &[u8]); 8] = {
    use chorus_engine::storage::keys;
    [
        ("snapshot", keys::SNAPSHOT),
        ("chunks", keys::CHUNK),
        ("index", keys::INDEX),
        ("owners", keys::OWNER),
        ("digest", keys::DIGEST),
        ("change log", keys::LOG),
        ("meta", keys::META),
        ("journal", keys::JOURNAL),
    ]
};
/// How many of `KINDS` hold the room itself (one room per store here).
const ROOM_KINDS: usize = 5;

/// Live key+value bytes under each key kind of the store in `dir`: what
/// the store must hold, as opposed to what sled's files occupy.
fn by_kind(dir: &std::path::Path) -> Vec<(&'static str, usize)> {
    use chorus_engine::storage::KvRead;
    let kv = SledKv::open(dir).expect("sled opens");
    KINDS
        .iter()
        .map(|(name, prefix)| {
            let entries = kv.scan_prefix(prefix).expect("scan");
            (*name, entries.iter().map(|(k, v)| k.len() + v.len()).sum())
        })
        .collect()
}

/// The room's own stored bytes (see `ROOM_KINDS`).
fn room_bytes(kinds: &[(&str, usize)]) -> usize {
    kinds.iter().take(ROOM_KINDS).map(|(_, b)| b).sum()
}

fn describe(kinds: &[(&str, usize)]) -> String {
    let parts: Vec<String> = kinds.iter().map(|(n, b)| format!("{n} {b}")).collect();
    parts.join(", ")
}

/// Bytes of the room's changes after its base (every change with
/// dependencies): the recent history of the formula in
/// `docs/data-model.md`.
fn tail_bytes(engine: &Engine) -> usize {
    let bytes = engine.export_room(&room()).expect("export");
    automerge::Automerge::load(&bytes)
        .expect("an export loads")
        .get_changes(&[])
        .iter()
        .filter(|c| !c.deps().is_empty())
        .map(|c| c.raw_bytes().len())
        .sum()
}

/// The bytes of the base's list of pruned sessions (`room::departed`).
fn departed_bytes(engine: &Engine) -> usize {
    let bytes = engine.export_room(&room()).expect("export");
    let doc = automerge::Automerge::load(&bytes).expect("an export loads");
    chorus_engine::room::departed::remembered(&doc).len()
}

/// The mean size of the room's changes (an uncompacted history).
fn mean_change_bytes(engine: &Engine) -> usize {
    let bytes = engine.export_room(&room()).expect("export");
    let doc = automerge::Automerge::load(&bytes).expect("an export loads");
    let changes = doc.get_changes(&[]);
    let total: usize = changes.iter().map(|c| c.raw_bytes().len()).sum();
    total / changes.len().max(1)
}

/// Opens the store in `dir` and reads the room: the time that takes, and
/// the hot room's memory (`hot_room`).
fn reopen(dir: &std::path::Path, i: usize) -> (Duration, usize) {
    let start = Instant::now();
    let engine = Engine::open(dir, config(i, u64::MAX)).expect("reopens");
    engine.room(&room()).expect("read");
    let load = start.elapsed();
    engine.stop().expect("stops");
    (load, hot_room(dir))
}

/// What the engine keeps in memory for the room once it is read: its
/// `RoomDoc` loaded from the stored snapshot and chunks, as the engine
/// loads it, with its cached reading. Counted on this thread alone, so
/// that sled's and other threads' allocations meanwhile do not count.
fn hot_room(dir: &std::path::Path) -> usize {
    use chorus_engine::storage::{keys, KvRead};
    let kv = SledKv::open(dir).expect("sled opens");
    let snapshot = kv.get(&keys::snapshot(&room())).expect("snapshot");
    let chunks: Vec<Vec<u8>> = kv
        .scan_prefix(&keys::chunks(&room()))
        .expect("chunks")
        .into_iter()
        .map(|(_, value)| value)
        .collect();
    let actor = automerge::ActorId::random();
    let before = thread_net_bytes();
    let mut doc = chorus_engine::room::RoomDoc::load(room(), actor, snapshot.as_deref(), &chunks)
        .expect("the room loads");
    doc.ensure_reading().expect("the room reads");
    let hot = thread_net_bytes().saturating_sub(before);
    // What that costs a reader of the whole room: every departed session
    // the document still holds is read from it.
    let start = Instant::now();
    let whole = doc.snapshot().expect("the room reads");
    let took = start.elapsed();
    println!(
        "      a whole reading of the reopened room ({} sessions, {} live in memory): {:.2} ms",
        whole.sessions.len(),
        doc.warm_sessions().unwrap_or(0),
        ms(took)
    );
    drop(doc);
    usize::try_from(hot).unwrap_or(0)
}

fn history_len(engine: &Engine) -> usize {
    let bytes = engine.export_room(&room()).expect("export");
    automerge::Automerge::load(&bytes)
        .expect("an export loads")
        .get_changes(&[])
        .len()
}

/// What one replica's store holds after a run, or a fresh room's.
struct Footprint {
    /// sled's files.
    disk: u64,
    /// Live key+value bytes per key kind.
    kinds: Vec<(&'static str, usize)>,
    /// Reopen the store and read the room.
    load: Duration,
    /// The hot room's memory (`hot_room`).
    hot: usize,
}

fn footprint(dir: &std::path::Path, i: usize) -> Footprint {
    let (load, hot) = reopen(dir, i);
    Footprint {
        disk: dir_bytes(dir),
        kinds: by_kind(dir),
        load,
        hot,
    }
}

/// A store holding only a fresh room with `live` sessions, the baseline of
/// (c); and the heap its engine took.
fn fresh_room(live: usize) -> (Footprint, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = live_bytes();
    let engine = Engine::open(dir.path(), config(0, u64::MAX)).expect("opens");
    create(&engine);
    for i in 0..live.saturating_sub(1) {
        engine.write(&room(), join(i)).expect("join");
    }
    engine.room(&room()).expect("read");
    let heap = live_bytes().saturating_sub(before);
    engine.stop().expect("stops");
    (footprint(dir.path(), 0), heap)
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let cycles: usize = std::env::var("CHORUS_BENCH_CYCLES")
        .ok()
        .map(|v| v.parse().expect("CHORUS_BENCH_CYCLES is a number"))
        .unwrap_or(if benchmarking { 100_000 } else { 3_000 });
    let early: usize = std::env::var("CHORUS_BENCH_BASELINE_CYCLES")
        .ok()
        .map(|v| v.parse().expect("CHORUS_BENCH_BASELINE_CYCLES is a number"))
        .unwrap_or(5_000)
        .min(cycles);
    println!("churn: one room, join+leave pairs through {REPLICAS} replicas in turn, retention {RETENTION_MS} ms");

    // (b) the baseline: compaction off, the first cycles only.
    let dirs: Vec<_> = (0..REPLICAS)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let engines = cluster(&dirs, u64::MAX);
    create(&engines[0]);
    converge(&engines);
    let off = churn(&engines, 0, early);
    let change_bytes = mean_change_bytes(&engines[0]);
    for e in engines {
        e.stop().expect("stops");
    }

    // (a) compaction on, the whole run.
    let dirs: Vec<_> = (0..REPLICAS)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let heap_before = live_bytes();
    let engines = cluster(&dirs, chorus_engine::limits::HISTORY_CHANGES_DEFAULT);
    create(&engines[0]);
    converge(&engines);
    let started = Instant::now();
    let on = churn(&engines, 0, cycles);
    let wall = started.elapsed();
    let settle = converge(&engines);

    let window = |pairs: &[Duration], from: usize, len: usize| -> Vec<Duration> {
        pairs.iter().skip(from).take(len).copied().collect()
    };
    let start_window = window(&on, 1_000.min(cycles / 2), 1_000);
    let end_window = window(&on, cycles.saturating_sub(1_000), 1_000);
    let longest = on.iter().max().copied().unwrap_or_default();
    let slow: Vec<(usize, f64)> = on
        .iter()
        .enumerate()
        .filter(|(_, d)| d.as_millis() >= 500)
        .map(|(i, d)| (i, ms(*d)))
        .collect();
    if !slow.is_empty() {
        println!("    pairs of 500 ms or more (cycle, ms): {slow:?}");
    }
    println!(
        "(a) compaction on, {cycles} pairs in {:.1} s",
        wall.as_secs_f64()
    );
    for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
        let a = quantile(&start_window, q);
        let b = quantile(&end_window, q);
        println!(
            "    {name}: cycles 1000-2000 {:.3} ms, last 1000 {:.3} ms, ratio {:.2}",
            ms(a),
            ms(b),
            ms(b) / ms(a).max(1e-9)
        );
    }
    println!("    longest pair {:.1} ms", ms(longest));
    let off_start = window(&off, 0, 1_000);
    let off_end = window(&off, early.saturating_sub(1_000), 1_000);
    println!(
        "(b) compaction off, first {early} pairs: p50 {:.3} ms over the first 1000, {:.3} ms over the last 1000 (ratio {:.2})",
        ms(quantile(&off_start, 0.5)),
        ms(quantile(&off_end, 0.5)),
        ms(quantile(&off_end, 0.5)) / ms(quantile(&off_start, 0.5)).max(1e-9)
    );

    // Past the retention, then one more write so the room is looked at.
    std::thread::sleep(Duration::from_millis(RETENTION_MS + 200));
    let snapshot = engines[0].room(&room()).expect("read").expect("the room");
    let live = snapshot.live_sessions().count();
    let listed = snapshot.sessions.len();
    let heap = live_bytes().saturating_sub(heap_before) / REPLICAS;
    println!(
        "(c) converged {:.0} ms after the last write; room JSON lists {listed} sessions ({live} live); counters joins {} leaves {}",
        ms(settle),
        snapshot.counters.joins,
        snapshot.counters.leaves
    );
    let readings: Vec<_> = engines
        .iter()
        .map(|e| e.room(&room()).expect("read"))
        .collect();
    assert!(
        readings.iter().all(|r| *r == readings[0]),
        "the replicas read the room differently"
    );
    let (fresh, fresh_heap) = fresh_room(live);
    for (i, engine) in engines.iter().enumerate() {
        let stats = engine.stats().expect("stats");
        println!(
            "    replica {i}: {} compactions, {} changes in the history, export {} B",
            stats.compactions,
            history_len(engine),
            engine.export_room(&room()).expect("export").len()
        );
    }
    let tails: Vec<usize> = engines.iter().map(tail_bytes).collect();
    let departed: Vec<usize> = engines.iter().map(departed_bytes).collect();
    // The pairs written within the retention before the last write: their
    // departed sessions may still be in the base.
    let mut span = Duration::ZERO;
    let recent_pairs = on
        .iter()
        .rev()
        .take_while(|d| {
            span += **d;
            span <= Duration::from_millis(RETENTION_MS)
        })
        .count();
    let recent = recent_pairs * 2 * change_bytes;
    println!(
        "    changes within the retention: {recent_pairs} pairs, {recent} B at {change_bytes} B a change"
    );
    for engine in engines {
        engine.stop().expect("stops");
    }
    let fresh_room_bytes = room_bytes(&fresh.kinds);
    println!("    fresh room ({live} live sessions): stored {fresh_room_bytes} B for the room, {} B of sled files; hot room {} B; reopen and read {:.1} ms",
        fresh.disk, fresh.hot, ms(fresh.load));
    for (i, dir) in dirs.iter().enumerate() {
        let f = footprint(dir.path(), i);
        let room = room_bytes(&f.kinds);
        let bound = 2 * fresh_room_bytes + recent + tails[i] + departed[i];
        let hot_bound = 2 * fresh.hot + recent + tails[i] + departed[i];
        println!(
            "    replica {i}: room stored {room} B, bound {bound} B (2 x fresh + within retention + tail of {} B + pruned list of {} B): ratio {:.2}; hot room {} B, bound {hot_bound} B: ratio {:.2}; reopen and read {:.1} ms",
            tails[i],
            departed[i],
            room as f64 / bound.max(1) as f64,
            f.hot,
            f.hot as f64 / hot_bound.max(1) as f64,
            ms(f.load)
        );
        println!(
            "      the replica's store by kind (live key+value bytes): {}; sled's files {} B",
            describe(&f.kinds),
            f.disk
        );
    }
    println!(
        "    process heap per replica after the run {heap} B, a fresh room's engine {fresh_heap} B: ratio {:.2}",
        heap as f64 / fresh_heap.max(1) as f64
    );
}
