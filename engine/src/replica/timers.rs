//! The replica's timers: when the next one is due, and what each does when
//! it fires (anti-entropy turns, push flushes, round timeouts, end acks,
//! log trimming, failure detection, moves).

use super::overlay::Overlay;
use super::{failover, Replica, Timer, LOG_HORIZON};
use crate::ids::NodeId;
use crate::limits::{LOG_TRIM_CATCH_UP_MS, LOG_TRIM_PER_TICK_MAX, NEAR_PEER_VISITS};
use crate::rooms::{RoomSet, TrimmedLog};
use crate::storage::{keys, Batch};

impl Replica {
    /// The next deadline and the timer it belongs to.
    pub fn poll_timeout(&self) -> Option<(u64, Timer)> {
        let mut next = vec![
            (self.anti_entropy.next_anti_entropy_ms, Timer::AntiEntropy),
            (self.purge.next_log_trim_ms, Timer::LogTrim),
        ];
        if let Some(at) = self.outbox.due_ms(self.config.push_delay_ms) {
            next.push((at, Timer::PushFlush));
        }
        if let Some(at) = self.missing.next_ms() {
            next.push((at, Timer::MissingPull));
        }
        if !self.purge.ended.is_empty() {
            next.push((self.purge.next_end_ack_ms, Timer::EndAck));
        }
        if self.compaction.busy() {
            next.push((self.compaction.next_ms, Timer::Compaction));
        }
        if self.config.failure_detection {
            next.push((self.failover.next_health_ms, Timer::Health));
            if let Some(at) = self.failover.spread.next_ask_ms {
                next.push((at, Timer::Health));
            }
            if let Some(at) = self.members.next_timer_ms() {
                next.push((at, Timer::Membership));
            }
            if self.moving() {
                next.push((self.failover.next_move_ms, Timer::Rehome));
            }
        }
        debug_assert_eq!(
            self.anti_entropy.rounds_open,
            self.peers.values().filter(|p| p.round.is_some()).count(),
            "rounds_open counts the open rounds"
        );
        if self.anti_entropy.rounds_open > 0 {
            next.extend(
                self.peers
                    .values()
                    .filter_map(|p| p.round.as_ref())
                    .map(|r| (r.deadline_ms, Timer::RoundTimeout)),
            );
        }
        next.into_iter().min_by_key(|(at, _)| *at)
    }

    pub(super) fn on_tick(&mut self) {
        let now = self.now_ms;
        if self
            .outbox
            .due_ms(self.config.push_delay_ms)
            .is_some_and(|at| at <= now)
        {
            self.flush_push();
        }
        self.pull_missing_due();
        self.expire_rounds();
        if self.offloading() {
            self.give_up_late_applies();
        }
        if now >= self.anti_entropy.next_anti_entropy_ms {
            self.anti_entropy_turn();
            let interval = self.config.anti_entropy_interval_ms;
            // ±10 % jitter so replicas started together do not sync in lockstep.
            let jitter = self.rng.next() % (interval / 5 + 1);
            self.anti_entropy.next_anti_entropy_ms = now + interval - interval / 10 + jitter;
        }
        if now >= self.purge.next_end_ack_ms {
            self.announce_ended();
            self.purge.next_end_ack_ms = now + self.config.end_ack_interval_ms;
        }
        if self.compaction.busy() && now >= self.compaction.next_ms {
            self.compaction_tick();
            self.compaction.next_ms = now + self.config.end_ack_interval_ms;
        }
        if now >= self.purge.next_log_trim_ms {
            // A trim cut short by its bound goes on soon: trimming once an
            // interval would otherwise fall behind a write rate above
            // LOG_TRIM_PER_TICK_MAX per interval.
            let wait = if self.trim_log() {
                LOG_TRIM_CATCH_UP_MS.min(self.config.log_trim_interval_ms)
            } else {
                self.config.log_trim_interval_ms
            };
            self.purge.next_log_trim_ms = now + wait;
        }
        self.purge_due();
        if self.config.failure_detection {
            self.members.tick(now);
            self.send_watch();
            self.after_membership();
            if now >= self.failover.next_health_ms {
                self.health_tick();
                self.failover.next_health_ms = now + self.config.detector.health_interval_ms;
            }
            self.ask_suspects_if_due();
            if self.moving() && now >= self.failover.next_move_ms {
                self.move_tick();
                self.failover.next_move_ms = now + failover::MOVE_INTERVAL_MS;
            }
        }
    }

