//! Cluster membership and layered failure detection, sans-IO.
//!
//! Three layers decide how a replica grades every other node:
//!
//! 1. **SWIM** (the `foca` crate): a direct probe each period, indirect
//!    probes through other members when the direct one times out, then a
//!    suspicion the suspect can refute (it bumps its incarnation), then
//!    conviction once the suspicion outlives its timeout.
//! 2. **Evidence of life**: a conviction is held back (the node stays
//!    Suspect) while this replica heard anything at all from the node in the
//!    last `silence_ms`. A crashed node is silent long before SWIM convicts
//!    it, so this costs true detection nothing; a live node on a lossy link
//!    keeps talking, so a lost refutation cannot fail its calls over.
//! 3. **Application health**: a media node reports its load and call-setup
//!    failure rate; over the thresholds it is Degraded (no new calls).
//!
//! Grades: Healthy → Degraded → Suspect → Down, and Leaving for a node
//! that announced a restart (`departure`). Only Down triggers failover.
//! Every change is a [`GradeChange`] with a reason.
//!
//! Like the replica, this owns no socket or clock: the replica feeds it
//! datagrams and the time, and carries its datagrams out.

mod departure;
mod grade;
pub mod health;
mod refute;
mod sink;
#[cfg(test)]
mod spread_tests;
mod watch;
pub use watch::WatchOutputs;

use std::collections::BTreeMap;
use std::time::Duration;

use foca::{Codec, Foca, Identity, NoCustomBroadcast, OwnedNotification, PostcardCodec};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, RegionId};
use crate::limits::GOSSIP_ON_DOWN_GAP_MS;
pub use crate::limits::MEMBERS_MAX;
pub use crate::limits::SWIM_PACKET_MAX;
use departure::Departure;
pub use departure::Intent;
pub use grade::{is_degraded, Grade, GradeChange};
pub use health::{AppHealth, DrainOrder, HealthReport, DRAIN_ORDERS_MAX};
use sink::Sink;

/// A member's SWIM identity. The incarnation grows on every restart (high
/// bits, from the store) and on every rejoin after a false conviction (low
/// bits), so the newest identity of a node always wins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SwimId {
    pub node: NodeId,
    pub incarnation: u64,
}

impl Identity for SwimId {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            node: self.node.clone(),
            incarnation: self.incarnation + 1,
        })
    }

    fn addr(&self) -> NodeId {
        self.node.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.incarnation > adversary.incarnation
    }
}

/// Timers and thresholds of failure detection (`[replica.detector]` in a
/// configuration file; see docs/failover.md). Each default says where it
/// comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// SWIM probes one member per period. 400 ms (memberlist's LAN default
    /// is 1 s) keeps detection inside the 2.5 s failover budget.
    pub probe_period_ms: u64,
    /// A direct probe unanswered after this long triggers indirect probes.
    pub probe_rtt_ms: u64,
    /// Members asked to probe on our behalf (memberlist: 3).
    pub indirect_probes: usize,
    /// A suspicion not refuted within this long becomes a conviction
    /// (once the node is also `silence_ms` silent where it started).
    pub suspect_to_down_ms: u64,
    /// A conviction waits until the node has been silent this long: any
    /// message from it within the window proves it alive.
    pub silence_ms: u64,
    /// Each replica sends its health report this often, to a few nodes in
    /// turn, and asks the nodes it suspects four times as often: their
    /// answers are the evidence of life that `silence_ms` looks for
    /// (`replica/reports.rs`).
    pub health_interval_ms: u64,
    /// Load (per-mille of capacity) above which a node is Degraded.
    pub degraded_load_permille: u32,
    /// Call-setup failure rate (per-mille) above which a node is Degraded.
    pub degraded_setup_failure_permille: u32,
    /// How long a node that announced a restart keeps its calls (graded
    /// Leaving) before they fail over. 30 s covers a daemon's restart
    /// with a large store to reopen; its media keeps running meanwhile.
    pub restart_grace_ms: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            probe_period_ms: 400,
            probe_rtt_ms: 200,
            indirect_probes: 3,
            suspect_to_down_ms: 800,
            silence_ms: 1_000,
            health_interval_ms: 500,
            degraded_load_permille: 1_000,
            degraded_setup_failure_permille: 200,
            restart_grace_ms: 30_000,
        }
    }
}

