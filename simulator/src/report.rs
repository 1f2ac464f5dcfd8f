//! The result of one run: a JSON object (`--json`) and a readable summary.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::cluster::{Cluster, RunCounters};
use crate::invariants::{Checker, Failures};
use crate::net::NetStats;
use crate::run::RunOptions;
use crate::scenario::Scenario;
use crate::stats::{StatTotals, SyncPaths};
use crate::timeline::Timeline;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub scenario: String,
    /// Everything the run was configured with (for a swarm seed: drawn).
    pub options: Scenario,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutation: Option<String>,
    /// Invariant name → "pass" or "fail".
    pub invariants: BTreeMap<&'static str, &'static str>,
    /// For failed invariants: how often, and the first messages.
    pub failures: BTreeMap<&'static str, Failures>,
    pub passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub panic: Option<String>,
    pub converged: bool,
    /// Simulated ms from the start of the liveness phase (the last heal)
    /// to equal roots everywhere.
    pub convergence_ms: Option<u64>,
    pub liveness_started_ms: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub messages_duplicated: u64,
    pub bytes_sent: u64,
    /// Bytes of the changes that had to move: every local change's bytes
    /// times (replicas − 1).
    pub minimal_bytes: u64,
    /// Every byte sent ÷ nodes ÷ simulated seconds.
    pub bytes_per_node_per_s: f64,
    /// The same over the second half of `workload.idle_ms` (no writes):
    /// SWIM, health reports and idle anti-entropy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub background_bytes_per_node_per_s: Option<f64>,
    /// The process's peak resident memory ÷ nodes (Linux; absent
    /// elsewhere): an upper bound per replica, as it includes the
    /// simulator itself, and for a process that ran several runs (a
    /// swarm, the tests) the peak of them all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_per_replica_bytes: Option<u64>,
    /// Bytes sent by message kind ÷ `minimal_bytes`.
    pub bytes_over_minimal_by_kind: BTreeMap<&'static str, f64>,
    /// Peers' changes received ÷ changes applied, over every replica: how
    /// many times a replica received each change it needed (1 is ideal).
    pub change_deliveries_per_replica: f64,
    pub sync_paths: SyncPaths,
    pub sim_ms: u64,
    pub wall_ms: u64,
    /// Simulated time over wall time.
    pub speedup: f64,
    pub trace_hash: String,
    pub writes: RunCounters,
    pub network: NetStats,
    pub replicas: StatTotals,
    /// Per node: simulated ms spent up but off the majority root.
    pub divergence_ms: Vec<u64>,
    pub periodic_checks: u64,
    /// Crash → Down on every live replica, worst crash (simulated ms).
    pub detection_ms: Option<u64>,
    /// Down everywhere → every orphaned call owned by a live node, worst
    /// crash (simulated ms).
    pub rehome_ms: Option<u64>,
    /// Convictions of nodes that were up.
    pub false_failovers: u64,
    /// The most calls owned by crashed nodes at once.
    pub calls_orphaned_max: usize,
    /// Per crash, and the other failover counters.
    pub failover: crate::failover::FailoverStats,
    /// Simulated node-hours (nodes × simulated time).
    pub node_hours: f64,
    pub reproduce: String,
}

