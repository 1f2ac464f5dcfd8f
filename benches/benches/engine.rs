//! Engine benchmarks, each compared with a baseline measured in the same run:
//!
//! (a) raw automerge commits/s (one doc per room, a join-sized map per
//!     commit): the baseline of (b);
//! (b) durable local writes/s (`join`) through the engine on sled, with 1
//!     and 32 writer threads, and from 1 writer keeping 32 writes in flight
//!     (`begin_write`): group commit shares fsyncs between them;
//! (c) bytes of RAM per hot room, from a counting global allocator, against
//!     a raw automerge doc with the same content;
//! (d) opening a 100k-room sled store (`Engine::open`, `list_rooms`) against
//!     reading one room.
//!
//! Criterion groups report (a) and (b) with statistics; the `RATIO`,
//! `BASELINE` and `FIGURE` lines come from fixed-size timed runs. Run with
//! `cargo bench -p chorus-benches --bench engine`. Under `cargo test` every
//! part runs once at a tiny size. `CHORUS_BENCH_ROOMS` sets the size of the
//! store of (d) (default 100000).

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::Automerge;
use chorus_benches::raw::raw_commits;
use chorus_benches::writers::{
    durable_writes, join_request, pipelined_writes, room_id, rooms_created, tenant, JOINS_PER_ROOM,
    PIPELINE_DEPTH,
};
use chorus_benches::{dir_bytes, live_bytes, Counting};
use chorus_engine::storage::MemKv;
use chorus_engine::{Engine, EngineConfig, NodeId, RoomConfig, RoomId, SystemClock};
use criterion::{Criterion, Throughput};

// ---- counting allocator ---------------------------------------------------

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ---- sizes ----------------------------------------------------------------

/// How big each part runs: full under `cargo bench`, tiny under `cargo test`.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Commits per timed run of (a).
    raw_commits: u64,
    /// Joins per writer thread per timed run of (b), by thread count.
    writes_per_thread_1: u64,
    writes_per_thread_32: u64,
    /// Timed runs of (a) and (b); the median is reported.
    repeats: usize,
    /// Rooms loaded in (c) and sessions in each.
    hot_rooms: usize,
    sessions_per_room: usize,
    /// Rooms in the store of (d).
    store_rooms: usize,
    /// Reopenings timed in (d).
    reopens: usize,
}

impl Sizes {
    fn for_mode(benchmarking: bool) -> Self {
        let store_rooms = std::env::var("CHORUS_BENCH_ROOMS")
            .ok()
            .map(|v| v.parse().expect("CHORUS_BENCH_ROOMS is a number of rooms"));
        if benchmarking {
            Self {
                raw_commits: 20_000,
                writes_per_thread_1: 1_000,
                writes_per_thread_32: 250,
                repeats: 3,
                hot_rooms: 1_000,
                sessions_per_room: 4,
                store_rooms: store_rooms.unwrap_or(100_000),
                reopens: 3,
            }
        } else {
            Self {
                raw_commits: 200,
                writes_per_thread_1: 20,
                writes_per_thread_32: 2,
                repeats: 1,
                hot_rooms: 20,
                sessions_per_room: 2,
                store_rooms: store_rooms.unwrap_or(200),
                reopens: 1,
            }
        }
    }
}

/// Writer threads that build the store of (d) (group commit batches them).
const BUILD_THREADS: usize = 64;

// ---- ids --------------------------------------------------------------------

fn node() -> NodeId {
    NodeId::parse("bench-node").expect("valid node id")
}

