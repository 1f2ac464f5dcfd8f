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

/// The changes of `doc`'s history whose index `keep` picks, as known
/// changes parsed from their bytes (as a replica holds what it received).
fn known(doc: &RoomDoc, keep: impl Fn(usize) -> bool) -> Known {
    Known(
        doc.changes_since(&[])
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, c)| {
                let parsed = Change::from_bytes(c.raw_bytes().to_vec()).expect("parses");
                (parsed.hash(), parsed)
            })
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

fn raw(changes: Vec<Change>) -> Vec<Vec<u8>> {
    changes.iter().map(|c| c.raw_bytes().to_vec()).collect()
}

fn check(doc: &RoomDoc, older: &[Vec<ChangeHash>]) {
    // Some `have`s name a change the document does not hold, or one in the
    // middle of its history rather than heads.
    let history = doc.changes_since(&[]);
    let mut older = older.to_vec();
    for have in older.clone() {
        let mut foreign = have.clone();
        foreign.push(ChangeHash([7; 32]));
        older.push(foreign);
    }
    older.push(vec![history[history.len() / 2].hash()]);
    older.push(vec![history[history.len() - 3].hash(), ChangeHash([9; 32])]);
    let sets: Vec<(&str, Known)> = vec![
        ("every change", known(doc, |_| true)),
        ("every other", known(doc, |i| i % 2 == 0)),
        ("all but every 7th", known(doc, |i| i % 7 != 0)),
        ("the last 3", known(doc, |i| i + 3 >= history.len())),
        ("none", known(doc, |_| false)),
    ];
    for (what, known) in &sets {
        assert_eq!(
            doc.walk_back_known(10_000, |_| false, known),
            doc.walk_back(10_000, |_| false),
            "a whole walk, {what} known"
        );
        let stop = |h: &ChangeHash| h.0[0] % 5 == 0;
        assert_eq!(
            doc.walk_back_known(40, stop, known),
            doc.walk_back(40, stop),
            "a walk that stops, {what} known"
        );
        for have in &older {
            assert_eq!(
                raw(doc.changes_since_known(have, known)),
                raw(doc.changes_since(have)),
                "changes since {have:?}, {what} known: the same, in the same order"
            );
        }
    }
}

/// `doc` as a replica reads it back from its stored bytes.
fn reloaded(doc: &RoomDoc) -> RoomDoc {
    RoomDoc::load(
        doc.id().clone(),
        doc.actor().clone(),
        Some(&doc.save()),
        &[],
    )
    .expect("loads")
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
    check(&reloaded(&pair.docs[0]), &older);

    pair.sync(0, 1);
    pair.sync(1, 0);
    pair.compact();
    churn(&mut pair, 100, 12);
    let since_base = vec![pair.docs[0].heads()];
    churn(&mut pair, 120, 9);
    check(&pair.docs[0], &since_base);
    check(&pair.docs[1], &since_base);
    check(&reloaded(&pair.docs[1]), &since_base);
}
