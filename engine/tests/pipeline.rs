//! Writes that do not block their writer (`Engine::begin_write`) and
//! several operations in one transaction (`Engine::write_batch`): all or
//! nothing, acknowledged only once durable, nothing acknowledged lost.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use chorus_engine::storage::{Batch, Entry, Kv, KvRead, MemKv, StorageError};
use chorus_engine::*;
use common::*;

fn engine() -> (Engine, RoomId) {
    let engine = Engine::in_memory(EngineConfig::new(node("a"))).expect("engine");
    let id = room("r");
    engine
        .create_room(&id, &tenant("t"), RoomConfig::default())
        .expect("create");
    (engine, id)
}

fn join(name: &str) -> RoomOp {
    RoomOp::Join {
        request: join_request(name, "u", "sfu-1"),
    }
}

#[test]
fn a_batch_is_one_change_and_one_ack() {
    let (engine, id) = engine();
    let before = engine.heads(&id).expect("heads");
    let ops = vec![
        join("s1"),
        RoomOp::Publish {
            session: session("s1"),
            track_id: track("cam"),
            track: Track {
                kind: TrackKind::Video,
                simulcast_layers: 3,
            },
        },
        RoomOp::SetState {
            session: session("s1"),
            state: SessionState::Active,
        },
    ];
    let ack = engine.write_batch(&id, ops).expect("batch");
    assert_eq!(ack.heads, engine.heads(&id).expect("heads"));
    let changes = engine.changes_since(&id, &before).expect("changes");
    assert_eq!(changes.len(), 1, "the batch is one change");
    let snapshot = engine.room(&id).expect("read").expect("room");
    let s1 = &snapshot.sessions[&session("s1")];
    assert_eq!(s1.state, SessionState::Active);
    assert!(s1.tracks.contains_key(&track("cam")));
}

#[test]
fn one_refused_operation_refuses_the_whole_batch() {
    let (engine, id) = engine();
    let before = engine.heads(&id).expect("heads");
    let ops = vec![
        join("s1"),
        RoomOp::SetState {
            session: session("nobody"),
            state: SessionState::Active,
        },
    ];
    let err = engine.write_batch(&id, ops).expect_err("refused");
    assert!(!matches!(err, Error::Storage(_)), "{err}");
    assert_eq!(engine.heads(&id).expect("heads"), before, "nothing applied");
    let snapshot = engine.room(&id).expect("read").expect("room");
    assert!(!snapshot.sessions.contains_key(&session("s1")));
    // The room still takes writes.
    engine.write_batch(&id, vec![join("s1")]).expect("batch");
}

#[test]
fn batches_hold_one_to_batch_ops_max_plain_operations() {
    let (engine, id) = engine();
    let before = engine.heads(&id).expect("heads");
    let create = RoomOp::Create {
        tenant: tenant("t"),
        config: RoomConfig::default(),
    };
    let nested = RoomOp::Batch {
        ops: vec![join("s1")],
    };
    let too_many: Vec<RoomOp> = (0..=limits::BATCH_OPS_MAX)
        .map(|i| join(&format!("s{i}")))
        .collect();
    for (what, ops) in [
        ("empty", vec![]),
        ("a create", vec![join("s1"), create]),
        ("a nested batch", vec![nested]),
        ("too many", too_many),
    ] {
        let err = engine.write_batch(&id, ops).expect_err(what);
        assert!(
            err.to_string().contains("ops"),
            "{what}: the error names the field: {err}"
        );
    }
    assert_eq!(engine.heads(&id).expect("heads"), before);
}

#[test]
fn pipelined_writes_are_answered_each_on_its_own() {
    let (engine, id) = engine();
    let mut pending = Vec::new();
    // The room holds 100 (the default): 99 here and the last one below.
    for i in 0..99 {
        pending.push(
            engine
                .begin_write(&id, join(&format!("s{i}")))
                .expect("begun"),
        );
    }
    // Refused on its own: the writes around it still apply.
    let refused = engine
        .begin_write(
            &id,
            RoomOp::SetState {
                session: session("nobody"),
                state: SessionState::Active,
            },
        )
        .expect("begun");
    let after = engine.begin_write(&id, join("last")).expect("begun");
    for p in pending {
        p.wait().expect("acknowledged");
    }
    assert!(refused.wait().is_err());
    let ack = after.wait().expect("acknowledged");
    assert_eq!(ack.heads, engine.heads(&id).expect("heads"));
    let snapshot = engine.room(&id).expect("read").expect("room");
    assert_eq!(snapshot.sessions.len(), 100);
}

#[tokio::test]
async fn a_pending_write_is_a_future() {
    let (engine, id) = engine();
    let ack = engine
        .begin_write(&id, join("s1"))
        .expect("begun")
        .await
        .expect("acknowledged");
    assert_eq!(ack.heads, engine.heads(&id).expect("heads"));
}

