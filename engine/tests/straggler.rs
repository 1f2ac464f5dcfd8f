//! A replica its peers compacted without: it was not among the replicas
//! they knew of (it joined cut off from them, or they restarted and
//! forgot it), so they agreed on cuts it never held, and compacted past
//! it once or twice. Their base cannot be computed here (the cut is not
//! held, or is in a history this replica never had), and waiting for it
//! would wait for ever: the replica takes the peers' base and merges its
//! own reading onto it, as an import from before the cut is merged
//! (`old_import`). Its writes made apart from them are kept; the room
//! converges.

mod common;

use automerge::{ActorId, ChangeHash};
use chorus_engine::room::compact::Request;
use chorus_engine::room::{Intake, RoomDoc};
use chorus_engine::*;
use common::docs::{join, leave, write_at, Pair, START_MS};

/// Replica 0 requests the next generation and compacts at once (the
/// peers it knows of, replica 1 here, name the request with it; the
/// straggler is not among them). Pruning what left before `horizon_ms`.
fn compact_without_straggler(pair: &mut Pair, horizon_ms: u64) {
    pair.compact_pruning(horizon_ms);
}

/// A third replica of the pair's room, holding what replica 0 holds now.
fn straggler(pair: &Pair) -> RoomDoc {
    let mut doc = RoomDoc::empty(pair.room.clone(), ActorId::from(vec![3; 16]));
    let outcome = doc
        .apply_remote(pair.docs[0].changes_since(&[]), Intake::EachChange)
        .expect("applies");
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    doc
}

fn write_straggler(pair: &mut Pair, doc: &mut RoomDoc, op: RoomOp) {
    pair.step += 1;
    write_at(&pair.room, doc, 3, pair.now_ms(), &op).expect("writes");
}

/// Replica 0's whole history (its base onwards) applied to `doc`, then
/// what `doc` wrote since sent back to replica 0; both must read the same.
/// The base waits the first time, for a permit (which a replica grants
/// once enough peers sent it), and is taken the second.
fn heal(pair: &mut Pair, doc: &mut RoomDoc) -> chorus_engine::room::RemoteApply {
    let history = pair.docs[0].changes_since(&[]);
    let asked = doc
        .apply_remote(history.clone(), Intake::EachChange)
        .expect("applies");
    assert!(asked.compacted.is_none(), "not without a permit");
    assert_eq!(asked.bases_deferred, 1);
    let base = asked.catch_up_asked.expect("a catch-up asked for");
    assert_eq!(base, history[0].hash());
    doc.permit_catch_up(base);
    let outcome = doc
        .apply_remote(history, Intake::EachChange)
        .expect("applies");
    let back = doc.changes_since(&pair.docs[0].heads());
    let returned = pair.docs[0]
        .apply_remote(back, Intake::EachChange)
        .expect("applies");
    assert!(returned.refused.is_empty(), "{:?}", returned.refused);
    assert_eq!(returned.superseded, 0, "the straggler's writes are carried");
    outcome
}

/// Session "a" joined everywhere; then, apart, the straggler joins "r"
/// and its peers compact `generations` times without it.
fn apart(generations: u64) -> (Pair, RoomDoc) {
    let mut pair = Pair::new();
    pair.write(0, join("a"));
    pair.sync(0, 1);
    let mut away = straggler(&pair);
    write_straggler(&mut pair, &mut away, join("r"));
    for _ in 0..generations {
        compact_without_straggler(&mut pair, START_MS);
    }
    (pair, away)
}

fn sessions(doc: &mut RoomDoc) -> Vec<String> {
    let read = doc.snapshot().expect("reads");
    read.sessions
        .keys()
        .map(|s| s.as_str().to_owned())
        .collect()
}

