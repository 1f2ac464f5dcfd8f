//! Scenario files (TOML): the cluster, the network, the workload, replica
//! settings and a schedule of faults. Unknown keys are refused; values that
//! cannot happen (a node out of range, a probability above 1) are refused
//! with the key that holds them. See `docs/simulator.md` for the format.

mod validate;

use std::path::Path;

use anyhow::Context;
pub use chorus_engine::replica::ReplicaConfig;
use serde::{Deserialize, Serialize};

use crate::clock::DRIFT_PPM_MAX;
use crate::net::NetConfig;

/// The largest cluster a scenario may ask for.
pub const NODES_MAX: usize = 256;
/// The region of nodes `regions` does not name (and of the workload's
/// calls).
pub const DEFAULT_REGION: &str = "region-a";
/// Most rooms a scenario may preload (`workload.rooms_at_start`): every
/// node holds a copy of each.
pub const ROOMS_AT_START_MAX: usize = 100_000;
/// The longest a run may last (simulated).
pub const DURATION_MS_MAX: u64 = 24 * 3_600_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Free text: what the scenario shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub nodes: usize,
    /// Rooms the workload keeps alive at once.
    #[serde(default = "default_rooms")]
    pub rooms: usize,
    /// Writes and faults happen in `[0, duration_ms]`.
    pub duration_ms: u64,
    /// After `duration_ms` the network heals, crashed nodes restart and
    /// writes stop; the cluster must converge within this budget.
    #[serde(default = "default_liveness")]
    pub liveness_ms: u64,
    #[serde(default)]
    pub network: NetConfig,
    #[serde(default)]
    pub workload: WorkloadConfig,
    #[serde(default)]
    pub replica: ReplicaConfig,
    #[serde(default)]
    pub checks: CheckConfig,
    #[serde(default)]
    pub events: Vec<EventSpec>,
    /// Each node's region (`regions[i]` for node i); unlisted nodes and
    /// the workload's calls are in `region-a`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// Nodes that run the previous build until an `upgrade` event: they
    /// neither advertise nor perform history compaction, as a build from
    /// before it would not (a mixed-version cluster in a rolling upgrade).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub older_builds: Vec<usize>,
    /// Nodes no other replica lists among its configured peers (a media
    /// node linking the library that the daemons' configs do not name):
    /// the others count them only once connected to them since their
    /// last start, and may compact rooms past them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unlisted: Vec<usize>,
    /// Work runs off the replicas' tasks, as the daemon and the library run
    /// it (compactions, and peers' changes into rooms past
    /// `[replica] apply_off_task_ops`), and takes between these many
    /// milliseconds `[min, max]` (drawn each time): the room takes writes,
    /// peers' changes and faults meanwhile. Absent: in line, taking no
    /// time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction_work_ms: Option<[u64; 2]>,
}

fn default_rooms() -> usize {
    20
}

fn default_liveness() -> u64 {
    30_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// Operations per second, cluster-wide, each on a random live node.
    #[serde(default = "default_ops")]
    pub ops_per_sec: f64,
    /// Rooms end now and then (2 % of operations) and new ones replace
    /// them. `false`: rooms live as long as the run (standing rooms with
    /// joins and leaves all day), and those draws are leaves instead.
    #[serde(default = "default_end_rooms")]
    pub end_rooms: bool,
    /// `[start, end]` ms: no operations then. The report's
    /// `background_bytes_per_node_per_s` is measured over the second half
    /// of this window (the first lets the last writes' pushes and rounds
    /// finish): what an idle cluster costs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<[u64; 2]>,
    /// Rooms on every replica before the run starts (`room-0 ..`), as in
    /// a cluster that has held them for months; the workload writes to
    /// them as to the rooms it creates. Late joiners start without them.
    #[serde(default, skip_serializing_if = "no_rooms")]
    pub rooms_at_start: usize,
}

fn no_rooms(n: &usize) -> bool {
    *n == 0
}

fn default_end_rooms() -> bool {
    true
}

fn default_ops() -> f64 {
    100.0
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            ops_per_sec: default_ops(),
            end_rooms: default_end_rooms(),
            idle_ms: None,
            rooms_at_start: 0,
        }
    }
}

/// How often the run is checked and sampled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Invariants (iii) and (iv) are checked this often during the run.
    #[serde(default = "default_check_ms")]
    pub interval_ms: u64,
    /// Rooms compared per check (drawn at random from every room named).
    #[serde(default = "default_check_rooms")]
    pub rooms_per_check: usize,
    /// The timeline samples each node's root this often.
    #[serde(default = "default_sample_ms")]
    pub sample_ms: u64,
    /// If set, the room-level checks (periodic and final) read each room on
    /// this many live replicas, spread over the nodes, instead of on every
    /// one; the digest roots still compare every replica. For clusters of
    /// hundreds, where reading every room everywhere costs minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_per_room: Option<usize>,
    /// If set, every detected crash must have its calls re-homed (crash →
    /// Down everywhere → owned by live nodes everywhere) within this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_budget_ms: Option<u64>,
    /// If set, convictions of live nodes above this fail the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_failovers_max: Option<u64>,
    /// If set, calls taken over (by failovers and drains) above this fail
    /// the run: 0 for planned restarts, which must move nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rehomed_calls_max: Option<u64>,
}

