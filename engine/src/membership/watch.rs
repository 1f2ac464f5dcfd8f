//! The ring watch: a bound on how long a dead node can go unprobed.
//!
//! SWIM probes one member per period, each replica in its own shuffled
//! order. A given member is probed about once a period, by a random
//! replica, and a period passes without any probe of it with probability
//! about e⁻¹ (0.37), whatever the cluster's size. At 200 replicas one crash
//! went four periods (1.6 s) without a probe and missed the 2.5 s failover
//! budget (docs/benchmarks.md, "Detection").
//!
//! So each replica also watches one node: the next active member after it
//! in node-id order. Every `probe_period_ms / 2` the replica asks that
//! node for its health report (`take_ask`; any answer, or anything else
//! heard from it, is evidence of life). Once the node has been silent for
//! two probe periods, and watched for as long, this replica suspects it in
//! SWIM exactly as a failed probe would: the suspicion is gossiped, the
//! node refutes it if it is alive, and if it is still suspected at the same
//! incarnation `suspect_to_down_ms` later, this replica convicts it. The
//! grading above SWIM (evidence of life, `silence_ms`) applies unchanged.
//!
//! Every node is then watched by exactly one live replica, so a crash is
//! suspected within about two periods and a half of its last message.
//! A false suspicion needs four round trips in a row lost to a node that
//! sent nothing else: at 10 % loss about 0.1 % of checks.

use foca::{Member, State};

use super::{Membership, SwimId};
use crate::ids::NodeId;

/// What the watch remembers.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// The node watched, and since when.
    target: Option<(NodeId, u64)>,
    /// When the next step is due.
    next_ms: u64,
    /// The node to ask now (taken by the replica).
    ask: Option<NodeId>,
    /// A suspicion this replica raised: the identity, its SWIM incarnation
    /// then, and when it becomes a conviction if not refuted.
    suspected: Option<(SwimId, u16, u64)>,
    /// Suspicions raised, and convictions that followed.
    pub suspicions: u64,
    pub convictions: u64,
}

impl Membership {
    /// When the watch steps next.
    pub(super) fn watch_due_ms(&self) -> u64 {
        let convict = self.watch.suspected.as_ref().map(|(_, _, at)| *at);
        convict.map_or(self.watch.next_ms, |at| at.min(self.watch.next_ms))
    }

    /// One step of the watch, if due: a conviction whose time came, then
    /// the node to watch, its ask, and a suspicion if it stayed silent.
    pub(super) fn watch_tick(&mut self, now_ms: u64) {
        self.convict_if_due(now_ms);
        if now_ms < self.watch.next_ms {
            return;
        }
        let step = (self.config.probe_period_ms / 2).max(1);
        self.watch.next_ms = now_ms.saturating_add(step);
        let Some((node, id, incarnation, state)) = self.successor() else {
            self.watch.target = None;
            return;
        };
        let since = match &self.watch.target {
            Some((watched, since)) if *watched == node => *since,
            _ => now_ms,
        };
        self.watch.target = Some((node.clone(), since));
        self.watch.ask = Some(node.clone());
        let window = self.config.probe_period_ms.saturating_mul(2);
        let silent_ms = self
            .nodes
            .get(&node)
            .and_then(|v| v.last_heard_ms)
            .map_or(u64::MAX, |at| now_ms.saturating_sub(at));
        let watched_ms = now_ms.saturating_sub(since);
        if state != State::Alive || silent_ms < window || watched_ms < window {
            return;
        }
        let suspect = Member::new(id.clone(), incarnation, State::Suspect);
        if self
            .swim
            .apply_many(std::iter::once(suspect), true, &mut self.sink)
            .is_err()
        {
            self.refused += 1;
            return;
        }
        self.absorb(now_ms);
        self.watch.suspicions += 1;
        let at = now_ms.saturating_add(self.config.suspect_to_down_ms);
        self.watch.suspected = Some((id, incarnation, at));
    }

    /// The node to ask this step, once.
    pub fn take_watch_ask(&mut self) -> Option<NodeId> {
        self.watch.ask.take()
    }

    /// Suspicions and convictions the watch raised.
    pub fn watch_counts(&self) -> (u64, u64) {
        (self.watch.suspicions, self.watch.convictions)
    }

    /// Convicts the node this replica suspected once the suspicion has
    /// lasted `suspect_to_down_ms` unrefuted: still Suspect at the same
    /// SWIM incarnation (a refutation raises it).
    fn convict_if_due(&mut self, now_ms: u64) {
        let due = self
            .watch
            .suspected
            .as_ref()
            .is_some_and(|(_, _, at)| *at <= now_ms);
        if !due {
            return;
        }
        let Some((id, incarnation, _)) = self.watch.suspected.take() else {
            return;
        };
        let unrefuted = self.swim.iter_membership_state().any(|m| {
            m.id() == &id && m.incarnation() == incarnation && m.state() == State::Suspect
        });
        if !unrefuted {
            return;
        }
        let down = Member::new(id, incarnation, State::Down);
        if self
            .swim
            .apply_many(std::iter::once(down), true, &mut self.sink)
            .is_err()
        {
            self.refused += 1;
            return;
        }
        self.watch.convictions += 1;
        self.absorb(now_ms);
    }

