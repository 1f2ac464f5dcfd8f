//! A rolling restart of three real daemons under write load: each in turn
//! gets SIGTERM, tells its peers it restarts (`shutdown_intent`, default
//! `restart`), exits, and starts again on the same store and ports. Its
//! peers hold its calls meanwhile: no call is re-homed, no node is
//! convicted, and every acknowledged write is on every replica at the end.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use chorus_node::client::Client;
use chorus_node::demo::wait_for;

mod common;
use common::{grade, spawn_daemon, Process};

const NODES: usize = 3;

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
        .send(reqwest::Method::PUT, "/v1/rooms/lobby", &json!({}))
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
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<Client> = nodes.iter().map(|n| n.client.clone()).collect();
    let owner = nodes[0].peer_id.clone();
    let writer = {
        let (restarting, stop, acked) = (restarting.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let at = n % NODES;
                if at != restarting.load(Ordering::SeqCst) {
                    let session = format!("w-{n}");
                    let join = json!({
                        "session": session, "user": "writer", "role": "audience",
                        "owner": owner, "region": "local",
                    });
                    let done: anyhow::Result<Value> = clients[at]
                        .send(reqwest::Method::POST, "/v1/rooms/lobby/participants", &join)
                        .await;
                    if done.is_ok() {
                        acked.lock().expect("lock").push(session);
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

    wait_for("every acknowledged write is everywhere", || async {
        for node in &nodes {
            let room: Value = node.client.get("/v1/rooms/lobby").await?;
            if acked.iter().any(|s| room["sessions"][s].is_null()) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
    .expect("no acknowledged write lost");
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
