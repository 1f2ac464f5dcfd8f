//! Long-lived rooms: a session that left leaves the room's reading once
//! `session_retention_ms` has passed since its leave, while its counters
//! stay and a resume or a write naming it is refused as "has left".

mod common;

use std::sync::Arc;

use chorus_engine::storage::MemKv;
use chorus_engine::*;
use common::*;

const RETENTION_MS: u64 = 60_000;

fn engine_with_retention(now_ms: u64) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(now_ms));
    let mut config = EngineConfig::new(node("n1"));
    config.replica.session_retention_ms = RETENTION_MS;
    let engine =
        Engine::with_storage(Arc::new(MemKv::new()), config, clock.clone()).expect("engine opens");
    (engine, clock)
}

#[test]
fn a_departed_session_leaves_the_reading_after_the_retention_and_stays_left() {
    let (engine, clock) = engine_with_retention(1_700_000_000_000);
    let r = room("lobby");
    engine
        .write(
            &r,
            RoomOp::Create {
                tenant: tenant("t"),
                config: RoomConfig::default(),
            },
        )
        .expect("create");
    for s in ["gone", "stays"] {
        engine
            .write(
                &r,
                RoomOp::Join {
                    request: join_request(s, s, "sfu-1"),
                },
            )
            .expect("join");
    }
    engine
        .write(
            &r,
            RoomOp::Leave {
                session: session("gone"),
            },
        )
        .expect("leave");

    // Within the retention the departed session is still read, as left,
    // with the time it left.
    clock.advance(RETENTION_MS - 1);
    let snap = engine.room(&r).expect("read").expect("room");
    let gone = snap.sessions.get(&session("gone")).expect("still listed");
    assert_eq!(gone.state, SessionState::Left);
    assert!(gone.left_at_ms.is_some());
    assert_eq!(snap.sessions[&session("stays")].left_at_ms, None);

    // Past it, only the live session is read; the counters are kept.
    clock.advance(2);
    let snap = engine.room(&r).expect("read").expect("room");
    assert_eq!(
        snap.sessions.keys().cloned().collect::<Vec<_>>(),
        vec![session("stays")]
    );
    assert_eq!((snap.counters.joins, snap.counters.leaves), (2, 1));
    let json = serde_json::to_string(&snap).expect("json");
    assert!(!json.contains("gone"), "{json}");

    // Nothing comes back: a resume and a write naming it are refused as a
    // departed session, not as an unknown one.
    let resumed = engine.resume(&r, &session("gone"), "token-gone");
    assert!(
        matches!(resumed, Err(Error::ResumeRefused { .. })),
        "{resumed:?}"
    );
    let write = engine.write(
        &r,
        RoomOp::SetState {
            session: session("gone"),
            state: SessionState::Active,
        },
    );
    assert!(matches!(write, Err(Error::SessionLeft { .. })), "{write:?}");
    let snap = engine.room(&r).expect("read").expect("room");
    assert!(!snap.sessions.contains_key(&session("gone")));
}

/// A single replica (no peers to wait for) compacts a churning room on its
/// own; its export, a compacted document, imports into a fresh replica and
/// reads the same there.
#[test]
fn a_lone_replica_compacts_and_its_export_imports_elsewhere() {
    let mut config = EngineConfig::new(node("alone"));
    config.replica.history_changes_max = 100;
    config.replica.end_ack_interval_ms = 20;
    config.replica.session_retention_ms = 0;
    let engine = Engine::in_memory(config).expect("engine opens");
    let r = room("lobby");
    engine
        .write(
            &r,
            RoomOp::Create {
                tenant: tenant("t"),
                config: RoomConfig::default(),
            },
        )
        .expect("create");
    for i in 0..300 {
        let id = format!("s{i}");
        engine
            .write(
                &r,
                RoomOp::Join {
                    request: join_request(&id, "u", "sfu-1"),
                },
            )
            .expect("join");
        if i % 10 != 0 {
            engine
                .write(
                    &r,
                    RoomOp::Leave {
                        session: session(&id),
                    },
                )
                .expect("leave");
        }
    }
    // The first compaction may end with much of the run carried onto its
    // base (the writes went on while it ran, off the task); the room
    // compacts again until its history is short.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (bytes, exported) = loop {
        let bytes = engine.export_room(&r).expect("export");
        let exported = automerge::Automerge::load(&bytes).expect("loads");
        let changes = exported.get_changes(&[]).len();
        if engine.stats().expect("stats").compactions > 0 && changes < 300 {
            break (bytes, exported);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{changes} changes after writing 571"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let snap = engine.room(&r).expect("read").expect("room");
    assert_eq!(snap.counters.joins, 300);
    assert_eq!(snap.live_sessions().count(), 30);

    let other = Engine::in_memory(EngineConfig::new(node("other"))).expect("engine opens");
    other
        .import_room_as(&r, &bytes)
        .expect("a compacted export imports");
    let theirs = other.room(&r).expect("read").expect("room");
    let live = |s: &RoomSnapshot| -> Vec<SessionId> {
        s.live_sessions().map(|(id, _)| id.clone()).collect()
    };
    assert_eq!(live(&theirs), live(&snap));
    assert_eq!(theirs.counters, snap.counters);
    let heads: Vec<Head> = exported.get_heads().iter().map(|h| Head(h.0)).collect();
    assert_eq!(other.heads(&r).expect("heads"), heads);
}
