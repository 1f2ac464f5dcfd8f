//! The typed API: writes, reads, validation errors, export/import,
//! subscriptions, indexes and persistence on sled.

mod common;

use chorus_engine::*;
use common::*;

fn setup() -> (TestReplica, RoomId) {
    let r = replica("a", 1_000);
    let id = room("room-1");
    r.engine
        .create_room(&id, &tenant("acme"), RoomConfig::default())
        .expect("create");
    (r, id)
}

#[test]
fn create_join_publish_and_read_back() {
    let (r, id) = setup();
    r.engine
        .join(&id, join_request("s1", "alice", "sfu-1"))
        .expect("join");
    let video = Track {
        kind: TrackKind::Video,
        simulcast_layers: 3,
    };
    r.engine
        .publish(&id, &session("s1"), &track("cam"), video.clone())
        .expect("publish");
    r.engine
        .set_state(&id, &session("s1"), SessionState::Active)
        .expect("state");

    let snap = r.engine.room(&id).expect("read").expect("room exists");
    assert_eq!(snap.tenant, Some(tenant("acme")));
    assert_eq!(snap.created_at_ms, Some(1_000));
    assert_eq!(snap.lifecycle, Lifecycle::Active);
    let s1 = &snap.sessions[&session("s1")];
    assert_eq!(s1.user, user("alice"));
    assert_eq!(
        s1.owner,
        Owner {
            epoch: 1,
            node: node("sfu-1")
        }
    );
    assert_eq!(s1.state, SessionState::Active);
    assert_eq!(s1.tracks[&track("cam")], video);
    assert_eq!(
        s1.resume_token_hash.as_deref(),
        Some(resume_token_hash("token-s1").as_str())
    );
    assert_eq!(snap.counters.joins, 1);
    let json = serde_json::to_string(&snap).expect("snapshot serializes");
    assert!(
        !json.contains("token-s1"),
        "the resume token itself must never be stored"
    );
}

#[test]
fn typed_errors_for_bad_requests() {
    let (r, id) = setup();
    let e = &r.engine;
    assert!(matches!(
        e.join(&room("nope"), join_request("s", "u", "n")),
        Err(Error::UnknownRoom(_))
    ));
    assert!(matches!(
        e.create_room(&id, &tenant("acme"), RoomConfig::default()),
        Err(Error::RoomExists(_))
    ));
    e.join(&id, join_request("s1", "alice", "sfu-1"))
        .expect("join");
    assert!(matches!(
        e.join(&id, join_request("s1", "bob", "sfu-1")),
        Err(Error::DuplicateSession { .. })
    ));
    assert!(matches!(
        e.leave(&id, &session("ghost")),
        Err(Error::UnknownSession { .. })
    ));
    assert!(matches!(
        e.set_owner(&id, &session("s1"), &node("sfu-0"), 1),
        Err(Error::StaleOwner { .. })
    ));
    e.leave(&id, &session("s1")).expect("leave");
    assert!(matches!(
        e.set_state(&id, &session("s1"), SessionState::Active),
        Err(Error::SessionLeft { .. })
    ));
    let bad_layers = Track {
        kind: TrackKind::Video,
        simulcast_layers: 0,
    };
    e.join(&id, join_request("s2", "bob", "sfu-1"))
        .expect("join");
    assert!(matches!(
        e.publish(&id, &session("s2"), &track("t"), bad_layers),
        Err(Error::Invalid { .. })
    ));
    let zero = ConfigUpdate {
        max_participants: Some(0),
        ..ConfigUpdate::default()
    };
    assert!(matches!(
        e.update_config(&id, zero),
        Err(Error::Invalid {
            field: "max_participants",
            ..
        })
    ));
    assert!(RoomId::parse("has space").is_err());
}

#[test]
fn refused_writes_leave_no_trace() {
    let (r, id) = setup();
    let before = r.engine.heads(&id).expect("heads");
    let _ = r.engine.leave(&id, &session("ghost"));
    assert_eq!(r.engine.heads(&id).expect("heads"), before);
}

