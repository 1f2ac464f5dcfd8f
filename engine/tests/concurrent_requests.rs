//! Two compaction requests for one generation, written side by side: the
//! peers agreed on one of them, while a replica they did not know of yet
//! (it joined cut off from them) wrote the other, newer one and would cut
//! there. It holds the peers' cut too, so when their base reaches it, it
//! computes the base at that cut and takes it. It used to wait for its
//! peers to name its own request, which they never would (they had moved
//! on), and neither side took the other's writes again.

mod common;

use automerge::ActorId;
use chorus_engine::room::compact::Request;
use chorus_engine::room::{Intake, RoomDoc};
use chorus_engine::*;
use common::docs::{join, Pair};

fn request(pair: &mut Pair, at: usize) -> automerge::ChangeHash {
    let request = Request {
        generation: pair.docs[at].generation() + 1,
        prune_before_ms: pair.now_ms(),
    };
    pair.write(at, RoomOp::RequestCompaction { request });
    *pair.docs[at].heads().first().expect("a head")
}

/// Replica 0 and 1 each write a request for the next generation, 1's
/// stamped later; both hold both. Returns (0's, 1's).
fn side_by_side(pair: &mut Pair) -> (automerge::ChangeHash, automerge::ChangeHash) {
    pair.write(0, join("a"));
    pair.write(1, join("b"));
    pair.sync(0, 1);
    pair.sync(1, 0);
    let theirs = request(pair, 0);
    let own = request(pair, 1); // stamped later, written without `theirs`
    pair.write(1, join("c")); // replica 1's writes after both requests
    pair.sync(0, 1);
    pair.sync(1, 0);
    let would_cut_at = pair.docs[1].compaction_request().map(|(hash, _)| hash);
    assert_eq!(would_cut_at, Some(own), "replica 1 would cut at its own");
    (theirs, own)
}

/// A copy of replica `at`'s room, compacted at `cut`: its whole history.
fn compacted_copy(pair: &Pair, at: usize, cut: automerge::ChangeHash) -> Vec<automerge::Change> {
    let bytes = pair.docs[at].save();
    let actor = ActorId::from(vec![9; 16]);
    let mut copy = RoomDoc::load(pair.room.clone(), actor, Some(&bytes), &[]).expect("loads");
    copy.compact_at(cut).expect("compacts");
    copy.changes_since(&[])
}

/// A base at a change that only follows a request (anyone can compute
/// one) is not one replicas agreed on: it waits, as a base whose cut is
/// not held does.
#[test]
fn a_base_at_a_change_that_is_not_a_request_waits() {
    let mut pair = Pair::new();
    side_by_side(&mut pair);
    pair.write(0, join("x"));
    let after_a_request = *pair.docs[0].heads().first().expect("a head");
    pair.sync(0, 1);
    let forged = compacted_copy(&pair, 0, after_a_request);
    let outcome = pair.docs[1]
        .apply_remote(forged, Intake::EachChange)
        .expect("applies");
    assert!(outcome.compacted.is_none());
    assert_eq!(outcome.bases_deferred, 1);
    assert_eq!(pair.docs[1].generation(), 0);
}

/// An import may only bring the base at the room's own request: a client
/// could otherwise compact a replica at a request its peers did not agree
/// on, and split it from them.
#[test]
fn an_import_of_a_base_at_another_request_is_refused() {
    let mut pair = Pair::new();
    let (theirs, _) = side_by_side(&mut pair);
    let other = compacted_copy(&pair, 0, theirs);
    let outcome = pair.docs[1]
        .apply_remote(other, Intake::Whole)
        .expect("applies");
    assert!(outcome.compacted.is_none());
    assert_eq!(outcome.bases_deferred, 1);
    assert_eq!(pair.docs[1].generation(), 0);
}

#[test]
fn a_replica_takes_its_peers_base_at_a_cut_it_holds_but_would_not_cut_at() {
    let mut pair = Pair::new();
    let (theirs, _) = side_by_side(&mut pair);

    // Replica 0's peers agreed on `theirs`: it compacts there and writes on.
    pair.docs[0].compact_at(theirs).expect("compacts");
    pair.write(0, join("d"));
    let history = pair.docs[0].changes_since(&[]);
    let outcome = pair.docs[1]
        .apply_remote(history, Intake::EachChange)
        .expect("applies");
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    assert!(outcome.compacted.is_some(), "replica 1 took the base");
    assert_eq!(outcome.bases_deferred, 0);
    assert_eq!(pair.docs[1].generation(), 1);

    // Replica 1's own writes reach replica 0 as new-generation changes.
    pair.sync(1, 0);
    pair.sync(0, 1);
    assert_eq!(pair.docs[0].heads(), pair.docs[1].heads());
    let read = pair.docs[0].snapshot().expect("reads");
    assert_eq!(pair.docs[1].snapshot().expect("reads"), read);
    for s in ["a", "b", "c", "d"] {
        assert!(read.sessions.contains_key(&common::session(s)), "{s}");
    }
}
