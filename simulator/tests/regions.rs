//! Regions in scenarios: latencies between regions, partitions by region,
//! and the report's scale figures (background traffic over an idle window,
//! change deliveries, memory per replica).

use chorus_simulator::net::{Channel, Delivery, NetConfig, Network, RegionLatency};
use chorus_simulator::rng::Rng;
use chorus_simulator::run::{run, RunOptions};
use chorus_simulator::scenario::{Fault, Scenario};

fn between(a: &str, b: &str, latency_ms: [u64; 2]) -> RegionLatency {
    RegionLatency {
        regions: [a.into(), b.into()],
        latency_ms,
    }
}

fn due_after(net: &mut Network, from: usize, to: usize) -> u64 {
    let delivery = Delivery {
        from,
        to,
        channel: Channel::Stream,
        bytes: vec![0; 8],
    };
    net.send(1_000, delivery, &mut Rng::new(1));
    let due = net.next_due().expect("queued");
    while net.pop_due(u64::MAX).is_some() {}
    due - 1_000
}

#[test]
fn a_message_between_regions_takes_their_latency() {
    let mut net = Network::new(NetConfig {
        latency_ms: [2, 2],
        between: vec![between("eu", "us", [40, 40]), between("ap", "eu", [90, 90])],
        ..NetConfig::default()
    });
    let regions: Vec<String> = ["eu", "eu", "us", "ap"].map(String::from).to_vec();
    net.set_regions(&regions);
    assert_eq!(due_after(&mut net, 0, 1), 2, "within a region");
    assert_eq!(due_after(&mut net, 0, 2), 40, "eu to us");
    assert_eq!(due_after(&mut net, 2, 0), 40, "either way");
    assert_eq!(due_after(&mut net, 3, 1), 90, "ap to eu");
    assert_eq!(due_after(&mut net, 2, 3), 2, "a pair no entry names");
}

const REGIONAL: &str = r#"
nodes = 6
rooms = 10
duration_ms = 12000
regions = ["eu", "eu", "us", "us", "ap", "ap"]

[network]
latency_ms = [1, 3]

[[network.between]]
regions = ["eu", "us"]
latency_ms = [35, 45]

[[network.between]]
regions = ["us", "ap"]
latency_ms = [60, 80]

[workload]
ops_per_sec = 40
idle_ms = [6000, 12000]

[[events]]
at_ms = 2000
partition_regions = [["eu"], ["us"]]

[[events]]
at_ms = 4000
heal = true
"#;

#[test]
fn a_region_partition_cuts_whole_regions() {
    let scenario = Scenario::parse(REGIONAL).expect("parses");
    let plan = scenario.plan();
    // ap is in no group: its nodes form one more.
    assert_eq!(
        plan[0].fault,
        Fault::Partition(vec![vec![0, 1], vec![2, 3]]),
        "{plan:?}"
    );
}

#[test]
fn unknown_regions_are_refused_with_the_key() {
    for (bad, key) in [
        (
            REGIONAL.replace("regions = [\"eu\", \"us\"]", "regions = [\"eu\", \"mars\"]"),
            "network.between[0].regions",
        ),
        (
            REGIONAL.replace("[[\"eu\"], [\"us\"]]", "[[\"eu\"], [\"mars\"]]"),
            "partition_regions",
        ),
        (
            REGIONAL.replace("[[\"eu\"], [\"us\"]]", "[[\"eu\"], [\"eu\"]]"),
            "partition_regions",
        ),
        (
            REGIONAL.replace("latency_ms = [35, 45]", "latency_ms = [45, 35]"),
            "network.between[0].latency_ms",
        ),
        (
            REGIONAL.replace("idle_ms = [6000, 12000]", "idle_ms = [6000, 13000]"),
            "workload.idle_ms",
        ),
    ] {
        let err = Scenario::parse(&bad).expect_err("refused").to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
}

#[test]
fn an_idle_window_measures_the_background_and_the_run_passes() {
    let scenario = Scenario::parse(REGIONAL).expect("parses");
    let report = run(&scenario, &RunOptions::shipped("regional", 1)).report;
    assert!(report.passed, "{report:?}");
    let background = report
        .background_bytes_per_node_per_s
        .expect("measured over the idle window");
    assert!(background > 0.0, "an idle cluster still probes and syncs");
    // Half the run writes 40 ops/s; idle, only probes and rounds remain.
    assert!(
        background * 2.0 < report.bytes_per_node_per_s,
        "idle ({background}) costs well under the whole run ({})",
        report.bytes_per_node_per_s
    );
    if cfg!(target_os = "linux") {
        assert!(
            report.memory_per_replica_bytes.is_some_and(|b| b > 0),
            "{:?}",
            report.memory_per_replica_bytes
        );
    }
    assert!(
        report.change_deliveries_per_replica >= 1.0,
        "every applied change was received at least once: {}",
        report.change_deliveries_per_replica
    );
}
