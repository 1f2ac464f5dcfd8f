//! Peers' changes into a large room applied on a copy off the replica's
//! task (`replica::offload`): the replica hands the work out, holds what
//! arrives meanwhile for the next copy, installs each copy, announces its
//! changes, and ends converged with its peers.

mod common;

use chorus_engine::limits::APPLY_IN_LINE_AFTER_REDO_MS;
use chorus_engine::replica::{Event, Input, ReplicaConfig};
use chorus_engine::*;
use common::pair::Net;
use common::*;

fn off_task(config: &mut ReplicaConfig) {
    config.anti_entropy_interval_ms = 100;
    config.round_timeout_ms = 1_000;
    config.work_off_task = true;
    // The room is built whole, not compacted, so that it stays large.
    config.compaction = false;
    config.apply_off_task_ops = LARGE_OPS;
}

/// A small bound keeps the test quick; the path is the same.
const LARGE_OPS: u64 = 500;

/// A room whose document holds more than `LARGE_OPS` operations, as
/// automerge bytes.
fn large_room(room: &RoomId) -> Vec<u8> {
    let mut config = EngineConfig::new(node("builder"));
    config.replica.history_changes_max = u64::MAX;
    let engine = Engine::in_memory(config).expect("engine");
    let config = RoomConfig {
        max_participants: 10_000,
        ..RoomConfig::default()
    };
    engine
        .create_room(room, &tenant("t"), config)
        .expect("create");
    let sessions = 200;
    for n in 0..sessions {
        let request = join_request(&format!("s{n}"), &format!("u{n}"), "sfu-1");
        engine.join(room, request).expect("join");
    }
    engine.export_room(room).expect("export")
}

fn joined(events: &[Event], who: &str) -> bool {
    events.iter().any(|e| match e {
        Event::Changed { change, .. } => change
            .changes
            .iter()
            .any(|k| matches!(k, ChangeKind::Joined { session: s, .. } if s == &session(who))),
        _ => false,
    })
}

fn holds(net: &mut Net, i: usize, room: &RoomId, who: &str) -> bool {
    net.members[i]
        .replica
        .room_as_of(room, None)
        .expect("reads")
        .is_some_and(|snap| snap.sessions.contains_key(&session(who)))
}

fn settle(net: &mut Net) {
    for _ in 0..200 {
        for i in 0..net.members.len() {
            net.finish_work(i);
        }
        net.run_for(100);
        if net.converged() && net.members.iter().all(|m| m.work.is_empty()) {
            return;
        }
    }
    panic!("replicas did not converge");
}

/// `n` replicas holding the large room, imported into the first.
fn imported(n: usize) -> (Net, RoomId) {
    let mut net = Net::new(n, off_task);
    net.connect_all();
    let r = room("big");
    let bytes = large_room(&r);
    net.input(
        0,
        Input::Import {
            id: 1,
            room: Some(r.clone()),
            bytes,
        },
    );
    settle(&mut net);
    (net, r)
}

#[test]
fn a_large_rooms_changes_apply_on_a_copy_and_what_arrives_meanwhile_follows() {
    let (mut net, r) = imported(3);
    assert!(holds(&mut net, 1, &r, "s199"), "the import replicated");

    // A peer's join reaches replica 1 by push: applied on a copy.
    let before = net.members[1].replica.stats().applies_off_task;
    net.write(
        0,
        &r,
        RoomOp::Join {
            request: join_request("late", "u", "sfu-2"),
        },
    );
    net.run_for(10);
    let stats = net.members[1].replica.stats().clone();
    assert!(
        stats.applies_off_task > before,
        "a push into a room past {LARGE_OPS} operations was applied in line: {stats:?}"
    );
    assert_eq!(net.members[1].work.len(), 1, "one copy out");
    assert!(
        !holds(&mut net, 1, &r, "late"),
        "applied before the copy came back"
    );

    // Another arrives while the copy is out: held for the next one.
    net.write(
        2,
        &r,
        RoomOp::Join {
            request: join_request("later", "u", "sfu-3"),
        },
    );
    net.run_for(10);
    assert_eq!(
        net.members[1].work.len(),
        1,
        "a second copy while one is out"
    );
    net.members[1].events.clear();
    let lag = |net: &Net| net.members[1].replica.stats().latency.replication_lag.count;
    let lags_before = lag(&net);
    net.finish_work(1);
    assert!(holds(&mut net, 1, &r, "late"));
    assert!(
        lag(&net) > lags_before,
        "a change applied on a copy is no replication-lag sample"
    );
    assert!(
        joined(&net.members[1].events, "late"),
        "the copy's join unannounced"
    );
    assert_eq!(
        net.members[1].work.len(),
        1,
        "the held change went out on the next copy"
    );
    net.finish_work(1);
    assert!(holds(&mut net, 1, &r, "later"));
    assert!(joined(&net.members[1].events, "later"));
    assert_eq!(net.members[1].replica.stats().applies_redone, 0);

    settle(&mut net);
    let first = net.members[0].replica.room_as_of(&r, None).expect("reads");
    for i in 1..3 {
        let other = net.members[i].replica.room_as_of(&r, None).expect("reads");
        assert_eq!(other, first, "replica {i}");
    }
}

