//! A churning room on three replicas wired by `pair::Net`, compacted at a
//! small history bound: the setting of the compaction tests.

use chorus_engine::replica::ReplicaConfig;
use chorus_engine::*;

use super::pair::Net;
use super::*;

pub fn quick(config: &mut ReplicaConfig) {
    config.anti_entropy_interval_ms = 100;
    config.round_timeout_ms = 1_000;
    config.end_ack_interval_ms = 200;
    config.session_retention_ms = 100;
    config.history_changes_max = HISTORY;
}

/// A small bound keeps the test quick; the protocol is the same.
pub const HISTORY: u64 = 200;
pub const HISTORY_CHANGES_MAX: u64 = HISTORY;

/// `cycles` join+leave pairs into `room`, from the replicas in turn, 1 ms
/// apart, with the clock (and every timer) running.
pub fn churn(net: &mut Net, room: &RoomId, from: usize, cycles: usize) {
    for i in from..from + cycles {
        let at = i % net.members.len();
        let id = format!("s{i}");
        net.write(
            at,
            room,
            RoomOp::Join {
                request: join_request(&id, "u", "sfu-1"),
            },
        );
        net.write(
            at,
            room,
            RoomOp::Leave {
                session: session(&id),
            },
        );
        net.run_for(1);
    }
}

pub fn settle(net: &mut Net) {
    for _ in 0..200 {
        net.run_for(100);
        if net.converged() {
            return;
        }
    }
    panic!("replicas did not converge");
}

pub fn start(tweak: fn(&mut ReplicaConfig)) -> (Net, RoomId) {
    let mut net = Net::new(3, tweak);
    net.connect_all();
    let r = room("lobby");
    net.write(
        0,
        &r,
        RoomOp::Create {
            tenant: tenant("t"),
            config: RoomConfig::default(),
        },
    );
    net.write(
        0,
        &r,
        RoomOp::Join {
            request: join_request("stays", "u", "sfu-1"),
        },
    );
    (net, r)
}

/// How `room` reads on every replica, which must read it alike.
pub fn read_alike(net: &mut Net, room: &RoomId) -> RoomSnapshot {
    let snaps: Vec<_> = (0..net.members.len())
        .map(|i| {
            net.members[i]
                .replica
                .room_as_of(room, None)
                .expect("reads")
        })
        .collect();
    for (i, snap) in snaps.iter().enumerate().skip(1) {
        assert_eq!(snap, &snaps[0], "replica {i} reads the room apart");
    }
    snaps[0].clone().expect("the room")
}

pub fn history(net: &mut Net, i: usize, room: &RoomId) -> usize {
    net.members[i]
        .replica
        .export_room(room)
        .expect("reads")
        .map(|bytes| {
            automerge::Automerge::load(&bytes)
                .expect("loads")
                .get_changes(&[])
                .len()
        })
        .unwrap_or(0)
}

/// Churns `room` until replica 0 hands a compaction of it off its task;
/// returns the join+leave cycles it took.
pub fn churn_until_handed_off(net: &mut Net, room: &RoomId) -> usize {
    let mut i = 0;
    while net.members[0].work.is_empty() {
        assert!(i < 3 * HISTORY as usize, "no compaction handed off");
        churn(net, room, i, 1);
        i += 1;
    }
    i
}

pub fn off_task(config: &mut ReplicaConfig) {
    quick(config);
    config.work_off_task = true;
}

/// Runs replicas 1 and 2's work, with the clock, until both compacted
/// (replica 0's work is left out).
pub fn peers_compact(net: &mut Net) {
    for _ in 0..50 {
        net.finish_work(1);
        net.finish_work(2);
        if (1..3).all(|n| net.members[n].replica.stats().compactions > 0) {
            return;
        }
        net.run_for(100);
    }
    for n in 1..3 {
        let stats = net.members[n].replica.stats();
        assert!(stats.compactions > 0, "replica {n}: {stats:?}");
    }
}

/// Runs the clock and every replica's work until the replicas converge.
pub fn settle_with_work(net: &mut Net) {
    for _ in 0..100 {
        net.run_for(100);
        for n in 0..net.members.len() {
            net.finish_work(n);
        }
        if net.converged() {
            return;
        }
    }
    panic!("replicas did not converge");
}
