//! History compaction (`room::compact`): three replicas write concurrently,
//! before and after a cut that every one of them holds; then
//!
//! - compacting each replica and merging the results gives the very same
//!   history (same heads) as merging first and compacting once: compaction
//!   commutes with merge, so replicas that compact apart converge;
//! - the compacted room reads like the uncompacted one, minus the sessions
//!   that had left long enough before the cut.
//!
//! Stamps follow causality, as the replicas' HLCs make them. Failing seeds
//! are kept in the top-level `proptest-regressions/`.

mod common;

use std::collections::BTreeSet;

use automerge::{Automerge, ChangeHash};
use chorus_engine::hlc::Timestamp;
use chorus_engine::room::compact::{carry_since, compact, Cut, COMPACTION_FORMAT};
use chorus_engine::room::{read, Intake, RoomDoc, WriteCtx};
use chorus_engine::*;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const REPLICAS: usize = 3;
/// Wall time of the first write; every write is 10 ms after the one before.
const START_MS: u64 = 1_000_000;

#[derive(Debug, Clone)]
enum Action {
    Join(usize),
    Leave(usize, usize),
    Activate(usize, usize),
    Publish(usize, usize, u8),
    Unpublish(usize, usize, u8),
    TakeOver(usize, usize),
    Permit(usize, u8),
    Forbid(usize, u8),
    SetAttr(usize, u8),
    RemoveAttr(usize, u8),
    Sync(usize, usize),
}

fn action() -> impl Strategy<Value = Action> {
    let r = 0..REPLICAS;
    let pick = 0usize..64;
    prop_oneof![
        3 => r.clone().prop_map(Action::Join),
        2 => (r.clone(), pick.clone()).prop_map(|(a, b)| Action::Leave(a, b)),
        1 => (r.clone(), pick.clone()).prop_map(|(a, b)| Action::Activate(a, b)),
        1 => (r.clone(), pick.clone(), 0u8..3).prop_map(|(a, b, c)| Action::Publish(a, b, c)),
        1 => (r.clone(), pick.clone(), 0u8..3).prop_map(|(a, b, c)| Action::Unpublish(a, b, c)),
        1 => (r.clone(), pick).prop_map(|(a, b)| Action::TakeOver(a, b)),
        1 => (r.clone(), 0u8..3).prop_map(|(a, b)| Action::Permit(a, b)),
        1 => (r.clone(), 0u8..3).prop_map(|(a, b)| Action::Forbid(a, b)),
        1 => (r.clone(), 0u8..3).prop_map(|(a, b)| Action::SetAttr(a, b)),
        1 => (r.clone(), 0u8..3).prop_map(|(a, b)| Action::RemoveAttr(a, b)),
        3 => (r.clone(), r).prop_map(|(a, b)| Action::Sync(a, b)),
    ]
}

struct World {
    room: RoomId,
    docs: Vec<RoomDoc>,
    sessions: Vec<SessionId>,
    step: u64,
}

impl World {
    fn new() -> Self {
        let room = room("long-lived");
        let docs = (0..REPLICAS)
            .map(|i| {
                RoomDoc::empty(
                    room.clone(),
                    automerge::ActorId::from(vec![i as u8 + 1; 16]),
                )
            })
            .collect();
        let mut world = Self {
            room,
            docs,
            sessions: Vec::new(),
            step: 0,
        };
        world.write(
            0,
            RoomOp::Create {
                tenant: tenant("t"),
                config: RoomConfig::default(),
            },
        );
        for to in 1..REPLICAS {
            world.sync(0, to);
        }
        world
    }

    /// A write stamped after every write before it (in any replica): the
    /// stamps respect causality, as HLCs make them.
    fn write(&mut self, at: usize, op: RoomOp) -> Option<ChangeHash> {
        self.step += 1;
        let now_ms = START_MS + self.step * 10;
        let stamp = Timestamp {
            wall_ms: now_ms,
            logical: 0,
            actor: at as u64,
        };
        let ctx = WriteCtx {
            room: &self.room,
            stamp,
            now_ms,
            stamped_removals: true,
        };
        let (changes, _) = self.docs[at].apply_local(&ctx, &op).ok()?;
        changes.last().map(|c| c.hash())
    }

