//! What a replica knows of the cluster's nodes, as operators and media
//! nodes read it: grades, moves in progress, drain orders, and whether this
//! replica sees a majority (by the same rule failovers follow).

use serde::Serialize;

use super::{MoveKind, Replica};
use crate::ids::NodeId;
use crate::membership::{DrainOrder, NodeView};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct MoveView {
    pub node: NodeId,
    pub kind: MoveKind,
    pub started_ago_ms: u64,
    pub calls_at_start: usize,
    pub rate_per_s: u32,
    pub calls_left: usize,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct NodesView {
    pub this_node: NodeId,
    /// Every node this replica knows, with its grade and the reason.
    pub nodes: Vec<NodeView>,
    /// Failovers and drains in progress.
    pub moves: Vec<MoveView>,
    pub drains: Vec<DrainOrder>,
    /// Whether this replica sees a majority (failovers run only then).
    pub majority: bool,
}

impl Replica {
    /// The nodes as this replica sees them, at its latest input's time.
    pub fn nodes_view(&self) -> NodesView {
        let moves = self
            .moves()
            .into_iter()
            .map(|(node, kind, started, total, rate)| MoveView {
                calls_left: self.calls_owned_by(&node).len(),
                node,
                kind,
                started_ago_ms: self.now_ms.saturating_sub(started),
                calls_at_start: total,
                rate_per_s: rate,
            })
            .collect();
        NodesView {
            this_node: self.node().clone(),
            nodes: self.members.views().cloned().collect(),
            moves,
            drains: self.drains().cloned().collect(),
            majority: self.sees_majority(),
        }
    }

    /// Whether this replica (with itself) sees more than half of the
    /// configured cluster as alive, or, with no cluster configured, more
    /// than half of the members it knows.
    pub fn sees_majority(&self) -> bool {
        self.majority_of(|v| v.grade.answers())
    }

    /// Whether the nodes `counts` accepts make more than half of the
    /// configured cluster (this replica always counted), or, with none
    /// configured, of the members it knows (this replica counted by its
    /// own view): the one count behind `sees_majority` and the failover's
    /// fresh evidence (`quorum.rs`).
    pub(super) fn majority_of(&self, counts: impl Fn(&NodeView) -> bool) -> bool {
        if self.config.peers.is_empty() {
            let count = self.members.views().filter(|v| counts(v)).count();
            return 2 * count > self.members.known();
        }
        let up = self
            .config
            .peers
            .iter()
            .filter(|p| self.members.view(p).is_some_and(&counts))
            .count();
        2 * (up + 1) > self.config.peers.len() + 1
    }
}
