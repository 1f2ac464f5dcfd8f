//! A rolling restart of three real daemons under write load: each in turn
//! gets SIGTERM, tells its peers it restarts (`shutdown_intent`, default
//! `restart`), exits, and starts again on the same store and ports. Its
//! peers hold its calls meanwhile: no call is re-homed, no node is
//! convicted, every acknowledged write is on every replica at the end, and a
//! consumer of one replica's change feed, reconnecting with `Last-Event-ID`
//! across that replica's restart, saw every one of them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use chorus_node::client::Client;
use chorus_node::demo::wait_for;

mod common;
use common::{grade, spawn_daemon, Process};

const NODES: usize = 3;

/// How long the feed consumer waits before reconnecting after its stream
/// ended: past the replica's restart and its catch-up from its peers.
const RECONNECT_AFTER: Duration = Duration::from_secs(DOWN_FOR.as_secs() + 3);

/// How long each daemon stays down during its restart.
const DOWN_FOR: Duration = Duration::from_secs(4);

/// A port free on loopback now (bound, then released for the daemon).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Node {
    config: std::path::PathBuf,
    peer_id: String,
    client: Client,
    api: String,
}

/// Three configs with fixed ports (a restarted daemon must be found where
/// it was) and each other as peers.
fn configs(root: &std::path::Path) -> Vec<Node> {
    let p2p: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let api: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let ids: Vec<String> = (0..NODES)
        .map(|i| {
            let dir = root.join(format!("n{i}"));
            std::fs::create_dir_all(&dir).expect("dir");
            let key = chorus_node::keys::generate(&dir.join("node.key")).expect("key");
            key.public().to_peer_id().to_base58()
        })
        .collect();
    (0..NODES)
        .map(|i| {
            let dir = root.join(format!("n{i}"));
            let peers: Vec<String> = (0..NODES)
                .filter(|j| *j != i)
                .map(|j| format!("\"/ip4/127.0.0.1/tcp/{}/p2p/{}\"", p2p[j], ids[j]))
                .collect();
            let text = format!(
                "name = \"n{i}\"\ndata_dir = {:?}\nlisten = [\"/ip4/127.0.0.1/tcp/{}\"]\n\
                 peers = [{}]\n[api]\nlisten = \"127.0.0.1:{}\"\n\
                 [replica]\nanti_entropy_interval_ms = 200\n",
                dir.display().to_string(),
                p2p[i],
                peers.join(", "),
                api[i],
            );
            let config = dir.join("chorus.toml");
            std::fs::write(&config, text).expect("write config");
            Node {
                config,
                peer_id: ids[i].clone(),
                client: Client::new(format!("http://127.0.0.1:{}", api[i]), None).expect("client"),
                api: format!("http://127.0.0.1:{}", api[i]),
            }
        })
        .collect()
}

/// Every node that is up grades every other healthy.
async fn all_healthy(nodes: &[Node]) {
    wait_for("every replica grades every other healthy", || async {
        for a in nodes {
            for b in nodes {
                if grade(&a.client, &b.peer_id).await.as_deref() != Some("healthy") {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    })
    .await
    .expect("membership forms");
}

/// What a feed consumer saw: sessions in live `joined` events, change
/// hashes in replayed ones, and whether a `reset` (events lost) came.
#[derive(Default)]
struct Seen {
    joined: HashSet<String>,
    hashes: HashSet<String>,
    resets: usize,
    reconnects: usize,
    /// Streams opened: the replica subscribes it before it answers.
    connected: usize,
}

/// Follows `api`'s `GET /v1/changes` until `stop`, reconnecting with the
/// last event id whenever the stream ends (the replica restarted).
async fn follow(api: String, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::new();
    let mut last_id: Option<String> = None;
    while !stop.load(Ordering::SeqCst) {
        let mut request = http.get(format!("{api}/v1/changes"));
        if let Some(id) = &last_id {
            request = request.header("Last-Event-ID", id);
        }
        let Ok(mut response) = request.send().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !response.status().is_success() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        seen.lock().expect("lock").connected += 1;
        let mut buffer = String::new();
        loop {
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk,
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Ordering::SeqCst) { return; }
                    continue;
                }
            };
            let Ok(Some(chunk)) = chunk else { break };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut seen = seen.lock().expect("lock");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id:") {
                        last_id = Some(id.trim().to_string());
                    } else if line.trim() == "event: reset" || line.trim() == "event:reset" {
                        seen.resets += 1;
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim());
                    }
                }
                let Ok(event) = serde_json::from_str::<Value>(&data) else {
                    continue;
                };
                for change in event["changes"].as_array().into_iter().flatten() {
                    if change["kind"] == "joined" {
                        if let Some(session) = change["session"].as_str() {
                            seen.joined.insert(session.to_string());
                        }
                    }
                }
                for hash in event["hashes"].as_array().into_iter().flatten() {
                    if let Some(hash) = hash.as_str() {
                        seen.hashes.insert(hash.to_string());
                    }
                }
            }
        }
        seen.lock().expect("lock").reconnects += 1;
        // Reconnect late, as a consumer that restarts too would: the
        // replica catches up on what it missed before the consumer is back,
        // so those events reach it only through the log's replay.
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

