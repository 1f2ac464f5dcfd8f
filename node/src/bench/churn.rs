//! `chorus bench churn`: one standing room on three daemons on loopback,
//! N join+leave pairs through the HTTP API, written on each daemon in
//! turn, with a short session retention so that pruning and history
//! compaction happen during the run. What a user of the daemon sees of a
//! room that lives for months: the per-pair latency at the start and at
//! the end of the run, the longest pause, the room JSON and export once
//! the retention has passed, each replica's files, that the three
//! converge, and the time a restarted daemon takes to read the room again.
//! The library bench (`cargo bench -p chorus-benches --bench churn`)
//! measures the room's own stored bytes and hot memory against their bound.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chorus_engine::replica::stats::Histogram;
use serde_json::{json, Value};

use super::propagation::{percentile, wait_connected};
use crate::client::Client;
use crate::daemon::{self, Running};
use crate::demo::{client_of, local_config, wait_for};

const ROOM: &str = "standing";

/// Pairs in each window compared (or a third of the run, if shorter).
const WINDOW: usize = 1_000;

/// Pairs between two samples of a replica's history length (or a tenth of
/// the run, if shorter).
const HISTORY_EVERY: usize = 10;

/// A pair at least this long is listed, with its join and leave apart.
const SLOW: Duration = Duration::from_millis(250);

fn config(
    i: usize,
    root: &Path,
    peers: Vec<libp2p::Multiaddr>,
    retention_ms: u64,
) -> crate::config::Config {
    let mut config = local_config(
        &format!("replica-{i}"),
        &root.join(format!("replica-{i}")),
        peers,
    );
    config.replica.session_retention_ms = retention_ms;
    config
}

