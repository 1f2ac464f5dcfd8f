//! Swarm testing (TigerBeetle's VOPR, FoundationDB's simulation): every
//! seed draws its own cluster, network, workload, replica settings and
//! fault schedule, then runs it. Short runs with fast anti-entropy so that
//! hundreds of seeds fit in a CI minute.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use crate::net::NetConfig;
use crate::report::Report;
use crate::rng::Rng;
use crate::run::{run, RunOptions, RunResult};
use crate::scenario::{
    ClockSkew, EventSpec, Flap, NetUpdate, OneWay, ReplicaConfig, Scenario, WorkloadConfig,
};

/// Keeps the drawing generator apart from the run's (same seed).
const DRAW_SALT: u64 = 0x005E_A50F_F00D;

/// The scenario name a swarm run reports, and `replay --scenario` accepts.
pub const SWARM: &str = "swarm";

fn pick(rng: &mut Rng, n: usize) -> usize {
    rng.index(n)
}

fn pair(rng: &mut Rng, n: usize) -> (usize, usize) {
    let a = pick(rng, n);
    let b = (a + 1 + pick(rng, n - 1)) % n;
    (a, b)
}

fn percent(rng: &mut Rng, max: u64) -> f64 {
    rng.range(0, max) as f64 / 100.0
}

