//! The largest legal room imported through the daemon: every change of its
//! long history applies, the peers receive all of it, and failure
//! detection does not stall meanwhile (issue 11, item 4).

use serde_json::Value;

use chorus_node::client::Client;
use chorus_node::demo::{client_of, wait_for};

mod common;
use common::{spawn_daemon, two_replicas};

/// A room with `sessions` joins (half of them left), as automerge bytes.
fn big_room(sessions: usize) -> Vec<u8> {
    use chorus_engine::*;
    // The whole history, as a client holding the document since the room
    // began would have it: the builder never compacts.
    let mut config = EngineConfig::new(NodeId::parse("builder").expect("id"));
    config.replica.history_changes_max = u64::MAX;
    let engine = Engine::in_memory(config).expect("engine");
    let id = RoomId::parse("big").expect("id");
    let config = RoomConfig {
        max_participants: 10_000,
        ..RoomConfig::default()
    };
    engine
        .create_room(&id, &TenantId::parse("t").expect("id"), config)
        .expect("create");
    for n in 0..sessions {
        let session = SessionId::parse(format!("s{n}")).expect("id");
        let request = JoinRequest {
            session: session.clone(),
            user: UserId::parse(format!("user-{n}")).expect("id"),
            role: Role::Speaker,
            owner: NodeId::parse("sfu-1").expect("id"),
            region: RegionId::parse("eu").expect("id"),
            resume_token: None,
        };
        engine.join(&id, request).expect("join");
        if n % 2 == 0 {
            engine.leave(&id, &session).expect("leave");
        }
    }
    engine.export_room(&id).expect("export")
}

/// Sessions in the imported room: the most a room may hold.
const SESSIONS: usize = chorus_engine::limits::PARTICIPANTS_PER_ROOM_MAX as usize;

async fn suspicions_of(client: &Client, node: &str) -> usize {
    let journal: Value = client.get("/v1/incidents").await.expect("journal");
    journal
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["kind"] == "suspected" || e["kind"] == "convicted")
                .filter(|e| e["detail"].as_str().is_some_and(|d| d.contains(node)))
                .count()
        })
        .unwrap_or(0)
}

/// A room with the most sessions a room may hold, half of them left
/// (15 000 changes), imported into `c` while `a` and `b` watch it. Every
/// session arrives, on `c` and on both peers, and no peer grades `c`
/// Suspect. Before the change log was served in one pass per room, `c`
/// rebuilt each of the 15 000 changes with a scan of the whole document to
/// answer its peers' since-requests, and both peers convicted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_room_imports_whole_while_the_replica_answers_probes() {
    let root = common::test_dir();
    let (a, b) = two_replicas(root.path()).await;
    let config_path = root.path().join("c.toml");
    let config = format!(
        "name = \"c\"\ndata_dir = {:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\npeers = [\"{}\", \"{}\"]\n\
         [api]\nlisten = \"127.0.0.1:0\"\n",
        root.path().join("c").display().to_string(),
        a.dial_addr().expect("a listens"),
        b.dial_addr().expect("b listens"),
    );
    std::fs::write(&config_path, config).expect("write config");
    let c = spawn_daemon(&config_path);
    let watchers = [
        client_of(&a).expect("client"),
        client_of(&b).expect("client"),
    ];
    let cc = Client::new(c.api.clone(), None).expect("client");
    let victim = c.peer_id.clone();
    wait_for("a and b grade c healthy", || async {
        for w in &watchers {
            let view: Value = w.get("/v1/nodes").await?;
            let healthy = view["nodes"].as_array().is_some_and(|nodes| {
                nodes
                    .iter()
                    .any(|n| n["node"] == victim.as_str() && n["grade"] == "healthy")
            });
            if !healthy {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
    .expect("membership forms");
    // Settle a few probe periods, then note what the journals hold.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let before = [
        suspicions_of(&watchers[0], &victim).await,
        suspicions_of(&watchers[1], &victim).await,
    ];

    let bytes = tokio::task::spawn_blocking(|| big_room(SESSIONS))
        .await
        .expect("builder");
    let started = std::time::Instant::now();
    let (status, text) = cc
        .raw(
            reqwest::Method::POST,
            "/v1/rooms/big/automerge",
            "application/octet-stream",
            bytes.clone(),
        )
        .await
        .expect("import");
    eprintln!(
        "imported {} KB ({SESSIONS} sessions) in {:?}",
        bytes.len() / 1024,
        started.elapsed()
    );
    assert_eq!(status, 200, "{text}");
    // Every change of the long history applied, not just the first ones
    // that fit the pending buffer.
    let room: Value = cc.get("/v1/rooms/big").await.expect("the room reads");
    let sessions = room["sessions"].as_object().map_or(0, |s| s.len());
    assert_eq!(sessions, SESSIONS, "sessions in the imported room");
    // Past a whole suspicion period, so a late grade would show.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after = [
        suspicions_of(&watchers[0], &victim).await,
        suspicions_of(&watchers[1], &victim).await,
    ];
    assert_eq!(before, after, "a peer graded c Suspect during the import");
    for w in &watchers {
        let took = wait_for("a peer holds the whole imported room", || async {
            let room: Value = w.get("/v1/rooms/big").await.unwrap_or_default();
            Ok(room["sessions"].as_object().map_or(0, |s| s.len()) == SESSIONS)
        })
        .await
        .expect("the import replicates");
        eprintln!("a peer held it all {took:?} after the check began");
    }
    drop(c);
    a.stop().await.expect("stop");
    b.stop().await.expect("stop");
}
