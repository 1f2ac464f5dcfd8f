//! How a replica grades each node from the three layers of detection
//! (`mod.rs`), and a departure it announced (`departure.rs`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use foca::State;
use serde::{Deserialize, Serialize};

use super::{AppHealth, Departure, DetectorConfig, Intent, Membership, NodeView};
use crate::ids::NodeId;

/// How a replica rates a node, from best to worst.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grade {
    Healthy,
    /// Alive but over its load or call-setup-failure threshold: it keeps
    /// its calls and gets no new ones.
    Degraded,
    /// Announced a restart: its calls are held for the restart grace.
    Leaving,
    /// Probes failed; the cluster waits for a refutation.
    Suspect,
    /// Convicted: its calls fail over.
    Down,
}

impl Grade {
    /// Healthy or Degraded: the node answers (it counts towards a
    /// majority, and its return stops a failover).
    pub fn answers(self) -> bool {
        matches!(self, Grade::Healthy | Grade::Degraded)
    }
}

/// One grade change, as the replica reports and journals it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GradeChange {
    pub node: NodeId,
    pub from: Grade,
    pub to: Grade,
    pub reason: String,
}

impl Membership {
    /// SWIM's verdict on `node`: the state of its newest identity.
    pub(super) fn swim_state(&self) -> BTreeMap<NodeId, (u64, State)> {
        let mut states: BTreeMap<NodeId, (u64, State)> = BTreeMap::new();
        for member in self.swim.iter_membership_state() {
            let id = member.id();
            let newer = states
                .get(&id.node)
                .is_none_or(|(inc, _)| id.incarnation > *inc);
            if newer {
                states.insert(id.node.clone(), (id.incarnation, member.state()));
            }
        }
        states
    }

    /// Regrades after foca ran. Settled (no grade waits on time) and with
    /// every SWIM verdict as the last regrade saw it, no grade can change:
    /// most datagrams (acks, gossip repeating what is known) end here, with
    /// no allocation.
    pub(super) fn regrade_after_swim(&mut self, now_ms: u64) {
        if self.settled && !self.swim_changed() {
            return;
        }
        self.swim_states = None;
        self.regrade(now_ms);
    }

    /// Whether SWIM's verdicts differ from the ones the last regrade used.
    fn swim_changed(&self) -> bool {
        let Some(seen) = &self.swim_states else {
            return true;
        };
        let mut newest = 0;
        for member in self.swim.iter_membership_state() {
            let id = member.id();
            match seen.get(&id.node) {
                None => return true,
                Some((inc, _)) if id.incarnation > *inc => return true,
                Some((inc, state)) if id.incarnation == *inc => {
                    if member.state() != *state {
                        return true;
                    }
                    newest += 1;
                }
                // An older identity of the node: `swim_state` ignores it.
                Some(_) => {}
            }
        }
        // A node SWIM no longer holds.
        newest != seen.len()
    }

    /// Grades every node again: after SWIM, a departure, this node's own
    /// health or time itself may have changed any of them.
    pub(super) fn regrade(&mut self, now_ms: u64) {
        let swim = match self.swim_states.take() {
            Some(states) => states,
            None => self.swim_state(),
        };
        let mut ended = Vec::new();
        let mut settled = true;
        let inputs = Inputs {
            config: &self.config,
            me: &self.me,
            own_app: &self.own_app,
            swim: &swim,
        };
        for view in self.nodes.values_mut() {
            let departure = self.departures.get(&view.node).copied();
            let outcome = inputs.grade(departure, view, now_ms);
            if outcome.ended {
                ended.push(view.node.clone());
            }
            settled &= !outcome.timed;
            if let Some(change) = outcome.change {
                self.grades_version += 1;
                self.changes.push(change);
            }
        }
        self.swim_states = Some(swim);
        self.settled = settled;
        for node in ended {
            self.departures.remove(&node);
        }
    }

