//! The libp2p side: TCP + noise + yamux (optionally behind a pre-shared
//! key), gossipsub for pushes, request-response for everything a sync round
//! says, ping, an allow-list of peer ids and a block-list for drills.

use std::sync::Arc;
use std::time::Duration;

use either::Either;
use libp2p::core::upgrade::Version;
use libp2p::core::Transport;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{allow_block_list, gossipsub, identity, noise, ping, tcp, yamux};
use libp2p::{PeerId, StreamProtocol, Swarm};
use serde::{Deserialize, Serialize};

use super::counted::{Counted, WireBytes};
use crate::error::Error;
use crate::limits::IDLE_CONNECTION_TIMEOUT;
use crate::limits::REQUEST_TIMEOUT;
use crate::limits::STREAMS_MAX;
use crate::limits::{GOSSIP_CONTROL_BYTES_MAX, GOSSIP_HEARTBEAT_MS, HANDSHAKE_TIMEOUT};
use crate::replica::wire::{MESSAGE_BYTES_MAX, PUSH_BYTES_MAX};

/// The request-response protocol: one replica message per request.
pub const SYNC_PROTOCOL: &str = "/chorus/sync/1";

/// One replica message, carried as CBOR bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Frame(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// The receiver has taken the message (not: acted on it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ack;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Present when `allowed_peers` is set: anyone else is refused right
    /// after the noise handshake proves their peer id.
    pub allow: Toggle<allow_block_list::Behaviour<allow_block_list::AllowedPeers>>,
    /// Drills: peers cut off on purpose.
    pub block: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub gossipsub: gossipsub::Behaviour,
    pub sync: request_response::cbor::Behaviour<Frame, Ack>,
    pub ping: ping::Behaviour,
}

/// The gossipsub topic of a cluster's pushes.
pub fn push_topic(cluster: u64) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("/chorus/{cluster}/push"))
}

fn gossipsub_config() -> Result<gossipsub::Config, Error> {
    gossipsub::ConfigBuilder::default()
        // No mesh: every replica connects to every other (each pair is
        // listed in `peers` on one side at least; docs/operations.md) and
        // publishes to all of them (`flood_publish`), so a mesh member's
        // relay is only ever a second copy. With a mesh of 3 the wire
        // carried 3.3-4.4x the minimal push bytes at 20 daemons; without,
        // 1.6-1.9x, in order on one stream per peer (docs/scale.md,
        // "Pushes between daemons"). A push a peer missed (not connected
        // to the writer) comes by anti-entropy, as in the simulator, which
        // never relayed. An older build that grafts us is pruned at our
        // next heartbeat; it still publishes to us directly.
        .mesh_n(0)
        .mesh_n_low(0)
        .mesh_n_high(0)
        .mesh_outbound_min(0)
        .flood_publish(true)
        // No IHAVE gossip either: without a mesh it went to up to 6 peers
        // each heartbeat, naming the last three heartbeats' pushes, and past
        // a few hundred pushes a second that outgrew gossipsub's 16 KiB
        // control limit. The receiver then failed to decode the whole RPC
        // and dropped the stream with the pushes queued on it: most pushes
        // were lost with three daemons writing one room (`chorus bench
        // churn`), and anti-entropy resent changes many times over. Every
        // push goes to every connected peer directly; a peer that is not
        // connected to the writer gets it by anti-entropy. The control
        // limit is raised too, for older builds that still send IHAVEs.
        .gossip_lazy(0)
        .gossip_factor(0.0)
        .max_control_message_size(GOSSIP_CONTROL_BYTES_MAX)
        .heartbeat_interval(Duration::from_millis(GOSSIP_HEARTBEAT_MS))
        .max_transmit_size(PUSH_BYTES_MAX + 4 * 1024)
        .validation_mode(gossipsub::ValidationMode::Strict)
        // Content-hash ids: the same push relayed twice is one message.
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(blake3::hash(&m.data).as_bytes()[..16].to_vec())
        })
        .build()
        .map_err(|e| Error::Network(format!("gossipsub config: {e}")))
}

/// Builds the swarm for `key`, with the allow-list (if any) and the
/// pre-shared key (if any); its TCP connections count their bytes into
/// `wire` (QUIC's are not counted).
pub fn build_swarm(
    key: identity::Keypair,
    allowed: &[PeerId],
    psk: Option<[u8; 32]>,
    wire: Arc<WireBytes>,
) -> Result<Swarm<Behaviour>, Error> {
    let gossip = gossipsub_config()?;
    let allowed = allowed.to_vec();
    let builder = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(move |key| {
            let noise = noise::Config::new(key)?;
            let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .map(move |socket, _| Counted::new(socket, wire.clone()));
            let base = match psk {
                Some(psk) => Either::Left(tcp.and_then(move |socket, _| {
                    libp2p::pnet::PnetConfig::new(libp2p::pnet::PreSharedKey::new(psk))
                        .handshake(socket)
                })),
                None => Either::Right(tcp),
            };
            Ok(base
                .upgrade(Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux::Config::default())
                .timeout(HANDSHAKE_TIMEOUT))
        })
        .map_err(|e| Error::Network(format!("transport: {e}")))?;
    #[cfg(feature = "quic")]
    let builder = builder
        .with_other_transport(|key| {
            libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key))
        })
        .map_err(|e| Error::Network(format!("quic transport: {e}")))?;
    let swarm = builder
        .with_behaviour(move |key| {
            let allow = if allowed.is_empty() {
                None
            } else {
                let mut list =
                    allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
                for peer in &allowed {
                    list.allow_peer(*peer);
                }
                Some(list)
            };
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip,
            )?;
            let codec = request_response::cbor::codec::Codec::<Frame, Ack>::default()
                .set_request_size_maximum(MESSAGE_BYTES_MAX as u64 + 1024)
                .set_response_size_maximum(1024);
            let sync = request_response::Behaviour::with_codec(
                codec,
                [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(STREAMS_MAX),
            );
            Ok(Behaviour {
                allow: Toggle::from(allow),
                block: allow_block_list::Behaviour::default(),
                gossipsub,
                sync,
                ping: ping::Behaviour::new(ping::Config::new()),
            })
        })
        .map_err(|e| Error::Network(format!("behaviour: {e}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}
