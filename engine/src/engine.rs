//! [`Engine`]: the in-process face of Chorus for media nodes. Reads and
//! writes are local; a write returns once it is durable. It is a driver of
//! the pure [`RoomSet`]: it owns the store, the wall clock and the locks.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use automerge::{ActorId, Change};
use tokio::sync::broadcast;

use crate::commit::GroupCommit;
use crate::error::{Error, Result};
use crate::events::{ChangeEvent, ChangeKind, Origin};
use crate::hlc::Hlc;
use crate::ids::{NodeId, RoomId, SessionId, TenantId, TrackId, UserId};
use crate::limits::{EVENT_QUEUE_DEFAULT, HOT_ROOMS_DEFAULT, WRITE_SHARDS_DEFAULT};
use crate::model::*;
use crate::resume::Resumed;
use crate::room::{Intake, RoomOp, WriteCtx};
use crate::rooms::RoomSet;
use crate::storage::{keys, Batch, Kv, MemKv, SledKv, StorageError};
use crate::subscription::Subscription;

/// Engine settings. Defaults come from `limits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// This replica's id; must be unique in the cluster.
    pub node: NodeId,
    /// Rooms kept loaded in memory; others stay on disk until used. Split
    /// evenly across `write_shards`; each shard evicts its least recently
    /// used room when its share is full.
    pub hot_rooms: usize,
    /// Events a subscriber may fall behind before it gets `Lagged`.
    pub event_queue: usize,
    /// Independently locked shards of rooms: writes to rooms in different
    /// shards run in parallel.
    pub write_shards: usize,
}