#[test]
fn a_replica_two_generations_behind_takes_the_base_and_keeps_its_writes() {
    let mut pair = Pair::new();
    pair.write(0, join("a"));
    pair.write(0, join("gone"));
    pair.write(0, leave("gone"));
    pair.sync(0, 1);
    let mut away = straggler(&pair);
    // Apart from its peers, the straggler writes on generation 0.
    write_straggler(&mut pair, &mut away, join("r"));
    write_straggler(&mut pair, &mut away, leave("a"));

    // Its peers compact twice without it; "gone" is pruned.
    let horizon_ms = pair.now_ms();
    compact_without_straggler(&mut pair, START_MS);
    pair.write(0, join("b"));
    pair.sync(0, 1);
    compact_without_straggler(&mut pair, horizon_ms);
    assert_eq!(pair.docs[0].generation(), 2);
    assert!(!sessions(&mut pair.docs[0]).contains(&"gone".to_owned()));

    let outcome = heal(&mut pair, &mut away);
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    assert!(outcome.compacted.is_some(), "the straggler took the base");
    assert_eq!(outcome.bases_deferred, 0);
    assert_eq!(away.generation(), 2);
    assert_eq!(away.pending_len(), 0);

    let read = pair.docs[0].snapshot().expect("reads");
    assert_eq!(away.snapshot().expect("reads"), read);
    assert_eq!(pair.docs[0].heads(), away.heads());
    // Its join is kept, and so is its leave of "a"; a pruned session does
    // not come back.
    assert_eq!(sessions(&mut away), ["a", "b", "r"]);
    let a = &read.sessions[&common::session("a")];
    assert_eq!(a.state, SessionState::Left);
    assert_eq!(read.counters.joins, 4, "a, gone, b and r");
    assert_eq!(read.counters.leaves, 2, "gone and a");
}

/// The room holds two values side by side at a session's state (two
/// replicas set it at once): the merge does not write the winner with a
/// put that automerge turns into a delete of the other value, which every
/// validator refuses at a state.
#[test]
fn values_side_by_side_do_not_get_the_merge_refused() {
    for newer_on in [0, 1] {
        let (mut pair, mut away) = apart(2);
        let state = |state| RoomOp::SetState {
            session: common::session("a"),
            state,
        };
        pair.write(1 - newer_on, state(SessionState::Reconnecting));
        pair.write(newer_on, state(SessionState::Active));
        pair.sync(0, 1);
        pair.sync(1, 0);
        let outcome = heal(&mut pair, &mut away);
        assert!(
            outcome.refused.is_empty(),
            "{newer_on}: {:?}",
            outcome.refused
        );
        assert_eq!(away.generation(), 2);
        let read = away.snapshot().expect("reads");
        assert_eq!(
            read.sessions[&common::session("a")].state,
            SessionState::Active
        );
    }
}

/// One generation behind, without the cut: the peers agreed on a request
/// the straggler never received, and nobody holds that history any more.
#[test]
fn a_replica_without_the_cut_takes_the_base_and_keeps_its_writes() {
    let (mut pair, mut away) = apart(1);
    pair.write(1, join("b"));
    pair.sync(1, 0);

    let outcome = heal(&mut pair, &mut away);
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    assert!(outcome.compacted.is_some());
    assert_eq!(away.generation(), 1);
    assert_eq!(pair.docs[0].heads(), away.heads());
    assert_eq!(sessions(&mut away), ["a", "b", "r"]);
    assert_eq!(
        away.snapshot().expect("reads"),
        pair.docs[0].snapshot().expect("reads")
    );
}

/// Replica 0 writes `x`, then a request (the cut) on it, and compacts
/// there; `away` held neither. Returns (`x`'s changes, the cut).
fn cut_after_x(pair: &mut Pair, away: &RoomDoc) -> (Vec<automerge::Change>, ChangeHash) {
    pair.write(0, join("x"));
    let x = pair.docs[0].changes_since(&away.heads());
    let request = Request {
        generation: 1,
        prune_before_ms: START_MS,
    };
    pair.write(0, RoomOp::RequestCompaction { request });
    let cut = *pair.docs[0].heads().first().expect("a head");
    pair.sync(0, 1);
    (x, cut)
}

fn only(changes: Vec<automerge::Change>, hash: ChangeHash) -> Vec<automerge::Change> {
    changes.into_iter().filter(|c| c.hash() == hash).collect()
}

