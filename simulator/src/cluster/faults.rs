//! The faults a scenario injects into a cluster: partitions, one-way cuts,
//! clock skew, network changes, stream resets.

use super::*;

impl Cluster {
    /// Cuts the cluster into groups that cannot talk to each other; nodes
    /// in no group form one more group. Replaces any earlier cut.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        let group_of = |n: usize| groups.iter().position(|g| g.contains(&n));
        let before: Vec<(usize, usize)> = self.net.blocked().collect();
        self.net.heal();
        for a in 0..self.nodes.len() {
            for b in 0..self.nodes.len() {
                if a != b && group_of(a) != group_of(b) {
                    self.net.block(a, b);
                }
            }
        }
        self.note_unblocked(before);
        self.fault("partition", None, &format!("{groups:?}"));
        self.refresh_links();
    }

    /// `from` can no longer reach `to` (the other direction still works).
    pub fn cut(&mut self, from: usize, to: usize) {
        self.net.block(from, to);
        self.fault("cut", None, &format!("{from}->{to}"));
        self.refresh_links();
    }

    /// `from` can reach `to` again.
    pub fn uncut(&mut self, from: usize, to: usize) {
        self.net.unblock(from, to);
        self.note_unblocked(vec![(from, to)]);
        self.fault("uncut", None, &format!("{from}->{to}"));
        self.refresh_links();
    }

    /// Every link works again.
    pub fn heal(&mut self) {
        let before: Vec<(usize, usize)> = self.net.blocked().collect();
        self.net.heal();
        self.note_unblocked(before);
        self.fault("heal", None, "");
        self.refresh_links();
    }

    /// Notes when the directions in `before` that are no longer blocked
    /// opened (now).
    fn note_unblocked(&mut self, before: Vec<(usize, usize)>) {
        for pair in before {
            if !self.net.is_blocked(pair.0, pair.1) {
                self.unblocked_at.insert(pair, self.now_ms);
            }
        }
    }

    /// Tells replicas about links that came up or went down. A connection
    /// needs both directions and both ends up.
    pub(super) fn refresh_links(&mut self) {
        let n = self.nodes.len();
        for a in 0..n {
            for b in a + 1..n {
                let up = self.nodes[a].is_up()
                    && self.nodes[b].is_up()
                    && !self.net.is_blocked(a, b)
                    && !self.net.is_blocked(b, a);
                if up == self.links.contains(&(a, b)) {
                    continue;
                }
                if up {
                    self.links.insert((a, b));
                } else {
                    self.links.remove(&(a, b));
                }
                for (x, y) in [(a, b), (b, a)] {
                    let peer = self.nodes[y].id.clone();
                    let input = if up {
                        Input::PeerUp { peer }
                    } else {
                        Input::PeerDown { peer }
                    };
                    self.input(x, input);
                }
            }
        }
    }

    /// Sets node `i`'s clock to read `offset_ms` off the true time from
    /// now on, drifting by `drift_ppm`.
    pub fn set_clock(&mut self, i: usize, offset_ms: i64, drift_ppm: i64) {
        let now = self.now_ms;
        self.nodes[i].clock.set(now, offset_ms, drift_ppm);
        self.fault(
            "clock",
            Some(i),
            &format!("{offset_ms:+}ms {drift_ppm:+}ppm"),
        );
        self.refresh_timer(i);
    }

    pub fn set_clock_offset(&mut self, i: usize, offset_ms: i64) {
        self.set_clock(i, offset_ms, 0);
    }

    /// Changes how the network behaves from now on.
    pub fn set_network(&mut self, config: NetConfig) {
        self.fault("network", None, &format!("{config:?}"));
        self.net.config = config;
    }

    /// Every sync stream resets: messages in flight on one are lost.
    pub fn reset_streams(&mut self) {
        self.fault("reset_streams", None, "");
        self.net.reset_streams();
    }

    /// Node `i` stops (if up) and starts again on its store as the current
    /// build.
    pub fn upgrade(&mut self, i: usize) {
        self.check_version_gate();
        if self.nodes[i].is_up() {
            self.crash(i);
        }
        self.older.remove(&i);
        self.fault("upgrade", Some(i), "");
        self.restart(i);
    }

    /// The version gate: no room may be compacted while a member runs a
    /// build that cannot read compacted rooms. Records the first breach.
    pub fn check_version_gate(&mut self) {
        if self.gate_breach.is_some() {
            return;
        }
        let Some(&older) = self.older.iter().find(|&&i| self.nodes[i].member) else {
            return;
        };
        let compactions = self.stat_totals().compactions;
        if compactions > 0 {
            self.gate_breach = Some(format!(
                "{compactions} compactions by {} ms while node {older}, an older build, is a member",
                self.now_ms
            ));
        }
    }
}