impl Report {
    pub fn new(
        scenario: &Scenario,
        opts: &RunOptions,
        cluster: &Cluster,
        checker: &Checker,
        timeline: &Timeline,
        panic: Option<String>,
        wall_ms: u64,
    ) -> Self {
        let replicas = cluster.stat_totals();
        let net = cluster.net.stats.clone();
        let sim_ms = cluster.now_ms;
        let nodes = cluster.len() as u64;
        let minimal = cluster.counters.local_change_bytes * nodes.saturating_sub(1);
        Self {
            minimal_bytes: minimal,
            converged: timeline.converged_ms.is_some(),
            convergence_ms: timeline
                .converged_ms
                .map(|at| at.saturating_sub(timeline.liveness_ms)),
            liveness_started_ms: timeline.liveness_ms,
            messages_sent: net.sent,
            messages_dropped: net.dropped,
            messages_duplicated: net.duplicated,
            bytes_sent: net.bytes,
            bytes_per_node_per_s: per_node_per_s(net.bytes, nodes, sim_ms),
            // Set by the run, which measured it.
            background_bytes_per_node_per_s: None,
            memory_per_replica_bytes: peak_rss_bytes().map(|b| b / nodes.max(1)),
            bytes_over_minimal_by_kind: on_the_wire(&replicas, &cluster.counters)
                .into_iter()
                .map(|(kind, bytes)| (kind, ratio(bytes, minimal)))
                .collect(),
            change_deliveries_per_replica: ratio(
                replicas.changes_received,
                replicas.changes_applied,
            ),
            sync_paths: replicas.sync_paths.clone(),
            sim_ms,
            wall_ms,
            speedup: sim_ms as f64 / wall_ms.max(1) as f64,
            trace_hash: cluster.trace_hash(),
            writes: cluster.counters.clone(),
            network: net,
            replicas,
            divergence_ms: timeline.divergence_ms(),
            periodic_checks: checker.checks_run,
            detection_ms: cluster.failover.detection_ms_max(),
            rehome_ms: cluster.failover.rehome_ms_max(),
            false_failovers: cluster.failover.false_failovers,
            calls_orphaned_max: cluster.failover.calls_orphaned_max,
            failover: cluster.failover.clone(),
            node_hours: nodes as f64 * sim_ms as f64 / 3_600_000.0,
            ..Self::without_cluster(scenario, opts, checker, panic)
        }
    }