fn per_sec(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

// ---- (a) raw automerge --------------------------------------------------------

// `chorus_benches::raw`.

// ---- (b) durable writes (`chorus_benches::writers`) ---------------------------

fn open_engine(dir: &Path) -> Engine {
    Engine::open(dir, EngineConfig::new(node())).expect("open engine")
}

/// Criterion's view of (a) and (b).
fn bench_writes(c: &mut Criterion) {
    let mut group = c.benchmark_group("writes");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    group.bench_function("raw_automerge_commit", |b| b.iter_custom(raw_commits));
    for threads in [1usize, 32] {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = open_engine(dir.path());
        group.bench_function(format!("durable_join_threads_{threads}"), |b| {
            b.iter_custom(|iters| durable_writes(&engine, threads, iters).elapsed)
        });
    }
    group.finish();
}

/// Fixed-size timed runs of (a) and (b), for the ratios.
fn write_ratios(sizes: Sizes) {
    let raw = median(
        (0..sizes.repeats)
            .map(|_| per_sec(sizes.raw_commits, raw_commits(sizes.raw_commits)))
            .collect(),
    );
    println!(
        "BASELINE raw_automerge_commits_per_sec = {raw:.0} ({} join-sized commits per run, \
         {JOINS_PER_ROOM} per doc, 1 thread, median of {})",
        sizes.raw_commits, sizes.repeats
    );
    for (threads, per_thread) in [
        (1usize, sizes.writes_per_thread_1),
        (32, sizes.writes_per_thread_32),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = open_engine(dir.path());
        let total = per_thread * threads as u64;
        let mut rates = Vec::new();
        let mut flushes = 0;
        for _ in 0..sizes.repeats {
            // The untimed room creation flushes too, so flushes are counted
            // over the whole run and compared with all its writes.
            let before = engine.flush_count();
            let elapsed = durable_writes(&engine, threads, total).elapsed;
            flushes += engine.flush_count() - before;
            rates.push(per_sec(total, elapsed));
        }
        let durable = median(rates);
        let writes = (total + rooms_created(threads, total)) * sizes.repeats as u64;
        println!(
            "RATIO durable_writes_per_sec[threads={threads}] / raw_automerge_commits_per_sec = \
             {:.4} (durable {durable:.0}/s, raw {raw:.0}/s; {total} joins per run, median of {}; \
             {flushes} flushes for {writes} writes incl. untimed room creation = {:.1} writes/flush)",
            durable / raw,
            sizes.repeats,
            writes as f64 / flushes.max(1) as f64,
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open_engine(dir.path());
    // As many joins as the 32 writers make between them.
    let total = sizes.writes_per_thread_32 * 32;
    let mut rates = Vec::new();
    let mut flushes = 0;
    for _ in 0..sizes.repeats {
        let before = engine.flush_count();
        let elapsed = pipelined_writes(&engine, total, PIPELINE_DEPTH).elapsed;
        flushes += engine.flush_count() - before;
        rates.push(per_sec(total, elapsed));
    }
    let pipelined = median(rates);
    let writes = (total + total.div_ceil(JOINS_PER_ROOM)) * sizes.repeats as u64;
    println!(
        "RATIO durable_writes_per_sec[1 writer pipelining, depth {PIPELINE_DEPTH}] / \
         raw_automerge_commits_per_sec = {:.4} (durable {pipelined:.0}/s, raw {raw:.0}/s; \
         {total} joins per run, median of {}; {flushes} flushes for {writes} writes incl. \
         untimed room creation = {:.1} writes/flush)",
        pipelined / raw,
        sizes.repeats,
        writes as f64 / flushes.max(1) as f64,
    );
    drop(engine);

    // Where the time goes: the engine's own work without fsync (in-memory
    // store), and one sled apply + flush on its own.
    let engine = Engine::in_memory(EngineConfig::new(node())).expect("engine");
    let total = sizes.writes_per_thread_1;
    let in_memory = median(
        (0..sizes.repeats)
            .map(|_| per_sec(total, durable_writes(&engine, 1, total).elapsed))
            .collect(),
    );
    // The same from one writer that does not wait for each write: the
    // driver's own work per write, without the two thread handoffs a
    // waiting writer pays.
    let in_memory_pipelined = median(
        (0..sizes.repeats)
            .map(|_| pipelined_writes(&engine, total, PIPELINE_DEPTH).per_sec())
            .collect(),
    );
    drop(engine);
    println!(
        "RATIO engine_writes_per_sec[in-memory store, no fsync, threads=1] / \
         raw_automerge_commits_per_sec = {:.4} (engine {in_memory:.0}/s, raw {raw:.0}/s)",
        in_memory / raw
    );
    println!(
        "RATIO engine_writes_per_sec[in-memory store, no fsync, 1 writer pipelining, depth \
         {PIPELINE_DEPTH}] / raw_automerge_commits_per_sec = {:.4} (engine \
         {in_memory_pipelined:.0}/s, raw {raw:.0}/s)",
        in_memory_pipelined / raw
    );
    let flush = sled_flush_time(sizes.writes_per_thread_1);
    println!(
        "FIGURE sled_apply_and_flush = {:.1} us per small batch (median of {}; \
         {:.0} flushes/s at most)",
        flush.as_secs_f64() * 1e6,
        sizes.writes_per_thread_1,
        1.0 / flush.as_secs_f64().max(1e-9)
    );
}

/// Median time of applying one join-sized batch to sled and flushing it.
fn sled_flush_time(count: u64) -> Duration {
    use chorus_engine::storage::{Batch, Kv, SledKv};
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = SledKv::open(dir.path()).expect("open sled");
    let mut times: Vec<f64> = (0..count)
        .map(|i| {
            let mut batch = Batch::default();
            batch.put(format!("c/flush-room/{i:016}").into_bytes(), vec![7u8; 300]);
            let start = Instant::now();
            kv.apply(batch).expect("apply");
            kv.flush().expect("flush");
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    Duration::from_secs_f64(times[times.len() / 2])
}

// ---- (c) RAM per hot room ----------------------------------------------------

/// Creates `rooms` rooms with `sessions` joins each through `engine`.
fn fill_rooms(engine: &Engine, rooms: usize, sessions: usize) -> Vec<RoomId> {
    (0..rooms)
        .map(|k| {
            let id = room_id(&format!("hot-r{k}"));
            engine
                .create_room(&id, &tenant(), RoomConfig::default())
                .expect("create room");
            for s in 0..sessions {
                engine
                    .join(&id, join_request(&format!("s{s}")))
                    .expect("join");
            }
            id
        })
        .collect()
}

/// Live bytes added by loading every room of `ids` into `engine` (which must
/// have room for all of them hot).
/// Signed: sled's background threads allocate and free on their own, so on
/// sled the difference is noisy (exact on the in-memory store).
fn load_all(engine: &Engine, ids: &[RoomId]) -> i64 {
    let before = live_bytes();
    for id in ids {
        let snapshot = engine.room(id).expect("read room").expect("room exists");
        black_box(snapshot);
    }
    let after = live_bytes();
    assert_eq!(engine.hot_rooms(), ids.len(), "every room stays hot");
    after as i64 - before as i64
}

fn hot_room_bytes(sizes: Sizes) {
    let k = sizes.hot_rooms;
    let mut config = EngineConfig::new(node());
    // One cache of k rooms keeps every one of them hot.
    config.replica.hot_rooms = k;

    // In memory: the store's bytes are allocated before the measurement, so
    // the difference is the hot rooms alone.
    let kv = Arc::new(MemKv::new());
    let ids = {
        let writer = Engine::with_storage(kv.clone(), config.clone(), Arc::new(SystemClock))
            .expect("engine");
        fill_rooms(&writer, k, sizes.sessions_per_room)
    };
    // What opening costs before any room is loaded: over an empty store
    // (caches, event queue) and over the K rooms (plus whatever the engine
    // keeps per stored room).
    let before_engine = live_bytes();
    let empty = Engine::with_storage(
        Arc::new(MemKv::new()),
        config.clone(),
        Arc::new(SystemClock),
    )
    .expect("engine");
    let empty_engine = live_bytes().saturating_sub(before_engine);
    drop(empty);
    let before_engine = live_bytes();
    let engine =
        Engine::with_storage(kv.clone(), config.clone(), Arc::new(SystemClock)).expect("engine");
    let opened_engine = live_bytes().saturating_sub(before_engine);
    let engine_bytes = load_all(&engine, &ids);
    let exports: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| engine.export_room(id).expect("export"))
        .collect();
    drop(engine);

    // Baseline: the same rooms as plain automerge documents.
    let mut docs: Vec<Automerge> = Vec::with_capacity(k);
    let before = live_bytes();
    for bytes in &exports {
        docs.push(Automerge::load(bytes).expect("load exported room"));
    }
    let raw_bytes = live_bytes().saturating_sub(before);
    black_box(&docs);
    drop(docs);
    let saved = exports.iter().map(Vec::len).sum::<usize>() / k;

    // On sled, sled's page cache grows with the reads as well.
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let writer = Engine::open(dir.path(), config.clone()).expect("open");
        fill_rooms(&writer, k, sizes.sessions_per_room);
    }
    let engine = Engine::open(dir.path(), config).expect("reopen");
    // Let sled's threads settle after the writer's shutdown and the open.
    std::thread::sleep(Duration::from_millis(200));
    let sled_bytes = load_all(&engine, &ids);
    drop(engine);

    let k_signed = k as i64;
    let per_room = engine_bytes / k_signed;
    let per_doc = raw_bytes / k;
    println!(
        "FIGURE hot_room_bytes = {per_room} B per room ({k} rooms x {} sessions, in-memory store)",
        sizes.sessions_per_room
    );
    println!(
        "FIGURE engine_open_bytes = {empty_engine} B over an empty store, {opened_engine} B over \
         the {k} stored rooms before any is loaded (hot_rooms={k}): {} B per cold room",
        opened_engine.saturating_sub(empty_engine) / k
    );
    println!(
        "RATIO hot_room_bytes / raw_automerge_doc_bytes = {:.2} (engine {per_room} B/room, \
         raw automerge doc {per_doc} B; saved doc {saved} B)",
        per_room as f64 / per_doc.max(1) as f64
    );
    println!(
        "FIGURE hot_room_bytes_sled = {} B per room (same rooms on sled; includes sled's page cache)",
        sled_bytes / k_signed
    );
}

// ---- (d) opening a large store ------------------------------------------------------

/// Creates `rooms` rooms through the engine from many writer threads.
fn build_store(dir: &Path, rooms: usize) -> Duration {
    let engine = open_engine(dir);
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..BUILD_THREADS {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= rooms {
                    return;
                }
                let id = room_id(&format!("store-r{k}"));
                engine
                    .create_room(&id, &tenant(), RoomConfig::default())
                    .expect("create room");
            });
        }
    });
    drop(engine);
    start.elapsed()
}

