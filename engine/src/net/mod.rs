//! Embedded networking (the `network` feature): the daemon's libp2p
//! transport for an in-process replica. A media node that links the engine
//! with it is a full replica: it pushes its changes, merges its peers',
//! detects failures and takes over a dead node's calls. The sans-IO core
//! never sees a socket; this module is one more driver input.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use chorus_engine::{Engine, EngineConfig, NodeId, SystemClock};
//! # use chorus_engine::net::Network;
//! # use chorus_engine::storage::MemKv;
//! let key = chorus_engine::net::Keypair::generate_ed25519();
//! let network = Network::loopback(key);
//! let node = network.node_id();
//! let engine = Engine::start_networked(
//!     Arc::new(MemKv::new()),
//!     EngineConfig::new(node),
//!     network,
//!     Arc::new(SystemClock),
//! )?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod behaviour;
mod counted;
mod transport;

use std::sync::Arc;

pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr, PeerId};
use serde::Serialize;

pub use behaviour::{push_topic, SYNC_PROTOCOL};
pub use transport::Libp2p;

use crate::engine::{Clock, Engine, EngineConfig};
use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::replica::{ReplicaStats, SyncPath};
use crate::storage::Kv;

/// The network of one replica.
#[derive(Clone)]
pub struct Network {
    /// The node key: its peer id is the replica's id on the wire.
    pub key: Keypair,
    /// Addresses to listen on (`/ip4/127.0.0.1/tcp/0` picks a port).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial, each ending with `/p2p/<peer id>`.
    pub peers: Vec<Multiaddr>,
    /// Peer ids allowed to connect; others are refused. Empty: any peer
    /// that completes the handshake (development only).
    pub allowed_peers: Vec<PeerId>,
    /// A pre-shared key for a private network (TCP only; not QUIC).
    pub psk: Option<[u8; 32]>,
    /// A human name for logs and views.
    pub name: String,
}

impl Network {
    /// A network listening on `listen`, with no peers yet.
    pub fn new(key: Keypair, listen: Vec<Multiaddr>) -> Self {
        let name = key.public().to_peer_id().to_base58();
        Self {
            key,
            listen,
            peers: Vec::new(),
            allowed_peers: Vec::new(),
            psk: None,
            name,
        }
    }

    /// A network on a free loopback port (tests, examples).
    pub fn loopback(key: Keypair) -> Self {
        let any_port = Multiaddr::empty()
            .with(libp2p::multiaddr::Protocol::Ip4(
                std::net::Ipv4Addr::LOCALHOST,
            ))
            .with(libp2p::multiaddr::Protocol::Tcp(0));
        Self::new(key, vec![any_port])
    }

    pub fn peer_id(&self) -> PeerId {
        self.key.public().to_peer_id()
    }

    /// The replica id this key gives (its peer id).
    pub fn node_id(&self) -> NodeId {
        node_of(&self.peer_id()).unwrap_or_else(|| unreachable!("a base58 peer id is a valid id"))
    }
}

/// The replica id of a peer.
pub fn node_of(peer: &PeerId) -> Option<NodeId> {
    NodeId::parse(peer.to_base58()).ok()
}

/// The peer id at the end of a multiaddr (`/p2p/<id>`).
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    pub peer_id: String,
    pub connected: bool,
    pub cut_by_drill: bool,
    /// Milliseconds since a sync round with this peer last finished.
    pub last_sync_ago_ms: Option<u64>,
    pub last_sync_path: Option<SyncPath>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// The network's counters, with the replica's.
#[derive(Debug, Clone)]
pub struct NetStats {
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
    /// Bytes written to and read from every TCP connection: below the
    /// replica's own per-kind counts, so gossipsub's relays and control
    /// messages and all framing are in.
    pub wire_sent_bytes: u64,
    pub wire_received_bytes: u64,
    pub unsent_pushes: usize,
    /// Commands waiting for the driver (API requests, writes).
    pub commands_queued: usize,
    pub rooms: usize,
}

impl Engine {
    /// A full replica in this process: the engine with `network`, on a
    /// driver thread of its own. The replica's id becomes the key's peer id,
    /// and the allow-list (without this node) its known peers; returns once
    /// the listeners are bound.
    pub fn start_networked(
        kv: Arc<dyn Kv>,
        mut config: EngineConfig,
        network: Network,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        config.replica.node = network.node_id();
        let me = config.replica.node.clone();
        if config.replica.peers.is_empty() {
            config.replica.peers = network
                .allowed_peers
                .iter()
                .filter_map(node_of)
                .filter(|p| *p != me)
                .collect();
        }
        let cluster = config.replica.cluster;
        let region = config.replica.region.clone();
        Self::start(kv, config, clock, move || {
            Libp2p::bind(network, cluster, region)
        })
    }

    /// Where this replica listens, and its peer id (`None` without a
    /// network).
    pub fn listen_addrs(&self) -> Result<Option<(PeerId, Vec<Multiaddr>)>> {
        self.with_network(|net, _| (net.peer_id(), net.listen().to_vec()))
    }

    /// The address peers dial to reach this replica
    /// (`<first listen address>/p2p/<peer id>`).
    pub fn dial_addr(&self) -> Result<Option<Multiaddr>> {
        Ok(self.listen_addrs()?.and_then(|(peer, listen)| {
            let first = listen.into_iter().next()?;
            Some(first.with(libp2p::multiaddr::Protocol::P2p(peer)))
        }))
    }

    /// Peers, their connections and last syncs.
    pub fn cluster_view(&self) -> Result<Option<ClusterView>> {
        self.with_network(|net, replica| net.cluster_view(replica))
    }

    /// The network's counters and the replica's.
    pub fn net_stats(&self) -> Result<Option<NetStats>> {
        let mut stats = self.with_network(|net, replica| net.stats(replica))?;
        if let Some(stats) = stats.as_mut() {
            stats.commands_queued = self.commands_queued();
        }
        Ok(stats)
    }

    /// A drill: `Some(peers)` cuts them off (both ways, at the network
    /// layer); `None` reconnects everyone cut off. Returns who is cut.
    pub fn drill(&self, partition: Option<Vec<PeerId>>) -> Result<Vec<PeerId>> {
        self.with_network(move |net, _| net.drill(partition))?
            .ok_or_else(|| Error::Network("this engine has no network".into()))
    }

    fn with_network<R, F>(&self, f: F) -> Result<Option<R>>
    where
        R: Send + 'static,
        F: FnOnce(&mut Libp2p, &mut crate::replica::Replica) -> R + Send + 'static,
    {
        self.inspect(move |replica, transport| {
            transport
                .downcast_mut::<Libp2p>()
                .map(|net| f(net, replica))
        })
    }
}
