//! A hot room keeps its live sessions in memory and reads the departed ones
//! from its document when asked: the reading, the events of a change and a
//! resume are the same as if every session were held.

mod common;

use chorus_engine::*;
use common::docs::{join, leave, write_at, Pair};
use common::*;

#[test]
fn a_hot_room_holds_its_live_sessions_and_reads_the_departed_ones() {
    let mut pair = Pair::new();
    for i in 0..40 {
        pair.write(0, join(&format!("s{i}")));
    }
    for i in 1..40 {
        pair.write(0, leave(&format!("s{i}")));
    }
    pair.sync(0, 1);
    let left_at_20 = {
        let snap = pair.docs[0].snapshot().expect("reads");
        snap.sessions[&session("s20")].left_at_ms.expect("left")
    };
    for doc in &mut pair.docs {
        // Written here or applied from a peer, the cache holds s0 alone.
        assert_eq!(doc.warm_sessions(), Some(1));
        let whole = doc.snapshot().expect("reads");
        assert_eq!(whole.sessions.len(), 40);
        assert_eq!(whole.live_sessions().count(), 1);
        // Pruned at a bound: s1..=s20 left at or before it.
        let pruned = doc.reading(Some(left_at_20)).expect("reads");
        let kept: Vec<String> = pruned.sessions.keys().map(|s| s.to_string()).collect();
        let expected: Vec<String> = std::iter::once("s0".to_string())
            .chain((21..40).map(|i| format!("s{i}")))
            .collect();
        let mut expected = expected;
        expected.sort();
        assert_eq!(kept, expected);
        // A resume tells a departed session from an unknown one.
        let one = doc
            .reading_of(&session("s7"))
            .expect("reads")
            .expect("room")
            .room;
        assert_eq!(one.sessions[&session("s7")].state, SessionState::Left);
        let none = doc
            .reading_of(&session("nobody"))
            .expect("reads")
            .expect("room");
        assert!(none.room.sessions.is_empty() && !none.pruned);
    }
    let [a, b] = &mut pair.docs;
    assert_eq!(a.snapshot().expect("a"), b.snapshot().expect("b"));
}

#[test]
fn a_late_change_to_a_departed_session_gives_the_events_of_the_whole_reading() {
    let mut pair = Pair::new();
    pair.write(0, join("s"));
    pair.sync(0, 1);
    // Concurrently: replica 0 sees the session leave, replica 1 publishes
    // a track on it.
    pair.write(0, leave("s"));
    pair.write(
        1,
        RoomOp::Publish {
            session: session("s"),
            track_id: track("mic"),
            track: Track {
                kind: TrackKind::Audio,
                simulcast_layers: 1,
            },
        },
    );
    // On replica 0 the session has left: the publish touches a session
    // its cache no longer holds.
    let (part, whole) = pair.sync(1, 0);
    assert_eq!(part, whole);
    assert!(
        !part.iter().any(|k| matches!(k, ChangeKind::Joined { .. })),
        "{part:?}"
    );
    // On replica 1 the leave arrives for a live session.
    let (part, whole) = pair.sync(0, 1);
    assert_eq!(part, whole);
    assert!(
        part.iter().any(|k| matches!(k, ChangeKind::Left { .. })),
        "{part:?}"
    );
    for doc in &mut pair.docs {
        assert_eq!(doc.warm_sessions(), Some(0));
    }
    let [a, b] = &mut pair.docs;
    assert_eq!(a.snapshot().expect("a"), b.snapshot().expect("b"));
}

/// A session a compaction pruned is refused as the left session it was: a
/// write naming it, a join reusing its id and a resume alike, on every
/// later generation; an id that never joined stays unknown.
#[test]
fn a_pruned_session_is_refused_as_left_across_compactions() {
    let mut pair = Pair::new();
    for s in ["gone", "later", "stays"] {
        pair.write(0, join(s));
    }
    pair.write(0, leave("gone"));
    pair.sync(0, 1);
    for generation in 1..=2u64 {
        if generation == 2 {
            pair.write(0, leave("later"));
        }
        pair.compact();
        let pruned: &[&str] = if generation == 1 {
            &["gone"]
        } else {
            &["gone", "later"]
        };
        for doc in &mut pair.docs {
            assert_eq!(doc.generation(), generation);
            let whole = doc.snapshot().expect("reads");
            assert_eq!(
                whole.sessions.len(),
                3 - pruned.len(),
                "generation {generation}"
            );
            for s in pruned {
                assert!(!whole.sessions.contains_key(&session(s)), "{s} is pruned");
                let reading = doc.reading_of(&session(s)).expect("reads").expect("room");
                assert!(reading.pruned, "{s} is remembered");
                let refused =
                    chorus_engine::resume::resume(&pair.room, Some(&reading), &session(s), "token");
                assert!(
                    matches!(&refused, Err(Error::ResumeRefused { reason, .. }) if reason.contains("has left")),
                    "{refused:?}"
                );
            }
            let unknown = doc
                .reading_of(&session("nobody"))
                .expect("reads")
                .expect("room");
            assert!(!unknown.pruned);
        }
        for s in pruned {
            let (room, at) = (pair.room.clone(), pair.now_ms() + 1);
            let doc = &mut pair.docs[1];
            let write = write_at(&room, doc, 0, at, &leave(s));
            assert!(matches!(write, Err(Error::SessionLeft { .. })), "{write:?}");
            let rejoin = write_at(&room, doc, 0, at, &join(s));
            assert!(
                matches!(rejoin, Err(Error::DuplicateSession { .. })),
                "{rejoin:?}"
            );
            let unknown = write_at(&room, doc, 0, at, &leave("nobody"));
            assert!(
                matches!(unknown, Err(Error::UnknownSession { .. })),
                "{unknown:?}"
            );
        }
    }
}

/// A change that creates a session under a pruned id (a foreign writer's,
/// which no local check stopped) is refused, from a peer or an import.
#[test]
fn a_foreign_change_reusing_a_pruned_id_is_refused() {
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ReadDoc, ROOT};
    use chorus_engine::room::Intake;

    let mut pair = Pair::new();
    pair.write(0, join("gone"));
    pair.write(0, leave("gone"));
    pair.sync(0, 1);
    pair.compact();
    let mut foreign = automerge::Automerge::load(&pair.docs[0].save())
        .expect("loads")
        .with_actor(automerge::ActorId::from(vec![7u8; 16]));
    let mut tx = foreign.transaction();
    let sessions = match tx.get(ROOT, "sessions") {
        Ok(Some((automerge::Value::Object(ObjType::Map), id))) => id,
        other => panic!("{other:?}"),
    };
    tx.put_object(&sessions, "gone", ObjType::Map)
        .expect("writes");
    tx.commit();
    let changes = foreign.get_changes(&pair.docs[0].heads());
    let heads = pair.docs[1].heads();
    for intake in [Intake::Whole, Intake::EachChange] {
        let applied = pair.docs[1].apply_remote(changes.clone(), intake);
        let refused = applied.map(|a| a.refused);
        assert!(
            matches!(&refused, Ok(r) if r.len() == 1 && r[0].1.path == "sessions/gone"),
            "{intake:?}: {refused:?}"
        );
    }
    assert_eq!(pair.docs[1].heads(), heads, "nothing of it applied");
}
