//! Hostile or unreadable automerge bytes never cost an acknowledged write:
//! changes that break a room's schema are refused before they apply (from
//! an import or from a peer), a refused write leaves the room as storage
//! holds it, and decompression is bounded.

mod common;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjType, ReadDoc, ScalarValue, ROOT};
use chorus_engine::*;
use common::*;

/// A room on sled with one acknowledged join, and the engine's directory.
fn sled_room() -> (tempfile::TempDir, Engine, RoomId) {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::open(dir.path(), EngineConfig::new(node("a"))).expect("open");
    let id = room("room-1");
    engine
        .create_room(&id, &tenant("acme"), RoomConfig::default())
        .expect("create");
    engine
        .join(&id, join_request("s1", "alice", "sfu-1"))
        .expect("join is acknowledged");
    (dir, engine, id)
}

/// The room's export, opened by another writer (a client in another
/// language, or a peer of another version).
fn foreign_copy(engine: &Engine, id: &RoomId) -> AutoCommit {
    let bytes = engine.export_room(id).expect("export");
    let mut doc = AutoCommit::load(&bytes).expect("standard automerge");
    doc.set_actor(ActorId::from(b"foreign-writer-1".as_slice()));
    doc
}

fn obj(doc: &AutoCommit, parent: &automerge::ObjId, key: &str) -> automerge::ObjId {
    match doc.get(parent, key).expect("get") {
        Some((automerge::Value::Object(_), id)) => id,
        other => panic!("{key} is not an object: {other:?}"),
    }
}

/// The reproduction from the field: delete a session, replace `config`
/// with a new map, set `schema` to 99 — in one change.
fn destructive_change(doc: &mut AutoCommit) {
    let sessions = obj(doc, &ROOT, "sessions");
    doc.delete(&sessions, "s1").expect("delete");
    doc.put_object(ROOT, "config", ObjType::Map)
        .expect("replace");
    doc.put(ROOT, "schema", ScalarValue::Uint(99))
        .expect("schema");
}

fn assert_join_survives(engine: &Engine, id: &RoomId) {
    let snap = engine.room(id).expect("readable").expect("exists");
    assert!(
        snap.sessions.contains_key(&session("s1")),
        "the acknowledged join is gone: {snap:?}"
    );
    assert_eq!(snap.schema_version, SCHEMA_VERSION);
}

#[test]
fn a_destructive_import_is_refused_and_the_join_survives_a_restart() {
    let (dir, engine, id) = sled_room();
    let mut doc = foreign_copy(&engine, &id);
    destructive_change(&mut doc);
    let err = engine.import_room(&doc.save()).expect_err("refused");
    let Error::Refused { path, reason, .. } = &err else {
        panic!("expected a refusal naming the path, got {err}");
    };
    assert!(!path.is_empty() && !reason.is_empty(), "{err}");
    assert_join_survives(&engine, &id);
    // A later write still works and is durable.
    engine
        .join(&id, join_request("s2", "bob", "sfu-1"))
        .expect("a later join");
    drop(engine);
    let engine = Engine::open(dir.path(), EngineConfig::new(node("a"))).expect("reopen");
    assert_join_survives(&engine, &id);
    let snap = engine.room(&id).expect("read").expect("exists");
    assert!(snap.sessions.contains_key(&session("s2")));
}

#[test]
fn a_destructive_peer_change_is_refused_and_counted() {
    let (dir, engine, id) = sled_room();
    let mut doc = foreign_copy(&engine, &id);
    destructive_change(&mut doc);
    let change = doc
        .get_last_local_change()
        .expect("a change")
        .raw_bytes()
        .to_vec();
    let outcome = engine
        .apply_remote(&id, vec![change.clone()])
        .expect("not an error");
    assert_eq!((outcome.applied, outcome.refused), (0, 1), "{outcome:?}");
    // Sent again: refused again, still nothing applied.
    let outcome = engine
        .apply_remote(&id, vec![change])
        .expect("not an error");
    assert_eq!((outcome.applied, outcome.refused), (0, 1), "{outcome:?}");
    assert_join_survives(&engine, &id);
    engine
        .join(&id, join_request("s2", "bob", "sfu-1"))
        .expect("a later join");
    drop(engine);
    let engine = Engine::open(dir.path(), EngineConfig::new(node("a"))).expect("reopen");
    assert_join_survives(&engine, &id);
}