fn open_large_store(sizes: Sizes) {
    let rooms = sizes.store_rooms;
    let dir = tempfile::tempdir().expect("tempdir");
    let built = build_store(dir.path(), rooms);
    println!(
        "FIGURE build_store = {:.1} s for {rooms} rooms ({:.0} creates/s, {BUILD_THREADS} threads; \
         {:.1} MB on disk)",
        built.as_secs_f64(),
        per_sec(rooms as u64, built),
        dir_bytes(dir.path()) as f64 / 1e6
    );
    let probe = room_id(&format!("store-r{}", rooms / 2));
    let mut opens = Vec::new();
    let mut lists = Vec::new();
    let mut cold_reads = Vec::new();
    let mut hot_reads = Vec::new();
    for _ in 0..sizes.reopens {
        let start = Instant::now();
        let engine = open_engine(dir.path());
        opens.push(start.elapsed().as_secs_f64());

        let start = Instant::now();
        let listed = engine.list_rooms().expect("list rooms").len();
        lists.push(start.elapsed().as_secs_f64());
        assert_eq!(listed, rooms, "every room is listed");

        let start = Instant::now();
        let snapshot = engine.room(&probe).expect("read").expect("room exists");
        cold_reads.push(start.elapsed().as_secs_f64());
        black_box(snapshot);
        let start = Instant::now();
        let snapshot = engine.room(&probe).expect("read").expect("room exists");
        hot_reads.push(start.elapsed().as_secs_f64());
        black_box(snapshot);
    }
    let first_open = opens[0];
    let open = median(opens);
    let list = median(lists);
    let cold = median(cold_reads);
    let hot = median(hot_reads);
    let ms = |s: f64| s * 1e3;
    println!(
        "FIGURE open_store[{rooms} rooms] = {:.2} ms Engine::open (first {:.2} ms), \
         {:.2} ms list_rooms().len(), median of {}",
        ms(open),
        ms(first_open),
        ms(list),
        sizes.reopens
    );
    println!(
        "FIGURE read_one_room = {:.3} ms cold (first read after open), {:.3} ms hot",
        ms(cold),
        ms(hot)
    );
    println!(
        "RATIO open_time / read_one_room_cold = {:.1} (open {:.2} ms, read {:.3} ms)",
        open / cold,
        ms(open),
        ms(cold)
    );
    println!(
        "RATIO list_rooms_time / read_one_room_cold = {:.1} (list {:.2} ms, read {:.3} ms)",
        list / cold,
        ms(list),
        ms(cold)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let mut criterion = Criterion::default().configure_from_args();
    bench_writes(&mut criterion);
    if !has("--list") {
        // Like criterion: `cargo bench` passes --bench; `cargo test` does not.
        let sizes = Sizes::for_mode(has("--bench") && !has("--test"));
        write_ratios(sizes);
        hot_room_bytes(sizes);
        open_large_store(sizes);
    }
    criterion.final_summary();
}
