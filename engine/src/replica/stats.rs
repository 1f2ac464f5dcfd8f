//! Counters and latency histograms a driver exports as metrics. Plain
//! numbers; no I/O and no clock: the replica records what it can measure
//! from the `now` it is given, the driver what only a wall clock can show.

use std::collections::BTreeMap;
use std::time::Duration;

/// Messages and bytes of one message kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub messages: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    pub sent: BTreeMap<&'static str, Traffic>,
    pub received: BTreeMap<&'static str, Traffic>,
    /// Frames that failed to decode, by reason.
    pub decode_errors: BTreeMap<&'static str, u64>,
    pub foreign_cluster: u64,
    pub clock_drift_refused: u64,
    pub local_writes: u64,
    /// Rooms asked of a pusher for changes its push depended on and did
    /// not bring (`replica::missing`).
    pub missing_pulls: u64,
    /// Rooms a push left waiting where nothing waited any more when the
    /// request was due (the watched changes applied, or were ignored as
    /// of a replaced history): a request spared.
    pub missing_pulls_spared: u64,
    /// Rooms whose history this replica compacted (`room::compact`).
    pub compactions: u64,
    /// Compactions prepared off the replica's task that found their room
    /// changed meanwhile, and were finished in line (carrying what the
    /// room took since the copy onto the copy's result).
    pub compactions_redone: u64,
    /// Top-up jobs: a compaction back from off the task whose room took
    /// more changes meanwhile than are carried in line
    /// (`COMPACTION_CARRY_IN_LINE_MAX`), sent off again to carry them.
    pub compaction_top_ups: u64,
    /// Compactions started off the task because a peer's base at the
    /// room's request arrived first (before this replica saw every
    /// replica name it).
    pub compactions_on_peer_base: u64,
    /// Results of compactions off the task that met a held peer's base at
    /// the same cut that differs (another compaction format, or a forged
    /// base). Dropped unless a held base matches the result; the peers'
    /// bases then apply like any peer's change, adopted or refused.
    pub compaction_base_mismatches: u64,
    /// Peers' changes carrying a newer base that arrived while this
    /// replica compacted the room off its task, and were dropped because
    /// too many were already held back (anti-entropy brings them again).
    pub compaction_held_dropped: u64,
    /// Compactions off the replica's task that failed, or whose result
    /// did not come back within `COMPACTION_WORK_MS_MAX`.
    pub compactions_failed: u64,
    /// Copies of a large room sent off the replica's task with peers'
    /// changes to apply (`replica::offload`).
    pub applies_off_task: u64,
    /// Of those, the ones whose room was written to meanwhile (or that
    /// failed): their changes applied again in line.
    pub applies_redone: u64,
    /// Peers' changes dropped because a large room already held
    /// `APPLY_HELD_BYTES_MAX` for its next copy (anti-entropy brings them
    /// again).
    pub apply_held_dropped: u64,
    /// Copies whose result did not come back within
    /// `COMPACTION_WORK_MS_MAX` (their changes come again by
    /// anti-entropy).
    pub applies_failed: u64,
    /// Imports prepared off the replica's task that found their room
    /// changed meanwhile, and were merged in line instead.
    pub imports_in_line: u64,
    pub local_write_errors: u64,
    /// Peers' changes received (pushes, sync answers, whole documents),
    /// before those already held are dropped: with `changes_applied`, how
    /// often each needed change arrived.
    pub changes_received: u64,
    pub changes_applied: u64,
    pub changes_rejected: u64,
    /// Changes refused by schema validation (`room::validate`), from peers.
    pub changes_refused: u64,
    /// Drain orders from peers refused (unknown node, stamped too far ahead).
    pub drains_refused: u64,
    /// Peers' purges refused for want of an end change of the room.
    pub purges_refused: u64,
    /// Purge proofs this replica cannot check (they end the room at
    /// another generation), waiting for more peers to send the same.
    pub purge_proofs_waiting: u64,
    /// Purges followed on such a proof, once enough peers sent it.
    pub purges_voted: u64,
    pub pending_dropped: u64,
    /// Peers' bases of a newer generation whose cut is not a request this
    /// replica may take, left for a later round.
    pub peer_bases_deferred: u64,
    /// Peers' bases whose cut this replica could never hold (they
    /// compacted past it), taken with its room merged onto them.
    pub peer_bases_merged: u64,
    /// Such bases permitted once enough peers sent them
    /// (`CATCH_UP_PEERS_MIN`).
    pub catch_ups_permitted: u64,
    /// Replicas compaction stopped waiting for: held Down for
    /// `compaction_absent_ms` (`replica::compaction::absent`).
    pub compaction_absent: u64,
    /// Peer changes of histories this replica compacted away, ignored.
    pub changes_superseded: u64,
    pub push_skipped_oversize: u64,
    pub rounds_started: u64,
    pub rounds_idle: u64,
    /// Rounds that found a difference but left it to a later turn because
    /// a round with another peer was already pulling.
    pub rounds_deferred: u64,
    pub rounds_timed_out: u64,
    pub stale_responses: u64,
    /// Differing rooms a walk did not ask for: the peer's leaf answer gave
    /// heads this replica already held (`LeafHeadsResp`).
    pub leaf_rooms_skipped: u64,
    pub sync_incremental: u64,
    pub sync_since: u64,
    pub sync_full: u64,
    pub purged: u64,
    pub purged_refused: u64,
    pub storage_errors: u64,
    /// SWIM datagrams refused (malformed, spoofed sender, foca errors).
    pub swim_refused: u64,
    /// Gossips sent at once on learning a conviction
    /// (`GOSSIP_ON_DOWN_GAP_MS`).
    pub swim_down_gossips: u64,
    /// Suspicions this replica raised as the watcher of a silent node, and
    /// the convictions that followed (`membership/watch.rs`).
    pub watch_suspicions: u64,
    pub watch_convictions: u64,
    /// Suspicions this replica held that the suspect ended with its own
    /// word (`Refuted`, `membership/refute.rs`).
    pub swim_refutations: u64,
    /// Calls this replica took over (failover or drain).
    pub rehomed: u64,
    /// Takeovers refused (another replica moved the call first).
    pub rehome_refused: u64,
    /// Orphaned calls with no healthy node to take them.
    pub rehome_no_candidate: u64,
    /// Failovers started again because a call of a node held Down arrived
    /// after its failover had ended (`failover.rs`, `on_calls_learnt`).
    pub failovers_restarted: u64,
    /// Calls handed to the node placement names, which had not moved them
    /// (`replica::handoff`).
    pub handoffs: u64,
    /// Move ticks that held a failover back: this replica saw no majority.
    pub failover_held_minority: u64,
    /// Move ticks that held a failover back until a majority is heard from
    /// since it started (`quorum.rs`): one or two per failover on the
    /// majority side, every tick on the minority side of a partition.
    pub failover_awaiting_quorum: u64,
    /// How long things took (`Latencies`).
    pub latency: Latencies,
}