#[test]
fn a_change_built_on_a_refused_one_is_refused_too() {
    let r = replica("a", 1_000);
    let id = room("room-1");
    r.engine
        .create_room(&id, &tenant("acme"), RoomConfig::default())
        .expect("create");
    let mut doc = foreign_copy(&r.engine, &id);
    doc.put(ROOT, "schema", ScalarValue::Uint(2)).expect("bump");
    let bad = doc
        .get_last_local_change()
        .expect("bad")
        .raw_bytes()
        .to_vec();
    let config = obj(&doc, &ROOT, "config");
    doc.put(&config, "recording", "x").expect("put");
    let child = doc
        .get_last_local_change()
        .expect("child")
        .raw_bytes()
        .to_vec();
    let outcome = r.engine.apply_remote(&id, vec![bad, child]).expect("apply");
    assert_eq!((outcome.applied, outcome.refused), (0, 2), "{outcome:?}");
}

#[test]
fn text_objects_where_the_schema_has_strings_are_refused() {
    let (_dir, engine, id) = sled_room();
    let mut doc = foreign_copy(&engine, &id);
    // What JavaScript automerge 3 writes for a plain string: a text object.
    let sessions = obj(&doc, &ROOT, "sessions");
    let s2 = doc.put_object(&sessions, "s2", ObjType::Map).expect("map");
    let user = doc.put_object(&s2, "user", ObjType::Text).expect("text");
    doc.splice_text(&user, 0, 0, "bob").expect("splice");
    let err = engine.import_room(&doc.save()).expect_err("refused");
    match &err {
        Error::Refused { path, reason, .. } => {
            assert_eq!(path, "sessions/s2/user", "{err}");
            assert!(reason.contains("ImmutableString"), "{err}");
        }
        other => panic!("expected a refusal, got {other}"),
    }
    let snap = engine.room(&id).expect("read").expect("exists");
    assert_eq!(snap.counters.joins, 1);
    assert!(!snap.sessions.contains_key(&session("s2")));
}

#[test]
fn a_join_written_the_documented_way_is_accepted() {
    let (_dir, engine, id) = sled_room();
    let mut doc = foreign_copy(&engine, &id);
    let sessions = obj(&doc, &ROOT, "sessions");
    let s2 = doc.put_object(&sessions, "s2", ObjType::Map).expect("map");
    doc.put(&s2, "user", "bob").expect("user");
    doc.put(&s2, "role", "speaker").expect("role");
    doc.put(&s2, "region", "eu-west").expect("region");
    doc.put(&s2, "joined_at", ScalarValue::Uint(5_000))
        .expect("joined");
    doc.put(&s2, "owner", "1:sfu-2").expect("owner");
    let stamp = "0000000000001388-00000000-0000000000000001";
    doc.put(&s2, "state", format!("{stamp}|\"connecting\""))
        .expect("state");
    doc.put_object(&s2, "tracks", ObjType::Map).expect("tracks");
    let counters = obj(&doc, &ROOT, "counters");
    doc.increment(&counters, "joins", 1).expect("count");
    let ack = engine.import_room_as(&id, &doc.save()).expect("accepted");
    assert_eq!(ack.room, id);
    let snap = engine.room(&id).expect("read").expect("exists");
    let s2 = snap
        .sessions
        .get(&session("s2"))
        .expect("the join is visible");
    assert_eq!(s2.owner.node, node("sfu-2"));
    assert_eq!(snap.counters.joins, 2);
}

#[test]
fn another_rooms_document_is_refused_under_this_rooms_name() {
    let (_dir, engine, b) = sled_room();
    let a = room("room-a");
    let other = replica("x", 2_000);
    other
        .engine
        .create_room(&a, &tenant("evil"), RoomConfig::default())
        .expect("create a");
    let bytes = other.engine.export_room(&a).expect("export a");
    let err = engine.import_room_as(&b, &bytes).expect_err("not room B");
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "room_id",
                ..
            }
        ),
        "{err}"
    );
    let snap = engine.room(&b).expect("read").expect("exists");
    assert_eq!(snap.tenant, Some(tenant("acme")));
    assert_join_survives(&engine, &b);
    // Under a new name it creates nothing.
    let c = room("room-c");
    assert!(engine.import_room_as(&c, &bytes).is_err());
    assert!(engine.room(&c).expect("read").is_none());
    // A's genesis pushed into B by a peer is refused as well.
    let genesis = other.engine.changes_since(&a, &[]).expect("changes");
    let outcome = engine.apply_remote(&b, genesis).expect("apply");
    assert_eq!(outcome.applied, 0, "{outcome:?}");
    assert_join_survives(&engine, &b);
}

