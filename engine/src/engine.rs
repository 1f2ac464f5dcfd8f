//! [`Engine`]: the in-process face of Chorus for media nodes. It holds a
//! full replica: a driver task owns the sans-IO [`Replica`] and the store,
//! and, given a [`Transport`], replicates with peers, detects failures and
//! re-homes calls. Without one it is a single-node store. Reads and writes
//! are local; a write returns once it is durable.
//!
//! The methods block the calling thread until the driver answers. Call
//! them from threads of your own, or from `spawn_blocking` in async code.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use crate::clock::{Clock, ManualClock, SystemClock};
use crate::driver::{
    Command, Done, Driver, Feeds, NodeEvent, QueryCtx, StampedChange, Standalone, Transport,
    WeakFeeds, Write,
};
use crate::error::{Error, Result};
use crate::events::ChangeEvent;
use crate::hlc::Timestamp;
use crate::ids::{NodeId, RoomId, SessionId, TenantId};
use crate::limits::{
    COMMAND_QUEUE_MAX, DRAIN_RATE_MAX, EVENT_QUEUE_DEFAULT, IMPORTS_MERGING_MAX, LEAVE_ACK_POLL_MS,
    LEAVE_ACK_WAIT_MS,
};
use crate::membership::{AppHealth, Intent};
use crate::model::*;
use crate::replica::{Incident, Input, Replica, ReplicaConfig, ReplicaStats};
use crate::resume::Resumed;
use crate::room::RoomOp;
use crate::rooms::LogEntry;
use crate::storage::{Kv, MemKv, SledKv};
use crate::subscription::Subscription;

/// A page of the stored change log, and the newest stamp trimmed away.
pub type LogPage = (Vec<(Timestamp, LogEntry)>, Option<Timestamp>);

/// Engine settings: the replica's, and the event queues'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// The replica: its id (unique in the cluster), cluster, peers, timers
    /// and limits (see [`ReplicaConfig`]).
    pub replica: ReplicaConfig,
    /// Events a subscriber may fall behind before it gets `Lagged`.
    pub event_queue: usize,
}

