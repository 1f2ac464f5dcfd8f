//! Telling a suspect it is suspected, and hearing its refutation directly
//! (Lifeguard's "buddy system"), and no conviction of a node heard from.
//!
//! In SWIM a suspect learns it is suspected, and the suspecter learns of the
//! refutation, only by gossip. With five replicas that takes a hop or two;
//! with 200, a given replica carries a given update to a given node only
//! rarely. At 10 % loss and 200 ms of jitter one probe in six fails, so
//! suspicions of live nodes are constant, and the refutations came too late:
//! in a minute of 200 replicas, 80 convictions of live nodes got past
//! evidence of life (a replica that learns of a conviction second-hand has
//! asked the node nothing; docs/failover.md).
//!
//! So every replica that holds a node Suspect says so to the node with each
//! ask (`Suspected`, at the SWIM incarnation it suspects). The node refutes
//! at once, as foca does when gossip brings it the suspicion (its
//! incarnation goes up), and answers `Refuted` with an incarnation above the
//! suspected one. The replica applies that as an Alive update, which ends
//! the suspicion and gossips the refutation on. A node speaks only for
//! itself: the transport authenticated the sender.
//!
//! And foca's own conviction of a suspect (its timer, `suspect_to_down_ms`
//! after its failed probe) waits while the node was heard from within
//! `silence_ms`: the conviction gossiped from here would otherwise find
//! second-hand replicas with no evidence of their own. Grading applies the
//! same rule (`grade.rs`), so this replica's own grade is unchanged by it.

use foca::{Member, State};

use super::{Membership, SwimId};
use crate::ids::NodeId;
use crate::limits::CONVICTION_WAIT_SILENCES;

impl Membership {
    /// The suspicion this replica holds on `node`, if any: its identity's
    /// incarnation and the SWIM incarnation suspected.
    pub fn suspicion_of(&self, node: &NodeId) -> Option<(u64, u16)> {
        self.swim
            .iter_membership_state()
            .find(|m| &m.id().node == node && m.state() == State::Suspect)
            .map(|m| (m.id().incarnation, m.incarnation()))
    }

    /// `from` holds this replica Suspect as identity `incarnation` at SWIM
    /// incarnation `swim`. Refutes it (once per incarnation: each refutation
    /// makes foca gossip) and returns what to answer: this identity, alive
    /// at a SWIM incarnation above `swim`. Nothing for an identity this
    /// replica is not, or at the last incarnation (foca rejoins instead).
    pub fn on_suspected(&mut self, now_ms: u64, incarnation: u64, swim: u16) -> Option<(u64, u16)> {
        let me = self.swim.identity().clone();
        if incarnation != me.incarnation {
            return None;
        }
        let refuted = match self.refuted {
            Some((identity, above)) if identity == me.incarnation => above,
            _ => 0,
        };
        if swim >= refuted {
            let update = Member::new(me.clone(), swim, State::Suspect);
            if self
                .swim
                .apply_many(std::iter::once(update), true, &mut self.sink)
                .is_err()
            {
                self.refused += 1;
            }
            self.absorb(now_ms);
            self.regrade_after_swim(now_ms);
            if self.swim.identity() != &me {
                // At the last incarnation foca rejoined instead.
                return None;
            }
            let above = swim.checked_add(1)?;
            self.refuted = Some((me.incarnation, above));
            return Some((me.incarnation, above));
        }
        Some((me.incarnation, refuted))
    }

    /// `from` says it is alive as identity `incarnation` at SWIM
    /// incarnation `swim` or later: ends a suspicion of an older SWIM
    /// incarnation of that identity, and gossips the refutation on. A
    /// node held Down stays Down (foca: Down is final for an identity).
    pub fn on_refuted(&mut self, now_ms: u64, from: &NodeId, incarnation: u64, swim: u16) {
        let id = SwimId {
            node: from.clone(),
            incarnation,
        };
        let stale = self
            .swim
            .iter_membership_state()
            .any(|m| m.id() == &id && m.state() == State::Suspect && m.incarnation() < swim);
        if !stale {
            return;
        }
        let update = Member::new(id, swim, State::Alive);
        if self
            .swim
            .apply_many(std::iter::once(update), true, &mut self.sink)
            .is_err()
        {
            self.refused += 1;
        }
        self.refutations += 1;
        self.absorb(now_ms);
        self.regrade_after_swim(now_ms);
    }

