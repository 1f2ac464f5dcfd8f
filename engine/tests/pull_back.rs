//! A replica that learns from a peer's request that it lacks changes pulls
//! them back from that peer, one peer at a time: after a heal every peer's
//! walk shows it the same missing changes, and asking each of them would
//! bring those changes once per peer.

mod common;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ScalarValue, ROOT};
use chorus_engine::model::Head;
use chorus_engine::replica::wire::{self, Body, Envelope, RoomChanges, RoomHeads, WireHead};
use chorus_engine::replica::{Input, ReplicaConfig};
use chorus_engine::*;
use common::pair::{Net, CLUSTER};
use common::*;

fn no_rounds(config: &mut ReplicaConfig) {
    // Only the requests the test sends: no anti-entropy of their own.
    config.anti_entropy_interval_ms = 600_000;
    config.round_timeout_ms = 1_000;
}

/// Member `from` asks `to` for what it lacks of `room`, showing its heads.
fn ask(net: &mut Net, to: usize, from: usize, room: &RoomId) {
    let heads = net.members[from].replica.heads(room).expect("heads");
    ask_showing(net, to, from, room, heads);
}

/// Member `from` asks `to` for what it lacks of `room`, showing `heads`.
fn ask_showing(net: &mut Net, to: usize, from: usize, room: &RoomId, heads: Vec<Head>) {
    let body = Body::ChangesReq {
        round: 7,
        rooms: vec![RoomHeads {
            room: room.clone(),
            heads: heads.into_iter().map(WireHead::from).collect(),
            ancestry: Vec::new(),
        }],
    };
    let bytes = wire::encode(&Envelope {
        cluster: CLUSTER,
        sent_at: Default::default(),
        body,
    });
    let peer = net.members[from].id.clone();
    net.input(to, Input::Message { from: peer, bytes });
}

/// Member `from` pushes `to` a change to `room` that breaks its rules
/// (it sets the schema version to 99); returns its hash.
fn push_refused_change(net: &mut Net, to: usize, from: usize, room: &RoomId) -> Head {
    let export = net.members[from]
        .replica
        .export_room(room)
        .expect("export")
        .expect("the room exists");
    let mut doc = AutoCommit::load(&export).expect("standard automerge");
    doc.set_actor(ActorId::from(b"foreign-writer-1".as_slice()));
    doc.put(ROOT, "schema", ScalarValue::Uint(99))
        .expect("schema");
    let change = doc.get_last_local_change().expect("a change").clone();
    let bytes = wire::encode(&Envelope {
        cluster: CLUSTER,
        sent_at: Default::default(),
        body: Body::Push {
            rooms: vec![RoomChanges {
                room: room.clone(),
                changes: vec![serde_bytes::ByteBuf::from(change.raw_bytes().to_vec())],
            }],
        },
    });
    let peer = net.members[from].id.clone();
    net.input(to, Input::Message { from: peer, bytes });
    Head(change.hash().0)
}

fn pulled_back(net: &Net, from: usize, to: usize) -> bool {
    net.bytes.contains_key(&(from, to, "changes_req"))
}

#[test]
fn a_replica_pulls_back_from_one_peer_at_a_time() {
    let mut net = Net::new(3, no_rounds);
    net.connect_all();
    net.run_for(100);
    // Replica 0 hears nothing from 1 and 2 (it still talks to them): it
    // misses the room 1 creates, which reaches 2 by push.
    net.cut.insert((1, 0));
    net.cut.insert((2, 0));
    let r = room("r");
    net.write(
        1,
        &r,
        RoomOp::Create {
            tenant: tenant("t"),
            config: RoomConfig::default(),
        },
    );
    net.run_for(100); // the push goes out
    assert!(net.members[0].replica.heads(&r).expect("heads").is_empty());
    let at_1 = net.members[1].replica.heads(&r).expect("heads");
    assert!(!at_1.is_empty());
    assert_eq!(net.members[2].replica.heads(&r).expect("heads"), at_1);
    net.bytes.clear();

    ask(&mut net, 0, 1, &r);
    assert!(pulled_back(&net, 0, 1), "the first request is pulled back");
    // Its answer is lost (1 -> 0 is cut): the pull-back stays out.
    ask(&mut net, 0, 2, &r);
    assert!(
        !pulled_back(&net, 0, 2),
        "a second peer is not asked for the same changes while one is"
    );
    // Once the first is given up, the next request is pulled back.
    net.run_for(1_100);
    ask(&mut net, 0, 2, &r);
    assert!(pulled_back(&net, 0, 2));
}

/// A peer that holds a change this replica refused is not asked for it:
/// two replicas that each refuse a change the other holds pulled from each
/// other without end, as fast as the network carried it.
#[test]
fn a_refused_change_is_not_pulled_back() {
    let mut net = Net::new(2, no_rounds);
    net.connect_all();
    let r = room("r");
    net.write(
        1,
        &r,
        RoomOp::Create {
            tenant: tenant("t"),
            config: RoomConfig::default(),
        },
    );
    net.run_for(100);
    let refused = push_refused_change(&mut net, 0, 1, &r);
    let stats = net.members[0].replica.stats();
    assert_eq!(stats.changes_refused, 1, "the change was refused");
    net.bytes.clear();

    ask_showing(&mut net, 0, 1, &r, vec![refused]);
    assert!(
        !pulled_back(&net, 0, 1),
        "the refused change is not asked for again"
    );
    // A head it lacks and did not refuse is still pulled back.
    let unknown = Head([7; 32]);
    ask_showing(&mut net, 0, 1, &r, vec![refused, unknown]);
    assert!(pulled_back(&net, 0, 1));
}
