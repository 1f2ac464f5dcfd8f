//! `chorus bench propagation`: real daemons on loopback (libp2p, sled,
//! the engine's driver); writes go into one replica, and every other replica's
//! change stream timestamps their arrival.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use chorus_engine::model::RoomConfig;
use chorus_engine::{RoomId, RoomOp, TenantId};

use crate::demo::{start_cluster, wait_for};

/// How long the bench waits for the last write to reach every replica.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// `rate`: writes per second offered (0: as fast as acknowledgements allow).
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
    wait_for("every replica connected to every other", || async {
        for c in &clients {
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
    // Gossip meshes form on heartbeats: let one pass before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut collectors = Vec::new();
    for node in &cluster[1..] {
        let mut live = node.engine().subscribe();
        collectors.push(tokio::spawn(async move {
            let mut seen: HashMap<String, Instant> = HashMap::new();
            let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
            while seen.len() < writes {
                match tokio::time::timeout_at(deadline, live.recv()).await {
                    Ok(Ok(change)) => {
                        let at = Instant::now();
                        seen.entry(change.room.to_string()).or_insert(at);
                    }
                    Ok(Err(chorus_engine::RecvError::Lagged { .. })) => continue,
                    _ => break,
                }
            }
            seen
        }));
    }

    let writer = cluster[0].engine().clone();
    let tenant = TenantId::parse("bench").context("tenant")?;
    let mut sent: Vec<(String, Instant)> = Vec::with_capacity(writes);
    let start = Instant::now();
    for i in 0..writes {
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let room = format!("p-{i}");
        let at = Instant::now();
        let id = RoomId::parse(room.clone()).context("room id")?;
        let op = RoomOp::Create {
            tenant: tenant.clone(),
            config: RoomConfig::default(),
        };
        let engine = writer.clone();
        let result = tokio::task::spawn_blocking(move || engine.write(&id, op))
            .await
            .context("write")?;
        match result {
            Ok(_) => sent.push((room, at)),
            Err(_) => bail!("write {i} was refused"),
        }
    }
    let write_time = start.elapsed();

    let mut latencies = Vec::new();
    let mut all_replicas = Vec::new();
    let mut missing = 0;
    let mut seen_by: Vec<HashMap<String, Instant>> = Vec::new();
    for collector in collectors {
        seen_by.push(collector.await.context("collector")?);
    }
    for (room, at) in &sent {
        let mut worst = Duration::ZERO;
        let mut complete = true;
        for seen in &seen_by {
            match seen.get(room) {
                Some(arrived) => {
                    let latency = arrived.saturating_duration_since(*at);
                    latencies.push(latency);
                    worst = worst.max(latency);
                }
                None => {
                    missing += 1;
                    complete = false;
                }
            }
        }
        if complete {
            all_replicas.push(worst);
        }
    }
    latencies.sort();
    all_replicas.sort();
    let rate = writes as f64 / write_time.as_secs_f64();
    let offered = if rate > 0.0 {
        format!("offered at {rate:.0}/s")
    } else {
        "offered as fast as acknowledged".to_string()
    };
    println!(
        "propagation: {nodes} daemons on loopback, {writes} writes into one replica, {offered}"
    );
    println!("  writes acknowledged: {rate:.0}/s (durable: each flushed to sled before its ack)");
    println!(
        "  write -> applied on a replica:      p50 {:?}  p99 {:?}  max {:?}  ({} deliveries)",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or_default(),
        latencies.len()
    );
    println!(
        "  write -> applied on all {} others:  p50 {:?}  p99 {:?}",
        nodes - 1,
        percentile(&all_replicas, 50.0),
        percentile(&all_replicas, 99.0)
    );
    if missing > 0 {
        println!("  MISSING: {missing} deliveries never arrived within {DRAIN_TIMEOUT:?}");
    }
    for node in cluster {
        node.stop().await?;
    }
    Ok(missing == 0)
}
