//! The ring watch: a bound on how long a dead node can go unprobed.
//!
//! SWIM probes one member per period, each replica in its own shuffled
//! order. A given member is probed about once a period, by a random
//! replica, and a period passes without any probe of it with probability
//! about e⁻¹ (0.37), whatever the cluster's size. At 200 replicas one crash
//! went four periods (1.6 s) without a probe and missed the 2.5 s failover
//! budget (docs/benchmarks.md, "Detection").
//!
//! So each replica also watches one node: the next Alive member after it in
//! node-id order. It works like a SWIM probe spread over two periods:
//! - **direct**: every `probe_period_ms / 2` in which nothing was heard
//!   from the node, the replica asks it for its health report
//!   (`take_watch_outputs`; any answer, or anything else heard from it, is
//!   evidence of life);
//! - **indirect**: once it has been silent for a period, the replica asks
//!   `indirect_probes` other members (the next ones after it) to check it
//!   (`WatchCheck`); each asks it in turn and says `WatchSeen` if it
//!   answers. A sighting counts only from a relay that was asked;
//! - **suspicion**: silent for two periods, watched for as long, the check
//!   a period old (time for two hops and a round trip) and no relay having
//!   seen it since, the replica suspects it in SWIM exactly as a failed
//!   probe would. The suspicion is gossiped, and the node refutes it if it
//!   is alive;
//! - **conviction**: `suspect_to_down_ms` later, if it is still suspected
//!   at the same incarnation and neither the node nor a relay was heard of
//!   since, the replica convicts it.
//!
//! A relay's word matters when only the link between the watcher and the
//! node is down: without it the watcher would suspect a live node every
//! two periods and convict it whenever the refutation, which came round
//! by gossip (suspects are now also told directly, `refute.rs`), took longer than `suspect_to_down_ms` (at 200 replicas
//! it can). The grading above SWIM (evidence of life, `silence_ms`) applies
//! unchanged. A node this replica will convict is passed over for the
//! next one, so neighbours that crash together are each watched; a node
//! Suspect otherwise (its conviction called off, or suspected by a replica
//! that then died) is still watched, and convicted the same way: foca
//! convicts only on its own failed probes.

use std::collections::BTreeMap;

use foca::{Member, State};

use super::{Membership, SwimId};
use crate::ids::NodeId;
use crate::limits::{WATCH_RELAYS_MAX, WATCH_SUSPICIONS_MAX};

/// What the watch remembers. Bounded: one target, `WATCH_SUSPICIONS_MAX`
/// suspicions, `WATCH_RELAYS_MAX` checks relayed for others.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// The node watched, and since when.
    target: Option<(NodeId, u64)>,
    /// When the next step is due.
    next_ms: u64,
    /// When relays were last asked to check the target, which, and when
    /// one of them last said it heard it.
    checked_ms: Option<u64>,
    relays: Vec<NodeId>,
    relayed_ms: Option<u64>,
    /// Convictions this replica will make unless evidence comes first.
    suspected: Vec<Suspicion>,
    /// Checks this replica relays: target → the watchers that asked, and
    /// until when an answer is worth passing on.
    relaying: BTreeMap<NodeId, (Vec<NodeId>, u64)>,
    /// For the replica to send: asks (health asks to a node), checks
    /// (relay, target) and sightings (watcher, target).
    asks: Vec<NodeId>,
    checks: Vec<(NodeId, NodeId)>,
    seen: Vec<(NodeId, NodeId)>,
    /// Suspicions raised, and convictions that followed.
    pub suspicions: u64,
    pub convictions: u64,
}

/// A conviction the watch will make: the identity, its SWIM incarnation
/// then, when the suspicion began here, when it converts, the relays
/// asked before it, and whether one of them has since heard the node.
#[derive(Debug)]
struct Suspicion {
    id: SwimId,
    incarnation: u16,
    at_ms: u64,
    due_ms: u64,
    relays: Vec<NodeId>,
    relayed: bool,
}

/// What the watch's outputs are, for the replica to send.
#[derive(Debug, Default)]
pub struct WatchOutputs {
    /// Nodes to send a health ask.
    pub asks: Vec<NodeId>,
    /// (relay, target): ask the relay to check the target.
    pub checks: Vec<(NodeId, NodeId)>,
    /// (watcher, target): tell the watcher the target was heard.
    pub seen: Vec<(NodeId, NodeId)>,
}

impl Membership {
    /// When the watch steps next.
    pub(super) fn watch_due_ms(&self) -> u64 {
        let convict = self.watch.suspected.iter().map(|s| s.due_ms).min();
        convict.map_or(self.watch.next_ms, |at| at.min(self.watch.next_ms))
    }

