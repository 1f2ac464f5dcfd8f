//! A document exported before a compaction and written on afterwards (a
//! client in another language that held the room) is carried onto the
//! compacted room when imported (`RoomDoc::carried_import`): its writes
//! arrive, nothing the room holds is duplicated, and every replica carries
//! it to the same changes. One exported before the cut has its reading
//! merged (`room::old_import`). One that cannot be taken is refused with
//! what to do instead.

mod common;

use automerge::ActorId;
use chorus_engine::room::{Intake, RoomDoc};
use chorus_engine::*;
use common::docs::{join, leave, write_at, Pair};
use common::*;

/// A client's copy of replica 1's room, with its own actor.
fn client_copy(pair: &Pair) -> RoomDoc {
    RoomDoc::load(
        pair.room.clone(),
        ActorId::from(vec![9u8; 16]),
        Some(&pair.docs[1].save()),
        &[],
    )
    .expect("the export loads")
}

/// The client writes `op` on its copy, its clock past every replica's.
fn client_writes(pair: &mut Pair, client: &mut RoomDoc, op: RoomOp) {
    pair.step += 1;
    write_at(&pair.room, client, 9, pair.now_ms(), &op).expect("the client writes");
}

#[test]
fn an_export_from_before_a_compaction_is_carried_onto_it() {
    let mut pair = Pair::new();
    for s in ["a", "b", "gone"] {
        pair.write(0, join(s));
    }
    pair.write(0, leave("gone"));
    pair.sync(0, 1);
    // The request is written and reaches replica 1, then a write after it
    // (part of the tail both replicas carry); a client exports the room
    // there and writes on its copy while the replicas compact.
    pair.step += 1;
    let now_ms = pair.now_ms();
    let cut = request_compaction(&mut pair, now_ms);
    pair.write(0, join("tail"));
    pair.sync(0, 1);
    let mut client = client_copy(&pair);
    client_writes(&mut pair, &mut client, join("c"));
    client_writes(&mut pair, &mut client, leave("a"));
    // Meanwhile replica 0 writes, then compacts; replica 1 follows.
    pair.write(0, join("d"));
    pair.docs[0].compact_at(cut).expect("compacts");
    pair.sync(0, 1);
    assert_eq!(pair.docs[1].generation(), 1);

    // A third replica holds the compacted room and takes the client's
    // document through the import path (fork, carry, merge, install).
    let engine = replica("x", 0).engine;
    engine
        .import_room_as(&pair.room, &pair.docs[0].save())
        .expect("the compacted room imports");
    engine
        .import_room_as(&pair.room, &client.save())
        .expect("the old document is carried, not refused");
    let read = engine.room(&pair.room).expect("reads").expect("the room");
    assert!(
        read.sessions.contains_key(&session("c")),
        "the client's join arrived"
    );
    assert_eq!(read.sessions[&session("a")].state, SessionState::Left);
    for kept in ["b", "tail", "d"] {
        assert!(read.sessions.contains_key(&session(kept)), "{kept} stays");
    }
    assert!(
        !read.sessions.contains_key(&session("gone")),
        "nothing is resurrected"
    );
    assert_eq!(
        read.counters.joins, 6,
        "a, b, gone, tail, d and c, each once: the tail both sides carried is not counted twice"
    );
    assert_eq!(read.counters.leaves, 2);

    // The replicas that compacted carry it to the very same changes.
    let imported = client.changes_since(&[]);
    for doc in &mut pair.docs {
        let carried = doc.carried_import(imported.clone()).expect("carried");
        let outcome = doc.apply_remote(carried, Intake::Whole).expect("applies");
        assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
        let mut theirs = doc.heads();
        let mut mine: Vec<_> = engine
            .heads(&pair.room)
            .expect("heads")
            .iter()
            .map(|h| h.to_string())
            .collect();
        theirs.sort();
        mine.sort();
        let theirs: Vec<String> = theirs.iter().map(|h| h.to_string()).collect();
        assert_eq!(theirs, mine);
    }
}

fn permit(u: &str) -> RoomOp {
    RoomOp::SetPermission {
        user: user(u),
        permission: Permission {
            role: Role::Speaker,
            publish: true,
            subscribe: true,
        },
    }
}

fn forbid(u: &str) -> RoomOp {
    RoomOp::RemovePermission { user: user(u) }
}

