//! `settle` never writes a delete where the winner must stay: automerge
//! resolves a put of the value it shows among several into a delete of
//! the others.

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ObjType, ReadDoc, ROOT};

use super::settle;
use crate::hlc::Timestamp;
use crate::model::SessionState;
use crate::room::read;
use crate::room::schema as s;

fn state(wall_ms: u64, actor: u64, state: SessionState) -> String {
    let stamp = Timestamp {
        wall_ms,
        logical: 0,
        actor,
    };
    s::encode_stamped(stamp, &state)
}

/// A session whose state holds two values side by side, `first` written
/// by the lower actor and `second` by the higher (automerge shows it).
fn side_by_side(first: &str, second: &str) -> (Automerge, automerge::ObjId) {
    let mut a = Automerge::new();
    a.set_actor(ActorId::from(vec![1; 16]));
    let mut tx = a.transaction();
    let sessions = tx.put_object(ROOT, s::SESSIONS, ObjType::Map).expect("map");
    let session = tx.put_object(&sessions, "s", ObjType::Map).expect("map");
    tx.commit();
    let mut b = a.fork().with_actor(ActorId::from(vec![2; 16]));
    let mut tx = a.transaction();
    tx.put(&session, s::STATE, first).expect("put");
    tx.commit();
    let mut tx = b.transaction();
    tx.put(&session, s::STATE, second).expect("put");
    tx.commit();
    a.merge(&mut b).expect("merges");
    let shown = a.get(&session, s::STATE).expect("reads").expect("a value");
    assert_eq!(shown.0.as_str(), Some(second), "the higher actor's shows");
    (a, session)
}

/// Settles the state on `doc`; returns the reading and the change's ops.
fn settle_state(
    doc: &mut Automerge,
    session: &automerge::ObjId,
    candidates: &[String],
) -> (Vec<String>, Vec<automerge::legacy::Op>) {
    let current = read::all_strings(doc, session, s::STATE);
    let at = [s::SESSIONS.to_owned(), "s".to_owned()];
    let heads = doc.get_heads();
    doc.transact_with(
        |_| CommitOptions::default(),
        |tx| settle(tx, session, &at, s::STATE, &current, candidates),
    )
    .expect("settles");
    let ops = doc
        .get_changes(&heads)
        .iter()
        .flat_map(|c| automerge::ExpandedChange::from(c).operations)
        .collect();
    (read::all_strings(doc, session, s::STATE), ops)
}

fn no_delete(ops: &[automerge::legacy::Op]) -> bool {
    ops.iter()
        .all(|op| !matches!(op.action, automerge::legacy::OpType::Delete))
}

#[test]
fn the_winner_shown_beside_another_settles_without_a_delete() {
    let older = state(1, 1, SessionState::Connecting);
    let newer = state(2, 2, SessionState::Active);
    let (mut doc, session) = side_by_side(&older, &newer);
    let (now, ops) = settle_state(&mut doc, &session, &[older, newer.clone()]);
    assert!(no_delete(&ops), "{ops:?}");
    assert_eq!(now, [newer]);
}

/// The winner is not the value automerge shows: one put, as before.
#[test]
fn a_winner_automerge_does_not_show_is_one_put() {
    let newer = state(2, 1, SessionState::Active);
    let older = state(1, 2, SessionState::Connecting);
    let (mut doc, session) = side_by_side(&newer, &older);
    let (now, ops) = settle_state(&mut doc, &session, &[older, newer.clone()]);
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert!(no_delete(&ops), "{ops:?}");
    assert_eq!(now, [newer]);
}

/// One value that is the winner already: nothing to write.
#[test]
fn a_key_that_holds_the_winner_alone_is_left_alone() {
    let older = state(1, 1, SessionState::Connecting);
    let newer = state(2, 2, SessionState::Active);
    let (mut doc, session) = side_by_side(&older, &newer);
    settle_state(&mut doc, &session, &[older.clone(), newer.clone()]);
    let (now, ops) = settle_state(&mut doc, &session, &[older, newer.clone()]);
    assert!(ops.is_empty(), "{ops:?}");
    assert_eq!(now, [newer]);
}

#[test]
fn the_value_automerge_shows_wins_without_a_delete() {
    // The lower actor's value reads first by its stamp, but the writer had
    // seen it: the winner among the candidates is the one automerge shows.
    let seen = state(5, 1, SessionState::Reconnecting);
    let shown = state(3, 2, SessionState::Active);
    let (mut doc, session) = side_by_side(&seen, &shown);
    let older = state(2, 3, SessionState::Connecting);
    let (now, ops) = settle_state(&mut doc, &session, &[shown.clone(), older]);
    assert!(no_delete(&ops), "{ops:?}");
    assert_eq!(now, [shown]);
}
