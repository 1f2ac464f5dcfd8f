//! A compacted room that ends while a replica is away is purged there too
//! when it comes back: the peers' end change writes to the `meta` map the
//! compaction's base made, not the genesis's, and it is accepted as the
//! purge's proof because the replica holds that map too. If the peers
//! compacted again while it was away, it holds another `meta` map and
//! follows the purge once two peers sent the same proof.

mod common;

use chorus_engine::replica::{Event, ReplicaConfig};
use chorus_engine::*;
use common::compacting::*;
use common::pair::Net;

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

fn purge_fast_absent_soon(config: &mut ReplicaConfig) {
    purge_fast(config);
    config.failure_detection = true;
    config.compaction_absent_ms = 2_000;
}

#[test]
fn a_room_compacted_and_ended_while_a_replica_was_away_is_purged_on_two_peers_word() {
    let (mut net, r) = start(purge_fast_absent_soon);
    churn(&mut net, &r, 0, HISTORY as usize);
    settle(&mut net);
    let generation =
        |net: &mut Net, i: usize| net.members[i].replica.room_generation(&r).expect("reads");
    assert!(generation(&mut net, 2) >= Some(1));
    // Replica 2 is away long enough that 0 and 1 compact without it, then
    // the room ends and they purge it at the horizon.
    net.disconnect(0, 2);
    net.disconnect(1, 2);
    churn(&mut net, &r, 100_000, HISTORY as usize);
    // SWIM holds 2 Down within a couple of seconds, absent 2 s later.
    net.run_for(5_000);
    let (ahead, behind) = (generation(&mut net, 0), generation(&mut net, 2));
    assert!(
        ahead > behind,
        "0 compacted past 2: {ahead:?} against {behind:?}"
    );
    net.write(0, &r, RoomOp::End);
    net.run_for(6_000);
    assert!(net.members[0].replica.is_purged(&r));
    assert!(net.members[1].replica.is_purged(&r));
    // One peer's word is not enough: its proof ends a map 2 does not hold.
    net.reconnect(0, 2);
    net.run_for(2_000);
    let stats = net.members[2].replica.stats().clone();
    assert!(!net.members[2].replica.is_purged(&r), "{stats:?}");
    assert!(stats.purge_proofs_waiting >= 1, "{stats:?}");
    assert_eq!(stats.purges_refused, 0);
    // A second peer sends the same proof: 2 follows the purge.
    net.reconnect(1, 2);
    settle(&mut net);
    let stats = net.members[2].replica.stats().clone();
    assert!(net.members[2].replica.is_purged(&r), "{stats:?}");
    assert_eq!(stats.purges_voted, 1, "{stats:?}");
    assert_eq!(stats.purges_refused, 0);
}

/// A "proof" that writes a stamped `ended` time to a map of the compacted
/// room other than its `meta` (here a session's) is refused: the room
/// stays, on a replica that holds the same generation.
#[test]
fn an_ended_time_written_outside_meta_is_no_proof() {
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ReadDoc, ROOT};
    use chorus_engine::hlc::Timestamp;
    use chorus_engine::replica::wire::{self, Body, Envelope, PurgeProof};
    use chorus_engine::replica::Input;
    use chorus_engine::room::schema;

    let (mut net, r) = start(purge_fast);
    churn(&mut net, &r, 0, HISTORY as usize);
    settle(&mut net);
    assert!(net.members[1].replica.room_generation(&r).expect("reads") >= Some(1));
    let export = net.members[1]
        .replica
        .export_room(&r)
        .expect("reads")
        .expect("the room");
    let mut doc = AutoCommit::load(&export).expect("loads");
    let (_, sessions) = doc
        .get(ROOT, schema::SESSIONS)
        .expect("reads")
        .expect("sessions");
    let (_, stays) = doc
        .get(&sessions, "stays")
        .expect("reads")
        .expect("the session that stays");
    let stamp = Timestamp {
        wall_ms: 1,
        logical: 0,
        actor: 7,
    };
    let ended = schema::encode_stamped(stamp, &1u64);
    doc.put(&stays, schema::ENDED, ended).expect("put");
    let forged = doc.get_last_local_change().expect("a change").clone();
    let bytes = wire::encode(&Envelope {
        cluster: common::pair::CLUSTER,
        sent_at: Default::default(),
        body: Body::Purged {
            rooms: vec![PurgeProof {
                room: r.clone(),
                end: serde_bytes::ByteBuf::from(forged.raw_bytes().to_vec()),
            }],
        },
    });
    let from = net.members[0].id.clone();
    net.input(1, Input::Message { from, bytes });
    assert!(!net.members[1].replica.is_purged(&r));
    assert_eq!(net.members[1].replica.stats().purges_refused, 1);
    let room = net.members[1].replica.room(&r).expect("reads");
    assert!(room.is_some_and(|room| room.lifecycle == Lifecycle::Active));
}
