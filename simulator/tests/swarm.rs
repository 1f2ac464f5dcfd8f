//! Swarm: many seeds, each drawing its own cluster, network, settings and
//! faults. `CHORUS_SWARM_SEEDS` raises the count (CI keeps the default).

use chorus_simulator::swarm;

/// Seeds CI runs on every change.
const SEEDS_DEFAULT: u64 = 500;

#[test]
fn swarm_seeds_all_pass() {
    let seeds = std::env::var("CHORUS_SWARM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEEDS_DEFAULT);
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let mut failed = Vec::new();
    let mut ran = 0;
    let mut wrote = 0;
    swarm::run_many(0, seeds, jobs, |scenario, report| {
        ran += 1;
        if report.writes.writes_acked > 0 {
            wrote += 1;
        }
        if !report.passed {
            failed.push(format!(
                "seed {}: {}\n  {}\n{}",
                report.seed,
                swarm::describe(scenario),
                swarm::reproduce(report.seed),
                report.to_text()
            ));
        }
    });
    assert_eq!(ran, seeds);
    // Nearly every seed must really write, or the swarm proves nothing.
    assert!(
        wrote * 10 >= seeds * 9,
        "only {wrote} of {seeds} seeds wrote"
    );
    assert!(
        failed.is_empty(),
        "{} seeds failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
