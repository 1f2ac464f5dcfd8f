//! Health reports at cluster sizes where it matters (`replica/reports.rs`):
//! an idle cluster's traffic per node does not grow with the cluster, and
//! asking suspects keeps the evidence of life that the old all-to-all
//! reports gave.

use std::path::Path;

use chorus_simulator::report::Report;
use chorus_simulator::run::{run, RunOptions};
use chorus_simulator::scenario::Scenario;

fn load(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"));
    Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}

fn run_seed(scenario: &Scenario, name: &str, seed: u64) -> Report {
    run(scenario, &RunOptions::shipped(name, seed)).report
}

#[test]
fn idle_traffic_per_node_does_not_grow_with_the_cluster() {
    let mut background = load("long/background");
    let mut idle = Vec::new();
    for nodes in [10, 30] {
        background.nodes = nodes;
        let report = run_seed(&background, "long/background", 1);
        assert!(report.passed, "{}", report.to_text());
        idle.push(
            report
                .background_bytes_per_node_per_s
                .expect("the scenario has an idle window"),
        );
    }
    // Reports sent to every node every interval made this 2.5 (880 and
    // 2,166 bytes a second); asking and rotating, 1.02.
    let growth = idle[1] / idle[0];
    assert!(
        growth < 1.3,
        "idle bytes/node/s: {idle:?} at 10 and 30 replicas ({growth:.2}×)"
    );
}

#[test]
fn asking_suspects_holds_back_false_convictions_among_twenty() {
    // 25 % loss and up to 300 ms of jitter among 20 replicas: SWIM alone
    // convicts live nodes by the hundred. Reports no longer reach every
    // node every interval, so the evidence of life must come from asking
    // the suspects.
    let mut lossy = load("lossy-no-crash");
    lossy.nodes = 20;
    lossy.duration_ms = 60_000;
    lossy.network.loss = 0.25;
    lossy.network.latency_ms = [1, 301];
    let guarded = run_seed(&lossy, "lossy-no-crash", 5);
    lossy.replica.detector.silence_ms = 0;
    let unguarded = run_seed(&lossy, "lossy-no-crash", 5);
    assert!(
        guarded.failover.convictions_held > 0,
        "{}",
        guarded.to_text()
    );
    // Measured on seed 5: 0 with the layer, 472 without it, 6 when
    // suspects are not asked.
    assert!(
        guarded.false_failovers * 100 <= unguarded.false_failovers,
        "with the layer: {}, without: {}",
        guarded.false_failovers,
        unguarded.false_failovers
    );
}