/// The cut comes in the same batch as the base (two peers' batches taken
/// together), its dependencies held: the base waits for it and is computed
/// exactly when it comes again (nothing merged).
#[test]
fn a_base_whose_cut_comes_with_it_waits_for_it() {
    let mut pair = Pair::new();
    let mut away = straggler(&pair);
    let (x, cut) = cut_after_x(&mut pair, &away);
    away.apply_remote(x, Intake::EachChange).expect("applies");
    let the_cut = only(pair.docs[0].changes_since(&away.heads()), cut);
    pair.docs[0].compact_at(cut).expect("compacts");
    let batch: Vec<_> = the_cut
        .into_iter()
        .chain(pair.docs[0].changes_since(&[]))
        .collect();
    let waits = away
        .apply_remote(batch, Intake::EachChange)
        .expect("applies");
    assert!(waits.compacted.is_none());
    assert_eq!((waits.bases_deferred, waits.bases_merged), (1, 0));
    assert!(waits.catch_up_asked.is_none(), "the cut is on its way");
    assert!(away.has_change(&cut));

    let taken = away
        .apply_remote(pair.docs[0].changes_since(&[]), Intake::EachChange)
        .expect("applies");
    assert_eq!(taken.bases_merged, 0, "computed, not merged");
    assert!(taken.compacted.is_some());
    assert_eq!(away.heads(), pair.docs[0].heads());
}

/// The cut waits here for a change of the history its peers replaced:
/// it would wait for ever, so the base is asked to catch up on.
#[test]
fn a_base_whose_cut_waits_for_a_replaced_change_is_caught_up_on() {
    let mut pair = Pair::new();
    let mut away = straggler(&pair);
    write_straggler(&mut pair, &mut away, join("r"));
    let (_, cut) = cut_after_x(&mut pair, &away);
    let the_cut = only(pair.docs[0].changes_since(&away.heads()), cut);
    away.apply_remote(the_cut, Intake::EachChange)
        .expect("applies");
    assert!(away.is_pending(&cut), "waits for x, which nobody sends");
    pair.docs[0].compact_at(cut).expect("compacts");
    pair.sync(0, 1);
    let outcome = heal(&mut pair, &mut away);
    assert!(outcome.compacted.is_some());
    assert_eq!(outcome.bases_merged, 1);
    assert_eq!(sessions(&mut away), ["r", "x"]);
}

/// The same base twice in one batch (two peers' batches taken together):
/// the second copy is left for later, not refused as a second base (which
/// would be remembered, and block the catch-up for good).
#[test]
fn a_base_twice_in_one_batch_waits_and_is_not_refused() {
    let (pair, mut away) = apart(1);
    let history = pair.docs[0].changes_since(&[]);
    let twice: Vec<_> = history.iter().chain(&history).cloned().collect();
    let asked = away
        .apply_remote(twice.clone(), Intake::EachChange)
        .expect("applies");
    assert!(asked.refused.is_empty(), "{:?}", asked.refused);
    let base = asked.catch_up_asked.expect("asked");
    away.permit_catch_up(base);
    let taken = away
        .apply_remote(twice, Intake::EachChange)
        .expect("applies");
    assert!(taken.refused.is_empty(), "{:?}", taken.refused);
    assert!(taken.compacted.is_some());
    assert_eq!(sessions(&mut away), ["a", "r"]);
}

/// Taking the base twice (a second batch brings it again) merges nothing
/// more: the straggler is of the base's generation by then.
#[test]
fn the_base_taken_again_changes_nothing() {
    let (mut pair, mut away) = apart(2);
    heal(&mut pair, &mut away);
    let heads = away.heads();
    let again = away
        .apply_remote(pair.docs[0].changes_since(&[]), Intake::EachChange)
        .expect("applies");
    assert!(again.compacted.is_none());
    assert!(again.applied.is_empty());
    assert_eq!(away.heads(), heads);
}

/// An import is not a peer: a client's document of a newer generation
/// whose cut is not held here still waits, and is not merged (it could
/// split this replica from peers that agreed on another cut).
#[test]
fn an_import_of_a_base_whose_cut_is_not_held_still_waits() {
    let mut pair = Pair::new();
    let mut away = straggler(&pair);
    compact_without_straggler(&mut pair, START_MS);
    let outcome = away
        .apply_remote(pair.docs[0].changes_since(&[]), Intake::Whole)
        .expect("applies");
    assert!(outcome.compacted.is_none());
    assert_eq!(outcome.bases_deferred, 1);
    assert_eq!(away.generation(), 0);
}

