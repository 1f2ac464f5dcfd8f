//! The simulated network. Gossip (pushes) travels as datagrams that can be
//! lost, duplicated, reordered and delayed; sync messages travel on ordered
//! streams per direction, which a fault can reset (the message and the
//! round it belonged to are lost). Partitions block directed pairs.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Link behaviour. Defaults: a healthy LAN.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Uniform one-way latency range, ms.
    #[serde(default = "default_latency")]
    pub latency_ms: [u64; 2],
    /// Probability a datagram is lost.
    #[serde(default)]
    pub loss: f64,
    /// Probability a stream message is lost with its stream (a reset: the
    /// sync round it belonged to times out and a later round retries).
    #[serde(default)]
    pub stream_reset: f64,
    /// Probability a datagram is delivered twice.
    #[serde(default)]
    pub duplicate: f64,
    /// Datagrams may overtake each other (streams stay in order).
    #[serde(default)]
    pub reorder: bool,
    /// One-way latency between two regions (`latency_ms` above applies
    /// within a region, and between regions no entry names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub between: Vec<RegionLatency>,
}

/// As derived, but without `between` when it is empty: a network event's
/// trace line prints this, and traces of scenarios without regional
/// latencies stay as they were.
impl std::fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("NetConfig");
        out.field("latency_ms", &self.latency_ms)
            .field("loss", &self.loss)
            .field("stream_reset", &self.stream_reset)
            .field("duplicate", &self.duplicate)
            .field("reorder", &self.reorder);
        if !self.between.is_empty() {
            out.field("between", &self.between);
        }
        out.finish()
    }
}

/// `[[network.between]] regions = ["eu", "us"], latency_ms = [35, 45]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionLatency {
    pub regions: [String; 2],
    pub latency_ms: [u64; 2],
}

/// The highest latency a scenario may set.
pub const LATENCY_MS_MAX: u64 = 60_000;

fn default_latency() -> [u64; 2] {
    [1, 5]
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency_ms: default_latency(),
            loss: 0.0,
            stream_reset: 0.0,
            duplicate: 0.0,
            reorder: false,
            between: Vec::new(),
        }
    }
}

impl NetConfig {
    pub fn validate(&self) -> Result<(), String> {
        let probabilities = [
            ("network.loss", self.loss),
            ("network.duplicate", self.duplicate),
            ("network.stream_reset", self.stream_reset),
        ];
        for (key, p) in probabilities {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{key} = {p} is not a probability in [0, 1]"));
            }
        }
        latency_range("network.latency_ms", self.latency_ms)?;
        for (i, b) in self.between.iter().enumerate() {
            latency_range(&format!("network.between[{i}].latency_ms"), b.latency_ms)?;
            if b.regions[0] == b.regions[1] {
                return Err(format!(
                    "network.between[{i}].regions = {:?}: one region twice (within a region, network.latency_ms applies)",
                    b.regions
                ));
            }
        }
        let mut pairs = BTreeSet::new();
        for (i, b) in self.between.iter().enumerate() {
            let mut pair = b.regions.clone();
            pair.sort();
            if !pairs.insert(pair) {
                return Err(format!(
                    "network.between[{i}].regions = {:?}: that pair is listed twice",
                    b.regions
                ));
            }
        }
        Ok(())
    }
}

