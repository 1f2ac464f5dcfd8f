//! The daemon: one task owns the sans-IO `Replica`, the sled store and the
//! libp2p swarm, and drives them — swarm events and API commands in,
//! persists, sends, broadcasts and replies out. The HTTP API talks to it
//! over a bounded channel. No replica state is shared between tasks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, request_response, Multiaddr, PeerId, Swarm};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

use chorus_engine::hlc::Timestamp;
use chorus_engine::model::{RoomConfig, RoomSnapshot, RoomSummary, WriteAck};
use chorus_engine::replica::{Event, Input, Output, Replica, ReplicaStats, SyncPath};
use chorus_engine::room::RoomOp;
use chorus_engine::rooms::LogEntry;
use chorus_engine::storage::{Kv, SledKv};
use chorus_engine::{ConfigUpdate, NodeId, RoomId, TenantId};

use crate::config::{parse_psk, peer_of, Config};
use crate::net::{self, Ack, Behaviour, BehaviourEvent, Frame};

/// API commands waiting for the daemon task; senders wait when it is full.
pub const COMMAND_QUEUE_MAX: usize = 1024;
/// Change events buffered per live subscriber before it is told it lagged
/// (it then catches up from the stored change log).
pub const SUBSCRIBER_BUFFER_MAX: usize = 1024;
/// Broadcasts held while no peer is subscribed to the push topic yet (they
/// are sent by request instead once that overflows).
const UNSENT_PUSHES_MAX: usize = 256;
/// First redial delay after a lost or failed connection; doubles up to the max.
const REDIAL_MIN: Duration = Duration::from_millis(250);
const REDIAL_MAX: Duration = Duration::from_secs(10);
/// How long `start` waits for the listeners to bind.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an API request failed.
#[derive(Debug)]
pub enum Refusal {
    Engine(chorus_engine::Error),
    NotFound(String),
    Unavailable(String),
}

pub type Reply<T> = oneshot::Sender<Result<T, Refusal>>;

pub enum Command {
    Write {
        room: RoomId,
        op: RoomOp,
        reply: Reply<WriteAck>,
    },
    /// Creates the room, or updates its config if it exists.
    Upsert {
        room: RoomId,
        tenant: TenantId,
        config: RoomConfig,
        update: ConfigUpdate,
        reply: Reply<WriteAck>,
    },
    Import {
        room: RoomId,
        bytes: Vec<u8>,
        reply: Reply<WriteAck>,
    },
    Room {
        room: RoomId,
        reply: Reply<Option<RoomSnapshot>>,
    },
    Rooms {
        reply: Reply<Vec<RoomSummary>>,
    },
    Export {
        room: RoomId,
        reply: Reply<Option<Vec<u8>>>,
    },
    Cluster {
        reply: oneshot::Sender<ClusterView>,
    },
    Stats {
        reply: oneshot::Sender<StatsView>,
    },
    /// A receiver for the change events to come.
    Subscribe {
        reply: oneshot::Sender<broadcast::Receiver<LiveChange>>,
    },
    /// Stored change-log entries after `after` (from the oldest if `None`).
    ChangeLog {
        after: Option<Timestamp>,
        limit: usize,
        reply: Reply<LogPage>,
    },
    Incidents {
        after: Option<chorus_engine::hlc::Timestamp>,
        limit: usize,
        reply: Reply<Vec<chorus_engine::replica::Incident>>,
    },
    /// Grades, drains, health, placement (see `nodes`).
    Nodes(crate::nodes::NodesCommand),
    /// `Some(peers)`: cut them off; `None`: reconnect everyone cut off.
    Drill {
        partition: Option<Vec<PeerId>>,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
}

/// A change event for live subscribers, as JSON, with the stamp of the
/// change-log entry that holds its changes (`None` if it stored nothing).
#[derive(Debug, Clone)]
pub struct LiveChange {
    pub stamp: Option<Timestamp>,
    pub json: Arc<str>,
}

/// A page of the stored change log.
#[derive(Debug)]
pub struct LogPage {
    pub entries: Vec<(Timestamp, LogEntry)>,
    /// The newest stamp trimmed from the log (`None`: nothing trimmed).
    pub horizon: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    pub peer_id: String,
    pub connected: bool,
    pub cut_by_drill: bool,
    /// Milliseconds since a sync round with this peer last finished.
    pub last_sync_ago_ms: Option<u64>,
    pub last_sync_path: Option<SyncPath>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub name: String,
    pub peer_id: String,
    pub region: String,
    pub cluster_id: u64,
    pub listen: Vec<String>,
    pub root: String,
    pub rooms: usize,
    pub peers: Vec<PeerView>,
}

/// Counters for `/metrics`, copied at scrape time.
#[derive(Debug, Clone)]
pub struct StatsView {
    pub replica: ReplicaStats,
    pub connected_peers: usize,
    pub refused_connections: u64,
    pub failed_requests: u64,
    pub gossip_received: u64,
    /// Gossip messages dropped: their (signed) author is not allowed.
    pub gossip_refused: u64,
    pub pushes_by_request: u64,
    /// Failure-detection datagrams dropped because the peer was not
    /// connected (expected while it is down).
    pub datagrams_dropped: u64,
    pub unsent_pushes: usize,
    pub commands_queued: usize,
    pub rooms: usize,
}

/// A running daemon: where it listens, and how to stop it.
pub struct Running {
    pub peer_id: PeerId,
    pub listen: Vec<Multiaddr>,
    pub api: SocketAddr,
    commands: mpsc::Sender<Command>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    api_task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn commands(&self) -> mpsc::Sender<Command> {
        self.commands.clone()
    }