    /// One step of the watch, if due: convictions whose time came, then the
    /// node to watch, its ask, a suspicion if it stayed silent past its
    /// check, or else its check.
    pub(super) fn watch_tick(&mut self, now_ms: u64) {
        self.convict_due(now_ms);
        if now_ms < self.watch.next_ms {
            return;
        }
        let period = self.config.probe_period_ms;
        let step = (period / 2).max(1);
        self.watch.next_ms = now_ms.saturating_add(step);
        self.watch.relaying.retain(|_, (_, until)| *until >= now_ms);
        let members = self.watchable(1 + self.config.indirect_probes);
        let Some((node, id, incarnation, state)) = members.first().cloned() else {
            self.watch.target = None;
            return;
        };
        let since = match &self.watch.target {
            Some((watched, since)) if *watched == node => *since,
            _ => {
                self.watch.checked_ms = None;
                self.watch.relays.clear();
                self.watch.relayed_ms = None;
                now_ms
            }
        };
        self.watch.target = Some((node.clone(), since));
        let window = period.saturating_mul(2);
        let silent_ms = self.silent_ms(&node, now_ms);
        // Heard from within the last step: alive then, no ask needed (in a
        // busy cluster most steps).
        if silent_ms >= step {
            self.watch.asks.push(node.clone());
        }
        let watched_ms = now_ms.saturating_sub(since);
        let since_check = self.watch.checked_ms.map(|at| now_ms.saturating_sub(at));
        let relayed = match (self.watch.checked_ms, self.watch.relayed_ms) {
            (Some(checked), Some(seen)) => seen >= checked,
            _ => false,
        };
        // The relays had a period to answer (two hops and a round trip),
        // and the check is not older than the silence it was for.
        let checked = since_check.is_some_and(|ms| ms >= period && ms <= window);
        let full = self.watch.suspected.len() >= WATCH_SUSPICIONS_MAX;
        if silent_ms >= window && watched_ms >= window && checked && !relayed && !full {
            self.suspect(now_ms, id, incarnation, state);
            return;
        }
        // The indirect check: once a period of silence, and again once
        // the last one is older than the window.
        if silent_ms >= period && since_check.is_none_or(|ms| ms > window) {
            self.watch.checked_ms = Some(now_ms);
            self.watch.relays.clear();
            for (relay, _, _, _) in members.iter().skip(1) {
                self.watch.relays.push(relay.clone());
                self.watch.checks.push((relay.clone(), node.clone()));
            }
        }
    }

    /// Suspects the watched node in SWIM, as a failed probe would (if it
    /// is Suspect already, by another's word or an earlier suspicion of
    /// ours whose conviction was called off, only the conviction is
    /// scheduled), and schedules its conviction.
    fn suspect(&mut self, now_ms: u64, id: SwimId, incarnation: u16, state: State) {
        if state == State::Alive {
            let verdict = Member::new(id.clone(), incarnation, State::Suspect);
            if !self.apply_verdict(now_ms, verdict) {
                return;
            }
            self.watch.suspicions += 1;
        }
        self.watch.suspected.push(Suspicion {
            id,
            incarnation,
            at_ms: now_ms,
            due_ms: now_ms.saturating_add(self.config.suspect_to_down_ms),
            relays: std::mem::take(&mut self.watch.relays),
            relayed: false,
        });
        self.watch.checked_ms = None;
    }

    /// What the watch has for the replica to send.
    pub fn take_watch_outputs(&mut self) -> WatchOutputs {
        WatchOutputs {
            asks: std::mem::take(&mut self.watch.asks),
            checks: std::mem::take(&mut self.watch.checks),
            seen: std::mem::take(&mut self.watch.seen),
        }
    }

    /// Suspicions and convictions the watch raised.
    pub fn watch_counts(&self) -> (u64, u64) {
        (self.watch.suspicions, self.watch.convictions)
    }