#[test]
fn capacity_is_enforced_and_counts_only_live_sessions() {
    let r = replica("a", 0);
    let id = room("small");
    let config = RoomConfig {
        max_participants: 2,
        ..RoomConfig::default()
    };
    r.engine
        .create_room(&id, &tenant("t"), config)
        .expect("create");
    r.engine
        .join(&id, join_request("s1", "u1", "n"))
        .expect("join 1");
    r.engine
        .join(&id, join_request("s2", "u2", "n"))
        .expect("join 2");
    assert!(matches!(
        r.engine.join(&id, join_request("s3", "u3", "n")),
        Err(Error::OverCapacity { max: 2, .. })
    ));
    r.engine.leave(&id, &session("s1")).expect("leave");
    r.engine
        .join(&id, join_request("s3", "u3", "n"))
        .expect("a left seat is free again");
}

#[test]
fn audience_cannot_publish_unless_permitted() {
    let (r, id) = setup();
    let mut req = join_request("s1", "viewer", "n");
    req.role = Role::Audience;
    r.engine.join(&id, req).expect("join");
    let audio = Track {
        kind: TrackKind::Audio,
        simulcast_layers: 1,
    };
    assert!(matches!(
        r.engine
            .publish(&id, &session("s1"), &track("mic"), audio.clone()),
        Err(Error::NotPermitted { .. })
    ));
    let promoted = Permission {
        role: Role::Speaker,
        publish: true,
        subscribe: true,
    };
    r.engine
        .set_permission(&id, &user("viewer"), promoted)
        .expect("promote");
    r.engine
        .publish(&id, &session("s1"), &track("mic"), audio)
        .expect("now allowed");
    r.engine
        .unpublish(&id, &session("s1"), &track("mic"))
        .expect("unpublish");
    assert!(matches!(
        r.engine.unpublish(&id, &session("s1"), &track("mic")),
        Err(Error::UnknownTrack { .. })
    ));
}

#[test]
fn ended_rooms_refuse_writes() {
    let (r, id) = setup();
    r.engine.end_room(&id).expect("end");
    assert!(matches!(
        r.engine.join(&id, join_request("s", "u", "n")),
        Err(Error::RoomEnded(_))
    ));
    let listed = r.engine.list_rooms().expect("list");
    assert_eq!(listed[0].lifecycle, Lifecycle::Ended);
}

#[test]
fn owner_index_follows_joins_moves_leaves_and_ends() {
    let (r, id) = setup();
    let e = &r.engine;
    e.join(&id, join_request("s1", "u1", "sfu-1"))
        .expect("join");
    e.join(&id, join_request("s2", "u2", "sfu-1"))
        .expect("join");
    assert_eq!(e.calls_owned_by(&node("sfu-1")).expect("index").len(), 2);
    e.set_owner(&id, &session("s1"), &node("sfu-2"), 2)
        .expect("move");
    let moved = e.calls_owned_by(&node("sfu-2")).expect("index");
    assert_eq!(
        moved,
        vec![OwnedCall {
            room: id.clone(),
            session: session("s1"),
            epoch: 2
        }]
    );
    e.leave(&id, &session("s2")).expect("leave");
    assert!(e.calls_owned_by(&node("sfu-1")).expect("index").is_empty());
    e.end_room(&id).expect("end");
    assert!(e.calls_owned_by(&node("sfu-2")).expect("index").is_empty());
}

#[test]
fn export_is_standard_automerge_and_imports_elsewhere() {
    let (a, id) = setup();
    a.engine
        .join(&id, join_request("s1", "alice", "sfu-1"))
        .expect("join");
    let bytes = a.engine.export_room(&id).expect("export");

    // Plain automerge can read it with the documented field names.
    use automerge::ReadDoc;
    let doc = automerge::Automerge::load(&bytes).expect("standard automerge bytes");
    let (value, _) = doc
        .get(automerge::ROOT, "room_id")
        .expect("read")
        .expect("room_id present");
    assert_eq!(value.into_string().ok().as_deref(), Some("room-1"));

    let b = replica("b", 5_000);
    assert_eq!(b.engine.import_room(&bytes).expect("import"), id);
    assert_eq!(
        b.engine.room(&id).expect("read"),
        a.engine.room(&id).expect("read")
    );
    assert!(b.engine.import_room(b"not automerge").is_err());
}

