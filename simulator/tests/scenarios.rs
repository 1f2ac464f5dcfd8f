//! Every shipped scenario passes; runs are deterministic; deliberately
//! broken rules make the simulator fail; bad scenario files are refused
//! with the key at fault named.

use std::path::{Path, PathBuf};

use chorus_simulator::mutation::Mutation;
use chorus_simulator::report::Report;
use chorus_simulator::run::{run, RunOptions};
use chorus_simulator::scenario::Scenario;
use chorus_simulator::swarm;

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn load(name: &str) -> Scenario {
    let path = scenario_dir().join(format!("{name}.toml"));
    Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}

fn run_with(scenario: &Scenario, name: &str, seed: u64, mutation: Option<Mutation>) -> Report {
    let opts = RunOptions {
        timeline: true,
        mutation,
        ..RunOptions::shipped(name, seed)
    };
    run(scenario, &opts).report
}

/// The scenarios the simulator promises to ship.
const REQUIRED: [&str; 12] = [
    "partition-heal",
    "asymmetric-partition",
    "crash-restart-mid-partition",
    "flapping-link",
    "clock-skew",
    "late-joiner",
    "three-way-split",
    "media-node-crash",
    "flapping-node",
    "lossy-no-crash",
    "region-outage",
    "drain-rollback",
];

#[test]
fn every_shipped_scenario_passes() {
    let mut names: Vec<String> = std::fs::read_dir(scenario_dir())
        .expect("the scenario directory exists")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "toml").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    for required in REQUIRED {
        assert!(
            names.iter().any(|n| n == required),
            "scenario {required} is missing"
        );
    }
    // Two at a time (CI has two cores), taking the next scenario in turn.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(name) = names.get(i) else { return };
                let report = run_with(&load(name), name, 1, None);
                results
                    .lock()
                    .expect("no worker panics holding it")
                    .push((name.clone(), report));
            });
        }
    });
    let mut results = results.into_inner().expect("workers are done");
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let mut failed = Vec::new();
    for (name, report) in &results {
        println!(
            "{name}: converged {:?} ms after the last event, {} writes acked, {} bytes / {} minimal, {:.0}x real time",
            report.convergence_ms,
            report.writes.writes_acked,
            report.bytes_sent,
            report.minimal_bytes,
            report.speedup
        );
        assert!(
            report.writes.writes_acked > 0,
            "{name}: the workload must really write"
        );
        if !report.passed {
            failed.push(format!("{name}:\n{}", report.to_text()));
        }
        if name == "compacted-past" && report.replicas.peer_bases_merged == 0 {
            // The scenario is there to compact rooms past a replica.
            failed.push(format!(
                "{name}: no replica took a base by merging its room onto it: {:?}",
                report.replicas
            ));
        }
        let absent = &report.replicas;
        if name == "absent-replica"
            && (absent.compaction_absent == 0 || absent.peer_bases_merged == 0)
        {
            // The scenario is there to go on without a replica held Down,
            // which then catches up.
            failed.push(format!(
                "{name}: nobody went on without the replica, or it never caught up: {absent:?}"
            ));
        }
        if name == "compaction-off-task" {
            // The room moves while its compaction is out, and peers' bases
            // arrive first: both ways of keeping the work off the task run,
            // over seeds 1 and 2 (whether a peer's base comes first in one
            // seed depends on timing that any change to the protocol moves).
            let second = run(&load(name), &RunOptions::shipped(name, 2)).report;
            if !second.passed {
                failed.push(format!("{name} seed 2:\n{}", second.to_text()));
            }
            let (a, b) = (&report.replicas, &second.replicas);
            let top_ups = a.compaction_top_ups + b.compaction_top_ups;
            let on_peer_base = a.compactions_on_peer_base + b.compactions_on_peer_base;
            if top_ups == 0 || on_peer_base == 0 {
                failed.push(format!(
                    "{name}: top-ups {top_ups} and compactions on a peer's base {on_peer_base} \
                     over seeds 1 and 2 (both must run)"
                ));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "failing scenarios:\n{}",
        failed.join("\n")
    );
}

#[test]
fn the_same_seed_gives_the_same_trace_and_another_seed_does_not() {
    let scenario = load("crash-restart-mid-partition");
    let first = run_with(&scenario, "crash-restart-mid-partition", 11, None);
    let again = run_with(&scenario, "crash-restart-mid-partition", 11, None);
    let other = run_with(&scenario, "crash-restart-mid-partition", 12, None);
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.bytes_sent, again.bytes_sent);
    assert_eq!(first.writes.writes_acked, again.writes.writes_acked);
    assert_ne!(first.trace_hash, other.trace_hash);
    for seed in [3, 77, 1_000_003] {
        let (_, a) = swarm::run_seed(seed, false, false);
        let (_, b) = swarm::run_seed(seed, false, false);
        assert_eq!(
            a.report.trace_hash, b.report.trace_hash,
            "swarm seed {seed}"
        );
    }
}