    /// The first active SWIM member after this replica in node-id order,
    /// wrapping around: its node, identity, SWIM incarnation and state.
    /// A node's newest identity only.
    fn successor(&self) -> Option<(NodeId, SwimId, u16, State)> {
        // Newest identity first among equal nodes (several may be active
        // for a moment after a restart).
        let better = |member: &Member<SwimId>, best: Option<&Member<SwimId>>| {
            best.is_none_or(|b| {
                let (m, b) = (member.id(), b.id());
                (&m.node, std::cmp::Reverse(m.incarnation))
                    < (&b.node, std::cmp::Reverse(b.incarnation))
            })
        };
        let mut after: Option<&Member<SwimId>> = None;
        let mut first: Option<&Member<SwimId>> = None;
        for member in self.swim.iter_members() {
            let node = &member.id().node;
            if node == &self.me {
                continue;
            }
            let best = if node > &self.me {
                &mut after
            } else {
                &mut first
            };
            if better(member, *best) {
                *best = Some(member);
            }
        }
        let member = after.or(first)?;
        Some((
            member.id().node.clone(),
            member.id().clone(),
            member.incarnation(),
            member.state(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::DetectorConfig;

    fn id(i: usize) -> NodeId {
        NodeId::parse(format!("n{i:02}")).expect("valid")
    }

    /// `n` members that all know each other, in 10 ms steps until
    /// `until_ms`. From `crash_ms` on, member 0 is stopped: nothing to or
    /// from it is delivered. Stops early once `stop` holds.
    fn run(
        n: usize,
        seed: u64,
        crash_ms: u64,
        until_ms: u64,
        mut stop: impl FnMut(&[Membership], u64) -> bool,
    ) -> Vec<Membership> {
        let mut members: Vec<Membership> = (0..n)
            .map(|i| Membership::new(id(i), 1, DetectorConfig::default(), seed * 100 + i as u64))
            .collect();
        for m in members.iter_mut().skip(1) {
            m.announce(0, &id(0));
        }
        let mut now = 0;
        while now < until_ms && !stop(&members, now) {
            for m in members.iter_mut() {
                m.tick(now);
            }
            let mut sent = Vec::new();
            for (i, m) in members.iter_mut().enumerate() {
                for (to, data) in m.out.drain(..) {
                    sent.push((i, to, Some(data)));
                }
                // The replica turns the watch's ask into a HealthAsk,
                // which a live node answers.
                if let Some(to) = m.take_watch_ask() {
                    sent.push((i, to, None));
                }
            }
            let dead = |i: usize| now >= crash_ms && i == 0;
            for (from, to, data) in sent {
                let Some(j) = members.iter().position(|m| m.me == to) else {
                    continue;
                };
                if dead(from) || dead(j) {
                    continue;
                }
                let sender = members[from].me.clone();
                members[j].heard(now, &sender);
                match data {
                    Some(data) => members[j].on_datagram(now, &sender, &data),
                    None => {
                        let answerer = members[j].me.clone();
                        members[from].heard(now, &answerer);
                    }
                }
            }
            now += 10;
        }
        members
    }

    /// SWIM alone leaves a crashed member unprobed for several periods now
    /// and then (a period misses it with probability about e⁻¹). With the
    /// watch, its watcher suspects it within two periods of silence and a
    /// step. 16 crashes among 24 members; without the watch the worst of
    /// them is first suspected 1,109 ms after the crash.
    #[test]
    fn a_crashed_member_is_suspected_within_two_periods_and_a_step() {
        let config = DetectorConfig::default();
        let bound = 2 * config.probe_period_ms + config.probe_period_ms / 2 + 10;
        let mut worst = 0;
        for seed in 0..16 {
            let crash_ms = 6_000 + seed * 37;
            let mut seen = None;
            run(24, seed, crash_ms, crash_ms + 5_000, |members, now| {
                let suspected = now >= crash_ms
                    && members[1..].iter().any(|m| {
                        matches!(
                            m.swim_state().get(&id(0)).map(|(_, s)| *s),
                            Some(State::Suspect | State::Down)
                        )
                    });
                if suspected {
                    seen = Some(now - crash_ms);
                }
                suspected
            });
            let at = seen.unwrap_or_else(|| panic!("seed {seed}: the crash was never suspected"));
            worst = worst.max(at);
        }
        assert!(
            worst <= bound,
            "a crash went {worst} ms unsuspected (bound {bound} ms)"
        );
    }

    /// On a clean network a watched node answers, and no watcher ever
    /// suspects it; every member was watched and asked all along.
    #[test]
    fn live_nodes_are_never_suspected_by_their_watchers() {
        let members = run(6, 1, u64::MAX, 60_000, |_, _| false);
        for m in &members {
            assert_eq!(m.watch_counts(), (0, 0), "{}", m.me);
            assert!(m.watch.target.is_some(), "{} watches a node", m.me);
        }
    }
}
