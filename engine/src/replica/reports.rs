//! Who hears this replica's health report, and when.
//!
//! Reports used to go to every node every interval. At 100 replicas that
//! was 95 % of an idle cluster's bytes, and it grew with the cluster
//! (`docs/scale.md`). Each interval (`health_tick`) a report now goes:
//! - to every node for `LOUD_INTERVALS` intervals when what the others
//!   grade and place by changes (the region, the capacity, or Healthy
//!   against Degraded): re-homing must agree on the candidates everywhere
//!   soon, and one lost datagram must not leave a replica wrong for long;
//! - otherwise to the next `HEALTH_FANOUT` nodes after the previous ones,
//!   in node-id order starting after this one. Every node receives about
//!   as many as it sends, and the load figures shown to operators refresh
//!   every `n / HEALTH_FANOUT` intervals;
//! - as an ask (`HealthAsk`), which the receiver answers with its own
//!   report, to each node whose report this replica lacks, and to each
//!   node it holds Suspect (at once, then `ASKS_PER_INTERVAL` times an
//!   interval, and on for `silence_ms + suspect_to_down_ms` after the
//!   suspicion ends: a conviction by a replica that missed the refutation
//!   can still arrive by SWIM's gossip; it starts only where the node was
//!   silent for `silence_ms`, so from a replica that heard nothing of it
//!   either), each such ask with `Suspected` (`membership/refute.rs`),
//!   and to the node this replica watches, every half probe period in
//!   which nothing came from it (`membership/watch.rs`).
//!
//! The answers are the evidence of life that holds back a false conviction
//! (`DetectorConfig::silence_ms`; `simulator/tests/failover.rs`). A replica
//! that missed SWIM's suspicion and hears of the conviction first asked
//! nothing: it has only what rotation and SWIM brought. Having the suspect
//! send its report to every node each interval while asked was tried; at
//! 40 % loss it let more false convictions through than asking four times
//! an interval (`docs/scale.md`).
//!
//! Only an ask is answered, so answers never echo, and a node answers each
//! peer at most once per `ANSWER_GAP` of an interval. An older build cannot
//! decode an ask and drops it (a decode error there), but it sends its own
//! report to every node every interval, so nothing waits on its answer.
//! It hears an upgraded node by rotation and SWIM only: during a rolling
//! upgrade its evidence of life about upgraded nodes is thinner.

use std::collections::{BTreeMap, BTreeSet};

use super::wire::{Body, READS_REFUTE, READS_WATCH};
use super::Replica;
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
    /// When the suspects are asked next (`ASKS_PER_INTERVAL` times an
    /// interval while there are any).
    pub next_ask_ms: Option<u64>,
    /// Nodes no longer Suspect here that are still asked, until when. A
    /// conviction by a replica whose suspicion was not refuted in time can
    /// still arrive by SWIM's gossip after the refutation, and it finds
    /// fresh evidence only if this replica kept asking. Bounded by the
    /// nodes known.
    lingering: BTreeMap<NodeId, u64>,
    /// Intervals left in which every node gets this replica's report (a
    /// placement change, repeated). Counted in ticks, not time: a driver's
    /// timer fires late, and a deadline would cut the last repeat.
    loud_left: u64,
    /// When each node's last ask was answered (bounded by the nodes known).
    answered_ms: BTreeMap<NodeId, u64>,
}

/// Intervals a changed placement goes to every node: one lost datagram is
/// repaired by the next.
const LOUD_INTERVALS: u64 = 3;

/// Asks to each suspect per health interval. The answers are the evidence
/// of life, and a round trip is lost more often than one datagram: at 40 %
/// loss among 20 replicas, asking twice an interval let 144 and 137 false
/// convictions through (seeds 1 and 2), four times 50 and 43, and when
/// reports went to every node 766 and 775 (`docs/scale.md`).
const ASKS_PER_INTERVAL: u64 = 4;