#[test]
fn a_broken_ownership_rule_is_caught() {
    let scenario = load("partition-heal");
    let clean = run_with(&scenario, "partition-heal", 1, None);
    assert!(clean.passed, "{}", clean.to_text());
    let broken = run_with(&scenario, "partition-heal", 1, Some(Mutation::OwnershipMin));
    assert!(
        !broken.passed,
        "inverting the ownership rule went unnoticed"
    );
    assert_eq!(broken.invariants["single_owner"], "fail");
    assert!(broken.reproduce.contains("--seed 1"));
}

#[test]
fn a_compaction_that_drops_joins_is_caught() {
    let scenario = load("standing-rooms");
    let clean = run_with(&scenario, "standing-rooms", 1, None);
    assert!(clean.passed, "{}", clean.to_text());
    assert!(
        clean.replicas.compactions >= 5,
        "the scenario compacts: {:?}",
        clean.replicas
    );
    let broken = run_with(
        &scenario,
        "standing-rooms",
        1,
        Some(Mutation::CompactionDropsJoins),
    );
    assert!(!broken.passed, "a compaction losing joins went unnoticed");
    assert_eq!(broken.invariants["acked_writes_durable"], "fail");
}

#[test]
fn a_rolling_upgrade_compacts_only_after_its_last_step_and_a_broken_gate_is_caught() {
    let scenario = load("rolling-upgrade");
    let clean = run_with(&scenario, "rolling-upgrade", 1, None);
    assert!(clean.passed, "{}", clean.to_text());
    assert!(
        clean.replicas.compactions >= 2,
        "once every replica is upgraded, rooms are compacted: {:?}",
        clean.replicas
    );
    // Broken, the gate lets the current builds compact while the older
    // ones are members; the first few seconds show it.
    let mut short = scenario.clone();
    short.duration_ms = 6_000;
    short.events.retain(|e| e.at_ms < short.duration_ms);
    let broken = run_with(
        &short,
        "rolling-upgrade",
        1,
        Some(Mutation::CompactionIgnoresGate),
    );
    assert_eq!(
        broken.invariants["version_gate"],
        "fail",
        "{}",
        broken.to_text()
    );
}

#[test]
fn a_lying_disk_and_a_deaf_transport_are_caught() {
    // Node 1 writes alone, then crashes: with a disk that never flushes,
    // the writes it acknowledged are gone.
    let isolated_crash = Scenario::parse(
        "nodes = 3\nrooms = 10\nduration_ms = 6000\n\
         [[events]]\nat_ms = 1000\nisolate = 1\n\
         [[events]]\nat_ms = 3000\ncrash = 1\n\
         [[events]]\nat_ms = 4000\nrestart = 1\n\
         [[events]]\nat_ms = 5000\nheal = true\n",
    )
    .expect("valid scenario");
    let clean = run_with(&isolated_crash, "isolated-crash", 1, None);
    assert!(clean.passed, "{}", clean.to_text());
    let lying = run_with(
        &isolated_crash,
        "isolated-crash",
        1,
        Some(Mutation::LyingDisk { node: 1 }),
    );
    assert_eq!(lying.invariants["acked_writes_durable"], "fail");
    let scenario = load("partition-heal");
    let room = chorus_engine::RoomId::parse("room-1").expect("valid id");
    let deaf = run_with(
        &scenario,
        "partition-heal",
        1,
        Some(Mutation::DeafToRoom { node: 2, room }),
    );
    assert_eq!(deaf.invariants["convergence"], "fail");
}

#[test]
fn a_replica_that_misreads_rooms_at_equal_heads_is_caught() {
    // Node 1 reads every room one session short: its heads stay equal to
    // the others', so only the equal-heads check can see it.
    let scenario = load("partition-heal");
    let broken = run_with(
        &scenario,
        "partition-heal",
        1,
        Some(Mutation::MisreadRoom { node: 1 }),
    );
    assert_eq!(
        broken.invariants["equal_heads_equal_state"],
        "fail",
        "{}",
        broken.to_text()
    );
    // Seen by a periodic check, which skips replicas already read equal at
    // the same heads, not only by the final one, which reads them all.
    let first = &broken.failures["equal_heads_equal_state"].first[0];
    let at_ms: u64 = first
        .strip_prefix("at ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no time in {first:?}"));
    assert!(
        at_ms <= broken.liveness_started_ms,
        "first seen at {at_ms} ms, after the faults ended at {} ms: {first}",
        broken.liveness_started_ms
    );
}

