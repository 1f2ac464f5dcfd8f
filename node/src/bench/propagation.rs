//! `chorus bench propagation`: real daemons on loopback (libp2p, sled,
//! the engine's driver); writes go into one replica, and every other replica's
//! change stream timestamps their arrival.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use chorus_engine::model::RoomConfig;
use chorus_engine::{RoomId, RoomOp, TenantId};

use crate::demo::{start_cluster, wait_for};

/// How long the bench waits for the next write to reach a replica before
/// it counts the rest as missing (longer at a rate slower than one write
/// in half of it).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The idle window measured before the writes.
const IDLE_WINDOW: Duration = Duration::from_secs(3);

/// Bytes the whole cluster sent: what the replicas counted by message
/// kind, and what went on the wire (`chorus_wire_sent_bytes`).
#[derive(Debug, Clone, Copy, Default)]
struct Bytes {
    wire: u64,
    replica: u64,
    /// The replicas' pushes alone.
    pushed: u64,
}

impl Bytes {
    fn now(cluster: &[crate::daemon::Running]) -> anyhow::Result<Self> {
        let mut total = Bytes::default();
        for node in cluster {
            let stats = node
                .engine()
                .net_stats()?
                .context("a daemon without its network")?;
            total.wire += stats.wire_sent_bytes;
            total.replica += stats.replica.sent.values().map(|t| t.bytes).sum::<u64>();
            total.pushed += stats.replica.sent.get("push").map_or(0, |t| t.bytes);
            // `replica` includes `pushed`: `addressed` below relies on it.
        }
        Ok(total)
    }

    fn minus(&self, before: &Bytes) -> Bytes {
        Bytes {
            wire: self.wire.saturating_sub(before.wire),
            replica: self.replica.saturating_sub(before.replica),
            pushed: self.pushed.saturating_sub(before.pushed),
        }
    }
}

/// This process's CPU time and peak memory (`getrusage(2)`): the bench's
/// daemons all run in it.
struct Usage {
    cpu_s: f64,
    peak_rss_bytes: u64,
}

impl Usage {
    fn now() -> Self {
        // SAFETY: getrusage only writes the struct it is given, which is
        // plain data that all-zero bytes initialise.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        if rc != 0 {
            return Usage {
                cpu_s: 0.0,
                peak_rss_bytes: 0,
            };
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Usage {
            cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
            // Linux reports it in KiB.
            peak_rss_bytes: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
        }
    }
}

/// Idle bytes per daemon per second, and what the writes cost against
/// their minimum: every push once to every other replica. A replica
/// counts a push once however many peers it goes to; here it counts once
/// per peer, as the simulator does.
fn print_bytes(nodes: usize, idle: &Bytes, idle_secs: f64, busy: &Bytes) {
    let peers = nodes.saturating_sub(1) as u64;
    let addressed = |b: &Bytes| b.replica.saturating_sub(b.pushed) + b.pushed * peers;
    let per_node_s = |b: u64| b as f64 / nodes as f64 / idle_secs.max(f64::EPSILON);
    println!(
        "  idle: {:.0} bytes/daemon/s on the wire, {:.0} addressed by the replicas ({:.2}x)",
        per_node_s(idle.wire),
        per_node_s(addressed(idle)),
        idle.wire as f64 / addressed(idle).max(1) as f64
    );
    let minimal = (busy.pushed * peers).max(1) as f64;
    println!(
        "  writes: {} bytes of pushes to every peer once (the minimum); \
         on the wire {:.2}x of it, addressed by the replicas {:.2}x",
        busy.pushed * peers,
        busy.wire as f64 / minimal,
        addressed(busy) as f64 / minimal
    );
}