    /// The dial address of this replica (`<listen>/p2p/<peer id>`).
    pub fn dial_addr(&self) -> Option<Multiaddr> {
        self.listen.first().map(|a| {
            a.clone()
                .with(libp2p::multiaddr::Protocol::P2p(self.peer_id))
        })
    }

    /// Stops accepting, flushes the store, closes connections.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let result = self.task.await.context("daemon task")?;
        self.api_task.abort();
        result
    }

    /// Resolves when the daemon task ends on its own (a fatal error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("daemon task")?
    }
}

/// Opens the store and the key, binds the network and the API, and starts
/// the daemon task.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    for warning in config.startup_warnings() {
        tracing::warn!("{warning}");
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let key = crate::keys::load_or_generate(&config.key_path())?;
    let peer_id = key.public().to_peer_id();
    let node = NodeId::parse(peer_id.to_base58()).context("peer id as node id")?;
    let store_dir = config.data_dir.join("store");
    let kv = Arc::new(
        SledKv::open(&store_dir)
            .with_context(|| format!("cannot open the store in {}", store_dir.display()))?,
    );
    let replica_config = config.replica_config(node.clone());
    let replica = Replica::new(replica_config, kv.clone(), unix_ms())
        .context("cannot start the replica from its store")?;
    let psk = config.psk.as_deref().and_then(parse_psk);
    let mut swarm = net::build_swarm(key, &config.allowed_peers, psk)?;
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&net::push_topic(config.cluster_id))
        .context("subscribe to the push topic")?;
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .with_context(|| format!("cannot listen on {addr}"))?;
    }
    let listen = wait_for_listeners(&mut swarm, config.listen.len()).await?;
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE_MAX);
    let api_listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot bind the API on {}", config.api.listen))?;
    let api = api_listener.local_addr()?;
    let router = crate::api::router(crate::api::ApiState::new(&config, commands.clone()));
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let (api_stop_tx, api_stop_rx) = oneshot::channel::<()>();
    let header_timeout = Duration::from_millis(config.api.header_read_timeout_ms);
    let api_task = tokio::spawn(crate::api::server::serve(
        api_listener,
        router,
        header_timeout,
        api_stop_rx,
    ));
    let mut driver = Driver::new(&config, replica, kv, swarm, listen.clone(), peer_id);
    driver.dial_all();
    let task = tokio::spawn(async move {
        let result = driver.run(command_rx, shutdown_rx).await;
        let _ = api_stop_tx.send(());
        result
    });
    tracing::info!(%peer_id, %api, "replica started");
    Ok(Running {
        peer_id,
        listen,
        api,
        commands,
        shutdown: Some(shutdown_tx),
        task,
        api_task,
    })
}

