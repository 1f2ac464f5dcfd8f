//! Progress reporting only watches a run: a run with a progress bar is the
//! same run, bit for bit, as one without.

use std::path::Path;
use std::sync::Arc;

use chorus_simulator::progress::RunProgress;
use chorus_simulator::run::{run, RunOptions};
use chorus_simulator::scenario::Scenario;

#[test]
fn a_progress_bar_does_not_change_the_run() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/media-node-crash.toml");
    let scenario = Scenario::load(&path).expect("the scenario ships");
    let quiet = RunOptions {
        trace: true,
        ..RunOptions::shipped("media-node-crash", 3)
    };
    let bar = Arc::new(RunProgress::hidden());
    let watched = RunOptions {
        progress: Some(bar.clone()),
        ..quiet.clone()
    };
    let a = run(&scenario, &quiet);
    let b = run(&scenario, &watched);
    // The run lasts over a second: the bar was told many times.
    assert!(bar.updates() > 0, "the runner reported progress");
    assert_eq!(a.report.trace_hash, b.report.trace_hash);
    assert_eq!(a.trace, b.trace);
}