    /// Grades `node` alone, when only what it told us changed (its health
    /// report). Every other node's grade depends on SWIM, departures and
    /// time, none of which a report touches; while some node's grade waits
    /// on time (a held conviction, a restart's grace) every node is graded,
    /// as before. This keeps a report O(log n) instead of O(n): with every
    /// node reporting to every other, the full walk was O(n³) cluster-wide.
    pub(super) fn regrade_one(&mut self, now_ms: u64, node: &NodeId) {
        if !self.settled {
            return self.regrade(now_ms);
        }
        let Some(swim) = self.swim_states.take() else {
            return self.regrade(now_ms);
        };
        let departure = self.departures.get(node).copied();
        if let Some(view) = self.nodes.get_mut(node) {
            let inputs = Inputs {
                config: &self.config,
                me: &self.me,
                own_app: &self.own_app,
                swim: &swim,
            };
            let outcome = inputs.grade(departure, view, now_ms);
            self.settled &= !outcome.timed;
            if let Some(change) = outcome.change {
                self.grades_version += 1;
                self.changes.push(change);
            }
            if outcome.ended {
                self.departures.remove(node);
            }
        }
        self.swim_states = Some(swim);
    }
}

/// What grading one node found.
struct Outcome {
    change: Option<GradeChange>,
    /// Its departure is over (it is back, or its grace ended).
    ended: bool,
    /// Its grade or reason depends on the time: grading it later may
    /// change it with nothing else happening.
    timed: bool,
}

/// What grading any node reads besides the node's own view.
struct Inputs<'a> {
    config: &'a DetectorConfig,
    me: &'a NodeId,
    own_app: &'a AppHealth,
    /// SWIM's verdicts (`swim_state`).
    swim: &'a BTreeMap<NodeId, (u64, State)>,
}

impl Inputs<'_> {
    /// Grades one node from SWIM's verdicts, its departure, what was heard
    /// from it and its report; records a change on `view`.
    fn grade(&self, departure: Option<Departure>, view: &mut NodeView, now_ms: u64) -> Outcome {
        let Inputs {
            config,
            me,
            own_app,
            swim,
        } = *self;
        let back = departure.is_some_and(|d| {
            swim.get(&view.node)
                .is_some_and(|(inc, state)| *inc > d.incarnation && *state == State::Alive)
        });
        let expired =
            departure.is_some_and(|d| d.intent == Intent::Restart && now_ms >= d.until_ms);
        // A restart still running counts down its grace; a held conviction
        // waits on the silence. (A stop is Down for good.)
        let mut timed = departure.is_some_and(|d| d.intent == Intent::Restart) && !back && !expired;
        let (grade, reason): (Grade, Cow<'static, str>) = if &view.node == me {
            app_grade(config, own_app)
        } else if let (Some(d), false, false) = (departure, back, expired) {
            let (grade, reason) = d.grade(now_ms);
            (grade, Cow::Owned(reason))
        } else {
            let silent_ms = view
                .last_heard_ms
                .map(|at| now_ms.saturating_sub(at))
                .unwrap_or(u64::MAX);
            match swim.get(&view.node).map(|(_, s)| *s) {
                // Once Down, a node stays Down until SWIM sees it alive
                // again (a rejoin): evidence of life only delays a
                // conviction, it never flaps one back and forth.
                Some(State::Down) if view.grade == Grade::Down => {
                    (Grade::Down, Cow::Owned(view.reason.clone()))
                }
                Some(State::Down) if silent_ms < config.silence_ms => {
                    timed = true;
                    (
                        Grade::Suspect,
                        Cow::Owned(format!(
                            "convicted by SWIM, but heard from {silent_ms} ms ago"
                        )),
                    )
                }
                Some(State::Down) => (
                    Grade::Down,
                    if silent_ms == u64::MAX {
                        Cow::Borrowed("convicted by SWIM; never heard from directly")
                    } else {
                        Cow::Owned(format!(
                            "convicted by SWIM: suspicion not refuted; silent for {silent_ms} ms"
                        ))
                    },
                ),
                Some(State::Suspect) => (
                    Grade::Suspect,
                    Cow::Borrowed("no answer to probes or to its watcher; awaiting refutation"),
                ),
                Some(State::Alive) => match &view.report {
                    Some(report) => app_grade(config, &report.app),
                    None => (Grade::Healthy, Cow::Borrowed("answers probes")),
                },
                // Not (or no longer) a SWIM member: keep the last grade.
                None => (view.grade, Cow::Owned(view.reason.clone())),
            }
        };
        let reason = if expired && grade != Grade::Healthy && grade != Grade::Degraded {
            Cow::Owned(format!("not back within the restart grace; {reason}"))
        } else {
            reason
        };
        let mut change = None;
        if grade != view.grade {
            let reason = match (view.grade, grade) {
                (Grade::Suspect, Grade::Healthy | Grade::Degraded) => {
                    format!("suspicion refuted; {reason}")
                }
                (Grade::Down, Grade::Healthy | Grade::Degraded) => {
                    format!("back after conviction; {reason}")
                }
                (Grade::Leaving, Grade::Healthy | Grade::Degraded) => {
                    format!("back from its restart; {reason}")
                }
                _ => reason.to_string(),
            };
            change = Some(GradeChange {
                node: view.node.clone(),
                from: view.grade,
                to: grade,
                reason,
            });
            view.grade = grade;
            view.since_ms = now_ms;
        }
        // Most regrades leave a node's reason as it was: no allocation.
        if view.reason != reason {
            view.reason = reason.into_owned();
        }
        Outcome {
            change,
            ended: back || expired,
            timed,
        }
    }
}

