//! The daemon: the engine with its network (the library a media node
//! links, unchanged) plus the HTTP API. It opens the store and the key,
//! starts the engine's replica, and serves the API, which calls the engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use libp2p::{Multiaddr, PeerId};
use sd_notify::NotifyState;
use tokio::sync::{mpsc, oneshot};

use chorus_engine::net::Network;
use chorus_engine::storage::SledKv;
use chorus_engine::{Engine, EngineConfig, Intent, SystemClock};

use crate::config::{parse_psk, Config};

/// A running daemon: where it listens, and how to stop it.
pub struct Running {
    pub peer_id: PeerId,
    pub listen: Vec<Multiaddr>,
    pub api: SocketAddr,
    engine: Arc<Engine>,
    api_stop: Option<oneshot::Sender<()>>,
    api_task: tokio::task::JoinHandle<()>,
    /// `POST /v1/leave` asks the daemon to leave (`left`).
    leave_requests: mpsc::Receiver<Intent>,
}

impl Running {
    /// The engine this daemon serves (for tests and embedding).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The dial address of this replica (`<listen>/p2p/<peer id>`).
    pub fn dial_addr(&self) -> Option<Multiaddr> {
        self.listen.first().map(|a| {
            a.clone()
                .with(libp2p::multiaddr::Protocol::P2p(self.peer_id))
        })
    }

    /// The API's requests that this daemon leave (`POST /v1/leave`), each
    /// with the intent to announce. Taken once; later calls get a closed
    /// channel.
    pub fn leave_requests(&mut self) -> mpsc::Receiver<Intent> {
        std::mem::replace(&mut self.leave_requests, mpsc::channel(1).1)
    }

    /// A planned departure: stops the API, tells the peers `intent`
    /// (`Engine::leave_cluster`; each waits at most a second), then stops
    /// the replica like [`Running::stop`].
    pub async fn leave(mut self, intent: Intent) -> anyhow::Result<()> {
        notify_service_manager(&[
            NotifyState::Stopping,
            NotifyState::Status(&format!("leaving the cluster ({})", intent.as_str())),
        ]);
        self.stop_api().await;
        let engine = self.engine.clone();
        let missing = tokio::task::spawn_blocking(move || engine.leave_cluster(intent))
            .await
            .context("leaving the cluster")?
            .context("the replica stopped with an error")?;
        if missing > 0 {
            tracing::warn!(
                intent = intent.as_str(),
                missing,
                "left; some peers did not acknowledge and will detect it as a failure"
            );
        } else {
            tracing::info!(intent = intent.as_str(), "left; every peer acknowledged");
        }
        Ok(())
    }

    async fn stop_api(&mut self) {
        if let Some(tx) = self.api_stop.take() {
            let _ = tx.send(());
        }
        self.api_task.abort();
        let _ = (&mut self.api_task).await;
    }

    /// Stops the API, then the replica (after the commands already sent),
    /// flushes the store and closes the connections. Peers are not told:
    /// they detect it as a failure (see [`Running::leave`]).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        notify_service_manager(&[NotifyState::Stopping]);
        self.stop_api().await;
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.shutdown())
            .await
            .context("stopping the replica")?
            .context("the replica stopped with an error")
    }

    /// Resolves when the replica stops on its own (a fatal store error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.wait_stopped())
            .await
            .context("waiting for the replica")?;
        anyhow::bail!("the replica stopped")
    }
}

/// Opens the store and the key, starts the replica with its network, binds
/// the API.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    for warning in config.startup_warnings() {
        tracing::warn!("{warning}");
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let key = crate::keys::load_or_generate(&config.key_path())?;
    let network = Network {
        key,
        listen: config.listen.clone(),
        peers: config.peers.clone(),
        allowed_peers: config.allowed_peers.clone(),
        psk: config.psk.as_deref().and_then(parse_psk),
        name: config.name.clone(),
    };
    let peer_id = network.peer_id();
    let mut engine_config = EngineConfig::new(network.node_id());
    engine_config.replica = config.replica_config(network.node_id());
    let store_dir = config.data_dir.join("store");
    let engine = tokio::task::spawn_blocking(move || {
        let kv = SledKv::open(&store_dir)
            .with_context(|| format!("cannot open the store in {}", store_dir.display()))?;
        Engine::start_networked(Arc::new(kv), engine_config, network, Arc::new(SystemClock))
            .context("cannot start the replica")
    })
    .await
    .context("starting the replica")??;
    let engine = Arc::new(engine);
    let (_, listen) = engine
        .listen_addrs()?
        .context("the replica has no network")?;
    let api_listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot bind the API on {}", config.api.listen))?;
    let api = api_listener.local_addr()?;
    let (leave_tx, leave_requests) = mpsc::channel(1);
    let router =
        crate::api::router(crate::api::ApiState::new(&config, engine.clone()).with_leave(leave_tx));
    let (api_stop, api_stop_rx) = oneshot::channel::<()>();
    let header_timeout = Duration::from_millis(config.api.header_read_timeout_ms);
    let api_task = tokio::spawn(crate::api::server::serve(
        api_listener,
        router,
        header_timeout,
        api_stop_rx,
    ));
    tracing::info!(%peer_id, %api, "replica started");
    // Only now: the store is open and the API accepts connections, so a
    // unit ordered after this one (Type=notify) can use it at once.
    notify_service_manager(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("replica {peer_id} started; API on {api}")),
    ]);
    Ok(Running {
        peer_id,
        listen,
        api,
        engine,
        api_stop: Some(api_stop),
        api_task,
        leave_requests,
    })
}

/// Tells the service manager `states` (systemd's `sd_notify`, for
/// `Type=notify` units: `node/deploy/chorus.service`) when `NOTIFY_SOCKET`
/// is set; without it, nothing. The variable stays set so that the
/// shutdown can be reported too (every `start` in a process reports; a
/// unit runs `chorus run`, one replica). A failure only logs: a service
/// manager that cannot be told must not stop the replica (systemd itself
/// then times the start out).
fn notify_service_manager(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(%err, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}