fn latency_range(key: &str, [lo, hi]: [u64; 2]) -> Result<(), String> {
    if hi > LATENCY_MS_MAX {
        return Err(format!(
            "{key} = [{lo}, {hi}]: latencies above {LATENCY_MS_MAX} ms are not a network"
        ));
    }
    if lo > hi {
        return Err(format!(
            "{key} = [{lo}, {hi}]: the low bound exceeds the high"
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Channel {
    Gossip,
    Stream,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Delivery {
    pub from: usize,
    pub to: usize,
    pub channel: Channel,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct NetStats {
    /// Deliveries attempted (a broadcast counts once per receiver).
    pub sent: u64,
    /// Lost to loss, resets, cuts, or a crashed receiver.
    pub dropped: u64,
    pub duplicated: u64,
    pub bytes: u64,
    /// The most messages ever in flight at once.
    pub max_in_flight: u64,
}

pub struct Network {
    pub config: NetConfig,
    queue: BinaryHeap<Reverse<(u64, u64, Delivery)>>,
    seq: u64,
    /// Directed pairs (from, to) that cannot communicate.
    blocked: BTreeSet<(usize, usize)>,
    /// Per direction and channel, when the last in-order message is due: a
    /// stream (or gossip without reordering) never delivers out of order.
    tails: std::collections::BTreeMap<(usize, usize, Channel), u64>,
    /// Each node's region, as an index into the names `set_regions` was
    /// given; empty: every node in one region.
    region_of: Vec<usize>,
    region_names: Vec<String>,
    pub stats: NetStats,
}

impl Network {
    pub fn new(config: NetConfig) -> Self {
        Self {
            config,
            queue: BinaryHeap::new(),
            seq: 0,
            blocked: BTreeSet::new(),
            tails: Default::default(),
            region_of: Vec::new(),
            region_names: Vec::new(),
            stats: NetStats::default(),
        }
    }

    /// Node `i` is in `regions[i]` (for `between` latencies).
    pub fn set_regions(&mut self, regions: &[String]) {
        self.region_names.clear();
        self.region_of = regions
            .iter()
            .map(|r| match self.region_names.iter().position(|n| n == r) {
                Some(at) => at,
                None => {
                    self.region_names.push(r.clone());
                    self.region_names.len() - 1
                }
            })
            .collect();
    }

    /// The latency range from `from` to `to`: their regions' `between`
    /// entry, or `latency_ms`.
    fn latency_ms(&self, from: usize, to: usize) -> [u64; 2] {
        let (Some(&a), Some(&b)) = (self.region_of.get(from), self.region_of.get(to)) else {
            return self.config.latency_ms;
        };
        if a == b {
            return self.config.latency_ms;
        }
        let (a, b) = (&self.region_names[a], &self.region_names[b]);
        self.config
            .between
            .iter()
            .find(|l| {
                (&l.regions[0] == a && &l.regions[1] == b)
                    || (&l.regions[0] == b && &l.regions[1] == a)
            })
            .map_or(self.config.latency_ms, |l| l.latency_ms)
    }

    pub fn is_blocked(&self, from: usize, to: usize) -> bool {
        self.blocked.contains(&(from, to))
    }

    pub fn block(&mut self, from: usize, to: usize) {
        self.blocked.insert((from, to));
    }

    pub fn unblock(&mut self, from: usize, to: usize) {
        self.blocked.remove(&(from, to));
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Every blocked directed pair, in order.
    pub fn blocked(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.blocked.iter().copied()
    }

    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Resets every sync stream: whatever is in flight on one is lost.
    pub fn reset_streams(&mut self) {
        let before = self.queue.len();
        self.queue
            .retain(|Reverse((_, _, d))| d.channel != Channel::Stream);
        self.stats.dropped += (before - self.queue.len()) as u64;
    }

    pub fn blocked_pairs(&self) -> usize {
        self.blocked.len()
    }

    /// Queues a message, applying loss, duplication and latency.
    pub fn send(&mut self, now: u64, delivery: Delivery, rng: &mut Rng) {
        self.stats.sent += 1;
        self.stats.bytes += delivery.bytes.len() as u64;
        let loss = match delivery.channel {
            Channel::Gossip => self.config.loss,
            Channel::Stream => self.config.stream_reset,
        };
        if self.is_blocked(delivery.from, delivery.to) || rng.chance(loss) {
            self.stats.dropped += 1;
            return;
        }
        let [lo, hi] = self.latency_ms(delivery.from, delivery.to);
        let mut at = now + rng.range(lo, hi);
        let in_order = delivery.channel == Channel::Stream || !self.config.reorder;
        if in_order {
            let tail = self
                .tails
                .entry((delivery.from, delivery.to, delivery.channel))
                .or_insert(0);
            at = at.max(*tail);
            *tail = at;
        }
        match delivery.channel {
            Channel::Stream => {}
            Channel::Gossip => {
                if rng.chance(self.config.duplicate) {
                    self.stats.duplicated += 1;
                    let again = at + rng.range(lo, hi);
                    self.push(again, delivery.clone());
                }
            }
        }
        self.push(at, delivery);
    }

    fn push(&mut self, at: u64, delivery: Delivery) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, delivery)));
        self.stats.max_in_flight = self.stats.max_in_flight.max(self.queue.len() as u64);
    }

    pub fn next_due(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next message due at or before `now`, if its link is still open.
    pub fn pop_due(&mut self, now: u64) -> Option<Option<Delivery>> {
        let Reverse((at, _, _)) = self.queue.peek()?;
        if *at > now {
            return None;
        }
        let Reverse((_, _, delivery)) = self.queue.pop()?;
        if self.is_blocked(delivery.from, delivery.to) {
            self.stats.dropped += 1;
            return Some(None);
        }
        Some(Some(delivery))
    }

    /// Drops everything in flight to or from `node` (it crashed).
    pub fn drop_node(&mut self, node: usize) {
        let before = self.queue.len();
        self.queue
            .retain(|Reverse((_, _, d))| d.from != node && d.to != node);
        self.stats.dropped += (before - self.queue.len()) as u64;
    }
}
