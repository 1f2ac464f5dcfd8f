//! Helpers shared by the engine's integration tests.
#![allow(dead_code)] // each test file uses a different subset

pub mod compacting;
pub mod docs;
pub mod lone;
pub mod moving;
pub mod pair;

use std::sync::Arc;

use chorus_engine::storage::MemKv;
use chorus_engine::*;

pub fn room(id: &str) -> RoomId {
    RoomId::parse(id).expect("valid room id")
}
pub fn session(id: &str) -> SessionId {
    SessionId::parse(id).expect("valid session id")
}
pub fn user(id: &str) -> UserId {
    UserId::parse(id).expect("valid user id")
}
pub fn node(id: &str) -> NodeId {
    NodeId::parse(id).expect("valid node id")
}
pub fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).expect("valid tenant id")
}
pub fn region(id: &str) -> RegionId {
    RegionId::parse(id).expect("valid region id")
}
pub fn track(id: &str) -> TrackId {
    TrackId::parse(id).expect("valid track id")
}

/// An in-memory engine with a hand-driven clock.
pub struct TestReplica {
    pub engine: Engine,
    pub clock: Arc<ManualClock>,
    pub kv: Arc<MemKv>,
}

pub fn replica(name: &str, now_ms: u64) -> TestReplica {
    let clock = Arc::new(ManualClock::new(now_ms));
    let kv = Arc::new(MemKv::new());
    let mut config = EngineConfig::new(node(name));
    // A fixed seed: the same actors on every run (`Engine` would draw one),
    // so a test that meets automerge's actor order meets the same one.
    config.replica.seed = 1;
    let engine = Engine::with_storage(kv.clone(), config, clock.clone()).expect("engine opens");
    TestReplica { engine, clock, kv }
}

pub fn join_request(session_id: &str, user_id: &str, owner: &str) -> JoinRequest {
    JoinRequest {
        session: session(session_id),
        user: user(user_id),
        role: Role::Speaker,
        owner: node(owner),
        region: region("eu-west"),
        resume_token: Some(format!("token-{session_id}")),
    }
}

/// Sends every change of `room` that `to` lacks from `from`.
pub fn sync_room(from: &Engine, to: &Engine, room: &RoomId) {
    let have = to.heads(room).expect("heads");
    let changes = from.changes_since(room, &have).expect("changes");
    if !changes.is_empty() {
        to.apply_remote(room, changes).expect("apply");
    }
}

/// Brings two replicas level on `room` in both directions.
pub fn sync_both(a: &Engine, b: &Engine, room: &RoomId) {
    sync_room(a, b, room);
    sync_room(b, a, room);
}