fn refused(text: &str) -> String {
    match Scenario::parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn bad_scenarios_are_refused_naming_the_key() {
    let base = "nodes = 3\nduration_ms = 1000\n";
    let unknown = refused(&format!("{base}colour = 3\n"));
    assert!(unknown.contains("colour"), "{unknown}");
    let nested = refused(&format!("{base}[network]\nlatency = [1, 2]\n"));
    assert!(nested.contains("latency"), "{nested}");
    let loss = refused(&format!("{base}[network]\nloss = 1.5\n"));
    assert!(loss.contains("loss"), "{loss}");
    let node = refused(&format!("{base}[[events]]\nat_ms = 10\ncrash = 3\n"));
    assert!(
        node.contains("crash") && node.contains("no such node"),
        "{node}"
    );
    let split = refused(&format!(
        "{base}[[events]]\nat_ms = 10\npartition = [[0, 1], [1, 2]]\n"
    ));
    assert!(split.contains("partition"), "{split}");
    let two = refused(&format!(
        "{base}[[events]]\nat_ms = 10\ncrash = 1\nheal = true\n"
    ));
    assert!(two.contains("exactly one action"), "{two}");
    let late = refused(&format!("{base}[[events]]\nat_ms = 5000\nheal = true\n"));
    assert!(late.contains("at_ms"), "{late}");
    let oneway = refused(&format!(
        "{base}[[events]]\nat_ms = 10\noneway = {{ from = 1, to = 1 }}\n"
    ));
    assert!(oneway.contains("oneway"), "{oneway}");
    let older = refused(&format!("{base}older_builds = [3]\n"));
    assert!(older.contains("older_builds[0] = 3"), "{older}");
    let older_joiner = refused(&format!(
        "{base}older_builds = [2]\n[[events]]\nat_ms = 10\njoin = 2\n"
    ));
    assert!(older_joiner.contains("joins later"), "{older_joiner}");
}

#[test]
fn the_format_example_parses() {
    let text = std::fs::read_to_string(scenario_dir().join("example-from-spec.toml"))
        .expect("the example ships");
    let scenario = Scenario::parse(&text).expect("the documented example is valid");
    assert_eq!(scenario.nodes, 5);
    assert_eq!(scenario.events.len(), 6);
}

#[test]
fn the_json_report_and_the_timeline_carry_what_they_promise() {
    let scenario = load("partition-heal");
    let opts = RunOptions {
        seed: 2,
        scenario_name: "partition-heal".into(),
        reproduce: String::new(),
        trace: true,
        timeline: true,
        mutation: None,
        progress: None,
        leak_at_end: false,
    };
    let result = run(&scenario, &opts);
    let json: serde_json::Value =
        serde_json::from_str(&result.report.to_json()).expect("the report is JSON");
    for key in [
        "seed",
        "scenario",
        "options",
        "invariants",
        "converged",
        "convergence_ms",
        "messages_sent",
        "messages_dropped",
        "messages_duplicated",
        "bytes_sent",
        "minimal_bytes",
        "bytes_per_node_per_s",
        "bytes_over_minimal_by_kind",
        "change_deliveries_per_replica",
        "sync_paths",
        "sim_ms",
        "wall_ms",
        "trace_hash",
    ] {
        assert!(json.get(key).is_some(), "the report lacks {key}");
    }
    assert_eq!(json["seed"], 2);
    assert_eq!(json["converged"], true);
    assert_eq!(json["options"]["nodes"], 5);
    assert_eq!(json["invariants"]["convergence"], "pass");
    let paths = &json["sync_paths"];
    assert!(paths["incremental"].is_u64() && paths["since"].is_u64() && paths["full"].is_u64());
    assert!(json["bytes_sent"].as_u64() > json["minimal_bytes"].as_u64().map(|m| m / 2));
    // Every copy of every message is in a kind: the kinds add up to the
    // bytes the network carried.
    let minimal = json["minimal_bytes"].as_f64().expect("a number");
    let by_kind: f64 = json["bytes_over_minimal_by_kind"]
        .as_object()
        .expect("a map")
        .values()
        .filter_map(|v| v.as_f64())
        .sum();
    let sent = json["bytes_sent"].as_f64().expect("a number");
    assert!(
        (by_kind * minimal - sent).abs() <= sent * 1e-9,
        "kinds {} x minimal {minimal} vs sent {sent}",
        by_kind
    );
    assert!(result.trace.iter().any(|l| l.contains("partition")));
    assert!(result.trace.iter().any(|l| l.contains("heal")));

    let svg = chorus_simulator::svg::render(&result.timeline, "partition-heal");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for label in ["node 0", "node 4", "partition", "heal", "converged"] {
        assert!(svg.contains(label), "the timeline does not show {label:?}");
    }
}

/// Structural changes keep runs identical: these seeds' trace hashes are
/// pinned (a change of behaviour updates them, and says so).
#[test]
fn pinned_traces_stay_the_same() {
    for (name, hash) in [
        ("media-node-crash", "5a417757d7a5295f"),
        ("partition-heal", "043b2f82b55f335a"),
        ("region-outage", "181c67ff5442a592"),
    ] {
        let report = run(&load(name), &RunOptions::shipped(name, 1)).report;
        assert_eq!(report.trace_hash, hash, "{name} seed 1");
    }
}

/// The long scenarios are not run here, but they must parse.
#[test]
fn the_long_scenarios_parse() {
    let dir = scenario_dir().join("long");
    let mut parsed = 0;
    for entry in std::fs::read_dir(&dir).expect("the long scenarios") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            parsed += 1;
        }
    }
    assert!(parsed >= 2, "{parsed}");
}
