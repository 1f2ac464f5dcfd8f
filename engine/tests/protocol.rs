//! The replication protocol on directly wired replicas: which catch-up path
//! a round takes, what an idle round costs, purging, and hostile input.

mod common;

use chorus_engine::replica::wire::{self, Body, Envelope};
use chorus_engine::replica::{Event, Input, ReplicaConfig};
use chorus_engine::*;
use common::pair::{Net, CLUSTER};
use common::*;

fn quick(config: &mut ReplicaConfig) {
    config.anti_entropy_interval_ms = 100;
    config.round_timeout_ms = 1_000;
}

fn create(net: &mut Net, at: usize, n: usize) -> Vec<RoomId> {
    let rooms: Vec<RoomId> = (0..n).map(|i| room(&format!("room-{i}"))).collect();
    for r in &rooms {
        net.write(
            at,
            r,
            RoomOp::Create {
                tenant: tenant("t"),
                config: RoomConfig::default(),
            },
        );
        net.write(
            at,
            r,
            RoomOp::Join {
                request: join_request(&format!("{r}-s"), "u", "sfu-1"),
            },
        );
    }
    rooms
}

fn settle(net: &mut Net) {
    for _ in 0..100 {
        net.run_for(100);
        if net.converged() {
            net.run_for(300); // one more idle round, so cursors are fresh
            return;
        }
    }
    panic!("replicas did not converge");
}

fn stats(net: &Net, i: usize) -> replica::ReplicaStats {
    net.members[i].replica.stats().clone()
}

#[test]
fn an_idle_round_is_one_small_round_trip() {
    let mut net = Net::new(2, quick);
    net.connect_all();
    create(&mut net, 0, 500);
    settle(&mut net);
    net.reset_bytes();
    let before = stats(&net, 1).rounds_started;
    net.run_for(100); // about one round each way
    assert!(net.converged());
    let rounds = stats(&net, 1).rounds_started - before;
    assert!(rounds >= 1);
    for ((from, to, kind), bytes) in &net.bytes {
        assert!(
            matches!(*kind, "digest_req" | "digest_resp"),
            "idle traffic was {kind}"
        );
        let per_round = bytes / rounds.max(1);
        assert!(
            per_round <= 128,
            "{kind} {from}->{to}: {per_round} bytes per round"
        );
    }
}

#[test]
fn a_new_replica_catches_up_by_full_snapshot() {
    let mut net = Net::new(2, quick);
    net.disconnect(0, 1);
    let rooms = create(&mut net, 0, 50);
    net.reconnect(0, 1);
    settle(&mut net);
    assert!(
        stats(&net, 1).sync_full >= 1,
        "an empty replica takes the full path"
    );
    for r in &rooms {
        assert_eq!(
            net.members[1].replica.room(r).expect("read"),
            net.members[0].replica.room(r).expect("read")
        );
    }
    assert!(net.members[1].events.iter().any(|e| matches!(
        e,
        Event::SyncFinished {
            path: replica::SyncPath::Full,
            ..
        }
    )));
}

#[test]
fn a_short_outage_catches_up_since_the_cursor() {
    let mut net = Net::new(2, quick);
    net.connect_all();
    let rooms = create(&mut net, 0, 50);
    settle(&mut net);
    net.disconnect(0, 1);
    for r in rooms.iter().take(5) {
        for k in 0..4 {
            net.write(
                0,
                r,
                RoomOp::Join {
                    request: join_request(&format!("{r}-late{k}"), "u", "sfu-2"),
                },
            );
        }
    }
    net.run_for(500);
    assert!(!net.converged());
    let before = stats(&net, 1);
    net.reconnect(1, 0); // B notices first, so B's round does the catching up
    settle(&mut net);
    let after = stats(&net, 1);
    assert!(
        after.sync_since > before.sync_since,
        "a covered cursor takes the since path"
    );
    assert_eq!(
        after.sync_full, before.sync_full,
        "no full snapshot for a short outage"
    );
    assert_eq!(after.sync_incremental, before.sync_incremental);
}

