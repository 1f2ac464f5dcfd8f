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