impl ReplicaStats {
    pub fn record_sent(&mut self, kind: &'static str, bytes: usize) {
        let t = self.sent.entry(kind).or_default();
        t.messages += 1;
        t.bytes += bytes as u64;
    }

    pub fn record_received(&mut self, kind: &'static str, bytes: usize) {
        let t = self.received.entry(kind).or_default();
        t.messages += 1;
        t.bytes += bytes as u64;
    }

    pub fn bytes_sent(&self) -> u64 {
        self.sent.values().map(|t| t.bytes).sum()
    }

    pub fn messages_sent(&self) -> u64 {
        self.sent.values().map(|t| t.messages).sum()
    }
}

/// Upper bounds of the latency buckets, in microseconds: 0.5 ms to 30 s,
/// about 2.5x apart (a LAN round trip lands in the first buckets, a
/// catch-up after a partition in the last). Fixed, so that every replica
/// and every scrape agree on them; an observation past the last bound
/// counts in the implicit `+Inf` bucket only.
pub const LATENCY_BOUNDS_US: [u64; 15] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// The largest observation a histogram takes (a day): a peer's stamp from
/// the far past (or a clock set wrong) counts in `+Inf` without making the
/// sum meaningless.
pub const LATENCY_CAP_US: u64 = 86_400_000_000;

/// A fixed-bucket latency histogram: counts per bucket (not cumulative),
/// their sum and their number. Integers only, so that stats still compare
/// equal (the simulator's determinism checks rely on `Eq`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram {
    /// `buckets[i]`: observations in `(LATENCY_BOUNDS_US[i - 1],
    /// LATENCY_BOUNDS_US[i]]`; the last one: past every bound (`+Inf`).
    pub buckets: [u64; LATENCY_BOUNDS_US.len() + 1],
    /// Sum of the observations, in microseconds (each capped at
    /// `LATENCY_CAP_US`, so it cannot overflow for 200 000 years of them).
    pub sum_us: u64,
    pub count: u64,
}

impl Histogram {
    pub fn observe_us(&mut self, us: u64) {
        let us = us.min(LATENCY_CAP_US);
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[bucket] = self.buckets[bucket].saturating_add(1);
        self.sum_us = self.sum_us.saturating_add(us);
        self.count = self.count.saturating_add(1);
    }

    pub fn observe_ms(&mut self, ms: u64) {
        self.observe_us(ms.saturating_mul(1_000));
    }