/// Replicas 0 and 1 know of each other only (replica 2 is not among their
/// configured peers).
fn unknown_2(config: &mut chorus_engine::replica::ReplicaConfig) {
    common::compacting::quick(config);
    config.peers.retain(|p| p.as_str() != "r2");
}

fn compactions(net: &common::pair::Net, i: usize) -> u64 {
    net.members[i].replica.stats().compactions
}

/// Replica 2 is cut off, its peers restart (and so forget they were ever
/// connected to it) and compact twice while it joins "late"; replica 2's
/// settings are `tweak`'s.
fn compacted_past(
    tweak: fn(&mut chorus_engine::replica::ReplicaConfig),
) -> (common::pair::Net, RoomId) {
    use common::compacting::{churn, settle, HISTORY};
    let (mut net, r) = common::compacting::start(unknown_2);
    churn(&mut net, &r, 0, 10);
    settle(&mut net);
    net.disconnect(0, 2);
    net.disconnect(1, 2);
    for i in [0, 1] {
        net.restart(i, unknown_2);
    }
    net.restart(2, tweak);
    net.reconnect(0, 1);
    net.write(
        2,
        &r,
        RoomOp::Join {
            request: common::join_request("late", "u", "sfu-1"),
        },
    );
    let mut cycles = 10;
    while compactions(&net, 0) < 2 {
        assert!(cycles < 10 * HISTORY as usize, "replica 0 does not compact");
        churn(&mut net, &r, cycles, 10);
        cycles += 10;
        net.run_for(300);
    }
    net.run_for(1_000);
    assert_eq!(compactions(&net, 2), 0);
    (net, r)
}

/// The whole protocol: replica 2, compacted past, is back; it takes its
/// peers' base with its write merged onto it once both sent it, and
/// everyone converges on a room that holds it.
#[test]
fn replicas_that_compacted_past_an_unknown_replica_converge_with_it() {
    use common::compacting::{churn, settle, HISTORY};
    let (mut net, r) = compacted_past(unknown_2);

    // One peer alone could have made the base up: it waits.
    net.reconnect(2, 0);
    net.run_for(2_000);
    let stats = net.members[2].replica.stats();
    assert_eq!(stats.peer_bases_merged, 0, "{stats:?}");
    assert!(stats.peer_bases_deferred > 0, "{stats:?}");
    assert_eq!(compactions(&net, 2), 0);
    // A second peer sends the same base: it is taken.
    net.reconnect(2, 1);
    settle(&mut net);
    let stats = net.members[2].replica.stats();
    assert_eq!(stats.catch_ups_permitted, 1, "{stats:?}");
    assert_eq!(stats.peer_bases_merged, 1, "{stats:?}");
    let snap = common::compacting::read_alike(&mut net, &r);
    assert!(snap.sessions.contains_key(&common::session("late")));
    assert!(snap.sessions.contains_key(&common::session("stays")));

    // The three compact together from then on.
    let before: Vec<u64> = (0..3).map(|i| compactions(&net, i)).collect();
    churn(&mut net, &r, 100_000, HISTORY as usize);
    net.run_for(2_000);
    settle(&mut net);
    for (i, b) in before.iter().enumerate() {
        assert!(compactions(&net, i) > *b, "replica {i} compacts again");
    }
}

fn trusting(config: &mut chorus_engine::replica::ReplicaConfig) {
    unknown_2(config);
    config.catch_up_peers_min = 1;
}

/// Configured to trust any one peer, replica 2 takes the base from the
/// first peer that sends it.
#[test]
fn a_replica_that_trusts_one_peer_catches_up_from_it() {
    let (mut net, r) = compacted_past(trusting);
    net.reconnect(2, 0);
    net.run_for(2_000);
    let stats = net.members[2].replica.stats();
    assert_eq!(stats.catch_ups_permitted, 1, "{stats:?}");
    assert_eq!(stats.peer_bases_merged, 1, "{stats:?}");
    net.reconnect(2, 1);
    common::compacting::settle(&mut net);
    let snap = common::compacting::read_alike(&mut net, &r);
    assert!(snap.sessions.contains_key(&common::session("late")));
}
