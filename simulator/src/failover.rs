//! Failover figures of a run, measured against the simulator's ground
//! truth (which nodes are really up): how long each crash took to be
//! detected everywhere (`detection_ms`), how long its calls then took to be
//! owned by live nodes everywhere (`rehome_ms`), convictions of nodes that
//! were up (`false_failovers`), and the most calls orphaned at once.

use std::collections::BTreeMap;

use serde::Serialize;

/// How often orphaned calls are counted while a crash is being handled
/// (simulated ms): the resolution of `rehome_ms`.
pub const SAMPLE_MS: u64 = 10;

/// One crash, followed until its calls are all re-homed.
#[derive(Debug, Clone, Serialize)]
pub struct CrashRecord {
    pub node: usize,
    pub at_ms: u64,
    /// Replicas up at the crash: each must convict the node.
    #[serde(skip)]
    pub witnesses: Vec<usize>,
    /// When each witness graded the node Down.
    #[serde(skip)]
    pub convicted: BTreeMap<usize, u64>,
    /// Crash → Down on every witness still up.
    pub detection_ms: Option<u64>,
    /// Crash → Down on the first witness, and on half of them: what
    /// `detection_ms` owes to finding the dead node and what to spreading
    /// the news (set with it).
    pub first_detection_ms: Option<u64>,
    pub median_detection_ms: Option<u64>,
    /// Down everywhere → every orphaned call owned by a live node on every
    /// live replica.
    pub rehome_ms: Option<u64>,
    /// Calls the node owned (on the worst live replica) when detection
    /// completed.
    pub calls_at_detection: usize,
    /// The node came back before its failover completed.
    pub restarted_ms: Option<u64>,
}