/// The scenario seed `seed` draws.
pub fn draw(seed: u64) -> Scenario {
    let mut r = Rng::new(seed ^ DRAW_SALT);
    let nodes = r.range(2, 5) as usize;
    let duration_ms = r.range(10, 30) * 100;
    let latency_lo = r.range(0, 5);
    let network = NetConfig {
        latency_ms: [latency_lo, latency_lo + r.range(0, 40)],
        loss: if r.chance(0.3) {
            0.0
        } else {
            percent(&mut r, 30)
        },
        duplicate: if r.chance(0.4) {
            0.0
        } else {
            percent(&mut r, 50)
        },
        reorder: r.chance(0.5),
        stream_reset: if r.chance(0.5) {
            0.0
        } else {
            r.range(0, 50) as f64 / 1_000.0
        },
        between: Vec::new(),
    };
    let mut replica = ReplicaConfig {
        anti_entropy_interval_ms: r.range(50, 250),
        round_timeout_ms: r.range(300, 1_000),
        push_delay_ms: r.range(1, 5),
        end_ack_interval_ms: r.range(100, 500),
        ..ReplicaConfig::default()
    };
    if r.chance(0.25) {
        // A short log: restarts and partitions fall back to full snapshots.
        replica.log_retention_ms = r.range(300, 1_500);
        replica.log_trim_interval_ms = 100;
    }
    if r.chance(0.2) {
        // Purge by horizon while replicas may still hold the room.
        replica.purge_horizon_ms = r.range(500, 3_000);
    }
    if r.chance(0.2) {
        // Rooms evicted and reloaded all the time.
        replica.hot_rooms = r.range(1, 4) as usize;
    }
    let late = (nodes >= 3 && r.chance(0.15)).then_some(nodes - 1);
    let steady = if late.is_some() { nodes - 1 } else { nodes };
    let mut events = Vec::new();
    if let Some(node) = late {
        events.push(EventSpec {
            at_ms: r.range(0, duration_ms),
            join: Some(node),
            ..EventSpec::default()
        });
    }
    for _ in 0..r.range(0, 6) {
        let at_ms = r.range(0, duration_ms);
        let later = |r: &mut Rng| (at_ms + r.range(100, 1_500)).min(duration_ms);
        let mut event = EventSpec {
            at_ms,
            ..EventSpec::default()
        };
        match r.range(0, 10) {
            0 => event.partition = Some(crate::run::random_split(&mut r, nodes, 2)),
            1 => event.isolate = Some(pick(&mut r, nodes)),
            2 => {
                let (from, to) = pair(&mut r, nodes);
                event.oneway = Some(OneWay { from, to });
            }
            3 => {
                let (a, b) = pair(&mut r, nodes);
                event.cut = Some([a, b]);
            }
            4 => event.heal = Some(true),
            5 | 6 => {
                let node = pick(&mut r, steady);
                if r.range(0, 4) == 0 {
                    event.wipe = Some(node);
                } else {
                    event.crash = Some(node);
                }
                if r.chance(0.7) {
                    events.push(EventSpec {
                        at_ms: later(&mut r),
                        restart: Some(node),
                        ..EventSpec::default()
                    });
                }
            }
            7 => {
                event.clock_skew = Some(ClockSkew {
                    node: pick(&mut r, nodes),
                    offset_ms: r.range(0, 20_000) as i64 - 10_000,
                    drift_ppm: r.range(0, 4_000) as i64 - 2_000,
                });
            }
            8 => {
                event.network = Some(NetUpdate {
                    loss: Some(percent(&mut r, 30)),
                    duplicate: Some(percent(&mut r, 50)),
                    ..NetUpdate::default()
                });
            }
            _ => {
                if nodes >= 3 && r.chance(0.5) {
                    event.partition = Some(crate::run::random_split(&mut r, nodes, 3));
                } else {
                    let (a, b) = pair(&mut r, nodes);
                    let until_ms = later(&mut r);
                    let period_ms = r.range(30, 300);
                    event.flap = Some(Flap {
                        a,
                        b,
                        period_ms,
                        until_ms,
                    });
                }
            }
        }
        events.push(event);
    }
    events.sort_by_key(|e| e.at_ms);
    let mut rooms = r.range(3, 16) as usize;
    let mut older_builds = Vec::new();
    let mut compaction_work_ms = None;
    let mut workload = WorkloadConfig {
        ops_per_sec: r.range(20, 80) as f64,
        end_rooms: true,
        idle_ms: None,
        rooms_at_start: 0,
    };
    // Drawn last, so that every other draw of a seed stays what it was.
    if r.chance(0.2) {
        // Standing rooms under heavy churn: compacted several times a run,
        // with sessions pruned soon after they leave.
        rooms = r.range(1, 3) as usize;
        workload.ops_per_sec = r.range(100, 300) as f64;
        workload.end_rooms = false;
        replica.history_changes_max = r.range(30, 120);
        replica.session_retention_ms = r.range(0, 2_000);
        replica.end_ack_interval_ms = r.range(50, 200);
        // A rolling upgrade under way: some replicas start on the build
        // from before compaction and are upgraded one by one.
        if r.chance(0.3) {
            let joiners: Vec<usize> = events.iter().filter_map(|e| e.join).collect();
            for node in (0..nodes).filter(|n| !joiners.contains(n)) {
                if r.chance(0.5) {
                    older_builds.push(node);
                    events.push(EventSpec {
                        at_ms: r.range(0, duration_ms),
                        upgrade: Some(node),
                        ..EventSpec::default()
                    });
                }
            }
            events.sort_by_key(|e| e.at_ms);
        }
        // Compactions off the task, taking long enough for writes, bases
        // and faults to arrive meanwhile; and peers' changes into rooms
        // past a few hundred operations applied on copies, as a room of
        // thousands of sessions is.
        if r.chance(0.5) {
            compaction_work_ms = Some([0, r.range(0, 500)]);
            replica.apply_off_task_ops = r.range(200, 2_000);
        }
    }
    // Drawn last, so that the draws above stay those of earlier builds.
    if r.chance(0.25) {
        // A push's missing dependencies asked for at once, or late.
        replica.pull_missing_after_ms = if r.chance(0.5) { 0 } else { r.range(50, 300) };
    }
    // Drawn last too. Standing rooms with a replica the others do not list
    // (a media node linking the library): once the others restart while it
    // is cut off, they compact past it, and it must catch up.
    let mut unlisted = Vec::new();
    if !workload.end_rooms && r.chance(0.3) {
        unlisted.push(nodes - 1);
    }
    Scenario {
        description: Some(format!("drawn by swarm seed {seed}")),
        nodes,
        rooms,
        duration_ms,
        liveness_ms: 20_000,
        network,
        workload,
        replica,
        checks: crate::scenario::CheckConfig {
            interval_ms: 500,
            rooms_per_check: 8,
            sample_ms: 50,
            replicas_per_room: None,
            failover_budget_ms: None,
            false_failovers_max: None,
            rehomed_calls_max: None,
        },
        events,
        regions: Vec::new(),
        older_builds,
        unlisted,
        compaction_work_ms,
    }
}

