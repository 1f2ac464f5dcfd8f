//! [`Libp2p`]: the [`Transport`] over the libp2p swarm. Requests carry sync
//! messages and datagrams, gossipsub carries pushes; connections are
//! redialled with backoff, and drills cut peers off at the network layer.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, request_response, Multiaddr, PeerId, Swarm};

use super::behaviour::{self, Ack, Behaviour, BehaviourEvent, Frame};
use super::counted::WireBytes;
use super::{node_of, peer_of, ClusterView, NetStats, Network, PeerView};
use crate::driver::Transport;
use crate::error::{Error, Result};
use crate::ids::{NodeId, RegionId};
use crate::limits::{
    DIAL_FAILURES_WARN, LISTEN_TIMEOUT_MS, REDIAL_MAX_MS, REDIAL_MIN_MS, REDIAL_STABLE_MS,
    UNSENT_PUSHES_MAX,
};
use crate::replica::{Event, Input, Replica};

#[derive(Default)]
struct PeerState {
    connected: bool,
    last_sync_ms: Option<u64>,
    last_path: Option<crate::replica::SyncPath>,
}

struct Dial {
    addr: Multiaddr,
    next: Instant,
    backoff: Duration,
    /// When the current connection came up: the backoff resets only once
    /// one has lasted `REDIAL_STABLE_MS` (a peer that accepts the
    /// connection and then drops it, a wrong PSK or an allow-list, would
    /// otherwise be redialled at the shortest delay forever).
    connected_at: Option<Instant>,
    /// Failed dials in a row (a WARN from `DIAL_FAILURES_WARN` on).
    failures: u32,
}

impl Dial {
    /// The next dial after a failure or a short-lived connection: the
    /// backoff with ±50 % jitter (`unit`, uniform in [0, 1): peers
    /// restarted together do not redial in step), then the backoff doubles
    /// up to `REDIAL_MAX_MS`.
    fn later(&mut self, now: Instant, unit: f64) {
        self.next = now + self.backoff.mul_f64(0.5 + unit);
        self.backoff = (self.backoff * 2).min(Duration::from_millis(REDIAL_MAX_MS));
    }
}