    fn sync(&mut self, from: usize, to: usize) {
        if from == to {
            return;
        }
        let changes = self.docs[from].changes_since(&self.docs[to].heads());
        self.docs[to]
            .apply_remote(changes, Intake::EachChange)
            .expect("changes apply");
    }

    fn session(&self, pick: usize) -> Option<SessionId> {
        if self.sessions.is_empty() {
            return None;
        }
        Some(self.sessions[pick % self.sessions.len()].clone())
    }

    fn run(&mut self, action: &Action) {
        let track_id = |t: u8| track(&format!("t{t}"));
        match *action {
            Action::Join(at) => {
                let id = format!("s{}", self.sessions.len());
                if self
                    .write(
                        at,
                        RoomOp::Join {
                            request: join_request(&id, &format!("u{id}"), "sfu-1"),
                        },
                    )
                    .is_some()
                {
                    self.sessions.push(session(&id));
                }
            }
            Action::Leave(at, pick) => {
                if let Some(session) = self.session(pick) {
                    self.write(at, RoomOp::Leave { session });
                }
            }
            Action::Activate(at, pick) => {
                if let Some(session) = self.session(pick) {
                    let state = SessionState::Active;
                    self.write(at, RoomOp::SetState { session, state });
                }
            }
            Action::Publish(at, pick, t) => {
                if let Some(session) = self.session(pick) {
                    let track = Track {
                        kind: TrackKind::Audio,
                        simulcast_layers: 1,
                    };
                    let track_id = track_id(t);
                    self.write(
                        at,
                        RoomOp::Publish {
                            session,
                            track_id,
                            track,
                        },
                    );
                }
            }
            Action::Unpublish(at, pick, t) => {
                if let Some(session) = self.session(pick) {
                    let track_id = track_id(t);
                    self.write(at, RoomOp::Unpublish { session, track_id });
                }
            }
            Action::TakeOver(at, pick) => {
                let Some(session) = self.session(pick) else {
                    return;
                };
                let current = self.docs[at]
                    .snapshot()
                    .ok()
                    .and_then(|s| s.sessions.get(&session).map(|c| c.owner.epoch));
                if let Some(epoch) = current {
                    let owner = Owner {
                        epoch: epoch + 1,
                        node: node(&format!("sfu-{at}")),
                    };
                    self.write(at, RoomOp::SetOwner { session, owner });
                }
            }
            Action::Permit(at, u) => {
                let permission = Permission {
                    role: Role::Speaker,
                    publish: at % 2 == 0,
                    subscribe: true,
                };
                let user = user(&format!("p{u}"));
                self.write(at, RoomOp::SetPermission { user, permission });
            }
            Action::Forbid(at, u) => {
                let user = user(&format!("p{u}"));
                self.write(at, RoomOp::RemovePermission { user });
            }
            Action::SetAttr(at, a) => {
                let mut update = ConfigUpdate::default();
                update
                    .set_attributes
                    .insert(format!("a{a}"), format!("v{}", self.step));
                self.write(at, RoomOp::UpdateConfig { update });
            }
            Action::RemoveAttr(at, a) => {
                let update = ConfigUpdate {
                    remove_attributes: vec![format!("a{a}")],
                    ..ConfigUpdate::default()
                };
                self.write(at, RoomOp::UpdateConfig { update });
            }
            Action::Sync(from, to) => self.sync(from, to),
        }
    }
}

fn automerge_of(doc: &RoomDoc) -> Automerge {
    Automerge::load(&doc.save()).expect("a room loads")
}

