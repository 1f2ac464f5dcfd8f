//! Walking a room's history with changes known elsewhere (the replica's
//! recent changes) gives what automerge alone gives: the same ancestors,
//! and the same changes a peer lacks, in the same order, before and after
//! a compaction, whichever of them are known.

mod common;

use std::collections::HashMap;

use automerge::{Change, ChangeHash};
use chorus_engine::room::{KnownChanges, RoomDoc};
use chorus_engine::RoomOp;
use common::docs::Pair;
use common::{join_request, session};

struct Known(HashMap<ChangeHash, Change>);

impl KnownChanges for Known {
    fn known(&self, hash: &ChangeHash) -> Option<&Change> {
        self.0.get(hash)
    }
}

/// Every `nth` change of `doc`'s history, as known changes.
fn every(doc: &RoomDoc, nth: usize) -> Known {
    Known(
        doc.changes_since(&[])
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % nth == 0)
            .map(|(_, c)| (c.hash(), c))
            .collect(),
    )
}

/// Both replicas write, each without the other's last writes, so the
/// history branches and merges.
fn churn(pair: &mut Pair, from: usize, count: usize) {
    for i in from..from + count {
        let at = i % 2;
        let id = format!("s{i}");
        pair.write(
            at,
            RoomOp::Join {
                request: join_request(&id, &format!("u{i}"), "sfu-1"),
            },
        );
        if i % 3 == 0 {
            pair.write(
                at,
                RoomOp::Leave {
                    session: session(&id),
                },
            );
        }
        if i % 4 == 3 {
            pair.sync(0, 1);
            pair.sync(1, 0);
        }
    }
}

fn check(doc: &RoomDoc, older: &[Vec<ChangeHash>]) {
    for nth in [1, 2, 3, 1_000_000] {
        let known = every(doc, nth);
        assert_eq!(
            doc.walk_back_known(10_000, |_| false, &known),
            doc.walk_back(10_000, |_| false),
            "a whole walk, every {nth}th change known"
        );
        let stop = |h: &ChangeHash| h.0[0] % 5 == 0;
        assert_eq!(
            doc.walk_back_known(40, stop, &known),
            doc.walk_back(40, stop),
            "a walk that stops, every {nth}th change known"
        );
        for have in older {
            let plain: Vec<ChangeHash> = doc.changes_since(have).iter().map(Change::hash).collect();
            let with: Vec<ChangeHash> = doc
                .changes_since_known(have, &known)
                .iter()
                .map(Change::hash)
                .collect();
            assert_eq!(with, plain, "changes since {have:?}, every {nth}th known");
            let bytes: Vec<Vec<u8>> = doc
                .changes_since_known(have, &known)
                .iter_mut()
                .map(|c| c.bytes().to_vec())
                .collect();
            let plain_bytes: Vec<Vec<u8>> = doc
                .changes_since(have)
                .iter_mut()
                .map(|c| c.bytes().to_vec())
                .collect();
            assert_eq!(bytes, plain_bytes, "the same changes, byte for byte");
        }
    }
}

#[test]
fn a_walk_with_known_changes_reads_as_one_without() {
    let mut pair = Pair::new();
    let mut older = vec![Vec::new()];
    for round in 0..4 {
        churn(&mut pair, round * 20, 20);
        older.push(pair.docs[1].heads());
    }
    churn(&mut pair, 80, 5);
    assert!(pair.docs[0].heads().len() > 1 || pair.docs[1].heads().len() > 1);
    check(&pair.docs[0], &older);

    pair.sync(0, 1);
    pair.sync(1, 0);
    pair.compact();
    churn(&mut pair, 100, 12);
    let since_base = vec![pair.docs[0].heads()];
    churn(&mut pair, 120, 9);
    check(&pair.docs[0], &since_base);
    check(&pair.docs[1], &since_base);
}