/// A number uniform in [0, 1) for redial jitter.
fn unit(rng: &mut rand_pcg::Pcg64Mcg) -> f64 {
    use rand::Rng as _;
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Incoming connections that fail are logged at WARN at most this often
/// (a stranger dialling in sets the pace, not us).
const INCOMING_WARN_EVERY: Duration = Duration::from_secs(10);

pub struct Libp2p {
    swarm: Swarm<Behaviour>,
    /// Bytes on every TCP connection (`counted.rs`).
    wire: Arc<WireBytes>,
    topic: gossipsub::IdentTopic,
    name: String,
    region: RegionId,
    cluster_id: u64,
    listen: Vec<Multiaddr>,
    peer_id: PeerId,
    peers: BTreeMap<PeerId, PeerState>,
    dials: BTreeMap<PeerId, Dial>,
    cut: Vec<PeerId>,
    /// Pushes held while no peer is subscribed to the push topic yet.
    unsent: VecDeque<Vec<u8>>,
    /// The allow-list: gossip relayed from anyone else is dropped (an
    /// allowed peer may relay another's message; the connection check
    /// alone does not cover the author).
    allowed: Vec<PeerId>,
    redial: tokio::time::Interval,
    /// When an incoming connection's failure was last logged.
    incoming_warned: Option<Instant>,
    /// Redial jitter (seeded from the clock: it only spreads dials).
    jitter: rand_pcg::Pcg64Mcg,
    refused_connections: u64,
    failed_requests: u64,
    gossip_received: u64,
    gossip_refused: u64,
    pushes_by_request: u64,
    datagrams_dropped: u64,
}

fn unix_ms() -> u64 {
    crate::engine::Clock::now_ms(&crate::engine::SystemClock)
}

impl Libp2p {
    /// Builds the swarm, subscribes, binds every listener and dials the
    /// peers. Runs on the runtime that will drive it.
    pub async fn bind(network: Network, cluster_id: u64, region: RegionId) -> Result<Self> {
        let peer_id = network.peer_id();
        let wire = Arc::new(WireBytes::default());
        let mut swarm = behaviour::build_swarm(
            network.key,
            &network.allowed_peers,
            network.psk,
            wire.clone(),
        )?;
        let topic = behaviour::push_topic(cluster_id);
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|e| Error::Network(format!("subscribe to the push topic: {e}")))?;
        for addr in &network.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::Network(format!("cannot listen on {addr}: {e}")))?;
        }
        let listen = wait_for_listeners(&mut swarm, network.listen.len()).await?;
        let now = Instant::now();
        let dials = network
            .peers
            .iter()
            .filter_map(|addr| {
                let peer = peer_of(addr)?;
                (peer != peer_id).then(|| {
                    let dial = Dial {
                        addr: addr.clone(),
                        next: now,
                        backoff: Duration::from_millis(REDIAL_MIN_MS),
                        connected_at: None,
                        failures: 0,
                    };
                    (peer, dial)
                })
            })
            .collect();
        let mut redial = tokio::time::interval(Duration::from_millis(REDIAL_MIN_MS));
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut net = Self {
            swarm,
            wire,
            topic,
            name: network.name,
            region,
            cluster_id,
            listen,
            peer_id,
            peers: BTreeMap::new(),
            dials,
            cut: Vec::new(),
            unsent: VecDeque::new(),
            allowed: network.allowed_peers,
            redial,
            incoming_warned: None,
            jitter: {
                use rand::SeedableRng as _;
                rand_pcg::Pcg64Mcg::seed_from_u64(unix_ms() ^ u64::from(std::process::id()))
            },
            refused_connections: 0,
            failed_requests: 0,
            gossip_received: 0,
            gossip_refused: 0,
            pushes_by_request: 0,
            datagrams_dropped: 0,
        };
        net.dial_all();
        tracing::info!(peer = %peer_id, "network up");
        Ok(net)
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    pub fn listen(&self) -> &[Multiaddr] {
        &self.listen
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) -> Option<Input> {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } => {
                if num_established.get() == 1 {
                    if let Some(dial) = self.dials.get_mut(&peer_id) {
                        dial.connected_at = Some(Instant::now());
                    }
                }
                if num_established.get() == 1 {
                    self.peers.entry(peer_id).or_default().connected = true;
                    tracing::info!(peer = %peer_id, "peer connected");
                    return node_of(&peer_id).map(|peer| Input::PeerUp { peer });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.peers.entry(peer_id).or_default().connected = false;
                tracing::info!(peer = %peer_id, "peer disconnected");
                if let Some(dial) = self.dials.get_mut(&peer_id) {
                    let now = Instant::now();
                    let lasted = dial.connected_at.take().map(|at| now - at);
                    if lasted.is_some_and(|d| d >= Duration::from_millis(REDIAL_STABLE_MS)) {
                        dial.backoff = Duration::from_millis(REDIAL_MIN_MS);
                        dial.failures = 0;
                    } else {
                        dial.failures = dial.failures.saturating_add(1);
                        if dial.failures >= DIAL_FAILURES_WARN {
                            tracing::warn!(
                                peer = %peer_id,
                                failures = dial.failures,
                                "a peer keeps closing the connection soon after it opens \
                                 (is this replica on its allow-list?)"
                            );
                        }
                    }
                    dial.later(now, unit(&mut self.jitter));
                }
                return node_of(&peer_id).map(|peer| Input::PeerDown { peer });
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                if matches!(error, libp2p::swarm::ListenError::Denied { .. }) {
                    self.refused_connections += 1;
                }
                let now = Instant::now();
                if self
                    .incoming_warned
                    .is_none_or(|at| now - at >= INCOMING_WARN_EVERY)
                {
                    self.incoming_warned = Some(now);
                    tracing::warn!(
                        from = %send_back_addr,
                        %error,
                        "an incoming connection failed (a peer with another PSK, or not on the allow-list?)"
                    );
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                if matches!(error, libp2p::swarm::DialError::Denied { .. }) {
                    self.refused_connections += 1;
                }
                if let Some(dial) = peer_id.and_then(|p| self.dials.get_mut(&p)) {
                    dial.failures = dial.failures.saturating_add(1);
                    if dial.failures >= DIAL_FAILURES_WARN {
                        tracing::warn!(
                            peer = ?peer_id,
                            failures = dial.failures,
                            %error,
                            "cannot connect to a peer (down, another PSK, or not on its allow-list?)"
                        );
                    }
                    dial.later(Instant::now(), unit(&mut self.jitter));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => return self.on_sync(event),
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
                    return None;
                }
                return node_of(&author).map(|from| Input::Message {
                    from,
                    bytes: message.data,
                });
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
        None
    }

    fn on_sync(&mut self, event: request_response::Event<Frame, Ack>) -> Option<Input> {
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
                node_of(&peer).map(|from| Input::Message {
                    from,
                    bytes: request.0,
                })
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                self.failed_requests += 1;
                tracing::debug!(%peer, %error, "request failed; the round will retry");
                None
            }
            _ => None,
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
            // In flight: not dialled again until its outcome (a connection,
            // or an error that sets the next dial) or the longest wait.
            if let Some(dial) = self.dials.get_mut(&peer) {
                dial.next = now + Duration::from_millis(REDIAL_MAX_MS);
            }
            if let Err(err) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%peer, %addr, %err, "dial failed");
                if let Some(dial) = self.dials.get_mut(&peer) {
                    dial.later(now, unit(&mut self.jitter));
                }
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
        if self.peers.values().any(|p| p.connected) {
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

    pub(super) fn drill(&mut self, partition: Option<Vec<PeerId>>) -> Vec<PeerId> {
        match partition {
            Some(peers) => {
                for peer in peers {
                    if peer != self.peer_id && !self.cut.contains(&peer) {
                        // Blocking closes the connections and refuses new
                        // ones, both ways, at the network layer.
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
                        dial.backoff = Duration::from_millis(REDIAL_MIN_MS);
                        dial.failures = 0;
                    }
                }
                self.dial_all();
            }
        }
        self.cut.clone()
    }

    pub(super) fn stats(&self, replica: &Replica) -> NetStats {
        NetStats {
            replica: replica.stats().clone(),
            connected_peers: self.peers.values().filter(|p| p.connected).count(),
            refused_connections: self.refused_connections,
            failed_requests: self.failed_requests,
            gossip_received: self.gossip_received,
            gossip_refused: self.gossip_refused,
            pushes_by_request: self.pushes_by_request,
            datagrams_dropped: self.datagrams_dropped,
            wire_sent_bytes: self.wire.sent(),
            wire_received_bytes: self.wire.received(),
            unsent_pushes: self.unsent.len(),
            commands_queued: 0,
            rooms: replica.room_count(),
        }
    }

    pub(super) fn cluster_view(&self, replica: &Replica) -> ClusterView {
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
            region: self.region.as_str().to_string(),
            cluster_id: self.cluster_id,
            listen: self.listen.iter().map(ToString::to_string).collect(),
            root: replica.root().iter().map(|b| format!("{b:02x}")).collect(),
            rooms: replica.room_count(),
            peers: known.into_values().collect(),
        }
    }
}

