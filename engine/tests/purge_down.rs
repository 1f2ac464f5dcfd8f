//! An ended room is purged once every replica not held Down has
//! acknowledged it (`Replica::purge_due`): a crashed replica never
//! acknowledges, and waiting for it kept every room that ended after the
//! crash on every replica's `EndAck` list until the purge horizon. A
//! replica that comes back still holding such a room is told `Purged`,
//! with the end change as proof, and purges it too.

mod common;

use chorus_engine::membership::Grade;
use chorus_engine::replica::ReplicaConfig;
use chorus_engine::*;
use common::moving::{detect, grade};
use common::pair::Net;
use common::*;

fn config(config: &mut ReplicaConfig) {
    detect(config);
    config.end_ack_interval_ms = 200;
    // Far beyond the test: a purge in it is never the horizon's.
    config.purge_horizon_ms = 3_600_000;
}

fn settle(net: &mut Net) {
    for _ in 0..100 {
        net.run_for(100);
        if net.converged() {
            return;
        }
    }
    panic!("replicas did not converge");
}

#[test]
fn a_replica_held_down_is_not_waited_for_and_purges_when_back() {
    let mut net = Net::new(3, config);
    net.connect_all();
    net.run_for(2_000);
    let (ended, live) = (room("ended"), room("live"));
    for r in [&ended, &live] {
        let create = RoomOp::Create {
            tenant: tenant("t"),
            config: RoomConfig::default(),
        };
        net.write(0, r, create);
    }
    settle(&mut net);

    // Replica 2 is cut off until both others hold it Down, then the room
    // ends: 2 never sees the end and never acknowledges it.
    net.disconnect(2, 0);
    net.disconnect(2, 1);
    net.run_for(3_000);
    for i in [0, 1] {
        assert_eq!(grade(&net, i, 2), Some(Grade::Down), "replica {i}");
    }
    net.write(0, &ended, RoomOp::End);
    net.run_for(1_000);
    for i in [0, 1] {
        let replica = &net.members[i].replica;
        assert!(replica.is_purged(&ended), "replica {i} purged");
        assert!(!replica.is_purged(&live), "replica {i} keeps the live room");
    }
    assert!(!net.members[2].replica.is_purged(&ended));

    // Back: the purge reaches 2 with its proof, and the live room stays.
    net.reconnect(2, 0);
    net.reconnect(2, 1);
    settle(&mut net);
    for m in &mut net.members {
        assert!(m.replica.is_purged(&ended), "{} holds the purge", m.id);
        assert_eq!(m.replica.room(&ended).expect("read"), None);
        assert!(m.replica.room(&live).expect("read").is_some());
        assert_eq!(m.replica.stats().purges_refused, 0);
    }
}