async fn wait_for_listeners(
    swarm: &mut Swarm<Behaviour>,
    wanted: usize,
) -> anyhow::Result<Vec<Multiaddr>> {
    let mut addrs = Vec::new();
    let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
    while addrs.len() < wanted {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .context("the network listeners did not come up")?;
        match event {
            SwarmEvent::NewListenAddr { address, .. } => addrs.push(address),
            SwarmEvent::ListenerError { error, .. } => {
                anyhow::bail!("listener failed: {error}")
            }
            _ => {}
        }
    }
    Ok(addrs)
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Default)]
struct PeerState {
    connected: bool,
    last_sync_ms: Option<u64>,
    last_path: Option<SyncPath>,
}

struct Dial {
    addr: Multiaddr,
    next: Instant,
    backoff: Duration,
}

struct Driver {
    name: String,
    region: String,
    cluster_id: u64,
    replica: Replica,
    kv: Arc<SledKv>,
    swarm: Swarm<Behaviour>,
    topic: gossipsub::IdentTopic,
    listen: Vec<Multiaddr>,
    peer_id: PeerId,
    peers: BTreeMap<PeerId, PeerState>,
    dials: BTreeMap<PeerId, Dial>,
    cut: Vec<PeerId>,
    next_write: u64,
    waiting: HashMap<u64, Reply<WriteAck>>,
    unsent: VecDeque<Vec<u8>>,
    live: broadcast::Sender<LiveChange>,
    refused_connections: u64,
    failed_requests: u64,
    gossip_received: u64,
    gossip_refused: u64,
    /// The allow-list: gossip relayed from anyone else is dropped (an
    /// allowed peer may relay another's message; the connection check
    /// alone does not cover the author).
    allowed: Vec<PeerId>,
    pushes_by_request: u64,
    datagrams_dropped: u64,
    storage_failed: bool,
}

impl Driver {
    fn new(
        config: &Config,
        replica: Replica,
        kv: Arc<SledKv>,
        swarm: Swarm<Behaviour>,
        listen: Vec<Multiaddr>,
        peer_id: PeerId,
    ) -> Self {
        let now = Instant::now();
        let dials = config
            .peers
            .iter()
            .filter_map(|addr| {
                let peer = peer_of(addr)?;
                (peer != peer_id).then(|| {
                    let dial = Dial {
                        addr: addr.clone(),
                        next: now,
                        backoff: REDIAL_MIN,
                    };
                    (peer, dial)
                })
            })
            .collect();
        let (live, _) = broadcast::channel(SUBSCRIBER_BUFFER_MAX);
        Self {
            name: config.name.clone(),
            region: config.region.clone(),
            cluster_id: config.cluster_id,
            replica,
            kv,
            swarm,
            topic: net::push_topic(config.cluster_id),
            listen,
            peer_id,
            peers: BTreeMap::new(),
            dials,
            cut: Vec::new(),
            next_write: 1,
            waiting: HashMap::new(),
            unsent: VecDeque::new(),
            live,
            refused_connections: 0,
            failed_requests: 0,
            gossip_received: 0,
            gossip_refused: 0,
            allowed: config.allowed_peers.clone(),
            pushes_by_request: 0,
            datagrams_dropped: 0,
            storage_failed: false,
        }
    }