impl CrashRecord {
    pub fn open(&self) -> bool {
        self.restarted_ms.is_none() && self.rehome_ms.is_none()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FailoverStats {
    pub crashes: Vec<CrashRecord>,
    /// Down convictions of a node that was up and that the network did
    /// not cut off from the convicting replica.
    pub false_failovers: u64,
    /// Convictions of a live node across a cut link or partition, or less
    /// than `suspect_to_down_ms` after that cut opened (the suspicion began
    /// during it): right from the detector's point of view, counted apart.
    pub partition_convictions: u64,
    /// Suspicions of a node that was up (refuted or not): the noise the
    /// evidence-of-life layer absorbs.
    pub false_suspicions: u64,
    /// SWIM convictions held back because the node was heard from within
    /// `silence_ms` (each would have been a false failover without that
    /// layer, if the node was up).
    pub convictions_held: u64,
    /// Calls taken over, by any replica, for any reason.
    pub rehomed_calls: u64,
    /// Failover takeovers written by a replica that hears (up, and their
    /// messages reach it) at most half of the members, itself included:
    /// the minority side of a partition must leave the calls alone (an
    /// invariant, unless the replica runs `failover_needs_majority = false`).
    pub minority_takeovers: u64,
    /// The first of them, for the report.
    pub minority_takeover_notes: Vec<String>,
    /// Failovers or drains stopped before they finished (rollbacks).
    pub moves_stopped: u64,
    /// The most calls owned by crashed nodes at one sample.
    pub calls_orphaned_max: usize,
    /// The first false convictions, for the report.
    pub false_failover_notes: Vec<String>,
    /// The incident timeline: grade changes, first takeovers, drains and
    /// rollbacks, as (simulated ms, replica, what).
    pub timeline: Vec<(u64, usize, String)>,
    pub timeline_dropped: u64,
    #[serde(skip)]
    takeovers_seen: std::collections::BTreeSet<(usize, String)>,
}

/// Timeline lines kept (a flapping link can produce thousands).
pub const TIMELINE_MAX: usize = 200;

/// Notes kept per kind of surprise.
const NOTES_MAX: usize = 8;

impl FailoverStats {
    pub fn incident(&mut self, at_ms: u64, replica: usize, line: String) {
        if self.timeline.len() < TIMELINE_MAX {
            self.timeline.push((at_ms, replica, line));
        } else {
            self.timeline_dropped += 1;
        }
    }

    /// A takeover: only the first per (replica, former owner) makes a line.
    pub fn takeover(&mut self, at_ms: u64, replica: usize, from: &str, line: String) {
        self.rehomed_calls += 1;
        if self.takeovers_seen.insert((replica, from.to_string())) {
            self.incident(
                at_ms,
                replica,
                format!("{line} (first of its takeovers from {from})"),
            );
        }
    }

    /// A failover takeover by a replica on a minority side (`reach` of
    /// `nodes`, itself included).
    pub fn minority_takeover(
        &mut self,
        at_ms: u64,
        replica: usize,
        reach: usize,
        nodes: usize,
        line: &str,
    ) {
        self.minority_takeovers += 1;
        if self.minority_takeover_notes.len() < NOTES_MAX {
            self.minority_takeover_notes.push(format!(
                "node {replica} (reaching {reach} of {nodes}) at {at_ms} ms: {line}"
            ));
        }
    }

    pub fn crashed(&mut self, node: usize, at_ms: u64, witnesses: Vec<usize>) {
        self.crashes.push(CrashRecord {
            node,
            at_ms,
            witnesses,
            convicted: BTreeMap::new(),
            detection_ms: None,
            first_detection_ms: None,
            median_detection_ms: None,
            rehome_ms: None,
            calls_at_detection: 0,
            restarted_ms: None,
        });
    }

    pub fn restarted(&mut self, node: usize, at_ms: u64) {
        for c in self
            .crashes
            .iter_mut()
            .filter(|c| c.node == node && c.open())
        {
            c.restarted_ms = Some(at_ms);
        }
    }

    /// Replica `by` graded `node` Down at `at_ms`; `node_up` is the truth.
    pub fn convicted(&mut self, by: usize, node: usize, at_ms: u64, node_up: bool) {
        if node_up {
            self.false_failovers += 1;
            if self.false_failover_notes.len() < NOTES_MAX {
                self.false_failover_notes.push(format!(
                    "node {by} convicted live node {node} at {at_ms} ms"
                ));
            }
            return;
        }
        if let Some(c) = self
            .crashes
            .iter_mut()
            .rev()
            .find(|c| c.node == node && c.open())
        {
            c.convicted.entry(by).or_insert(at_ms);
        }
    }

    pub fn suspected(&mut self, node_up: bool) {
        if node_up {
            self.false_suspicions += 1;
        }
    }

    /// Whether any crash still waits for detection or re-homing.
    pub fn watching(&self) -> bool {
        self.crashes.iter().any(CrashRecord::open)
    }

    /// One sample: `up` says which replicas are up; `orphans(i, node)`
    /// counts the calls replica `i` sees owned by `node`.
    pub fn sample(
        &mut self,
        now_ms: u64,
        up: &[bool],
        mut orphans: impl FnMut(usize, usize) -> usize,
    ) {
        let mut orphaned_now = 0;
        for c in self.crashes.iter_mut().filter(|c| c.open()) {
            let live: Vec<usize> = (0..up.len()).filter(|&i| up[i] && i != c.node).collect();
            let worst = live.iter().map(|&i| orphans(i, c.node)).max().unwrap_or(0);
            orphaned_now += worst;
            if c.detection_ms.is_none() {
                let witnesses: Vec<usize> =
                    c.witnesses.iter().copied().filter(|&w| up[w]).collect();
                let all =
                    !witnesses.is_empty() && witnesses.iter().all(|w| c.convicted.contains_key(w));
                if all {
                    let done = witnesses
                        .iter()
                        .filter_map(|w| c.convicted.get(w))
                        .max()
                        .copied()
                        .unwrap_or(now_ms);
                    c.detection_ms = Some(done.saturating_sub(c.at_ms));
                    let mut times: Vec<u64> = witnesses
                        .iter()
                        .filter_map(|w| c.convicted.get(w))
                        .copied()
                        .collect();
                    times.sort_unstable();
                    c.first_detection_ms = times.first().map(|t| t.saturating_sub(c.at_ms));
                    c.median_detection_ms = times
                        .get(times.len() / 2)
                        .map(|t| t.saturating_sub(c.at_ms));
                    c.calls_at_detection = worst;
                }
            }
            if let Some(detection) = c.detection_ms {
                if worst == 0 {
                    let down_everywhere = c.at_ms + detection;
                    c.rehome_ms = Some(now_ms.saturating_sub(down_everywhere));
                }
            }
        }
        self.calls_orphaned_max = self.calls_orphaned_max.max(orphaned_now);
    }

    /// The slowest detection of the run.
    pub fn detection_ms_max(&self) -> Option<u64> {
        self.crashes.iter().filter_map(|c| c.detection_ms).max()
    }

    pub fn rehome_ms_max(&self) -> Option<u64> {
        self.crashes.iter().filter_map(|c| c.rehome_ms).max()
    }

    /// Crash → every call re-homed, worst case.
    pub fn failover_ms_max(&self) -> Option<u64> {
        self.crashes
            .iter()
            .filter_map(|c| Some(c.detection_ms? + c.rehome_ms?))
            .max()
    }
}
