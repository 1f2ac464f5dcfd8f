//! Property tests: random operations on 2–5 replicas, changes delivered in
//! random order with duplicates, converge to equal rooms; merging is
//! commutative, associative and idempotent; export/import round-trips.
//! Failing seeds are kept in the top-level `proptest-regressions/`.

mod common;

use chorus_engine::*;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const ROOMS: [&str; 2] = ["r0", "r1"];
const NODES: [&str; 3] = ["n0", "n1", "n2"];

/// One generated step.
#[derive(Debug, Clone)]
enum Step {
    /// Replica `at` tries an operation (refusals are fine: validation).
    Write { at: usize, room: usize, op: OpSpec },
    /// Every change of `from` reaches `to`, shuffled, some twice.
    Deliver { from: usize, to: usize, seed: u64 },
    /// Replica `at`'s clock moves (possibly backwards: skew).
    Clock { at: usize, to_ms: u64 },
}

#[derive(Debug, Clone)]
enum OpSpec {
    Create,
    Join {
        session: u8,
        owner: usize,
    },
    Leave {
        session: u8,
    },
    Activate {
        session: u8,
    },
    Move {
        session: u8,
        owner: usize,
        epoch: u64,
    },
    Publish {
        session: u8,
        track: u8,
    },
    Unpublish {
        session: u8,
        track: u8,
    },
    Config {
        max: u32,
        recording: bool,
    },
    Permit {
        user: u8,
        publish: bool,
    },
    Revoke {
        user: u8,
    },
    End,
}

fn op_spec() -> impl Strategy<Value = OpSpec> {
    prop_oneof![
        3 => Just(OpSpec::Create),
        6 => (0u8..6, 0..NODES.len()).prop_map(|(session, owner)| OpSpec::Join { session, owner }),
        2 => (0u8..6).prop_map(|session| OpSpec::Leave { session }),
        2 => (0u8..6).prop_map(|session| OpSpec::Activate { session }),
        4 => (0u8..6, 0..NODES.len(), 1u64..6)
            .prop_map(|(session, owner, epoch)| OpSpec::Move { session, owner, epoch }),
        2 => (0u8..6, 0u8..3).prop_map(|(session, track)| OpSpec::Publish { session, track }),
        1 => (0u8..6, 0u8..3).prop_map(|(session, track)| OpSpec::Unpublish { session, track }),
        2 => (2u32..20, any::<bool>()).prop_map(|(max, recording)| OpSpec::Config { max, recording }),
        2 => (0u8..3, any::<bool>()).prop_map(|(user, publish)| OpSpec::Permit { user, publish }),
        1 => (0u8..3).prop_map(|user| OpSpec::Revoke { user }),
        1 => Just(OpSpec::End),
    ]
}

fn steps(replicas: usize, len: usize) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        6 => (0..replicas, 0..ROOMS.len(), op_spec()).prop_map(|(at, room, op)| Step::Write { at, room, op }),
        3 => (0..replicas, 0..replicas, any::<u64>()).prop_map(|(from, to, seed)| Step::Deliver { from, to, seed }),
        1 => (0..replicas, 0u64..20_000).prop_map(|(at, to_ms)| Step::Clock { at, to_ms }),
    ];
    prop::collection::vec(step, 1..len)
}

fn to_op(op: &OpSpec) -> RoomOp {
    let s = |i: u8| session(&format!("s{i}"));
    match op {
        OpSpec::Create => RoomOp::Create {
            tenant: tenant("t"),
            config: RoomConfig::default(),
        },
        OpSpec::Join { session: i, owner } => RoomOp::Join {
            request: join_request(&format!("s{i}"), &format!("u{}", i % 3), NODES[*owner]),
        },
        OpSpec::Leave { session: i } => RoomOp::Leave { session: s(*i) },
        OpSpec::Activate { session: i } => RoomOp::SetState {
            session: s(*i),
            state: SessionState::Active,
        },
        OpSpec::Move {
            session: i,
            owner,
            epoch,
        } => RoomOp::SetOwner {
            session: s(*i),
            owner: Owner {
                epoch: *epoch,
                node: node(NODES[*owner]),
            },
        },
        OpSpec::Publish {
            session: i,
            track: t,
        } => RoomOp::Publish {
            session: s(*i),
            track_id: track(&format!("t{t}")),
            track: Track {
                kind: TrackKind::Video,
                simulcast_layers: 1 + t,
            },
        },
        OpSpec::Unpublish {
            session: i,
            track: t,
        } => RoomOp::Unpublish {
            session: s(*i),
            track_id: track(&format!("t{t}")),
        },
        OpSpec::Config { max, recording } => RoomOp::UpdateConfig {
            update: ConfigUpdate {
                max_participants: Some(*max),
                recording: Some(*recording),
                ..Default::default()
            },
        },
        OpSpec::Permit { user: u, publish } => RoomOp::SetPermission {
            user: user(&format!("u{u}")),
            permission: Permission {
                role: Role::Speaker,
                publish: *publish,
                subscribe: true,
            },
        },
        OpSpec::Revoke { user: u } => RoomOp::RemovePermission {
            user: user(&format!("u{u}")),
        },
        OpSpec::End => RoomOp::End,
    }
}

/// A tiny deterministic shuffle (xorshift), so a failing case replays.
fn shuffle_with_duplicates(mut items: Vec<Vec<u8>>, seed: u64) -> Vec<Vec<u8>> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
    let dups: Vec<Vec<u8>> = items.iter().filter(|_| next() % 2 == 0).cloned().collect();
    items.extend(dups);
    items
}

