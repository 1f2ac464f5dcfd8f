//! Property: valid writes interleaved with hostile automerge changes (text
//! objects, map replacements, deleted sessions and genesis maps, schema
//! bumps, huge epochs, another room's genesis), sent as peers' pushes and as
//! imports, on three replicas that restart (dropping what was not flushed).
//! Every acknowledged write is present after every restart, and the
//! replicas converge. Failing seeds are kept in the top-level
//! `proptest-regressions/`.

mod common;

use std::collections::BTreeSet;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjType, ReadDoc, ScalarValue, ROOT};
use chorus_engine::replica::wire::{self, Body, Envelope, RoomChanges};
use chorus_engine::replica::{Event, Input, ReplicaConfig};
use chorus_engine::*;
use common::pair::{Net, CLUSTER};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn quick(config: &mut ReplicaConfig) {
    config.anti_entropy_interval_ms = 100;
    config.round_timeout_ms = 1_000;
}

#[derive(Debug, Clone)]
enum Step {
    Join {
        at: usize,
    },
    Leave {
        at: usize,
        pick: usize,
    },
    Hostile {
        at: usize,
        kind: u8,
        as_import: bool,
    },
    Restart {
        at: usize,
    },
    Run {
        ms: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3usize).prop_map(|at| Step::Join { at }),
        1 => (0..3usize, any::<usize>()).prop_map(|(at, pick)| Step::Leave { at, pick }),
        3 => (0..3usize, 0..8u8, any::<bool>())
            .prop_map(|(at, kind, as_import)| Step::Hostile { at, kind, as_import }),
        1 => (0..3usize).prop_map(|at| Step::Restart { at }),
        2 => (50..600u64).prop_map(|ms| Step::Run { ms }),
    ]
}

fn map(doc: &AutoCommit, parent: &automerge::ObjId, key: &str) -> Option<automerge::ObjId> {
    match doc.get(parent, key).ok()? {
        Some((automerge::Value::Object(_), id)) => Some(id),
        _ => None,
    }
}

/// A hostile document built from the room as replica `at` holds it.
fn hostile(export: &[u8], kind: u8, salt: u64) -> Option<AutoCommit> {
    let mut doc = AutoCommit::load(export).ok()?;
    doc.set_actor(ActorId::from(salt.to_be_bytes().as_slice()));
    let sessions = map(&doc, &ROOT, "sessions")?;
    let first = doc.keys(&sessions).next();
    match kind {
        0 => {
            // A JS-style join: plain strings become text objects.
            let s = doc
                .put_object(&sessions, format!("js-{salt}"), ObjType::Map)
                .ok()?;
            let user = doc.put_object(&s, "user", ObjType::Text).ok()?;
            doc.splice_text(&user, 0, 0, "eve").ok()?;
        }
        1 => {
            doc.put_object(ROOT, "config", ObjType::Map).ok()?;
        }
        2 => {
            doc.delete(&sessions, first?.as_str()).ok()?;
        }
        3 => {
            doc.delete(ROOT, "sessions").ok()?;
        }
        4 => {
            doc.put(ROOT, "schema", ScalarValue::Uint(99)).ok()?;
        }
        5 => {
            let s = map(&doc, &sessions, first?.as_str())?;
            doc.put(&s, "owner", format!("{}:evil", u64::MAX)).ok()?;
        }
        6 => {
            // Replace a live session's map with an empty one.
            doc.put_object(&sessions, first?.as_str(), ObjType::Map)
                .ok()?;
        }
        _ => {
            // Another room's genesis, merged in.
            let other = room(&format!("other-{salt}"));
            let donor = replica("donor", 1);
            donor
                .engine
                .create_room(&other, &tenant("evil"), RoomConfig::default())
                .ok()?;
            let bytes = donor.engine.export_room(&other).ok()?;
            let mut foreign = AutoCommit::load(&bytes).ok()?;
            doc.merge(&mut foreign).ok()?;
            doc.put(ROOT, "room_id", other.as_str()).ok()?;
        }
    }
    Some(doc)
}

fn acked(events: &[Event], id: u64) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::WriteDone { id: done, result: Ok(_) } if *done == id))
}

fn check_acked(
    net: &mut Net,
    at: usize,
    id: &RoomId,
    joined: &BTreeSet<String>,
    left: &BTreeSet<String>,
) {
    let snap = net.members[at]
        .replica
        .room(id)
        .expect("the room reads")
        .expect("the room exists");
    assert_eq!(snap.schema_version, SCHEMA_VERSION);
    for s in joined {
        let session = snap
            .sessions
            .get(&session(s))
            .unwrap_or_else(|| panic!("replica {at} lost the acknowledged join {s}"));
        if left.contains(s) {
            assert_eq!(session.state, SessionState::Left, "{s}");
        }
    }
}

