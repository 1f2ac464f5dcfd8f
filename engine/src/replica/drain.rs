//! Drain orders: an operator's order to move a node's calls away (or to
//! stop), spread to every replica and merged last-writer-wins by stamp.
//! The move itself runs in `failover.rs`, like a failover's.

use super::failover::{Move, MoveKind};
use super::{wire::Body, Event, Replica};
use crate::ids::NodeId;
use crate::limits::HLC_MAX_DRIFT_MS;
use crate::membership::{DrainOrder, DRAIN_ORDERS_MAX};

impl Replica {
    /// An operator's drain (or cancel) of `node`, from the local API.
    pub(super) fn on_local_drain(&mut self, node: NodeId, rate_per_s: Option<u32>, active: bool) {
        let order = DrainOrder {
            node,
            at: self.hlc.tick(self.now_ms),
            rate_per_s: rate_per_s
                .filter(|r| *r > 0)
                .unwrap_or(self.config.drain_rate_per_s),
            active,
        };
        self.merge_drain(order.clone());
        for to in self.membership_targets() {
            self.datagram(
                &to,
                Body::Drain {
                    order: order.clone(),
                },
            );
        }
    }

    /// A drain order relayed by a peer. Refused when it names a node this
    /// replica does not know (it would pin an order for a fake id), or is
    /// stamped further ahead than the HLC drift bound (last-writer-wins
    /// would let it override every later operator order).
    pub(super) fn on_peer_drain(&mut self, from: &NodeId, order: DrainOrder) {
        let known = order.node == self.config.node
            || self.config.peers.contains(&order.node)
            || self.members.view(&order.node).is_some();
        let ahead = order.at.wall_ms.saturating_sub(self.now_ms);
        let reason = if !known {
            format!("drain order for unknown node {}", order.node)
        } else if ahead > HLC_MAX_DRIFT_MS {
            format!("drain order for {} stamped {ahead} ms ahead", order.node)
        } else {
            return self.merge_drain(order);
        };
        self.stats.drains_refused += 1;
        self.emit(Event::Rejected {
            peer: from.clone(),
            reason,
        });
    }

    /// Keeps the newest order per node; starts or stops its drain.
    pub(super) fn merge_drain(&mut self, order: DrainOrder) {
        if self
            .failover
            .drains
            .get(&order.node)
            .is_some_and(|o| o.at >= order.at)
        {
            return;
        }
        let node = order.node.clone();
        let active = order.active;
        let rate = order.rate_per_s.max(1);
        self.failover.drains.insert(node.clone(), order);
        // Bounded: forget the oldest cancelled orders first.
        while self.failover.drains.len() > DRAIN_ORDERS_MAX {
            let oldest = self
                .failover
                .drains
                .values()
                .filter(|o| !o.active)
                .min_by_key(|o| o.at)
                .or_else(|| self.failover.drains.values().min_by_key(|o| o.at))
                .map(|o| o.node.clone());
            match oldest {
                Some(n) => self.failover.drains.remove(&n),
                None => break,
            };
        }
        self.members.set_draining(&node, active);
        self.emit(Event::Drain {
            node: node.clone(),
            active,
            rate_per_s: rate,
        });
        if active {
            if !self.failover.moves.contains_key(&node) {
                self.start_drain_move(node, rate);
            }
        } else if self
            .failover
            .moves
            .get(&node)
            .is_some_and(|m| m.kind == MoveKind::Drain)
        {
            self.stop_move(&node, "drain cancelled");
        }
    }

    /// Starts moving `node`'s calls away at `rate_per_s`, cluster-wide.
    pub(super) fn start_drain_move(&mut self, node: NodeId, rate_per_s: u32) {
        let total = self.calls_owned_by(&node).len();
        self.failover.moves.insert(
            node,
            Move {
                kind: MoveKind::Drain,
                started_ms: self.now_ms,
                total,
                rate_per_s,
                moved_here: 0,
                heard_majority: true,
                handed: Default::default(),
            },
        );
    }
}