#[test]
fn epochs_past_the_limit_are_refused() {
    let (_dir, engine, id) = sled_room();
    let err = engine
        .set_owner(&id, &session("s1"), &node("sfu-2"), u64::MAX)
        .expect_err("u64::MAX would pin the call forever");
    assert!(
        matches!(err, Error::Invalid { field: "epoch", .. }),
        "{err}"
    );
    engine
        .set_owner(&id, &session("s1"), &node("sfu-2"), 2)
        .expect("a normal move still works");
    // The same epoch written by a foreign writer is refused on the way in.
    let mut doc = foreign_copy(&engine, &id);
    let sessions = obj(&doc, &ROOT, "sessions");
    let s1 = obj(&doc, &sessions, "s1");
    doc.put(&s1, "owner", format!("{}:sfu-9", u64::MAX))
        .expect("put");
    let err = engine.import_room(&doc.save()).expect_err("refused");
    assert!(matches!(err, Error::Refused { .. }), "{err}");
}

#[test]
fn a_create_refused_half_way_leaves_no_room_behind() {
    let r = replica("a", 1_000);
    let id = room("room-1");
    let bad = RoomConfig {
        max_participants: 0,
        ..RoomConfig::default()
    };
    r.engine
        .create_room(&id, &tenant("acme"), bad)
        .expect_err("max_participants 0 is invalid");
    assert!(r.engine.room(&id).expect("read").is_none());
    r.engine
        .create_room(&id, &tenant("acme"), RoomConfig::default())
        .expect("the room was never created, so this creates it");
}

/// Rebuilds `change` with edits to its header (a forger's tool).
fn forge(change: &automerge::Change, edit: impl FnOnce(&mut automerge::ExpandedChange)) -> Vec<u8> {
    let mut expanded = change.decode();
    edit(&mut expanded);
    let mut forged = automerge::Change::from(expanded);
    forged.bytes().to_vec()
}

/// A's next change to the room, as B (synced before it) would receive it.
fn next_change(a: &Engine, b: &Engine, id: &RoomId) -> (Vec<Vec<u8>>, automerge::Change) {
    sync_room(a, b, id);
    let base = b.heads(id).expect("heads");
    a.set_state(id, &session("s1"), SessionState::Active)
        .expect("state");
    let raw = a.changes_since(id, &base).expect("changes");
    let change = automerge::Change::from_bytes(raw[0].clone()).expect("change");
    (raw, change)
}

#[test]
fn op_counters_past_automerges_limit_are_refused() {
    let (_dir, a, id) = sled_room();
    let dir = tempfile::tempdir().expect("dir");
    let b = Engine::open(dir.path(), EngineConfig::new(node("b"))).expect("open");
    let (_, change) = next_change(&a, &b, &id);
    let forged = forge(&change, |c| {
        c.actor_id = ActorId::from(b"eeeeeeeeeeeeeeee".as_slice());
        c.seq = 1;
        c.start_op = std::num::NonZeroU64::new(u64::from(u32::MAX)).expect("non-zero");
    });
    let outcome = b.apply_remote(&id, vec![forged]).expect("not an error");
    assert_eq!((outcome.applied, outcome.refused), (0, 1), "{outcome:?}");
    // Local writes go on (they used to start past 32 bits and panic).
    b.join(&id, join_request("s2", "bob", "sfu-1"))
        .expect("a later join");
}

#[test]
fn orphans_filling_the_buffer_do_not_hold_back_ready_changes() {
    let (_dir, a, id) = sled_room();
    let b = replica("b", 1_000_000);
    let (honest, w) = next_change(&a, &b.engine, &id);
    let orphans: Vec<Vec<u8>> = (0..1_100u32)
        .map(|i| {
            forge(&w, |c| {
                c.actor_id = ActorId::from(format!("orphan-{i:08}").as_bytes());
                let mut fake = [0u8; 32];
                fake[..4].copy_from_slice(&i.to_be_bytes());
                c.deps = vec![automerge::ChangeHash(fake)];
            })
        })
        .collect();
    for chunk in orphans.chunks(100) {
        b.engine.apply_remote(&id, chunk.to_vec()).expect("orphans");
    }
    let outcome = b.engine.apply_remote(&id, honest).expect("honest");
    assert_eq!(outcome.applied, 1, "{outcome:?}");
}

#[test]
fn an_api_client_cannot_jump_a_call_to_the_last_epoch() {
    let (_dir, engine, id) = sled_room();
    let err = engine
        .set_owner(&id, &session("s1"), &node("ghost"), limits::EPOCH_MAX)
        .expect_err("a jump to EPOCH_MAX would pin the call");
    assert!(
        matches!(err, Error::Invalid { field: "epoch", .. }),
        "{err}"
    );
    engine
        .set_owner(
            &id,
            &session("s1"),
            &node("sfu-2"),
            1 + limits::EPOCH_STEP_MAX,
        )
        .expect("within the step");
}