impl Transport for Libp2p {
    fn send(&mut self, to: &NodeId, bytes: Vec<u8>) {
        let Ok(peer) = to.as_str().parse::<PeerId>() else {
            return;
        };
        self.swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, Frame(bytes));
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

    async fn next(&mut self) -> Option<Input> {
        tokio::select! {
            event = self.swarm.select_next_some() => self.on_swarm(event),
            _ = self.redial.tick() => {
                self.dial_all();
                None
            }
        }
    }

    fn connected(&self) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.connected)
            .filter_map(|(id, _)| node_of(id))
            .collect()
    }

    fn observe(&mut self, event: &Event) {
        if let Event::SyncFinished { peer, path, .. } = event {
            if let Ok(id) = peer.as_str().parse::<PeerId>() {
                let state = self.peers.entry(id).or_default();
                state.last_sync_ms = Some(unix_ms());
                state.last_path = Some(*path);
            }
        }
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

async fn wait_for_listeners(swarm: &mut Swarm<Behaviour>, wanted: usize) -> Result<Vec<Multiaddr>> {
    let mut addrs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(LISTEN_TIMEOUT_MS);
    while addrs.len() < wanted {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| Error::Network("the network listeners did not come up".into()))?;
        match event {
            SwarmEvent::NewListenAddr { address, .. } => addrs.push(address),
            SwarmEvent::ListenerError { error, .. } => {
                return Err(Error::Network(format!("listener failed: {error}")))
            }
            _ => {}
        }
    }
    Ok(addrs)
}
