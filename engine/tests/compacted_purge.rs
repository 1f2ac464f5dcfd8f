//! A compacted room that ends while a replica is away is purged there too
//! when it comes back: the peers' end change writes to the `meta` map the
//! compaction's base made, not the genesis's, and it is accepted as the
//! purge's proof because the replica holds that map too.

mod common;

use chorus_engine::replica::{Event, ReplicaConfig};
use chorus_engine::*;
use common::compacting::*;

fn purge_fast(config: &mut ReplicaConfig) {
    quick(config);
    config.purge_horizon_ms = 5_000;
}

#[test]
fn a_compacted_room_ended_while_a_replica_was_away_is_purged_there_too() {
    let (mut net, r) = start(purge_fast);
    churn(&mut net, &r, 0, HISTORY as usize);
    settle(&mut net);
    for i in 0..3 {
        let generation = net.members[i].replica.room_generation(&r).expect("reads");
        assert!(
            generation >= Some(1),
            "replica {i} compacted: {generation:?}"
        );
    }
    // Replica 2 is away while the room ends; 0 and 1 purge it at the
    // horizon, as 2 never acknowledges the end.
    net.disconnect(0, 2);
    net.disconnect(1, 2);
    net.write(0, &r, RoomOp::End);
    net.run_for(6_000);
    assert!(net.members[0].replica.is_purged(&r));
    assert!(net.members[1].replica.is_purged(&r));
    assert!(!net.members[2].replica.is_purged(&r));
    net.reconnect(0, 2);
    net.reconnect(1, 2);
    settle(&mut net);
    assert!(
        net.members[2].replica.is_purged(&r),
        "the returning replica follows the purge: {:?}",
        net.members[2].replica.stats()
    );
    assert_eq!(net.members[2].replica.stats().purges_refused, 0);
    assert!(net.members[2]
        .events
        .iter()
        .any(|e| matches!(e, Event::Purged { room } if *room == r)));
}