    /// What becomes of a conviction timer that is due: foca's conviction
    /// of a suspect waits while the node was heard from within
    /// `silence_ms`, but only the one timer of a suspicion foca still
    /// holds (foca sets one on every failed probe, and ignores those of a
    /// refuted incarnation: the earliest stands for the rest), and for at
    /// most `CONVICTION_WAIT_SILENCES` windows: a node that talks but is
    /// never told (an older build) is convicted as before, rejoins, and
    /// grading holds it meanwhile.
    pub(super) fn conviction_timer(&mut self, timer: &foca::Timer<SwimId>, now_ms: u64) -> Due {
        let foca::Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = timer
        else {
            return Due::Fire;
        };
        let held = self.swim.iter_membership_state().any(|m| {
            m.id() == member_id && m.state() == State::Suspect && m.incarnation() == *incarnation
        });
        if !held {
            self.waiting.remove(member_id);
            return Due::Fire;
        }
        // This one, the earliest, stands for the suspicion's later twins.
        self.timers.retain(|_, t| {
            !matches!(t, foca::Timer::ChangeSuspectToDown { member_id: m, incarnation: i, .. }
                if m == member_id && i == incarnation)
        });
        let heard = self
            .nodes
            .get(&member_id.node)
            .and_then(|v| v.last_heard_ms);
        let until = heard.map(|at| at.saturating_add(self.config.silence_ms));
        let cap = self
            .config
            .silence_ms
            .saturating_mul(CONVICTION_WAIT_SILENCES);
        let since = *self.waiting.entry(member_id.clone()).or_insert(now_ms);
        match until {
            Some(until) if until > now_ms && now_ms < since.saturating_add(cap) => Due::Wait(until),
            _ => {
                self.waiting.remove(member_id);
                Due::Fire
            }
        }
    }
}

