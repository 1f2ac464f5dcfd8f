//! History compaction between replicas (`replica::compaction`): requests,
//! acknowledgements, every replica compacting at the same cut, a replica
//! that compacts because a peer's base reached it first, and the version
//! gate that keeps an older build's cluster uncompacted.

mod common;

use chorus_engine::replica::{Event, IncidentKind, ReplicaConfig};
use chorus_engine::*;
use common::compacting::*;
use common::pair::Net;
use common::*;

fn older_build_at_2(config: &mut ReplicaConfig) {
    quick(config);
    if config.node.as_str() == "r2" {
        config.compaction = false;
    }
}

#[test]
fn a_churning_room_is_compacted_everywhere_and_stays_converged() {
    let (mut net, r) = start(quick);
    let cycles = 3 * HISTORY_CHANGES_MAX as usize;
    churn(&mut net, &r, 0, cycles);
    net.run_for(5_000);
    settle(&mut net);
    for i in 0..3 {
        let stats = net.members[i].replica.stats().clone();
        assert!(stats.compactions >= 2, "replica {i}: {stats:?}");
        let changes = history(&mut net, i, &r);
        assert!(
            changes < 2 * HISTORY_CHANGES_MAX as usize,
            "replica {i} holds {changes} changes after {cycles} join+leave pairs"
        );
    }
    // The same reading everywhere, counters whole, departed sessions gone.
    let first = net.members[0].replica.room_as_of(&r, None).expect("reads");
    for i in 1..3 {
        let other = net.members[i].replica.room_as_of(&r, None).expect("reads");
        assert_eq!(other, first, "replica {i}");
    }
    let snap = first.expect("the room");
    assert_eq!(snap.counters.joins, cycles as i64 + 1);
    assert_eq!(snap.counters.leaves, cycles as i64);
    assert!(snap.sessions.contains_key(&session("stays")));
    assert!(
        snap.sessions.len() < HISTORY_CHANGES_MAX as usize,
        "{} sessions still held",
        snap.sessions.len()
    );
    // A write naming a session compacted away is refused, never resurrects.
    net.write(
        0,
        &r,
        RoomOp::SetState {
            session: session("s0"),
            state: SessionState::Active,
        },
    );
    settle(&mut net);
    let snap = net.members[2]
        .replica
        .room_as_of(&r, None)
        .expect("reads")
        .expect("the room");
    assert!(!snap.sessions.contains_key(&session("s0")));
}

fn compactions(net: &Net) -> Vec<u64> {
    (0..net.members.len())
        .map(|i| net.members[i].replica.stats().compactions)
        .collect()
}

/// Cuts replica 2 off from the others; it takes a join (`late`) alone,
/// and all three write on past the bound.
fn cut_off_2_writing(net: &mut Net, r: &RoomId) {
    net.disconnect(0, 2);
    net.disconnect(1, 2);
    net.write(
        2,
        r,
        RoomOp::Join {
            request: join_request("late", "u", "sfu-1"),
        },
    );
    churn(net, r, 100_000, 200);
}

#[test]
fn a_replica_cut_off_holds_compaction_back_then_catches_up() {
    let (mut net, r) = start(quick);
    churn(&mut net, &r, 0, HISTORY_CHANGES_MAX as usize);
    net.run_for(1_000);
    let first = compactions(&net);
    assert!(first.iter().all(|n| *n >= 1), "{first:?}");
    // Replica 2 is cut off and writes; the others write on past the bound
    // but cannot compact without its acknowledgement.
    cut_off_2_writing(&mut net, &r);
    net.run_for(2_000);
    assert_eq!(
        compactions(&net),
        first,
        "nobody compacts without replica 2"
    );
    net.reconnect(2, 0);
    net.reconnect(2, 1);
    settle(&mut net);
    let snap = read_alike(&mut net, &r);
    assert!(
        snap.sessions.contains_key(&session("late")),
        "the cut-off replica's write survives"
    );
    net.run_for(2_000);
    settle(&mut net);
    let last = compactions(&net);
    assert!(
        last.iter().zip(&first).all(|(l, f)| l > f),
        "everyone compacts once it is back: {first:?} then {last:?}"
    );
}

/// Replicas stop waiting for a peer held Down for 3 s (SWIM on).
fn absent_after_3s(config: &mut ReplicaConfig) {
    quick(config);
    config.failure_detection = true;
    config.compaction_absent_ms = 3_000;
}

