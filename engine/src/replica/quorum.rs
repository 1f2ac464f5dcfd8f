//! Fresh evidence of a majority before a failover acts.
//!
//! Grades alone are stale when a partition starts. SWIM probes one member
//! at a time, so a replica cut off with a quarter of the cluster suspects
//! the other side one node after another: when it convicts the first,
//! most of that side is still graded Healthy here, the grades still count
//! a majority, and the cut-off side took the first convicted node's calls
//! (20 daemons, 5 cut off: `chorus bench daemons`). A failover therefore
//! also needs a strict majority of the cluster heard from at or after the
//! moment its node went Down. The replica asks every answering node it has
//! not heard from since (`HealthAsk`; any message counts as an answer), at
//! most once per ask step while a failover waits. On the majority side the
//! answers come within a round trip; on the cut-off side they never come,
//! and its failovers wait: the node's return ends them (they moved
//! nothing), and a new conviction starts afresh.
//!
//! Once a failover has heard from a majority it goes on by the grades
//! alone, as before: a replica cut off midway keeps moving that node's
//! calls while it still grades a majority answering.

use super::Replica;
use crate::ids::NodeId;

impl Replica {
    /// Whether this replica and enough nodes heard from at or after
    /// `since_ms` make a strict majority of the cluster, counted as
    /// `sees_majority` counts it (the configured peers, or every node
    /// known when none are).
    pub(super) fn heard_majority_since(&self, since_ms: u64) -> bool {
        let me = &self.config.node;
        self.majority_of(|v| {
            v.grade.answers() && (&v.node == me || v.last_heard_ms.is_some_and(|at| at >= since_ms))
        })
    }

    /// Asks every answering node not heard from since `since_ms` for its
    /// report, unless the last such round is less than an ask step old.
    pub(super) fn ask_for_quorum(&mut self, since_ms: u64) {
        let step = self.ask_step_ms();
        if self
            .failover
            .quorum_asked_ms
            .is_some_and(|at| self.now_ms.saturating_sub(at) < step)
        {
            return;
        }
        let Some(report) = self.own_report() else {
            return;
        };
        self.failover.quorum_asked_ms = Some(self.now_ms);
        let silent: Vec<NodeId> = self
            .membership_targets()
            .into_iter()
            .filter(|n| {
                self.members.view(n).is_some_and(|v| {
                    v.grade.answers() && v.last_heard_ms.is_none_or(|at| at < since_ms)
                })
            })
            .collect();
        for node in silent {
            self.ask(&node, report.clone());
        }
    }
}