fn run(steps: Vec<Step>) {
    let mut net = Net::new(3, quick);
    net.connect_all();
    let id = room("r");
    net.write(
        0,
        &id,
        RoomOp::Create {
            tenant: tenant("acme"),
            config: RoomConfig::default(),
        },
    );
    net.run_for(500);
    // What each replica acknowledged (durably, to a client).
    let mut joined: Vec<BTreeSet<String>> = vec![BTreeSet::new(); 3];
    let mut left: Vec<BTreeSet<String>> = vec![BTreeSet::new(); 3];
    let mut next = 0u64;
    for step in steps {
        next += 1;
        match step {
            Step::Join { at } => {
                let name = format!("s{next}");
                let before = net.members[at].events.len();
                let write_id = 1_000_000 + next;
                net.input(
                    at,
                    Input::LocalWrite {
                        id: write_id,
                        room: id.clone(),
                        op: RoomOp::Join {
                            request: join_request(&name, "u", "sfu-1"),
                        },
                    },
                );
                if acked(&net.members[at].events[before..], write_id) {
                    joined[at].insert(name);
                }
            }
            Step::Leave { at, pick } => {
                let live: Vec<String> = joined[at].difference(&left[at]).cloned().collect();
                if live.is_empty() {
                    continue;
                }
                let name = live[pick % live.len()].clone();
                let before = net.members[at].events.len();
                let write_id = 2_000_000 + next;
                net.input(
                    at,
                    Input::LocalWrite {
                        id: write_id,
                        room: id.clone(),
                        op: RoomOp::Leave {
                            session: session(&name),
                        },
                    },
                );
                if acked(&net.members[at].events[before..], write_id) {
                    left[at].insert(name);
                }
            }
            Step::Hostile {
                at,
                kind,
                as_import,
            } => {
                let export = net.members[at].replica.export_room(&id).expect("export");
                let Some(export) = export else { continue };
                let Some(mut doc) = hostile(&export, kind, next) else {
                    continue;
                };
                if as_import {
                    let bytes = doc.save();
                    let before = net.members[at].events.len();
                    let write_id = 3_000_000 + next;
                    net.input(
                        at,
                        Input::Import {
                            id: write_id,
                            room: Some(id.clone()),
                            bytes,
                        },
                    );
                    assert!(
                        !acked(&net.members[at].events[before..], write_id),
                        "hostile import {kind} was accepted"
                    );
                } else {
                    let changes = doc
                        .get_changes(&[])
                        .into_iter()
                        .map(|c| serde_bytes::ByteBuf::from(c.raw_bytes().to_vec()))
                        .collect();
                    let bytes = wire::encode(&Envelope {
                        cluster: CLUSTER,
                        sent_at: Default::default(),
                        body: Body::Push {
                            rooms: vec![RoomChanges {
                                room: id.clone(),
                                changes,
                            }],
                        },
                    });
                    let from = net.members[(at + 1) % 3].id.clone();
                    net.input(at, Input::Message { from, bytes });
                }
                check_acked(&mut net, at, &id, &joined[at], &left[at]);
            }
            Step::Restart { at } => {
                restart(&mut net, at);
                check_acked(&mut net, at, &id, &joined[at], &left[at]);
            }
            Step::Run { ms } => net.run_for(ms),
        }
    }
    for _ in 0..100 {
        net.run_for(200);
        if net.converged() {
            break;
        }
    }
    assert!(net.converged(), "the replicas converge");
    let all_joined: BTreeSet<String> = joined.iter().flatten().cloned().collect();
    let all_left: BTreeSet<String> = left.iter().flatten().cloned().collect();
    for at in 0..3 {
        check_acked(&mut net, at, &id, &all_joined, &all_left);
    }
    // And once more after every replica restarts.
    for at in 0..3 {
        restart(&mut net, at);
        check_acked(&mut net, at, &id, &all_joined, &all_left);
    }
}

/// A restart, then its connections coming back (as a daemon's would).
fn restart(net: &mut Net, at: usize) {
    net.restart(at, quick);
    for other in 0..3 {
        if other != at {
            net.reconnect(at, other);
        }
    }
}

proptest! {
    // Each case runs three replicas for several simulated seconds: fewer
    // cases than the cheap properties, each one longer.
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "../proptest-regressions/engine-hostile.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn acknowledged_writes_survive_hostile_changes_and_restarts(
        steps in proptest::collection::vec(step(), 5..40)
    ) {
        run(steps);
    }
}