    /// Starts a round with the next up peer that has none running, in an
    /// order this replica draws afresh each time it has gone through it
    /// (`round_order`: every peer at least once a cycle, near peers more
    /// often), a different order on each replica. With one order
    /// everywhere (node-id order, from the same start), every replica
    /// rounded with the same peer in the same interval, so a change that
    /// reached only some replicas (the last push of a node that then
    /// crashed) spread to the rest only in the intervals when that peer was
    /// one of the few: at 200 replicas, a join
    /// reached none of the 130 its push had missed for 6.5 s.
    fn anti_entropy_turn(&mut self) {
        // About two passes: the scan may start a new order mid-way, and a
        // free peer is then found in it rather than an interval later. (An
        // order holds a near peer several times: it can outgrow `peers`; a
        // scan cut short finds its peer at the next turn.)
        let passes = 2 * self.anti_entropy.order.len().max(self.peers.len());
        // Checked once a turn, not once a pass: it walks the peers.
        let near_now = !self.anti_entropy.order_near && self.near_known();
        for _ in 0..=passes {
            // A cycle over, the peers changed, or near peers just became
            // known: a new order. (A cycle at 200 replicas is longer than
            // a minute: the first one, drawn before any report came, would
            // otherwise hold the uniform order that long.)
            let state = &self.anti_entropy;
            if state.turn >= state.order.len()
                || state.order_peers != self.peers.len()
                || (near_now && !state.order_near)
            {
                let order = self.round_order();
                if order.is_empty() {
                    return;
                }
                // `round_order` weighs it whenever near peers are known.
                self.anti_entropy.order_near |= near_now;
                self.anti_entropy.order = order;
                self.anti_entropy.order_peers = self.peers.len();
                self.anti_entropy.turn = 0;
            }
            let peer = self.anti_entropy.order[self.anti_entropy.turn].clone();
            self.anti_entropy.turn += 1;
            if self
                .peers
                .get(&peer)
                .is_some_and(|p| p.up && p.round.is_none())
            {
                self.start_round(&peer);
                return;
            }
        }
    }

    /// One cycle of anti-entropy rounds: every peer once, in an order drawn
    /// afresh, and each peer whose health report names this replica's
    /// region `NEAR_PEER_VISITS` times, its visits spread over the cycle.
    /// Near rounds repair faster and cost no inter-region bytes; every
    /// other region is still reached each cycle. Unless some peer is known
    /// to be in another region and some in this one, it is one visit each,
    /// drawn as before (a peer whose report has not come yet does not
    /// make a one-region cluster's order uneven).
    fn round_order(&mut self) -> Vec<NodeId> {
        let mut order: Vec<NodeId> = self.peers.keys().cloned().collect();
        if !self.near_known() {
            // Fisher-Yates with the replica's own generator.
            for i in (1..order.len()).rev() {
                let j = (self.rng.next() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
            return order;
        }
        // Each visit k of a peer visited v times takes a random place in
        // the k-th v-th of the cycle, so a near peer's visits are spread
        // out rather than bunched.
        let mut placed: Vec<(u64, NodeId)> = Vec::new();
        for peer in order.drain(..) {
            let visits = if self.region_of(&peer) == Some(&self.config.region) {
                NEAR_PEER_VISITS
            } else {
                1
            };
            let span = u64::MAX / visits;
            for k in 0..visits {
                placed.push((k * span + self.rng.next() % span, peer.clone()));
            }
        }
        placed.sort_unstable();
        placed.into_iter().map(|(_, peer)| peer).collect()
    }

    /// Whether some peer is known to be in this replica's region and some
    /// in another (`round_order` weighs the order only then).
    fn near_known(&self) -> bool {
        let region = &self.config.region;
        let (mut near, mut far) = (false, false);
        for peer in self.peers.keys() {
            match self.region_of(peer) {
                Some(r) if r == region => near = true,
                Some(_) => far = true,
                None => {}
            }
            if near && far {
                return true;
            }
        }
        false
    }

    /// A node's region, from its latest health report.
    fn region_of(&self, node: &NodeId) -> Option<&crate::ids::RegionId> {
        self.members
            .view(node)
            .and_then(|v| v.report.as_ref())
            .map(|r| &r.region)
    }

    /// Trims the change log: entries older than `log_retention_ms`, and the
    /// oldest beyond `log_entries_max` of those written since this replica
    /// opened. Returns whether the trim stopped at its bound with more to do.
    fn trim_log(&mut self) -> bool {
        let before = self.now_ms.saturating_sub(self.config.log_retention_ms);
        let kept = self.rooms.logged().saturating_sub(self.purge.log_trimmed);
        let excess =
            usize::try_from(kept.saturating_sub(self.config.log_entries_max)).unwrap_or(usize::MAX);
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        let open = self.purge.log_newest_at_open;
        let trimmed =
            RoomSet::trim_log(&view, before, excess, LOG_TRIM_PER_TICK_MAX, open.as_ref());
        match trimmed {
            Ok(TrimmedLog {
                batch,
                horizon: Some(horizon),
                removed,
                counted,
            }) => {
                // Only entries written since the open count against the
                // bound: an older one trimmed leaves `kept` as it was.
                self.purge.log_trimmed = self.purge.log_trimmed.saturating_add(counted as u64);
                self.staged.add(batch, false);
                self.purge.log_horizon = Some(horizon);
                let mut meta = Batch::default();
                let value = postcard::to_stdvec(&horizon).expect("timestamps serialize");
                meta.put(keys::meta(LOG_HORIZON), value);
                self.staged.add(meta, false);
                removed == LOG_TRIM_PER_TICK_MAX
            }
            Ok(TrimmedLog { horizon: None, .. }) => false,
            Err(_) => {
                self.stats.storage_errors += 1;
                false
            }
        }
    }
}
