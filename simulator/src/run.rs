//! Runs one scenario with one seed: the workload and the fault schedule
//! until `duration_ms`, periodic invariant checks and timeline samples,
//! then the liveness phase (heal everything, restart every node, stop
//! writing) and the final checks.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_engine::RoomId;

use crate::cluster::{node_index, Cluster};
use crate::invariants::{Checker, Invariant};
use crate::mutation::Mutation;
use crate::progress::{RunProgress, RunStatus};
use crate::report::Report;
use crate::rng::Rng;
use crate::scenario::{Fault, Scenario, Timed};
use crate::timeline::Timeline;
use crate::workload::Workload;

/// How often the liveness phase looks for convergence (simulated ms).
const CONVERGENCE_POLL_MS: u64 = 10;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub seed: u64,
    /// How the report names the scenario (a path, or `swarm`).
    pub scenario_name: String,
    /// The command that reproduces this run (printed on failure).
    pub reproduce: String,
    /// Keep a line per notable event.
    pub trace: bool,
    /// Sample the timeline (for `--svg`); off saves a little time.
    pub timeline: bool,
    /// Test only: a deliberate bug (see [`Mutation`]).
    pub mutation: Option<Mutation>,
    /// Told how far the simulated run is (a long run otherwise says
    /// nothing until it ends): a bar or plain lines on stderr.
    pub progress: Option<Arc<RunProgress>>,
    /// The process ends after this run: its cluster is left to the exit,
    /// not freed piece by piece (4.5 % of a short 200-replica run).
    pub leak_at_end: bool,
}

/// How often a run with `progress` tells it (wall time): often enough for
/// a smooth bar, seldom enough to cost nothing. [`RunProgress`] decides
/// what to draw or print.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

impl RunOptions {
    /// A run of the shipped scenario `name` (its reproduce line names the
    /// file under `simulator/scenarios/`).
    pub fn shipped(name: &str, seed: u64) -> Self {
        Self {
            seed,
            scenario_name: name.into(),
            reproduce: format!(
                "chorus-sim run --scenario simulator/scenarios/{name}.toml --seed {seed}"
            ),
            ..Self::default()
        }
    }
}

pub struct RunResult {
    pub report: Report,
    pub timeline: Timeline,
    pub trace: Vec<String>,
}

struct Runner<'a> {
    scenario: &'a Scenario,
    opts: &'a RunOptions,
    cluster: Option<Cluster>,
    workload: Workload,
    workload_rng: Rng,
    checker: Checker,
    timeline: Timeline,
    liveness_ms: u64,
    converged_at: Option<u64>,
    /// Bytes sent by the start of the measured half of
    /// `workload.idle_ms`, then the bytes sent within it.
    background: Background,
}

/// The background traffic measurement (see `WorkloadConfig::idle_ms`).
#[derive(Debug, Clone, Copy, Default)]
enum Background {
    #[default]
    Pending,
    Started {
        bytes: u64,
    },
    Done {
        bytes: u64,
        ms: u64,
    },
}