impl EngineConfig {
    /// A single replica `node` in cluster 0, with every default.
    pub fn new(node: NodeId) -> Self {
        Self {
            replica: ReplicaConfig::new(node, 0),
            event_queue: EVENT_QUEUE_DEFAULT,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.replica.validate()?;
        if self.event_queue == 0 {
            return Err(Error::Invalid {
                field: "event_queue",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// The local replica of every room, embedded in a media node.
pub struct Engine {
    /// `None` once dropping: closing it stops the driver.
    commands: Option<mpsc::Sender<Command>>,
    feeds: WeakFeeds,
    node: NodeId,
    /// The driver's own thread, when it has one (joined on drop, so the
    /// store is closed when the engine is gone).
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    /// Imports merging on callers' threads (`IMPORTS_MERGING_MAX`).
    merging: tokio::sync::Semaphore,
}

impl Engine {
    /// Opens (or creates) a store on disk with sled. Rooms load on demand.
    /// Blocks: if the store's lock is still held (a previous engine on the
    /// same path just closed), it waits up to `STORE_LOCK_WAIT_MS` (2 s);
    /// from async code call it through `spawn_blocking`.
    pub fn open(path: &Path, config: EngineConfig) -> Result<Self> {
        let kv = SledKv::open(path)?;
        Self::with_storage(Arc::new(kv), config, Arc::new(SystemClock))
    }

    /// An engine whose storage lives in memory only.
    pub fn in_memory(config: EngineConfig) -> Result<Self> {
        Self::with_storage(Arc::new(MemKv::new()), config, Arc::new(SystemClock))
    }

    /// A single-node engine over any store and clock.
    pub fn with_storage(
        kv: Arc<dyn Kv>,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        Self::start(kv, config, clock, || async { Ok(Standalone) })
    }

    /// An engine whose driver runs on a thread of its own, with a network
    /// made there by `transport` (so it can bind sockets on that thread's
    /// runtime). Returns once the replica is open.
    ///
    /// Each open bumps the store's incarnation, from which this run's
    /// automerge actor is derived: a change made in memory but lost in a
    /// crash never collides with one made after the restart.
    pub fn start<T, F, Fut>(
        kv: Arc<dyn Kv>,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        transport: F,
    ) -> Result<Self>
    where
        T: Transport,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T>>,
    {
        config.validate()?;
        let config = with_work_off_task(config);
        let feeds = Feeds::new(config.event_queue);
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE_MAX);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let node = config.replica.node.clone();
        let driver_feeds = feeds;
        let feeds = driver_feeds.downgrade();
        let thread = std::thread::Builder::new()
            .name(format!("chorus-{node}"))
            .spawn(move || -> Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Stopped(format!("cannot start a runtime: {e}")))?;
                let opened = runtime.block_on(async {
                    let transport = transport().await?;
                    let replica = Replica::new(config.replica, kv.clone(), clock.now_ms())?;
                    Driver::new(replica, kv, clock, transport, driver_feeds)
                });
                match opened {
                    Ok(driver) => {
                        let _ = ready_tx.send(Ok(()));
                        runtime.block_on(driver.run(receiver))
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        Ok(())
                    }
                }
            })
            .map_err(|e| Error::Stopped(format!("cannot start the driver thread: {e}")))?;
        let ready = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(Error::Stopped("the driver thread died".into())));
        if let Err(err) = ready {
            let _ = thread.join();
            return Err(err);
        }
        Ok(Self {
            commands: Some(commands),
            feeds,
            node,
            thread: Some(thread),
            merging: tokio::sync::Semaphore::new(IMPORTS_MERGING_MAX),
        })
    }

    /// An engine whose driver is a task on the current tokio runtime. Its
    /// blocking methods must then not run on that runtime's threads (use
    /// `spawn_blocking`): they would wait for a task they keep from running.
    /// Dropping it does not wait for the final flush: call `shutdown`
    /// (from a blocking thread) first.
    pub fn spawn<T: Transport>(
        kv: Arc<dyn Kv>,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        transport: T,
    ) -> Result<Self> {
        config.validate()?;
        let config = with_work_off_task(config);
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Stopped("Engine::spawn needs a tokio runtime".into()))?;
        let feeds = Feeds::new(config.event_queue);
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE_MAX);
        let node = config.replica.node.clone();
        let replica = Replica::new(config.replica, kv.clone(), clock.now_ms())?;
        let weak = feeds.downgrade();
        let driver = Driver::new(replica, kv, clock, transport, feeds)?;
        runtime.spawn(async move {
            if let Err(err) = driver.run(receiver).await {
                tracing::error!(%err, "the replica stopped");
            }
        });
        Ok(Self {
            commands: Some(commands),
            feeds: weak,
            node,
            thread: None,
            merging: tokio::sync::Semaphore::new(IMPORTS_MERGING_MAX),
        })
    }