fn merged(docs: &[Automerge]) -> Automerge {
    let mut out = Automerge::new();
    for doc in docs {
        out.apply_changes(doc.get_changes(&[]))
            .expect("changes apply");
    }
    out
}

fn heads(doc: &Automerge) -> BTreeSet<ChangeHash> {
    doc.get_heads().into_iter().collect()
}

fn check(before: &[Action], during: &[Action], after: &[Action]) {
    let mut world = World::new();
    for a in before {
        world.run(a);
    }
    // Everyone catches up, then writes without telling anyone; replica 0's
    // request reaches everyone but does not cover the others' writes,
    // which are concurrent with the cut.
    for from in 0..REPLICAS {
        for to in 0..REPLICAS {
            world.sync(from, to);
        }
    }
    for a in during {
        if !matches!(a, Action::Sync(..)) {
            world.run(a);
        }
    }
    let mut update = ConfigUpdate::default();
    update
        .set_attributes
        .insert("compact".into(), "request".into());
    let request = world
        .write(0, RoomOp::UpdateConfig { update })
        .expect("the request is written");
    let cut_ms = START_MS + world.step * 10;
    for to in 1..REPLICAS {
        world.sync(0, to);
    }
    for a in after {
        world.run(a);
    }
    let cut = Cut {
        request,
        generation: 1,
        prune_before_ms: cut_ms - 100,
    };

    let docs: Vec<Automerge> = world.docs.iter().map(automerge_of).collect();
    let whole = merged(&docs);
    let once = compact(&whole, &world.room, &cut, COMPACTION_FORMAT, None).expect("compacts");
    let apart: Vec<Automerge> = docs
        .iter()
        .map(|doc| {
            let fresh = compact(doc, &world.room, &cut, COMPACTION_FORMAT, None)
                .expect("compacts")
                .carrier
                .into_doc();
            // A base built on another copy of the cut (a compaction redone
            // on more changes reuses its own) changes nothing.
            let reused = compact(doc, &world.room, &cut, COMPACTION_FORMAT, Some(&once.base))
                .expect("compacts with a known base");
            assert_eq!(
                heads(reused.carrier.doc()),
                heads(&fresh),
                "a reused base differs"
            );
            fresh
        })
        .collect();
    let then_merged = merged(&apart);
    assert_eq!(
        heads(once.carrier.doc()),
        heads(&then_merged),
        "compacting apart then merging differs from merging then compacting"
    );
    // The way replicas merge: through validation, change by change.
    let mut via_peer = RoomDoc::load(
        world.room.clone(),
        automerge::ActorId::from(vec![9u8; 16]),
        Some(&apart[1].save()),
        &[],
    )
    .expect("a compacted room loads");
    for other in [&apart[0], &apart[2]] {
        let outcome = via_peer
            .apply_remote(other.get_changes(&[]), Intake::EachChange)
            .expect("applies");
        assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
        assert_eq!(outcome.pending, 0);
    }
    let via_heads: BTreeSet<ChangeHash> = via_peer.heads().into_iter().collect();
    assert_eq!(via_heads, heads(once.carrier.doc()));

    // Prepared on a copy (one replica's history), then the changes taken
    // since carried on it, as installing a compaction off the replica's
    // task does: the history compacting everything at once writes.
    for doc in &docs {
        let copy = compact(doc, &world.room, &cut, COMPACTION_FORMAT, None).expect("compacts");
        let (carrier, more) =
            carry_since(&whole, copy.carrier, &doc.get_heads()).expect("carries the rest");
        assert_eq!(
            heads(carrier.doc()),
            heads(once.carrier.doc()),
            "carrying on a copy differs from compacting in line"
        );
        let carried: BTreeSet<ChangeHash> =
            copy.carried.iter().chain(&more).map(|c| c.hash()).collect();
        let at_once: BTreeSet<ChangeHash> = once.carried.iter().map(|c| c.hash()).collect();
        assert_eq!(carried, at_once, "other carried changes");
    }

    // The compacted room reads like the whole history, without the
    // sessions that had left by `prune_before_ms` at the cut.
    let at_cut = whole.fork_at(&[request]).expect("the cut");
    let pruned: BTreeSet<SessionId> = read::snapshot(&at_cut, &world.room)
        .expect("reads")
        .sessions
        .into_iter()
        .filter(|(_, s)| s.departed_by(cut.prune_before_ms))
        .map(|(id, _)| id)
        .collect();
    let mut expected = read::snapshot(&whole, &world.room).expect("reads");
    expected.sessions.retain(|id, _| !pruned.contains(id));
    let got = read::snapshot(once.carrier.doc(), &world.room).expect("reads");
    assert_eq!(got, expected);
    assert!(
        once.carrier.doc().get_changes(&[]).len() <= 1 + once.carried.len(),
        "the history is the base and the carried tail"
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "../proptest-regressions/engine-compaction.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn compaction_commutes_with_merge_and_keeps_the_reading(
        before in prop::collection::vec(action(), 0..40),
        during in prop::collection::vec(action(), 0..8),
        after in prop::collection::vec(action(), 0..40),
    ) {
        check(&before, &during, &after);
    }
}