/// What this replica knows of one node.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub node: NodeId,
    pub grade: Grade,
    pub reason: String,
    /// Local time of the last grade change.
    pub since_ms: u64,
    /// Local time anything was last heard from the node.
    pub last_heard_ms: Option<u64>,
    /// The node's latest self-report.
    pub report: Option<HealthReport>,
    /// An active drain order for the node.
    pub draining: bool,
}

type Swim = Foca<SwimId, PostcardCodec, rand_pcg::Pcg64Mcg, NoCustomBroadcast>;

pub struct Membership {
    me: NodeId,
    config: DetectorConfig,
    swim: Swim,
    sink: Sink,
    /// foca's timers by (due time, sequence): fired in order on ticks.
    timers: BTreeMap<(u64, u64), foca::Timer<SwimId>>,
    timer_seq: u64,
    nodes: BTreeMap<NodeId, NodeView>,
    /// SWIM's verdict per node (`swim_state`) until foca is next touched:
    /// rebuilt on every regrade, it was most of a big cluster's sim time.
    swim_states: Option<BTreeMap<NodeId, (u64, foca::State)>>,
    /// No grade waits on time (`grade.rs`): a report regrades its sender.
    settled: bool,
    /// Bumped whenever a node's grade changes or a node is added: what
    /// counts the answering nodes needs counting again only then.
    grades_version: u64,
    /// Departures nodes announced, until they are back (or, for a restart,
    /// until its grace ends).
    departures: BTreeMap<NodeId, Departure>,
    own_app: AppHealth,
    /// Datagrams for the replica to send.
    pub(crate) out: Vec<(NodeId, Vec<u8>)>,
    /// Grade changes for the replica to report.
    pub(crate) changes: Vec<GradeChange>,
    /// Notable SWIM facts (rejoins) for the journal.
    pub(crate) notes: Vec<String>,
    /// This replica renewed its identity after a conviction: it must
    /// announce the new one to the peers it can reach.
    pub(crate) rejoined: bool,
    /// SWIM datagrams refused (malformed, spoofed, or foca errors).
    pub refused: u64,
    /// No conviction is gossiped at once before this time
    /// (`GOSSIP_ON_DOWN_GAP_MS`).
    gossip_down_after_ms: u64,
    /// Gossips sent at once because a conviction was learned.
    pub down_gossips: u64,
    /// The ring watch (`watch.rs`).
    watch: watch::Watch,
    /// Refuted up to (identity, SWIM incarnation), and peers' refutations.
    refuted: Option<(u64, u16)>,
    /// Since when each suspect's conviction has waited (`refute.rs`).
    waiting: BTreeMap<SwimId, u64>,
    pub refutations: u64,
}

