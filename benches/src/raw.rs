//! The baseline of a write: raw automerge, a room document with the maps a
//! join writes into, and a commit shaped like the engine's join.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjId, ObjType, ScalarValue, ROOT};

use crate::writers::JOINS_PER_ROOM;

/// Distinguishes the documents of every timed run.
static RUN: AtomicU64 = AtomicU64::new(0);

/// A room document as raw automerge: the maps a join writes into.
pub struct RawRoom {
    doc: Automerge,
    sessions: ObjId,
    counters: ObjId,
}

impl RawRoom {
    pub fn new(id: &str) -> Self {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(ROOT, "schema", ScalarValue::Uint(1))
            .expect("put schema");
        tx.put(ROOT, "room_id", id).expect("put room id");
        let sessions = tx
            .put_object(ROOT, "sessions", ObjType::Map)
            .expect("sessions map");
        let counters = tx
            .put_object(ROOT, "counters", ObjType::Map)
            .expect("counters map");
        tx.put(&counters, "joins", ScalarValue::counter(0))
            .expect("joins counter");
        tx.commit();
        Self {
            doc,
            sessions,
            counters,
        }
    }

    /// One commit shaped like the engine's join: a session map with a few
    /// strings, an empty tracks map and a counter increment.
    pub fn join(&mut self, session: &str, now_ms: u64) {
        let mut tx = self.doc.transaction();
        let obj = tx
            .put_object(&self.sessions, session, ObjType::Map)
            .expect("session map");
        tx.put(&obj, "user", format!("user-{session}"))
            .expect("user");
        tx.put(&obj, "role", "speaker").expect("role");
        tx.put(&obj, "region", "eu-west").expect("region");
        tx.put(&obj, "joined_at", ScalarValue::Uint(now_ms))
            .expect("joined_at");
        tx.put(
            &obj,
            "resume_hash",
            "5f2b8c0e6a1d4f3b9e7c2a8d1f6b3e9c0a4d7f2e5b8c1a6d3f9e2b7c4a0d8f1e",
        )
        .expect("resume_hash");
        tx.put(&obj, "owner", "1:sfu-1").expect("owner");
        tx.put(
            &obj,
            "state",
            format!("{now_ms:020}-{:010}-{:09}|\"connecting\"", 0, 1),
        )
        .expect("state");
        tx.put_object(&obj, "tracks", ObjType::Map)
            .expect("tracks map");
        tx.increment(&self.counters, "joins", 1)
            .expect("joins counter");
        tx.commit();
    }
}

/// Time of `commits` join-shaped commits, `JOINS_PER_ROOM` per document.
/// Creating the documents is not timed.
pub fn raw_commits(commits: u64) -> Duration {
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let mut rooms: Vec<RawRoom> = (0..commits.div_ceil(JOINS_PER_ROOM))
        .map(|k| RawRoom::new(&format!("raw{run}-r{k}")))
        .collect();
    let now_ms = 1_700_000_000_000;
    let start = Instant::now();
    for i in 0..commits {
        let room = &mut rooms[(i / JOINS_PER_ROOM) as usize];
        room.join(&format!("s{i}"), now_ms + i);
    }
    let elapsed = start.elapsed();
    black_box(&rooms);
    elapsed
}
