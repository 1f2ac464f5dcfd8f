//! How a room is stored (`HotRoom::persist_saved`, docs/data-model.md,
//! "Storage layout"): a small room's first write, and its first write after
//! it was read back from storage, leave one snapshot and no chunk; a room
//! written while hot appends a chunk; a room over 4 KiB stored appends a
//! chunk even on its first write after a cold load.

mod common;

use std::sync::Arc;

use chorus_engine::replica::{Input, Replica, ReplicaConfig};
use chorus_engine::storage::{keys, KvRead, MemKv};
use chorus_engine::*;
use common::lone::drain;
use common::*;

/// A replica over `kv` holding one room in memory at a time, so writing to
/// another room lets the first go cold.
fn open(kv: &Arc<MemKv>) -> Replica {
    let mut config = ReplicaConfig::new(node("b"), 1);
    config.hot_rooms = 1;
    let mut replica = Replica::new(config, kv.clone(), 0).expect("replica");
    drain(&mut replica, kv);
    replica
}

fn write(replica: &mut Replica, kv: &MemKv, id: &RoomId, op: RoomOp) {
    replica.handle_input(
        0,
        Input::LocalWrite {
            id: 1,
            room: id.clone(),
            op,
        },
    );
    drain(replica, kv).expect("answered").expect("acknowledged");
}

fn create(replica: &mut Replica, kv: &MemKv, id: &RoomId) {
    let op = RoomOp::Create {
        tenant: tenant("t"),
        config: RoomConfig::default(),
    };
    write(replica, kv, id, op);
}

fn join(replica: &mut Replica, kv: &MemKv, id: &RoomId, name: &str) {
    let op = RoomOp::Join {
        request: join_request(name, "u", "sfu-1"),
    };
    write(replica, kv, id, op);
}

/// (stored snapshot bytes, number of stored chunks, their bytes).
fn stored(kv: &MemKv, id: &RoomId) -> (usize, usize, usize) {
    let snapshot = kv
        .get(&keys::snapshot(id))
        .expect("read")
        .map_or(0, |s| s.len());
    let chunks = kv.scan_prefix(&keys::chunks(id)).expect("scan");
    let bytes = chunks.iter().map(|(_, v)| v.len()).sum();
    (snapshot, chunks.len(), bytes)
}

/// Lets `id` go cold: a write to `other` takes the one hot slot.
fn evict(replica: &mut Replica, kv: &MemKv, other: &RoomId, name: &str) {
    join(replica, kv, other, name);
}

#[test]
fn a_small_room_is_stored_as_a_snapshot_when_new_and_after_a_cold_load() {
    let kv = Arc::new(MemKv::new());
    let mut b = open(&kv);
    let (small, other) = (room("small"), room("other"));
    create(&mut b, &kv, &other);
    create(&mut b, &kv, &small);
    let (snapshot, chunks, _) = stored(&kv, &small);
    assert!(snapshot > 0, "a new room is stored as a snapshot");
    assert_eq!(chunks, 0, "and no chunk");

    join(&mut b, &kv, &small, "s1");
    let (after_hot, chunks, _) = stored(&kv, &small);
    assert_eq!(
        after_hot, snapshot,
        "a hot room's write leaves its snapshot"
    );
    assert_eq!(chunks, 1, "and appends a chunk");

    evict(&mut b, &kv, &other, "o1");
    join(&mut b, &kv, &small, "s2");
    let (after_cold, chunks, _) = stored(&kv, &small);
    assert!(after_cold > snapshot, "a cold room's write stores it anew");
    assert_eq!(chunks, 0, "its chunks folded into the snapshot");

    join(&mut b, &kv, &small, "s3");
    assert_eq!(stored(&kv, &small).1, 1, "hot again: a chunk");

    drop(b);
    let mut b = open(&kv);
    let names: Vec<String> = b
        .room(&small)
        .expect("read")
        .expect("exists")
        .sessions
        .keys()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, ["s1", "s2", "s3"], "stored as acknowledged");
}

#[test]
fn a_room_over_four_kib_appends_a_chunk_after_a_cold_load() {
    let kv = Arc::new(MemKv::new());
    let mut b = open(&kv);
    let (large, other) = (room("large"), room("other"));
    create(&mut b, &kv, &other);
    create(&mut b, &kv, &large);
    let mut n = 0;
    loop {
        join(&mut b, &kv, &large, &format!("s{n:03}"));
        n += 1;
        let (snapshot, _, chunk_bytes) = stored(&kv, &large);
        // Over 4 KiB, with room for one more join before the chunks
        // outgrow the snapshot (which would compact: another rule).
        if snapshot + chunk_bytes > 4096 && chunk_bytes + 1024 < snapshot.max(4096) {
            break;
        }
        assert!(n < 1_000, "the room never outgrew 4 KiB");
    }
    let (snapshot, chunks, _) = stored(&kv, &large);
    evict(&mut b, &kv, &other, "o1");
    join(&mut b, &kv, &large, "late");
    let (after, after_chunks, _) = stored(&kv, &large);
    assert_eq!(after, snapshot, "a large cold room keeps its snapshot");
    assert_eq!(after_chunks, chunks + 1, "and appends a chunk");
}
