//! `chorus demo`: three real replicas on loopback (libp2p, sled in temp
//! dirs, the HTTP API), rooms written on different replicas, a partition
//! drill with writes on both sides — including a concurrent move of the
//! same call — then the heal and the merged result, with timings.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::client::Client;
use crate::config::Config;
use crate::daemon::{self, Running};

/// How long the demo waits for each step before it calls it a failure.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// A replica config for a local cluster: loopback, port 0, drills on, fast
/// anti-entropy.
pub fn local_config(name: &str, dir: &Path, peers: Vec<libp2p::Multiaddr>) -> Config {
    let mut config = Config {
        name: name.into(),
        data_dir: dir.to_path_buf(),
        peers,
        drills: true,
        ..Config::default()
    };
    config.api.listen = "127.0.0.1:0".parse().expect("a valid address");
    config.replica.anti_entropy_interval_ms = 200;
    config
}

/// Starts `n` replicas on loopback, each dialing the ones before it.
pub async fn start_cluster(n: usize, root: &Path) -> anyhow::Result<Vec<Running>> {
    let mut nodes: Vec<Running> = Vec::new();
    for i in 0..n {
        let peers = nodes.iter().filter_map(Running::dial_addr).collect();
        let dir = root.join(format!("replica-{i}"));
        let config = local_config(&format!("replica-{i}"), &dir, peers);
        nodes.push(daemon::start(config).await?);
    }
    Ok(nodes)
}

pub fn client_of(node: &Running) -> anyhow::Result<Client> {
    Client::new(format!("http://{}", node.api), None)
}

