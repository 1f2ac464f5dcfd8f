//! `chorus bench daemons`: N `chorus run` processes on loopback, each with
//! its own sled store, libp2p and HTTP API, driven through the API only.
//! Membership, an idle window, writes on every daemon, a SIGKILL, a drill
//! that cuts a quarter of the cluster off and heals it. Each step checks
//! what the product promises (every acknowledged write on every daemon,
//! the killed node's calls re-homed, the majority re-homing the cut-off
//! side's calls while the minority moves none) and is timed; CPU and
//! memory are measured per daemon process.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::process::{Daemon, Usage, Window};
use crate::client::Client;
use crate::limits::{BENCH_DAEMONS_MAX, BENCH_RATE_MAX, BENCH_WRITES_MAX};

/// The longest any step may take before the bench calls it a failure.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a step's condition is polled (each poll reads every room on
/// every daemon: more often would load the machine it measures).
const POLL: Duration = Duration::from_millis(250);
/// The idle window, measured once every daemon grades every other healthy.
const IDLE_WINDOW: Duration = Duration::from_secs(5);
/// The failover bound of the three-daemon test (`node/tests/failover.rs`):
/// the killed node's calls owned by survivors within it.
pub const FAILOVER_WALL_MAX: Duration = Duration::from_secs(5);
/// Joins written on each side of the drill's cut, while it holds.
const JOINS_PER_SIDE_CUT: usize = 20;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    /// Joins per second offered through the daemons' APIs, in turn.
    pub rate: f64,
    /// How long the writes go on.
    pub busy: Duration,
}

/// What was measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub nodes: usize,
    pub started: Duration,
    pub membership: Duration,
    pub idle: Window,
    pub writes: usize,
    pub write_secs: f64,
    pub ack_p50: Duration,
    pub ack_p99: Duration,
    pub busy: Window,
    /// From the last acknowledgement to every daemon holding every write.
    pub converged: Duration,
    pub killed_calls: usize,
    pub rehomed: Duration,
    pub cut_off: usize,
    pub cut_calls: usize,
    /// From the cut to the majority owning every call of the cut-off side.
    pub majority_rehomed: Duration,
    /// From the heal to every survivor holding every write.
    pub healed: Duration,
}