/// Whether `app` grades its node Degraded under `config` (what `app_grade`
/// decides, without its reason).
pub fn is_degraded(config: &DetectorConfig, app: &AppHealth) -> bool {
    app.load_permille > config.degraded_load_permille
        || app.setup_failure_permille > config.degraded_setup_failure_permille
}

/// Healthy or Degraded, from application health alone.
fn app_grade(config: &DetectorConfig, app: &AppHealth) -> (Grade, Cow<'static, str>) {
    if !is_degraded(config, app) {
        (
            Grade::Healthy,
            Cow::Borrowed("answers probes; reports healthy"),
        )
    } else if app.load_permille > config.degraded_load_permille {
        (
            Grade::Degraded,
            Cow::Owned(format!(
                "load {:.2} of capacity is above {:.2}",
                f64::from(app.load_permille) / 1000.0,
                f64::from(config.degraded_load_permille) / 1000.0
            )),
        )
    } else {
        (
            Grade::Degraded,
            Cow::Owned(format!(
                "call-setup failure rate {:.2} is above {:.2}",
                f64::from(app.setup_failure_permille) / 1000.0,
                f64::from(config.degraded_setup_failure_permille) / 1000.0
            )),
        )
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ids::RegionId;
    use crate::membership::HealthReport;

    fn id(name: &str) -> NodeId {
        NodeId::parse(name).expect("valid")
    }

    fn report() -> HealthReport {
        HealthReport {
            region: RegionId::parse("eu").expect("valid"),
            capacity: 100,
            app: AppHealth::default(),
            drains: Vec::new(),
        }
    }

    /// Runs members from `from_ms` to `until_ms`, delivering SWIM
    /// datagrams between those `linked` says are connected, in 10 ms steps
    /// (also `refute.rs`'s).
    pub(in crate::membership) fn run(
        members: &mut [Membership],
        from_ms: u64,
        until_ms: u64,
        linked: impl Fn(usize, usize) -> bool,
        mut each_step: impl FnMut(&mut [Membership], u64),
    ) {
        let mut now = from_ms;
        while now < until_ms {
            for m in members.iter_mut() {
                m.tick(now);
            }
            let mut sent = Vec::new();
            for (i, m) in members.iter_mut().enumerate() {
                for (to, data) in m.out.drain(..) {
                    sent.push((i, to, data));
                }
            }
            for (from, to, data) in sent {
                let Some(j) = members.iter().position(|m| m.me == to) else {
                    continue;
                };
                if linked(from, j) {
                    let sender = members[from].me.clone();
                    members[j].heard(now, &sender);
                    members[j].on_datagram(now, &sender, &data);
                }
            }
            each_step(members, now);
            now += 10;
        }
    }

    /// Three members where `a` holds a conviction of `c` back: SWIM
    /// convicted it, but `a` heard from it until the returned time.
    fn held_conviction() -> (Vec<Membership>, u64) {
        let names = ["a", "b", "c"];
        let mut members: Vec<Membership> = names
            .iter()
            .enumerate()
            .map(|(i, n)| Membership::new(id(n), 1, DetectorConfig::default(), i as u64))
            .collect();
        members[0].announce(0, &id("b"));
        members[0].announce(0, &id("c"));
        run(&mut members, 0, 3_000, |_, _| true, |_, _| {});
        assert_eq!(members[0].grade(&id("c")), Some(Grade::Healthy));
        // c's SWIM datagrams are lost, but a keeps hearing from c
        // otherwise (its pushes, say): SWIM convicts, a holds it back.
        let cut = |i: usize, j: usize| i != 2 && j != 2;
        run(&mut members, 3_000, 8_000, cut, |m, now| {
            m[0].heard(now, &id("c"));
        });
        assert_eq!(
            members[0].swim_state().get(&id("c")).map(|(_, s)| *s),
            Some(State::Down),
            "SWIM convicted c"
        );
        assert_eq!(members[0].grade(&id("c")), Some(Grade::Suspect));
        members[0].changes.clear();
        (members, 7_990)
    }

    /// A report from one node regrades only that node, except while a
    /// grade waits on time: a conviction held back by evidence of life
    /// must still land at the first report after the silence runs out,
    /// whoever sends it.
    #[test]
    fn a_held_conviction_lands_on_a_report_from_another_node() {
        let (mut members, last_heard) = held_conviction();
        let silence = DetectorConfig::default().silence_ms;
        let a = &mut members[0];
        a.on_report(last_heard + silence - 1, &id("b"), report());
        assert_eq!(a.grade(&id("c")), Some(Grade::Suspect));
        a.on_report(last_heard + silence, &id("b"), report());
        assert_eq!(a.grade(&id("c")), Some(Grade::Down));
        let change = a.changes.pop().expect("c's conviction");
        assert_eq!((change.node, change.to), (id("c"), Grade::Down));
    }

    /// The same when what comes next is SWIM with nothing new to say.
    #[test]
    fn a_held_conviction_lands_when_swim_has_nothing_new() {
        let (mut members, last_heard) = held_conviction();
        let silence = DetectorConfig::default().silence_ms;
        let a = &mut members[0];
        a.regrade_after_swim(last_heard + silence - 1);
        assert_eq!(a.grade(&id("c")), Some(Grade::Suspect));
        assert!(!a.swim_changed(), "foca did not run");
        a.regrade_after_swim(last_heard + silence);
        assert_eq!(a.grade(&id("c")), Some(Grade::Down));
    }

    /// A node this replica first hears from after SWIM already holds it
    /// Down (it learned so from a peer) is graded at the next event, not
    /// left Healthy until it reports.
    #[test]
    fn a_node_first_heard_after_swim_convicted_it_is_graded() {
        let mut members: Vec<Membership> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| Membership::new(id(n), 1, DetectorConfig::default(), i as u64))
            .collect();
        // b and c form a cluster without a; then c goes silent and b
        // convicts it.
        members[1].announce(0, &id("c"));
        let without_a = |i: usize, j: usize| i != 0 && j != 0;
        run(&mut members, 0, 3_000, without_a, |_, _| {});
        let only_ab = |i: usize, j: usize| i != 2 && j != 2;
        run(
            &mut members,
            3_000,
            6_000,
            |i, j| without_a(i, j) && only_ab(i, j),
            |_, _| {},
        );
        assert_eq!(members[1].grade(&id("c")), Some(Grade::Down));
        // a joins through b and learns c's conviction from it.
        members[0].announce(6_000, &id("b"));
        run(&mut members, 6_000, 8_000, only_ab, |_, _| {});
        let a = &mut members[0];
        assert_eq!(
            a.swim_state().get(&id("c")).map(|(_, s)| *s),
            Some(State::Down),
            "a learned of c as Down"
        );
        assert_eq!(a.grade(&id("c")), None, "a never heard of c as up");
        // A message from c reaches a (it was in flight): c gets a view.
        a.heard(8_000, &id("c"));
        a.regrade_after_swim(8_010);
        assert_eq!(
            a.grade(&id("c")),
            Some(Grade::Suspect),
            "held by what was heard"
        );
        a.regrade_after_swim(8_000 + DetectorConfig::default().silence_ms);
        assert_eq!(a.grade(&id("c")), Some(Grade::Down));
    }
}