#[test]
fn a_replica_not_heard_from_for_compaction_absent_ms_no_longer_holds_it_back() {
    let (mut net, r) = start(absent_after_3s);
    churn(&mut net, &r, 0, HISTORY_CHANGES_MAX as usize);
    net.run_for(1_000);
    let first = compactions(&net);
    assert!(first.iter().all(|n| *n >= 1), "{first:?}");
    cut_off_2_writing(&mut net, &r);
    // Replica 2 alone writes past the bound too.
    for i in 0..HISTORY_CHANGES_MAX as usize {
        let id = format!("alone{i}");
        let request = join_request(&id, "u", "sfu-1");
        net.write(2, &r, RoomOp::Join { request });
        let session = session(&id);
        net.write(2, &r, RoomOp::Leave { session });
    }
    net.run_for(1_000);
    assert_eq!(compactions(&net), first, "replica 2 is still awaited");
    // SWIM holds 2 Down within a couple of seconds; 3 s later it is absent.
    net.run_for(6_000);
    let apart = compactions(&net);
    assert!(
        apart[0] > first[0] && apart[1] > first[1],
        "{first:?} then {apart:?}"
    );
    // 2 has not heard from 0 and 1 either, but it is no majority: two
    // sides of a partition never both compact.
    assert_eq!(apart[2], first[2], "replica 2 alone does not compact");
    // The replica that went on without 2 says so (the other may have
    // compacted on its base before its own tick looked).
    let went_on: Vec<usize> = (0..2)
        .filter(|i| net.members[*i].replica.stats().compaction_absent == 1)
        .collect();
    assert!(!went_on.is_empty());
    for i in went_on.iter().copied() {
        let incidents = net.members[i]
            .replica
            .incidents(None, 10_000)
            .expect("reads");
        assert!(
            incidents
                .iter()
                .any(|e| e.kind == IncidentKind::Compaction && e.detail.starts_with("r2:")),
            "replica {i} journals that it goes on without r2"
        );
    }

    // Restarted, 0 and 1 have not heard from 2 since they opened: they
    // wait for it again, from the opening.
    net.restart(0, absent_after_3s);
    net.restart(1, absent_after_3s);
    net.reconnect(0, 1);
    churn(&mut net, &r, 200_000, 2 * HISTORY_CHANGES_MAX as usize);
    net.run_for(1_000);
    let restarted = compactions(&net);
    assert_eq!(&restarted[..2], &[0, 0], "counted from the restart");
    net.run_for(3_000);
    let again = compactions(&net);
    assert!(again[0] > 0 && again[1] > 0, "{again:?}");

    // Back, 2 catches up on their base (two peers sent it) and keeps its
    // own writes; from then on it is awaited again.
    net.reconnect(2, 0);
    net.reconnect(2, 1);
    settle(&mut net);
    net.run_for(2_000);
    settle(&mut net);
    let snap = read_alike(&mut net, &r);
    assert!(
        snap.sessions.contains_key(&session("late")),
        "its join survives"
    );
    assert!(net.members[2].replica.stats().peer_bases_merged >= 1);
    // It is awaited again: cut off for less than the wait, it holds the
    // next compaction back, and all three compact once it is back.
    let back = compactions(&net);
    net.disconnect(0, 2);
    net.disconnect(1, 2);
    churn(&mut net, &r, 300_000, HISTORY_CHANGES_MAX as usize);
    net.run_for(1_000);
    assert_eq!(&compactions(&net)[..2], &back[..2], "2 is awaited again");
    net.reconnect(2, 0);
    net.reconnect(2, 1);
    settle(&mut net);
    net.run_for(2_000);
    settle(&mut net);
    let last = compactions(&net);
    assert!(
        last.iter().zip(&back).all(|(l, b)| l > b),
        "all three compact together again: {back:?} then {last:?}"
    );
    let snap = read_alike(&mut net, &r);
    assert!(snap.sessions.contains_key(&session("late")));
    let said_back = (0..2).any(|i| {
        let incidents = net.members[i]
            .replica
            .incidents(None, 10_000)
            .expect("reads");
        incidents
            .iter()
            .any(|e| e.kind == IncidentKind::Compaction && e.detail.contains("waits for it again"))
    });
    assert!(said_back, "the journal says 2 is awaited again");
}