    /// Stops the driver after the commands already sent, flushes, and
    /// returns how it ended (a store failure, for one).
    pub fn stop(mut self) -> Result<()> {
        self.commands = None;
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(Error::Stopped("the driver panicked".into()))),
            None => Ok(()),
        }
    }

    /// Like `stop`, for a shared handle: the driver finishes the commands
    /// sent before, flushes and closes the store; later calls get
    /// `Error::Stopped`.
    pub fn shutdown(&self) -> Result<()> {
        self.send(Command::Stop)?;
        self.wait_stopped();
        match crate::driver::lock(&self.feeds.outcome).take() {
            Some(why) => Err(Error::Stopped(why)),
            None => Ok(()),
        }
    }

    /// Tells the peers that this replica stops on purpose, and why
    /// (`Intent::Restart`: hold my calls, I am back within the restart
    /// grace; `Intent::Stop`: take them now), then stops like `shutdown`.
    /// Waits for every connected peer to acknowledge, at most
    /// `LEAVE_ACK_WAIT_MS`: a peer that did not hear it detects the
    /// departure as a failure. Returns how many peers did not acknowledge.
    pub fn leave_cluster(&self, intent: Intent) -> Result<usize> {
        self.send(Command::Input(Input::Leave { intent }))?;
        let deadline = std::time::Instant::now() + Duration::from_millis(LEAVE_ACK_WAIT_MS);
        let missing = loop {
            let (done, missing) = self.query(|ctx| {
                Ok((
                    ctx.replica.departure_acknowledged(),
                    ctx.replica.departure_unacknowledged(),
                ))
            })?;
            if done || std::time::Instant::now() >= deadline {
                break missing;
            }
            std::thread::sleep(Duration::from_millis(LEAVE_ACK_POLL_MS));
        };
        self.shutdown()?;
        Ok(missing)
    }

    /// Blocks until the driver has stopped (asked to, or on a store failure
    /// it could not recover from) and closed the store.
    pub fn wait_stopped(&self) {
        if let Some(commands) = &self.commands {
            futures::executor::block_on(commands.closed());
        }
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Commands waiting for the driver.
    pub fn commands_queued(&self) -> usize {
        self.commands
            .as_ref()
            .map_or(0, |c| c.max_capacity() - c.capacity())
    }

    /// Subscribes to change events from now on.
    pub fn subscribe(&self) -> Subscription<ChangeEvent> {
        Subscription::new(self.feeds.changes())
    }

    /// Change events with the stamp of the change-log entry holding them,
    /// for feeds that resume from [`Engine::change_log`].
    pub fn subscribe_stamped(&self) -> Subscription<StampedChange> {
        Subscription::new(self.feeds.stamped())
    }

    /// Events a media node acts on: calls acquired and released, grades,
    /// drain orders for this node.
    pub fn node_events(&self) -> Subscription<NodeEvent> {
        Subscription::new(self.feeds.node())
    }

    // ---- writes ---------------------------------------------------------

    /// Applies one operation durably. Every typed write below calls this.
    pub fn write(&self, room: &RoomId, op: RoomOp) -> Result<WriteAck> {
        let room = room.clone();
        ack(self.submit(Write::Local { room, op })?)
    }

    /// Creates the room, or updates its config if it exists, in one step.
    pub fn upsert_room(
        &self,
        room: &RoomId,
        tenant: &TenantId,
        config: RoomConfig,
        update: ConfigUpdate,
    ) -> Result<WriteAck> {
        ack(self.submit(Write::Upsert {
            room: room.clone(),
            tenant: tenant.clone(),
            config,
            update,
        })?)
    }

    // ---- reads ----------------------------------------------------------

    /// The room after every conflict rule, or `None` if unknown.
    pub fn room(&self, room: &RoomId) -> Result<Option<RoomSnapshot>> {
        let room = room.clone();
        self.query(move |ctx| ctx.replica.room(&room))
    }

    /// Client resume: checks `token` against the session's stored hash and
    /// returns who hosts the call now (see [`crate::resume`]).
    pub fn resume(&self, room: &RoomId, session: &SessionId, token: &str) -> Result<Resumed> {
        // The session as the document holds it: a departed one past its
        // retention must still be refused as "has left", not as unknown.
        let (id, sid) = (room.clone(), session.clone());
        let reading = self.query(move |ctx| ctx.replica.room_with_session(&id, &sid))?;
        crate::resume::resume(room, reading.as_ref(), session, token)
    }

    /// Every room, from the index (no room is loaded).
    pub fn list_rooms(&self) -> Result<Vec<RoomSummary>> {
        self.query(|ctx| ctx.replica.list_rooms())
    }

    /// Live calls in active rooms whose current owner is `node`, from the index.
    pub fn calls_owned_by(&self, node: &NodeId) -> Result<Vec<OwnedCall>> {
        let node = node.clone();
        self.query(move |ctx| Ok(ctx.replica.calls_owned_by(&node)))
    }

    /// Durability flushes run so far (a turn of the driver shares one).
    pub fn flush_count(&self) -> u64 {
        self.feeds.flushes.load(Ordering::Relaxed)
    }

    /// Rooms currently loaded in memory.
    pub fn hot_rooms(&self) -> usize {
        self.query(|ctx| Ok(ctx.replica.hot_rooms())).unwrap_or(0)
    }

    /// The replica's counters.
    pub fn stats(&self) -> Result<ReplicaStats> {
        self.query(|ctx| Ok(ctx.replica.stats().clone()))
    }

    /// Incident-journal entries after `after`, oldest first.
    pub fn incidents(&self, after: Option<Timestamp>, limit: usize) -> Result<Vec<Incident>> {
        self.query(move |ctx| ctx.replica.incidents(after.as_ref(), limit))
    }

    /// Stored change-log entries after `after` (from the oldest held if
    /// `None`), and the newest stamp trimmed away, read together.
    pub fn change_log(&self, after: Option<Timestamp>, limit: usize) -> Result<LogPage> {
        self.query(move |ctx| {
            let entries = ctx.replica.change_log(after.as_ref(), limit)?;
            Ok((entries, ctx.replica.log_horizon()))
        })
    }

    // ---- failure handling ------------------------------------------------

    /// Grades, moves, drain orders, and whether this replica sees a
    /// majority (failovers run only then).
    pub fn nodes_view(&self) -> Result<crate::replica::NodesView> {
        self.query(|ctx| Ok(ctx.replica.nodes_view()))
    }

    /// Reports this media node's load and call-setup failures; over the
    /// configured thresholds the cluster grades it Degraded.
    pub fn report_health(&self, app: AppHealth) -> Result<()> {
        self.send(Command::Input(Input::Health { app }))
    }

    /// Drains `node` (`active: false` cancels): its calls move away at
    /// `rate_per_s` (the configured default if `None`).
    pub fn drain(&self, node: &NodeId, rate_per_s: Option<u32>, active: bool) -> Result<()> {
        if let Some(rate) = rate_per_s.filter(|r| *r == 0 || *r > DRAIN_RATE_MAX) {
            return Err(Error::Invalid {
                field: "rate_per_s",
                reason: format!("{rate}: must be between 1 and {DRAIN_RATE_MAX}"),
            });
        }
        self.send(Command::Input(Input::Drain {
            node: node.clone(),
            rate_per_s,
            active,
        }))
    }

    /// Runs `f` on the driver with the replica (and the transport, for a
    /// network's own views), after any pending flush. For the daemon's
    /// views; keep `f` short: the replica waits for it.
    pub fn inspect<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Replica, &mut dyn std::any::Any) -> R + Send + 'static,
    {
        self.query(move |ctx| Ok(f(ctx.replica, ctx.transport)))
    }

    // ---- automerge interchange and replication ---------------------------

    /// The room as standard automerge bytes (see `docs/data-model.md`).
    pub fn export_room(&self, room: &RoomId) -> Result<Vec<u8>> {
        let room = room.clone();
        self.query(move |ctx| {
            ctx.replica
                .export_room(&room)?
                .ok_or(Error::UnknownRoom(room))
        })
    }

    /// Merges a room exported by any automerge implementation into this
    /// replica (creating it if new). Returns the room id it names.
    ///
    /// The bytes are bounded (`IMPORT_BYTES_MAX`, and what they decompress
    /// to), the document must hold the genesis change of the room it names,
    /// and its changes are validated like a peer's, all or nothing: an
    /// invalid change refuses the import (`Error::Refused`, naming the path
    /// and the rule) and changes nothing.
    ///
    /// The decoding, validation and merge run on the calling thread, on a
    /// copy of the room: the replica only copies the room and swaps the
    /// result in, so it keeps answering peers (failure-detection probes
    /// included) during a large import.
    pub fn import_room(&self, bytes: &[u8]) -> Result<RoomId> {
        Ok(self.import(None, bytes)?.room)
    }

    /// Like `import_room`, for a caller that names the room: a document of
    /// any other room is refused.
    pub fn import_room_as(&self, room: &RoomId, bytes: &[u8]) -> Result<WriteAck> {
        self.import(Some(room), bytes)
    }

    fn import(&self, room: Option<&RoomId>, bytes: &[u8]) -> Result<WriteAck> {
        let _turn = futures::executor::block_on(self.merging.acquire()).map_err(|_| stopped())?;
        let prepared = crate::room::import::decode(bytes, room).and_then(|(room, changes)| {
            let fork = self.query(move |ctx| ctx.replica.fork_room(&room))?;
            fork.prepare(changes)
        });
        match prepared {
            Ok(prepared) => ack(self.submit(Write::ImportPrepared(Box::new(prepared)))?),
            Err(err) => {
                if !matches!(err, Error::Stopped(_)) {
                    let _ = self.query(|ctx| {
                        ctx.replica.note_refused_import();
                        Ok(())
                    });
                }
                Err(err)
            }
        }
    }

    /// The room's current heads (empty if unknown).
    pub fn heads(&self, room: &RoomId) -> Result<Vec<Head>> {
        let room = room.clone();
        self.query(move |ctx| ctx.replica.heads(&room))
    }

    /// Raw bytes of the changes a replica with heads `have` lacks.
    pub fn changes_since(&self, room: &RoomId, have: &[Head]) -> Result<Vec<Vec<u8>>> {
        let room = room.clone();
        let have = have.to_vec();
        self.query(move |ctx| ctx.replica.changes_since(&room, &have))
    }

    /// Applies raw changes from elsewhere, durably. Malformed bytes refuse
    /// the whole batch before anything is applied; changes that break the
    /// room's schema are refused one by one (`RemoteOutcome::refused`).
    /// What applies is pushed to this replica's peers.
    pub fn apply_remote(&self, room: &RoomId, changes: Vec<Vec<u8>>) -> Result<RemoteOutcome> {
        let room = room.clone();
        match self.submit(Write::Apply { room, changes })? {
            Done::Applied(outcome) => Ok(outcome),
            Done::Ack(_) => Err(Error::Stopped("a write answered an apply".into())),
        }
    }

    // ---- plumbing -------------------------------------------------------

    fn submit(&self, write: Write) -> Result<Done> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Write { write, reply })?;
        futures::executor::block_on(answer).unwrap_or_else(|_| Err(stopped()))
    }

    fn query<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut QueryCtx<'_>) -> Result<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Query(Box::new(move |ctx| {
            let _ = reply.send(ctx.and_then(f));
        })))?;
        futures::executor::block_on(answer).unwrap_or_else(|_| Err(stopped()))
    }

    pub(crate) fn send(&self, command: Command) -> Result<()> {
        let commands = self.commands.as_ref().ok_or_else(stopped)?;
        futures::executor::block_on(commands.send(command)).map_err(|_| stopped())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.commands = None;
        // Never join from the driver's own thread (a handle dropped inside
        // an `inspect` closure): that would wait for itself.
        let own = self
            .thread
            .as_ref()
            .is_some_and(|t| t.thread().id() == std::thread::current().id());
        if let Some(thread) = self.thread.take().filter(|_| !own) {
            if let Ok(Err(err)) = thread.join() {
                tracing::error!(%err, "the replica stopped with an error");
            }
        }
    }
}

/// The driver runs the replica's `Output::Work` on threads of its own.
/// What this driver gives the replica beyond the caller's configuration:
/// a thread for work off its task, and (unless the caller chose one) a seed
/// from the operating system, which also tells a new store's identity from
/// that of an earlier store of the same node (`ids::StoreId`).
fn with_work_off_task(mut config: EngineConfig) -> EngineConfig {
    config.replica.work_off_task = true;
    if config.replica.seed == 0 {
        config.replica.seed = rand::random::<u64>() | 1;
    }
    config
}

pub(crate) fn stopped() -> Error {
    Error::Stopped("the replica's driver is not running".into())
}

pub(crate) fn ack(done: Done) -> Result<WriteAck> {
    match done {
        Done::Ack(ack) => Ok(ack),
        Done::Applied(_) => Err(Error::Stopped("an apply answered a write".into())),
    }
}
