//! Replica settings. Each default says where it comes from.

use crate::error::Error;
use crate::ids::{NodeId, RegionId};
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
    /// Seeds the replica's only randomness (anti-entropy jitter, probe
    /// order).
    pub seed: u64,

    // ---- failure detection (see docs/failover.md) -------------------------
    /// Run membership, failure detection and failover. Off only for
    /// measurements of the replication protocol alone.
    pub failure_detection: bool,
    /// SWIM probes one member per period. 400 ms (memberlist's LAN default
    /// is 1 s) keeps detection inside the 2.5 s failover budget.
    pub probe_period_ms: u64,
    /// A direct probe unanswered after this long triggers indirect probes.
    pub probe_rtt_ms: u64,
    /// Members asked to probe on our behalf (memberlist: 3).
    pub indirect_probes: usize,
    /// A suspicion not refuted within this long becomes a conviction.
    pub suspect_to_down_ms: u64,
    /// A conviction waits until the node has been silent this long: any
    /// message from it within the window proves it alive.
    pub silence_ms: u64,
    /// Each replica broadcasts its health report this often; it doubles as
    /// the evidence of life that `silence_ms` looks for.
    pub health_interval_ms: u64,
    /// Load (per-mille of capacity) above which a node is Degraded.
    pub degraded_load_permille: u32,
    /// Call-setup failure rate (per-mille) above which a node is Degraded.
    pub degraded_setup_failure_permille: u32,

    // ---- re-homing and drains ---------------------------------------------
    /// This media node's region: re-homed calls stay in their region when a
    /// healthy node there can take them.
    pub region: RegionId,
    /// This media node's declared capacity (calls): its rendezvous weight.
    pub capacity: u32,
    /// Calls per second a failover moves, cluster-wide. High: a dead node's
    /// calls are already broken; the bound only spreads the write burst.
    pub failover_rate_per_s: u32,
    /// Calls per second a drain moves unless the order says otherwise.
    /// Low: a drained node's calls are fine where they are, and each move
    /// costs its clients a reconnect.
    pub drain_rate_per_s: u32,
    /// A Down node that comes back within this long of its conviction stops
    /// its failover: the calls not yet moved stay on it.
    pub rollback_grace_ms: u64,
    /// Fail calls over only while this replica sees a strict majority of
    /// the configured cluster (`peers` and itself; of the nodes it knows if
    /// none are configured), for `silence_ms` at least: the minority side
    /// of a partition leaves calls where they are instead of fighting over
    /// them.
    pub failover_needs_majority: bool,
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
            failure_detection: true,
            probe_period_ms: 400,
            probe_rtt_ms: 200,
            indirect_probes: 3,
            suspect_to_down_ms: 800,
            silence_ms: 1_000,
            health_interval_ms: 500,
            degraded_load_permille: 1_000,
            degraded_setup_failure_permille: 200,
            region: RegionId::parse("default").expect("a valid region id"),
            capacity: 100,
            failover_rate_per_s: 1_000,
            drain_rate_per_s: 10,
            rollback_grace_ms: 10_000,
            failover_needs_majority: true,
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
            ("probe_period_ms", self.probe_period_ms),
            ("probe_rtt_ms", self.probe_rtt_ms),
            ("suspect_to_down_ms", self.suspect_to_down_ms),
            ("health_interval_ms", self.health_interval_ms),
            ("failover_rate_per_s", u64::from(self.failover_rate_per_s)),
            ("drain_rate_per_s", u64::from(self.drain_rate_per_s)),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Error::Invalid {
                    field,
                    reason: "must be greater than 0".into(),
                });
            }
        }
        if self.hot_rooms > crate::limits::HOT_ROOMS_MAX {
            return Err(Error::Invalid {
                field: "hot_rooms",
                reason: format!("at most {}", crate::limits::HOT_ROOMS_MAX),
            });
        }
        if self.probe_rtt_ms >= self.probe_period_ms {
            return Err(Error::Invalid {
                field: "probe_rtt_ms",
                reason: "must be shorter than probe_period_ms (indirect probes need the rest of the period)".into(),
            });
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