/// Runs `scenario` (already validated) with `opts.seed`.
pub fn run(scenario: &Scenario, opts: &RunOptions) -> RunResult {
    let wall = Instant::now();
    let mut runner = Runner {
        scenario,
        opts,
        cluster: None,
        workload: Workload::new(
            scenario.rooms,
            scenario.workload.end_rooms,
            scenario.workload.rooms_at_start,
        ),
        workload_rng: Rng::new(0),
        checker: Checker::new(
            opts.seed,
            scenario.checks.rooms_per_check,
            scenario.checks.replicas_per_room,
        ),
        timeline: Timeline::new(scenario.nodes),
        liveness_ms: scenario.duration_ms,
        converged_at: None,
        background: Background::Pending,
    };
    // The engine's merge-rule mutations are per thread: on for this run only.
    let ownership_min = opts.mutation == Some(Mutation::OwnershipMin);
    chorus_engine::mutation::set_ownership_min(ownership_min);
    let drops_joins = opts.mutation == Some(Mutation::CompactionDropsJoins);
    chorus_engine::mutation::set_compaction_drops_joins(drops_joins);
    let ignores_gate = opts.mutation == Some(Mutation::CompactionIgnoresGate);
    chorus_engine::mutation::set_compaction_ignores_gate(ignores_gate);
    let outcome = catch_unwind(AssertUnwindSafe(|| runner.execute()));
    if let Some(progress) = &opts.progress {
        progress.finish();
    }
    chorus_engine::mutation::set_ownership_min(false);
    chorus_engine::mutation::set_compaction_drops_joins(false);
    chorus_engine::mutation::set_compaction_ignores_gate(false);
    let panic = outcome.err().map(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        runner.checker.fail(Invariant::NoPanic, message.clone());
        for invariant in Invariant::ALL {
            if invariant != Invariant::NoPanic {
                let not_checked = "not checked: the run panicked".to_string();
                runner.checker.fail(invariant, not_checked);
            }
        }
        message
    });
    runner.finish(panic, wall)
}

