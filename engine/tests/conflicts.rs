//! Each conflict rule of `docs/data-model.md`, proven on two replicas that
//! write concurrently and then exchange changes. Where a rule must not be
//! automerge's own winner (highest OpId), the test checks that it differs
//! from that winner in at least one case.

mod common;

use automerge::ReadDoc;
use chorus_engine::*;
use common::*;

/// A and B both hold `id` (created on A) with session s1 joined.
fn pair_with_session(id: &RoomId) -> (TestReplica, TestReplica) {
    let a = replica("a", 1_000);
    let b = replica("b", 1_000);
    a.engine
        .create_room(id, &tenant("t"), RoomConfig::default())
        .expect("create");
    a.engine
        .join(id, join_request("s1", "alice", "sfu-0"))
        .expect("join");
    sync_both(&a.engine, &b.engine, id);
    (a, b)
}

/// `pair_with_session`, with user `u` made a host on both replicas.
fn pair_with_host_u(id: &RoomId) -> (TestReplica, TestReplica) {
    let (a, b) = pair_with_session(id);
    let host = Permission {
        role: Role::Host,
        publish: true,
        subscribe: true,
    };
    a.engine.set_permission(id, &user("u"), host).expect("set");
    sync_both(&a.engine, &b.engine, id);
    (a, b)
}

/// automerge's own winner for a key path, read from an export.
fn automerge_winner(engine: &Engine, id: &RoomId, path: &[&str]) -> (String, usize) {
    let doc = automerge::Automerge::load(&engine.export_room(id).expect("export")).expect("load");
    let mut obj = automerge::ROOT;
    let (last, parents) = path.split_last().expect("non-empty path");
    for key in parents {
        obj = doc.get(&obj, *key).expect("read").expect("present").1;
    }
    let all = doc.get_all(&obj, *last).expect("read");
    let winner = doc.get(&obj, *last).expect("read").expect("present").0;
    (winner.into_string().unwrap_or_default(), all.len())
}

#[test]
fn ownership_is_max_epoch_then_node_over_all_concurrent_values() {
    let mut disagreements = 0;
    for (epoch_a, epoch_b) in [(5, 3), (3, 5)] {
        let id = room(&format!("r-{epoch_a}-{epoch_b}"));
        let (a, b) = pair_with_session(&id);
        a.engine
            .set_owner(&id, &session("s1"), &node("node-a"), epoch_a)
            .expect("a moves");
        b.engine
            .set_owner(&id, &session("s1"), &node("node-z"), epoch_b)
            .expect("b moves");
        sync_both(&a.engine, &b.engine, &id);

        let expected = if epoch_a > epoch_b {
            Owner {
                epoch: epoch_a,
                node: node("node-a"),
            }
        } else {
            Owner {
                epoch: epoch_b,
                node: node("node-z"),
            }
        };
        for r in [&a, &b] {
            let snap = r.engine.room(&id).expect("read").expect("room");
            assert_eq!(snap.sessions[&session("s1")].owner, expected);
        }
        let (winner, values) = automerge_winner(&a.engine, &id, &["sessions", "s1", "owner"]);
        assert_eq!(values, 2, "the two moves must be a real conflict");
        if winner != format!("{}:{}", expected.epoch, expected.node) {
            disagreements += 1;
        }
        // The owner index agrees on both replicas.
        for r in [&a, &b] {
            let owned = r.engine.calls_owned_by(&expected.node).expect("index");
            assert_eq!(owned.len(), 1, "index must follow the merged owner");
        }
    }
    assert!(
        disagreements >= 1,
        "the rule must not merely repeat automerge's winner"
    );
}

#[test]
fn same_epoch_ties_break_on_node_id() {
    let id = room("tie");
    let (a, b) = pair_with_session(&id);
    a.engine
        .set_owner(&id, &session("s1"), &node("sfu-b"), 2)
        .expect("a");
    b.engine
        .set_owner(&id, &session("s1"), &node("sfu-a"), 2)
        .expect("b");
    sync_both(&a.engine, &b.engine, &id);
    for r in [&a, &b] {
        let snap = r.engine.room(&id).expect("read").expect("room");
        assert_eq!(snap.sessions[&session("s1")].owner.node, node("sfu-b"));
    }
}

#[test]
fn config_scalars_are_last_writer_wins_by_hlc() {
    let mut disagreements = 0;
    for (clock_a, clock_b) in [(2_000, 9_000), (9_000, 2_000)] {
        let id = room(&format!("cfg-{clock_a}"));
        let (a, b) = pair_with_session(&id);
        a.clock.set(clock_a);
        b.clock.set(clock_b);
        let set = |max| ConfigUpdate {
            max_participants: Some(max),
            ..ConfigUpdate::default()
        };
        a.engine.update_config(&id, set(10)).expect("a");
        b.engine.update_config(&id, set(20)).expect("b");
        sync_both(&a.engine, &b.engine, &id);
        let expected = if clock_a > clock_b { 10 } else { 20 };
        for r in [&a, &b] {
            let snap = r.engine.room(&id).expect("read").expect("room");
            assert_eq!(snap.config.max_participants, expected);
        }
        let (winner, values) = automerge_winner(&a.engine, &id, &["config", "max_participants"]);
        assert_eq!(values, 2);
        if !winner.ends_with(&format!("|{expected}")) {
            disagreements += 1;
        }
    }
    assert!(
        disagreements >= 1,
        "LWW must follow the HLC, not automerge's OpId order"
    );
}