impl EngineConfig {
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            hot_rooms: HOT_ROOMS_DEFAULT,
            event_queue: EVENT_QUEUE_DEFAULT,
            write_shards: WRITE_SHARDS_DEFAULT,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.hot_rooms == 0 || self.hot_rooms > crate::limits::HOT_ROOMS_MAX {
            return Err(Error::Invalid {
                field: "hot_rooms",
                reason: format!("must be 1..={}", crate::limits::HOT_ROOMS_MAX),
            });
        }
        if self.event_queue == 0 {
            return Err(Error::Invalid {
                field: "event_queue",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// Wall-clock milliseconds since the Unix epoch. Injected so that tests and
/// the simulator control time.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        since.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock moved by hand, for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

impl ManualClock {
    pub fn new(now_ms: u64) -> Self {
        Self(std::sync::atomic::AtomicU64::new(now_ms))
    }

    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The local replica of every room, embedded in a media node.
pub struct Engine {
    /// Rooms split by hash into independently locked shards, so writes to
    /// different rooms run in parallel (and share group-commit flushes).
    shards: Vec<Mutex<RoomSet>>,
    hlc: Mutex<Hlc>,
    kv: Arc<dyn Kv>,
    commit: GroupCommit,
    events: broadcast::Sender<ChangeEvent>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
}

/// Name of the metadata key counting how often this store was opened.
const INCARNATION: &str = "incarnation";

impl Engine {
    /// Opens (or creates) a store on disk with sled. Rooms load on demand.
    pub fn open(path: &Path, config: EngineConfig) -> Result<Self> {
        let kv = SledKv::open(path)?;
        Self::with_storage(Arc::new(kv), config, Arc::new(SystemClock))
    }

    /// An engine whose storage lives in memory only.
    pub fn in_memory(config: EngineConfig) -> Result<Self> {
        Self::with_storage(Arc::new(MemKv::new()), config, Arc::new(SystemClock))
    }

    /// An engine over any store and clock.
    ///
    /// Each open bumps a stored incarnation number and derives this run's
    /// automerge actor from (node, incarnation). A change made in memory but
    /// lost in a crash can then never collide with a different change of the
    /// same actor and sequence number made after the restart.
    pub fn with_storage(
        kv: Arc<dyn Kv>,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        config.validate()?;
        let incarnation = next_incarnation(kv.as_ref())?;
        let actor = actor_for(&config.node, incarnation);
        // Never more shards than hot rooms, so the shards' caches together
        // hold at most `hot_rooms`.
        let shard_count = config.write_shards.min(config.hot_rooms).max(1);
        let per_shard =
            NonZeroUsize::new(config.hot_rooms / shard_count).ok_or(Error::Invalid {
                field: "hot_rooms",
                reason: "must be at least 1".into(),
            })?;
        let mut shards = Vec::with_capacity(shard_count);
        for _ in 0..shard_count {
            // The facade does not run anti-entropy: no digest tree to load.
            let rooms = RoomSet::open_without_digests(kv.as_ref(), actor.clone(), per_shard)?;
            shards.push(Mutex::new(rooms));
        }
        let (events, _) = broadcast::channel(config.event_queue);
        Ok(Self {
            shards,
            hlc: Mutex::new(Hlc::new(hlc_actor(&config.node))),
            kv,
            commit: GroupCommit::new(),
            events,
            clock,
            config,
        })
    }

    pub fn node(&self) -> &NodeId {
        &self.config.node
    }

    /// Subscribes to change events from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(self.events.subscribe())
    }

    // ---- writes ---------------------------------------------------------

    /// Applies one operation durably. Every typed write below calls this.
    pub fn write(&self, room: &RoomId, op: RoomOp) -> Result<WriteAck> {
        let (ticket, local) = {
            let now_ms = self.clock.now_ms();
            let stamp = self.tick(now_ms);
            let mut rooms = self.shard(room);
            let ctx = WriteCtx {
                room,
                stamp,
                now_ms,
            };
            let mut local = rooms.local_write(self.kv.as_ref(), &ctx, &op)?;
            let batch = std::mem::take(&mut local.batch);
            self.apply_or_evict(&mut rooms, room, batch)?;
            (self.commit.issue(), local)
        };
        self.wait_durable(ticket)?;
        self.announce(room, Origin::Local, local.kinds);
        Ok(WriteAck {
            room: room.clone(),
            heads: local.heads,
        })
    }

    pub fn create_room(
        &self,
        room: &RoomId,
        tenant: &TenantId,
        config: RoomConfig,
    ) -> Result<WriteAck> {
        self.write(
            room,
            RoomOp::Create {
                tenant: tenant.clone(),
                config,
            },
        )
    }

    pub fn update_config(&self, room: &RoomId, update: ConfigUpdate) -> Result<WriteAck> {
        self.write(room, RoomOp::UpdateConfig { update })
    }

    pub fn set_permission(
        &self,
        room: &RoomId,
        user: &UserId,
        permission: Permission,
    ) -> Result<WriteAck> {
        self.write(
            room,
            RoomOp::SetPermission {
                user: user.clone(),
                permission,
            },
        )
    }

    pub fn remove_permission(&self, room: &RoomId, user: &UserId) -> Result<WriteAck> {
        self.write(room, RoomOp::RemovePermission { user: user.clone() })
    }

    pub fn join(&self, room: &RoomId, request: JoinRequest) -> Result<WriteAck> {
        self.write(room, RoomOp::Join { request })
    }

    pub fn set_state(
        &self,
        room: &RoomId,
        session: &SessionId,
        state: SessionState,
    ) -> Result<WriteAck> {
        self.write(
            room,
            RoomOp::SetState {
                session: session.clone(),
                state,
            },
        )
    }

    pub fn leave(&self, room: &RoomId, session: &SessionId) -> Result<WriteAck> {
        self.write(
            room,
            RoomOp::Leave {
                session: session.clone(),
            },
        )
    }

    pub fn publish(
        &self,
        room: &RoomId,
        session: &SessionId,
        track_id: &TrackId,
        track: Track,
    ) -> Result<WriteAck> {
        let op = RoomOp::Publish {
            session: session.clone(),
            track_id: track_id.clone(),
            track,
        };
        self.write(room, op)
    }

    pub fn unpublish(
        &self,
        room: &RoomId,
        session: &SessionId,
        track_id: &TrackId,
    ) -> Result<WriteAck> {
        self.write(
            room,
            RoomOp::Unpublish {
                session: session.clone(),
                track_id: track_id.clone(),
            },
        )
    }

    /// Moves a call to `node` at `epoch`; `(epoch, node)` must exceed the
    /// current owner's.
    pub fn set_owner(
        &self,
        room: &RoomId,
        session: &SessionId,
        node: &NodeId,
        epoch: u64,
    ) -> Result<WriteAck> {
        let owner = Owner {
            epoch,
            node: node.clone(),
        };
        self.write(
            room,
            RoomOp::SetOwner {
                session: session.clone(),
                owner,
            },
        )
    }

    pub fn end_room(&self, room: &RoomId) -> Result<WriteAck> {
        self.write(room, RoomOp::End)
    }

    // ---- reads ----------------------------------------------------------

    /// The room after every conflict rule, or `None` if unknown.
    pub fn room(&self, room: &RoomId) -> Result<Option<RoomSnapshot>> {
        self.shard(room).snapshot(self.kv.as_ref(), room)
    }

    /// Client resume: checks `token` against the session's stored hash and
    /// returns who hosts the call now (see [`crate::resume`]).
    pub fn resume(&self, room: &RoomId, session: &SessionId, token: &str) -> Result<Resumed> {
        let snapshot = self.room(room)?;
        crate::resume::resume(room, snapshot.as_ref(), session, token)
    }

    /// Every room, from the index (no room is loaded).
    pub fn list_rooms(&self) -> Result<Vec<RoomSummary>> {
        let entries = self.kv.scan_prefix(keys::INDEX)?;
        entries
            .into_iter()
            .map(|(key, value)| {
                serde_json::from_slice(&value).map_err(|e| {
                    Error::Storage(StorageError::Malformed {
                        key: String::from_utf8_lossy(&key).into_owned(),
                        reason: e.to_string(),
                    })
                })
            })
            .collect()
    }

    /// Live calls in active rooms whose current owner is `node`, from the index.
    pub fn calls_owned_by(&self, node: &NodeId) -> Result<Vec<OwnedCall>> {
        crate::rooms::owned_calls(self.kv.as_ref(), node)
    }

    /// Durability flushes run so far (group commit shares them).
    pub fn flush_count(&self) -> u64 {
        self.commit.flushes()
    }

    /// Rooms currently loaded in memory.
    pub fn hot_rooms(&self) -> usize {
        self.shards.iter().map(|s| lock(s).hot_len()).sum()
    }

    // ---- automerge interchange and replication ---------------------------

    /// The room as standard automerge bytes (see `docs/data-model.md`).
    pub fn export_room(&self, room: &RoomId) -> Result<Vec<u8>> {
        let bytes = self.shard(room).export(self.kv.as_ref(), room)?;
        bytes.ok_or_else(|| Error::UnknownRoom(room.clone()))
    }

    /// Merges a room exported by any automerge implementation into this
    /// replica (creating it if new). Returns the room id it names.
    ///
    /// The bytes are bounded (`IMPORT_BYTES_MAX`, and what they decompress
    /// to), the document must hold the genesis change of the room it names,
    /// and its changes are validated like a peer's, all or nothing: an
    /// invalid change refuses the import (`Error::Refused`, naming the path
    /// and the rule) and changes nothing.
    pub fn import_room(&self, bytes: &[u8]) -> Result<RoomId> {
        let (room, changes) = crate::room::import::decode(bytes, None)?;
        self.apply_changes(&room, changes, Intake::Whole)?;
        Ok(room)
    }

    /// Like `import_room`, for a caller that names the room: a document of
    /// any other room is refused.
    pub fn import_room_as(&self, room: &RoomId, bytes: &[u8]) -> Result<WriteAck> {
        let (room, changes) = crate::room::import::decode(bytes, Some(room))?;
        self.apply_changes(&room, changes, Intake::Whole)?;
        Ok(WriteAck {
            heads: self.heads(&room)?,
            room,
        })
    }

    /// The room's current heads (empty if unknown).
    pub fn heads(&self, room: &RoomId) -> Result<Vec<Head>> {
        self.shard(room).heads(self.kv.as_ref(), room)
    }

    /// Raw bytes of the changes a replica with heads `have` lacks.
    pub fn changes_since(&self, room: &RoomId, have: &[Head]) -> Result<Vec<Vec<u8>>> {
        let changes = self
            .shard(room)
            .changes_since(self.kv.as_ref(), room, have)?;
        Ok(changes
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect())
    }

    /// Applies raw changes from a peer, durably. Malformed bytes refuse the
    /// whole batch before anything is applied; changes that break the
    /// room's schema are refused one by one (`RemoteOutcome::refused`).
    pub fn apply_remote(&self, room: &RoomId, changes: Vec<Vec<u8>>) -> Result<RemoteOutcome> {
        let parsed = crate::room::import::parse_changes(changes)?;
        self.apply_changes(room, parsed, Intake::EachChange)
    }

    fn apply_changes(
        &self,
        room: &RoomId,
        changes: Vec<Change>,
        intake: Intake,
    ) -> Result<RemoteOutcome> {
        let (ticket, remote) = {
            let stamp = self.tick(self.clock.now_ms());
            let mut rooms = self.shard(room);
            let mut remote = rooms.remote_apply(self.kv.as_ref(), room, changes, stamp, intake)?;
            if remote.batch.is_empty() {
                return Ok(remote.outcome);
            }
            let batch = std::mem::take(&mut remote.batch);
            self.apply_or_evict(&mut rooms, room, batch)?;
            (self.commit.issue(), remote)
        };
        self.wait_durable(ticket)?;
        self.announce(room, Origin::Remote, remote.kinds);
        Ok(remote.outcome)
    }

    // ---- plumbing -------------------------------------------------------

    fn shard(&self, room: &RoomId) -> MutexGuard<'_, RoomSet> {
        let hash = blake3::hash(room.as_str().as_bytes());
        let index = hash.as_bytes()[0] as usize % self.shards.len();
        lock(&self.shards[index])
    }

    fn tick(&self, now_ms: u64) -> crate::hlc::Timestamp {
        lock(&self.hlc).tick(now_ms)
    }
    fn apply_or_evict(&self, rooms: &mut RoomSet, room: &RoomId, batch: Batch) -> Result<()> {
        if let Err(err) = self.kv.apply(batch) {
            rooms.evict(room);
            return Err(err.into());
        }
        Ok(())
    }

    fn wait_durable(&self, ticket: crate::commit::Ticket) -> Result<()> {
        self.commit
            .wait(ticket, || self.kv.flush())
            .map_err(Error::from)
    }

    fn announce(&self, room: &RoomId, origin: Origin, changes: Vec<ChangeKind>) {
        if changes.is_empty() {
            return;
        }
        // No subscriber is not an error: events are best-effort notifications.
        let _ = self.events.send(ChangeEvent {
            room: room.clone(),
            origin,
            changes,
        });
    }
}

/// Locks a mutex, carrying on after a panic elsewhere: a panic inside the
/// lock is a bug, but the room set is still a valid cache of durable state
/// (writes reach it only through `write`, which evicts on failure).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn next_incarnation(kv: &dyn Kv) -> Result<u64> {
    let key = keys::meta(INCARNATION);
    let current = match kv.get(&key)? {
        Some(bytes) => {
            let raw: [u8; 8] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StorageError::Malformed {
                        key: INCARNATION.into(),
                        reason: "not 8 bytes".into(),
                    })?;
            u64::from_be_bytes(raw)
        }
        None => 0,
    };
    let next = current + 1;
    let mut batch = Batch::default();
    batch.put(key, next.to_be_bytes().to_vec());
    kv.apply(batch)?;
    kv.flush()?;
    Ok(next)
}

/// The automerge actor of (node, incarnation).
pub fn actor_for(node: &NodeId, incarnation: u64) -> ActorId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"chorus-actor-v1\0");
    hasher.update(node.as_str().as_bytes());
    hasher.update(&incarnation.to_be_bytes());
    ActorId::from(&hasher.finalize().as_bytes()[..16])
}

/// The HLC tie-breaker of a node: stable across restarts.
pub fn hlc_actor(node: &NodeId) -> u64 {
    let digest = blake3::hash(node.as_str().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    u64::from_be_bytes(first)
}