#[test]
fn subscribers_see_local_and_remote_changes_and_lag_without_blocking() {
    let a = replica("a", 0);
    let b = replica("b", 0);
    let mut sub = b.engine.subscribe();
    let id = room("r");
    a.engine
        .create_room(&id, &tenant("t"), RoomConfig::default())
        .expect("create");
    a.engine
        .join(&id, join_request("s1", "u", "n"))
        .expect("join");
    sync_room(&a.engine, &b.engine, &id);
    let event = sub.try_recv().expect("remote event");
    assert_eq!(event.origin, Origin::Remote);
    assert!(event.changes.contains(&ChangeKind::RoomCreated));
    assert!(event.changes.contains(&ChangeKind::Joined {
        session: session("s1"),
        owner: Owner {
            epoch: 1,
            node: node("n")
        },
    }));

    let mut config = EngineConfig::new(node("c"));
    config.event_queue = 4;
    let c = Engine::in_memory(config).expect("engine");
    let mut slow = c.subscribe();
    let id = room("busy");
    c.create_room(&id, &tenant("t"), RoomConfig::default())
        .expect("create");
    for i in 0..10 {
        c.join(&id, join_request(&format!("s{i}"), "u", "n"))
            .expect("writers never block");
    }
    assert!(matches!(slow.try_recv(), Err(RecvError::Lagged { .. })));
}

#[test]
fn sled_store_reopens_with_everything_and_loads_rooms_lazily() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let e = Engine::open(dir.path(), EngineConfig::new(node("a"))).expect("open");
        for i in 0..20 {
            let id = room(&format!("r{i}"));
            e.create_room(&id, &tenant("t"), RoomConfig::default())
                .expect("create");
            for j in 0..30 {
                // enough writes to trigger compaction in every room
                e.join(&id, join_request(&format!("s{j}"), "u", "sfu-1"))
                    .expect("join");
            }
        }
    }
    let e = Engine::open(dir.path(), EngineConfig::new(node("a"))).expect("reopen");
    assert_eq!(e.hot_rooms(), 0, "opening must not load rooms");
    assert_eq!(e.list_rooms().expect("list").len(), 20);
    assert_eq!(
        e.calls_owned_by(&node("sfu-1")).expect("index").len(),
        20 * 30
    );
    let snap = e.room(&room("r7")).expect("read").expect("exists");
    assert_eq!(snap.sessions.len(), 30);
    assert_eq!(e.hot_rooms(), 1);
    // The reopened engine writes under a new actor without conflicts.
    e.join(&room("r7"), join_request("s-new", "u", "sfu-1"))
        .expect("write after reopen");
}

#[test]
fn hot_room_cache_is_bounded() {
    let mut config = EngineConfig::new(node("a"));
    config.replica.hot_rooms = 3;
    let e = Engine::in_memory(config).expect("engine");
    for i in 0..10 {
        e.create_room(&room(&format!("r{i}")), &tenant("t"), RoomConfig::default())
            .expect("create");
    }
    assert_eq!(e.hot_rooms(), 3);
    assert!(
        e.room(&room("r0")).expect("read").is_some(),
        "evicted rooms reload from storage"
    );
}

