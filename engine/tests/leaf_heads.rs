//! How a walk asks for changes. Leaf answers with heads (`LeafHeadsReq`):
//! a walk skips the rooms where the peer is behind, and replicas send that
//! message only to peers that said they read it (`Body::Reads`), falling
//! back to `LeafReq` otherwise. After an answer cut by its byte budget,
//! the walk asks for the rooms past the cut in batches of about what one
//! answer covers.

mod common;

use chorus_engine::replica::ReplicaConfig;
use chorus_engine::*;
use common::pair::Net;
use common::*;

fn no_rounds(config: &mut ReplicaConfig) {
    // Rounds only when a test reconnects two members.
    config.anti_entropy_interval_ms = 600_000;
    config.round_timeout_ms = 1_000;
}

fn join(name: &str) -> RoomOp {
    RoomOp::Join {
        request: join_request(name, "u", "sfu-1"),
    }
}

/// Two members with rooms `a` and `b` on both (by push: no round has run,
/// so neither holds a cursor into the other's log and the first rounds
/// walk the tree); then member 0 alone writes to `a` (1 does not hear it)
/// and member 1 alone to `b`.
fn diverged() -> (Net, RoomId, RoomId) {
    let mut net = Net::new(2, no_rounds);
    let (a, b) = (room("a"), room("b"));
    for r in [&a, &b] {
        let create = RoomOp::Create {
            tenant: tenant("t"),
            config: RoomConfig::default(),
        };
        net.write(0, r, create);
    }
    net.run_for(100);
    assert!(net.converged(), "both rooms reach member 1 by push");
    net.cut.insert((0, 1));
    net.cut.insert((1, 0));
    net.write(0, &a, join("s0"));
    net.write(1, &b, join("s1"));
    net.run_for(100);
    assert!(!net.converged());
    net.cut.clear();
    net.reset_bytes();
    (net, a, b)
}

/// Member 0 walks member 1, then 1 walks 0 (each round runs to its end at
/// once in this harness).
fn walk_both_ways(net: &mut Net) {
    net.disconnect(0, 1);
    net.reconnect(0, 1);
}

fn sent(net: &Net, from: usize, to: usize, kind: &str) -> u64 {
    net.bytes
        .iter()
        .filter(|((f, t, k), _)| *f == from && *t == to && *k == kind)
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn a_walk_skips_the_rooms_where_the_peer_is_behind() {
    let (mut net, a, _) = diverged();
    walk_both_ways(&mut net);
    assert!(net.converged(), "both rooms converge");
    assert_eq!(
        net.members[0].replica.heads(&a).expect("heads"),
        net.members[1].replica.heads(&a).expect("heads")
    );
    assert!(sent(&net, 0, 1, "leaf_heads_req") > 0, "{:?}", net.bytes);
    assert_eq!(sent(&net, 0, 1, "leaf_req"), 0);
    // Member 0 asks for `b` only (it is ahead in `a`); member 1 gets `a`
    // by its own round.
    assert_eq!(net.members[0].replica.stats().leaf_rooms_skipped, 1);
}

#[test]
fn a_peer_that_never_said_what_it_reads_gets_version_one_leaves() {
    let (mut net, _, _) = diverged();
    // As an older build: its `Reads` is never sent, ours never decoded.
    net.dropped_kinds.insert("reads");
    walk_both_ways(&mut net);
    assert!(net.converged());
    assert!(sent(&net, 0, 1, "leaf_req") > 0, "{:?}", net.bytes);
    assert_eq!(sent(&net, 0, 1, "leaf_heads_req"), 0);
    assert_eq!(sent(&net, 1, 0, "leaf_heads_req"), 0);
    assert_eq!(net.members[0].replica.stats().leaf_rooms_skipped, 0);
}

#[test]
fn a_peer_that_stops_answering_leaf_heads_gets_version_one_again() {
    let (mut net, a, _) = diverged();
    walk_both_ways(&mut net);
    assert!(net.converged());
    // Once more, equal now: each cursor moves to the other's log head
    // (past what 1 pulled back in the first round).
    walk_both_ways(&mut net);
    // Member 1 turns into an older build without going away: it drops
    // `LeafHeadsReq` and `Reads`. Member 0 writes again, unheard: 1 has no
    // log entry after 0's cursor, so 0's next rounds walk the tree (and
    // with `SinceReq` dropped, 1 does not catch up by its own rounds).
    net.dropped_kinds.insert("reads");
    net.dropped_kinds.insert("leaf_heads_req");
    net.dropped_kinds.insert("since_req");
    net.cut.insert((0, 1));
    net.cut.insert((1, 0));
    net.write(0, &a, join("s2"));
    net.run_for(100);
    net.cut.clear();
    net.reset_bytes();
    // 0's next round waits for an answer that never comes, times out, and
    // the round after it uses `LeafReq`.
    net.run_for(600_000 + 5_000);
    net.run_for(600_000 + 5_000);
    assert!(net.converged(), "{:?}", net.bytes);
    assert!(sent(&net, 0, 1, "leaf_heads_req") > 0, "{:?}", net.bytes);
    assert!(sent(&net, 0, 1, "leaf_req") > 0, "{:?}", net.bytes);
}

#[test]
fn after_cut_answers_a_walk_names_each_room_about_once_and_a_half() {
    let mut net = Net::new(2, no_rounds);
    let x = room("x");
    let create = |net: &mut Net, i, r: &RoomId| {
        let op = RoomOp::Create {
            tenant: tenant("t"),
            config: RoomConfig::default(),
        };
        net.write(i, r, op);
    };
    create(&mut net, 0, &x);
    net.run_for(100);
    net.cut.insert((0, 1));
    net.cut.insert((1, 0));
    // About 1 MB of changes member 0 lacks: four or five answers' worth.
    let rooms: Vec<RoomId> = (0..300).map(|i| room(&format!("r{i}"))).collect();
    for r in &rooms {
        create(&mut net, 1, r);
        for j in 0..15 {
            net.write(1, r, join(&format!("s{j}")));
        }
    }
    net.run_for(100);
    net.cut.clear();
    net.reset_bytes();
    walk_both_ways(&mut net);
    assert!(net.converged());
    let named = net.rooms_asked.get(&0).copied().unwrap_or(0);
    let answers = net.bytes.get(&(1, 0, "changes_resp")).copied().unwrap_or(0) / (256 * 1024);
    assert!(answers >= 3, "{answers} answers: too few to tell");
    // Asking again for every room past each cut named each room about
    // (answers + 1) / 2 times (about 1,100 names here); batches of twice
    // what the last answer covered, about 780; now about 440.
    assert!(
        named * 10 <= rooms.len() as u64 * 16,
        "{named} rooms named for {} rooms",
        rooms.len()
    );
}