pub async fn churn(cycles: usize, retention_ms: u64) -> anyhow::Result<bool> {
    if cycles < 3 {
        bail!("--cycles must be at least 3");
    }
    let root = tempfile::tempdir().context("temp dir")?;
    let mut cluster: Vec<Running> = Vec::new();
    for i in 0..3 {
        let peers = cluster.iter().filter_map(Running::dial_addr).collect();
        cluster.push(daemon::start(config(i, root.path(), peers, retention_ms)).await?);
    }
    let clients: Vec<Client> = cluster
        .iter()
        .map(client_of)
        .collect::<anyhow::Result<_>>()?;
    wait_connected(&clients, cluster.len()).await?;
    let room_path = format!("/v1/rooms/{ROOM}");
    let _: Value = clients[0]
        .send(reqwest::Method::PUT, &room_path, &json!({}))
        .await
        .context("create the room")?;
    // One participant stays for the whole run: the room is never empty.
    join(&clients[0], "host").await?;
    wait_for("the room on every replica", || async {
        for c in &clients {
            if c.get_opt::<Value>(&room_path).await?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;

    let window = WINDOW.min(cycles / 3);
    // The replicas' own timings at the edges of both windows: whether a
    // slower pair is the engine's (its write acks, its applies of peers'
    // changes) or the way to it.
    let marks = [window, 2 * window, cycles - window];
    let mut engine_at = Vec::with_capacity(marks.len() + 1);
    // A tenth of the run at a time: how the latencies move along it.
    let tenth = (cycles / 10).max(1);
    let mut trend_at = Vec::with_capacity(11);
    // Replica 0's history length (changes since its base), sampled.
    let mut history: Vec<Vec<u64>> = Vec::with_capacity(11);
    let id = chorus_engine::RoomId::parse(ROOM).context("room id")?;
    let mut pairs = Vec::with_capacity(cycles);
    let mut slow = Vec::new();
    let start = Instant::now();
    for i in 0..cycles {
        if marks.contains(&i) {
            engine_at.push(latencies(&cluster)?);
        }
        if i % tenth == 0 {
            trend_at.push((i, latencies(&cluster)?));
            history.push(Vec::new());
        }
        if i % HISTORY_EVERY.min(tenth) == 0 {
            let room = id.clone();
            let len = cluster[0]
                .engine()
                .inspect(move |r, _| r.room_history_len(&room))??;
            if let Some(tenth) = history.last_mut() {
                tenth.push(len.unwrap_or(0));
            }
        }
        let client = &clients[i % clients.len()];
        let session = format!("s-{i}");
        let at = Instant::now();
        join(client, &session).await?;
        let joined = at.elapsed();
        let _: Value = client
            .delete(&format!("{room_path}/participants/{session}"))
            .await
            .with_context(|| format!("leave {session}"))?;
        let pair = at.elapsed();
        pairs.push(pair);
        if pair >= SLOW {
            slow.push((i, joined, pair - joined));
        }
    }
    let elapsed = start.elapsed();
    engine_at.push(latencies(&cluster)?);
    trend_at.push((cycles, latencies(&cluster)?));
    let early = sorted(&pairs[window..2 * window]);
    let late = sorted(&pairs[cycles - window..]);
    println!(
        "churn: 3 daemons on loopback, one room, {cycles} join+leave pairs through the HTTP API \
         (each pair on the next daemon), session retention {retention_ms} ms; {:.1} s, {:.0} pairs/s",
        elapsed.as_secs_f64(),
        cycles as f64 / elapsed.as_secs_f64()
    );
    for (name, p) in [("p50", 50.0), ("p99", 99.0)] {
        let (a, b) = (percentile(&early, p), percentile(&late, p));
        println!(
            "  {name} of a pair: {:.3} ms over pairs {window}-{} (the first {window} warm up), \
             {:.3} ms over the last {window} (ratio {:.2})",
            ms(a),
            2 * window,
            ms(b),
            ms(b) / ms(a).max(1e-9)
        );
    }
    if let [a, b, c, d] = engine_at.as_slice() {
        for (name, pick) in [("a write's ack", 0usize), ("an apply of peers' changes", 1)] {
            let (early, late) = (mean_between(a, b, pick), mean_between(c, d, pick));
            println!(
                "  mean of {name} in the replicas: {:.3} ms, then {:.3} ms (ratio {:.2})",
                ms(early),
                ms(late),
                ms(late) / ms(early).max(1e-9)
            );
        }
    }
    println!(
        "  along the run (pairs: p50 of a pair / mean write ack / mean apply, in ms; mean \
         changes in replica 0's history since its base)"
    );
    for (readings, lens) in trend_at.windows(2).zip(&history) {
        let [(from, a), (to, b)] = readings else {
            continue;
        };
        let history = match lens.len() {
            0 => "-".to_owned(),
            n => format!("{:.0}", lens.iter().sum::<u64>() as f64 / n as f64),
        };
        println!(
            "    {from}-{to}: {:.3} / {:.3} / {:.3}; {history}",
            ms(percentile(&sorted(&pairs[*from..*to]), 50.0)),
            ms(mean_between(a, b, 0)),
            ms(mean_between(a, b, 1)),
        );
    }
    let (longest_at, longest) = pairs
        .iter()
        .copied()
        .enumerate()
        .max_by_key(|(_, d)| *d)
        .unwrap_or_default();
    println!("  longest pair {:.1} ms (pair {longest_at})", ms(longest));
    slow.sort_by_key(|(_, join, leave)| std::cmp::Reverse(*join + *leave));
    println!(
        "  {} pairs took {} ms or more; the longest (pair: join + leave, on daemon pair % 3): {}",
        slow.len(),
        SLOW.as_millis(),
        slow.iter()
            .take(5)
            .map(|(i, j, l)| format!("{i}: {:.0} + {:.0} ms", ms(*j), ms(*l)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Past the retention, the replicas hold the same history (heads and
    // generation) and read the room alike.
    tokio::time::sleep(Duration::from_millis(retention_ms + 500)).await;
    let settle = wait_for(
        "the three replicas hold and read the room alike",
        || async {
            let mut held = Vec::new();
            for (c, node) in clients.iter().zip(&cluster) {
                let room = id.clone();
                let generation = node
                    .engine()
                    .inspect(move |r, _| r.room_generation(&room))??;
                held.push((
                    c.get::<Value>(&room_path).await?,
                    node.engine().heads(&id)?,
                    generation,
                ));
            }
            Ok(held.iter().all(|h| *h == held[0]))
        },
    )
    .await;
    let converged = settle.is_ok();
    let reading: Value = clients[0].get(&room_path).await?;
    let sessions = reading["sessions"].as_object().map_or(0, |s| s.len());
    println!(
        "  room JSON {} B listing {sessions} sessions, counters {}; {}",
        reading.to_string().len(),
        reading["counters"],
        match &settle {
            Ok(waited) => format!(
                "the replicas held the same heads and read it alike {:.0} ms after the wait",
                ms(*waited)
            ),
            Err(err) => format!("NOT CONVERGED: {err}"),
        }
    );
    for (i, node) in cluster.iter().enumerate() {
        let stats = node.engine().stats()?;
        let room = id.clone();
        let generation = node
            .engine()
            .inspect(move |r, _| r.room_generation(&room))??;
        let export = node.engine().export_room(&id)?.len();
        println!(
            "  replica {i}: {} compactions, generation {}, export {export} B, {} B of files",
            stats.compactions,
            generation.unwrap_or(0),
            dir_bytes(&root.path().join(format!("replica-{i}")))
        );
        println!(
            "    compactions redone {} topped up {} on a peer's base {} failed {} held-dropped {}; applies off the task {} redone {} \
             failed {} held-dropped {}; sync rounds {} timed out {}, since {} full {}; pending \
             dropped {}, superseded {}; missing changes asked for {} spared {}",
            stats.compactions_redone,
            stats.compaction_top_ups,
            stats.compactions_on_peer_base,
            stats.compactions_failed,
            stats.compaction_held_dropped,
            stats.applies_off_task,
            stats.applies_redone,
            stats.applies_failed,
            stats.apply_held_dropped,
            stats.rounds_started,
            stats.rounds_timed_out,
            stats.sync_since,
            stats.sync_full,
            stats.pending_dropped,
            stats.changes_superseded,
            stats.missing_pulls,
            stats.missing_pulls_spared,
        );
    }

    // A restarted daemon reads the room from its store.
    let mut cluster = cluster.into_iter();
    let first = cluster.next().context("replica 0")?;
    first.stop().await?;
    let rest: Vec<Running> = cluster.collect();
    let peers = rest.iter().filter_map(Running::dial_addr).collect();
    let reopen = Instant::now();
    let first = daemon::start(config(0, root.path(), peers, retention_ms)).await?;
    let reread: Option<Value> = client_of(&first)?.get_opt(&room_path).await?;
    println!(
        "  replica 0 restarted and read the room in {:.0} ms ({})",
        ms(reopen.elapsed()),
        if reread.is_some() { "found" } else { "MISSING" }
    );
    first.stop().await?;
    for node in rest {
        node.stop().await?;
    }
    Ok(converged && reread.is_some())
}

/// Per replica: its write-ack and remote-apply histograms.
fn latencies(cluster: &[Running]) -> anyhow::Result<Vec<[Histogram; 2]>> {
    cluster
        .iter()
        .map(|node| {
            let latency = node.engine().stats()?.latency;
            Ok([latency.write_ack, latency.remote_apply])
        })
        .collect()
}

/// The mean of histogram `pick` over the observations made between two
/// readings of every replica.
fn mean_between(from: &[[Histogram; 2]], to: &[[Histogram; 2]], pick: usize) -> Duration {
    let (sum_us, count) = from.iter().zip(to).fold((0u64, 0u64), |(s, n), (a, b)| {
        (
            s + b[pick].sum_us.saturating_sub(a[pick].sum_us),
            n + b[pick].count.saturating_sub(a[pick].count),
        )
    });
    Duration::from_micros(sum_us / count.max(1))
}

async fn join(client: &Client, session: &str) -> anyhow::Result<()> {
    let body = json!({
        "session": session,
        "user": format!("user-{session}"),
        "role": "speaker",
        "owner": "media-1",
        "region": "eu-west",
    });
    let _: Value = client
        .send(
            reqwest::Method::POST,
            &format!("/v1/rooms/{ROOM}/participants"),
            &body,
        )
        .await
        .with_context(|| format!("join {session}"))?;
    Ok(())
}

fn sorted(pairs: &[Duration]) -> Vec<Duration> {
    let mut v = pairs.to_vec();
    v.sort();
    v
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
