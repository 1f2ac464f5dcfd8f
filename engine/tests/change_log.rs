//! The change log's bounds: its entries, not only their age, and after a
//! restart too.

mod common;

use chorus_engine::replica::ReplicaConfig;
use chorus_engine::*;
use common::compacting::{quick, settle};
use common::pair::Net;
use common::*;

fn small_log(config: &mut ReplicaConfig) {
    quick(config);
    config.log_entries_max = 20;
    config.log_trim_interval_ms = 200;
}

/// Writes a join named `{prefix}-{i}` into each room from replica 0, runs
/// a second, and returns how many log entries replica 0 keeps.
fn join_each_then_count(net: &mut Net, rooms: &[RoomId], prefix: &str) -> usize {
    for (i, r) in rooms.iter().enumerate() {
        let request = join_request(&format!("{prefix}-{i}"), "u", "n");
        net.write(0, r, RoomOp::Join { request });
    }
    net.run_for(1_000);
    net.members[0]
        .replica
        .change_log(None, 1_000)
        .expect("reads")
        .len()
}

/// At a write rate that would fill an hour's log, the log keeps its newest
/// `log_entries_max` entries, and after a restart too, once the older
/// entries go (they are trimmed first, and count for nothing); a peer
/// behind them still catches up.
#[test]
fn the_change_log_keeps_at_most_its_entry_bound() {
    let mut net = Net::new(2, small_log);
    net.connect_all();
    let rooms: Vec<RoomId> = (0..30).map(|i| room(&format!("room-{i}"))).collect();
    for r in &rooms {
        let create = RoomOp::Create {
            tenant: tenant("t"),
            config: RoomConfig::default(),
        };
        net.write(0, r, create);
    }
    settle(&mut net);
    net.disconnect(0, 1);
    let kept = join_each_then_count(&mut net, &rooms, "late");
    assert!(kept <= 20, "{kept} log entries kept");
    assert!(net.members[0].replica.log_horizon().is_some());
    net.restart(0, small_log);
    let kept = join_each_then_count(&mut net, &rooms, "later");
    assert!(kept <= 20, "{kept} log entries kept after a restart");
    net.reconnect(1, 0);
    settle(&mut net);
    let snap = net.members[1]
        .replica
        .room(&rooms[0])
        .expect("read")
        .expect("room");
    assert!(snap.sessions.contains_key(&session("late-0")));
    assert!(snap.sessions.contains_key(&session("later-0")));
}