    async fn run(
        &mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: oneshot::Receiver<()>,
    ) -> anyhow::Result<()> {
        let mut redial = tokio::time::interval(REDIAL_MIN);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.replica.poll_timeout().map(|(at, _)| at);
            let sleep = sleep_until_unix_ms(deadline);
            tokio::select! {
                _ = &mut shutdown => break,
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command, commands.len()),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_swarm(event),
                _ = sleep => self.input(Input::Tick),
                _ = redial.tick() => self.dial_all(),
            }
            if self.storage_failed {
                anyhow::bail!(
                    "the store failed; stopping rather than acknowledging writes it may lose"
                );
            }
        }
        self.kv.flush().context("final flush")?;
        tracing::info!("replica stopped");
        Ok(())
    }

    fn input(&mut self, input: Input) {
        self.replica.handle_input(unix_ms(), input);
        self.drain();
    }

    /// Acts on every output, in order: a durable persist is flushed before
    /// anything after it (an ack, a message) leaves.
    fn drain(&mut self) {
        while let Some(output) = self.replica.poll_output() {
            match output {
                Output::Persist { batch, durable } => {
                    let result = self.kv.apply(batch).and_then(|()| {
                        if durable {
                            self.kv.flush()
                        } else {
                            Ok(())
                        }
                    });
                    if let Err(err) = result {
                        tracing::error!(%err, "store write failed");
                        self.storage_failed = true;
                        return;
                    }
                }
                Output::Send { to, bytes } => self.send(&to, bytes),
                Output::Broadcast { bytes } => self.broadcast(bytes),
                Output::Datagram { to, bytes } => self.datagram(&to, bytes),
                Output::Event(event) => self.on_event(event),
            }
        }
    }

    fn send(&mut self, to: &NodeId, bytes: Vec<u8>) {
        let Ok(peer) = to.as_str().parse::<PeerId>() else {
            return;
        };
        self.swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, Frame(bytes));
    }

    /// Best effort: only over a connection we have. A probe to a node we
    /// cannot reach must fail (that is the point), not queue a dial.
    fn datagram(&mut self, to: &NodeId, bytes: Vec<u8>) {
        let Ok(peer) = to.as_str().parse::<PeerId>() else {
            return;
        };
        if self.peers.get(&peer).is_some_and(|p| p.connected) {
            self.swarm
                .behaviour_mut()
                .sync
                .send_request(&peer, Frame(bytes));
        } else {
            self.datagrams_dropped += 1;
        }
    }

    fn broadcast(&mut self, bytes: Vec<u8>) {
        // Checked first so the push is moved into gossipsub, not copied in
        // case it bounces: this runs for every batch of local writes.
        let hash = self.topic.hash();
        let subscribed = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .any(|(_, topics)| topics.contains(&&hash));
        if !subscribed {
            self.hold_push(bytes);
            return;
        }
        let topic = self.topic.clone();
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) | Err(gossipsub::PublishError::Duplicate) => {}
            Err(err) => {
                // Queues full or a transient error: anti-entropy repairs.
                tracing::warn!(%err, "push not published; anti-entropy will carry it");
            }
        }
    }

    /// No peer has subscribed yet (connections just came up): keep the push
    /// for a moment, and past the bound send it by request to every peer.
    fn hold_push(&mut self, bytes: Vec<u8>) {
        self.unsent.push_back(bytes);
        while self.unsent.len() > UNSENT_PUSHES_MAX {
            if let Some(old) = self.unsent.pop_front() {
                self.push_by_request(old);
            }
        }
        let connected = self.peers.values().any(|p| p.connected);
        if connected {
            // Subscriptions follow connections within a heartbeat; until
            // then a direct request reaches the peers we have.
            while let Some(push) = self.unsent.pop_front() {
                self.push_by_request(push);
            }
        }
    }

    fn push_by_request(&mut self, bytes: Vec<u8>) {
        let peers: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.connected)
            .map(|(id, _)| *id)
            .collect();
        for peer in peers {
            self.pushes_by_request += 1;
            self.swarm
                .behaviour_mut()
                .sync
                .send_request(&peer, Frame(bytes.clone()));
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::WriteDone { id, result } => {
                if let Some(reply) = self.waiting.remove(&id) {
                    let _ = reply.send(result.map_err(Refusal::Engine));
                }
            }
            Event::Changed { change, stamp } => {
                let Ok(json) = serde_json::to_string(&change) else {
                    return;
                };
                let json = Arc::from(json);
                let _ = self.live.send(LiveChange { stamp, json });
            }
            Event::SyncStarted { peer, path } => {
                tracing::debug!(%peer, ?path, "sync started");
            }
            Event::SyncFinished {
                peer,
                path,
                changes,
            } => {
                tracing::debug!(%peer, ?path, changes, "sync finished");
                if let Ok(id) = peer.as_str().parse::<PeerId>() {
                    let state = self.peers.entry(id).or_default();
                    state.last_sync_ms = Some(unix_ms());
                    state.last_path = Some(path);
                }
            }
            Event::Purged { room } => tracing::info!(%room, "room purged"),
            Event::Rejected { peer, reason } => {
                tracing::warn!(%peer, %reason, "refused a peer's message");
            }
            Event::Grade(change) => tracing::info!(
                node = %change.node,
                from = ?change.from,
                to = ?change.to,
                reason = %change.reason,
                "grade changed"
            ),
            Event::Rehomed(moved) => tracing::info!(
                room = %moved.room,
                session = %moved.session,
                from = %moved.from,
                epoch = moved.epoch,
                kind = ?moved.kind,
                "took over a call"
            ),
            Event::Drain {
                node,
                active,
                rate_per_s,
            } => tracing::info!(%node, active, rate_per_s, "drain order"),
            Event::MoveStopped {
                node,
                kind,
                calls_left,
            } => tracing::info!(%node, ?kind, calls_left, "move stopped (rollback)"),
        }
    }

    fn node_of(peer: &PeerId) -> Option<NodeId> {
        NodeId::parse(peer.to_base58()).ok()
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } => {
                if let Some(dial) = self.dials.get_mut(&peer_id) {
                    dial.backoff = REDIAL_MIN;
                }
                if num_established.get() == 1 {
                    self.peers.entry(peer_id).or_default().connected = true;
                    tracing::info!(peer = %peer_id, "peer connected");
                    if let Some(peer) = Self::node_of(&peer_id) {
                        self.input(Input::PeerUp { peer });
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.peers.entry(peer_id).or_default().connected = false;
                tracing::info!(peer = %peer_id, "peer disconnected");
                if let Some(peer) = Self::node_of(&peer_id) {
                    self.input(Input::PeerDown { peer });
                }
            }
            SwarmEvent::IncomingConnectionError {
                error: libp2p::swarm::ListenError::Denied { .. },
                ..
            } => self.refused_connections += 1,
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                if matches!(error, libp2p::swarm::DialError::Denied { .. }) {
                    self.refused_connections += 1;
                }
                if let Some(dial) = peer_id.and_then(|p| self.dials.get_mut(&p)) {
                    dial.backoff = (dial.backoff * 2).min(REDIAL_MAX);
                    dial.next = Instant::now() + dial.backoff;
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message,
                ..
            })) => {
                self.gossip_received += 1;
                let author = message.source.unwrap_or(propagation_source);
                if !self.allowed.is_empty() && !self.allowed.contains(&author) {
                    self.gossip_refused += 1;
                    tracing::warn!(%author, via = %propagation_source, "gossip from a peer not on the allow-list dropped");
                } else if let Some(from) = Self::node_of(&author) {
                    self.input(Input::Message {
                        from,
                        bytes: message.data,
                    });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                ..
            })) => {
                for push in std::mem::take(&mut self.unsent) {
                    self.broadcast(push);
                }
            }
            SwarmEvent::NewListenAddr { address, .. } if !self.listen.contains(&address) => {
                self.listen.push(address);
            }
            _ => {}
        }
    }

    fn on_sync(&mut self, event: request_response::Event<Frame, Ack>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let _ = self.swarm.behaviour_mut().sync.send_response(channel, Ack);
                if let Some(from) = Self::node_of(&peer) {
                    self.input(Input::Message {
                        from,
                        bytes: request.0,
                    });
                }
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                self.failed_requests += 1;
                tracing::debug!(%peer, %error, "request failed; the round will retry");
            }
            _ => {}
        }
    }

    fn dial_all(&mut self) {
        let now = Instant::now();
        let due: Vec<(PeerId, Multiaddr)> = self
            .dials
            .iter()
            .filter(|(peer, dial)| {
                dial.next <= now
                    && !self.cut.contains(peer)
                    && !self.peers.get(peer).is_some_and(|p| p.connected)
            })
            .map(|(peer, dial)| (*peer, dial.addr.clone()))
            .collect();
        for (peer, addr) in due {
            if let Some(dial) = self.dials.get_mut(&peer) {
                dial.next = now + dial.backoff;
                dial.backoff = (dial.backoff * 2).min(REDIAL_MAX);
            }
            if let Err(err) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%peer, %addr, %err, "dial failed");
            }
        }
    }

    fn on_command(&mut self, command: Command, queued: usize) {
        match command {
            Command::Write { room, op, reply } => self.write(room, op, reply),
            Command::Upsert {
                room,
                tenant,
                config,
                update,
                reply,
            } => {
                let op = match self.replica.room(&room) {
                    Ok(Some(_)) => RoomOp::UpdateConfig { update },
                    Ok(None) => RoomOp::Create { tenant, config },
                    Err(err) => {
                        let _ = reply.send(Err(Refusal::Engine(err)));
                        return;
                    }
                };
                self.write(room, op, reply);
            }
            Command::Import { room, bytes, reply } => {
                let id = self.next_write;
                self.next_write += 1;
                self.waiting.insert(id, reply);
                self.input(Input::Import { id, room, bytes });
                self.refuse_unanswered(id);
            }
            Command::Room { room, reply } => {
                let _ = reply.send(self.replica.room(&room).map_err(Refusal::Engine));
            }
            Command::Rooms { reply } => {
                let _ = reply.send(self.replica.list_rooms().map_err(Refusal::Engine));
            }
            Command::Export { room, reply } => {
                let _ = reply.send(self.replica.export_room(&room).map_err(Refusal::Engine));
            }
            Command::Cluster { reply } => {
                let _ = reply.send(self.cluster_view());
            }
            Command::Incidents {
                after,
                limit,
                reply,
            } => {
                let incidents = self.replica.incidents(after.as_ref(), limit);
                let _ = reply.send(incidents.map_err(Refusal::Engine));
            }
            Command::Stats { reply } => {
                let _ = reply.send(StatsView {
                    replica: self.replica.stats().clone(),
                    connected_peers: self.peers.values().filter(|p| p.connected).count(),
                    refused_connections: self.refused_connections,
                    failed_requests: self.failed_requests,
                    gossip_received: self.gossip_received,
                    gossip_refused: self.gossip_refused,
                    pushes_by_request: self.pushes_by_request,
                    datagrams_dropped: self.datagrams_dropped,
                    unsent_pushes: self.unsent.len(),
                    commands_queued: queued,
                    rooms: self.replica.room_count(),
                });
            }
            Command::Subscribe { reply } => {
                let _ = reply.send(self.live.subscribe());
            }
            Command::ChangeLog {
                after,
                limit,
                reply,
            } => {
                let _ = reply.send(self.change_log(after, limit));
            }
            Command::Nodes(command) => self.on_nodes(command),
            Command::Drill { partition, reply } => {
                match partition {
                    Some(peers) => {
                        for peer in peers {
                            if peer != self.peer_id && !self.cut.contains(&peer) {
                                // Blocking closes the connections and refuses
                                // new ones, both ways, at the network layer.
                                self.swarm.behaviour_mut().block.block_peer(peer);
                                self.cut.push(peer);
                            }
                        }
                    }
                    None => {
                        for peer in std::mem::take(&mut self.cut) {
                            self.swarm.behaviour_mut().block.unblock_peer(peer);
                            if let Some(dial) = self.dials.get_mut(&peer) {
                                dial.next = Instant::now();
                                dial.backoff = REDIAL_MIN;
                            }
                        }
                        self.dial_all();
                    }
                }
                let _ = reply.send(self.cut.clone());
            }
        }
    }

    fn on_nodes(&mut self, command: crate::nodes::NodesCommand) {
        use crate::nodes::{NodesCommand, NodesView};
        match command {
            NodesCommand::List { reply } => {
                let _ = reply.send(NodesView::of(&self.replica, unix_ms()));
            }
            NodesCommand::Apply(input) => self.input(input),
            NodesCommand::Place {
                room,
                session,
                region,
                reply,
            } => {
                let _ = reply.send(self.replica.place(&room, &session, &region));
            }
        }
    }

    /// A page of the stored change log, with the trim horizon read at the
    /// same moment.
    fn change_log(&self, after: Option<Timestamp>, limit: usize) -> Result<LogPage, Refusal> {
        let entries = self
            .replica
            .change_log(after.as_ref(), limit)
            .map_err(Refusal::Engine)?;
        Ok(LogPage {
            entries,
            horizon: self.replica.log_horizon(),
        })
    }

    fn write(&mut self, room: RoomId, op: RoomOp, reply: Reply<WriteAck>) {
        let id = self.next_write;
        self.next_write += 1;
        self.waiting.insert(id, reply);
        self.input(Input::LocalWrite { id, room, op });
        self.refuse_unanswered(id);
    }

    /// A write the replica did not answer in the same input (the store
    /// failed mid-way) gets an error rather than hanging.
    fn refuse_unanswered(&mut self, id: u64) {
        if let Some(reply) = self.waiting.remove(&id) {
            let _ = reply.send(Err(Refusal::Unavailable(
                "the write was not acknowledged (the store failed)".into(),
            )));
        }
    }

    fn cluster_view(&self) -> ClusterView {
        let now = unix_ms();
        let mut known: BTreeMap<PeerId, PeerView> = BTreeMap::new();
        for peer in self.dials.keys().chain(self.peers.keys()) {
            let state = self.peers.get(peer);
            known.insert(
                *peer,
                PeerView {
                    peer_id: peer.to_base58(),
                    connected: state.is_some_and(|s| s.connected),
                    cut_by_drill: self.cut.contains(peer),
                    last_sync_ago_ms: state
                        .and_then(|s| s.last_sync_ms)
                        .map(|at| now.saturating_sub(at)),
                    last_sync_path: state.and_then(|s| s.last_path),
                },
            );
        }
        ClusterView {
            name: self.name.clone(),
            peer_id: self.peer_id.to_base58(),
            region: self.region.clone(),
            cluster_id: self.cluster_id,
            listen: self.listen.iter().map(ToString::to_string).collect(),
            root: self
                .replica
                .root()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            rooms: self.replica.room_count(),
            peers: known.into_values().collect(),
        }
    }
}

/// Sleeps until a replica deadline (unix ms), or forever without one.
async fn sleep_until_unix_ms(deadline: Option<u64>) {
    match deadline {
        Some(at) => {
            let wait = at.saturating_sub(unix_ms());
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        None => std::future::pending().await,
    }
}
