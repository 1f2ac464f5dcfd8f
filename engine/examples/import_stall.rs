//! How long a large import keeps the replica's task from answering
//! anything else (peers' messages, failure-detection probes, reads).
//!
//! Builds a room of 6 000 joins and leaves, then imports it into fresh
//! engines two ways in the same run: through `Engine::import_room`, which
//! merges on the caller's thread and only swaps the result in on the
//! replica's task, while another thread keeps asking the replica for its
//! stats (the slowest answer is the stall); and in line, through the
//! sans-IO replica's `Input::Import`, whose whole duration is the stall.
//!
//! `cargo run --release -p chorus-engine --example import_stall`

use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_engine::replica::{Input, Output, Replica, ReplicaConfig};
use chorus_engine::storage::{Kv, MemKv};
use chorus_engine::*;

const SESSIONS: usize = 6_000;
const RUNS: usize = 3;

fn id<T: std::str::FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    text.parse().expect("a valid id")
}

fn big_room() -> Vec<u8> {
    let engine = Engine::in_memory(EngineConfig::new(id("builder"))).expect("engine");
    let room: RoomId = id("big");
    let config = RoomConfig {
        max_participants: 10_000,
        ..RoomConfig::default()
    };
    engine.create_room(&room, &id("t"), config).expect("create");
    for n in 0..SESSIONS {
        let session: SessionId = id(&format!("s{n}"));
        let request = JoinRequest {
            session: session.clone(),
            user: id(&format!("user-{n}")),
            role: Role::Speaker,
            owner: id("sfu-1"),
            region: id("eu"),
            resume_token: None,
        };
        engine.join(&room, request).expect("join");
        if n % 2 == 0 {
            engine.leave(&room, &session).expect("leave");
        }
    }
    engine.export_room(&room).expect("export")
}

/// `Engine::import_room`: the import's duration and the slowest answer of
/// the replica's task meanwhile.
fn prepared(bytes: &[u8]) -> (Duration, Duration) {
    let engine = Arc::new(Engine::in_memory(EngineConfig::new(id("fresh"))).expect("engine"));
    let importer = engine.clone();
    let bytes = bytes.to_vec();
    let started = Instant::now();
    let import = std::thread::spawn(move || importer.import_room(&bytes).expect("import"));
    let mut slowest = Duration::ZERO;
    while !import.is_finished() {
        let asked = Instant::now();
        engine.stats().expect("stats");
        slowest = slowest.max(asked.elapsed());
        std::thread::sleep(Duration::from_millis(2));
    }
    import.join().expect("import thread");
    (started.elapsed(), slowest)
}

/// `Input::Import` on the sans-IO replica: the replica's task does it all.
fn in_line(bytes: &[u8]) -> Duration {
    let kv = Arc::new(MemKv::new());
    let mut replica =
        Replica::new(ReplicaConfig::new(id("fresh"), 1), kv.clone(), 0).expect("replica");
    let started = Instant::now();
    let input = Input::Import {
        id: 1,
        room: None,
        bytes: bytes.to_vec(),
    };
    replica.handle_input(0, input);
    let took = started.elapsed();
    while let Some(output) = replica.poll_output() {
        if let Output::Persist { batch, .. } = output {
            kv.apply(batch).expect("apply");
        }
    }
    took
}

fn main() {
    let bytes = big_room();
    println!(
        "a room of {SESSIONS} joins and leaves: {} KB of automerge",
        bytes.len() / 1024
    );
    for run in 1..=RUNS {
        let (took, slowest) = prepared(&bytes);
        let whole = in_line(&bytes);
        println!(
            "run {run}: Engine::import_room {took:?}, the replica's task answered within {slowest:?}; \
             in line, the task was busy {whole:?} ({:.0}x longer)",
            whole.as_secs_f64() / slowest.as_secs_f64().max(1e-6)
        );
    }
}