pub(super) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// `rate`: writes per second offered, begun on time whether or not the
/// earlier ones are acknowledged (0: as fast as acknowledged, `WINDOW` in
/// flight).
pub async fn propagation(nodes: usize, writes: usize, rate: f64) -> anyhow::Result<bool> {
    if nodes < 2 || writes == 0 {
        bail!("--nodes must be at least 2 and --writes at least 1");
    }
    let root = tempfile::tempdir().context("temp dir")?;
    let cluster = start_cluster(nodes, root.path()).await?;
    let clients: Vec<_> = cluster
        .iter()
        .map(crate::demo::client_of)
        .collect::<anyhow::Result<_>>()?;
    wait_connected(&clients, nodes).await?;
    // Gossip subscriptions arrive after the connections: let them settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // An idle window first: what the cluster sends with nothing to say.
    let idle_from = Bytes::now(&cluster)?;
    let idle_cpu = Usage::now();
    let idle_start = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle = Bytes::now(&cluster)?.minus(&idle_from);
    let idle_secs = idle_start.elapsed().as_secs_f64();
    let idle_cpu = Usage::now().cpu_s - idle_cpu.cpu_s;

    // A slow rate must not outwait the collectors between two writes.
    let patience = if rate > 0.0 {
        DRAIN_TIMEOUT.max(Duration::from_secs_f64(2.0 / rate))
    } else {
        DRAIN_TIMEOUT
    };
    let collectors: Vec<_> = cluster[1..]
        .iter()
        .map(|node| tokio::spawn(arrivals(node.engine().subscribe(), writes, patience)))
        .collect();
    let busy_from = Bytes::now(&cluster)?;
    let busy_cpu = Usage::now();
    let busy_start = Instant::now();
    let written = write_rooms(cluster[0].engine().clone(), writes, rate).await?;
    let mut seen_by = Vec::new();
    for collector in collectors {
        seen_by.push(collector.await.context("collector")?);
    }
    let busy = Bytes::now(&cluster)?.minus(&busy_from);
    let busy_secs = busy_start.elapsed().as_secs_f64();
    let busy_cpu = Usage::now().cpu_s - busy_cpu.cpu_s;
    let delays = Delays::measure(&written.sent, &seen_by);

    let acked = writes as f64 / written.elapsed.as_secs_f64();
    let offered = if rate > 0.0 {
        format!("offered at {rate:.0}/s")
    } else {
        format!("offered as fast as acknowledged, {WINDOW} in flight")
    };
    println!(
        "propagation: {nodes} daemons on loopback, {writes} writes into one replica, {offered}"
    );
    println!(
        "  writes acknowledged: {acked:.0}/s (durable: each flushed to sled before its ack); \
         acknowledgement p50 {:?}  p99 {:?}{}",
        percentile(&written.acks, 50.0),
        percentile(&written.acks, 99.0),
        if rate > 0.0 {
            format!("; the writer began a write at most {:?} late", written.late)
        } else {
            String::new()
        }
    );
    delays.print(nodes, patience);
    print_bytes(nodes, &idle, idle_secs, &busy);
    let share = |cpu: f64, secs: f64| 100.0 * cpu / secs.max(f64::EPSILON) / nodes as f64;
    println!(
        "  cpu per daemon: {:.1}% of a core idle, {:.1}% while writing; memory: {:.0} MiB per daemon \
         (the daemons share this process: its CPU time and peak RSS, divided by {nodes})",
        share(idle_cpu, idle_secs),
        share(busy_cpu, busy_secs),
        Usage::now().peak_rss_bytes as f64 / nodes as f64 / (1024.0 * 1024.0)
    );
    for node in cluster {
        node.stop().await?;
    }
    Ok(delays.missing == 0)
}