    /// `watcher` asks whether `target` is alive: answered at once if it was
    /// heard from within half a period (or is this replica), otherwise
    /// asked, and answered when it is heard from (`watch_heard`). A target
    /// this replica does not know is ignored: a peer cannot make it ask
    /// names of its choosing.
    pub fn on_watch_check(&mut self, now_ms: u64, watcher: &NodeId, target: &NodeId) {
        let step = (self.config.probe_period_ms / 2).max(1);
        if target == &self.me || self.silent_ms(target, now_ms) < step {
            self.watch.seen.push((watcher.clone(), target.clone()));
            return;
        }
        if !self.nodes.contains_key(target) {
            return;
        }
        let until = now_ms.saturating_add(self.config.probe_period_ms);
        if let Some((watchers, at)) = self.watch.relaying.get_mut(target) {
            if !watchers.contains(watcher) && watchers.len() < WATCH_RELAYS_MAX {
                watchers.push(watcher.clone());
            }
            *at = until;
        } else if self.watch.relaying.len() < WATCH_RELAYS_MAX {
            let watchers = vec![watcher.clone()];
            self.watch
                .relaying
                .insert(target.clone(), (watchers, until));
        } else {
            return;
        }
        self.watch.asks.push(target.clone());
    }

    /// `relay` heard `target`: evidence of life for the watch and for the
    /// conviction it will make, if `relay` is one it asked about it.
    pub fn on_watch_seen(&mut self, now_ms: u64, relay: &NodeId, target: &NodeId) {
        let current = self.watch.target.as_ref().is_some_and(|(t, _)| t == target);
        if current && self.watch.relays.contains(relay) {
            self.watch.relayed_ms = Some(now_ms);
        }
        for s in self.watch.suspected.iter_mut() {
            if &s.id.node == target && s.relays.contains(relay) {
                s.relayed = true;
            }
        }
    }

    /// `from` was heard: the watchers waiting on it through this replica
    /// are told.
    pub(super) fn watch_heard(&mut self, now_ms: u64, from: &NodeId) {
        if self.watch.relaying.is_empty() {
            return;
        }
        if let Some((watchers, until)) = self.watch.relaying.remove(from) {
            if until >= now_ms {
                for watcher in watchers {
                    self.watch.seen.push((watcher, from.clone()));
                }
            }
        }
    }

    /// Applies the watch's verdict on a member to SWIM, which gossips it
    /// (as its own failed probe would); false if foca refused it.
    fn apply_verdict(&mut self, now_ms: u64, verdict: Member<SwimId>) -> bool {
        let applied = self
            .swim
            .apply_many(std::iter::once(verdict), true, &mut self.sink);
        if applied.is_err() {
            self.refused += 1;
        }
        self.absorb(now_ms);
        applied.is_ok()
    }

    /// How long since anything was heard from `node` (`u64::MAX`: never).
    fn silent_ms(&self, node: &NodeId, now_ms: u64) -> u64 {
        self.nodes
            .get(node)
            .and_then(|v| v.last_heard_ms)
            .map_or(u64::MAX, |at| now_ms.saturating_sub(at))
    }

    /// Converts each suspicion due: still Suspect at the same SWIM
    /// incarnation (a refutation raises it), and neither the node nor a
    /// relay heard of since it was raised.
    fn convict_due(&mut self, now_ms: u64) {
        if !self.watch.suspected.iter().any(|s| s.due_ms <= now_ms) {
            return;
        }
        let (due, pending): (Vec<Suspicion>, Vec<Suspicion>) =
            std::mem::take(&mut self.watch.suspected)
                .into_iter()
                .partition(|s| s.due_ms <= now_ms);
        self.watch.suspected = pending;
        for s in due {
            let heard = self.nodes.get(&s.id.node).and_then(|v| v.last_heard_ms);
            if s.relayed || heard.is_some_and(|at| at > s.at_ms) {
                continue;
            }
            let unrefuted = self.swim.iter_membership_state().any(|m| {
                m.id() == &s.id && m.incarnation() == s.incarnation && m.state() == State::Suspect
            });
            if !unrefuted {
                continue;
            }
            if self.apply_verdict(now_ms, Member::new(s.id, s.incarnation, State::Down)) {
                self.watch.convictions += 1;
            }
        }
    }