/// Only the link between 0 and 2 is cut: each still reaches 1, so SWIM
/// (probing through 1) holds neither Down, and neither goes on without the
/// other. Had each, with 1, gone on without the other, both could compact,
/// each at its own request, once 1 named it. Here 1 hears both names and
/// its base carries the one cut to 0 and 2.
#[test]
fn a_cut_link_alone_makes_nobody_absent() {
    let (mut net, r) = start(absent_after_3s);
    churn(&mut net, &r, 0, HISTORY_CHANGES_MAX as usize);
    net.run_for(1_000);
    net.disconnect(0, 2);
    churn(&mut net, &r, 100_000, 2 * HISTORY_CHANGES_MAX as usize);
    net.run_for(8_000);
    for i in 0..3 {
        let stats = net.members[i].replica.stats();
        assert_eq!(stats.compaction_absent, 0, "replica {i}");
    }
    net.reconnect(0, 2);
    settle(&mut net);
    let generations: Vec<_> = (0..3)
        .map(|i| net.members[i].replica.room_generation(&r).expect("reads"))
        .collect();
    assert!(
        generations.iter().all(|g| *g == generations[0]),
        "{generations:?}"
    );
    read_alike(&mut net, &r);
}

#[test]
fn no_room_is_compacted_while_an_older_build_is_a_member() {
    let (mut net, r) = start(older_build_at_2);
    churn(&mut net, &r, 0, 2 * HISTORY_CHANGES_MAX as usize);
    net.run_for(5_000);
    settle(&mut net);
    for i in 0..3 {
        assert_eq!(net.members[i].replica.stats().compactions, 0, "replica {i}");
    }
    assert!(history(&mut net, 0, &r) > 2 * HISTORY_CHANGES_MAX as usize);
}

/// The values replica `i` holds at attribute `key` (every concurrent one).
fn attr_values(net: &mut Net, i: usize, room: &RoomId, key: &str) -> Vec<String> {
    use automerge::ReadDoc;
    let bytes = net.members[i]
        .replica
        .export_room(room)
        .expect("reads")
        .expect("held");
    let doc = automerge::Automerge::load(&bytes).expect("loads");
    let config = match doc.get(automerge::ROOT, "config") {
        Ok(Some((_, obj))) => obj,
        other => panic!("no config: {other:?}"),
    };
    let attrs = match doc.get(&config, "attrs") {
        Ok(Some((_, obj))) => obj,
        other => panic!("no attrs: {other:?}"),
    };
    doc.get_all(&attrs, key)
        .expect("reads")
        .into_iter()
        .map(|(v, _)| v.as_str().expect("a string").to_owned())
        .collect()
}

/// Sets attribute `key` at replica 0, then removes it there, once the
/// replicas have talked compaction (a room long enough to be a candidate).
fn set_then_remove(tweak: fn(&mut ReplicaConfig)) -> (Net, RoomId) {
    let (mut net, r) = start(tweak);
    churn(&mut net, &r, 0, HISTORY_CHANGES_MAX as usize / 2);
    net.run_for(2_000);
    let mut update = ConfigUpdate::default();
    update.set_attributes.insert("k".into(), "v".into());
    net.write(0, &r, RoomOp::UpdateConfig { update });
    let update = ConfigUpdate {
        remove_attributes: vec!["k".into()],
        ..ConfigUpdate::default()
    };
    net.write(0, &r, RoomOp::UpdateConfig { update });
    settle(&mut net);
    (net, r)
}

#[test]
fn removals_are_stamped_only_once_every_replica_reads_them() {
    // An older build refuses a stamped removal: automerge's delete it is.
    let (mut net, r) = set_then_remove(older_build_at_2);
    assert_eq!(attr_values(&mut net, 0, &r, "k"), Vec::<String>::new());
    // Every replica reads them: a stamped null, read as removed.
    let (mut net, r) = set_then_remove(quick);
    let values = attr_values(&mut net, 0, &r, "k");
    assert_eq!(values.len(), 1, "{values:?}");
    assert!(values[0].ends_with("|null"), "{values:?}");
    for i in 0..3 {
        let room = net.members[i]
            .replica
            .room(&r)
            .expect("reads")
            .expect("held");
        assert!(!room.config.attributes.contains_key("k"), "replica {i}");
    }
}