/// Writes concurrent with the cut, by hand: each pair is one replica
/// writing into the cut while another, not having seen it, writes the same
/// key in the tail.
#[test]
fn writes_concurrent_with_the_cut_keep_their_meaning() {
    use Action::*;
    let joined = [Join(0), Publish(0, 0, 0), Permit(0, 0), SetAttr(0, 0)];
    // A delete that had not seen a put keeps it (add wins).
    check(&joined, &[SetAttr(0, 0), RemoveAttr(1, 0)], &[]);
    check(&joined, &[Permit(0, 0), Forbid(2, 0)], &[]);
    check(&joined, &[Publish(0, 0, 0), Unpublish(1, 0, 0)], &[]);
    // A delete that had seen everything removes it.
    check(&joined, &[RemoveAttr(1, 0)], &[Sync(1, 0), SetAttr(2, 1)]);
    // Leaving is terminal against a concurrent state change, either way.
    check(&joined, &[Leave(0, 0), Activate(1, 0)], &[]);
    check(&joined, &[Activate(0, 0), Leave(1, 0)], &[Activate(2, 0)]);
    // Two takeovers of one call: the higher owner wins.
    check(
        &joined,
        &[TakeOver(0, 0), TakeOver(1, 0)],
        &[TakeOver(2, 0)],
    );
}

/// A replica that has not compacted yet receives a peer's compacted room
/// (its base, then its carried tail and new writes): it compacts at the same
/// cut itself, checks the base, and ends with the same history.
#[test]
fn a_peers_base_makes_a_replica_compact_first() {
    use Action::*;
    let mut world = World::new();
    for a in [
        Join(0),
        Join(1),
        Sync(1, 0),
        Leave(0, 0),
        Sync(0, 1),
        Sync(0, 2),
    ] {
        world.run(&a);
    }
    let request = request_first_compaction(&mut world);
    world.sync(0, 1);
    world.sync(0, 2);
    world.run(&Join(2)); // replica 2's tail, not seen by the others yet
    world.docs[0]
        .compact_at(request)
        .expect("replica 0 compacts");
    world.run(&Join(0)); // a write in the new generation
                         // Replica 1 has not compacted: replica 0's history reaches it.
    let theirs = world.docs[0].changes_since(&[]);
    let outcome = world.docs[1]
        .apply_remote(theirs, Intake::EachChange)
        .expect("applies");
    assert!(outcome.compacted.is_some(), "replica 1 compacted first");
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    assert_eq!(world.docs[1].heads(), world.docs[0].heads());
    assert_eq!(world.docs[1].generation(), 1);
    // Replica 2 hands its tail to replica 0, which lacks it: replica 2
    // compacts on receiving replica 0's history, then its carried change
    // reaches replica 0 as a new-generation change.
    let theirs = world.docs[0].changes_since(&[]);
    let outcome = world.docs[2]
        .apply_remote(theirs, Intake::EachChange)
        .expect("applies");
    assert!(outcome.compacted.is_some());
    world.sync(2, 0);
    world.sync(0, 1);
    let read = |i: usize, world: &mut World| world.docs[i].snapshot().expect("reads");
    let zero = read(0, &mut world);
    assert_eq!(read(1, &mut world), zero);
    assert_eq!(read(2, &mut world), zero);
    assert_eq!(zero.counters.joins, 4);
    // The session that left before the cut is gone; replica 2's join is not.
    assert_eq!(zero.sessions.len(), 3, "{:?}", zero.sessions.keys());
}

