//! A peer's base at this replica's cut that is not the one computed here
//! (a forged one, or another format's), met while the replica's own
//! compaction is off its task (`replica::compaction::off_task`): the base
//! is held, and compared with the result when it comes back.

mod common;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, Change, ScalarValue, ROOT};
use chorus_engine::replica::wire::{self, Body, Envelope, RoomChanges};
use chorus_engine::replica::Input;
use chorus_engine::room::{compact, schema};
use chorus_engine::*;
use common::compacting::*;
use common::pair::Net;
use common::*;

/// The peers' base of `room` (from replica 1), and a base of the right
/// shape at the same cut without the room in it.
fn real_and_forged(net: &mut Net, room: &RoomId) -> (Change, Change) {
    let peers = net.members[1].replica.export_room(room).expect("reads");
    let peers = Automerge::load(&peers.expect("the room")).expect("loads");
    let real = peers
        .get_changes(&[])
        .into_iter()
        .find(|c| compact::base_of(room, c).is_some())
        .expect("peer 1 compacted");
    let (generation, cut) = compact::base_of(room, &real).expect("a base");
    let mut doc = Automerge::new().with_actor(schema::base_actor(room, &cut));
    doc.transact_with::<_, _, automerge::AutomergeError, _>(
        |_| CommitOptions::default().with_time(0),
        |tx| {
            tx.put(ROOT, schema::SCHEMA, ScalarValue::Uint(SCHEMA_VERSION))?;
            tx.put(ROOT, schema::ROOM_ID, room.as_str())?;
            tx.put(ROOT, schema::GENERATION, ScalarValue::Uint(generation))?;
            tx.put(ROOT, schema::CUT, cut.to_string())?;
            Ok(())
        },
    )
    .expect("commits");
    let forged = doc.get_changes(&[]).remove(0);
    assert_eq!(compact::base_of(room, &forged), Some((generation, cut)));
    assert_ne!(forged.hash(), real.hash());
    (real, forged)
}

fn push_from_1(net: &mut Net, room: &RoomId, change: &Change) {
    let bytes = wire::encode(&Envelope {
        cluster: common::pair::CLUSTER,
        sent_at: Default::default(),
        body: Body::Push {
            rooms: vec![RoomChanges {
                room: room.clone(),
                changes: vec![change.raw_bytes().to_vec().into()],
            }],
        },
    });
    let from = net.members[1].id.clone();
    net.input(0, Input::Message { from, bytes });
}

/// Replica 0 hands its compaction off its task; the peers compact, and
/// their bases reach replica 0 (and are held) if `peers_reach_0`; then a
/// forged base from peer 1 is held too, and replica 0's result comes back.
/// Returns the two bases.
fn forged_base_held(net: &mut Net, room: &RoomId, peers_reach_0: bool) -> (Change, Change) {
    churn_until_handed_off(net, room);
    if !peers_reach_0 {
        net.disconnect(0, 1);
        net.disconnect(0, 2);
    }
    peers_compact(net);
    net.run_for(500);
    assert_eq!(net.members[0].replica.stats().compactions, 0);
    let (real, forged) = real_and_forged(net, room);
    if peers_reach_0 {
        // Held for sure, whichever peer replica 0 last rounded with.
        push_from_1(net, room, &real);
    }
    push_from_1(net, room, &forged);
    net.finish_work(0);
    if !peers_reach_0 {
        net.reconnect(0, 1);
        net.reconnect(0, 2);
    }
    (real, forged)
}

/// The room converged on every replica with the peers' base, never the
/// forged one.
fn converged_on(net: &mut Net, room: &RoomId, real: &Change, forged: &Change) {
    settle_with_work(net);
    let mine = net.members[0].replica.export_room(room).expect("reads");
    let mine = Automerge::load(&mine.expect("the room")).expect("loads");
    let hashes: Vec<_> = mine.get_changes(&[]).iter().map(|c| c.hash()).collect();
    assert!(hashes.contains(&real.hash()), "the peers' base is missing");
    assert!(
        !hashes.contains(&forged.hash()),
        "the forged base was adopted"
    );
    let first = net.members[0]
        .replica
        .room_as_of(room, None)
        .expect("reads");
    let other = net.members[1]
        .replica
        .room_as_of(room, None)
        .expect("reads");
    assert_eq!(first, other);
    let first = first.expect("the room");
    assert!(first.sessions.contains_key(&session("stays")));
}

/// Only the forged base is held: the result is dropped (the peers' base
/// may be of another format, which the in-line path tries), the forged
/// base is refused there, and the room is compacted again (the harness
/// runs that work at once) and converges once the peers are back.
#[test]
fn a_held_base_that_differs_drops_the_result_and_is_refused() {
    let (mut net, r) = start(off_task);
    let (real, forged) = forged_base_held(&mut net, &r, false);
    let stats = net.members[0].replica.stats().clone();
    assert_eq!(stats.compaction_base_mismatches, 1, "{stats:?}");
    // Refused in line before the room compacted again: had the result
    // been installed, the forged base would have been ignored instead.
    assert_eq!(stats.changes_refused, 1, "{stats:?}");
    converged_on(&mut net, &r, &real, &forged);
}

/// The peers' base, equal to the one computed here, is held beside the
/// forged one: the difference is counted, the result installed, and the
/// forged base ignored as of a generation the room has.
#[test]
fn a_held_base_that_matches_installs_the_result_whatever_else_is_held() {
    let (mut net, r) = start(off_task);
    let (real, forged) = forged_base_held(&mut net, &r, true);
    let stats = net.members[0].replica.stats().clone();
    assert_eq!(stats.compaction_base_mismatches, 1, "{stats:?}");
    assert_eq!(stats.compactions, 1, "{stats:?}");
    assert_eq!(stats.changes_refused, 0, "{stats:?}");
    converged_on(&mut net, &r, &real, &forged);
}