    pub fn observe(&mut self, elapsed: Duration) {
        self.observe_us(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// The sum in seconds, as exported.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }

    /// `(upper bound in seconds, count in that bucket)`, the last bound
    /// `f64::MAX` (`+Inf` for prometheus-client's encoder).
    pub fn buckets_seconds(&self) -> Vec<(f64, u64)> {
        LATENCY_BOUNDS_US
            .iter()
            .map(|&bound| bound as f64 / 1e6)
            .chain([f64::MAX])
            .zip(self.buckets)
            .collect()
    }
}

/// Latencies of the write and replication paths (exported as
/// `chorus_*_seconds` histograms).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latencies {
    /// A local write (or import) taken by the driver to its ack, after the
    /// flush that made it durable. Measured by the driver (wall clock).
    pub write_ack: Histogram,
    /// One input that applied peers' changes (a message, an off-task
    /// apply coming back, the library's `apply_remote`): the apply and
    /// staging its writes, not the turn's shared flush. Measured by the
    /// driver.
    pub remote_apply: Histogram,
    /// A peer's change: from its writer's HLC stamp (physical part) to
    /// applied here, by this replica's `now` (whole milliseconds). Two
    /// clocks: skew between them shows here.
    pub replication_lag: Histogram,
    /// An anti-entropy round: started to finished (idle or synced; rounds
    /// that time out are counted, not timed), by `now`.
    pub sync_round: Histogram,
}

/// What only the driver can time (a wall clock): recorded into the
/// replica's stats, so that every view of them (`Engine::stats`,
/// `Engine::net_stats`, the daemon's `/metrics`) carries them. Like the
/// counters, they restart from zero when the driver reopens the replica.
impl super::Replica {
    /// A local write (or import) acknowledged `elapsed` after the driver
    /// took it, its flush included.
    pub fn record_write_ack(&mut self, elapsed: Duration) {
        self.stats.latency.write_ack.observe(elapsed);
    }