#[test]
fn left_is_terminal_even_against_a_later_state() {
    let id = room("left");
    let (a, b) = pair_with_session(&id);
    a.clock.set(50_000); // A's write is later by the clock...
    a.engine
        .set_state(&id, &session("s1"), SessionState::Active)
        .expect("a");
    b.engine.leave(&id, &session("s1")).expect("b");
    sync_both(&a.engine, &b.engine, &id);
    for r in [&a, &b] {
        let snap = r.engine.room(&id).expect("read").expect("room");
        assert_eq!(
            snap.sessions[&session("s1")].state,
            SessionState::Left,
            "...but left wins"
        );
        assert!(r
            .engine
            .calls_owned_by(&node("sfu-0"))
            .expect("index")
            .is_empty());
    }
}

#[test]
fn counters_add_concurrent_increments() {
    let id = room("count");
    let (a, b) = pair_with_session(&id);
    a.engine
        .join(&id, join_request("s2", "u2", "sfu-0"))
        .expect("a");
    b.engine
        .join(&id, join_request("s3", "u3", "sfu-0"))
        .expect("b");
    b.engine
        .join(&id, join_request("s4", "u4", "sfu-0"))
        .expect("b");
    sync_both(&a.engine, &b.engine, &id);
    for r in [&a, &b] {
        let snap = r.engine.room(&id).expect("read").expect("room");
        assert_eq!(snap.counters.joins, 4);
        assert_eq!(snap.sessions.len(), 4);
    }
}

#[test]
fn concurrent_creation_of_one_room_hides_nothing() {
    let id = room("twice");
    let a = replica("a", 1_000);
    let b = replica("b", 2_000);
    let cfg_a = RoomConfig {
        max_participants: 7,
        ..RoomConfig::default()
    };
    let cfg_b = RoomConfig {
        max_participants: 9,
        ..RoomConfig::default()
    };
    a.engine
        .create_room(&id, &tenant("ta"), cfg_a)
        .expect("a creates");
    b.engine
        .create_room(&id, &tenant("tb"), cfg_b)
        .expect("b creates");
    a.engine
        .join(&id, join_request("s1", "u1", "n"))
        .expect("a joins");
    b.engine
        .join(&id, join_request("s2", "u2", "n"))
        .expect("b joins");
    sync_both(&a.engine, &b.engine, &id);
    let snap_a = a.engine.room(&id).expect("read").expect("room");
    let snap_b = b.engine.room(&id).expect("read").expect("room");
    assert_eq!(snap_a, snap_b);
    assert_eq!(
        snap_a.sessions.len(),
        2,
        "both replicas' sessions survive the merge"
    );
    assert_eq!(snap_a.tenant, Some(tenant("tb")), "B's later stamp wins");
    assert_eq!(snap_a.config.max_participants, 9);
}

/// A removal is a stamped value (`docs/data-model.md`, "Removals"): a set
/// and a concurrent removal of one permission resolve by stamp, on both
/// replicas alike, whichever clock is ahead.
#[test]
fn a_permission_set_and_a_concurrent_remove_resolve_by_stamp() {
    for (clock_a, clock_b) in [(2_000, 9_000), (9_000, 2_000)] {
        let id = room(&format!("perm-{clock_a}"));
        let (a, b) = pair_with_host_u(&id);
        a.clock.set(clock_a);
        b.clock.set(clock_b);
        a.engine.remove_permission(&id, &user("u")).expect("remove");
        let speaker = Permission {
            role: Role::Speaker,
            publish: true,
            subscribe: true,
        };
        b.engine
            .set_permission(&id, &user("u"), speaker)
            .expect("concurrent set");
        sync_both(&a.engine, &b.engine, &id);
        let expected = (clock_b > clock_a).then_some(speaker);
        for r in [&a, &b] {
            let snap = r.engine.room(&id).expect("read").expect("room");
            assert_eq!(
                snap.permissions.get(&user("u")),
                expected.as_ref(),
                "clocks {clock_a}/{clock_b}"
            );
        }
    }
}

#[test]
fn a_remove_that_saw_the_add_wins() {
    let id = room("perm2");
    let (a, b) = pair_with_host_u(&id);
    b.engine
        .remove_permission(&id, &user("u"))
        .expect("remove after seeing the add");
    sync_both(&a.engine, &b.engine, &id);
    for r in [&a, &b] {
        let snap = r.engine.room(&id).expect("read").expect("room");
        assert!(!snap.permissions.contains_key(&user("u")));
    }
}

#[test]
fn ending_is_terminal_and_wins_over_concurrent_joins() {
    let id = room("end");
    let (a, b) = pair_with_session(&id);
    a.engine.end_room(&id).expect("end");
    b.engine
        .join(&id, join_request("s9", "u9", "sfu-0"))
        .expect("concurrent join");
    sync_both(&a.engine, &b.engine, &id);
    for r in [&a, &b] {
        let snap = r.engine.room(&id).expect("read").expect("room");
        assert_eq!(snap.lifecycle, Lifecycle::Ended);
        assert!(r
            .engine
            .calls_owned_by(&node("sfu-0"))
            .expect("index")
            .is_empty());
        assert!(matches!(
            r.engine.join(&id, join_request("s10", "u", "n")),
            Err(Error::RoomEnded(_))
        ));
    }
}