#[test]
fn a_large_gap_is_walked_and_the_walk_moves_the_cursor() {
    let mut net = Net::new(2, quick);
    net.connect_all();
    let rooms = create(&mut net, 0, 40);
    settle(&mut net);
    net.disconnect(0, 1);
    // More entries than the since path lists: each write is one entry.
    let gap = limits::SINCE_LIST_ENTRIES_MAX + 40;
    for k in 0..gap {
        let r = &rooms[k as usize % rooms.len()];
        net.write(
            0,
            r,
            RoomOp::Join {
                request: join_request(&format!("{r}-gap{k}"), "u", "sfu-2"),
            },
        );
    }
    net.run_for(500);
    let before = stats(&net, 1);
    net.members[1].events.clear();
    net.reconnect(1, 0);
    // Cut the link as soon as the walk finishes: no idle round (which
    // also moves the cursor) may run after it.
    let walked_in = |net: &Net| {
        net.members[1].events.iter().any(|e| {
            matches!(e, Event::SyncFinished { path: replica::SyncPath::Incremental, changes, .. } if *changes > 0)
        })
    };
    for _ in 0..1_000 {
        if walked_in(&net) {
            break;
        }
        net.run_for(1);
    }
    assert!(
        walked_in(&net),
        "a gap larger than the since path lists is walked"
    );
    net.disconnect(0, 1);
    let walked = stats(&net, 1);
    assert_eq!(walked.sync_since, before.sync_since);
    assert_eq!(walked.sync_full, before.sync_full);
    // The finished walk earned the peer's log head: the next short gap is
    // small again and takes the since path.
    for k in 0..3 {
        net.write(
            0,
            &rooms[0],
            RoomOp::Join {
                request: join_request(&format!("short{k}"), "u", "sfu-2"),
            },
        );
    }
    net.run_for(500);
    net.reconnect(1, 0);
    settle(&mut net);
    let after = stats(&net, 1);
    assert!(
        after.sync_since > walked.sync_since,
        "the walk moved the cursor: a short gap after it is replayed from the log"
    );
    assert_eq!(after.sync_full, before.sync_full);
    assert!(net.converged());
}

#[test]
fn a_replica_restarted_from_disk_keeps_its_cursor() {
    let mut net = Net::new(2, quick);
    net.connect_all();
    let rooms = create(&mut net, 0, 20);
    settle(&mut net);
    net.disconnect(0, 1);
    net.write(
        0,
        &rooms[0],
        RoomOp::Join {
            request: join_request("while-down", "u", "n"),
        },
    );
    net.restart(1, quick);
    net.reconnect(1, 0);
    settle(&mut net);
    assert!(
        stats(&net, 1).sync_since >= 1,
        "the persisted cursor survives a restart"
    );
}

#[test]
fn lost_pushes_without_a_cursor_are_repaired_incrementally() {
    let mut net = Net::new(2, quick);
    net.connect_all();
    let rooms = create(&mut net, 0, 200);
    settle(&mut net);
    // Drop B's cursor (as if it never finished a round with A), then lose pushes.
    net.disconnect(0, 1);
    let mut batch = storage::Batch::default();
    batch.delete(storage::keys::meta("cursor/r0"));
    storage::Kv::apply(net.members[1].kv.as_ref(), batch).expect("apply");
    storage::Kv::flush(net.members[1].kv.as_ref()).expect("flush");
    net.restart(1, quick);
    net.write(
        0,
        &rooms[3],
        RoomOp::Join {
            request: join_request("missed", "u", "n"),
        },
    );
    net.reconnect(1, 0);
    settle(&mut net);
    assert!(stats(&net, 1).sync_incremental >= 1);
    let snap = net.members[1]
        .replica
        .room(&rooms[3])
        .expect("read")
        .expect("room");
    assert!(snap.sessions.contains_key(&session("missed")));
}

#[test]
fn a_gap_past_the_log_horizon_falls_back_to_full() {
    fn short_log(config: &mut ReplicaConfig) {
        quick(config);
        config.log_retention_ms = 1_000;
        config.log_trim_interval_ms = 200;
    }
    let mut net = Net::new(2, short_log);
    net.connect_all();
    let rooms = create(&mut net, 0, 20);
    settle(&mut net);
    net.disconnect(0, 1);
    net.run_for(5_000); // B's cursor falls behind A's horizon
    net.write(
        0,
        &rooms[1],
        RoomOp::Join {
            request: join_request("after-horizon", "u", "n"),
        },
    );
    net.run_for(5_000);
    let before = stats(&net, 1).sync_full;
    net.reconnect(1, 0);
    settle(&mut net);
    assert!(
        stats(&net, 1).sync_full > before,
        "the gap past the horizon was not caught up by a full sync"
    );
    let snap = net.members[1]
        .replica
        .room(&rooms[1])
        .expect("read")
        .expect("room");
    assert!(snap.sessions.contains_key(&session("after-horizon")));
}