fn default_check_ms() -> u64 {
    1_000
}

fn default_check_rooms() -> usize {
    16
}

fn default_sample_ms() -> u64 {
    100
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            interval_ms: default_check_ms(),
            rooms_per_check: default_check_rooms(),
            sample_ms: default_sample_ms(),
            replicas_per_room: None,
            failover_budget_ms: None,
            false_failovers_max: None,
            rehomed_calls_max: None,
        }
    }
}

/// One scheduled fault: `at_ms` and exactly one action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub at_ms: u64,
    /// Symmetric groups; nodes in no group form one more group. Replaces
    /// earlier cuts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Vec<Vec<usize>>>,
    /// Like `partition`, by region: each group of regions is cut off from
    /// the others; nodes of regions in no group form one more group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_regions: Option<Vec<Vec<String>>>,
    /// `from` can reach `to`; `to` can no longer reach `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oneway: Option<OneWay>,
    /// Cuts one node off from every other, both ways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolate: Option<usize>,
    /// A random split into this many groups, drawn from the seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<usize>,
    /// Cuts the link between two nodes, both ways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<[usize; 2]>,
    /// Restores the link between two nodes, both ways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<[usize; 2]>,
    /// A link that goes down and up every `period_ms` until `until_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flap: Option<Flap>,
    /// Every link works again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<usize>,
    /// The node stops, and starts again on its store as the current build
    /// (a step of a rolling upgrade; see `older_builds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<usize>,
    /// The node loses its disk (and crashes if up); `restart` brings it
    /// back empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe: Option<usize>,
    /// The node starts here, empty: it is absent (and unknown to the
    /// others) before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew: Option<ClockSkew>,
    /// New network conditions (unset keys keep their value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetUpdate>,
    /// Every sync stream resets; messages in flight on them are lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_streams: Option<bool>,
    /// The node reports its application health (load over capacity, and
    /// call-setup failure rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degrade: Option<Degrade>,
    /// An operator drains the node: its calls move away at the drain rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<usize>,
    /// An operator cancels the node's drain: calls not yet moved stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undrain: Option<usize>,
    /// The node tells its peers it is leaving (`restart`: hold my calls;
    /// `stop`: take them now), as SIGTERM makes the daemon do. It keeps
    /// running: a `crash` event ends its process, a `restart` brings it
    /// back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leave: Option<Leave>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Leave {
    pub node: usize,
    pub intent: chorus_engine::Intent,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Degrade {
    pub node: usize,
    /// Load relative to capacity (1.0 = at capacity).
    #[serde(default)]
    pub load: f64,
    #[serde(default)]
    pub setup_failure_rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneWay {
    pub from: usize,
    pub to: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flap {
    pub a: usize,
    pub b: usize,
    pub period_ms: u64,
    pub until_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSkew {
    pub node: usize,
    /// The node's clock minus the true time, from this event on.
    pub offset_ms: i64,
    /// Parts per million the clock gains (negative: loses) from here on.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drift_ppm: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<[u64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_reset: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder: Option<bool>,
}

impl NetUpdate {
    pub fn applied_to(&self, base: &NetConfig) -> NetConfig {
        NetConfig {
            latency_ms: self.latency_ms.unwrap_or(base.latency_ms),
            loss: self.loss.unwrap_or(base.loss),
            stream_reset: self.stream_reset.unwrap_or(base.stream_reset),
            duplicate: self.duplicate.unwrap_or(base.duplicate),
            reorder: self.reorder.unwrap_or(base.reorder),
            between: base.between.clone(),
        }
    }
}

/// A validated action, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    Partition(Vec<Vec<usize>>),
    /// Blocks the directed pair `from → to`.
    Block {
        from: usize,
        to: usize,
    },
    Unblock {
        from: usize,
        to: usize,
    },
    Split(usize),
    Heal,
    Crash(usize),
    Restart(usize),
    Upgrade(usize),
    Wipe(usize),
    Join(usize),
    Clock {
        node: usize,
        offset_ms: i64,
        drift_ppm: i64,
    },
    Network(NetUpdate),
    ResetStreams,
    Degrade(Degrade),
    Drain(usize),
    Undrain(usize),
    Leave(Leave),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    pub at_ms: u64,
    pub fault: Fault,
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("scenario {}", path.display()))
    }

    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let scenario: Scenario = toml::from_str(text)?;
        scenario.validate().map_err(anyhow::Error::msg)?;
        Ok(scenario)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print scenario: {e}\n"))
    }

    /// Node `i`'s region (`region-a` unless `regions` names one).
    pub fn region_of(&self, i: usize) -> &str {
        self.regions.get(i).map_or(DEFAULT_REGION, String::as_str)
    }

    /// Every region a node is in, in order of first appearance.
    pub fn region_names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for i in 0..self.nodes {
            let region = self.region_of(i);
            if !out.contains(&region) {
                out.push(region);
            }
        }
        out
    }

    /// Nodes that start absent (they have a `join` event).
    pub fn late_joiners(&self) -> Vec<usize> {
        self.events.iter().filter_map(|e| e.join).collect()
    }

    /// The schedule: every event as faults in time order (flaps expanded;
    /// events at the same time keep their file order).
    pub fn plan(&self) -> Vec<Timed> {
        let mut plan = Vec::new();
        for e in &self.events {
            let at_ms = e.at_ms;
            let mut push = |at_ms: u64, fault: Fault| plan.push(Timed { at_ms, fault });
            if let Some(groups) = &e.partition {
                push(at_ms, Fault::Partition(groups.clone()));
            }
            if let Some(groups) = &e.partition_regions {
                let nodes = groups
                    .iter()
                    .map(|regions| {
                        (0..self.nodes)
                            .filter(|&i| regions.iter().any(|r| r == self.region_of(i)))
                            .collect()
                    })
                    .collect();
                push(at_ms, Fault::Partition(nodes));
            }
            if let Some(OneWay { from, to }) = e.oneway {
                push(at_ms, Fault::Block { from: to, to: from });
            }
            if let Some(v) = e.isolate {
                let others: Vec<usize> = (0..self.nodes).filter(|&o| o != v).collect();
                push(at_ms, Fault::Partition(vec![vec![v], others]));
            }
            if let Some(k) = e.split {
                push(at_ms, Fault::Split(k));
            }
            if let Some([a, b]) = e.cut {
                push(at_ms, Fault::Block { from: a, to: b });
                push(at_ms, Fault::Block { from: b, to: a });
            }
            if let Some([a, b]) = e.connect {
                push(at_ms, Fault::Unblock { from: a, to: b });
                push(at_ms, Fault::Unblock { from: b, to: a });
            }
            if let Some(f) = e.flap {
                let mut t = at_ms;
                let mut down = true;
                while t < f.until_ms {
                    if down {
                        push(t, Fault::Block { from: f.a, to: f.b });
                        push(t, Fault::Block { from: f.b, to: f.a });
                    } else {
                        push(t, Fault::Unblock { from: f.a, to: f.b });
                        push(t, Fault::Unblock { from: f.b, to: f.a });
                    }
                    down = !down;
                    t += f.period_ms;
                }
                push(f.until_ms, Fault::Unblock { from: f.a, to: f.b });
                push(f.until_ms, Fault::Unblock { from: f.b, to: f.a });
            }
            if e.heal == Some(true) {
                push(at_ms, Fault::Heal);
            }
            if let Some(v) = e.crash {
                push(at_ms, Fault::Crash(v));
            }
            if let Some(v) = e.restart {
                push(at_ms, Fault::Restart(v));
            }
            if let Some(v) = e.upgrade {
                push(at_ms, Fault::Upgrade(v));
            }
            if let Some(v) = e.wipe {
                push(at_ms, Fault::Wipe(v));
            }
            if let Some(v) = e.join {
                push(at_ms, Fault::Join(v));
            }
            if let Some(s) = e.clock_skew {
                push(
                    at_ms,
                    Fault::Clock {
                        node: s.node,
                        offset_ms: s.offset_ms,
                        drift_ppm: s.drift_ppm,
                    },
                );
            }
            if let Some(update) = &e.network {
                push(at_ms, Fault::Network(update.clone()));
            }
            if e.reset_streams == Some(true) {
                push(at_ms, Fault::ResetStreams);
            }
            if let Some(d) = e.degrade {
                push(at_ms, Fault::Degrade(d));
            }
            if let Some(v) = e.drain {
                push(at_ms, Fault::Drain(v));
            }
            if let Some(v) = e.undrain {
                push(at_ms, Fault::Undrain(v));
            }
            if let Some(l) = e.leave {
                push(at_ms, Fault::Leave(l));
            }
        }
        plan.sort_by_key(|t| t.at_ms);
        plan
    }
}

impl EventSpec {
    /// The names of the actions this event sets.
    fn actions(&self) -> Vec<&'static str> {
        let set = [
            ("partition", self.partition.is_some()),
            ("partition_regions", self.partition_regions.is_some()),
            ("oneway", self.oneway.is_some()),
            ("isolate", self.isolate.is_some()),
            ("split", self.split.is_some()),
            ("cut", self.cut.is_some()),
            ("connect", self.connect.is_some()),
            ("flap", self.flap.is_some()),
            ("heal", self.heal.is_some()),
            ("crash", self.crash.is_some()),
            ("restart", self.restart.is_some()),
            ("upgrade", self.upgrade.is_some()),
            ("wipe", self.wipe.is_some()),
            ("join", self.join.is_some()),
            ("clock_skew", self.clock_skew.is_some()),
            ("network", self.network.is_some()),
            ("reset_streams", self.reset_streams.is_some()),
            ("degrade", self.degrade.is_some()),
            ("drain", self.drain.is_some()),
            ("undrain", self.undrain.is_some()),
            ("leave", self.leave.is_some()),
        ];
        set.iter().filter(|(_, on)| *on).map(|(k, _)| *k).collect()
    }
}
