//! Replica settings. Each default says where it comes from.

use crate::error::Error;
use crate::ids::NodeId;
use crate::limits::HOT_ROOMS_DEFAULT;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// This replica's id; unique in the cluster.
    pub node: NodeId,
    /// Every message carries it; messages from another cluster are refused.
    pub cluster: u64,
    /// The replicas this one knows of. A room is purged early once all of
    /// them have acknowledged its end.
    pub peers: Vec<NodeId>,
    /// Rooms kept in memory.
    pub hot_rooms: usize,
    /// One anti-entropy round per interval, with the next peer in turn.
    /// 1 s: an idle round costs two ~60-byte messages, so repair can be far
    /// quicker than Riak's 15 s or Corrosion's 1–15 s at negligible cost.
    pub anti_entropy_interval_ms: u64,
    /// A round with no response for this long is abandoned (stream reset).
    pub round_timeout_ms: u64,
    /// Local changes wait this long to be batched into one push. 2 ms keeps
    /// propagation far under the 20 ms budget while merging write bursts.
    pub push_delay_ms: u64,
    /// The since-a-timestamp path is used while the gap is at most this many
    /// log entries; beyond it a full snapshot is cheaper to reason about.
    pub since_entries_max: u64,
    /// The change log keeps this much history (its horizon). One hour covers
    /// restarts, deploys and most network outages (Redis CRDB's backlog
    /// serves the same purpose).
    pub log_retention_ms: u64,
    /// How often old log entries are trimmed.
    pub log_trim_interval_ms: u64,
    /// An ended room is purged after this long even if some replica never
    /// acknowledged the end (it is down, or gone).
    pub purge_horizon_ms: u64,
    /// How often ended-but-not-purged rooms are announced (`EndAck`).
    pub end_ack_interval_ms: u64,
    /// Incident-journal entries kept (the oldest are dropped). 10 000 keeps
    /// days of a stable cluster and hours of a bad one in about 2 MB.
    pub journal_entries_max: usize,
    /// Seeds the replica's only randomness (anti-entropy jitter).
    pub seed: u64,
}

impl ReplicaConfig {
    pub fn new(node: NodeId, cluster: u64) -> Self {
        Self {
            node,
            cluster,
            peers: Vec::new(),
            hot_rooms: HOT_ROOMS_DEFAULT,
            anti_entropy_interval_ms: 1_000,
            round_timeout_ms: 5_000,
            push_delay_ms: 2,
            since_entries_max: 50_000,
            log_retention_ms: 3_600_000,
            log_trim_interval_ms: 10_000,
            purge_horizon_ms: 24 * 3_600_000,
            end_ack_interval_ms: 5_000,
            journal_entries_max: 10_000,
            seed: 0,
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        let positive = [
            ("hot_rooms", self.hot_rooms as u64),
            ("anti_entropy_interval_ms", self.anti_entropy_interval_ms),
            ("round_timeout_ms", self.round_timeout_ms),
            ("log_retention_ms", self.log_retention_ms),
            ("log_trim_interval_ms", self.log_trim_interval_ms),
            ("end_ack_interval_ms", self.end_ack_interval_ms),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Error::Invalid {
                    field,
                    reason: "must be greater than 0".into(),
                });
            }
        }
        if self.peers.contains(&self.node) {
            return Err(Error::Invalid {
                field: "peers",
                reason: "must not contain the node itself".into(),
            });
        }
        Ok(())
    }
}