fn slow_ticks(config: &mut ReplicaConfig) {
    quick(config);
    config.end_ack_interval_ms = 2_000;
}

/// Replicas name a request back as soon as replication brings it, not at
/// their next tick: every replica compacts within a few milliseconds of the
/// request, so the tail carried onto the base is a few writes, not an
/// interval's worth.
#[test]
fn the_cut_is_agreed_as_soon_as_the_request_reaches_every_replica() {
    let (mut net, r) = start(slow_ticks);
    let mut first_at: [Option<u64>; 3] = [None; 3];
    let mut i = 0;
    while first_at.iter().any(Option::is_none) {
        assert!(i < 20 * HISTORY_CHANGES_MAX as usize, "no compaction");
        churn(&mut net, &r, i, 1);
        i += 1;
        for (n, at) in first_at.iter_mut().enumerate() {
            if at.is_none() && net.members[n].replica.stats().compactions > 0 {
                *at = Some(net.now_ms);
            }
        }
    }
    let times: Vec<u64> = first_at.iter().flatten().copied().collect();
    let spread = times.iter().max().unwrap_or(&0) - times.iter().min().unwrap_or(&0);
    assert!(
        spread < 50,
        "replicas compacted at {times:?} ms: the cut waited for ticks ({} ms apart)",
        2_000
    );
    for n in 0..3 {
        let changes = history(&mut net, n, &r);
        assert!(
            changes < 100,
            "replica {n} carried {changes} changes onto its first base"
        );
    }
    settle(&mut net);
}

/// A compaction runs off the replica's task (`Output::Work`), as the
/// library and the daemon run it. Meanwhile its peers finish theirs and
/// push their base: the replica holds it back instead of compacting in
/// line (which would stall it as long as the work it handed off). A write
/// made meanwhile moves the room: the compaction is finished in line on
/// the room as it is, reusing the prepared base, and the write is carried
/// like any other.
#[test]
fn a_compaction_off_the_task_holds_a_peers_base_and_carries_the_writes_made_meanwhile() {
    let (mut net, r) = start(off_task);
    let i = churn_until_handed_off(&mut net, &r);
    peers_compact(&mut net);
    net.run_for(500);
    assert_eq!(
        net.members[0].replica.stats().compactions,
        0,
        "a peer's base compacted the room in line while its compaction ran off the task"
    );
    // A peer's write on its new base reaches replica 0 while the base is
    // held: it waits for the new history and must be announced with it.
    net.write(
        1,
        &r,
        RoomOp::Join {
            request: join_request("from-peer", "u", "sfu-2"),
        },
    );
    net.run_for(300);
    net.members[0].events.clear();
    net.write(
        0,
        &r,
        RoomOp::Join {
            request: join_request("meanwhile", "u", "sfu-1"),
        },
    );
    net.finish_work(0);
    let stats = net.members[0].replica.stats().clone();
    assert_eq!(stats.compactions, 1, "{stats:?}");
    assert_eq!(stats.compactions_redone, 1, "{stats:?}");
    let announced = net.members[0].events.iter().any(|e| match e {
        Event::Changed { change, .. } => change.changes.iter().any(
            |k| matches!(k, ChangeKind::Joined { session: s, .. } if s == &session("from-peer")),
        ),
        _ => false,
    });
    assert!(
        announced,
        "the peer's join applied with the new history unannounced"
    );
    settle_with_work(&mut net);
    let first = net.members[0].replica.room_as_of(&r, None).expect("reads");
    for n in 1..3 {
        let other = net.members[n].replica.room_as_of(&r, None).expect("reads");
        assert_eq!(other, first, "replica {n}");
    }
    let snap = first.expect("the room");
    assert!(snap.sessions.contains_key(&session("meanwhile")));
    assert!(snap.sessions.contains_key(&session("stays")));
    assert!(snap.sessions.contains_key(&session("from-peer")));
    assert_eq!(snap.counters.joins, i as i64 + 3);
    assert!(history(&mut net, 0, &r) < HISTORY as usize);
}

