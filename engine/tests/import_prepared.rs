//! Imports merged off the replica's task (`Replica::fork_room`,
//! `Fork::prepare`, `Input::ImportPrepared`): swapped in when the room is
//! as it was forked, merged in line when it changed meanwhile; either way
//! nothing is lost and the store holds what the replica acknowledged.

mod common;

use std::sync::Arc;

use chorus_engine::replica::{Event, Input, Output, Replica, ReplicaConfig};
use chorus_engine::storage::{Kv, KvRead, MemKv};
use chorus_engine::*;
use common::lone::run;
use common::*;

fn open(kv: &Arc<MemKv>) -> Replica {
    let config = ReplicaConfig::new(node("b"), 1);
    let mut replica = Replica::new(config, kv.clone(), 0).expect("replica");
    while let Some(output) = replica.poll_output() {
        if let Output::Persist { batch, .. } = output {
            kv.apply(batch).expect("apply");
        }
    }
    replica
}

fn join(replica: &mut Replica, kv: &MemKv, id: &RoomId, name: &str) {
    let op = RoomOp::Join {
        request: join_request(name, "u", "sfu-1"),
    };
    let input = Input::LocalWrite {
        id: 1,
        room: id.clone(),
        op,
    };
    run(replica, kv, input).expect("answered").expect("join");
}

fn sessions(replica: &mut Replica, id: &RoomId) -> Vec<String> {
    let room = replica.room(id).expect("read").expect("exists");
    room.sessions.keys().map(|s| s.to_string()).collect()
}

/// Room `r` exported from another engine, with sessions `names`.
fn export(names: &[&str]) -> Vec<u8> {
    let a = replica("a", 0);
    let id = room("r");
    a.engine
        .create_room(&id, &tenant("t"), RoomConfig::default())
        .expect("create");
    for name in names {
        a.engine
            .join(&id, join_request(name, "u", "sfu-1"))
            .expect("join");
    }
    a.engine.export_room(&id).expect("export")
}

fn prepare(replica: &mut Replica, bytes: &[u8]) -> Input {
    let (id, changes) = room::import::decode(bytes, None).expect("decode");
    let fork = replica.fork_room(&id).expect("fork");
    let prepared = fork.prepare(changes).expect("prepare");
    Input::ImportPrepared {
        id: 2,
        prepared: Box::new(prepared),
    }
}

