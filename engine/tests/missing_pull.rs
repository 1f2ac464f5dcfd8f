//! A push whose changes wait for a change it did not bring is followed by
//! a request for it only if it is still missing `pull_missing_after_ms`
//! later: pushes from different peers race, and the missing change is
//! usually the next to arrive.

mod common;

use chorus_engine::replica::wire::{self, Body, Envelope, RoomChanges};
use chorus_engine::replica::{Input, ReplicaConfig};
use chorus_engine::*;
use common::pair::{Net, CLUSTER};
use common::*;
use serde_bytes::ByteBuf;

fn no_rounds(config: &mut ReplicaConfig) {
    // Only pushes: no anti-entropy to bring the missing change.
    config.anti_entropy_interval_ms = 600_000;
}

fn at_once(config: &mut ReplicaConfig) {
    no_rounds(config);
    config.pull_missing_after_ms = 0;
}

fn asked(net: &Net, from: usize, to: usize) -> bool {
    net.bytes.contains_key(&(from, to, "changes_req"))
}

/// `n` replicas, connected, holding room `r`.
fn with_room(n: usize, tweak: fn(&mut ReplicaConfig)) -> (Net, RoomId) {
    let mut net = Net::new(n, tweak);
    net.connect_all();
    let r = room("r");
    net.write(
        0,
        &r,
        RoomOp::Create {
            tenant: tenant("t"),
            config: RoomConfig::default(),
        },
    );
    net.run_for(50);
    assert!(net.converged());
    (net, r)
}

/// Replica 2 misses 1's join; 0 applies it and writes after it, so 0's
/// push reaches 2 with a change that waits for 1's.
fn two_waits(tweak: fn(&mut ReplicaConfig)) -> (Net, RoomId) {
    let (mut net, r) = with_room(3, tweak);
    net.cut.insert((1, 2));
    net.write(1, &r, join("a"));
    net.run_for(5);
    net.write(0, &r, join("b"));
    net.run_for(1);
    net.cut.remove(&(1, 2));
    (net, r)
}

fn join(id: &str) -> RoomOp {
    RoomOp::Join {
        request: join_request(id, &format!("u-{id}"), "sfu-1"),
    }
}

/// Replica 1's push of what 2 lacks, arriving late.
fn late_push(net: &mut Net, room: &RoomId) {
    let have = net.members[2].replica.heads(room).expect("heads");
    let changes = net.members[1]
        .replica
        .changes_since(room, &have)
        .expect("changes");
    let bytes = wire::encode(&Envelope {
        cluster: CLUSTER,
        sent_at: Default::default(),
        body: Body::Push {
            rooms: vec![RoomChanges {
                room: room.clone(),
                changes: changes.into_iter().map(ByteBuf::from).collect(),
            }],
        },
    });
    let from = net.members[1].id.clone();
    net.input(2, Input::Message { from, bytes });
}

#[test]
fn a_missing_change_that_arrives_meanwhile_is_not_asked_for() {
    let (mut net, r) = two_waits(no_rounds);
    assert!(!asked(&net, 2, 0), "not asked for at once");
    net.run_for(5);
    late_push(&mut net, &r);
    net.run_for(100);
    assert!(!asked(&net, 2, 0), "the change arrived: nothing to ask for");
    let stats = net.members[2].replica.stats();
    assert_eq!((stats.missing_pulls, stats.missing_pulls_spared), (0, 1));
    assert!(net.converged());
}

#[test]
fn a_missing_change_still_missing_after_the_wait_is_asked_of_the_pusher() {
    let (mut net, _) = two_waits(no_rounds);
    net.run_for(15);
    assert!(!asked(&net, 2, 0), "not before the wait is over");
    net.run_for(10);
    assert!(
        asked(&net, 2, 0),
        "asked of the pusher once the wait is over"
    );
    let stats = net.members[2].replica.stats();
    assert_eq!((stats.missing_pulls, stats.missing_pulls_spared), (1, 0));
    assert!(
        net.converged(),
        "the pusher's answer brings the missing change"
    );
}

#[test]
fn with_no_wait_a_missing_change_is_asked_for_at_once() {
    let (net, _) = two_waits(at_once);
    assert!(asked(&net, 2, 0));
    assert!(net.converged());
}

/// A push all of whose changes apply asks its pusher nothing, even into a
/// room where another push's change waits (that push's pusher is asked).
#[test]
fn a_push_that_left_nothing_waiting_asks_nothing() {
    let (mut net, r) = with_room(4, no_rounds);
    // Replica 3 hears only from 2, and 2 misses 1's join; 0 writes
    // after it, so 0's push waits in 2's room.
    for i in [0, 1] {
        net.cut.insert((i, 3));
        net.cut.insert((3, i));
    }
    net.cut.insert((1, 2));
    net.write(1, &r, join("a"));
    net.run_for(5);
    net.write(0, &r, join("b"));
    net.run_for(5);
    // 0's answers to 2 are lost, so 0's join waits on.
    net.cut.insert((0, 2));
    // Replica 3's join stands on what 2 holds: it applies at once.
    net.write(3, &r, join("c"));
    net.run_for(100);
    assert!(
        asked(&net, 2, 0),
        "the pusher of the waiting change is asked"
    );
    assert!(
        !asked(&net, 2, 3),
        "the pusher of nothing that waits is not"
    );
}
