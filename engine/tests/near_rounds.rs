//! Anti-entropy prefers near peers (`Replica::round_order`): each cycle
//! rounds with every peer, and `NEAR_PEER_VISITS` times with each peer
//! whose health report names this replica's region.

mod common;

use chorus_engine::limits::NEAR_PEER_VISITS;
use chorus_engine::replica::ReplicaConfig;
use chorus_engine::RegionId;
use common::moving::detect;
use common::pair::Net;

/// r0 and r1 in one region, r2–r4 in another.
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
