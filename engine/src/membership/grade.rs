//! How a replica grades each node from the three layers of detection
//! (`mod.rs`), and a departure it announced (`departure.rs`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use foca::State;
use serde::{Deserialize, Serialize};

use super::{AppHealth, DetectorConfig, Intent, Membership};
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

    pub(super) fn regrade(&mut self, now_ms: u64) {
        let swim = match self.swim_states.take() {
            Some(states) => states,
            None => self.swim_state(),
        };
        let config = self.config.clone();
        let own_app = self.own_app;
        let me = self.me.clone();
        let mut ended = Vec::new();
        for view in self.nodes.values_mut() {
            let departure = self.departures.get(&view.node).copied();
            let back = departure.is_some_and(|d| {
                swim.get(&view.node)
                    .is_some_and(|(inc, state)| *inc > d.incarnation && *state == State::Alive)
            });
            let expired =
                departure.is_some_and(|d| d.intent == Intent::Restart && now_ms >= d.until_ms);
            if back || expired {
                ended.push(view.node.clone());
            }
            let (grade, reason): (Grade, Cow<'static, str>) = if view.node == me {
                app_grade(&config, &own_app)
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
                    Some(State::Down) if silent_ms < config.silence_ms => (
                        Grade::Suspect,
                        Cow::Owned(format!(
                            "convicted by SWIM, but heard from {silent_ms} ms ago"
                        )),
                    ),
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
                        Cow::Borrowed("direct and indirect probes failed; awaiting refutation"),
                    ),
                    Some(State::Alive) => match &view.report {
                        Some(report) => app_grade(&config, &report.app),
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
                self.changes.push(GradeChange {
                    node: view.node.clone(),
                    from: view.grade,
                    to: grade,
                    reason: reason.clone(),
                });
                view.grade = grade;
                view.since_ms = now_ms;
            }
            // Most regrades leave a node's reason as it was: no allocation.
            if view.reason != reason {
                view.reason = reason.into_owned();
            }
        }
        self.swim_states = Some(swim);
        for node in ended {
            self.departures.remove(&node);
        }
    }
}

/// Healthy or Degraded, from application health alone.
fn app_grade(config: &DetectorConfig, app: &AppHealth) -> (Grade, Cow<'static, str>) {
    if app.load_permille > config.degraded_load_permille {
        (
            Grade::Degraded,
            Cow::Owned(format!(
                "load {:.2} of capacity is above {:.2}",
                f64::from(app.load_permille) / 1000.0,
                f64::from(config.degraded_load_permille) / 1000.0
            )),
        )
    } else if app.setup_failure_permille > config.degraded_setup_failure_permille {
        (
            Grade::Degraded,
            Cow::Owned(format!(
                "call-setup failure rate {:.2} is above {:.2}",
                f64::from(app.setup_failure_permille) / 1000.0,
                f64::from(config.degraded_setup_failure_permille) / 1000.0
            )),
        )
    } else {
        (
            Grade::Healthy,
            Cow::Borrowed("answers probes; reports healthy"),
        )
    }
}
