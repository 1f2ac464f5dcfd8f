//! The in-process driver: one task owns the sans-IO [`Replica`] and feeds
//! it commands from the [`Engine`](crate::Engine) handle, inputs from the
//! network and ticks from the clock; it persists, flushes, sends and
//! answers what the replica asks. The library and the daemon both run it.
//!
//! Durability is grouped: a turn takes every command already queued, then
//! flushes once, and only then releases what depended on the writes (acks,
//! messages, events). Nothing leaves before the write it depends on is on
//! disk.

mod calls;
mod command;
mod transport;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{broadcast, mpsc};

pub use calls::{AcquireReason, NodeEvent};
pub(crate) use command::{Command, Done, QueryCtx, Reply, Write};
pub use transport::{Standalone, Transport};

use crate::engine::Clock;
use crate::error::Error;
use crate::events::ChangeEvent;
use crate::hlc::Timestamp;
use crate::limits::{
    COMMANDS_PER_TURN_MAX, NETWORK_CATCH_UP_MAX, NETWORK_CATCH_UP_MS, REOPEN_RETRY_MS,
};
use crate::replica::{Event, Input, Output, Replica, Work};
use crate::room::RoomOp;
use crate::storage::{Kv, StorageError};
use calls::CallEvents;

/// A change event with the stamp of the change-log entry that holds its
/// changes (`None`: it stored none), for feeds that resume from the log.
#[derive(Debug, Clone)]
pub struct StampedChange {
    pub stamp: Option<Timestamp>,
    pub change: ChangeEvent,
}

/// The channels the driver publishes on; the handle subscribes to them.
#[derive(Clone)]
pub(crate) struct Feeds {
    pub changes: broadcast::Sender<ChangeEvent>,
    pub stamped: broadcast::Sender<StampedChange>,
    pub node: broadcast::Sender<NodeEvent>,
    pub flushes: Arc<AtomicU64>,
    /// Why the driver's last flush failed, for `Engine::shutdown`.
    pub outcome: Arc<Mutex<Option<String>>>,
}

/// The handle's side of the feeds: weak, so that subscribers see `Closed`
/// once the driver is gone, even while handles live on.
pub(crate) struct WeakFeeds {
    changes: broadcast::WeakSender<ChangeEvent>,
    stamped: broadcast::WeakSender<StampedChange>,
    node: broadcast::WeakSender<NodeEvent>,
    pub flushes: Arc<AtomicU64>,
    pub outcome: Arc<Mutex<Option<String>>>,
}

fn subscribe<T: Clone>(sender: &broadcast::WeakSender<T>) -> broadcast::Receiver<T> {
    match sender.upgrade() {
        Some(sender) => sender.subscribe(),
        // The driver is gone: a receiver that reports `Closed`.
        None => broadcast::channel(1).1,
    }
}

impl WeakFeeds {
    pub fn changes(&self) -> broadcast::Receiver<ChangeEvent> {
        subscribe(&self.changes)
    }
    pub fn stamped(&self) -> broadcast::Receiver<StampedChange> {
        subscribe(&self.stamped)
    }
    pub fn node(&self) -> broadcast::Receiver<NodeEvent> {
        subscribe(&self.node)
    }
}

impl Feeds {
    pub fn downgrade(&self) -> WeakFeeds {
        WeakFeeds {
            changes: self.changes.downgrade(),
            stamped: self.stamped.downgrade(),
            node: self.node.downgrade(),
            flushes: self.flushes.clone(),
            outcome: self.outcome.clone(),
        }
    }

    pub fn new(capacity: usize) -> Self {
        Self {
            changes: broadcast::channel(capacity).0,
            stamped: broadcast::channel(capacity).0,
            node: broadcast::channel(capacity).0,
            flushes: Arc::new(AtomicU64::new(0)),
            outcome: Arc::new(Mutex::new(None)),
        }
    }
}

pub(crate) struct Driver<T> {
    replica: Replica,
    kv: Arc<dyn Kv>,
    clock: Arc<dyn Clock>,
    transport: T,
    feeds: Feeds,
    next_id: u64,
    /// Writes waiting for their answer, and when the driver took each
    /// (`chorus_write_ack_seconds`).
    waiting: HashMap<u64, (Reply<Done>, Instant)>,
    /// Outputs that wait for the turn's flush.
    held: Vec<Output>,
    /// A durable write was applied but not yet flushed.
    dirty: bool,
    calls: CallEvents,
    node_events: Vec<NodeEvent>,
    /// Set when the store failed: the replica is reopened from the store
    /// before it takes anything else, and until that works every write and
    /// read gets this error.
    broken: Option<StorageError>,
    stopping: bool,
    /// Results of `Output::Work` run on threads of their own.
    worked: (mpsc::UnboundedSender<Input>, mpsc::UnboundedReceiver<Input>),
}