/// The in-memory store drops what was never flushed when it "crashes". A
/// writer keeps 32 writes in flight; once it has a round's number of
/// answers the store fails every write from then on and loses its
/// unflushed writes. Every write answered before that moment must be in the store.
#[test]
fn pipelined_writes_acknowledged_before_a_crash_survive_it() {
    for round in 0..5u64 {
        let kv = Arc::new(MemKv::new());
        let config = EngineConfig::new(node("a"));
        let engine =
            Engine::with_storage(kv.clone(), config, Arc::new(SystemClock)).expect("engine");
        let id = room("r");
        let config = RoomConfig {
            max_participants: 10_000,
            ..RoomConfig::default()
        };
        engine
            .create_room(&id, &tenant("t"), config)
            .expect("create");
        let acked: Arc<Mutex<BTreeSet<SessionId>>> = Arc::default();
        let crashed = std::sync::atomic::AtomicBool::new(false);
        let before_crash = std::thread::scope(|scope| {
            let (engine, acked, crashed, id) = (&engine, &acked, &crashed, &id);
            scope.spawn(move || {
                let mut n = 0u64;
                while !crashed.load(std::sync::atomic::Ordering::SeqCst) && n < 5_000 {
                    let window: Vec<_> = (0..32)
                        .map(|_| {
                            n += 1;
                            let name = session(&format!("s{n}"));
                            let op = join(name.as_str());
                            (name, engine.begin_write(id, op))
                        })
                        .collect();
                    for (name, pending) in window {
                        // One that fails (after the crash) was never acknowledged.
                        if let Ok(Ok(_)) = pending.map(PendingWrite::wait) {
                            acked.lock().expect("lock").insert(name);
                        }
                    }
                }
            });
            // Crash once the writer has this many answers, with more in flight.
            let target = 10 + 100 * round as usize;
            let started = std::time::Instant::now();
            let acked = loop {
                let acked = acked.lock().expect("lock");
                if acked.len() >= target || started.elapsed() > Duration::from_secs(30) {
                    break acked;
                }
                drop(acked);
                std::thread::sleep(Duration::from_millis(1));
            };
            kv.set_fail_writes(true);
            kv.crash();
            crashed.store(true, std::sync::atomic::Ordering::SeqCst);
            // What the writer learns after this moment proves nothing.
            acked.clone()
        });
        drop(engine);
        kv.set_fail_writes(false);
        let reopened = Engine::with_storage(
            kv.clone(),
            EngineConfig::new(node("a")),
            Arc::new(SystemClock),
        )
        .expect("reopens");
        let snapshot = reopened.room(&id).expect("read").expect("room");
        let missing: Vec<_> = before_crash
            .iter()
            .filter(|s| !snapshot.sessions.contains_key(*s))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged, then lost: {missing:?}"
        );
        assert!(
            !before_crash.is_empty(),
            "round {round}: nothing was acknowledged"
        );
        eprintln!(
            "round {round}: {} acknowledged writes survived",
            before_crash.len()
        );
    }
}

/// A store whose flushes wait until the test opens its gate.
#[derive(Default)]
struct GatedFlush {
    inner: MemKv,
    open: Mutex<bool>,
    opened: Condvar,
}

impl GatedFlush {
    fn open(&self) {
        *self.open.lock().expect("lock") = true;
        self.opened.notify_all();
    }
}

impl KvRead for GatedFlush {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(key)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StorageError> {
        self.inner.scan_prefix(prefix)
    }
    fn scan_after(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        self.inner.scan_after(prefix, after, limit)
    }
}

impl Kv for GatedFlush {
    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        self.inner.apply(batch)
    }
    fn flush(&self) -> Result<(), StorageError> {
        let mut open = self.open.lock().expect("lock");
        while !*open {
            open = self.opened.wait(open).expect("lock");
        }
        self.inner.flush()
    }
}

/// Deterministic: while the store cannot finish a flush, no pipelined
/// write is answered, however long the writer waits; once it can, all are.
#[test]
fn no_pipelined_write_is_answered_before_its_flush() {
    let kv = Arc::new(GatedFlush::default());
    // Opening the engine and creating the room flush: let those through,
    // then close the gate.
    kv.open();
    let engine = Engine::with_storage(
        kv.clone(),
        EngineConfig::new(node("a")),
        Arc::new(SystemClock),
    )
    .expect("engine");
    engine
        .create_room(&room("r"), &tenant("t"), RoomConfig::default())
        .expect("create");
    *kv.open.lock().expect("lock") = false;
    // Dropped before the engine, even on a failed assertion: the engine's
    // driver must be able to finish its flush to stop.
    let _gate = OpenOnDrop(kv.clone());
    let mut pending: Vec<PendingWrite> = (0..10)
        .map(|i| {
            engine
                .begin_write(&room("r"), join(&format!("s{i}")))
                .expect("begun")
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for p in &mut pending {
        assert!(
            futures::FutureExt::now_or_never(p).is_none(),
            "a write was answered before its flush"
        );
    }
    kv.open();
    for p in pending {
        p.wait().expect("acknowledged once flushed");
    }
}

struct OpenOnDrop(Arc<GatedFlush>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}