/// Replica 0 writes a request for the next generation, pruning what left
/// at or before `prune_before_ms`; returns the cut.
fn request_compaction(pair: &mut Pair, prune_before_ms: u64) -> automerge::ChangeHash {
    let request = chorus_engine::room::compact::Request {
        generation: pair.docs[0].generation() + 1,
        prune_before_ms,
    };
    pair.write(0, RoomOp::RequestCompaction { request });
    *pair.docs[0].heads().first().expect("a head")
}

/// Replica 0 requests a compaction pruning what left at or before
/// `horizon_ms`, and both replicas compact at it.
fn compact_with_horizon(pair: &mut Pair, horizon_ms: u64) {
    pair.step += 1;
    let cut = request_compaction(pair, horizon_ms);
    pair.sync(0, 1);
    pair.docs[0].compact_at(cut).expect("compacts");
    pair.sync(0, 1);
}

/// A client exported the room before the request was written and wrote
/// on its copy; the room then compacted twice. Its document lacks the cut,
/// so its reading is merged: what it wrote after the room's horizon
/// arrives, and nothing the room forgot (a pruned session, a removal)
/// comes back, whichever side wrote last.
#[test]
fn an_export_from_before_the_cut_is_merged_by_its_reading() {
    let mut pair = Pair::new();
    for s in ["a", "b", "gone", "late"] {
        pair.write(0, join(s));
    }
    for u in ["old", "kept", "raced"] {
        pair.write(0, permit(u));
    }
    pair.sync(0, 1);
    let mut client = client_copy(&pair);
    // The room forgets these: a leave and a removal before the horizon.
    pair.write(0, leave("gone"));
    pair.write(0, forbid("old"));
    let horizon_ms = pair.now_ms();
    // After the horizon: the room removes a permission and a session
    // leaves; the client writes on its copy meanwhile.
    pair.write(1, forbid("kept"));
    pair.write(1, leave("late"));
    client_writes(&mut pair, &mut client, join("c"));
    client_writes(&mut pair, &mut client, join("c2"));
    client_writes(&mut pair, &mut client, leave("a"));
    client_writes(&mut pair, &mut client, permit("new"));
    // The client grants again after the horizon; the room removes later.
    client_writes(&mut pair, &mut client, permit("raced"));
    pair.write(1, forbid("raced"));
    pair.sync(1, 0);
    compact_with_horizon(&mut pair, horizon_ms);
    pair.write(0, join("d"));
    pair.sync(0, 1);
    compact_with_horizon(&mut pair, horizon_ms);
    assert_eq!(pair.docs[0].generation(), 2);

    let engine = replica("x", 0).engine;
    engine
        .import_room_as(&pair.room, &pair.docs[0].save())
        .expect("the compacted room imports");
    let before = engine.room(&pair.room).expect("reads").expect("the room");
    engine
        .import_room_as(&pair.room, &client.save())
        .expect("the old document is merged, not refused");
    let read = engine.room(&pair.room).expect("reads").expect("the room");
    for (c, message) in [
        ("c", "the client's join arrived"),
        ("c2", "and its second"),
        ("b", "b stays"),
        ("d", "d stays"),
    ] {
        assert!(read.sessions.contains_key(&session(c)), "{message}");
    }
    assert_eq!(read.sessions[&session("a")].state, SessionState::Left);
    assert!(
        !read.sessions.contains_key(&session("gone")),
        "nothing is resurrected"
    );
    for (u, held, message) in [
        ("new", true, "the client's permission arrived"),
        ("old", false, "a forgotten removal holds"),
        ("kept", false, "a newer removal wins"),
        (
            "raced",
            false,
            "a removal after the horizon is remembered through compactions, and wins",
        ),
    ] {
        assert_eq!(read.permissions.contains_key(&user(u)), held, "{message}");
    }
    assert_eq!(
        read.sessions.get(&session("late")).map(|s| s.state),
        Some(SessionState::Left),
        "a leave the client had not seen still wins"
    );
    assert_eq!(
        read.counters.joins,
        before.counters.joins + 2,
        "c and c2 joined"
    );
    assert_eq!(read.counters.leaves, before.counters.leaves + 1, "a left");

    // Importing it again finds nothing left to say.
    let heads = engine.heads(&pair.room).expect("heads");
    engine
        .import_room_as(&pair.room, &client.save())
        .expect("imports again");
    assert_eq!(engine.heads(&pair.room).expect("heads"), heads);

    // A document of the compacted history is taken as it is.
    let mut current = client_copy(&pair);
    client_writes(&mut pair, &mut current, join("e"));
    let changes = current.changes_since(&[]);
    let taken = pair.docs[0].carried_import(changes.clone()).expect("taken");
    assert_eq!(taken.len(), changes.len());
}

