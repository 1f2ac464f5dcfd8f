//! Two compaction requests for one generation, written side by side: the
//! peers agreed on one of them, while a replica they did not know of yet
//! (it joined cut off from them) wrote the other, newer one and would cut
//! there. It holds the peers' cut too, so when their base reaches it, it
//! computes the base at that cut and takes it. It used to wait for its
//! peers to name its own request, which they never would (they had moved
//! on), and neither side took the other's writes again.

mod common;

use chorus_engine::room::compact::Request;
use chorus_engine::room::Intake;
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

#[test]
fn a_replica_takes_its_peers_base_at_a_cut_it_holds_but_would_not_cut_at() {
    let mut pair = Pair::new();
    pair.write(0, join("a"));
    pair.write(1, join("b"));
    pair.sync(0, 1);
    pair.sync(1, 0);
    let theirs = request(&mut pair, 0);
    let own = request(&mut pair, 1); // stamped later, written without `theirs`
    pair.write(1, join("c")); // replica 1's writes after both requests
    pair.sync(0, 1);
    let would_cut_at = pair.docs[1].compaction_request().map(|(hash, _)| hash);
    assert_eq!(would_cut_at, Some(own), "replica 1 would cut at its own");

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