#[test]
fn a_compaction_whose_result_never_comes_back_is_given_up_and_the_room_still_converges() {
    let (mut net, r) = start(off_task);
    churn_until_handed_off(&mut net, &r);
    // Replica 0's work is never run (a lost result); the peers compact.
    let lost = std::mem::take(&mut net.members[0].work);
    peers_compact(&mut net);
    net.run_for(1_000);
    assert_eq!(net.members[0].replica.stats().compactions_failed, 0);
    net.run_for(chorus_engine::limits::COMPACTION_WORK_MS_MAX);
    let stats = net.members[0].replica.stats().clone();
    assert_eq!(stats.compactions_failed, 1, "{stats:?}");
    // The held base applied in line once the work was given up, rather
    // than starting the same work again on another copy.
    assert_eq!(stats.compactions, 1, "{stats:?}");
    assert_eq!(stats.compactions_on_peer_base, 0, "{stats:?}");
    for n in 0..3 {
        net.finish_work(n);
    }
    // The lost result, arriving after all, is ignored.
    for work in lost {
        let done = work.run();
        net.input(0, done);
    }
    assert_eq!(net.members[0].replica.stats().compactions, 1);
    settle(&mut net);
    assert!(history(&mut net, 0, &r) < HISTORY as usize);
}

/// A given-up job's result that comes back while a later job on the same
/// room is out is not taken for the later one's: that one's result is
/// still installed when it comes.
#[test]
fn a_late_result_of_a_given_up_job_is_not_taken_for_the_next_ones() {
    let (mut net, r) = start(off_task);
    churn_until_handed_off(&mut net, &r);
    let lost = std::mem::take(&mut net.members[0].work);
    peers_compact(&mut net);
    net.run_for(chorus_engine::limits::COMPACTION_WORK_MS_MAX + 1_000);
    assert_eq!(net.members[0].replica.stats().compactions, 1);
    for n in 0..3 {
        net.finish_work(n);
    }
    settle(&mut net);
    // The room's next compaction: replica 0 starts it off its task (here
    // on the first peer's base that reaches it); the first job's result
    // comes back meanwhile.
    let mut k = 0;
    while net.members[0].work.is_empty() {
        assert!(k < 3 * HISTORY as usize, "no second compaction handed off");
        churn(&mut net, &r, 10_000 + k, 1);
        net.finish_work(1);
        net.finish_work(2);
        k += 1;
    }
    for work in lost {
        let done = work.run();
        net.input(0, done);
    }
    // Taken for the second job's, it would end that job's wait: the held
    // peer's base would start a third on another copy.
    let stats = net.members[0].replica.stats().clone();
    assert_eq!(stats.compactions, 1, "{stats:?}");
    assert_eq!(stats.compactions_on_peer_base, 1, "{stats:?}");
    assert_eq!(stats.storage_errors, 0, "{stats:?}");
    net.finish_work(0);
    let stats = net.members[0].replica.stats().clone();
    assert_eq!(stats.compactions, 2, "{stats:?}");
    assert_eq!(stats.compactions_failed, 1, "{stats:?}");
}

/// A replica compacting a room off its task leaves that room out of a
/// changes answer, and says so (`truncated`): an asker that took the answer
/// as complete would, after a walk, claim this replica's log head without
/// the room's changes, and its since path would never replay them.
#[test]
fn an_answer_that_leaves_out_a_compacting_room_says_it_is_incomplete() {
    use chorus_engine::replica::wire::{self, Body, Envelope, RoomHeads};
    use chorus_engine::replica::{Input, Output};
    let (mut net, r) = start(off_task);
    churn_until_handed_off(&mut net, &r);
    // Replica 0 compacts `r` off its task now; a peer with none of it asks.
    let bytes = wire::encode(&Envelope {
        cluster: common::pair::CLUSTER,
        sent_at: Default::default(),
        body: Body::ChangesReq {
            round: 7,
            rooms: vec![RoomHeads {
                room: r.clone(),
                heads: Vec::new(),
                ancestry: Vec::new(),
            }],
        },
    });
    let from = net.members[1].id.clone();
    let now = net.now_ms;
    net.members[0]
        .replica
        .handle_input(now, Input::Message { from, bytes });
    let mut answer = None;
    while let Some(output) = net.members[0].replica.poll_output() {
        if let Output::Send { bytes, .. } = output {
            if let Ok(Envelope {
                body:
                    Body::ChangesResp {
                        round: 7,
                        rooms,
                        truncated,
                    },
                ..
            }) = wire::decode(&bytes)
            {
                answer = Some((rooms.len(), truncated));
            }
        }
    }
    assert_eq!(answer, Some((0, true)), "no changes, and marked incomplete");
}