#[test]
fn a_prepared_import_installs_and_survives_a_restart() {
    let kv = Arc::new(MemKv::new());
    let mut b = open(&kv);
    // Enough sessions that storing the import compacts the room (with the
    // document saved on the fork).
    let names: Vec<String> = (0..60).map(|i| format!("s{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let input = prepare(&mut b, &export(&names));
    run(&mut b, &kv, input).expect("answered").expect("import");
    assert_eq!(b.stats().imports_in_line, 0, "swapped in, not merged again");
    let id = room("r");
    let compacted = kv.get(&storage::keys::snapshot(&id)).expect("read");
    assert!(
        compacted.is_some(),
        "stored as a snapshot saved on the fork"
    );
    assert_eq!(sessions(&mut b, &id), names);
    drop(b);
    let mut b = open(&kv);
    assert_eq!(sessions(&mut b, &id), names, "stored as acknowledged");
}

#[test]
fn a_room_that_changed_since_the_fork_merges_the_import_in_line() {
    let kv = Arc::new(MemKv::new());
    let mut b = open(&kv);
    let input = prepare(&mut b, &export(&["s1"]));
    run(&mut b, &kv, input)
        .expect("answered")
        .expect("first import");
    let id = room("r");
    // Forked here; then the room takes a local join before the install.
    let input = prepare(&mut b, &export(&["s1", "s2"]));
    join(&mut b, &kv, &id, "s3");
    run(&mut b, &kv, input).expect("answered").expect("import");
    assert_eq!(b.stats().imports_in_line, 1);
    assert_eq!(sessions(&mut b, &id), ["s1", "s2", "s3"]);
    drop(b);
    let mut b = open(&kv);
    assert_eq!(sessions(&mut b, &id), ["s1", "s2", "s3"], "nothing lost");
}

/// A fork is tied to the replica instance that made it: after a reopen
/// (a new incarnation, so a new actor) its import merges in line, and the
/// room keeps writing under the new actor.
#[test]
fn an_import_forked_before_a_reopen_merges_in_line_after_it() {
    let kv = Arc::new(MemKv::new());
    let mut b = open(&kv);
    let input = prepare(&mut b, &export(&["s1"]));
    run(&mut b, &kv, input)
        .expect("answered")
        .expect("first import");
    let id = room("r");
    let input = prepare(&mut b, &export(&["s1", "s2"]));
    drop(b);
    let mut b = open(&kv);
    run(&mut b, &kv, input).expect("answered").expect("import");
    assert_eq!(b.stats().imports_in_line, 1);
    join(&mut b, &kv, &id, "s3");
    drop(b);
    let mut b = open(&kv);
    assert_eq!(sessions(&mut b, &id), ["s1", "s2", "s3"]);
}

#[test]
fn a_refused_import_leaves_the_room_as_it_was() {
    use automerge::{transaction::Transactable, AutoCommit, ScalarValue, ROOT};
    let kv = Arc::new(MemKv::new());
    let mut b = open(&kv);
    let base = export(&["s1"]);
    let input = prepare(&mut b, &base);
    run(&mut b, &kv, input).expect("answered").expect("import");
    let id = room("r");
    // A schema bump: refused while preparing, on the fork.
    let mut doc = AutoCommit::load(&base).expect("load");
    doc.put(ROOT, "schema", ScalarValue::Uint(99))
        .expect("bump");
    let (_, changes) = room::import::decode(&doc.save(), Some(&id)).expect("decode");
    let fork = b.fork_room(&id).expect("fork");
    let err = fork.prepare(changes).expect_err("refused");
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    join(&mut b, &kv, &id, "s2");
    assert_eq!(sessions(&mut b, &id), ["s1", "s2"]);
    let schema = b.room(&id).expect("read").expect("exists").schema_version;
    assert_eq!(schema, SCHEMA_VERSION);
}

/// Room `r` exported with session s1 (`first`), and the changes of the
/// joins of `later` written after it, oldest first: the first of them
/// depends only on `first`, each other on the one before.
fn first_then(later: &[&str]) -> (Vec<u8>, Vec<automerge::Change>) {
    let a = replica("a", 0);
    let id = room("r");
    a.engine
        .create_room(&id, &tenant("t"), RoomConfig::default())
        .expect("create");
    a.engine
        .join(&id, join_request("s1", "u", "sfu-1"))
        .expect("join");
    let first = a.engine.export_room(&id).expect("export");
    for name in later {
        a.engine
            .join(&id, join_request(name, "u", "sfu-1"))
            .expect("join");
    }
    let all = a.engine.export_room(&id).expect("export");
    let (_, held) = room::import::decode(&first, None).expect("decode");
    let held: Vec<_> = held.iter().map(|c| c.hash()).collect();
    let (_, all) = room::import::decode(&all, None).expect("decode");
    let mut new: Vec<automerge::Change> = all
        .into_iter()
        .filter(|c| !held.contains(&c.hash()))
        .collect();
    // Oldest first: each depends on the one before.
    let mut ordered = Vec::new();
    let mut have = held;
    while !new.is_empty() {
        let next = new
            .iter()
            .position(|c| c.deps().iter().all(|d| have.contains(d)))
            .expect("a chain");
        let change = new.remove(next);
        have.push(change.hash());
        ordered.push(change);
    }
    (first, ordered)
}

#[test]
fn a_peer_change_waiting_in_the_room_does_not_refuse_an_import() {
    let kv = Arc::new(MemKv::new());
    let mut b = open(&kv);
    let id = room("r");
    let (first, later) = first_then(&["s2", "s3"]);
    let input = prepare(&mut b, &first);
    run(&mut b, &kv, input).expect("answered").expect("import");
    // A peer's change whose dependency b lacks waits in b's room.
    let waiting = apply(&mut b, &kv, &id, &[&later[1]]);
    assert_eq!(waiting, 1, "the orphan waits in the room");
    assert_eq!(sessions(&mut b, &id), ["s1"]);
    // Importing a document b holds all of is not refused for it.
    let input = prepare(&mut b, &first);
    run(&mut b, &kv, input)
        .expect("answered")
        .expect("an import whose changes are all merged");
    assert_eq!(sessions(&mut b, &id), ["s1"]);
}

/// Feeds a peer's changes to `b` (as `Input::Apply`); how many wait in
/// the room after it.
fn apply(b: &mut Replica, kv: &MemKv, id: &RoomId, changes: &[&automerge::Change]) -> usize {
    let apply = Input::Apply {
        id: 3,
        room: id.clone(),
        changes: changes.iter().map(|c| c.raw_bytes().to_vec()).collect(),
    };
    b.handle_input(0, apply);
    let mut waiting = None;
    while let Some(output) = b.poll_output() {
        match output {
            Output::Persist { batch, .. } => kv.apply(batch).expect("apply"),
            Output::Event(Event::Applied { result, .. }) => {
                waiting = Some(result.expect("applied").pending);
            }
            _ => {}
        }
    }
    waiting.expect("answered")
}

/// A peer's change that starts waiting in the room while an import is
/// prepared off the task leaves the heads alone; swapping the fork in
/// would drop it. It must still apply once its dependency comes.
#[test]
fn a_peer_change_that_waits_while_an_import_is_prepared_is_kept() {
    let kv = Arc::new(MemKv::new());
    let mut b = open(&kv);
    let id = room("r");
    let (first, later) = first_then(&["s2", "s3"]);
    let input = prepare(&mut b, &first);
    run(&mut b, &kv, input).expect("answered").expect("import");
    let (missing, orphan) = (&later[0], &later[1]);
    // Forked before the orphan arrives, installed after.
    let input = prepare(&mut b, &first);
    assert_eq!(apply(&mut b, &kv, &id, &[orphan]), 1, "the orphan waits");
    run(&mut b, &kv, input).expect("answered").expect("import");
    assert_eq!(apply(&mut b, &kv, &id, &[missing]), 0, "nothing waits");
    assert_eq!(sessions(&mut b, &id), ["s1", "s2", "s3"]);
}

/// An import merged in line (its fork is another instance's) is held to
/// the prepared rule: a change it cannot merge whole (here one whose
/// dependency only the forking replica held) refuses it, and the room is
/// left as it was, instead of acknowledging it with the change waiting.
#[test]
fn an_import_merged_in_line_is_refused_if_a_change_would_wait() {
    let later = export(&["s1", "s2"]);
    let (id, all) = room::import::decode(&later, None).expect("decode");
    let last = all
        .iter()
        .find(|c| all.iter().all(|o| !o.deps().contains(&c.hash())))
        .expect("a head")
        .clone();
    // Another replica holds all but the last change and prepares that one.
    let other_kv = Arc::new(MemKv::new());
    let mut other =
        Replica::new(ReplicaConfig::new(node("c"), 1), other_kv.clone(), 0).expect("replica");
    let earlier: Vec<_> = all.iter().filter(|c| c.hash() != last.hash()).collect();
    assert_eq!(apply(&mut other, &other_kv, &id, &earlier), 0);
    let prepared = other
        .fork_room(&id)
        .expect("fork")
        .prepare(vec![last])
        .expect("merges on a room with its dependencies");
    // b holds the room without its sessions.
    let kv = Arc::new(MemKv::new());
    let mut b = open(&kv);
    let input = prepare(&mut b, &export(&[]));
    run(&mut b, &kv, input).expect("answered").expect("import");
    let input = Input::ImportPrepared {
        id: 2,
        prepared: Box::new(prepared),
    };
    let err = run(&mut b, &kv, input)
        .expect("answered")
        .expect_err("a change left waiting refuses the import");
    assert!(err.to_string().contains("cannot be merged"), "{err}");
    assert_eq!(b.stats().imports_in_line, 1);
    assert!(sessions(&mut b, &id).is_empty());
}

/// The room is evicted and loaded again while an import is prepared, and
/// then takes as many changes beside its heads as the fork had (three: the
/// first import's changes each passed through the buffer; three changes
/// waiting after the reload): still not the same room, so the import is
/// merged in line and the waiting changes kept.
#[test]
fn a_room_loaded_again_since_the_fork_is_not_taken_for_it() {
    let kv = Arc::new(MemKv::new());
    let mut config = ReplicaConfig::new(node("b"), 1);
    config.hot_rooms = 1;
    let mut b = Replica::new(config, kv.clone(), 0).expect("replica");
    let id = room("r");
    let (first, later) = first_then(&["s2", "s3", "s4", "s5"]);
    let input = prepare(&mut b, &first);
    run(&mut b, &kv, input).expect("answered").expect("import");
    let input = prepare(&mut b, &first);
    // Another room evicts this one; loaded again, it takes an orphan.
    let other = Input::LocalWrite {
        id: 5,
        room: room("other"),
        op: RoomOp::Create {
            tenant: tenant("t"),
            config: RoomConfig::default(),
        },
    };
    run(&mut b, &kv, other).expect("answered").expect("create");
    // The first of the four joins is withheld; the other three wait.
    let missing = &later[0];
    let orphans: Vec<_> = later[1..].iter().collect();
    assert_eq!(apply(&mut b, &kv, &id, &orphans), 3, "the orphans wait");
    run(&mut b, &kv, input).expect("answered").expect("import");
    assert_eq!(b.stats().imports_in_line, 1);
    assert_eq!(apply(&mut b, &kv, &id, &[missing]), 0, "nothing waits");
    assert_eq!(sessions(&mut b, &id), ["s1", "s2", "s3", "s4", "s5"]);
}