impl Membership {
    pub fn new(me: NodeId, incarnation: u64, config: DetectorConfig, seed: u64) -> Self {
        let mut swim_config = foca::Config::simple();
        swim_config.probe_period = Duration::from_millis(config.probe_period_ms);
        swim_config.probe_rtt = Duration::from_millis(config.probe_rtt_ms);
        swim_config.num_indirect_probes =
            std::num::NonZeroUsize::new(config.indirect_probes.max(1)).unwrap_or(
                // max(1) above: never zero.
                std::num::NonZeroUsize::MIN,
            );
        swim_config.suspect_to_down_after = Duration::from_millis(config.suspect_to_down_ms);
        swim_config.max_packet_size =
            std::num::NonZeroUsize::new(SWIM_PACKET_MAX).unwrap_or(std::num::NonZeroUsize::MIN);
        // Tell a node we hold Down that it is: it renews its identity and
        // rejoins (how both sides of a healed partition find each other).
        swim_config.notify_down_members = true;
        // Gossip membership updates quickly: a conviction should reach
        // every replica well inside the failover budget.
        swim_config.periodic_gossip = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(200),
            num_members: std::num::NonZeroUsize::new(3).unwrap_or(std::num::NonZeroUsize::MIN),
        });
        let id = SwimId {
            node: me.clone(),
            // Restart count in the high bits, rejoins in the low.
            incarnation: incarnation << 16,
        };
        let rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed ^ 0x5717_C0DE);
        let mut nodes = BTreeMap::new();
        nodes.insert(
            me.clone(),
            NodeView {
                node: me.clone(),
                grade: Grade::Healthy,
                reason: "this replica".into(),
                since_ms: 0,
                last_heard_ms: None,
                report: None,
                draining: false,
            },
        );
        Self {
            me,
            config,
            swim: Foca::new(id, swim_config, rng, PostcardCodec),
            sink: Sink::default(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            nodes,
            swim_states: None,
            settled: false,
            grades_version: 0,
            departures: BTreeMap::new(),
            own_app: AppHealth::default(),
            out: Vec::new(),
            changes: Vec::new(),
            notes: Vec::new(),
            rejoined: false,
            refused: 0,
            gossip_down_after_ms: 0,
            down_gossips: 0,
            watch: watch::Watch::default(),
            refuted: None,
            waiting: BTreeMap::new(),
            refutations: 0,
        }
    }

    /// Asks `peer` to let us in (and learns its view of the cluster).
    pub fn announce(&mut self, now_ms: u64, peer: &NodeId) {
        if peer == &self.me {
            return;
        }
        let dst = SwimId {
            node: peer.clone(),
            incarnation: 0,
        };
        if self.swim.announce(dst, &mut self.sink).is_err() {
            self.refused += 1;
        }
        self.absorb(now_ms);
        self.regrade_after_swim(now_ms);
    }

    /// Anything at all arrived from `from`: evidence it is alive.
    pub fn heard(&mut self, now_ms: u64, from: &NodeId) {
        if let Some(view) = self.view_mut(from, now_ms) {
            view.last_heard_ms = Some(now_ms);
        }
        self.watch_heard(now_ms, from);
    }

    /// A SWIM datagram from `from`.
    pub fn on_datagram(&mut self, now_ms: u64, from: &NodeId, data: &[u8]) {
        // foca trusts the sender named inside the packet; the transport
        // authenticated `from`, so a packet naming anyone else is refused.
        let named = Codec::<SwimId>::decode_header(&mut PostcardCodec, data).map(|h| h.src.node);
        match named {
            Ok(src) if &src == from => {}
            _ => {
                self.refused += 1;
                return;
            }
        }
        if self.swim.handle_data(data, &mut self.sink).is_err() {
            self.refused += 1;
        }
        self.absorb(now_ms);
        self.regrade_after_swim(now_ms);
    }

    /// `from`, as its SWIM `incarnation`, announced it is leaving
    /// (`departure`). Ignored when this replica already knows a newer
    /// incarnation of it (the announcement of an instance that has since
    /// come back), and a repeated restart does not extend its grace.
    pub fn on_departure(&mut self, now_ms: u64, from: &NodeId, intent: Intent, incarnation: u64) {
        if from == &self.me || !self.nodes.contains_key(from) {
            return;
        }
        let newest = self.swim_state().get(from).map_or(0, |(inc, _)| *inc);
        if newest > incarnation {
            return;
        }
        let until_ms = match self.departures.get(from) {
            Some(d) if d.incarnation == incarnation && d.intent == intent => d.until_ms,
            _ => now_ms.saturating_add(self.config.restart_grace_ms),
        };
        self.departures.insert(
            from.clone(),
            Departure {
                intent,
                incarnation,
                until_ms,
            },
        );
        self.regrade(now_ms);
    }

    /// A node's periodic self-report.
    pub fn on_report(&mut self, now_ms: u64, from: &NodeId, report: HealthReport) {
        if let Some(view) = self.view_mut(from, now_ms) {
            view.report = Some(report);
        }
        self.regrade_one(now_ms, from);
    }

    /// This node's own application health.
    pub fn set_own_health(&mut self, now_ms: u64, app: AppHealth) {
        self.own_app = app;
        self.regrade(now_ms);
    }

    /// This node's own report, as it is broadcast (for its own placement).
    pub fn set_own_report(&mut self, report: HealthReport) {
        if let Some(view) = self.nodes.get_mut(&self.me) {
            view.report = Some(report);
        }
    }

    pub fn own_health(&self) -> AppHealth {
        self.own_app
    }

    pub fn set_draining(&mut self, node: &NodeId, draining: bool) {
        if let Some(view) = self.nodes.get_mut(node) {
            view.draining = draining;
        }
    }

    /// Fires the SWIM timers due at `now_ms`, then regrades.
    pub fn tick(&mut self, now_ms: u64) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let timer = entry.remove();
            match self.conviction_timer(&timer, now_ms) {
                refute::Due::Fire => {}
                refute::Due::Wait(at) => {
                    self.timer_seq += 1;
                    self.timers.insert((at, self.timer_seq), timer);
                    continue;
                }
            }
            if self.swim.handle_timer(timer, &mut self.sink).is_err() {
                self.refused += 1;
            }
            self.absorb(now_ms);
        }
        self.watch_tick(now_ms);
        self.regrade_after_swim(now_ms);
    }

    /// When the next SWIM timer, watch step, or the end of a restart's
    /// grace is due.
    pub fn next_timer_ms(&self) -> Option<u64> {
        let swim = self.timers.keys().next().map(|(at, _)| *at);
        let grace = self
            .departures
            .values()
            .filter(|d| d.intent == Intent::Restart)
            .map(|d| d.until_ms)
            .min();
        let watch = self.watch_due_ms();
        swim.into_iter().chain(grace).chain(Some(watch)).min()
    }

    pub fn grade(&self, node: &NodeId) -> Option<Grade> {
        self.nodes.get(node).map(|v| v.grade)
    }

    pub fn views(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.values()
    }

    /// Changes whenever a grade changes or a node is added (`reachable`,
    /// `known` and every `grade` are the same while it does not).
    pub fn grades_version(&self) -> u64 {
        self.grades_version
    }

    pub fn view(&self, node: &NodeId) -> Option<&NodeView> {
        self.nodes.get(node)
    }

    /// Nodes this replica knows of, itself included.
    pub fn known(&self) -> usize {
        self.nodes.len()
    }

    /// Known nodes graded Healthy or Degraded (answering), itself included.
    /// Suspects do not count: on the minority side of a partition the
    /// majority is first Suspect, and a failover must not start there.
    /// Nor do Leaving nodes: one restarting is away, and counting it would
    /// let both sides of a partition during a rolling restart fail over.
    pub fn reachable(&self) -> usize {
        self.nodes.values().filter(|v| v.grade.answers()).count()
    }

    /// This replica's own SWIM incarnation (told with a departure, so that
    /// peers know which instance left).
    pub fn own_incarnation(&self) -> u64 {
        self.swim.identity().incarnation
    }

    fn view_mut(&mut self, node: &NodeId, now_ms: u64) -> Option<&mut NodeView> {
        if !self.nodes.contains_key(node) {
            if self.nodes.len() >= MEMBERS_MAX {
                return None;
            }
            self.grades_version += 1;
            // Not graded yet: the next regrade must walk every node (SWIM
            // may already hold it Down, and a report from it may never come).
            self.settled = false;
            self.nodes.insert(
                node.clone(),
                NodeView {
                    node: node.clone(),
                    grade: Grade::Healthy,
                    reason: "first heard from".into(),
                    since_ms: now_ms,
                    last_heard_ms: None,
                    report: None,
                    draining: false,
                },
            );
        }
        self.nodes.get_mut(node)
    }

    /// Takes what foca asked for: datagrams out, timers in, notifications.
    /// Callers regrade once afterwards (`regrade_after_swim`).
    fn absorb(&mut self, now_ms: u64) {
        // Called after every call into foca; the callers then regrade
        // with `regrade_after_swim`, which sees whether a verdict changed.
        self.out.append(&mut self.sink.sends);
        for (after, timer) in self.sink.timers.drain(..) {
            let at = now_ms.saturating_add(after.as_millis() as u64);
            self.timer_seq += 1;
            self.timers.insert((at, self.timer_seq), timer);
        }
        let mut convicted = false;
        for note in std::mem::take(&mut self.sink.notes) {
            match note {
                OwnedNotification::MemberDown(_) => convicted = true,
                OwnedNotification::Rejoin(id) => {
                    self.rejoined = true;
                    self.notes.push(format!(
                        "the cluster convicted this replica; rejoined as incarnation {}",
                        id.incarnation
                    ));
                }
                OwnedNotification::MemberUp(id) => {
                    let _ = self.view_mut(&id.node, now_ms);
                }
                _ => {}
            }
        }
        if convicted && now_ms >= self.gossip_down_after_ms {
            self.gossip_down_after_ms = now_ms.saturating_add(GOSSIP_ON_DOWN_GAP_MS);
            self.down_gossips += 1;
            if self.swim.gossip(&mut self.sink).is_err() {
                self.refused += 1;
            }
            // Gossip only sends: no timer, no notification.
            self.out.append(&mut self.sink.sends);
        }
    }
}