#[test]
fn a_copy_whose_room_was_written_meanwhile_is_applied_again_in_line() {
    let (mut net, r) = imported(2);
    net.write(
        0,
        &r,
        RoomOp::Join {
            request: join_request("theirs", "u", "sfu-2"),
        },
    );
    net.run_for(10);
    assert_eq!(net.members[1].work.len(), 1, "one copy out");
    // Replica 1 writes to the room while its copy is out.
    net.write(
        1,
        &r,
        RoomOp::Join {
            request: join_request("ours", "u", "sfu-1"),
        },
    );
    net.finish_work(1);
    assert_eq!(net.members[1].replica.stats().applies_redone, 1);
    assert!(holds(&mut net, 1, &r, "theirs"));
    assert!(holds(&mut net, 1, &r, "ours"));

    // A room written to under its copy is not copied again for a while:
    // the next push applies in line; once the while is over, on a copy.
    let copies = net.members[1].replica.stats().applies_off_task;
    net.write(
        0,
        &r,
        RoomOp::Join {
            request: join_request("soon", "u", "sfu-2"),
        },
    );
    net.run_for(10);
    assert!(net.members[1].work.is_empty(), "copied again at once");
    assert!(holds(&mut net, 1, &r, "soon"), "not applied in line");
    net.run_for(APPLY_IN_LINE_AFTER_REDO_MS);
    net.write(
        0,
        &r,
        RoomOp::Join {
            request: join_request("later", "u", "sfu-2"),
        },
    );
    net.run_for(10);
    assert_eq!(net.members[1].work.len(), 1, "no copy after the while");
    assert_eq!(net.members[1].replica.stats().applies_off_task, copies + 1);
    settle(&mut net);
}

/// The cursor invariant: a since-answer applied on a copy does not move the
/// stored cursor until the copy is installed, so a crash meanwhile catches
/// up from the old cursor (the since path brings the changes again), not
/// from one that claims changes the store never got.
#[test]
fn a_crash_while_a_copy_is_out_leaves_the_cursor_before_its_changes() {
    let (mut net, r) = imported(2);
    net.disconnect(0, 1);
    for n in 0..5 {
        net.write(
            0,
            &r,
            RoomOp::Join {
                request: join_request(&format!("away{n}"), "u", "sfu-2"),
            },
        );
    }
    net.reconnect(1, 0);
    assert_eq!(
        net.members[1].work.len(),
        1,
        "the since-answer went out on a copy"
    );
    // A durable write elsewhere flushes whatever the replica staged.
    net.write(
        1,
        &room("other"),
        RoomOp::Create {
            tenant: tenant("t"),
            config: RoomConfig::default(),
        },
    );
    net.restart(1, off_task);
    net.members[1].events.clear();
    // The restarted replica learns its peer is up and rounds with it.
    net.reconnect(1, 0);
    settle(&mut net);
    let first = net.members[1].events.iter().find_map(|e| match e {
        Event::SyncFinished { path, changes, .. } => Some((*path, *changes)),
        _ => None,
    });
    assert_eq!(
        first,
        Some((chorus_engine::replica::SyncPath::Since, 5)),
        "after the crash the since path must bring the changes the copy held"
    );
    for n in 0..5 {
        assert!(holds(&mut net, 1, &r, &format!("away{n}")));
    }
}
