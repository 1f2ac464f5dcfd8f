//! What the runner and the invariants read back from the cluster: whether
//! it converged, a room or its heads as one node sees them, and the
//! replicas' counters summed.

use chorus_engine::replica::Replica;
use chorus_engine::{Head, RoomId, RoomSnapshot};

use super::Cluster;
use crate::stats::StatTotals;

impl Cluster {
    /// Live replicas' digest roots are all equal.
    pub fn converged(&self) -> bool {
        let mut roots = self
            .nodes
            .iter()
            .filter_map(|n| n.replica.as_ref().map(Replica::root));
        match roots.next() {
            Some(first) => roots.all(|r| r == first),
            None => true,
        }
    }

    /// Runs until converged (checked every `check_ms`) or `budget_ms` passes.
    /// Returns the time convergence was first seen.
    pub fn run_until_converged(&mut self, budget_ms: u64, check_ms: u64) -> Option<u64> {
        let deadline = self.now_ms + budget_ms;
        loop {
            if self.converged() {
                return Some(self.now_ms);
            }
            if self.now_ms >= deadline {
                return None;
            }
            let next = (self.now_ms + check_ms.max(1)).min(deadline);
            self.run_until(next);
        }
    }

    /// A room as node `i` sees it, with every session its document holds:
    /// replicas whose clocks differ would otherwise hide a departed session
    /// at different moments, and the invariants compare readings.
    pub fn room(&mut self, i: usize, room: &RoomId) -> Option<RoomSnapshot> {
        let reading = self.nodes[i]
            .replica
            .as_mut()?
            .room_as_of(room, None)
            .ok()
            .flatten()?;
        Some(match &self.mutation {
            Some(m) => m.filter_reading(i, reading),
            None => reading,
        })
    }

    /// One life of node `i`: its number and how many times it started.
    pub fn life(&self, i: usize) -> (usize, u64) {
        (i, self.nodes[i].starts)
    }

    /// Node `i`'s heads of a room (`None` if the node is down or the read fails).
    pub fn heads(&mut self, i: usize, room: &RoomId) -> Option<Vec<Head>> {
        let mut heads = self.nodes[i].replica.as_mut()?.heads(room).ok()?;
        heads.sort();
        Some(heads)
    }

    /// Counters summed over every replica and incarnation.
    pub fn stat_totals(&self) -> StatTotals {
        let mut totals = self.retired.clone();
        for replica in self.nodes.iter().filter_map(|n| n.replica.as_ref()) {
            totals.add(replica.stats());
        }
        totals
    }
}
