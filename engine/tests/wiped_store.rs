//! A node whose store is wiped (or lost) comes back as the same node on an
//! empty store. Its writes must not reuse the automerge actor of its first
//! life: a change of the same actor and sequence number as one its peers
//! already hold is refused by automerge, and the room would never converge
//! (seen in the simulator: a wiped node lost 41 acknowledged writes of a
//! compacted room after a partition healed).

mod common;

use chorus_engine::replica::ReplicaConfig;
use chorus_engine::*;
use common::docs::join;
use common::pair::Net;
use common::*;

fn plain(_: &mut ReplicaConfig) {}

#[test]
fn a_wiped_node_writes_under_a_new_actor_and_its_writes_converge() {
    let mut net = Net::new(2, plain);
    net.connect_all();
    let r = room("wiped");
    net.write(
        0,
        &r,
        RoomOp::Create {
            tenant: tenant("t"),
            config: RoomConfig::default(),
        },
    );
    for s in ["first-1", "first-2", "first-3"] {
        net.write(0, &r, join(s));
    }
    net.run_for(1_000);
    assert!(net.converged(), "the first life's writes reached the peer");

    // Node 0 loses its store while cut off, comes back empty, and writes
    // to the same room before it hears from its peer again: the same
    // number of changes as in its first life, so an actor reused would
    // give every one a sequence number the peer already holds.
    net.disconnect(0, 1);
    net.run_for(1_000);
    net.wipe(0, plain);
    net.write(
        0,
        &r,
        RoomOp::Create {
            tenant: tenant("t"),
            config: RoomConfig::default(),
        },
    );
    for s in ["second-1", "second-2", "second-3"] {
        net.write(0, &r, join(s));
    }
    net.reconnect(0, 1);
    net.run_for(3_000);

    for i in 0..2 {
        let stats = net.members[i].replica.stats();
        let refused = stats.changes_rejected + stats.changes_refused;
        assert_eq!(refused, 0, "replica {i} refused {refused} changes");
        let read = net.members[i]
            .replica
            .room(&r)
            .expect("readable")
            .expect("the room exists");
        for s in [
            "first-1", "first-2", "first-3", "second-1", "second-2", "second-3",
        ] {
            assert!(
                read.sessions.contains_key(&session(s)),
                "replica {i} lacks {s}"
            );
        }
    }
    assert!(net.converged(), "the replicas converged");
}

fn stored(net: &Net, i: usize, name: &str) -> Option<Vec<u8>> {
    use chorus_engine::storage::{keys, KvRead};
    net.members[i].kv.get(&keys::meta(name)).expect("reads")
}

/// The identity is drawn once and kept: a restart that lost it would fall
/// back to the actors of a store without one, which a wiped store's next
/// life shares.
#[test]
fn a_store_keeps_its_identity_across_restarts() {
    let mut net = Net::new(1, plain);
    net.run_for(100);
    let id = stored(&net, 0, "store-id").expect("an identity is stored");
    assert_eq!(id.len(), 16);
    net.restart(0, plain);
    net.run_for(100);
    assert_eq!(stored(&net, 0, "store-id"), Some(id.clone()));
    assert_eq!(
        stored(&net, 0, "incarnation"),
        Some(2u64.to_be_bytes().to_vec())
    );
    // A wiped store draws another (the clock has moved on).
    net.wipe(0, plain);
    net.run_for(100);
    assert_ne!(stored(&net, 0, "store-id"), Some(id));
}

/// A store whose incarnation cannot be read would start again at 1 and
/// reuse an earlier run's actors: it is refused, not opened.
#[test]
fn a_store_with_an_unreadable_incarnation_is_refused() {
    use chorus_engine::replica::Replica;
    use chorus_engine::storage::{keys, Batch, Kv, MemKv};
    use std::sync::Arc;
    let me = node("n");
    for (name, value) in [("incarnation", vec![1, 2, 3]), ("store-id", vec![7; 16])] {
        let kv = Arc::new(MemKv::new());
        let mut batch = Batch::default();
        batch.put(keys::meta(name), value);
        kv.apply(batch).expect("writes");
        let config = common::pair::config(&me, std::slice::from_ref(&me), plain);
        let opened = Replica::new(config, kv, 0);
        assert!(opened.is_err(), "opened with only {name} stored");
    }
}