/// Polls `check` until it holds or the step times out; returns the time taken.
pub async fn wait_for<F, Fut>(what: &str, mut check: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    loop {
        if check().await? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > STEP_TIMEOUT {
            bail!("{what}: not reached within {STEP_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn connected(client: &Client) -> anyhow::Result<usize> {
    let view: Value = client.get("/v1/cluster").await?;
    Ok(view["peers"]
        .as_array()
        .map_or(0, |p| p.iter().filter(|p| p["connected"] == true).count()))
}

/// Every client reads the same JSON for every room in `rooms`.
pub async fn all_equal(clients: &[Client], rooms: &[&str]) -> anyhow::Result<bool> {
    for room in rooms {
        let path = format!("/v1/rooms/{room}");
        let first: Option<Value> = clients[0].get_opt(&path).await?;
        if first.is_none() {
            return Ok(false);
        }
        for client in &clients[1..] {
            if client.get_opt::<Value>(&path).await? != first {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn join_body(session: &str, user: &str, media_node: &str) -> Value {
    json!({
        "session": session,
        "user": user,
        "role": "speaker",
        "owner": media_node,
        "region": "eu-west",
    })
}

const NAMES: [&str; 3] = ["A", "B", "C"];
const ROOMS: [&str; 3] = ["standup", "design-review", "all-hands"];

/// Runs the demo; `Ok(false)` when the replicas did not converge.
pub async fn run() -> anyhow::Result<bool> {
    let started = Instant::now();
    let root = tempfile::tempdir().context("temp dir")?;
    let mut nodes = start_cluster(3, root.path()).await?;
    let clients = nodes
        .iter()
        .map(client_of)
        .collect::<anyhow::Result<Vec<_>>>()?;
    connect(&nodes, &clients).await?;
    write_rooms(&clients).await?;
    diverge(&nodes, &clients).await?;
    let converged = heal(&clients, started).await?;

    // 4. Failover: C hosts calls, then dies; A and B take them over.
    let rehomed = failover(&mut nodes, &clients).await;
    match &rehomed {
        Ok(t) => println!("failover: C's calls owned by A and B {t:?} after C stopped"),
        Err(err) => println!("FAILOVER DID NOT COMPLETE: {err:#}"),
    }
    for node in nodes {
        node.stop().await?;
    }
    Ok(converged && rehomed.is_ok())
}

/// Prints where each replica listens and waits until all three connect.
async fn connect(nodes: &[Running], clients: &[Client]) -> anyhow::Result<()> {
    for (name, node) in NAMES.iter().zip(nodes) {
        println!(
            "replica {name}: peer {} api http://{}",
            node.peer_id, node.api
        );
    }
    let t = wait_for("three replicas connected", || async {
        for c in clients {
            if connected(c).await? < 2 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    println!("connected in {t:?}");
    Ok(())
}

/// Step 1: rooms written on different replicas show up everywhere.
async fn write_rooms(clients: &[Client]) -> anyhow::Result<()> {
    let t0 = Instant::now();
    for (i, room) in ROOMS.iter().enumerate() {
        let c = &clients[i];
        let _: Value = c
            .send(
                reqwest::Method::PUT,
                &format!("/v1/rooms/{room}"),
                &json!({"max_participants": 20}),
            )
            .await?;
        let body = join_body(&format!("s-{i}"), &format!("user-{i}"), "media-1");
        let _: Value = c
            .send(
                reqwest::Method::POST,
                &format!("/v1/rooms/{room}/participants"),
                &body,
            )
            .await?;
        println!("wrote room {room} on replica {}", NAMES[i]);
    }
    wait_for("rooms replicated", || all_equal(clients, &ROOMS)).await?;
    println!(
        "all three rooms on all three replicas {:?} after the writes",
        t0.elapsed()
    );
    Ok(())
}

/// Step 2: cuts C off and writes conflicting changes on both sides.
async fn diverge(nodes: &[Running], clients: &[Client]) -> anyhow::Result<()> {
    let peers: Vec<String> = nodes[..2].iter().map(|n| n.peer_id.to_base58()).collect();
    let _: Value = clients[2]
        .send(
            reqwest::Method::POST,
            "/v1/drill/partition",
            &json!({ "peers": peers }),
        )
        .await?;
    wait_for("C cut off", || async {
        Ok(connected(&clients[2]).await? == 0)
    })
    .await?;
    println!("drill: replica C cut off from A and B");
    let move_to = |node: &str| json!({ "epoch": 2, "node": node });
    let writes = [
        (
            0,
            reqwest::Method::PUT,
            "/v1/rooms/standup/participants/s-0/owner",
            move_to("media-2"),
        ),
        (
            2,
            reqwest::Method::PUT,
            "/v1/rooms/standup/participants/s-0/owner",
            move_to("media-3"),
        ),
        (
            0,
            reqwest::Method::POST,
            "/v1/rooms/all-hands/participants",
            join_body("s-10", "alice", "media-2"),
        ),
        (
            2,
            reqwest::Method::POST,
            "/v1/rooms/all-hands/participants",
            join_body("s-11", "carol", "media-3"),
        ),
        (
            2,
            reqwest::Method::PUT,
            "/v1/rooms/design-review",
            json!({"recording": true}),
        ),
    ];
    for (replica, method, path, body) in writes {
        let _: Value = clients[replica].send(method, path, &body).await?;
    }
    println!("wrote on both sides: the same call moved to media-2 on A and to media-3 on C; alice joined on A, carol on C");
    let diverged = !all_equal(clients, &ROOMS).await?;
    println!("replicas differ while cut off: {diverged}");
    Ok(())
}

/// Step 3: heals the cut and waits for convergence (`Ok(false)` if it
/// does not come).
async fn heal(clients: &[Client], started: Instant) -> anyhow::Result<bool> {
    let t1 = Instant::now();
    let _: Value = clients[2]
        .send(reqwest::Method::POST, "/v1/drill/heal", &json!({}))
        .await?;
    let converged = wait_for("convergence after the heal", || all_equal(clients, &ROOMS)).await;
    match &converged {
        Ok(t) => println!("healed: identical rooms on all three replicas {t:?} after the heal"),
        Err(err) => println!("NOT CONVERGED: {err:#}"),
    }
    let merged: Value = clients[1].get("/v1/rooms/standup").await?;
    println!(
        "merged owner of call s-0 in standup: {} (the highest (epoch, node) wins everywhere)",
        merged["sessions"]["s-0"]["owner"]
    );
    let all_hands: Value = clients[0].get("/v1/rooms/all-hands").await?;
    let sessions: Vec<&String> = all_hands["sessions"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    println!("all-hands sessions after the merge: {sessions:?}");
    println!(
        "heal to convergence: {:?}; demo so far: {:?}",
        t1.elapsed(),
        started.elapsed()
    );
    Ok(converged.is_ok())
}

/// Replica C admits three calls onto itself and stops; returns how long
/// until A and B both show every one of them owned by a survivor.
async fn failover(nodes: &mut Vec<Running>, clients: &[Client]) -> anyhow::Result<Duration> {
    let c = nodes.pop().context("three replicas")?;
    let victim = c.peer_id.to_base58();
    for i in 0..3 {
        let body = join_body(&format!("c-{i}"), &format!("guest-{i}"), &victim);
        let _: Value = clients[2]
            .send(
                reqwest::Method::POST,
                "/v1/rooms/standup/participants",
                &body,
            )
            .await?;
    }
    let owners = |client: &Client| {
        let client = client.clone();
        async move {
            let room: Value = client.get("/v1/rooms/standup").await?;
            let owners: Vec<String> = (0..3)
                .filter_map(|i| room["sessions"][format!("c-{i}")]["owner"]["node"].as_str())
                .map(String::from)
                .collect();
            anyhow::Ok(owners)
        }
    };
    wait_for("C's calls replicated", || async {
        for client in &clients[..2] {
            if owners(client).await?.len() < 3 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    println!("replica C hosts calls c-0, c-1, c-2; stopping C");
    c.stop().await?;
    let took = wait_for("C's calls re-homed on A and B", || async {
        for client in &clients[..2] {
            if owners(client).await?.iter().any(|o| o == &victim) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    let new_owners = owners(&clients[0]).await?;
    let name = |id: &str| {
        if id == nodes[0].peer_id.to_base58() {
            "A"
        } else {
            "B"
        }
    };
    let named: Vec<&str> = new_owners.iter().map(|o| name(o)).collect();
    println!(
        "new owners of c-0, c-1, c-2: {named:?} (the same answer on every replica, no coordinator)"
    );
    let journal: Vec<Value> = clients[0].get("/v1/incidents").await?;
    for e in journal.iter().filter(|e| {
        matches!(
            e["kind"].as_str(),
            Some("suspected" | "convicted" | "rehomed")
        ) && e["detail"].as_str().is_some_and(|d| d.contains(&victim))
    }) {
        println!(
            "  A's journal: {:<10} {}",
            e["kind"].as_str().unwrap_or(""),
            e["detail"].as_str().unwrap_or("")
        );
    }
    Ok(took)
}