/// One line: what a seed drew.
pub fn describe(s: &Scenario) -> String {
    let n = &s.network;
    let mut line = format!(
        "{}n {}r {}ms {}ops/s lat {}-{} loss {:.2} dup {:.2}{} resets {:.3} AE {}ms",
        s.nodes,
        s.rooms,
        s.duration_ms,
        s.workload.ops_per_sec,
        n.latency_ms[0],
        n.latency_ms[1],
        n.loss,
        n.duplicate,
        if n.reorder { " reorder" } else { "" },
        n.stream_reset,
        s.replica.anti_entropy_interval_ms,
    );
    let defaults = ReplicaConfig::default();
    if s.replica.log_retention_ms != defaults.log_retention_ms {
        let ms = s.replica.log_retention_ms;
        line += &format!(" log {ms}ms");
    }
    if s.replica.pull_missing_after_ms != defaults.pull_missing_after_ms {
        let ms = s.replica.pull_missing_after_ms;
        line += &format!(" pull missing after {ms}ms");
    }
    if s.replica.purge_horizon_ms != defaults.purge_horizon_ms {
        let ms = s.replica.purge_horizon_ms;
        line += &format!(" purge {ms}ms");
    }
    if !s.workload.end_rooms {
        line += &format!(
            " standing rooms, compact at {} changes, retention {}ms",
            s.replica.history_changes_max, s.replica.session_retention_ms
        );
    }
    if !s.unlisted.is_empty() {
        line += &format!(" unlisted {:?}", s.unlisted);
    }
    if let Some([min, max]) = s.compaction_work_ms {
        let ops = s.replica.apply_off_task_ops;
        line += &format!(", work off the task {min}-{max}ms (applies past {ops} ops)");
    }
    if s.replica.hot_rooms != defaults.hot_rooms {
        let hot = s.replica.hot_rooms;
        line += &format!(" hot {hot}");
    }
    let events: Vec<String> = s.events.iter().map(describe_event).collect();
    if !events.is_empty() {
        line += " | ";
        line += &events.join(", ");
    }
    line
}

fn describe_event(e: &EventSpec) -> String {
    let what = if let Some(g) = &e.partition {
        format!("partition {g:?}")
    } else if let Some(o) = e.oneway {
        format!("oneway {}→{}", o.from, o.to)
    } else if let Some(v) = e.isolate {
        format!("isolate {v}")
    } else if let Some([a, b]) = e.cut {
        format!("cut {a}-{b}")
    } else if let Some(f) = e.flap {
        format!("flap {}-{}/{}ms→{}", f.a, f.b, f.period_ms, f.until_ms)
    } else if e.heal.is_some() {
        "heal".into()
    } else if let Some(v) = e.crash {
        format!("crash {v}")
    } else if let Some(v) = e.restart {
        format!("restart {v}")
    } else if let Some(v) = e.upgrade {
        format!("upgrade {v}")
    } else if let Some(v) = e.wipe {
        format!("wipe {v}")
    } else if let Some(v) = e.join {
        format!("join {v}")
    } else if let Some(c) = e.clock_skew {
        format!("skew {} {:+}ms {:+}ppm", c.node, c.offset_ms, c.drift_ppm)
    } else if let Some(u) = &e.network {
        format!(
            "net loss {:.2} dup {:.2}",
            u.loss.unwrap_or(0.0),
            u.duplicate.unwrap_or(0.0)
        )
    } else {
        "reset streams".into()
    };
    format!("{} {what}", e.at_ms)
}

pub fn reproduce(seed: u64) -> String {
    format!("chorus-sim replay --seed {seed} --scenario {SWARM}")
}

/// Draws and runs seed `seed`.
pub fn run_seed(seed: u64, trace: bool, timeline: bool) -> (Scenario, RunResult) {
    let scenario = draw(seed);
    let opts = RunOptions {
        seed,
        scenario_name: SWARM.into(),
        reproduce: reproduce(seed),
        trace,
        timeline,
        mutation: None,
        progress: None,
        leak_at_end: false,
    };
    let result = run(&scenario, &opts);
    (scenario, result)
}

/// Runs seeds `from..from + count` on `jobs` threads and hands each result
/// to `each` in seed order.
pub fn run_many(from: u64, count: u64, jobs: usize, mut each: impl FnMut(&Scenario, &Report)) {
    let next = AtomicU64::new(from);
    let end = from.saturating_add(count);
    let (tx, rx) = mpsc::channel::<(u64, Scenario, Report)>();
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= end {
                    return;
                }
                let (scenario, result) = run_seed(seed, false, false);
                if tx.send((seed, scenario, result.report)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let mut waiting = BTreeMap::new();
        let mut expected = from;
        for (seed, scenario, report) in rx {
            waiting.insert(seed, (scenario, report));
            while let Some((scenario, report)) = waiting.remove(&expected) {
                each(&scenario, &report);
                expected += 1;
            }
        }
    });
}
