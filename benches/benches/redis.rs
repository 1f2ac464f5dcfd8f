//! Chorus's durable writes against Redis, where a user would otherwise keep
//! session state, in the same run on the same machine:
//!
//! - Redis (`redis-server` on loopback, a store in a temp dir) with
//!   `appendonly yes` and `appendfsync always`, durable per write like
//!   Chorus, and with `appendfsync everysec`, which is not (up to a second
//!   of acknowledged writes is lost on a crash). `redis-benchmark` writes a
//!   join-sized hash (`HSET` of the fields a join writes) from one client
//!   pipelining `PIPELINE_DEPTH` requests, and from 32 clients one request
//!   each at a time;
//! - Chorus (an engine on sled in a temp dir) from one writer keeping the
//!   same `PIPELINE_DEPTH` joins in flight, and from 32 writer threads each
//!   waiting for its join.
//!
//! Each `RATIO` line is Chorus's durable writes/s over Redis's, with both
//! sides' acknowledgement p99. Redis writes a hash; Chorus commits a CRDT
//! transaction, so the ceiling for Chorus is raw automerge (the engine
//! bench's baseline), not Redis: raw automerge commits of a join, in
//! memory, are measured in the same run and also put over Redis's rate.
//!
//! Run: `cargo bench -p chorus-benches --bench redis` (about 25 s).
//! Without `--bench` (e.g. under `cargo test --benches`) it runs a few
//! writes. Needs `redis-server` and `redis-benchmark` on the PATH
//! (Debian: `apt-get install redis-server`); without them it says so and
//! measures nothing.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus_benches::raw::raw_commits;
use chorus_benches::writers::{durable_writes, pipelined_writes, Timed, PIPELINE_DEPTH};
use chorus_engine::{Engine, EngineConfig, NodeId};

/// Writers of the concurrent configuration, on both sides.
const WRITERS: usize = 32;

/// A join's fields, as a Redis hash: the session's user, role, owner (node
/// and epoch), region, join time, state and resume-token hash.
const JOIN_HASH: [&str; 16] = [
    "user",
    "user-s0000001",
    "role",
    "speaker",
    "owner_node",
    "sfu-1",
    "owner_epoch",
    "1",
    "region",
    "eu-west",
    "joined_at_ms",
    "1700000000000",
    "state",
    "connecting",
    "resume_token_hash",
    "9f2c5b8e4a1d7c3b6e0f9a2d5c8b1e4a7d0c3f6b9e2a5d8c1f4b7e0a3d6c9f2b",
];

/// One side's figure for one configuration.
#[derive(Debug, Clone, Copy)]
struct Figure {
    per_sec: f64,
    p99_ms: f64,
}

impl From<&Timed> for Figure {
    fn from(timed: &Timed) -> Self {
        Figure {
            per_sec: timed.per_sec(),
            p99_ms: timed.quantile(0.99).as_secs_f64() * 1e3,
        }
    }
}

/// A `redis-server` of its own, on a free loopback port, its files in a
/// temp dir; stopped when dropped.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start(appendfsync: &str) -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--appendonly", "yes", "--appendfsync", appendfsync])
            .args(["--save", "", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    /// `requests` HSETs of the join hash from `clients` clients, each
    /// pipelining `pipeline`: the rate and p99 `redis-benchmark` reports.
    fn hset(&self, clients: usize, pipeline: usize, requests: u64) -> Figure {
        let out = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-c", &clients.to_string(), "-n", &requests.to_string()])
            .args(["-P", &pipeline.to_string(), "-r", "1000000", "--csv"])
            .args(["HSET", "session:__rand_int__"])
            .args(JOIN_HASH)
            .output()
            .expect("redis-benchmark runs");
        assert!(out.status.success(), "redis-benchmark failed: {out:?}");
        parse_csv(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rps` and `p99_latency_ms` of `redis-benchmark --csv`'s one test.
fn parse_csv(text: &str) -> Figure {
    let rows: Vec<Vec<String>> = text
        .lines()
        .filter(|l| l.starts_with('"'))
        .map(|l| {
            l.split(',')
                .map(|f| f.trim_matches('"').to_owned())
                .collect()
        })
        .collect();
    let (header, row) = match rows.as_slice() {
        [header, row, ..] => (header, row),
        _ => panic!("no result in redis-benchmark's output: {text}"),
    };
    let field = |name: &str| -> f64 {
        let i = header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} column in {header:?}"));
        row[i].parse().expect("a number")
    };
    Figure {
        per_sec: field("rps"),
        p99_ms: field("p99_latency_ms"),
    }
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let (writes, requests) = if benchmarking {
        (8_000, 100_000)
    } else {
        (64, 1_000)
    };
    if !installed("redis-server") || !installed("redis-benchmark") {
        println!("redis: redis-server or redis-benchmark is not installed; nothing measured");
        return;
    }

    // The ceiling of a Chorus write: a raw automerge commit of a join, in
    // memory, nothing persisted.
    let commits = writes * 4;
    let raw = commits as f64 / raw_commits(commits).as_secs_f64().max(1e-9);
    println!("BASELINE raw_automerge_commits_per_sec = {raw:.0} ({commits} join-sized commits, in memory)");

    // Chorus, durable per write.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig::new(NodeId::parse("bench-node").expect("node id"));
    let engine = Engine::open(dir.path(), config).expect("engine");
    let piped = Figure::from(&pipelined_writes(&engine, writes, PIPELINE_DEPTH));
    let many = Figure::from(&durable_writes(&engine, WRITERS, writes));
    engine.stop().expect("stops");

    let configs = [
        (
            "1 writer, {PIPELINE_DEPTH} in flight",
            piped,
            1,
            PIPELINE_DEPTH,
        ),
        ("{WRITERS} writers, 1 in flight each", many, WRITERS, 1),
    ];
    for (fsync, label) in [
        ("always", "durable per write"),
        ("everysec", "NOT durable per write"),
    ] {
        let redis = Redis::start(fsync);
        for (name, chorus, clients, pipeline) in configs {
            let name = name
                .replace("{PIPELINE_DEPTH}", &PIPELINE_DEPTH.to_string())
                .replace("{WRITERS}", &WRITERS.to_string());
            let theirs = redis.hset(clients, pipeline, requests);
            println!(
                "BASELINE redis[appendfsync {fsync}, {label}; {clients} clients, pipeline {pipeline}] \
                 = {:.0} HSET/s, p99 {:.2} ms ({requests} requests)",
                theirs.per_sec, theirs.p99_ms
            );
            if clients == 1 {
                println!(
                    "RATIO raw_automerge_commits_per_sec / redis[appendfsync {fsync}; {clients} clients, \
                     pipeline {pipeline}] = {:.3} (the ceiling of the ratio below)",
                    raw / theirs.per_sec.max(1e-9)
                );
            }
            println!(
                "RATIO chorus_durable_writes_per_sec[{name}] / redis[appendfsync {fsync}] = {:.3} \
                 (chorus {:.0}/s, p99 {:.2} ms, {writes} joins; redis {:.0}/s, p99 {:.2} ms)",
                chorus.per_sec / theirs.per_sec.max(1e-9),
                chorus.per_sec,
                chorus.p99_ms,
                theirs.per_sec,
                theirs.p99_ms
            );
        }
    }
}
