//! Who hears this replica's health report, and when.
//!
//! Reports used to go to every node every interval. At 100 replicas that
//! was 95 % of an idle cluster's bytes, and it grew with the cluster
//! (`docs/scale.md`). Each interval (`health_tick`) a report now goes:
//! - to every node when what the others grade and place by changes: the
//!   region, the capacity, or Healthy against Degraded. Re-homing must
//!   agree on the candidates everywhere soon;
//! - otherwise to the next `HEALTH_FANOUT` nodes after the previous ones,
//!   in node-id order starting after this one. Every node receives about
//!   as many as it sends, and the load figures shown to operators refresh
//!   every `n / HEALTH_FANOUT` intervals;
//! - as an ask (`HealthAsk`), which the receiver answers with its own
//!   report, to each node whose report this replica lacks, and to each
//!   node it holds Suspect (at once, then every half interval, and on for
//!   `silence_ms + suspect_to_down_ms` after the suspicion ends). The
//!   suspect's answer is the evidence of life that holds back a false
//!   conviction (`DetectorConfig::silence_ms`); a round trip every half
//!   interval is likelier to arrive than the old one-way report every
//!   interval (`simulator/tests/health.rs`, `docs/scale.md`).
//!
//! Only an ask is answered, so answers never echo. An older build cannot
//! decode an ask and drops it, but it sends its own report to every node
//! every interval, so nothing waits on its answer. It hears an upgraded
//! node by rotation and SWIM only: during a rolling upgrade its evidence
//! of life about upgraded nodes is thinner.

use std::collections::{BTreeMap, BTreeSet};

use super::{wire::Body, Replica};
use crate::ids::{NodeId, RegionId};
use crate::limits::HEALTH_FANOUT;
use crate::membership::{is_degraded, DrainOrder, Grade, HealthReport, DRAIN_ORDERS_MAX};

/// What spreading this replica's report remembers.
#[derive(Debug, Default)]
pub(super) struct Spread {
    /// The last node the previous interval's rotation reached.
    last: Option<NodeId>,
    /// What the last report sent to every node said of what others grade
    /// and place by.
    broadcast: Option<Placement>,
    /// When suspects are asked again, half an interval after a tick that
    /// asked some.
    pub next_ask_ms: Option<u64>,
    /// Nodes no longer Suspect here that are still asked, until when. A
    /// conviction by a replica whose suspicion was not refuted in time can
    /// still arrive by SWIM's gossip after the refutation, and it finds
    /// fresh evidence only if this replica kept asking. Bounded by the
    /// nodes known.
    lingering: BTreeMap<NodeId, u64>,
}

/// The part of a report that re-homing and grading read.
#[derive(Debug, PartialEq, Eq)]
struct Placement {
    region: RegionId,
    capacity: u32,
    degraded: bool,
}

impl Replica {
    /// Builds this interval's report and sends it where it is due.
    pub(super) fn health_tick(&mut self) {
        let mut drains: Vec<DrainOrder> = self.failover.drains.values().cloned().collect();
        drains.sort_by_key(|o| std::cmp::Reverse(o.at));
        drains.truncate(DRAIN_ORDERS_MAX);
        let report = HealthReport {
            region: self.config.region.clone(),
            capacity: self.config.capacity,
            app: self.members.own_health(),
            drains,
        };
        self.members.set_own_report(report.clone());
        let placement = Placement {
            region: report.region.clone(),
            capacity: report.capacity,
            degraded: is_degraded(&self.config.detector, &report.app),
        };
        let mut targets = self.membership_targets();
        targets.sort();
        targets.dedup();
        targets.retain(|n| n != &self.config.node);
        let mut tell: BTreeSet<NodeId> =
            if self.failover.spread.broadcast.as_ref() == Some(&placement) {
                self.rotation(&targets)
            } else {
                self.failover.spread.broadcast = Some(placement);
                targets.iter().cloned().collect()
            };
        let (suspects, unknown) = self.asked(&targets);
        for node in suspects.iter().chain(&unknown) {
            tell.remove(node);
            self.ask(node, report.clone());
        }
        for node in tell {
            self.datagram(
                &node,
                Body::Health {
                    report: report.clone(),
                },
            );
        }
        self.failover.spread.next_ask_ms = (!suspects.is_empty())
            .then(|| self.now_ms + self.config.detector.health_interval_ms / 2);
    }