/// The region and weight of a node for placement.
pub fn candidate_of(view: &NodeView) -> Option<(RegionId, u32)> {
    view.report.as_ref().map(|r| (r.region.clone(), r.capacity))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DetectorConfig {
        DetectorConfig::default()
    }

    fn id(name: &str) -> NodeId {
        NodeId::parse(name).expect("valid")
    }

    #[test]
    fn a_datagram_naming_another_sender_is_refused() {
        let mut a = Membership::new(id("a"), 1, config(), 1);
        let mut b = Membership::new(id("b"), 1, config(), 2);
        a.announce(0, &id("b"));
        let (to, announce) = a.out.pop().expect("an announce");
        assert_eq!(to, id("b"));
        // Relayed by "c", but the packet says it comes from "a".
        b.on_datagram(0, &id("c"), &announce);
        assert_eq!(b.refused, 1);
        assert!(
            b.grade(&id("a")).is_none(),
            "a spoofed packet teaches nothing"
        );
        b.on_datagram(0, &id("b"), b"not foca at all");
        assert_eq!(b.refused, 2);
        b.on_datagram(0, &id("a"), &announce);
        assert_eq!(b.refused, 2);
        assert_eq!(b.grade(&id("a")), Some(Grade::Healthy));
    }

    #[test]
    fn a_departure_of_an_older_instance_is_ignored() {
        let mut a = Membership::new(id("a"), 1, config(), 1);
        let mut b = Membership::new(id("b"), 3, config(), 2);
        b.announce(0, &id("a"));
        let (_, hello) = b.out.pop().expect("an announce");
        a.on_datagram(0, &id("b"), &hello);
        assert_eq!(a.grade(&id("b")), Some(Grade::Healthy));
        let current = b.own_incarnation();
        // The instance before b's last restart said it stops: stale.
        a.on_departure(10, &id("b"), Intent::Stop, current - (1 << 16));
        assert_eq!(a.grade(&id("b")), Some(Grade::Healthy));
        a.on_departure(20, &id("b"), Intent::Restart, current);
        assert_eq!(a.grade(&id("b")), Some(Grade::Leaving));
        let held = a.departures[&id("b")].until_ms;
        // Said again later: the grace is not extended.
        a.on_departure(5_000, &id("b"), Intent::Restart, current);
        assert_eq!(a.departures[&id("b")].until_ms, held);
        // A stopped node is Down at once, and does not count as up.
        a.on_departure(5_010, &id("b"), Intent::Stop, current);
        assert_eq!(a.grade(&id("b")), Some(Grade::Down));
        assert_eq!(a.reachable(), 1);
    }

    #[test]
    fn application_health_grades_degraded_and_back() {
        let mut a = Membership::new(id("a"), 1, config(), 1);
        a.set_own_health(10, AppHealth::from_ratios(1.5, 0.0));
        let change = a.changes.pop().expect("a grade change");
        assert_eq!((change.from, change.to), (Grade::Healthy, Grade::Degraded));
        assert!(change.reason.contains("load 1.50"), "{}", change.reason);
        a.set_own_health(20, AppHealth::from_ratios(0.5, 0.3));
        assert!(
            a.changes.is_empty(),
            "still Degraded, now by call-setup failures"
        );
        assert!(a
            .view(&id("a"))
            .expect("self")
            .reason
            .contains("call-setup"));
        a.set_own_health(30, AppHealth::from_ratios(0.5, 0.0));
        let change = a.changes.pop().expect("back to Healthy");
        assert_eq!(change.to, Grade::Healthy);
    }
}
