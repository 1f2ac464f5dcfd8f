//! The daemon's configuration: a TOML file, then `CHORUS_*` environment
//! overrides, then validation. With no file at all the defaults run one
//! replica on loopback with its store in `./chorus-data`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chorus_engine::replica::ReplicaConfig;
use chorus_engine::Intent;
use libp2p::{Multiaddr, PeerId};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// A human name for logs and `/v1/health`; the replica's identity on
    /// the wire is its peer id (from the key).
    pub name: String,
    /// The ed25519 node key (`chorus keygen`); created on first start if
    /// missing. Default: `<data_dir>/node.key`.
    pub key_file: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial, each with its `/p2p/<peer id>`.
    pub peers: Vec<Multiaddr>,
    pub region: String,
    /// Every message carries it; replicas of another cluster are refused.
    pub cluster_id: u64,
    /// Peer ids allowed to connect; others are disconnected. Empty: any
    /// peer that completes the handshake (development only).
    pub allowed_peers: Vec<PeerId>,
    /// 64 hex characters: a pre-shared key for a private network (TCP only;
    /// it does not cover QUIC).
    pub psk: Option<String>,
    pub api: ApiConfig,
    /// Enables `POST /v1/drill/partition` and `/v1/drill/heal`.
    pub drills: bool,
    /// Logs as JSON lines instead of text.
    pub log_json: bool,
    /// What SIGTERM (or `POST /v1/leave` without an intent) tells the
    /// peers: `restart` (hold my calls for their `restart_grace_ms`; the
    /// media nodes keep running while the daemon restarts) or `stop` (take
    /// my calls now).
    pub shutdown_intent: Intent,
    /// Replica timers and limits (`[replica]`, and failure detection in
    /// `[replica.detector]`); unset ones keep the engine's defaults. Its
    /// identity comes from elsewhere: the node id from the key, cluster and
    /// region from this file's top level, peers from `allowed_peers`.
    pub replica: ReplicaConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Loopback by default: the API carries no TLS.
    pub listen: SocketAddr,
    /// When set, every request but `/v1/health`, `/v1/ready` and `/metrics` needs
    /// `Authorization: Bearer <token>`.
    pub token: Option<String>,
    pub body_bytes_max: usize,
    /// See [`HEADER_READ_TIMEOUT_MS_DEFAULT`].
    pub header_read_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: "chorus".into(),
            key_file: None,
            data_dir: PathBuf::from("chorus-data"),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a valid address")],
            peers: Vec::new(),
            region: "local".into(),
            cluster_id: 1,
            allowed_peers: Vec::new(),
            psk: None,
            api: ApiConfig::default(),
            drills: false,
            log_json: false,
            shutdown_intent: Intent::Restart,
            replica: ReplicaConfig::default(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            token: None,
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            header_read_timeout_ms: HEADER_READ_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl Config {
    /// Reads `path` (or the defaults), applies the environment, validates.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let (text, name) = match path {
            Some(path) => (
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config {}", path.display()))?,
                path.display().to_string(),
            ),
            None => (String::new(), "(none)".to_string()),
        };
        let mut config = Self::parse_with_env(&text, crate::env_overrides::chorus_vars()?)
            .with_context(|| format!("config {name}"))?;
        config.apply_env(|key| std::env::var(key).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML; an unknown key or a bad value names the key.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Self::parse_with_env(text, std::iter::empty())
    }

    /// Parses TOML with the nested `CHORUS_<SECTION>__<KEY>` overrides of
    /// `vars` set in (`env_overrides`): an unknown key names itself, from
    /// the file or the environment alike.
    pub fn parse_with_env(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let hinted = |err: toml::de::Error| match moved_key(text) {
            Some(hint) => anyhow::anyhow!("{err}\n{hint}"),
            None => err.into(),
        };
        let file: toml::Table = toml::from_str(text).map_err(hinted)?;
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut table = file.clone();
        let applied = crate::env_overrides::apply(&mut table, vars.clone(), true)?;
        if applied.is_empty() {
            // Straight from the text: errors keep their line and column.
            return toml::from_str(text).map_err(hinted);
        }
        if let Ok(config) = toml::Value::Table(table).try_into::<Self>() {
            return Ok(config);
        }
        // A value that reads as a number or a boolean where a string belongs
        // (a token of digits): every override as the string it is, and an
        // error that names the variables but does not echo a value.
        let mut table = file;
        crate::env_overrides::apply(&mut table, vars.iter().cloned(), false)?;
        toml::Value::Table(table).try_into::<Self>().map_err(|err| {
            let mut message = err.to_string();
            for (_, value) in &vars {
                if !value.is_empty() {
                    message = message.replace(value.as_str(), "<the value>");
                }
            }
            anyhow::anyhow!(
                "with the environment's {}: {}",
                applied.join(", "),
                message.trim()
            )
        })
    }

    /// `CHORUS_<KEY>` overrides the file: NAME, DATA_DIR, LISTEN and PEERS
    /// (comma-separated), REGION, CLUSTER_ID, ALLOWED_PEERS, PSK,
    /// API_LISTEN, API_TOKEN, DRILLS, LOG_JSON, SHUTDOWN_INTENT.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        fn list<T: std::str::FromStr>(key: &str, text: &str) -> anyhow::Result<Vec<T>>
        where
            T::Err: std::fmt::Display,
        {
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<T>()
                        .map_err(|e| anyhow::anyhow!("{key}: {s:?}: {e}"))
                })
                .collect()
        }
        fn one<T: std::str::FromStr>(key: &str, text: &str) -> anyhow::Result<T>
        where
            T::Err: std::fmt::Display,
        {
            text.trim()
                .parse::<T>()
                .map_err(|e| anyhow::anyhow!("{key}: {text:?}: {e}"))
        }
        if let Some(v) = var("CHORUS_NAME") {
            self.name = v;
        }
        if let Some(v) = var("CHORUS_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = var("CHORUS_LISTEN") {
            self.listen = list("CHORUS_LISTEN", &v)?;
        }
        if let Some(v) = var("CHORUS_PEERS") {
            self.peers = list("CHORUS_PEERS", &v)?;
        }
        if let Some(v) = var("CHORUS_REGION") {
            self.region = v;
        }
        if let Some(v) = var("CHORUS_CLUSTER_ID") {
            self.cluster_id = one("CHORUS_CLUSTER_ID", &v)?;
        }
        if let Some(v) = var("CHORUS_ALLOWED_PEERS") {
            self.allowed_peers = list("CHORUS_ALLOWED_PEERS", &v)?;
        }
        if let Some(v) = var("CHORUS_PSK") {
            self.psk = Some(v);
        }
        if let Some(v) = var("CHORUS_API_LISTEN") {
            self.api.listen = one("CHORUS_API_LISTEN", &v)?;
        }
        if let Some(v) = var("CHORUS_API_TOKEN") {
            self.api.token = Some(v);
        }
        if let Some(v) = var("CHORUS_DRILLS") {
            self.drills = one("CHORUS_DRILLS", &v)?;
        }
        if let Some(v) = var("CHORUS_LOG_JSON") {
            self.log_json = one("CHORUS_LOG_JSON", &v)?;
        }
        if let Some(v) = var("CHORUS_SHUTDOWN_INTENT") {
            self.shutdown_intent = one("CHORUS_SHUTDOWN_INTENT", &v)?;
        }
        Ok(())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if chorus_engine::NodeId::parse(&self.name).is_err() {
            bail!(
                "name = {:?}: use 1-64 characters of [A-Za-z0-9._-]",
                self.name
            );
        }
        if self.listen.is_empty() {
            bail!("listen: at least one address is needed");
        }
        for (i, peer) in self.peers.iter().enumerate() {
            if peer_of(peer).is_none() {
                bail!("peers[{i}] = {peer}: must end with /p2p/<peer id>");
            }
        }
        if let Some(psk) = &self.psk {
            if parse_psk(psk).is_none() {
                bail!("psk: must be 64 hex characters (32 bytes)");
            }
        }
        if self.api.token.as_deref() == Some("") {
            bail!("api.token: must not be empty (leave it out to disable)");
        }
        if self.api.body_bytes_max < 1024 {
            bail!(
                "api.body_bytes_max = {}: at least 1024",
                self.api.body_bytes_max
            );
        }
        if self.api.header_read_timeout_ms < HEADER_READ_TIMEOUT_MS_MIN {
            bail!(
                "api.header_read_timeout_ms = {}: at least {HEADER_READ_TIMEOUT_MS_MIN}",
                self.api.header_read_timeout_ms
            );
        }
        if chorus_engine::RegionId::parse(self.region.as_str()).is_err() {
            bail!(
                "region = {:?}: use 1-64 characters of [A-Za-z0-9._-]",
                self.region
            );
        }
        let probe = self.replica_config(chorus_engine::NodeId::parse("probe")?);
        probe
            .validate()
            .map_err(|e| anyhow::anyhow!("replica: {e}"))?;
        Ok(())
    }

    /// Settings that run but are unsafe outside a lab, one sentence each
    /// (the daemon logs them as warnings at start-up).
    pub fn startup_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.api.listen.ip().is_loopback() && self.api.token.is_none() {
            warnings.push(format!(
                "the API listens on {} without a token: anyone who can reach it can \
                 read and write every room (set api.token)",
                self.api.listen
            ));
        }
        if self.allowed_peers.is_empty() {
            warnings.push(
                "allowed_peers is empty: any peer that completes the handshake may \
                 replicate with this one (list the replicas' peer ids)"
                    .to_string(),
            );
        }
        warnings
    }

    pub fn key_path(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("node.key"))
    }

    /// The replica's settings, for the replica whose id is `node`.
    pub fn replica_config(&self, node: chorus_engine::NodeId) -> ReplicaConfig {
        let mut c = ReplicaConfig::new(node, self.cluster_id);
        // The daemon's region names the media node's region for re-homing.
        if let Ok(region) = chorus_engine::RegionId::parse(self.region.as_str()) {
            c.region = region;
        }
        c.set_settings(&self.replica);
        // One allow-list is naturally shared by every replica: its own id
        // in it is not a peer.
        c.peers = self
            .allowed_peers
            .iter()
            .filter_map(|p| chorus_engine::NodeId::parse(p.to_base58()).ok())
            .filter(|p| *p != c.node)
            .collect();
        c
    }
}