fn purge_fast(config: &mut ReplicaConfig) {
    quick(config);
    config.end_ack_interval_ms = 200;
    config.purge_horizon_ms = 5_000;
}

#[test]
fn a_purged_room_never_comes_back() {
    let mut net = Net::new(3, purge_fast);
    net.connect_all();
    let rooms = create(&mut net, 0, 3);
    settle(&mut net);
    let doomed = rooms[0].clone();
    // Replica 2 goes away still holding the room active, and writes to it.
    net.disconnect(0, 2);
    net.disconnect(1, 2);
    net.write(
        2,
        &doomed,
        RoomOp::Join {
            request: join_request("stale-write", "u", "n"),
        },
    );
    net.write(0, &doomed, RoomOp::End);
    net.run_for(1_000);
    // Replica 2 never acknowledges, so 0 and 1 purge at the horizon instead.
    assert!(
        !net.members[0].replica.is_purged(&doomed),
        "no purge before every replica acked or the horizon"
    );
    net.run_for(5_000);
    assert!(net.members[0].replica.is_purged(&doomed));
    assert!(net.members[1].replica.is_purged(&doomed));
    net.reconnect(0, 2);
    net.reconnect(1, 2);
    settle(&mut net);
    for m in &mut net.members {
        assert!(m.replica.is_purged(&doomed), "{} must hold the purge", m.id);
        assert_eq!(m.replica.room(&doomed).expect("read"), None);
    }
    assert!(
        net.members[0].replica.stats().purged_refused
            + net.members[1].replica.stats().purged_refused
            > 0
            || net.members[2]
                .events
                .iter()
                .any(|e| matches!(e, Event::Purged { .. }))
    );
    let write_refused = {
        net.write(
            2,
            &doomed,
            RoomOp::Join {
                request: join_request("zombie", "u", "n"),
            },
        );
        net.members[2].events.iter().rev().any(|e| {
            matches!(
                e,
                Event::WriteDone {
                    result: Err(Error::RoomPurged(_)),
                    ..
                }
            )
        })
    };
    assert!(write_refused, "writes to a purged room are refused");
}

#[test]
fn rooms_every_replica_acked_as_ended_are_purged_without_waiting() {
    let mut net = Net::new(3, purge_fast);
    net.connect_all();
    let rooms = create(&mut net, 0, 2);
    settle(&mut net);
    net.reset_bytes();
    net.write(1, &rooms[0], RoomOp::End);
    net.run_for(2_000);
    for m in &net.members {
        assert!(
            m.replica.is_purged(&rooms[0]),
            "{} purged after all acks",
            m.id
        );
        assert!(!m.replica.is_purged(&rooms[1]));
        assert_eq!(m.replica.stats().purges_refused, 0);
    }
    assert!(net.converged());
    // Every replica tells every other that it purged: with all acks in
    // hand that needs the room's name, not its end change as a proof.
    let purged: Vec<u64> = net
        .bytes
        .iter()
        .filter(|((_, _, kind), _)| *kind == "purged")
        .map(|(_, n)| *n)
        .collect();
    eprintln!("purged bytes per link {purged:?}");
    assert!(!purged.is_empty());
    // An end change alone (actor, dependency hash, ops) is larger than this.
    assert!(purged.iter().all(|n| *n < 64), "{purged:?}");
}

#[test]
fn garbage_and_foreign_clusters_are_counted_never_applied() {
    let mut net = Net::new(2, quick);
    net.connect_all();
    let from = node("r0");
    let frames: Vec<Vec<u8>> = vec![
        vec![],
        vec![1],
        vec![9, 9, 9],
        vec![1, 200, 200, 200, 200, 200],
    ];
    for bytes in frames {
        net.input(
            1,
            Input::Message {
                from: from.clone(),
                bytes,
            },
        );
    }
    let foreign = wire::encode(&Envelope {
        cluster: CLUSTER + 1,
        sent_at: Default::default(),
        body: Body::EndAck {
            rooms: vec![room("room-x")],
        },
    });
    net.input(
        1,
        Input::Message {
            from,
            bytes: foreign,
        },
    );
    let s = stats(&net, 1);
    assert_eq!(s.decode_errors.values().sum::<u64>(), 4);
    assert_eq!(s.foreign_cluster, 1);
    assert!(!net.members[1].replica.is_purged(&room("room-x")));
}

