//! Replica settings: one struct for the library, the daemon (its
//! `[replica]` TOML section) and the simulator (a scenario's `[replica]`).
//! Each default says where it comes from.
//!
//! The identity fields (node, cluster, peers, region, seed, failure
//! detection on or off) are the program's to set, not a file's: they are
//! skipped by serde, and [`ReplicaConfig::set_settings`] copies a file's
//! settings onto a config without touching them.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ids::{NodeId, RegionId};
use crate::limits::HOT_ROOMS_DEFAULT;
use crate::membership::DetectorConfig;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicaConfig {
    /// This replica's id; unique in the cluster.
    #[serde(skip)]
    pub node: NodeId,
    /// Every message carries it; messages from another cluster are refused.
    #[serde(skip)]
    pub cluster: u64,
    /// The replicas this one knows of. A room is purged early once all of
    /// them have acknowledged its end.
    #[serde(skip)]
    pub peers: Vec<NodeId>,
    /// Rooms kept in memory.
    pub hot_rooms: usize,
    /// One anti-entropy round per interval, with the next peer in an order
    /// each replica shuffles for each cycle through its peers.
    /// 1 s: an idle round costs two ~60-byte messages, so repair can be far
    /// quicker than Riak's 15 s or Corrosion's 1–15 s at negligible cost.
    pub anti_entropy_interval_ms: u64,
    /// A round with no response for this long is abandoned (stream reset).
    pub round_timeout_ms: u64,
    /// Local changes wait this long to be batched into one push, unless
    /// nothing was pushed for this long before them (then they go at once).
    /// 2 ms keeps propagation far under the 20 ms budget while merging
    /// write bursts.
    pub push_delay_ms: u64,
    /// A push whose changes wait for changes it did not bring is followed
    /// by a request for them this long after, if they still wait then
    /// (0: at once; at most `round_timeout_ms`). Meanwhile further pushes
    /// from that peer ask nothing more, and a missing change already on
    /// its way (pushes from different peers race) is not asked for. 20 ms
    /// covers that race on a LAN and within a region, and delays the
    /// repair of a push truly lost by as much (`replica::missing`).
    pub pull_missing_after_ms: u64,
    /// A peer's compacted base whose cut this replica does not hold (its
    /// peers compacted past it), or a purge proof that ends the room at
    /// another generation than this replica's, is taken once this many
    /// distinct peers sent the same, or every peer it knows of if fewer
    /// (`replica::votes`). 2 (`CATCH_UP_PEERS_MIN`): one peer cannot make
    /// either up alone. 1 trusts any one peer: a way out for a replica that
    /// knows of one peer only that compacted past it.
    pub catch_up_peers_min: usize,
    /// The largest gap (entries of a peer's log after our cursor) a round
    /// closes by comparing: gaps up to `SINCE_LIST_ENTRIES_MAX` (256) are
    /// replayed from the log, larger ones walked down the digest tree;
    /// beyond this a full snapshot is cheaper to reason about.
    pub since_entries_max: u64,
    /// The change log keeps this much history (its horizon). One hour covers
    /// restarts, deploys and most network outages (Redis CRDB's backlog
    /// serves the same purpose).
    pub log_retention_ms: u64,
    /// The change log keeps at most about this many entries, whatever
    /// their age: at a high write rate an hour of entries (one per write)
    /// would fill the disk. 1 000 000 is about 90 MB of entries when each
    /// names one change (a merge's entry names all it applied); the oldest
    /// go first, and a peer behind them catches up by the digest walk or a
    /// snapshot instead of the log. Only entries written since the replica
    /// opened are counted: older ones go first once those exceed the bound,
    /// and by age until then, so after a restart the log may hold this many
    /// plus what it held at the restart.
    pub log_entries_max: u64,
    /// How often old log entries are trimmed.
    pub log_trim_interval_ms: u64,
    /// An ended room is purged after this long even if some replica never
    /// acknowledged the end (it is down, or gone).
    pub purge_horizon_ms: u64,
    /// A replica held Down for this long no longer holds compaction back,
    /// once those not held Down make a majority
    /// (`replica::compaction::absent`): a replica gone for good would
    /// otherwise stop every room's history from being bounded. If it comes
    /// back it catches up on its peers' bases. 24 hours, as long as an
    /// ended room waits for an acknowledgement: an outage is over, or the
    /// node is not coming back.
    pub compaction_absent_ms: u64,
    /// A session that left stays in readings of its room this long after
    /// its leave's HLC stamp, then leaves the room JSON (its counters stay).
    /// 10 minutes: long enough for a client's late resume or a late write
    /// to get "has left" rather than silence, short enough that a room with
    /// thousands of joins a day lists only who is there.
    pub session_retention_ms: u64,
    /// A room whose history holds this many changes since its base is
    /// compacted (`docs/protocol.md`). Writes cost more as the history
    /// grows; a compaction costs about one pass over it.
    pub history_changes_max: u64,
    /// Peers' changes into a room of at least this many automerge
    /// operations are applied on a copy off the replica's task, when the
    /// driver runs work off it (`replica::offload`): automerge walks the
    /// whole room to apply any batch.
    pub apply_off_task_ops: u64,
    /// How often ended-but-not-purged rooms are announced (`EndAck`).
    pub end_ack_interval_ms: u64,
    /// Incident-journal entries kept (the oldest are dropped). 10 000 keeps
    /// days of a stable cluster and hours of a bad one in about 2 MB.
    pub journal_entries_max: usize,
    /// Seeds the replica's only randomness (anti-entropy jitter, probe
    /// order) and, with the time, a new store's identity. `Engine` draws
    /// one from the operating system when this is 0.
    #[serde(skip)]
    pub seed: u64,

    // ---- failure detection (see docs/failover.md) -------------------------
    /// Run membership, failure detection and failover. Off only for
    /// measurements of the replication protocol alone.
    #[serde(skip)]
    pub failure_detection: bool,
    /// Failure detection's timers and thresholds.
    pub detector: DetectorConfig,
    /// Take part in history compaction (`docs/protocol.md`). Off only to
    /// stand for an older build in a mixed-version test: such a replica
    /// never says it can compact, so no room is compacted while it is a
    /// member.
    #[serde(skip)]
    pub compaction: bool,
    /// The driver runs `Output::Work` (a compaction's costly part) on
    /// another thread. Set by drivers that do (`Engine`); off, the replica
    /// does that work in line and never emits `Output::Work`.
    #[serde(skip)]
    pub work_off_task: bool,

    // ---- re-homing and drains ---------------------------------------------
    /// This media node's region: re-homed calls stay in their region when a
    /// healthy node there can take them.
    #[serde(skip)]
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
            pull_missing_after_ms: 20,
            catch_up_peers_min: crate::limits::CATCH_UP_PEERS_MIN,
            since_entries_max: 50_000,
            log_retention_ms: 3_600_000,
            log_entries_max: 1_000_000,
            log_trim_interval_ms: 10_000,
            purge_horizon_ms: 24 * 3_600_000,
            compaction_absent_ms: 24 * 3_600_000,
            session_retention_ms: 600_000,
            history_changes_max: crate::limits::HISTORY_CHANGES_DEFAULT,
            apply_off_task_ops: crate::limits::APPLY_OFF_TASK_OPS_DEFAULT,
            end_ack_interval_ms: 5_000,
            journal_entries_max: 10_000,
            seed: 0,
            failure_detection: true,
            compaction: true,
            work_off_task: false,
            detector: DetectorConfig::default(),
            region: RegionId::parse("default").expect("a valid region id"),
            capacity: 100,
            failover_rate_per_s: 1_000,
            drain_rate_per_s: 10,
            rollback_grace_ms: 10_000,
            failover_needs_majority: true,
        }
    }

    /// `from`'s settings (everything a file may set) on this config, whose
    /// identity fields stay as they are.
    pub fn set_settings(&mut self, from: &ReplicaConfig) {
        *self = ReplicaConfig {
            node: self.node.clone(),
            cluster: self.cluster,
            peers: std::mem::take(&mut self.peers),
            region: self.region.clone(),
            seed: self.seed,
            failure_detection: self.failure_detection,
            compaction: self.compaction,
            work_off_task: self.work_off_task,
            ..from.clone()
        };
    }

    pub fn validate(&self) -> Result<(), Error> {
        let positive = [
            ("hot_rooms", self.hot_rooms as u64),
            ("anti_entropy_interval_ms", self.anti_entropy_interval_ms),
            ("round_timeout_ms", self.round_timeout_ms),
            ("log_retention_ms", self.log_retention_ms),
            ("log_entries_max", self.log_entries_max),
            ("log_trim_interval_ms", self.log_trim_interval_ms),
            ("end_ack_interval_ms", self.end_ack_interval_ms),
            ("history_changes_max", self.history_changes_max),
            ("compaction_absent_ms", self.compaction_absent_ms),
            ("apply_off_task_ops", self.apply_off_task_ops),
            ("catch_up_peers_min", self.catch_up_peers_min as u64),
            ("detector.probe_period_ms", self.detector.probe_period_ms),
            ("detector.probe_rtt_ms", self.detector.probe_rtt_ms),
            (
                "detector.suspect_to_down_ms",
                self.detector.suspect_to_down_ms,
            ),
            (
                "detector.health_interval_ms",
                self.detector.health_interval_ms,
            ),
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
        if !(1..=crate::limits::JOURNAL_ENTRIES_MAX).contains(&self.journal_entries_max) {
            return Err(Error::Invalid {
                field: "journal_entries_max",
                reason: format!("between 1 and {}", crate::limits::JOURNAL_ENTRIES_MAX),
            });
        }
        if self.pull_missing_after_ms > self.round_timeout_ms {
            // Longer, a room's missing changes would wait past the point
            // where a lost answer is given up.
            return Err(Error::Invalid {
                field: "pull_missing_after_ms",
                reason: format!("at most round_timeout_ms ({} ms)", self.round_timeout_ms),
            });
        }
        if self.hot_rooms > crate::limits::HOT_ROOMS_MAX {
            return Err(Error::Invalid {
                field: "hot_rooms",
                reason: format!("at most {}", crate::limits::HOT_ROOMS_MAX),
            });
        }
        if self.detector.restart_grace_ms > crate::limits::RESTART_GRACE_MS_MAX {
            return Err(Error::Invalid {
                field: "detector.restart_grace_ms",
                reason: format!("at most {} ms", crate::limits::RESTART_GRACE_MS_MAX),
            });
        }
        if self.detector.probe_rtt_ms >= self.detector.probe_period_ms {
            return Err(Error::Invalid {
                field: "detector.probe_rtt_ms",
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

/// The defaults, for a configuration file's `[replica]` section: its
/// identity fields (node `replica`, cluster 0) are placeholders the program
/// replaces; a replica should be built with [`ReplicaConfig::new`].
impl Default for ReplicaConfig {
    fn default() -> Self {
        Self::new(NodeId::parse("replica").expect("a valid node id"), 0)
    }
}