pub use crate::limits::BODY_BYTES_MAX_DEFAULT;
pub use crate::limits::HEADER_READ_TIMEOUT_MS_DEFAULT;
pub use crate::limits::HEADER_READ_TIMEOUT_MS_MIN;
pub use chorus_engine::net::peer_of;

/// Failure-detection keys that `[replica]` held before they moved to
/// `[replica.detector]`.
const DETECTOR_KEYS: [&str; 8] = [
    "probe_period_ms",
    "probe_rtt_ms",
    "indirect_probes",
    "suspect_to_down_ms",
    "silence_ms",
    "health_interval_ms",
    "degraded_load_permille",
    "degraded_setup_failure_permille",
];

/// For a config written for an earlier release: where a key it puts in
/// `[replica]` lives now.
fn moved_key(text: &str) -> Option<String> {
    let value: toml::Table = toml::from_str(text).ok()?;
    let replica = value.get("replica")?.as_table()?;
    if let Some(key) = DETECTOR_KEYS.iter().find(|k| replica.contains_key(**k)) {
        return Some(format!(
            "`{key}` is a failure-detection setting: it moved from [replica] to [replica.detector]"
        ));
    }
    replica.contains_key("region").then(|| {
        "`region` moved out of [replica]: the top-level `region` names the node's region".into()
    })
}