#[test]
fn storage_failure_is_an_error_and_loses_nothing_acknowledged() {
    let (r, id) = setup();
    r.engine
        .join(&id, join_request("s1", "u", "n"))
        .expect("join");
    r.kv.set_fail_writes(true);
    assert!(matches!(
        r.engine.join(&id, join_request("s2", "u", "n")),
        Err(Error::Storage(_))
    ));
    // While the store keeps failing, every call answers at once with the
    // store's error (the replica retries reopening per call, not in a loop),
    // and nothing leaves.
    let started = std::time::Instant::now();
    for _ in 0..3 {
        assert!(matches!(r.engine.room(&id), Err(Error::Storage(_))));
        assert!(matches!(
            r.engine.join(&id, join_request("s9", "u", "n")),
            Err(Error::Storage(_))
        ));
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    r.kv.set_fail_writes(false);
    let snap = r.engine.room(&id).expect("read").expect("room");
    assert!(snap.sessions.contains_key(&session("s1")));
    r.engine
        .join(&id, join_request("s3", "u", "n"))
        .expect("recovers after the fault");
}

#[test]
fn invalid_config_is_refused() {
    let mut config = EngineConfig::new(node("a"));
    config.replica.hot_rooms = 0;
    assert!(matches!(
        Engine::in_memory(config),
        Err(Error::Invalid {
            field: "hot_rooms",
            ..
        })
    ));
}

#[test]
fn a_long_history_imports_whole() {
    // More changes than the pending buffer holds: an import used to apply
    // the first 1 024 new changes, drop the rest and answer success.
    let (a, id) = setup();
    for i in 0..800 {
        let s = format!("s{i}");
        a.engine
            .join(&id, join_request(&s, "u", "sfu-1"))
            .expect("join");
        a.engine.leave(&id, &session(&s)).expect("leave");
    }
    let bytes = a.engine.export_room(&id).expect("export");
    let b = replica("b", 5_000);
    assert_eq!(b.engine.import_room(&bytes).expect("import"), id);
    let (theirs, ours) = (
        b.engine.room(&id).expect("read").expect("imported"),
        a.engine.room(&id).expect("read").expect("exists"),
    );
    assert_eq!(
        theirs.sessions.len(),
        ours.sessions.len(),
        "sessions imported"
    );
    assert!(theirs == ours, "the imported room differs");
}

/// The driver as a task on the caller's runtime (`Engine::spawn`): blocking
/// calls from `spawn_blocking` are answered while the runtime drives it.
#[test]
fn an_engine_runs_on_the_callers_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let kv = std::sync::Arc::new(chorus_engine::storage::MemKv::new());
        let config = EngineConfig::new(node("a"));
        let clock = std::sync::Arc::new(SystemClock);
        let engine = Engine::spawn(kv, config, clock, Standalone).expect("spawn");
        let engine = std::sync::Arc::new(engine);
        let e = engine.clone();
        let snapshot = tokio::task::spawn_blocking(move || {
            let id = room("on-caller");
            e.create_room(&id, &tenant("acme"), RoomConfig::default())?;
            e.room(&id)
        })
        .await
        .expect("blocking task")
        .expect("read");
        assert!(snapshot.is_some(), "the write was applied and read back");
    });
    assert!(
        Engine::spawn(
            std::sync::Arc::new(chorus_engine::storage::MemKv::new()),
            EngineConfig::new(node("b")),
            std::sync::Arc::new(SystemClock),
            Standalone,
        )
        .is_err(),
        "outside a runtime, spawn is an error, not a panic"
    );
}

/// Once the driver is gone, subscribers are told so (`Closed`), even while
/// a handle lives on; later calls are errors, not hangs.
#[test]
fn shutdown_closes_subscriptions_and_refuses_later_calls() {
    let r = replica("a", 0);
    let mut changes = r.engine.subscribe();
    let mut calls = r.engine.node_events();
    r.engine.shutdown().expect("clean shutdown");
    assert_eq!(changes.blocking_recv(), Err(RecvError::Closed));
    assert_eq!(calls.blocking_recv(), Err(RecvError::Closed));
    assert!(matches!(r.engine.room(&room("r")), Err(Error::Stopped(_))));
    assert_eq!(r.engine.subscribe().try_recv(), Err(RecvError::Closed));
}

/// A restart with the wall clock behind the stored stamps (a clock stepped
/// back, a store moved to another machine) continues the change log after
/// its newest stamp: a consumer resuming from that stamp (SSE's
/// `Last-Event-ID`, a peer's since-cursor) sees every later change.
#[test]
fn stamps_continue_after_a_restart_with_the_clock_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = |now_ms: u64| {
        let kv = std::sync::Arc::new(storage::SledKv::open(dir.path()).expect("sled"));
        let clock = std::sync::Arc::new(ManualClock::new(now_ms));
        Engine::with_storage(kv, EngineConfig::new(node("a")), clock).expect("open")
    };
    let id = room("r");
    let before = {
        let e = open(10_000_000);
        e.create_room(&id, &tenant("t"), RoomConfig::default())
            .expect("create");
        e.join(&id, join_request("s1", "u", "sfu-1")).expect("join");
        let (entries, _) = e.change_log(None, 100).expect("log");
        entries.last().expect("logged").0
    };
    let e = open(1_000);
    e.join(&id, join_request("s2", "u", "sfu-1")).expect("join");
    let (after, _) = e.change_log(Some(before), 100).expect("log");
    assert_eq!(
        after.len(),
        1,
        "the write after the restart follows {before}"
    );
    assert!(after[0].0 > before);
}