#[test]
fn a_long_churn_compacts_to_the_live_sessions() {
    let mut world = World::new();
    for i in 0..200 {
        world.run(&Action::Join(i % REPLICAS));
        world.run(&Action::Leave(i % REPLICAS, i));
        world.run(&Action::Sync(i % REPLICAS, (i + 1) % REPLICAS));
    }
    world.run(&Action::Join(0));
    let doc = automerge_of(&world.docs[0]);
    let request = *doc.get_heads().first().expect("heads");
    let cut = Cut {
        request,
        generation: 1,
        prune_before_ms: START_MS + world.step * 10,
    };
    let compacted = compact(&doc, &world.room, &cut, COMPACTION_FORMAT, None).expect("compacts");
    let read = read::snapshot(compacted.carrier.doc(), &world.room).expect("reads");
    assert!(read.sessions.len() <= 1, "{:?}", read.sessions.keys());
    assert!(read.counters.joins >= 200);
    // The base remembers each pruned session, 8 bytes each (a bounded
    // list, `room::departed`); the rest is a tenth of the history.
    let remembered = chorus_engine::room::departed::remembered(compacted.carrier.doc()).len();
    let pruned = read.counters.joins as usize - read.sessions.len();
    assert_eq!(
        remembered,
        pruned * chorus_engine::room::departed::DIGEST_LEN
    );
    let saved = compacted.carrier.doc().save().len();
    assert!(
        saved.saturating_sub(remembered) * 10 < doc.save().len(),
        "{saved} bytes ({remembered} of pruned sessions) compacted from {}",
        doc.save().len()
    );
}

/// Replica 0 writes the request for generation 1.
fn request_first_compaction(world: &mut World) -> ChangeHash {
    world
        .write(
            0,
            RoomOp::RequestCompaction {
                request: chorus_engine::room::compact::Request {
                    generation: 1,
                    prune_before_ms: START_MS + world.step * 10,
                },
            },
        )
        .expect("the request is written")
}

/// A replica upgraded after naming a cut, but before compacting at it,
/// takes the base its peers wrote under the previous compaction format.
#[test]
fn a_base_of_the_previous_format_is_taken_by_a_newer_build() {
    use Action::*;
    let mut world = World::new();
    for a in [Join(0), Join(1), Sync(1, 0), Leave(0, 0), Sync(0, 1)] {
        world.run(&a);
    }
    let request = request_first_compaction(&mut world);
    world.sync(0, 1);
    let mut newer = world.docs[1].fork();
    world.docs[0]
        .compact_at_format(request, 1)
        .expect("replica 0 compacts in format 1");
    newer.compact_at(request).expect("a newer build compacts");
    assert_ne!(
        newer.heads(),
        world.docs[0].heads(),
        "the two formats write different bases"
    );
    let theirs = world.docs[0].changes_since(&[]);
    let outcome = world.docs[1]
        .apply_remote(theirs, Intake::EachChange)
        .expect("applies");
    assert!(
        outcome.compacted.is_some(),
        "replica 1 took the format-1 base"
    );
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    assert_eq!(world.docs[1].heads(), world.docs[0].heads());
}