pub fn parse_psk(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_gives_a_valid_loopback_replica() {
        let config = Config::default();
        config.validate().expect("defaults are valid");
        assert!(config.api.listen.ip().is_loopback());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = format!("{:#}", Config::parse("nmae = \"x\"").unwrap_err());
        assert!(err.contains("nmae"), "{err}");
        let err = format!(
            "{:#}",
            Config::parse("[api]\nlisten = \"nowhere\"").unwrap_err()
        );
        assert!(err.contains("listen"), "{err}");
        let mut config = Config::parse("psk = \"abc\"").expect("parses");
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("psk"), "{err}");
        config.psk = None;
        config.replica.anti_entropy_interval_ms = 0;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("anti_entropy_interval_ms"), "{err}");
    }

    #[test]
    fn replica_settings_are_the_engine_config_and_keep_the_identity() {
        let config = Config::parse(
            "region = \"eu\"\ncluster_id = 9\n[replica]\ndrain_rate_per_s = 3\n\
             [replica.detector]\nsilence_ms = 1500\n",
        )
        .expect("parses");
        let node = chorus_engine::NodeId::parse("n1").expect("id");
        let replica = config.replica_config(node.clone());
        assert_eq!(replica.node, node);
        assert_eq!(replica.cluster, 9);
        assert_eq!(replica.region.as_str(), "eu");
        assert_eq!(replica.drain_rate_per_s, 3);
        assert_eq!(replica.detector.silence_ms, 1500);
        assert_eq!(replica.detector.probe_period_ms, 400, "a default");
        let err = format!(
            "{:#}",
            Config::parse("[replica.detector]\nsilence = 1").unwrap_err()
        );
        assert!(err.contains("silence"), "{err}");
        // The identity is the top level's, not a file's `[replica]`.
        assert!(Config::parse("[replica]\nnode = \"x\"").is_err());
        // A key of an earlier release's layout says where it went.
        let err = format!(
            "{:#}",
            Config::parse("[replica]\nsilence_ms = 1").unwrap_err()
        );
        assert!(
            err.contains("moved from [replica] to [replica.detector]"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            Config::parse("[replica]\nregion = \"eu\"").unwrap_err()
        );
        assert!(err.contains("top-level `region`"), "{err}");
        let config = Config {
            region: "not a region!".into(),
            ..Config::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("region"));
    }

    /// Found by the `config` fuzz target: a config that validates must
    /// start the replica, also when the shared allow-list names this node.
    #[test]
    fn an_allow_list_naming_this_node_still_starts_the_replica() {
        let me = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        let other = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N";
        let config =
            Config::parse(&format!("allowed_peers = [\"{me}\", \"{other}\"]")).expect("parses");
        config.validate().expect("valid");
        let node = chorus_engine::NodeId::parse(me).expect("a node id");
        let replica = config.replica_config(node);
        replica.validate().expect("the replica's config is valid");
        assert_eq!(
            replica.peers,
            [chorus_engine::NodeId::parse(other).expect("id")]
        );
    }

    #[test]
    fn warns_about_an_open_api_and_any_peer() {
        let mut config = Config::default();
        let warnings = config.startup_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("allowed_peers"), "{warnings:?}");
        config.allowed_peers = vec![libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()];
        assert!(
            config.startup_warnings().is_empty(),
            "loopback, peers listed"
        );
        config.api.listen = "0.0.0.0:7070".parse().expect("an address");
        let warnings = config.startup_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("without a token"), "{warnings:?}");
        config.api.token = Some("secret".into());
        assert!(config.startup_warnings().is_empty(), "a token guards it");
        config.api.listen = "[::1]:7070".parse().expect("an address");
        config.api.token = None;
        assert!(config.startup_warnings().is_empty(), "IPv6 loopback");
    }

    #[test]
    fn nested_environment_overrides_reach_every_section() {
        let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let config = Config::parse_with_env(
            "[replica]\nhot_rooms = 10",
            vars(&[
                ("CHORUS_REPLICA__HOT_ROOMS", "8192"),
                ("CHORUS_REPLICA__DETECTOR__RESTART_GRACE_MS", "60000"),
                ("CHORUS_API__BODY_BYTES_MAX", "2048"),
            ]),
        )
        .expect("parses");
        assert_eq!(config.replica.hot_rooms, 8192);
        assert_eq!(config.replica.detector.restart_grace_ms, 60_000);
        assert_eq!(config.api.body_bytes_max, 2048);
        let err =
            Config::parse_with_env("", vars(&[("CHORUS_REPLICA__HOT_ROMS", "1")])).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("hot_roms"), "{text}");
        assert!(text.contains("CHORUS_REPLICA__HOT_ROMS"), "{text}");
        // A token of digits is a string where a string belongs, and an
        // error never echoes a value (it may be a secret).
        let config = Config::parse_with_env("", vars(&[("CHORUS_API__TOKEN", "12345678")]))
            .expect("a numeric token");
        assert_eq!(config.api.token.as_deref(), Some("12345678"));
        let err = Config::parse_with_env(
            "",
            vars(&[
                ("CHORUS_API__TOKEN", "s3cr3t"),
                ("CHORUS_API__BODY_BYTES_MAX", "lots"),
            ]),
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(!text.contains("s3cr3t") && !text.contains("lots"), "{text}");
        assert!(
            text.contains("body_bytes_max") || text.contains("CHORUS_API__BODY_BYTES_MAX"),
            "{text}"
        );
    }

    #[test]
    fn the_header_timeout_has_a_floor() {
        let mut config = Config::parse("[api]\nheader_read_timeout_ms = 50").expect("parses");
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("header_read_timeout_ms"), "{err}");
        config.api.header_read_timeout_ms = HEADER_READ_TIMEOUT_MS_MIN;
        config.validate().expect("the floor is valid");
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let mut config = Config::parse("name = \"a\"\ncluster_id = 3").expect("parses");
        let env = |key: &str| match key {
            "CHORUS_NAME" => Some("b".to_string()),
            "CHORUS_CLUSTER_ID" => Some("9".to_string()),
            _ => None,
        };
        config.apply_env(env).expect("valid overrides");
        assert_eq!(config.name, "b");
        assert_eq!(config.cluster_id, 9);
        let bad = |key: &str| (key == "CHORUS_CLUSTER_ID").then(|| "nine".to_string());
        let err = config.apply_env(bad).unwrap_err().to_string();
        assert!(err.contains("CHORUS_CLUSTER_ID"), "{err}");
    }

    #[test]
    fn a_hot_room_cache_past_the_limit_is_refused_at_validation() {
        // Found by fuzzing: it passed `validate`, then the cache's up-front
        // allocation aborted the daemon.
        let text = include_str!(
            "../../engine/tests/fuzz_regressions/config-hot-rooms-capacity-overflow.toml"
        );
        let config = Config::parse(text).expect("parses");
        let err = config.validate().expect_err("refused");
        assert!(err.to_string().contains("hot_rooms"), "{err}");
    }
}
