//! Twenty `chorus run` processes on loopback, driven through their HTTP
//! APIs only (`chorus bench daemons`, with fewer writes): every
//! acknowledged join on every daemon, a SIGKILLed daemon's calls owned by
//! survivors within the failover bound, and a drill that cuts five of the
//! nineteen survivors off: the fourteen take the five's calls, the five
//! convict all fourteen and move none of theirs, and after the heal every
//! survivor holds every join, the same. Before failovers waited for fresh
//! evidence of a majority (`engine/src/replica/quorum.rs`) the five took
//! calls here.

use std::path::Path;
use std::time::Duration;

use chorus_node::bench::{daemons, DaemonsOptions, FAILOVER_WALL_MAX};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_daemons_converge_fail_over_and_come_through_a_drill() {
    let options = DaemonsOptions {
        nodes: 20,
        // Lighter than the bench's 100/s: twenty debug-build daemons share
        // two cores with the test.
        rate: 50.0,
        busy: Duration::from_secs(4),
    };
    let report = daemons(Path::new(env!("CARGO_BIN_EXE_chorus")), &options)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    report.print();
    assert_eq!(report.writes, 200);
    // Each step had something to prove: calls on the killed daemon, calls
    // on the cut-off side.
    assert!(report.killed_calls > 0, "{report:?}");
    assert!(report.cut_calls > 0, "{report:?}");
    assert!(report.rehomed <= FAILOVER_WALL_MAX, "{report:?}");
    // CPU and memory were measured for every daemon (Linux).
    if cfg!(target_os = "linux") {
        assert_eq!(report.idle.cpu_percent.len(), 20);
        assert_eq!(report.busy.rss_bytes.len(), 20);
    }
}