/// A peer's asks are answered at most once per this fraction of an
/// interval: a suspecting peer asks `ASKS_PER_INTERVAL` times an
/// interval, and a peer that asks faster gets no more answers (an answer
/// can be 50× an ask).
const ANSWER_GAP: u64 = 2 * ASKS_PER_INTERVAL;

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
        let spread = &mut self.failover.spread;
        if spread.broadcast.as_ref() != Some(&placement) {
            spread.broadcast = Some(placement);
            spread.loud_left = LOUD_INTERVALS;
        }
        let mut tell: BTreeSet<NodeId> = if spread.loud_left > 0 {
            spread.loud_left -= 1;
            targets.iter().cloned().collect()
        } else {
            self.rotation(&targets)
        };
        // Suspects are asked on their own timer (`ask_suspects_if_due`).
        let (suspects, unknown) = self.asked(&targets);
        for node in &suspects {
            tell.remove(node);
        }
        for node in &unknown {
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
        if !suspects.is_empty() && self.failover.spread.next_ask_ms.is_none() {
            self.failover.spread.next_ask_ms = Some(self.now_ms);
        }
    }

    /// Asks the suspects, `ASKS_PER_INTERVAL` times an interval while
    /// there are any.
    pub(super) fn ask_suspects_if_due(&mut self) {
        if self
            .failover
            .spread
            .next_ask_ms
            .is_none_or(|at| at > self.now_ms)
        {
            return;
        }
        let targets = self.membership_targets();
        let (suspects, _) = self.asked(&targets);
        self.failover.spread.next_ask_ms = (!suspects.is_empty()).then(|| self.next_ask_at());
        let report = self.own_report();
        for node in suspects {
            if let Some(report) = &report {
                self.ask(&node, report.clone());
            }
            self.tell_suspected(&node);
        }
    }

    /// Tells `node` this replica holds it Suspect, if SWIM does: it refutes
    /// at once and answers `Refuted` (`membership/refute.rs`).
    fn tell_suspected(&mut self, node: &NodeId) {
        let Some((incarnation, swim)) = self.members.suspicion_of(node) else {
            return;
        };
        if !self.older_than(node, READS_REFUTE) {
            self.datagram(node, Body::Suspected { incarnation, swim });
        }
    }

    /// `from` holds this replica Suspect: refute, and tell it so.
    pub(super) fn on_suspected(&mut self, from: &NodeId, incarnation: u64, swim: u16) {
        let answer = self.members.on_suspected(self.now_ms, incarnation, swim);
        self.after_membership();
        if let Some((incarnation, swim)) = answer {
            self.datagram(from, Body::Refuted { incarnation, swim });
        }
    }

    /// `peer` told what it reads, without `bit`: an older build, which
    /// would count a decode error. A peer that has not told yet is sent
    /// the message (at 200 replicas its `Reads` can be minutes away).
    fn older_than(&self, peer: &NodeId, bit: u64) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.reads != 0 && p.reads & bit == 0)
    }

    /// Asks a node this replica now suspects, at once; the ask timer goes
    /// on from there.
    pub(super) fn ask_suspect(&mut self, node: &NodeId) {
        if let Some(report) = self.own_report() {
            self.ask(node, report);
        }
        self.tell_suspected(node);
        let again = self.next_ask_at();
        let next = &mut self.failover.spread.next_ask_ms;
        *next = Some(next.map_or(again, |at| at.min(again)));
    }

    /// When the suspects are asked next, one step of `ASKS_PER_INTERVAL`
    /// from now (at least a millisecond: never a busy loop).
    fn next_ask_at(&self) -> u64 {
        self.now_ms.saturating_add(self.ask_step_ms())
    }

    /// One step of `ASKS_PER_INTERVAL`: how often a silent node is asked.
    pub(super) fn ask_step_ms(&self) -> u64 {
        (self.config.detector.health_interval_ms / ASKS_PER_INTERVAL).max(1)
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
        // A node past `MEMBERS_MAX` has no view: no state is kept for it.
        if from == &self.config.node || self.members.view(from).is_none() {
            return;
        }
        let now = self.now_ms;
        let gap = self.config.detector.health_interval_ms / ANSWER_GAP;
        let recent = self
            .failover
            .spread
            .answered_ms
            .get(from)
            .is_some_and(|at| now.saturating_sub(*at) < gap);
        if recent {
            return;
        }
        if let Some(report) = self.own_report() {
            self.failover.spread.answered_ms.insert(from.clone(), now);
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

    /// Among `targets`, who is asked: the nodes held Suspect here or lately
    /// (`lingering`), and the nodes whose report this replica lacks.
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

    /// Sends what the ring watch asked for (`membership/watch.rs`): its
    /// asks, its checks through relays, and the sightings it relays.
    pub(super) fn send_watch(&mut self) {
        let out = self.members.take_watch_outputs();
        if !self.config.failure_detection {
            return;
        }
        // Runs after every message: the report is cloned only when there
        // is something to ask.
        if !out.asks.is_empty() {
            if let Some(report) = self.own_report() {
                for node in out.asks {
                    self.ask(&node, report.clone());
                }
            }
        }
        for (relay, target) in out.checks {
            if !self.older_than(&relay, READS_WATCH) {
                self.datagram(&relay, Body::WatchCheck { target });
            }
        }
        for (watcher, target) in out.seen {
            self.datagram(&watcher, Body::WatchSeen { target });
        }
    }

    pub(super) fn ask(&mut self, to: &NodeId, report: HealthReport) {
        self.datagram(to, Body::HealthAsk { report });
    }

    /// The report this replica last built (none before its first interval).
    pub(super) fn own_report(&self) -> Option<HealthReport> {
        self.members
            .view(&self.config.node)
            .and_then(|v| v.report.clone())
    }
}