impl Runner<'_> {
    fn cluster(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("the cluster is built first")
    }

    fn execute(&mut self) {
        let s = self.scenario;
        let tuning = s.replica.clone();
        let work_ms = s.compaction_work_ms;
        let regions: Vec<chorus_engine::RegionId> = s
            .regions
            .iter()
            .filter_map(|r| chorus_engine::RegionId::parse(r.as_str()).ok())
            .collect();
        let mut cluster = Cluster::with_absent(
            s.nodes,
            self.opts.seed,
            s.network.clone(),
            move |config| {
                if let Some(region) = node_index(&config.node).and_then(|i| regions.get(i)) {
                    config.region = region.clone();
                }
                config.set_settings(&tuning);
                config.work_off_task = work_ms.is_some();
            },
            &s.late_joiners(),
            &s.older_builds,
            &crate::cluster::preload::rooms(s.workload.rooms_at_start),
        );
        if let Some([lo, hi]) = work_ms {
            cluster.set_work_ms(lo, hi);
        }
        cluster.set_unlisted(&s.unlisted);
        let regions: Vec<String> = (0..s.nodes).map(|i| s.region_of(i).to_string()).collect();
        cluster.net.set_regions(&regions);
        cluster.set_mutation(self.opts.mutation.clone());
        if self.opts.trace {
            cluster.enable_trace_lines();
        }
        self.workload_rng = cluster.rng.fork();
        self.cluster = Some(cluster);
        self.faulty_phase();
        self.liveness_phase();
        let rooms = self.workload.room_ids();
        let converged = self.converged_at.is_some();
        let cluster = self.cluster.as_mut().expect("built above");
        self.checker.final_checks(cluster, &rooms, converged);
        self.failover_checks();
    }

    /// The scenario's failover budget and false-failover limit.
    fn failover_checks(&mut self) {
        let checks = &self.scenario.checks;
        let cluster = self.cluster.as_ref().expect("built");
        let stats = &cluster.failover;
        if let Some(max) = checks.false_failovers_max {
            if stats.false_failovers > max {
                let message = format!(
                    "{} convictions of live nodes (limit {max}): {:?}",
                    stats.false_failovers, stats.false_failover_notes
                );
                self.checker.fail(Invariant::Failover, message);
            }
        }
        if stats.minority_takeovers > 0 {
            let message = format!(
                "{} calls taken over on a minority side: {:?}",
                stats.minority_takeovers, stats.minority_takeover_notes
            );
            self.checker.fail(Invariant::Failover, message);
        }
        if let Some(max) = checks.rehomed_calls_max {
            if stats.rehomed_calls > max {
                let message = format!(
                    "{} calls taken over (limit {max}); timeline: {:?}",
                    stats.rehomed_calls,
                    stats.timeline.iter().rev().take(8).collect::<Vec<_>>()
                );
                self.checker.fail(Invariant::Failover, message);
            }
        }
        if let Some(budget) = checks.failover_budget_ms {
            for c in &stats.crashes {
                if c.restarted_ms.is_some() && c.rehome_ms.is_none() {
                    continue; // back before its failover finished
                }
                match (c.detection_ms, c.rehome_ms) {
                    (Some(d), Some(r)) if d + r <= budget => {}
                    (d, r) => self.checker.fail(
                        Invariant::Failover,
                        format!(
                            "crash of node {} at {} ms: detection {d:?} ms + rehoming {r:?} ms, budget {budget} ms",
                            c.node, c.at_ms
                        ),
                    ),
                }
            }
        }
    }

    /// Writes and faults until `duration_ms`.
    fn faulty_phase(&mut self) {
        let s = self.scenario;
        let plan = s.plan();
        let end = s.duration_ms;
        let mut next_fault = 0;
        let mut next_op_us = self.op_gap_us();
        let mut next_sample = 0;
        let mut next_check = s.checks.interval_ms;
        let mut next_failover_sample = 0;
        let mut rooms: Vec<RoomId> = Vec::new();
        let mut said = Instant::now();
        // The measured half of the idle window, if there is one.
        let idle = s.workload.idle_ms;
        let measured = idle.map(|[a, b]| [a + (b - a) / 2, b]);
        loop {
            self.progress(&mut said, None);
            let fault_at = plan.get(next_fault).map_or(u64::MAX, |t| t.at_ms);
            let measure_at = match (self.background, measured) {
                (Background::Pending, Some([a, _])) => a,
                (Background::Started { .. }, Some([_, b])) => b,
                _ => u64::MAX,
            };
            let t = fault_at
                .min(next_op_us / 1_000)
                .min(next_sample)
                .min(next_check)
                .min(next_failover_sample)
                .min(measure_at)
                .min(end);
            self.cluster().run_until(t);
            if measure_at <= t {
                self.measure_background(t);
            }
            while plan.get(next_fault).is_some_and(|f| f.at_ms <= t) {
                self.apply(&plan[next_fault]);
                next_fault += 1;
            }
            while next_op_us / 1_000 <= t && t < end {
                let at_ms = next_op_us / 1_000;
                // The gap is drawn either way; the operations after the
                // window differ from a run without it (the workload draws
                // from the same generator), runs without one are as before.
                if !idle.is_some_and(|[a, b]| (a..b).contains(&at_ms)) {
                    let cluster = self.cluster.as_mut().expect("built");
                    self.workload.step(cluster, &mut self.workload_rng);
                }
                next_op_us = next_op_us.saturating_add(self.op_gap_us());
            }
            if next_failover_sample <= t {
                self.cluster().sample_failover();
                next_failover_sample += crate::failover::SAMPLE_MS;
            }
            if next_sample <= t {
                self.sample();
                next_sample += s.checks.sample_ms;
            }
            if next_check <= t {
                if rooms.len() != self.workload.rooms_named() {
                    rooms = self.workload.room_ids();
                }
                let cluster = self.cluster.as_mut().expect("built");
                self.checker.periodic(cluster, &rooms);
                next_check += s.checks.interval_ms;
            }
            if t >= end {
                break;
            }
        }
    }

    /// Tells `opts.progress` where the run is, at most every
    /// `PROGRESS_EVERY` of wall time (`said`: when it was last told).
    /// `liveness`: that phase's start and budget, once in it. Reads only.
    fn progress(&self, said: &mut Instant, liveness: Option<(u64, u64)>) {
        let Some(progress) = &self.opts.progress else {
            return;
        };
        if said.elapsed() < PROGRESS_EVERY {
            return;
        }
        *said = Instant::now();
        let Some(cluster) = &self.cluster else {
            return;
        };
        progress.update(&RunStatus {
            sim_ms: cluster.now_ms,
            duration_ms: self.scenario.duration_ms,
            liveness,
            failures: self.checker.failures().len(),
        });
    }

    /// Starts or ends the background measurement at `t`.
    fn measure_background(&mut self, t: u64) {
        let bytes = self.cluster().net.stats.bytes;
        self.background = match self.background {
            Background::Pending => Background::Started { bytes },
            Background::Started { bytes: before } => {
                let start = self
                    .scenario
                    .workload
                    .idle_ms
                    .map_or(t, |[a, b]| a + (b - a) / 2);
                Background::Done {
                    bytes: bytes.saturating_sub(before),
                    ms: t.saturating_sub(start),
                }
            }
            done => done,
        };
    }

    /// Microseconds to the next operation (uniform around the mean).
    fn op_gap_us(&mut self) -> u64 {
        let rate = self.scenario.workload.ops_per_sec;
        if rate <= 0.0 {
            return u64::MAX;
        }
        let mean = (1_000_000.0 / rate).max(1.0) as u64;
        self.workload_rng.range(1, 2 * mean)
    }

    fn sample(&mut self) {
        if self.opts.timeline {
            let cluster = self.cluster.as_ref().expect("built");
            self.timeline.sample(cluster);
        }
    }

    fn apply(&mut self, timed: &Timed) {
        let at = timed.at_ms;
        let cluster = self.cluster.as_mut().expect("built");
        let (node, label) = match &timed.fault {
            Fault::Partition(groups) => {
                cluster.partition(groups);
                (None, format!("partition {groups:?}"))
            }
            Fault::Block { from, to } => {
                cluster.cut(*from, *to);
                (None, format!("cut {from}→{to}"))
            }
            Fault::Unblock { from, to } => {
                cluster.uncut(*from, *to);
                (None, format!("link {from}→{to}"))
            }
            Fault::Split(k) => {
                let n = cluster.len();
                let groups = random_split(&mut cluster.rng, n, *k);
                cluster.partition(&groups);
                (None, format!("split {groups:?}"))
            }
            Fault::Heal => {
                cluster.heal();
                (None, "heal".into())
            }
            Fault::Crash(i) => {
                cluster.crash(*i);
                (Some(*i), "crash".into())
            }
            Fault::Restart(i) => {
                cluster.restart(*i);
                (Some(*i), "restart".into())
            }
            Fault::Upgrade(i) => {
                cluster.upgrade(*i);
                (Some(*i), "upgrade".into())
            }
            Fault::Wipe(i) => {
                cluster.wipe(*i);
                (Some(*i), "wipe".into())
            }
            Fault::Join(i) => {
                cluster.start(*i);
                (Some(*i), "join".into())
            }
            Fault::Clock {
                node,
                offset_ms,
                drift_ppm,
            } => {
                cluster.set_clock(*node, *offset_ms, *drift_ppm);
                (
                    Some(*node),
                    format!("clock {offset_ms:+}ms {drift_ppm:+}ppm"),
                )
            }
            Fault::Network(update) => {
                let config = update.applied_to(&cluster.net.config);
                cluster.set_network(config);
                (None, "network".into())
            }
            Fault::ResetStreams => {
                cluster.reset_streams();
                (None, "reset streams".into())
            }
            Fault::Degrade(d) => {
                cluster.report_health(d.node, d.load, d.setup_failure_rate);
                (Some(d.node), format!("degrade load={}", d.load))
            }
            Fault::Drain(i) => {
                cluster.order_drain(*i, true);
                (Some(*i), "drain".into())
            }
            Fault::Undrain(i) => {
                cluster.order_drain(*i, false);
                (Some(*i), "undrain".into())
            }
            Fault::Leave(l) => {
                cluster.leave(l.node, l.intent);
                (Some(l.node), format!("leave ({})", l.intent.as_str()))
            }
        };
        self.timeline.mark(at, node, label);
    }

    /// Heal, restart everyone, stop writing; wait for equal roots.
    fn liveness_phase(&mut self) {
        let s = self.scenario;
        let cluster = self.cluster.as_mut().expect("built");
        self.liveness_ms = cluster.now_ms;
        cluster.note(None, || "liveness phase".into());
        if cluster.net.blocked().next().is_some() {
            cluster.heal();
        }
        for i in 0..cluster.len() {
            if !cluster.nodes[i].is_up() {
                cluster.restart(i);
            }
        }
        self.timeline.mark(self.liveness_ms, None, "liveness");
        let deadline = self.liveness_ms + s.liveness_ms;
        let mut next_sample = self.liveness_ms;
        let mut said = Instant::now()
            .checked_sub(PROGRESS_EVERY)
            .unwrap_or_else(Instant::now);
        loop {
            self.progress(&mut said, Some((self.liveness_ms, s.liveness_ms)));
            let cluster = self.cluster.as_mut().expect("built");
            let all_up = cluster.nodes.iter().all(|n| n.is_up());
            if all_up && cluster.converged() {
                let at = cluster.now_ms;
                self.converged_at = Some(at);
                cluster.note(None, || "converged".into());
                self.sample();
                break;
            }
            if cluster.now_ms >= deadline {
                cluster.note(None, || "liveness budget ran out".into());
                self.sample();
                break;
            }
            let next = (cluster.now_ms + CONVERGENCE_POLL_MS).min(deadline);
            cluster.run_until(next);
            if next_sample <= next {
                self.sample();
                next_sample += s.checks.sample_ms;
            }
        }
    }

    fn finish(mut self, panic: Option<String>, wall: Instant) -> RunResult {
        let wall_ms = wall.elapsed().as_millis() as u64;
        let mut timeline = std::mem::take(&mut self.timeline);
        timeline.liveness_ms = self.liveness_ms;
        timeline.converged_ms = self.converged_at;
        let Some(mut cluster) = self.cluster.take() else {
            let report = Report::without_cluster(self.scenario, self.opts, &self.checker, panic);
            return RunResult {
                report,
                timeline,
                trace: Vec::new(),
            };
        };
        timeline.end_ms = cluster.now_ms;
        mark_failovers(&mut timeline, &cluster.failover);
        let mut report = Report::new(
            self.scenario,
            self.opts,
            &cluster,
            &self.checker,
            &timeline,
            panic,
            wall_ms,
        );
        if let Background::Done { bytes, ms } = self.background {
            let nodes = cluster.len() as u64;
            report.background_bytes_per_node_per_s =
                (ms > 0).then(|| crate::report::per_node_per_s(bytes, nodes, ms));
        }
        let trace = cluster.trace_lines.take().unwrap_or_default();
        if self.opts.leak_at_end {
            std::mem::forget(cluster);
        }
        RunResult {
            report,
            timeline,
            trace,
        }
    }
}

