//! Anti-entropy prefers near peers (`Replica::round_order`): each cycle
//! rounds with every peer, and `NEAR_PEER_VISITS` times with each peer
//! whose health report names this replica's region.

mod common;

use chorus_engine::limits::NEAR_PEER_VISITS;
use chorus_engine::replica::ReplicaConfig;
use chorus_engine::RegionId;
use common::moving::detect;
use common::pair::Net;

/// r0 and r1 in one region, every other replica in another.
fn two_regions(config: &mut ReplicaConfig) {
    detect(config);
    let near = matches!(config.node.as_str(), "r0" | "r1");
    let region = if near { "eu" } else { "us" };
    config.region = RegionId::parse(region).expect("valid");
}

/// Rounds r0 opened with each peer (idle rounds: one `DigestReq` each).
fn rounds_from_r0(net: &Net) -> Vec<u64> {
    let size = |to: usize| net.bytes.get(&(0, to, "digest_req")).copied().unwrap_or(0);
    (1..net.members.len()).map(size).collect()
}

#[test]
fn rounds_visit_near_peers_more_often_and_every_peer_each_cycle() {
    let mut net = Net::new(5, two_regions);
    net.connect_all();
    // Every region known from the first reports.
    net.run_for(2_000);
    net.reset_bytes();
    net.run_for(30_000);
    let bytes = rounds_from_r0(&net);
    let near = bytes[0] as f64;
    for (j, far) in bytes[1..].iter().enumerate() {
        assert!(
            *far > 0,
            "r{} in the other region is reached: {bytes:?}",
            j + 2
        );
        let ratio = near / *far as f64;
        let want = NEAR_PEER_VISITS as f64;
        assert!(
            (ratio - want).abs() < 0.5,
            "r1 rounded with {ratio:.2}x as often as r{}, not {want}x: {bytes:?}",
            j + 2
        );
    }
}

#[test]
fn one_region_rounds_with_each_peer_alike() {
    let mut net = Net::new(4, detect);
    net.connect_all();
    net.run_for(2_000);
    net.reset_bytes();
    net.run_for(30_000);
    let bytes = rounds_from_r0(&net);
    let (min, max) = (bytes.iter().min(), bytes.iter().max());
    let (Some(&min), Some(&max)) = (min, max) else {
        panic!("no rounds: {bytes:?}");
    };
    assert!(min > 0 && max as f64 / min as f64 <= 1.1, "{bytes:?}");
}

/// `two_regions` with rounds once a second, as by default (the tests'
/// replicas round ten times as often): one cycle per peer-second.
fn two_regions_slow(config: &mut ReplicaConfig) {
    two_regions(config);
    config.anti_entropy_interval_ms = 1_000;
}

/// The first order is drawn before any report has come, so it cannot know
/// who is near. It is drawn again as soon as the reports tell, not at the
/// end of its cycle: with 40 peers that cycle is 40 s, and at 200
/// replicas longer than a minute.
#[test]
fn the_order_is_drawn_again_once_near_peers_are_known() {
    let mut net = Net::new(41, two_regions_slow);
    net.connect_all();
    // No report gets through at first: the first order is drawn blind.
    net.dropped_kinds.extend(["health", "health_ask"]);
    net.run_for(3_000);
    net.dropped_kinds.clear();
    net.run_for(500);
    net.reset_bytes();
    // About 32 turns. The blind order (40 places, at least 36 s) holds
    // r1 once; an order that knows r1 is near gives it three visits, one
    // in each third of the cycle (of 42 places), so about two in 32.
    net.run_for(32_000);
    // Idle rounds, one `DigestReq` each, of one size to peers whose ids
    // are as long as r1's.
    let bytes = rounds_from_r0(&net);
    let one = bytes[1..8].iter().copied().filter(|b| *b > 0).min();
    let one = one.expect("r0 opened rounds with far peers");
    let near = bytes[0] as f64 / one as f64;
    assert!(
        near >= 1.9,
        "r0 rounded {near:.1} times with r1 in 32 s: {bytes:?}"
    );
}