    /// A report of a run that never got a cluster (it panicked building it).
    pub fn without_cluster(
        scenario: &Scenario,
        opts: &RunOptions,
        checker: &Checker,
        panic: Option<String>,
    ) -> Self {
        Self {
            seed: opts.seed,
            scenario: opts.scenario_name.clone(),
            options: scenario.clone(),
            mutation: opts.mutation.as_ref().map(ToString::to_string),
            invariants: checker.verdicts(),
            failures: checker
                .failures()
                .iter()
                .map(|(i, f)| (i.name(), f.clone()))
                .collect(),
            passed: !checker.failed(),
            panic,
            converged: false,
            convergence_ms: None,
            liveness_started_ms: 0,
            messages_sent: 0,
            messages_dropped: 0,
            messages_duplicated: 0,
            bytes_sent: 0,
            minimal_bytes: 0,
            bytes_per_node_per_s: 0.0,
            background_bytes_per_node_per_s: None,
            memory_per_replica_bytes: None,
            bytes_over_minimal_by_kind: BTreeMap::new(),
            change_deliveries_per_replica: 0.0,
            sync_paths: SyncPaths::default(),
            sim_ms: 0,
            wall_ms: 0,
            speedup: 0.0,
            trace_hash: String::new(),
            writes: RunCounters::default(),
            network: NetStats::default(),
            replicas: StatTotals::default(),
            divergence_ms: Vec::new(),
            periodic_checks: 0,
            detection_ms: None,
            rehome_ms: None,
            false_failovers: 0,
            calls_orphaned_max: 0,
            failover: crate::failover::FailoverStats::default(),
            node_hours: 0.0,
            reproduce: opts.reproduce.clone(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The readable summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let o = &self.options;
        let _ = writeln!(
            out,
            "scenario {}  seed {}{}",
            self.scenario,
            self.seed,
            self.mutation
                .as_ref()
                .map(|m| format!("  MUTATION {m}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "  {} nodes, {} rooms, {} ms + liveness ≤ {} ms, {} ops/s, loss {:.2}, dup {:.2}, \
             stream resets {:.3}, latency {:?} ms{}",
            o.nodes,
            o.rooms,
            o.duration_ms,
            o.liveness_ms,
            o.workload.ops_per_sec,
            o.network.loss,
            o.network.duplicate,
            o.network.stream_reset,
            o.network.latency_ms,
            if o.network.reorder { ", reorder" } else { "" },
        );
        let w = &self.writes;
        let _ = writeln!(
            out,
            "  writes: {} attempted, {} acknowledged, {} refused; {} crashes, {} restarts, {} wipes",
            w.writes_attempted, w.writes_acked, w.writes_refused, w.crashes, w.restarts, w.wipes
        );
        let convergence = match self.convergence_ms {
            Some(ms) => format!("converged {ms} ms after the liveness phase began"),
            None => "DID NOT CONVERGE".into(),
        };
        let _ = writeln!(out, "  {convergence}");
        let _ = writeln!(
            out,
            "  messages: {} sent, {} dropped, {} duplicated; {} bytes sent, {} minimal ({:.1}×)",
            self.messages_sent,
            self.messages_dropped,
            self.messages_duplicated,
            self.bytes_sent,
            self.minimal_bytes,
            self.bytes_sent as f64 / self.minimal_bytes.max(1) as f64
        );
        let background = self
            .background_bytes_per_node_per_s
            .map_or(String::new(), |b| format!("; {b:.0} when idle"));
        let memory = self.memory_per_replica_bytes.map_or(String::new(), |b| {
            format!("; at most {:.1} MiB of memory", b as f64 / 1_048_576.0)
        });
        let _ = writeln!(
            out,
            "  per node: {:.0} bytes/s sent{background}{memory}",
            self.bytes_per_node_per_s
        );
        let wire = on_the_wire(&self.replicas, &self.writes);
        let mut kinds: Vec<_> = wire.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        let kinds: Vec<String> = kinds.iter().map(|(k, b)| format!("{k} {b}")).collect();
        let _ = writeln!(out, "  bytes on the network by kind: {}", kinds.join(", "));
        let _ = writeln!(
            out,
            "  each needed change arrived {:.2}× per replica",
            self.change_deliveries_per_replica
        );
        let p = &self.sync_paths;
        let _ = writeln!(
            out,
            "  sync paths: {} incremental, {} since, {} full; {} rounds ({} timed out)",
            p.incremental,
            p.since,
            p.full,
            self.replicas.rounds_started,
            self.replicas.rounds_timed_out
        );
        let _ = writeln!(
            out,
            "  {} simulated ms in {} wall ms ({:.0}× real time); trace {}",
            self.sim_ms, self.wall_ms, self.speedup, self.trace_hash
        );
        let f = &self.failover;
        let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
        let _ = writeln!(
            out,
            "  failover: {} crashes; detection {} + rehoming {} (worst); {} false failovers \
             ({} convictions across partitions), \
             {} false suspicions ({} SWIM convictions held by evidence of life) in {:.1} \
             node-hours; {} calls re-homed, at most {} orphaned; {} moves stopped",
            f.crashes.len(),
            ms(self.detection_ms),
            ms(self.rehome_ms),
            self.false_failovers,
            f.partition_convictions,
            f.false_suspicions,
            f.convictions_held,
            self.node_hours,
            f.rehomed_calls,
            self.calls_orphaned_max,
            f.moves_stopped
        );
        if !f.timeline.is_empty() {
            let _ = writeln!(out, "  incidents (failure detection and re-homing):");
            for (at, node, line) in &f.timeline {
                let _ = writeln!(out, "    {at:>9} ms  node {node}: {line}");
            }
            if f.timeline_dropped > 0 {
                let _ = writeln!(out, "    … {} more", f.timeline_dropped);
            }
        }
        let _ = writeln!(out, "  invariants:");
        for (name, verdict) in &self.invariants {
            let _ = writeln!(out, "    {name:<24} {verdict}");
            if let Some(f) = self.failures.get(name) {
                for message in &f.first {
                    let _ = writeln!(out, "      - {message}");
                }
                if f.count > f.first.len() as u64 {
                    let _ = writeln!(out, "      … {} failures in all", f.count);
                }
            }
        }
        if let Some(panic) = &self.panic {
            let _ = writeln!(out, "  PANIC: {panic}");
        }
        if !self.passed {
            let _ = writeln!(out, "  reproduce: {}", self.reproduce);
        }
        out
    }
}

/// `bytes` ÷ `nodes` ÷ (`ms` / 1000); 0 for an empty denominator.
pub fn per_node_per_s(bytes: u64, nodes: u64, ms: u64) -> f64 {
    if nodes == 0 || ms == 0 {
        return 0.0;
    }
    bytes as f64 / nodes as f64 / (ms as f64 / 1_000.0)
}

/// `a` ÷ `b`, 0 when `b` is 0.
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The process's peak resident set (`VmHWM` in `/proc/self/status`).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Bytes on the network by message kind: what the replicas encoded, plus
/// the copies of each broadcast beyond the one its sender counted.
fn on_the_wire(replicas: &StatTotals, counters: &RunCounters) -> BTreeMap<&'static str, u64> {
    let mut out = replicas.bytes_by_kind.clone();
    for (&kind, &bytes) in &counters.broadcast_copies_by_kind {
        *out.entry(kind).or_default() += bytes;
    }
    out
}