/// Puts the failover story on the timeline (and so in the SVG): when each
/// crash was known everywhere and when its calls were all re-homed, and
/// the first report of each drain and rollback.
fn mark_failovers(timeline: &mut Timeline, stats: &crate::failover::FailoverStats) {
    for c in &stats.crashes {
        if let Some(d) = c.detection_ms {
            timeline.mark(c.at_ms + d, Some(c.node), "down everywhere");
            if let Some(r) = c.rehome_ms {
                timeline.mark(c.at_ms + d + r, Some(c.node), "calls re-homed");
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (at, _, line) in &stats.timeline {
        let label = if line.starts_with("drain ") {
            line.split(" rate=").next().unwrap_or(line).to_string()
        } else if line.contains("stopped (rollback)") {
            "rollback".to_string()
        } else {
            continue;
        };
        if seen.insert(label.clone()) {
            timeline.mark(*at, None, label);
        }
    }
}

/// `n` nodes shuffled into `k` non-empty groups.
pub fn random_split(rng: &mut Rng, n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.index(i + 1));
    }
    let k = k.clamp(1, n.max(1));
    let mut groups = vec![Vec::new(); k];
    for (position, node) in order.into_iter().enumerate() {
        groups[position % k].push(node);
    }
    for group in &mut groups {
        group.sort_unstable();
    }
    groups
}