impl<T: Transport> Driver<T> {
    pub fn new(
        replica: Replica,
        kv: Arc<dyn Kv>,
        clock: Arc<dyn Clock>,
        transport: T,
        feeds: Feeds,
    ) -> Result<Self, Error> {
        let calls = CallEvents::new(replica.node().clone());
        let mut driver = Self {
            replica,
            kv,
            clock,
            transport,
            feeds,
            next_id: 1,
            waiting: HashMap::new(),
            held: Vec::new(),
            dirty: false,
            calls,
            node_events: Vec::new(),
            broken: None,
            stopping: false,
            worked: mpsc::unbounded_channel(),
        };
        // Opening the replica staged its incarnation bump.
        driver.pump();
        driver.settle();
        match driver.broken.take() {
            Some(err) => Err(Error::Storage(err)),
            None => Ok(driver),
        }
    }

    /// Runs until every handle is gone or asks it to stop (or the store
    /// fails), then flushes. The store is closed before the command queue:
    /// a handle that sees the queue closed may reopen it.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) -> Result<(), Error> {
        self.serve(&mut commands).await;
        let result = self.kv.flush().map_err(Error::from);
        if let Err(err) = &result {
            tracing::error!(%err, "the final flush failed");
            *lock(&self.feeds.outcome) = Some(err.to_string());
        }
        drop(self);
        drop(commands);
        result
    }

    async fn serve(&mut self, commands: &mut mpsc::Receiver<Command>) {
        while !self.stopping {
            let wait = if self.broken.is_some() {
                Some(Duration::from_millis(REOPEN_RETRY_MS))
            } else {
                self.replica
                    .poll_timeout()
                    .map(|(at, _)| Duration::from_millis(at.saturating_sub(self.clock.now_ms())))
            };
            let sleep = async move {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => {
                        self.command(command);
                        // Everything already queued joins this turn (and
                        // its flush), up to a bound that keeps the network
                        // and timers served.
                        for _ in 1..COMMANDS_PER_TURN_MAX {
                            if self.stopping {
                                break;
                            }
                            match commands.try_recv() {
                                Ok(command) => self.command(command),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                // A reopened replica ignores work its predecessor asked for.
                Some(input) = self.worked.1.recv() => {
                    if self.broken.is_none() {
                        self.input(input);
                    }
                }
                // While the store is broken the network's input is
                // dropped: peers repeat it (anti-entropy).
                input = self.transport.next() => {
                    if let (Some(input), None) = (input, &self.broken) {
                        self.input(input);
                    }
                }
                () = sleep => {
                    if self.reopen() {
                        self.catch_up_network().await;
                        if self.broken.is_none() {
                            self.input(Input::Tick);
                        }
                    }
                }
            }
            self.settle();
        }
    }

    /// Before a timer runs: lets the network's tasks (they share this
    /// thread) move what reached the sockets while the driver was busy, and
    /// takes every input that is ready. Otherwise a probe whose answer
    /// arrived in time, but was not yet read, would time out.
    /// Bounded in count and in time, and settled before the timer runs,
    /// so what these inputs answer (a probe's ack) leaves first.
    async fn catch_up_network(&mut self) {
        let started = self.clock.now_ms();
        let mut idle = 0;
        for _ in 0..NETWORK_CATCH_UP_MAX {
            if self.broken.is_some()
                || self.clock.now_ms().saturating_sub(started) > NETWORK_CATCH_UP_MS
            {
                break;
            }
            tokio::task::yield_now().await;
            match self.transport.next().now_or_never() {
                Some(Some(input)) => {
                    idle = 0;
                    self.input(input);
                }
                Some(None) => idle = 0,
                // Nothing ready: give the connection tasks one more turn
                // (an answer passes through one on its way) before the timer.
                None if idle == 0 => idle = 1,
                None => break,
            }
        }
        self.settle();
    }

    fn input(&mut self, input: Input) {
        // Timed here, not in the replica, which has no clock: a peer's
        // message, an off-task apply coming back or a library's
        // `apply_remote` that applied changes is one remote apply (imports
        // apply changes too, but are local writes, timed as such).
        let remote = matches!(
            input,
            Input::Message { .. } | Input::Worked(_) | Input::Apply { .. }
        );
        let started = Instant::now();
        let applied = self.replica.stats().changes_applied;
        self.replica.handle_input(self.clock.now_ms(), input);
        self.pump();
        if remote && self.replica.stats().changes_applied > applied {
            self.replica.record_remote_apply(started.elapsed());
        }
    }

    fn command(&mut self, command: Command) {
        if !self.reopen() {
            let err = self.broken.clone().map(Error::Storage);
            let err = err.unwrap_or_else(|| Error::Stopped("the store is broken".into()));
            match command {
                Command::Write { reply, .. } => {
                    let _ = reply.send(Err(err));
                }
                Command::Query(query) => query(Err(err)),
                Command::Input(input) => tracing::warn!(?input, "dropped: the store is broken"),
                Command::Stop => self.stopping = true,
            }
            return;
        }
        match command {
            Command::Write { write, reply } => self.write(write, reply),
            Command::Query(query) => {
                // A read must not reveal a write that a crash could still
                // take back.
                self.settle();
                self.replica.observe_time(self.clock.now_ms());
                match &self.broken {
                    Some(err) => query(Err(Error::Storage(err.clone()))),
                    None => query(Ok(&mut QueryCtx {
                        replica: &mut self.replica,
                        transport: self.transport.as_any(),
                    })),
                }
            }
            Command::Input(input) => self.input(input),
            Command::Stop => self.stopping = true,
        }
    }

    fn write(&mut self, write: Write, reply: Reply<Done>) {
        let id = self.next_id;
        self.next_id += 1;
        let input = match write {
            Write::Local { room, op } => Input::LocalWrite { id, room, op },
            Write::Upsert {
                room,
                tenant,
                config,
                update,
            } => {
                let op = match self.replica.room(&room) {
                    Ok(Some(_)) => RoomOp::UpdateConfig { update },
                    Ok(None) => RoomOp::Create { tenant, config },
                    Err(err) => {
                        let _ = reply.send(Err(err));
                        return;
                    }
                };
                Input::LocalWrite { id, room, op }
            }
            Write::ImportPrepared(prepared) => Input::ImportPrepared { id, prepared },
            Write::Apply { room, changes } => Input::Apply { id, room, changes },
        };
        self.waiting.insert(id, (reply, Instant::now()));
        self.input(input);
    }

    /// Persists what the replica staged and routes the rest: straight
    /// away, or after the turn's flush if a durable write came first.
    fn pump(&mut self) {
        while let Some(output) = self.replica.poll_output() {
            if self.broken.is_some() {
                // The replica is ahead of the store: nothing it says
                // leaves; it is reopened from the store.
                continue;
            }
            match output {
                Output::Persist { batch, durable } => match self.kv.apply(batch) {
                    Ok(()) => self.dirty |= durable,
                    Err(err) => self.recover(err),
                },
                output if self.dirty => self.held.push(output),
                output => self.act(output),
            }
        }
    }

    /// The end of a turn: one flush, then everything that waited for it.
    fn settle(&mut self) {
        if self.dirty && self.broken.is_none() {
            match self.kv.flush() {
                Ok(()) => {
                    self.feeds.flushes.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => self.recover(err),
            }
        }
        self.dirty = false;
        for output in std::mem::take(&mut self.held) {
            self.act(output);
        }
        // Invariant: nothing that waits for a flush outlives the turn.
        debug_assert!(self.held.is_empty() && !self.dirty);
        self.calls.finish(&mut self.node_events);
        for event in self.node_events.drain(..) {
            let _ = self.feeds.node.send(event);
        }
    }

    /// The store failed: writes in flight get the error (their outcome is
    /// unknown: some may be stored), and what waited for the flush never
    /// leaves. The replica is reopened from the store before it takes
    /// anything else (see `reopen`).
    fn recover(&mut self, err: StorageError) {
        tracing::error!(%err, "store failed; the replica reopens from the store");
        self.held.clear();
        self.node_events.clear();
        self.dirty = false;
        for (_, (reply, _)) in self.waiting.drain() {
            let _ = reply.send(Err(Error::Storage(err.clone())));
        }
        self.broken = Some(err);
    }

    /// Reopens a broken replica from what the store holds, with a new
    /// incarnation (so changes lost from memory cannot collide with new
    /// ones). Returns whether the replica works; a store that still fails
    /// stays broken until the next command or retry, never in a loop.
    fn reopen(&mut self) -> bool {
        if self.broken.is_none() {
            return true;
        }
        let config = self.replica.config().clone();
        match Replica::new(config, self.kv.clone(), self.clock.now_ms()) {
            Ok(replica) => {
                self.replica = replica;
                self.broken = None;
                self.pump();
                self.settle();
                for peer in self.transport.connected() {
                    if self.broken.is_none() {
                        self.input(Input::PeerUp { peer });
                    }
                }
                if self.broken.is_none() {
                    tracing::info!("the replica reopened from the store");
                }
                self.broken.is_none()
            }
            Err(err) => {
                tracing::warn!(%err, "the replica cannot reopen yet");
                false
            }
        }
    }

    fn act(&mut self, output: Output) {
        match output {
            Output::Send { to, bytes } => self.transport.send(&to, bytes),
            Output::Broadcast { bytes } => self.transport.broadcast(bytes),
            Output::Datagram { to, bytes } => self.transport.datagram(&to, bytes),
            Output::Event(event) => self.on_event(event),
            Output::Persist { .. } => {}
            Output::Work(work) => self.run_work(work),
        }
    }

    /// Runs `work` on a thread of its own (the replica bounds how many at
    /// once); its result comes back as an input. If no thread can be
    /// started, it runs here: slower to answer meanwhile, never lost.
    fn run_work(&mut self, work: Work) {
        let done = self.worked.0.clone();
        let slot = Arc::new(Mutex::new(Some(work)));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new()
            .name("chorus-work".into())
            .spawn(move || {
                if let Some(work) = lock(&theirs).take() {
                    let _ = done.send(work.run());
                }
            });
        if spawned.is_err() {
            tracing::warn!("cannot start a work thread; the work runs on the replica's task");
            if let Some(work) = lock(&slot).take() {
                let _ = self.worked.0.send(work.run());
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        self.transport.observe(&event);
        match event {
            Event::WriteDone { id, result } => {
                if let Some((reply, taken)) = self.waiting.remove(&id) {
                    // Acks leave after the turn's flush: this is the
                    // write's durable latency. Refusals are not acks.
                    if result.is_ok() {
                        self.replica.record_write_ack(taken.elapsed());
                    }
                    let _ = reply.send(result.map(Done::Ack));
                }
            }
            Event::Applied { id, result } => {
                if let Some((reply, _)) = self.waiting.remove(&id) {
                    let _ = reply.send(result.map(Done::Applied));
                }
            }
            Event::Changed { change, stamp } => {
                self.calls.on_change(&change, &mut self.node_events);
                // No subscriber is not an error: events are notifications.
                if self.feeds.stamped.receiver_count() > 0 {
                    let stamped = StampedChange {
                        stamp,
                        change: change.clone(),
                    };
                    let _ = self.feeds.stamped.send(stamped);
                }
                let _ = self.feeds.changes.send(change);
            }
            Event::Rehomed(moved) => {
                tracing::info!(
                    room = %moved.room,
                    session = %moved.session,
                    from = %moved.from,
                    epoch = moved.epoch,
                    kind = ?moved.kind,
                    "took over a call"
                );
                self.calls
                    .on_rehomed(&moved.room, &moved.session, moved.kind);
            }
            Event::Grade(change) => {
                tracing::info!(
                    node = %change.node,
                    from = ?change.from,
                    to = ?change.to,
                    reason = %change.reason,
                    "grade changed"
                );
                self.node_events.push(NodeEvent::Grade(change));
            }
            Event::Drain {
                node,
                active,
                rate_per_s,
            } => {
                tracing::info!(%node, active, rate_per_s, "drain order");
                if &node == self.replica.node() {
                    self.node_events
                        .push(NodeEvent::Drain { active, rate_per_s });
                }
            }
            Event::SyncStarted { peer, path } => tracing::debug!(%peer, ?path, "sync started"),
            Event::SyncFinished {
                peer,
                path,
                changes,
            } => tracing::debug!(%peer, ?path, changes, "sync finished"),
            Event::Purged { room } => tracing::info!(%room, "room purged"),
            Event::Rejected { peer, reason } => {
                tracing::warn!(%peer, %reason, "refused a peer's message");
            }
            Event::MoveStopped {
                node,
                kind,
                calls_left,
                why,
                ..
            } => tracing::info!(%node, ?kind, calls_left, why, "move stopped (rollback)"),
        }
    }
}

/// Locks a mutex, carrying on after a panic elsewhere (the value is a plain
/// message).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