    /// The first `count` active SWIM members after this replica in
    /// node-id order, wrapping around (node, identity, SWIM incarnation,
    /// state), passing over those this replica will convict: neighbours
    /// that crash together are each watched. A Suspect member is kept: a
    /// suspicion whose conviction was called off (or raised by a replica
    /// that then died) needs someone to convict it, and foca convicts only
    /// on its own failed probes. (foca keeps one identity per node.)
    fn watchable(&self, count: usize) -> Vec<(NodeId, SwimId, u16, State)> {
        let pending = |m: &Member<SwimId>| self.watch.suspected.iter().any(|s| &s.id == m.id());
        let mut members: Vec<&Member<SwimId>> = self
            .swim
            .iter_members()
            .filter(|m| m.id().node != self.me && !pending(m))
            .collect();
        // After this replica first, then from the lowest id.
        let key = |m: &&Member<SwimId>| (m.id().node < self.me, m.id().node.clone());
        if members.len() > count {
            members.select_nth_unstable_by_key(count, key);
            members.truncate(count);
        }
        members.sort_by_key(key);
        members
            .into_iter()
            .map(|m| {
                (
                    m.id().node.clone(),
                    m.id().clone(),
                    m.incarnation(),
                    m.state(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::DetectorConfig;

    fn id(i: usize) -> NodeId {
        NodeId::parse(format!("n{i:02}")).expect("valid")
    }

    /// How the test network fails: member 0 stops from `crash_ms` on
    /// (nothing to or from it is delivered), and `cut` drops everything
    /// between two members, both ways, all along.
    struct Faults {
        crash_ms: u64,
        cut: Option<(usize, usize)>,
    }

    /// `n` members that all know each other, in 10 ms steps until
    /// `until_ms`, the watch's messages carried as the replica carries
    /// them (an ask is answered; a check is relayed). Stops early once
    /// `stop` holds.
    fn run(
        n: usize,
        seed: u64,
        faults: Faults,
        until_ms: u64,
        mut stop: impl FnMut(&[Membership], u64) -> bool,
    ) -> Vec<Membership> {
        let mut members: Vec<Membership> = (0..n)
            .map(|i| Membership::new(id(i), 1, DetectorConfig::default(), seed * 100 + i as u64))
            .collect();
        for m in members.iter_mut().skip(1) {
            m.announce(0, &id(0));
        }
        let index = |node: &NodeId| (0..n).find(|i| &id(*i) == node);
        let mut now = 0;
        while now < until_ms && !stop(&members, now) {
            for m in members.iter_mut() {
                m.tick(now);
            }
            let up = |a: usize, b: usize| {
                let dead = |i: usize| now >= faults.crash_ms && i == 0;
                let cut = faults.cut.is_some_and(|c| c == (a, b) || c == (b, a));
                !dead(a) && !dead(b) && !cut
            };
            let mut swim = Vec::new();
            let mut watch = Vec::new();
            for (i, m) in members.iter_mut().enumerate() {
                for (to, data) in m.out.drain(..) {
                    swim.push((i, to, data));
                }
                watch.push((i, m.take_watch_outputs()));
            }
            for (from, to, data) in swim {
                let Some(j) = index(&to) else { continue };
                if up(from, j) {
                    members[j].heard(now, &id(from));
                    members[j].on_datagram(now, &id(from), &data);
                }
            }
            for (from, out) in watch {
                for to in out.asks.iter().filter_map(index) {
                    // The ask, and its answer.
                    if up(from, to) {
                        members[to].heard(now, &id(from));
                        members[from].heard(now, &id(to));
                    }
                }
                for (relay, target) in out.checks {
                    let Some(r) = index(&relay) else { continue };
                    if up(from, r) {
                        members[r].heard(now, &id(from));
                        members[r].on_watch_check(now, &id(from), &target);
                    }
                }
                for (watcher, target) in out.seen {
                    let Some(w) = index(&watcher) else { continue };
                    if up(from, w) {
                        members[w].heard(now, &id(from));
                        members[w].on_watch_seen(now, &id(from), &target);
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
            let faults = Faults {
                crash_ms,
                cut: None,
            };
            let mut seen = None;
            run(24, seed, faults, crash_ms + 5_000, |members, now| {
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
    /// suspects it.
    #[test]
    fn live_nodes_are_never_suspected_by_their_watchers() {
        let faults = Faults {
            crash_ms: u64::MAX,
            cut: None,
        };
        let members = run(6, 1, faults, 60_000, |_, _| false);
        for m in &members {
            assert_eq!(m.watch_counts(), (0, 0), "{}", m.me);
            assert!(m.watch.target.is_some(), "{} watches a node", m.me);
        }
    }

    /// Only the link between a watcher and the node it watches is down
    /// for a minute: the relays hear the node, so the watcher neither
    /// suspects nor convicts it, and nobody else does either.
    #[test]
    fn a_node_behind_one_cut_link_is_vouched_for_by_relays() {
        // n05 watches n06.
        let faults = Faults {
            crash_ms: u64::MAX,
            cut: Some((5, 6)),
        };
        let members = run(12, 3, faults, 60_000, |members, _| {
            let down = members
                .iter()
                .any(|m| m.swim_state().get(&id(6)).map(|(_, s)| *s) == Some(State::Down));
            assert!(!down, "n06 was convicted");
            false
        });
        assert_eq!(members[5].watch_counts(), (0, 0));
    }
}
