//! A planned departure (`membership::Intent`): this replica tells every
//! connected peer it is leaving, and why, before its driver stops; peers
//! grade it Leaving (a restart: its calls are held) or Down (a stop: its
//! calls move at once) and acknowledge, so the driver knows when the word
//! is out (`Engine::leave_cluster`).

use std::collections::BTreeSet;

use super::wire::Body;
use super::{journal::IncidentKind, Replica};
use crate::ids::NodeId;
use crate::membership::Intent;

#[derive(Debug, Default)]
pub(super) struct State {
    /// The peers that have not yet acknowledged this replica's departure
    /// (`None`: it is not leaving).
    waiting: Option<BTreeSet<NodeId>>,
}

impl Replica {
    /// Announces this replica's departure to every peer that is up.
    pub(super) fn on_local_leave(&mut self, intent: Intent) {
        let peers: BTreeSet<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.up)
            .map(|(id, _)| id.clone())
            .collect();
        let incarnation = self.members.own_incarnation();
        for peer in &peers {
            self.send(
                peer,
                Body::Leaving {
                    intent,
                    incarnation,
                },
            );
        }
        self.journal(
            IncidentKind::Graded,
            format!(
                "{}: leaving ({}), told {} peers",
                self.config.node,
                intent.as_str(),
                peers.len()
            ),
        );
        self.departure.waiting = Some(peers);
    }

    /// Whether every peer told of this replica's departure acknowledged
    /// it (or went down meanwhile). False before a departure.
    pub fn departure_acknowledged(&self) -> bool {
        self.departure.waiting.is_some() && self.departure_unacknowledged() == 0
    }

    /// How many peers told of this replica's departure have not yet
    /// acknowledged it (and are still up).
    pub fn departure_unacknowledged(&self) -> usize {
        self.departure.waiting.as_ref().map_or(0, |waiting| {
            waiting
                .iter()
                .filter(|p| self.peers.get(*p).is_some_and(|state| state.up))
                .count()
        })
    }

    pub(super) fn on_leaving(&mut self, from: &NodeId, intent: Intent, incarnation: u64) {
        if self.config.failure_detection {
            self.members
                .on_departure(self.now_ms, from, intent, incarnation);
            self.after_membership();
        }
        self.send(from, Body::LeavingAck);
    }

    pub(super) fn on_leaving_ack(&mut self, from: &NodeId) {
        if let Some(waiting) = &mut self.departure.waiting {
            waiting.remove(from);
        }
    }
}
