//! Calls a failover would miss: a node's last joins reach only some
//! replicas before it dies (`replica/late_calls.rs`). A call must still
//! move wherever placement names, and a departed one must start nothing.

mod common;

use chorus_engine::membership::Grade;
use chorus_engine::replica::ReplicaConfig;
use chorus_engine::*;
use common::moving::{detect, grade, host_calls, node};
use common::pair::Net;
use common::*;

fn detect_fast_moves(config: &mut ReplicaConfig) {
    detect(config);
    config.failover_rate_per_s = 1_000;
}

/// What replicas send each other about rooms (everything but failure
/// detection's datagrams).
const ROOM_TRAFFIC: [&str; 15] = [
    "push",
    "digest_req",
    "digest_resp",
    "tree_req",
    "tree_resp",
    "leaf_req",
    "leaf_resp",
    "changes_req",
    "changes_resp",
    "since_req",
    "since_resp",
    "snapshot_req",
    "snapshot_resp",
    "leaf_heads_req",
    "leaf_heads_resp",
];

/// Node 3's last joins, one call in each of 8 rooms, reach node 2 only;
/// then node 3 is gone.
fn joins_reach_one_peer_then_the_node_dies(tweak: fn(&mut ReplicaConfig)) -> Net {
    let mut net = Net::new(4, tweak);
    net.connect_all();
    net.run_for(2_000);
    let rooms: Vec<RoomId> = (0..8).map(|i| room(&format!("late-room-{i}"))).collect();
    for r in &rooms {
        let create = RoomOp::Create {
            tenant: TenantId::parse("t").expect("valid"),
            config: RoomConfig::default(),
        };
        net.write(3, r, create);
    }
    net.run_for(500);
    // For a moment node 3 reaches only node 2, and node 2 only node 3.
    for (a, b) in [(3, 0), (3, 1), (2, 0), (2, 1)] {
        net.cut.insert((a, b));
        net.cut.insert((b, a));
    }
    for (i, r) in rooms.iter().enumerate() {
        net.write(
            3,
            r,
            RoomOp::Join {
                request: JoinRequest {
                    session: SessionId::parse(format!("late-{i}")).expect("valid"),
                    user: UserId::parse(format!("u-{i}")).expect("valid"),
                    role: Role::Speaker,
                    owner: node(3),
                    region: RegionId::parse("default").expect("valid"),
                    resume_token: None,
                },
            },
        );
    }
    net.run_for(100);
    assert_eq!(net.members[2].replica.calls_owned_by(&node(3)).len(), 8);
    for j in 0..3 {
        net.disconnect(3, j);
    }
    for (a, b) in [(2, 0), (2, 1)] {
        net.cut.remove(&(a, b));
        net.cut.remove(&(b, a));
    }
    net
}

/// A node's last joins reach one peer before it dies; the others convict
/// it, find none of its calls and finish their failovers; the joins reach
/// them later, by anti-entropy. The calls that placement gives them must
/// still move: a call left on a dead node is a call that ends.
#[test]
fn a_call_learnt_after_its_nodes_failover_found_none_is_still_rehomed() {
    let mut net = joins_reach_one_peer_then_the_node_dies(detect_fast_moves);
    // And for a while node 2 passes nothing on about rooms.
    net.dropped_kinds.extend(ROOM_TRAFFIC);
    net.run_for(5_000);
    for i in 0..3 {
        assert_eq!(grade(&net, i, 3), Some(Grade::Down), "replica {i}");
    }
    assert!(net.members[0].replica.calls_owned_by(&node(3)).is_empty());
    let stuck = net.members[2].replica.calls_owned_by(&node(3)).len();
    assert!(
        stuck > 0,
        "node 2 moved only the calls placed on it: the rest wait for 0 and 1"
    );
    net.dropped_kinds.clear();
    // Rounds opened while nothing came back time out first (5 s).
    net.run_for(6_000);
    for i in 0..3 {
        let left = net.members[i].replica.calls_owned_by(&node(3)).len();
        assert_eq!(left, 0, "replica {i} still has calls on the dead node");
    }
    let restarted: u64 = (0..3)
        .map(|i| net.members[i].replica.stats().failovers_restarted)
        .sum();
    assert!(restarted > 0, "the news started failovers again");
    assert!(net.members[..3]
        .iter()
        .all(|m| m.replica.root() == net.members[0].replica.root()));
}

fn no_anti_entropy(config: &mut ReplicaConfig) {
    detect_fast_moves(config);
    config.anti_entropy_interval_ms = 600_000;
}

/// The same, with no anti-entropy to bring the joins: node 2, which holds
/// the calls placement gives to 0 and 1, hands them over.
#[test]
fn a_call_the_named_node_lacks_is_handed_to_it() {
    let mut net = joins_reach_one_peer_then_the_node_dies(no_anti_entropy);
    net.run_for(5_000);
    for i in 0..3 {
        assert_eq!(grade(&net, i, 3), Some(Grade::Down), "replica {i}");
        let left = net.members[i].replica.calls_owned_by(&node(3)).len();
        assert_eq!(left, 0, "replica {i} still has calls on the dead node");
    }
    assert!(net.members[2].replica.stats().handoffs > 0);
    let moved_elsewhere: u64 = (0..2).map(|i| net.members[i].replica.stats().rehomed).sum();
    assert!(
        moved_elsewhere > 0,
        "0 and 1 moved the calls handed to them"
    );
}

/// A call that joined and left on a node before it died, learnt after the
/// node's failover ended, starts nothing: only a live call does.
#[test]
fn a_departed_call_learnt_late_starts_no_failover() {
    let mut net = Net::new(4, detect_fast_moves);
    net.connect_all();
    net.run_for(2_000);
    let r = host_calls(&mut net, 3, 0);
    net.run_for(500);
    for (a, b) in [(3, 0), (3, 1), (2, 0), (2, 1)] {
        net.cut.insert((a, b));
        net.cut.insert((b, a));
    }
    let request = JoinRequest {
        session: SessionId::parse("gone").expect("valid"),
        user: UserId::parse("u").expect("valid"),
        role: Role::Speaker,
        owner: node(3),
        region: RegionId::parse("default").expect("valid"),
        resume_token: None,
    };
    net.write(3, &r, RoomOp::Join { request });
    let leave = RoomOp::Leave {
        session: SessionId::parse("gone").expect("valid"),
    };
    net.write(3, &r, leave);
    net.run_for(100);
    for j in 0..3 {
        net.disconnect(3, j);
    }
    for (a, b) in [(2, 0), (2, 1)] {
        net.cut.remove(&(a, b));
        net.cut.remove(&(b, a));
    }
    net.dropped_kinds.extend(ROOM_TRAFFIC);
    net.run_for(5_000);
    net.dropped_kinds.clear();
    net.run_for(6_000);
    for i in 0..3 {
        assert_eq!(grade(&net, i, 3), Some(Grade::Down), "replica {i}");
        let room = net.members[i]
            .replica
            .room(&r)
            .expect("reads")
            .expect("room");
        assert!(room
            .sessions
            .contains_key(&SessionId::parse("gone").expect("valid")));
        let stats = net.members[i].replica.stats();
        assert_eq!(stats.failovers_restarted, 0, "replica {i}");
    }
}
