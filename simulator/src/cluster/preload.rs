//! Rooms that exist before a run starts (`[workload] rooms_at_start`): a
//! cluster that has held them for a long while, every replica in sync.
//! They are created once, on a replica of their own, and the keys that
//! hold rooms are copied into each node's store before it starts, as a
//! restore from a backup would. Creating them through the cluster instead
//! (10,000 rooms, each change applied by 200 replicas) would spend minutes
//! of wall time before the scenario's first event.

use std::sync::Arc;

use chorus_engine::replica::{Input, Output, Replica, ReplicaConfig};
use chorus_engine::storage::{keys, Batch, Entry, Kv, KvRead, MemKv};
use chorus_engine::{NodeId, RoomId, RoomOp, TenantId};

use super::SIM_CLUSTER;

/// The id of the workload's room number `n` (the workload names them so).
pub fn room_id(n: u64) -> RoomId {
    RoomId::parse(format!("room-{n}")).expect("generated ids are valid")
}

/// The store entries that hold rooms `room-0 ..`, `n` of them, created by
/// a replica that is not one of the run's nodes. Only room keys are kept
/// (documents, index, digests): not the creator's log, meta or journal.
pub fn rooms(n: usize) -> Vec<Entry> {
    if n == 0 {
        return Vec::new();
    }
    let kv = Arc::new(MemKv::new());
    let creator = NodeId::parse("preload").expect("valid id");
    let mut config = ReplicaConfig::new(creator, SIM_CLUSTER);
    config.failure_detection = false;
    let mut replica = match Replica::new(config, kv.clone(), 0) {
        Ok(replica) => replica,
        Err(err) => panic!("the preload replica does not open: {err}"),
    };
    for i in 0..n as u64 {
        let op = RoomOp::Create {
            tenant: TenantId::parse("tenant").expect("valid id"),
            config: crate::workload::room_config(),
        };
        let input = Input::LocalWrite {
            id: i + 1,
            room: room_id(i),
            op,
        };
        replica.handle_input(0, input);
        while let Some(output) = replica.poll_output() {
            if let Output::Persist { batch, .. } = output {
                if let Err(err) = kv.apply(batch).and_then(|()| kv.flush()) {
                    panic!("the preload store refuses a write: {err}");
                }
            }
        }
    }
    let mut entries = Vec::new();
    for prefix in [
        keys::SNAPSHOT,
        keys::CHUNK,
        keys::INDEX,
        keys::OWNER,
        keys::DIGEST,
    ] {
        match kv.scan_prefix(prefix) {
            Ok(found) => entries.extend(found),
            Err(err) => panic!("the preload store does not scan: {err}"),
        }
    }
    entries
}

/// Writes `entries` into `kv`, durably.
pub fn install(kv: &MemKv, entries: &[Entry]) {
    if entries.is_empty() {
        return;
    }
    let mut batch = Batch::default();
    for (key, value) in entries {
        batch.put(key.clone(), value.clone());
    }
    if let Err(err) = kv.apply(batch).and_then(|()| kv.flush()) {
        panic!("a node's store refuses the preloaded rooms: {err}");
    }
}