    /// One input that applied peers' changes took `elapsed`.
    pub fn record_remote_apply(&mut self, elapsed: Duration) {
        self.stats.latency.remote_apply.observe(elapsed);
    }
}

impl Latencies {
    /// Observes the replication lag of each applied change that carries a
    /// stamped value, from its newest stamp (`stamps_ms`, wall ms): its
    /// writer's clock when written. A stamp ahead of `now_ms` (clock skew)
    /// counts as no lag.
    pub fn observe_lag(&mut self, stamps_ms: &[u64], now_ms: u64) {
        for stamp in stamps_ms {
            self.replication_lag
                .observe_ms(now_ms.saturating_sub(*stamp));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;

    use super::*;
    use crate::ids::{NodeId, RoomId, TenantId};
    use crate::model::RoomConfig;
    use crate::replica::{Input, Output, Replica, ReplicaConfig};
    use crate::room::RoomOp;
    use crate::storage::{Kv, MemKv};

    fn create() -> RoomOp {
        RoomOp::Create {
            tenant: TenantId::parse("t").unwrap(),
            config: RoomConfig::default(),
        }
    }

    #[test]
    fn buckets_hold_their_upper_bound_and_overflow_to_inf() {
        let mut h = Histogram::default();
        h.observe_us(0);
        h.observe_us(500);
        h.observe_us(501);
        h.observe(Duration::from_secs(31));
        h.observe_us(u64::MAX);
        assert_eq!(h.count, 5);
        assert_eq!(h.buckets[0], 2, "0 and 500 us are in the first bucket");
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[LATENCY_BOUNDS_US.len()], 2, "+Inf");
        // Capped: one absurd value does not swamp (or overflow) the sum.
        assert_eq!(h.sum_us, 1_001 + 31_000_000 + LATENCY_CAP_US);
        let exported = h.buckets_seconds();
        assert_eq!(exported.len(), LATENCY_BOUNDS_US.len() + 1);
        assert_eq!(exported[0], (0.0005, 2));
        assert_eq!(exported[LATENCY_BOUNDS_US.len() - 1].0, 30.0);
        assert_eq!(exported[LATENCY_BOUNDS_US.len()], (f64::MAX, 2));
    }

    /// Two replicas on a virtual clock, every message delivered
    /// `HOP_MS` after it was sent.
    struct Pair {
        now_ms: u64,
        kvs: [Arc<MemKv>; 2],
        replicas: [Replica; 2],
        ids: [NodeId; 2],
        queue: VecDeque<(u64, usize, Vec<u8>)>,
    }

    const HOP_MS: u64 = 5;

    impl Pair {
        fn new() -> Self {
            let ids = [NodeId::parse("a").unwrap(), NodeId::parse("b").unwrap()];
            let kvs = [Arc::new(MemKv::new()), Arc::new(MemKv::new())];
            let open = |i: usize| {
                let mut config = ReplicaConfig::new(ids[i].clone(), 7);
                config.peers = vec![ids[1 - i].clone()];
                config.failure_detection = false;
                Replica::new(config, kvs[i].clone(), 0).unwrap()
            };
            let replicas = [open(0), open(1)];
            Self {
                now_ms: 0,
                kvs,
                replicas,
                ids,
                queue: VecDeque::new(),
            }
        }

        fn input(&mut self, i: usize, input: Input) {
            self.replicas[i].handle_input(self.now_ms, input);
            while let Some(output) = self.replicas[i].poll_output() {
                match output {
                    Output::Persist { batch, .. } => self.kvs[i].apply(batch).unwrap(),
                    Output::Send { bytes, .. } | Output::Broadcast { bytes } => {
                        self.queue.push_back((self.now_ms + HOP_MS, 1 - i, bytes));
                    }
                    _ => {}
                }
            }
        }

        /// Delivers everything in flight, and what it answers.
        fn deliver(&mut self) {
            while let Some((at, to, bytes)) = self.queue.pop_front() {
                self.now_ms = self.now_ms.max(at);
                let from = self.ids[1 - to].clone();
                self.input(to, Input::Message { from, bytes });
            }
        }
    }

    #[test]
    fn rounds_and_replication_lag_are_timed_by_now() {
        let mut pair = Pair::new();
        for i in 0..2 {
            let peer = pair.ids[1 - i].clone();
            pair.input(i, Input::PeerUp { peer });
        }
        pair.deliver();
        // Empty replicas: each round is a digest request and its answer.
        let round = pair.replicas[0].stats().latency.sync_round;
        assert_eq!(round.count, 1, "{round:?}");
        assert_eq!(round.sum_us, 2 * HOP_MS * 1_000);

        pair.now_ms = 1_000;
        // The push reaches b 250 ms after the write (a slow link).
        write_and_push(&mut pair, 1_250);
        pair.deliver();
        let b = pair.replicas[1].stats();
        assert!(b.changes_applied >= 1, "{b:?}");
        // The genesis change carries no stamp: one sample, the write's.
        let lag = b.latency.replication_lag;
        assert_eq!(lag.count, 1, "{lag:?}");
        assert_eq!(lag.sum_us, 250_000);
        assert_eq!(pair.replicas[0].stats().latency.replication_lag.count, 0);
    }

    /// The embedded engine's driver times writes and applies into the
    /// stats that `Engine::stats` (and the daemon's `/metrics`) read.
    #[test]
    fn the_embedded_engine_times_acks_and_applies() {
        use crate::{Engine, EngineConfig};
        let open = |name: &str| {
            Engine::in_memory(EngineConfig::new(NodeId::parse(name).unwrap())).unwrap()
        };
        let (a, b) = (open("a"), open("b"));
        let room = RoomId::parse("r1").unwrap();
        let op = create();
        a.write(&room, op).unwrap();
        let refused = create();
        assert!(a.write(&room, refused).is_err(), "the room exists");
        let latency = a.stats().unwrap().latency;
        assert_eq!(latency.write_ack.count, 1, "a refusal is no ack");
        assert_eq!(latency.remote_apply.count, 0);

        let changes = a.changes_since(&room, &[]).unwrap();
        b.apply_remote(&room, changes.clone()).unwrap();
        assert_eq!(b.stats().unwrap().latency.remote_apply.count, 1);
        // Nothing new: no apply to time.
        b.apply_remote(&room, changes).unwrap();
        assert_eq!(b.stats().unwrap().latency.remote_apply.count, 1);
        a.stop().unwrap();
        b.stop().unwrap();
    }

    /// a creates room r1 and pushes it; the push is due at `arrives_ms`.
    fn write_and_push(pair: &mut Pair, arrives_ms: u64) {
        let room = RoomId::parse("r1").unwrap();
        let op = create();
        pair.input(0, Input::LocalWrite { id: 1, room, op });
        // An idle replica's push is due at once, on its next tick (which
        // may start a round too).
        pair.input(0, Input::Tick);
        assert_eq!(pair.replicas[0].stats().sent["push"].messages, 1);
        for sent in &mut pair.queue {
            sent.0 = arrives_ms;
        }
    }

    #[test]
    fn a_stamp_from_the_future_is_no_lag() {
        let mut pair = Pair::new();
        pair.now_ms = 90_000;
        // b's clock is a minute behind the writer's.
        write_and_push(&mut pair, 30_000);
        pair.now_ms = 0;
        pair.deliver();
        let lag = pair.replicas[1].stats().latency.replication_lag;
        assert_eq!((lag.count, lag.sum_us, lag.buckets[0]), (1, 0, 1));
    }
}