pub(super) async fn wait_connected(
    clients: &[crate::client::Client],
    nodes: usize,
) -> anyhow::Result<()> {
    wait_for("every replica connected to every other", || async {
        for c in clients {
            let view: serde_json::Value = c.get("/v1/cluster").await?;
            let up = view["peers"]
                .as_array()
                .map_or(0, |p| p.iter().filter(|p| p["connected"] == true).count());
            if up < nodes - 1 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    Ok(())
}

/// When each room first showed up in `live`, until `writes` rooms did or
/// the drain timeout passed.
async fn arrivals(
    mut live: chorus_engine::Subscription,
    writes: usize,
    patience: Duration,
) -> HashMap<String, Instant> {
    let mut seen: HashMap<String, Instant> = HashMap::new();
    // Until `patience` passes with no new room: a run longer than it
    // (5 000 writes at 100/s) must not stop counting halfway.
    let mut deadline = tokio::time::Instant::now() + patience;
    while seen.len() < writes {
        match tokio::time::timeout_at(deadline, live.recv()).await {
            Ok(Ok(change)) => {
                let at = Instant::now();
                if let std::collections::hash_map::Entry::Vacant(new) =
                    seen.entry(change.room.to_string())
                {
                    new.insert(at);
                    deadline = tokio::time::Instant::now() + patience;
                }
            }
            Ok(Err(chorus_engine::RecvError::Lagged { .. })) => continue,
            _ => break,
        }
    }
    seen
}

/// Writes the writer keeps in flight when no rate is offered.
const WINDOW: usize = 32;

/// What the writer saw: each room's write time, each write's wait for its
/// acknowledgement (sorted), and the time until the last acknowledgement.
struct Written {
    sent: Vec<(String, Instant)>,
    acks: Vec<Duration>,
    elapsed: Duration,
    /// The most a write began after its due time.
    late: Duration,
}

/// Creates `writes` rooms on `writer`. At a `rate`, each write begins at
/// its due time whether or not earlier ones are acknowledged (an open
/// loop, as the many independent signalling events of a media node
/// arrive); at rate 0, as fast as acknowledged with `WINDOW` in flight.
/// A write counts from when it begins to when it is durable; how late
/// the writer began any write is returned beside.
async fn write_rooms(
    writer: std::sync::Arc<chorus_engine::Engine>,
    writes: usize,
    rate: f64,
) -> anyhow::Result<Written> {
    let tenant = TenantId::parse("bench").context("tenant")?;
    let mut sent = Vec::with_capacity(writes);
    let mut in_flight = std::collections::VecDeque::new();
    let mut acks = Vec::with_capacity(writes);
    let mut late = Duration::ZERO;
    let start = Instant::now();
    for i in 0..writes {
        // A write counts from when it begins. Should the writer fall
        // behind its schedule (the driver's queue full), that shows as its
        // lateness, printed beside the latencies (the timer's own
        // millisecond grain shows there too, not in them).
        let at = if rate > 0.0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
            let at = Instant::now();
            late = late.max(at.saturating_duration_since(due));
            at
        } else {
            if in_flight.len() >= WINDOW {
                if let Some(oldest) = in_flight.pop_front() {
                    acks.push(acknowledged(oldest).await?);
                }
            }
            Instant::now()
        };
        let room = format!("p-{i}");
        let id = RoomId::parse(room.clone()).context("room id")?;
        let op = RoomOp::Create {
            tenant: tenant.clone(),
            config: RoomConfig::default(),
        };
        let engine = writer.clone();
        // `begin_write` returns once the driver has the write (it blocks
        // only while the driver's queue is full): off the async threads.
        let pending = tokio::task::spawn_blocking(move || engine.begin_write(&id, op))
            .await
            .context("write")?
            .with_context(|| format!("could not begin write {i}"))?;
        let answer = tokio::spawn(async move { pending.await.map(|_| at.elapsed()) });
        in_flight.push_back((i, answer));
        sent.push((room, at));
    }
    for write in in_flight {
        acks.push(acknowledged(write).await?);
    }
    let elapsed = start.elapsed();
    acks.sort();
    Ok(Written {
        sent,
        acks,
        elapsed,
        late,
    })
}

/// Waits for one write's acknowledgement: how long it took.
async fn acknowledged(
    (i, answer): (
        usize,
        tokio::task::JoinHandle<chorus_engine::Result<Duration>>,
    ),
) -> anyhow::Result<Duration> {
    answer
        .await
        .context("write")?
        .with_context(|| format!("write {i} was refused"))
}

/// Write-to-arrival delays, sorted.
struct Delays {
    /// Every delivery to every replica.
    each: Vec<Duration>,
    /// Per write, until the last replica had it (complete writes only).
    all: Vec<Duration>,
    /// Deliveries that never came.
    missing: usize,
}

impl Delays {
    fn measure(sent: &[(String, Instant)], seen_by: &[HashMap<String, Instant>]) -> Self {
        let mut d = Delays {
            each: Vec::new(),
            all: Vec::new(),
            missing: 0,
        };
        for (room, at) in sent {
            let mut worst = Duration::ZERO;
            let mut complete = true;
            for seen in seen_by {
                match seen.get(room) {
                    Some(arrived) => {
                        let delay = arrived.saturating_duration_since(*at);
                        d.each.push(delay);
                        worst = worst.max(delay);
                    }
                    None => {
                        d.missing += 1;
                        complete = false;
                    }
                }
            }
            if complete {
                d.all.push(worst);
            }
        }
        d.each.sort();
        d.all.sort();
        d
    }

    fn print(&self, nodes: usize, patience: Duration) {
        println!(
            "  write -> applied on a replica:      p50 {:?}  p99 {:?}  max {:?}  ({} deliveries)",
            percentile(&self.each, 50.0),
            percentile(&self.each, 99.0),
            self.each.last().copied().unwrap_or_default(),
            self.each.len()
        );
        println!(
            "  write -> applied on all {} others:  p50 {:?}  p99 {:?}",
            nodes - 1,
            percentile(&self.all, 50.0),
            percentile(&self.all, 99.0)
        );
        if self.missing > 0 {
            println!(
                "  MISSING: {} deliveries never arrived (nothing more came for {patience:?})",
                self.missing
            );
        }
    }
}