    /// Asks the suspects again, half an interval after the last tick.
    pub(super) fn ask_suspects_if_due(&mut self) {
        if self
            .failover
            .spread
            .next_ask_ms
            .is_none_or(|at| at > self.now_ms)
        {
            return;
        }
        self.failover.spread.next_ask_ms = None;
        let targets = self.membership_targets();
        let (suspects, _) = self.asked(&targets);
        for node in suspects {
            self.ask_suspect(&node);
        }
    }

    /// Asks a node this replica now suspects, at once (and from the grade
    /// change: not waiting for the next tick).
    pub(super) fn ask_suspect(&mut self, node: &NodeId) {
        if let Some(report) = self.own_report() {
            self.ask(node, report);
        }
    }

    /// A node's grade left Suspect (and not for Down): keep asking it for
    /// as long as a conviction started before its refutation may arrive.
    pub(super) fn linger_asking(&mut self, node: &NodeId) {
        let detector = &self.config.detector;
        let until = self
            .now_ms
            .saturating_add(detector.silence_ms)
            .saturating_add(detector.suspect_to_down_ms);
        self.failover.spread.lingering.insert(node.clone(), until);
    }

    /// Answers an ask: `from` gets this replica's latest report.
    pub(super) fn answer_ask(&mut self, from: &NodeId) {
        if from == &self.config.node || self.members.view(from).is_none() {
            return;
        }
        if let Some(report) = self.own_report() {
            self.datagram(from, Body::Health { report });
        }
    }

    /// The rotation's next `HEALTH_FANOUT` nodes. `targets` is sorted.
    fn rotation(&mut self, targets: &[NodeId]) -> BTreeSet<NodeId> {
        let taken = HEALTH_FANOUT.min(targets.len());
        if taken == 0 {
            return BTreeSet::new();
        }
        let after = self
            .failover
            .spread
            .last
            .as_ref()
            .unwrap_or(&self.config.node);
        let start = targets.partition_point(|n| n <= after);
        let to: Vec<NodeId> = (0..taken)
            .map(|i| targets[(start + i) % targets.len()].clone())
            .collect();
        self.failover.spread.last = to.last().cloned();
        to.into_iter().collect()
    }

    /// Among `targets`: the nodes held Suspect here or lately (`lingering`),
    /// and the nodes whose report this replica lacks.
    fn asked(&mut self, targets: &[NodeId]) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        let now = self.now_ms;
        self.failover
            .spread
            .lingering
            .retain(|_, until| *until > now);
        let mut suspects = BTreeSet::new();
        let mut unknown = BTreeSet::new();
        for node in targets {
            match self.members.view(node) {
                Some(v) if v.grade == Grade::Suspect => {
                    suspects.insert(node.clone());
                }
                Some(v)
                    if v.grade != Grade::Down
                        && self.failover.spread.lingering.contains_key(node) =>
                {
                    suspects.insert(node.clone());
                }
                Some(v) if v.report.is_some() => {}
                _ => {
                    unknown.insert(node.clone());
                }
            }
        }
        (suspects, unknown)
    }

    fn ask(&mut self, to: &NodeId, report: HealthReport) {
        self.datagram(to, Body::HealthAsk { report });
    }

    /// The report this replica last built (none before its first interval).
    fn own_report(&self) -> Option<HealthReport> {
        self.members
            .view(&self.config.node)
            .and_then(|v| v.report.clone())
    }
}
