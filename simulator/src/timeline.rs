//! What the run looked like over time: every `sample_ms`, whether each node
//! is down, agrees with the majority's digest root, or differs from it, and
//! which side of a partition it is on; plus the faults, the start of the
//! liveness phase and the moment of convergence. `svg.rs` draws it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cluster::Cluster;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Down,
    /// Same root as the most common root among live nodes.
    Agrees,
    Differs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub at_ms: u64,
    pub states: Vec<NodeState>,
    /// Connected component of each node (0 for all when the network is
    /// whole).
    pub groups: Vec<u8>,
    /// The node has at least one link cut (either direction).
    pub cut: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mark {
    pub at_ms: u64,
    pub node: Option<usize>,
    pub label: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Timeline {
    pub nodes: usize,
    pub samples: Vec<Sample>,
    pub marks: Vec<Mark>,
    pub liveness_ms: u64,
    pub converged_ms: Option<u64>,
    pub end_ms: u64,
}

impl Timeline {
    pub fn new(nodes: usize) -> Self {
        Self {
            nodes,
            ..Self::default()
        }
    }

    pub fn mark(&mut self, at_ms: u64, node: Option<usize>, label: impl Into<String>) {
        self.marks.push(Mark {
            at_ms,
            node,
            label: label.into(),
        });
    }

    pub fn sample(&mut self, cluster: &Cluster) {
        let roots: Vec<Option<[u8; 16]>> = cluster
            .nodes
            .iter()
            .map(|n| n.replica.as_ref().map(|r| r.root()))
            .collect();
        let mut counts: BTreeMap<[u8; 16], usize> = BTreeMap::new();
        for root in roots.iter().flatten() {
            *counts.entry(*root).or_default() += 1;
        }
        // The most common root; ties go to the smallest (deterministic).
        let majority = counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(root, _)| *root);
        let states = roots
            .iter()
            .map(|root| match root {
                None => NodeState::Down,
                Some(r) if Some(*r) == majority => NodeState::Agrees,
                Some(_) => NodeState::Differs,
            })
            .collect();
        let (groups, cut) = components(cluster);
        self.samples.push(Sample {
            at_ms: cluster.now_ms,
            states,
            groups,
            cut,
        });
    }

    /// Simulated ms each node spent up but differing from the majority.
    pub fn divergence_ms(&self) -> Vec<u64> {
        let mut out = vec![0; self.nodes];
        for pair in self.samples.windows(2) {
            let span = pair[1].at_ms - pair[0].at_ms;
            for (i, state) in pair[0].states.iter().enumerate() {
                if *state == NodeState::Differs {
                    out[i] += span;
                }
            }
        }
        out
    }
}

/// Components of the graph of working two-way links, numbered by their
/// smallest node; and which nodes have any link cut.
fn components(cluster: &Cluster) -> (Vec<u8>, Vec<bool>) {
    let n = cluster.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], x: usize) -> usize {
        let mut x = x;
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let mut cut = vec![false; n];
    for (a, b) in cluster.net.blocked() {
        cut[a] = true;
        cut[b] = true;
    }
    for a in 0..n {
        for b in a + 1..n {
            if !cluster.net.is_blocked(a, b) && !cluster.net.is_blocked(b, a) {
                let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                parent[ra.max(rb)] = ra.min(rb);
            }
        }
    }
    let mut numbers: BTreeMap<usize, u8> = BTreeMap::new();
    let mut groups = Vec::with_capacity(n);
    for x in 0..n {
        let root = find(&mut parent, x);
        let next = numbers.len() as u8;
        groups.push(*numbers.entry(root).or_insert(next));
    }
    if numbers.len() == 1 {
        groups.iter_mut().for_each(|g| *g = 0);
    }
    (groups, cut)
}
