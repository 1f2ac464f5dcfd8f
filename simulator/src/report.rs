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
        Self {
            minimal_bytes: cluster.counters.local_change_bytes * nodes.saturating_sub(1),
            converged: timeline.converged_ms.is_some(),
            convergence_ms: timeline
                .converged_ms
                .map(|at| at.saturating_sub(timeline.liveness_ms)),
            liveness_started_ms: timeline.liveness_ms,
            messages_sent: net.sent,
            messages_dropped: net.dropped,
            messages_duplicated: net.duplicated,
            bytes_sent: net.bytes,
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
        let mut kinds: Vec<_> = self.replicas.bytes_by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        let kinds: Vec<String> = kinds.iter().map(|(k, b)| format!("{k} {b}")).collect();
        let _ = writeln!(out, "  bytes by kind: {}", kinds.join(", "));
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