/// A due conviction timer: handed to foca, or queued again.
pub(super) enum Due {
    Fire,
    Wait(u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::DetectorConfig;

    fn id(name: &str) -> NodeId {
        NodeId::parse(name).expect("valid")
    }

    /// Members that know each other, in 10 ms steps until `until_ms`.
    /// `link(from, to)` says whether a SWIM datagram gets through;
    /// `heard(listener, speaker, now)` whether something else (a report)
    /// reaches `listener` from `speaker` in that step.
    fn run(
        members: &mut [Membership],
        from_ms: u64,
        until_ms: u64,
        link: impl Fn(usize, usize) -> bool,
        heard: impl Fn(usize, usize, u64) -> bool,
    ) {
        let names: Vec<NodeId> = members.iter().map(|m| m.me.clone()).collect();
        crate::membership::grade::tests::run(members, from_ms, until_ms, link, |members, now| {
            for (i, listener) in members.iter_mut().enumerate() {
                for (j, speaker) in names.iter().enumerate() {
                    if i != j && heard(i, j, now) {
                        listener.heard(now, speaker);
                    }
                }
            }
        });
    }

    fn cluster(n: usize) -> Vec<Membership> {
        let mut members: Vec<Membership> = (0..n)
            .map(|i| {
                let me = id(&format!("n{i}"));
                Membership::new(me, 1, DetectorConfig::default(), 40 + i as u64)
            })
            .collect();
        let first = members[0].me.clone();
        for m in members.iter_mut().skip(1) {
            m.announce(0, &first);
        }
        run(&mut members, 0, 2_000, |_, _| true, |_, _, _| false);
        members
    }

    fn state(m: &Membership, node: &NodeId) -> Option<State> {
        m.swim_state().get(node).map(|(_, s)| *s)
    }

    /// The suspect refutes on being told, once per incarnation (each
    /// refutation makes foca gossip), and its answer ends the suspicion
    /// where it was held, without any SWIM datagram in between.
    #[test]
    fn a_suspect_told_refutes_and_its_answer_ends_the_suspicion() {
        let mut members = cluster(3);
        let c = members[2].me.clone();
        let c_id = members[2].swim.identity().clone();
        let suspicion = Member::new(c_id.clone(), 0, State::Suspect);
        let a = &mut members[0];
        a.swim
            .apply_many(std::iter::once(suspicion), false, &mut a.sink)
            .expect("applied");
        let (incarnation, swim) = members[0].suspicion_of(&c).expect("held Suspect");
        assert_eq!(incarnation, c_id.incarnation);

        assert_eq!(members[2].on_suspected(3_000, incarnation + 1, swim), None);
        let answer = members[2].on_suspected(3_000, incarnation, swim);
        assert_eq!(answer, Some((incarnation, swim + 1)));
        assert!(!members[2].out.is_empty(), "the refutation is gossiped");
        members[2].out.clear();
        let again = members[2].on_suspected(3_000, incarnation, swim);
        assert_eq!(again, answer);
        assert!(members[2].out.is_empty(), "refuted once, not per message");
        // foca's incarnation really rose: any SWIM datagram from c now
        // carries it (here, its next probe's, which n1 gets).
        run(&mut members, 3_000, 3_400, |_, to| to == 1, |_, _, _| false);
        let at_b = members[1]
            .swim
            .iter_membership_state()
            .find(|m| m.id() == &c_id)
            .map(|m| m.incarnation());
        assert!(at_b.is_some_and(|i| i > swim), "n1 holds c at {at_b:?}");

        members[0].on_refuted(3_000, &c, incarnation, swim);
        assert!(members[0].suspicion_of(&c).is_some(), "not above: ignored");
        members[0].on_refuted(3_000, &c, incarnation, swim + 1);
        assert_eq!(members[0].suspicion_of(&c), None);
        assert_eq!(state(&members[0], &c), Some(State::Alive));
        assert_eq!(members[0].refutations, 1);
    }

    /// Every SWIM datagram from n1 to n0 is lost, so n0's probes of n1
    /// fail and no refutation reaches n0; but n0 hears n1 otherwise each
    /// step until `quiet_ms`. Its conviction waits while that lasts, at
    /// most `CONVICTION_WAIT_SILENCES` windows from its first due time.
    /// (Without the wait, n0 convicts n1 `suspect_to_down_ms` after its
    /// first failed probe, at about 3.2 s.)
    fn one_way_loss(quiet_ms: u64, until_ms: u64) -> (Vec<Membership>, NodeId) {
        let mut members = cluster(2);
        let b = members[1].me.clone();
        let lossy = |from: usize, to: usize| !(from == 1 && to == 0);
        let talks = |i: usize, j: usize, now: u64| i == 0 && j == 1 && now < quiet_ms;
        run(&mut members, 2_000, until_ms, lossy, talks);
        (members, b)
    }

    #[test]
    fn a_conviction_waits_while_the_suspect_is_heard() {
        let config = DetectorConfig::default();
        let (members, b) = one_way_loss(4_500, 4_500);
        assert_ne!(state(&members[0], &b), Some(State::Down));
        // One timer stands for the suspicion: foca sets one per failed
        // probe, so beside it only those of the last `suspect_to_down_ms`,
        // not yet due. No pile-up while it waits.
        let waiting = members[0]
            .timers
            .values()
            .filter(|t| {
                matches!(t, foca::Timer::ChangeSuspectToDown { member_id, .. }
                if member_id.node == b)
            })
            .count();
        let fresh = config.suspect_to_down_ms / config.probe_period_ms;
        assert!(waiting <= 1 + fresh as usize, "{waiting} conviction timers");
        let bound = 4_500 + config.silence_ms + config.probe_period_ms;
        let (members, b) = one_way_loss(4_500, bound);
        assert_eq!(state(&members[0], &b), Some(State::Down));
    }

    /// A suspect heard from but never refuting (an older build, which
    /// cannot be told) is convicted once the wait is capped, and rejoins.
    #[test]
    fn the_wait_is_capped() {
        let config = DetectorConfig::default();
        let cap = config.silence_ms * CONVICTION_WAIT_SILENCES;
        let (members, b) = one_way_loss(u64::MAX, 6_000);
        assert_ne!(state(&members[0], &b), Some(State::Down));
        let (members, b) = one_way_loss(u64::MAX, 4_000 + cap + config.probe_period_ms);
        assert_eq!(state(&members[0], &b), Some(State::Down));
    }
}