#[test]
fn a_peer_cannot_purge_a_live_room_without_its_end_change() {
    use chorus_engine::replica::wire::PurgeProof;
    let mut net = Net::new(2, purge_fast);
    net.connect_all();
    let rooms = create(&mut net, 0, 1);
    settle(&mut net);
    let live = rooms[0].clone();
    // A change of the room that is not its end (the join), and no proof.
    let export = net.members[0]
        .replica
        .export_room(&live)
        .expect("export")
        .expect("the room");
    let doc = automerge::Automerge::load(&export).expect("automerge");
    let join = doc
        .get_changes(&[])
        .last()
        .expect("the join change")
        .raw_bytes()
        .to_vec();
    for end in [Vec::new(), join] {
        let bytes = wire::encode(&Envelope {
            cluster: CLUSTER,
            sent_at: Default::default(),
            body: Body::Purged {
                rooms: vec![PurgeProof {
                    room: live.clone(),
                    end: serde_bytes::ByteBuf::from(end),
                }],
            },
        });
        net.input(
            1,
            Input::Message {
                from: node("r0"),
                bytes,
            },
        );
    }
    settle(&mut net);
    assert_eq!(stats(&net, 1).purges_refused, 2);
    for m in &mut net.members {
        assert!(!m.replica.is_purged(&live), "{} purged a live room", m.id);
        assert!(m.replica.room(&live).expect("read").is_some());
    }
}

/// A room whose history holds about 9.6 MB of change bytes (150 config
/// updates of 64 attributes of 1000 bytes), exported: more than one frame.
fn heavy_room(id: &RoomId) -> Vec<u8> {
    let engine = Engine::in_memory(EngineConfig::new(node("builder"))).expect("engine");
    engine
        .create_room(id, &tenant("t"), RoomConfig::default())
        .expect("create");
    for round in 0..150u32 {
        let set_attributes = (0..64u32)
            .map(|k| {
                let value: String = (0..1000u32)
                    .map(|i| char::from(b'a' + ((i * 7 + k * 13 + round * 31) % 26) as u8))
                    .collect();
                (format!("attr-{k}"), value)
            })
            .collect();
        let update = ConfigUpdate {
            set_attributes,
            ..ConfigUpdate::default()
        };
        engine
            .write(id, RoomOp::UpdateConfig { update })
            .expect("update");
    }
    engine.export_room(id).expect("export")
}

/// An import logs one entry per `LOG_ENTRY_BYTES_MAX` of changes, under
/// successive stamps: a since-response carries at least one whole entry,
/// and one entry for the whole import would outgrow the frame (the peer
/// would refuse it, and the since path would never get past it).
#[test]
fn an_import_larger_than_a_frame_catches_up_since_the_cursor() {
    let mut net = Net::new(2, quick);
    net.connect_all();
    create(&mut net, 0, 1);
    settle(&mut net);
    net.disconnect(0, 1);
    let big = room("heavy");
    let bytes = heavy_room(&big);
    net.input(
        0,
        Input::Import {
            id: 7,
            room: Some(big.clone()),
            bytes,
        },
    );
    net.run_for(500);
    let log = net.members[0].replica.change_log(None, 1_000).expect("log");
    let pieces = log.iter().filter(|(_, e)| e.room == big).count();
    assert!(pieces >= 10, "the import is logged in {pieces} entries");
    let before = stats(&net, 1);
    net.reset_bytes();
    net.reconnect(1, 0);
    settle(&mut net);
    let after = stats(&net, 1);
    let refused: u64 = net
        .bytes
        .iter()
        .filter(|((_, _, kind), _)| *kind == "garbage")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(refused, 0, "every frame decodes (none over the limit)");
    assert!(
        after.sync_since > before.sync_since,
        "the since path carried it"
    );
    assert_eq!(after.sync_full, before.sync_full);
    assert_eq!(
        net.members[1].replica.heads(&big).expect("heads"),
        net.members[0].replica.heads(&big).expect("heads"),
    );
}