/// Runs the bench with `exe` as the `chorus` binary; an error names the
/// step that failed.
pub async fn daemons(exe: &Path, options: &Options) -> anyhow::Result<Report> {
    let n = options.nodes;
    if !(8..=BENCH_DAEMONS_MAX).contains(&n) {
        bail!("--nodes must be 8 to {BENCH_DAEMONS_MAX} (a quarter is cut off, one is killed)");
    }
    let rate_ok = options.rate.is_finite() && options.rate > 0.0 && options.rate <= BENCH_RATE_MAX;
    if !rate_ok || options.busy.is_zero() {
        bail!("--rate must be in (0, {BENCH_RATE_MAX}] and --busy-secs positive");
    }
    if options.rate * options.busy.as_secs_f64() > BENCH_WRITES_MAX as f64 {
        bail!("--rate × --busy-secs must be at most {BENCH_WRITES_MAX} joins");
    }
    let root = tempfile::tempdir().context("temp dir")?;
    let mut report = Report {
        nodes: n,
        ..Report::default()
    };
    let start = Instant::now();
    let mut daemons: Vec<Daemon> = Vec::with_capacity(n);
    let mut result = Ok(());
    for i in 0..n {
        let peers: Vec<String> = daemons.iter().map(|d| d.dial.clone()).collect();
        let name = format!("d-{i}");
        match Daemon::spawn(exe, &name, &root.path().join(&name), &peers).await {
            Ok(daemon) => daemons.push(daemon),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    report.started = start.elapsed();
    if result.is_ok() {
        result = run(&mut daemons, options, &mut report).await;
    }
    // Every process gone before its store is (sled must not see its
    // files removed under it).
    for daemon in &mut daemons {
        if let Err(e) = daemon.kill().await {
            eprintln!("a daemon did not stop: {e:#}");
        }
    }
    if result.is_err() {
        // Keep the stores and logs for a look.
        let kept = root.keep();
        eprintln!(
            "the daemons' stores and stderr logs are kept in {}",
            kept.display()
        );
    }
    result.map(|()| report)
}

async fn run(daemons: &mut [Daemon], options: &Options, report: &mut Report) -> anyhow::Result<()> {
    let n = daemons.len();
    let ids: Vec<String> = daemons.iter().map(|d| d.peer_id.clone()).collect();
    let clients: Vec<Client> = daemons.iter().map(|d| d.client.clone()).collect();
    report.membership = until("every daemon grades every other healthy", || {
        all_healthy(&clients, &ids)
    })
    .await?;

    let before = usage(daemons);
    let idle_start = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    report.idle = Window::between(&before, &usage(daemons), idle_start.elapsed().as_secs_f64());

    // One room per daemon, created there; every daemon must hold them all
    // before joins go to them anywhere.
    let rooms: Vec<String> = (0..n).map(|i| format!("room-{i}")).collect();
    for (client, room) in clients.iter().zip(&rooms) {
        let _: Value = client
            .send(
                reqwest::Method::PUT,
                &format!("/v1/rooms/{room}"),
                &json!({}),
            )
            .await?;
    }
    let mut expected: BTreeMap<String, HashSet<String>> =
        rooms.iter().map(|r| (r.clone(), HashSet::new())).collect();
    until("every daemon holds every room", || {
        holds(&clients, &expected)
    })
    .await?;

    // Joins at the offered rate, each on daemon k mod n and owned by it
    // (a media node admits a participant onto itself).
    let writes = (options.rate * options.busy.as_secs_f64()).ceil() as usize;
    let plan: Vec<Join> = (0..writes)
        .map(|k| Join {
            on: k % n,
            room: rooms[(k / n + k) % n].clone(),
            session: format!("s-{k}"),
        })
        .collect();
    let before = usage(daemons);
    let busy_start = Instant::now();
    let acks = write_paced(&clients, &ids, &plan, options.rate).await?;
    report.write_secs = busy_start.elapsed().as_secs_f64();
    report.busy = Window::between(&before, &usage(daemons), report.write_secs);
    report.writes = writes;
    let mut sorted = acks;
    sorted.sort();
    report.ack_p50 = percentile(&sorted, 0.50);
    report.ack_p99 = percentile(&sorted, 0.99);
    for join in &plan {
        expected
            .entry(join.room.clone())
            .or_default()
            .insert(join.session.clone());
    }
    report.converged = until(
        "every daemon holds every acknowledged join, the same",
        || holds_equal(&clients, &expected),
    )
    .await?;

    // SIGKILL the last daemon: the others re-home its calls.
    let victim = n - 1;
    let victim_id = ids[victim].clone();
    let victim_only = std::slice::from_ref(&victim_id);
    let survivors = &clients[..victim];
    report.killed_calls = calls_owned(&clients[..1], &rooms, victim_only).await?;
    daemons[victim].kill().await?;
    let took = until("the killed daemon's calls owned by survivors", || async {
        Ok(calls_owned(survivors, &rooms, victim_only).await? == 0)
    })
    .await?;
    if took > FAILOVER_WALL_MAX {
        bail!(
            "the killed daemon's calls were re-homed after {} ms, over {} ms",
            took.as_millis(),
            FAILOVER_WALL_MAX.as_millis()
        );
    }
    report.rehomed = took;
    until("the survivors agree after the failover", || {
        holds_equal(survivors, &expected)
    })
    .await?;

    // The drill: the last quarter of the survivors cut off from the rest.
    let cut = n / 4;
    let (major, minor) = survivors.split_at(victim - cut);
    let (major_ids, minor_ids) = ids[..victim].split_at(victim - cut);
    report.cut_off = cut;
    let owners_before = owners(&major[..1], &rooms).await?.remove(0);
    report.cut_calls = calls_owned(&major[..1], &rooms, minor_ids).await?;
    for (side, other) in [(major, minor_ids), (minor, major_ids)] {
        for client in side {
            let _: Value = client
                .send(
                    reqwest::Method::POST,
                    "/v1/drill/partition",
                    &json!({ "peers": other }),
                )
                .await?;
        }
    }
    let cut_at = Instant::now();
    // Writes on both sides while cut, into rooms both sides hold.
    for k in 0..JOINS_PER_SIDE_CUT * 2 {
        let on = if k % 2 == 0 {
            k % major.len()
        } else {
            major.len() + k % cut
        };
        let join = Join {
            on,
            room: rooms[k % victim].clone(),
            session: format!("cut-{k}"),
        };
        join.send(&clients[on], &ids[on]).await?;
        expected
            .entry(join.room.clone())
            .or_default()
            .insert(join.session.clone());
    }
    until("the majority owns the cut-off side's calls", || async {
        Ok(calls_owned(major, &rooms, minor_ids).await? == 0)
    })
    .await?;
    report.majority_rehomed = cut_at.elapsed();
    // The cut-off side convicts the whole majority, and must have moved
    // none of its calls even then.
    until(
        "the cut-off side grades every majority daemon down",
        || async {
            for client in minor {
                let view: Value = client.get("/v1/nodes").await?;
                let down = |id: &String| {
                    view["nodes"].as_array().is_some_and(|nodes| {
                        nodes
                            .iter()
                            .any(|n| n["node"] == id.as_str() && n["grade"] == "down")
                    })
                };
                if !major_ids.iter().all(down) {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await?;
    for now in owners(minor, &rooms).await? {
        for (call, owner) in &owners_before {
            if major_ids.contains(owner) && now.get(call).is_some_and(|o| o != owner) {
                bail!(
                    "the cut-off side moved {call:?} from {owner} to {:?}",
                    now.get(call)
                );
            }
        }
    }
    for client in survivors {
        let _: Value = client
            .send(reqwest::Method::POST, "/v1/drill/heal", &json!({}))
            .await?;
    }
    report.healed = until(
        "every survivor holds every join after the heal, the same",
        || holds_equal(survivors, &expected),
    )
    .await?;
    Ok(())
}

impl Report {
    pub fn print(&self) {
        let n = self.nodes;
        let ms = |d: Duration| d.as_millis();
        println!("daemons: {n} `chorus run` processes on loopback (libp2p, sled, HTTP API each)");
        println!(
            "  started in {:.1} s; every daemon graded every other healthy {:.1} s later",
            self.started.as_secs_f64(),
            self.membership.as_secs_f64()
        );
        println!(
            "  idle ({} s): {}",
            IDLE_WINDOW.as_secs(),
            self.idle.describe()
        );
        println!(
            "  {} joins through the {n} APIs in turn, {:.0}/s acknowledged (ack p50 {} ms, p99 {} ms); \
             every daemon held every one, the same, {} ms after the last ack",
            self.writes,
            self.writes as f64 / self.write_secs.max(f64::EPSILON),
            ms(self.ack_p50),
            ms(self.ack_p99),
            ms(self.converged),
        );
        println!("  while writing: {}", self.busy.describe());
        println!(
            "  SIGKILL d-{}: its {} calls owned by survivors {} ms later (bound {} ms)",
            n - 1,
            self.killed_calls,
            ms(self.rehomed),
            ms(FAILOVER_WALL_MAX),
        );
        println!(
            "  drill: {} of {} survivors cut off; the majority owned their {} calls {} ms after \
             the cut; the cut-off side convicted all of the majority and moved none of its calls; {} joins on both sides while \
             cut; after the heal every survivor held every join, the same, in {} ms",
            self.cut_off,
            n - 1,
            self.cut_calls,
            ms(self.majority_rehomed),
            JOINS_PER_SIDE_CUT * 2,
            ms(self.healed),
        );
    }
}

/// One join: on daemon `on`, owned by it.
struct Join {
    on: usize,
    room: String,
    session: String,
}

impl Join {
    async fn send(&self, client: &Client, owner: &str) -> anyhow::Result<()> {
        let body = json!({
            "session": self.session, "user": format!("u-{}", self.session),
            "role": "speaker", "owner": owner, "region": "local",
        });
        let _: Value = client
            .send(
                reqwest::Method::POST,
                &format!("/v1/rooms/{}/participants", self.room),
                &body,
            )
            .await?;
        Ok(())
    }
}

/// Sends `plan` at `rate` per second, each join in its own task so that a
/// slow acknowledgement does not slow the offer; the ack times.
async fn write_paced(
    clients: &[Client],
    ids: &[String],
    plan: &[Join],
    rate: f64,
) -> anyhow::Result<Vec<Duration>> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut tasks = tokio::task::JoinSet::new();
    for join in plan {
        tick.tick().await;
        let client = clients[join.on].clone();
        let owner = ids[join.on].clone();
        let join = Join {
            on: join.on,
            room: join.room.clone(),
            session: join.session.clone(),
        };
        tasks.spawn(async move {
            let sent = Instant::now();
            join.send(&client, &owner)
                .await
                .with_context(|| format!("join {} on d-{}", join.session, join.on))?;
            anyhow::Ok(sent.elapsed())
        });
    }
    let mut acks = Vec::with_capacity(plan.len());
    while let Some(done) = tasks.join_next().await {
        acks.push(done.context("a write task")??);
    }
    Ok(acks)
}

fn usage(daemons: &[Daemon]) -> Vec<Option<Usage>> {
    daemons.iter().map(Daemon::usage).collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// Polls `check` until it holds; the time it took, or an error after
/// `STEP_TIMEOUT`.
async fn until<F, Fut>(what: &str, mut check: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    let mut last_error = None;
    loop {
        // A busy daemon may answer a poll with an error (503 when its
        // queue is full): not yet, and said if the step times out.
        match check().await {
            Ok(true) => return Ok(start.elapsed()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if start.elapsed() > STEP_TIMEOUT {
            match last_error {
                Some(e) => bail!("{what}: not reached within {STEP_TIMEOUT:?} (last error: {e:#})"),
                None => bail!("{what}: not reached within {STEP_TIMEOUT:?}"),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn all_healthy(clients: &[Client], ids: &[String]) -> anyhow::Result<bool> {
    for client in clients {
        let view: Value = client.get("/v1/nodes").await?;
        let healthy: HashSet<&str> = view["nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .filter(|n| n["grade"] == "healthy")
                    .filter_map(|n| n["node"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let me: Value = client.get("/v1/cluster").await?;
        let me = me["peer_id"].as_str().unwrap_or_default();
        if ids
            .iter()
            .any(|id| id != me && !healthy.contains(id.as_str()))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Every daemon's reading of every room, read concurrently across daemons.
async fn readings(
    clients: &[Client],
    rooms: &[&String],
) -> anyhow::Result<Vec<Vec<Option<Value>>>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let paths: Vec<String> = rooms.iter().map(|r| format!("/v1/rooms/{r}")).collect();
        tasks.spawn(async move {
            let mut read = Vec::with_capacity(paths.len());
            for path in paths {
                read.push(client.get_opt::<Value>(&path).await?);
            }
            anyhow::Ok((i, read))
        });
    }
    let mut all = vec![Vec::new(); clients.len()];
    while let Some(done) = tasks.join_next().await {
        let (i, read) = done.context("a read task")??;
        all[i] = read;
    }
    Ok(all)
}

/// Every daemon holds every room of `expected` with at least its sessions.
async fn holds(
    clients: &[Client],
    expected: &BTreeMap<String, HashSet<String>>,
) -> anyhow::Result<bool> {
    let rooms: Vec<&String> = expected.keys().collect();
    Ok(all_hold(&readings(clients, &rooms).await?, expected))
}

fn all_hold(all: &[Vec<Option<Value>>], expected: &BTreeMap<String, HashSet<String>>) -> bool {
    all.iter().all(|read| {
        read.iter().zip(expected.values()).all(|(room, sessions)| {
            room.as_ref().is_some_and(|r| {
                sessions
                    .iter()
                    .all(|s| r["sessions"].get(s.as_str()).is_some())
            })
        })
    })
}

/// `holds`, and every daemon reads the same JSON for every room (one read
/// serves both).
async fn holds_equal(
    clients: &[Client],
    expected: &BTreeMap<String, HashSet<String>>,
) -> anyhow::Result<bool> {
    let rooms: Vec<&String> = expected.keys().collect();
    let all = readings(clients, &rooms).await?;
    Ok(all_hold(&all, expected) && all.windows(2).all(|pair| pair[0] == pair[1]))
}

type Owners = BTreeMap<(String, String), String>;

/// The owner of every live call, by (room, session), as each of `clients`
/// reads it (read concurrently across daemons).
async fn owners(clients: &[Client], rooms: &[String]) -> anyhow::Result<Vec<Owners>> {
    let names: Vec<&String> = rooms.iter().collect();
    let all = readings(clients, &names).await?;
    Ok(all
        .iter()
        .map(|read| {
            let mut owners = Owners::new();
            for (room, reading) in rooms.iter().zip(read) {
                let sessions = reading.as_ref().and_then(|r| r["sessions"].as_object());
                for (session, s) in sessions.into_iter().flatten() {
                    if s["state"] == "left" {
                        continue;
                    }
                    if let Some(node) = s["owner"]["node"].as_str() {
                        owners.insert((room.clone(), session.clone()), node.to_string());
                    }
                }
            }
            owners
        })
        .collect())
}

/// How many live calls, summed over `clients`' readings, are owned by one
/// of `nodes`.
async fn calls_owned(
    clients: &[Client],
    rooms: &[String],
    nodes: &[String],
) -> anyhow::Result<usize> {
    Ok(owners(clients, rooms)
        .await?
        .iter()
        .flat_map(|o| o.values())
        .filter(|owner| nodes.contains(owner))
        .count())
}