/// A removal written as a plain automerge delete (while some peer did not
/// read stamped removals) leaves no stamp: after one, an old document's
/// value at a key the room lacks is not taken, however new.
#[test]
fn after_a_plain_delete_an_old_value_does_not_come_back() {
    let mut pair = Pair::new();
    pair.write(0, join("a"));
    let horizon_ms = pair.now_ms();
    pair.write(0, permit("p"));
    pair.sync(0, 1);
    let client = client_copy(&pair);
    compact_with_horizon(&mut pair, horizon_ms);
    pair.step += 1;
    let ctx = chorus_engine::room::WriteCtx {
        room: &pair.room,
        stamp: chorus_engine::hlc::Timestamp {
            wall_ms: pair.now_ms(),
            logical: 0,
            actor: 0,
        },
        now_ms: pair.now_ms(),
        stamped_removals: false,
    };
    pair.docs[0]
        .apply_local(&ctx, &forbid("p"))
        .expect("removes");
    let merged = pair.docs[0]
        .carried_import(client.changes_since(&[]))
        .expect("merged");
    let outcome = pair.docs[0]
        .apply_remote(merged, Intake::Whole)
        .expect("applies");
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    let read = pair.docs[0].snapshot().expect("reads");
    assert!(
        !read.permissions.contains_key(&user("p")),
        "the removal holds"
    );
    // The next base cannot say when the plain delete was: its horizon is
    // its request's time, not the older prune horizon asked for.
    compact_with_horizon(&mut pair, horizon_ms);
    assert_eq!(horizon(&pair.docs[0]), Some(pair.now_ms()));
}

/// The first base of format 5 after one of format 4 (which forgot every
/// removal and prune up to its own cut, without saying when) records its
/// request's time as its horizon; the next one keeps the newest horizon.
#[test]
fn a_first_format_5_base_after_an_older_one_starts_at_its_request() {
    let mut pair = Pair::new();
    pair.write(0, join("a"));
    let old_ms = pair.now_ms();
    pair.step += 1;
    let cut = request_compaction(&mut pair, old_ms);
    pair.docs[0].compact_at_format(cut, 4).expect("compacts");
    assert_eq!(horizon(&pair.docs[0]), None);
    pair.sync(0, 1);
    compact_with_horizon(&mut pair, old_ms);
    let request_ms = pair.now_ms();
    assert_eq!(horizon(&pair.docs[0]), Some(request_ms));
    compact_with_horizon(&mut pair, old_ms);
    assert_eq!(
        horizon(&pair.docs[0]),
        Some(request_ms),
        "a horizon never goes back"
    );
}

/// The horizon a room's base records.
fn horizon(doc: &RoomDoc) -> Option<u64> {
    let loaded = automerge::Automerge::load(&doc.save()).expect("loads");
    chorus_engine::room::compact::horizon_of(&loaded)
}

/// A room compacted before format 5 does not record its horizon: an
/// old document without its cut is refused, saying what to do.
#[test]
fn an_export_without_the_cut_on_an_older_base_is_refused_with_what_to_do() {
    let mut pair = Pair::new();
    pair.write(0, join("a"));
    pair.sync(0, 1);
    let mut client = client_copy(&pair);
    client_writes(&mut pair, &mut client, join("c"));
    pair.step += 1;
    let now_ms = pair.now_ms();
    let cut = request_compaction(&mut pair, now_ms);
    pair.docs[0].compact_at_format(cut, 4).expect("compacts");
    let refused = pair.docs[0].carried_import(client.changes_since(&[]));
    match refused {
        Err(Error::Invalid { field, reason }) => {
            assert_eq!(field, "document");
            assert!(reason.contains("export the room again"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// A compacted document whose cut the room does not hold (the room never
/// saw the request) cannot be merged: refused, not acknowledged with its
/// changes left waiting.
#[test]
fn a_base_the_room_cannot_take_is_refused_not_acknowledged() {
    let mut pair = Pair::new();
    pair.write(0, join("a"));
    pair.sync(0, 1);
    let engine = replica("x", 0).engine;
    engine
        .import_room_as(&pair.room, &pair.docs[1].save())
        .expect("the room before any request imports");
    pair.compact();
    let refused = engine.import_room_as(&pair.room, &pair.docs[0].save());
    assert!(
        matches!(
            &refused,
            Err(Error::Invalid {
                field: "document",
                ..
            })
        ),
        "{refused:?}"
    );
}