fn sigterm(process: &mut Process) {
    let pid = libc::pid_t::try_from(process.child.id()).expect("a pid");
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0, "SIGTERM sent");
    let status = process.child.wait().expect("the daemon exits");
    assert!(status.success(), "a clean exit after SIGTERM: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_moves_no_call_and_loses_no_acknowledged_write() {
    let root = common::test_dir();
    let nodes = configs(root.path());
    let mut processes: Vec<Process> = nodes.iter().map(|n| spawn_daemon(&n.config)).collect();
    all_healthy(&nodes).await;

    // Each node hosts two calls.
    let _: Value = nodes[0]
        .client
        // Room for every write of the load (the default is 100).
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/lobby",
            &json!({"max_participants": 5000}),
        )
        .await
        .expect("create the room");
    wait_for("the room reaches every replica", || async {
        for node in &nodes {
            if node.client.get::<Value>("/v1/rooms/lobby").await.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
    .expect("the room replicates");
    for (i, node) in nodes.iter().enumerate() {
        for k in 0..2 {
            let join = json!({
                "session": format!("call-{i}-{k}"), "user": format!("u-{i}-{k}"),
                "role": "speaker", "owner": node.peer_id, "region": "local",
            });
            let _: Value = node
                .client
                .send(reqwest::Method::POST, "/v1/rooms/lobby/participants", &join)
                .await
                .expect("a call joins");
        }
    }

    // Write load: joins on the nodes not restarting, acknowledged ones kept.
    let restarting = Arc::new(AtomicUsize::new(usize::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(String, Vec<String>)>::new()));
    // Writes acknowledged while each node was away.
    let during: Arc<Vec<AtomicUsize>> = Arc::new((0..NODES).map(|_| AtomicUsize::new(0)).collect());
    // A consumer of replica 1's change feed, across its restart.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let feed_stop = Arc::new(AtomicBool::new(false));
    let feed = tokio::spawn(follow(
        nodes[1].api.clone(),
        seen.clone(),
        feed_stop.clone(),
    ));
    // The first stream carries no event id, so it sees only what comes
    // after it opens: the load starts once it has (CI once lost w-1, the
    // first write, to this race).
    wait_for("the feed consumer is connected", || async {
        Ok(seen.lock().expect("lock").connected > 0)
    })
    .await
    .expect("the feed consumer connects");
    let clients: Vec<Client> = nodes.iter().map(|n| n.client.clone()).collect();
    let owner = nodes[0].peer_id.clone();
    let writer = {
        let (restarting, stop, acked, during) = (
            restarting.clone(),
            stop.clone(),
            acked.clone(),
            during.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let at = n % NODES;
                let away = restarting.load(Ordering::SeqCst);
                if at != away {
                    let session = format!("w-{n}");
                    let join = json!({
                        "session": session, "user": "writer", "role": "audience",
                        "owner": owner, "region": "local",
                    });
                    let done: anyhow::Result<Value> = clients[at]
                        .send(reqwest::Method::POST, "/v1/rooms/lobby/participants", &join)
                        .await;
                    if let Ok(ack) = done {
                        // With one head, it is this write's change; with
                        // several, others' are among them and could stand
                        // in for a lost event: match the join's event only.
                        let heads: Vec<String> = ack["heads"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|h| h.as_str().map(String::from))
                            .collect();
                        let heads = if heads.len() == 1 { heads } else { Vec::new() };
                        acked.lock().expect("lock").push((session, heads));
                        if let Some(count) = during.get(away) {
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    for i in 0..NODES {
        restarting.store(i, Ordering::SeqCst);
        // Let in-flight writes to it finish before it goes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        sigterm(&mut processes[i]);
        // Down for longer than the detector takes to convict a silent node
        // (about 2 s): without the announcement its calls would move.
        tokio::time::sleep(DOWN_FOR).await;
        processes[i] = spawn_daemon(&nodes[i].config);
        all_healthy(&nodes).await;
        restarting.store(usize::MAX, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("the writer");
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 50, "writes went on: {}", acked.len());
    for (i, count) in during.iter().enumerate() {
        let count = count.load(Ordering::SeqCst);
        assert!(count >= 20, "writes went on while n{i} restarted: {count}");
    }

    wait_for("every acknowledged write is everywhere", || async {
        for node in &nodes {
            let room: Value = node.client.get("/v1/rooms/lobby").await?;
            if acked.iter().any(|(s, _)| room["sessions"][s].is_null()) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
    .expect("no acknowledged write lost");
    // The feed consumer saw every acknowledged write: live, or replayed
    // from the change log after its reconnect.
    let missed = || {
        let seen = seen.lock().expect("lock");
        acked
            .iter()
            .filter(|(session, heads)| {
                !seen.joined.contains(session) && !heads.iter().any(|h| seen.hashes.contains(h))
            })
            .map(|(session, _)| session.clone())
            .collect::<Vec<_>>()
    };
    wait_for("the feed consumer saw every acknowledged write", || async {
        Ok(missed().is_empty())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: missed {:?}", missed()));
    feed_stop.store(true, Ordering::SeqCst);
    feed.await.expect("the feed consumer");
    {
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.resets, 0, "no event was lost to a reset");
        assert!(
            seen.reconnects >= 1,
            "the consumer reconnected across the restart"
        );
    }
    for node in &nodes {
        let room: Value = node.client.get("/v1/rooms/lobby").await.expect("room");
        for (i, host) in nodes.iter().enumerate() {
            for k in 0..2 {
                let call = &room["sessions"][format!("call-{i}-{k}")];
                assert_eq!(call["owner"]["node"], host.peer_id, "{call}");
                assert_eq!(call["owner"]["epoch"], 1, "never taken over: {call}");
            }
        }
        let entries: Vec<Value> = node.client.get("/v1/incidents").await.expect("journal");
        for kind in ["convicted", "rehomed"] {
            let found: Vec<&Value> = entries.iter().filter(|e| e["kind"] == kind).collect();
            assert!(found.is_empty(), "{kind}: {found:#?}");
        }
        let leaving = entries.iter().any(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("-> Leaving"))
        });
        assert!(leaving, "the journal shows a restart: {entries:#?}");
    }
    for mut process in processes {
        sigterm(&mut process);
    }
}