fn deliver(from: &Engine, to: &Engine, seed: u64) {
    for id in ROOMS.map(room) {
        let all = from.changes_since(&id, &[]).expect("changes");
        for change in shuffle_with_duplicates(all, seed) {
            to.apply_remote(&id, vec![change])
                .expect("remote changes apply");
        }
    }
}

fn run(replicas: &[TestReplica], steps: &[Step]) {
    for step in steps {
        match step {
            Step::Write { at, room: r, op } => {
                let _ = replicas[*at].engine.write(&room(ROOMS[*r]), to_op(op));
            }
            Step::Deliver { from, to, seed } => {
                deliver(&replicas[*from].engine, &replicas[*to].engine, *seed)
            }
            Step::Clock { at, to_ms } => replicas[*at].clock.set(*to_ms),
        }
    }
}

/// Full exchange until every replica holds every change.
fn settle(replicas: &[TestReplica]) {
    for _ in 0..2 {
        for a in replicas {
            for b in replicas {
                for id in ROOMS.map(room) {
                    sync_room(&a.engine, &b.engine, &id);
                }
            }
        }
    }
}

fn assert_converged(replicas: &[TestReplica]) -> Result<(), TestCaseError> {
    for id in ROOMS.map(room) {
        let first = &replicas[0].engine;
        let heads = first.heads(&id).expect("heads");
        let snap = first.room(&id).expect("read");
        for r in &replicas[1..] {
            prop_assert_eq!(&r.engine.heads(&id).expect("heads"), &heads);
            let other = r.engine.room(&id).expect("read");
            prop_assert_eq!(&other, &snap);
        }
        // The cached reading equals a fresh read of the same document.
        if let Ok(bytes) = first.export_room(&id) {
            let fresh = replica("fresh", 0);
            fresh.engine.import_room(&bytes).expect("import");
            prop_assert_eq!(&fresh.engine.room(&id).expect("read"), &snap);
        }
        // Every replica picks the same owner for every call, and its owner
        // index agrees with the room.
        if let Some(snap) = snap {
            for r in replicas {
                for n in NODES.map(node) {
                    let mut indexed: Vec<SessionId> = r
                        .engine
                        .calls_owned_by(&n)
                        .expect("index")
                        .into_iter()
                        .filter(|c| c.room == id)
                        .map(|c| c.session)
                        .collect();
                    indexed.sort();
                    let expected: Vec<SessionId> = if snap.lifecycle == Lifecycle::Active {
                        snap.live_sessions()
                            .filter(|(_, s)| s.owner.node == n)
                            .map(|(id, _)| id.clone())
                            .collect()
                    } else {
                        Vec::new()
                    };
                    prop_assert_eq!(indexed, expected);
                }
            }
        }
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "../proptest-regressions/engine-convergence.txt",
        ))),
        ..ProptestConfig::default()
    }
}

fn replicas(n: usize) -> Vec<TestReplica> {
    (0..n)
        .map(|i| replica(&format!("rep{i}"), 1_000 + i as u64))
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_histories_converge((n, steps) in (2usize..=5).prop_flat_map(|n| (Just(n), steps(n, 40)))) {
        let reps = replicas(n);
        run(&reps, &steps);
        settle(&reps);
        assert_converged(&reps)?;
    }

    #[test]
    fn merge_is_commutative_associative_idempotent(steps in steps(3, 30)) {
        // Three replicas diverge with no delivery between them.
        let sources = replicas(3);
        let isolated: Vec<Step> = steps.into_iter().filter(|s| !matches!(s, Step::Deliver { .. })).collect();
        run(&sources, &isolated);
        let orders: [&[usize]; 4] = [&[0, 1, 2], &[2, 0, 1], &[1, 2, 0, 1], &[2, 1, 0, 0, 2]];
        let merged: Vec<TestReplica> = orders
            .iter()
            .enumerate()
            .map(|(i, order)| {
                let target = replica(&format!("merge{i}"), 0);
                for &src in *order {
                    for id in ROOMS.map(room) {
                        sync_room(&sources[src].engine, &target.engine, &id);
                    }
                }
                target
            })
            .collect();
        assert_converged(&merged)?;
    }

    #[test]
    fn export_import_round_trips(steps in steps(1, 30)) {
        let source = replicas(1);
        run(&source, &steps);
        let target = replica("target", 0);
        for id in ROOMS.map(room) {
            let Ok(bytes) = source[0].engine.export_room(&id) else { continue };
            prop_assert_eq!(target.engine.import_room(&bytes).expect("import"), id.clone());
            prop_assert_eq!(target.engine.room(&id).expect("read"), source[0].engine.room(&id).expect("read"));
            prop_assert_eq!(target.engine.heads(&id).expect("heads"), source[0].engine.heads(&id).expect("heads"));
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hlc_is_strictly_monotonic_under_skew(
        events in prop::collection::vec((any::<bool>(), 0u64..100_000, 0u64..100_000), 1..200)
    ) {
        use chorus_engine::hlc::{Hlc, Timestamp};
        let mut hlc = Hlc::new(1);
        let mut last = hlc.last();
        for (observe, physical, remote_wall) in events {
            if observe {
                let remote = Timestamp { wall_ms: remote_wall, logical: 0, actor: 2 };
                if hlc.observe(remote, physical).is_ok() {
                    prop_assert!(hlc.last() > remote, "after observing, the clock orders after the remote");
                }
            } else {
                let t = hlc.tick(physical);
                prop_assert!(t > last);
                prop_assert!(t.wall_ms >= physical);
            }
            prop_assert!(hlc.last() >= last);
            last = hlc.last();
        }
    }
}
