//! The `chorus-sim` binary's options, run as a user runs them.

use std::process::Command;

const SMALL: &str = r#"
description = "two nodes, a few writes, one split"
nodes = 2
rooms = 4
duration_ms = 3000
liveness_ms = 10000

[workload]
ops_per_sec = 5

[[events]]
at_ms = 1000
partition = [[0], [1]]

[[events]]
at_ms = 2000
heal = true
"#;

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chorus-sim"))
        .args(args)
        .output()
        .expect("chorus-sim runs")
}

#[test]
fn nodes_overrides_the_scenario_and_is_validated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("small.toml");
    std::fs::write(&path, SMALL).expect("write the scenario");
    let path = path.to_str().expect("utf-8 path");

    let out = sim(&[
        "run",
        "--scenario",
        path,
        "--seed",
        "3",
        "--json",
        "--nodes",
        "4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON report");
    assert_eq!(report["options"]["nodes"], 4);
    let reproduce = report["reproduce"].as_str().expect("a reproduce line");
    assert!(reproduce.ends_with("--seed 3 --nodes 4"), "{reproduce}");

    // The scenario's events name node 1: one node is too few.
    let out = sim(&["run", "--scenario", path, "--seed", "3", "--nodes", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--nodes 1"), "{err}");

    let out = sim(&["run", "--scenario", "swarm", "--seed", "3", "--nodes", "4"]);
    assert_eq!(out.status.code(), Some(2));
}
