//! Real daemons on 127.0.0.1 (libp2p over TCP, sled in temp dirs, the HTTP
//! API): replication, a partition drill and its heal, a SIGKILLed replica
//! that keeps its acknowledged writes, the allow-list, and bad input.

use std::process::Command;

use serde_json::{json, Value};

use chorus_node::client::Client;
use chorus_node::daemon;
use chorus_node::demo::{all_equal, client_of, local_config, start_cluster, wait_for};

mod common;
use common::spawn_daemon;

fn join(session: &str, user: &str) -> Value {
    json!({
        "session": session, "user": user, "role": "host", "owner": "media-1", "region": "eu",
        "resume_token": format!("t-{session}"),
    })
}

async fn connected(client: &Client) -> usize {
    let view: Value = client.get("/v1/cluster").await.expect("cluster view");
    view["peers"]
        .as_array()
        .map_or(0, |p| p.iter().filter(|p| p["connected"] == true).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_and_a_partition_heals_into_one_state() {
    let root = common::test_dir();
    let nodes = start_cluster(3, root.path()).await.expect("three replicas");
    let c: Vec<Client> = nodes
        .iter()
        .map(|n| client_of(n).expect("client"))
        .collect();
    wait_for("connected", || async {
        let mut all = true;
        for client in &c {
            all &= connected(client).await == 2;
        }
        Ok(all)
    })
    .await
    .expect("the replicas connect");

    let _: Value = c[0]
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/r1",
            &json!({"max_participants": 8}),
        )
        .await
        .expect("create on A");
    wait_for("r1 on B and C", || all_equal(&c, &["r1"]))
        .await
        .expect("a write on A is readable on B and C");
    let on_c: Value = c[2].get("/v1/rooms/r1").await.expect("read on C");
    assert_eq!(on_c["config"]["max_participants"], 8);

    // Cut C off; write on both sides, including to the same call.
    let _: Value = c[0]
        .send(
            reqwest::Method::POST,
            "/v1/rooms/r1/participants",
            &join("s-1", "ann"),
        )
        .await
        .expect("join on A");
    wait_for("s-1 everywhere", || all_equal(&c, &["r1"]))
        .await
        .expect("join replicates");
    let peers: Vec<String> = nodes[..2].iter().map(|n| n.peer_id.to_base58()).collect();
    let cut: Value = c[2]
        .send(
            reqwest::Method::POST,
            "/v1/drill/partition",
            &json!({ "peers": peers }),
        )
        .await
        .expect("drill");
    assert_eq!(cut["cut"].as_array().map(Vec::len), Some(2));
    wait_for("C isolated", || async { Ok(connected(&c[2]).await == 0) })
        .await
        .expect("the drill cuts C off");
    let owner = |node: &str| json!({"epoch": 5, "node": node});
    let _: Value = c[1]
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/r1/participants/s-1/owner",
            &owner("media-b"),
        )
        .await
        .expect("move on B");
    let _: Value = c[2]
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/r1/participants/s-1/owner",
            &owner("media-c"),
        )
        .await
        .expect("move on C");
    let _: Value = c[2]
        .send(reqwest::Method::PUT, "/v1/rooms/r2", &json!({}))
        .await
        .expect("create on C");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !all_equal(&c, &["r1"]).await.expect("reads"),
        "the sides must differ while cut off"
    );
    assert!(c[0]
        .get_opt::<Value>("/v1/rooms/r2")
        .await
        .expect("read")
        .is_none());

    let _: Value = c[2]
        .send(reqwest::Method::POST, "/v1/drill/heal", &json!({}))
        .await
        .expect("heal");
    wait_for("merged", || all_equal(&c, &["r1", "r2"]))
        .await
        .expect("identical rooms on all three after the heal");
    let merged: Value = c[0].get("/v1/rooms/r1").await.expect("read");
    assert_eq!(
        merged["sessions"]["s-1"]["owner"],
        json!({"epoch": 5, "node": "media-c"})
    );
    // C's journal tells the story: peers lost, regained, and the catch-up.
    let journal: Vec<Value> = c[2].get("/v1/incidents").await.expect("incidents");
    let kinds: Vec<&str> = journal.iter().filter_map(|e| e["kind"].as_str()).collect();
    for kind in ["peer_up", "peer_down", "catch_up"] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let down = kinds.iter().position(|k| *k == "peer_down").expect("down");
    assert!(
        kinds[down..].contains(&"catch_up"),
        "a catch-up after the cut: {kinds:?}"
    );
    let (status, _) = c[2]
        .raw(
            reqwest::Method::GET,
            "/v1/incidents?after=nonsense",
            "application/json",
            Vec::new(),
        )
        .await
        .expect("request");
    assert_eq!(status, 400);
    // The client resumes on a replica it never talked to and learns the
    // merged owner; a wrong token is refused.
    let resumed: Value = c[1]
        .send(
            reqwest::Method::POST,
            "/v1/rooms/r1/participants/s-1/resume",
            &json!({"token": "t-s-1"}),
        )
        .await
        .expect("resume");
    assert_eq!(resumed["owner"], json!({"epoch": 5, "node": "media-c"}));
    let (status, body) = c[2]
        .raw(
            reqwest::Method::POST,
            "/v1/rooms/r1/participants/s-1/resume",
            "application/json",
            br#"{"token": "guess"}"#.to_vec(),
        )
        .await
        .expect("request");
    assert_eq!(status, 403, "{body}");
    for node in nodes {
        node.stop().await.expect("clean stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_replica_keeps_its_acknowledged_writes_and_catches_up() {
    let root = common::test_dir();
    let a = daemon::start(local_config("a", &root.path().join("a"), Vec::new()))
        .await
        .expect("replica a");
    let ca = client_of(&a).expect("client");
    let dir = root.path().join("b");
    let config_path = root.path().join("b.toml");
    let config = format!(
        "name = \"b\"\ndata_dir = {:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\npeers = [\"{}\"]\n\
         [api]\nlisten = \"127.0.0.1:0\"\n[replica]\nanti_entropy_interval_ms = 200\n",
        dir.display().to_string(),
        a.dial_addr().expect("a listens")
    );
    std::fs::write(&config_path, config).expect("write config");

    let mut b = spawn_daemon(&config_path);
    let cb = Client::new(b.api.clone(), None).expect("client");
    let mut acked = Vec::new();
    for i in 0..40 {
        let room = format!("k-{i}");
        let _: Value = cb
            .send(
                reqwest::Method::PUT,
                &format!("/v1/rooms/{room}"),
                &json!({}),
            )
            .await
            .expect("acknowledged write");
        acked.push(room);
    }
    b.child.kill().expect("SIGKILL"); // std's kill is SIGKILL on unix
    let _ = b.child.wait();
    // A keeps writing while B is down.
    for i in 0..10 {
        let _: Value = ca
            .send(
                reqwest::Method::PUT,
                &format!("/v1/rooms/while-down-{i}"),
                &json!({}),
            )
            .await
            .expect("write on a");
    }

    let mut b2 = spawn_daemon(&config_path);
    assert_eq!(b2.peer_id, b.peer_id, "the node key persists");
    let cb = Client::new(b2.api.clone(), None).expect("client");
    for room in &acked {
        let found: Option<Value> = cb
            .get_opt(&format!("/v1/rooms/{room}"))
            .await
            .expect("read");
        assert!(
            found.is_some(),
            "acknowledged room {room} was lost by the kill"
        );
    }
    wait_for("b caught up", || async {
        Ok(cb
            .get_opt::<Value>("/v1/rooms/while-down-9")
            .await?
            .is_some())
    })
    .await
    .expect("the restarted replica catches up");
    let both = [ca.clone(), cb.clone()];
    let rooms: Vec<String> = (0..10).map(|i| format!("while-down-{i}")).collect();
    let rooms: Vec<&str> = rooms
        .iter()
        .map(String::as_str)
        .chain(acked.iter().map(String::as_str))
        .collect();
    wait_for("equal", || all_equal(&both, &rooms))
        .await
        .expect("equal after catch-up");
    // SIGTERM: a graceful stop (flush, close) and a clean exit.
    let term = Command::new("kill")
        .args(["-TERM", &b2.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let status = b2.child.wait().expect("the daemon exits");
    assert!(
        status.success(),
        "SIGTERM must stop the daemon cleanly: {status}"
    );
    a.stop().await.expect("stop a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_not_on_the_allow_list_is_refused() {
    let root = common::test_dir();
    let friend = daemon::start(local_config("friend", &root.path().join("f"), Vec::new()))
        .await
        .expect("friend");
    let mut guarded_config = local_config(
        "guarded",
        &root.path().join("g"),
        vec![friend.dial_addr().expect("addr")],
    );
    guarded_config.allowed_peers = vec![friend.peer_id];
    let guarded = daemon::start(guarded_config).await.expect("guarded");
    let stranger = daemon::start(local_config(
        "stranger",
        &root.path().join("s"),
        vec![guarded.dial_addr().expect("addr")],
    ))
    .await
    .expect("stranger");
    let cg = client_of(&guarded).expect("client");
    wait_for("friend connected", || async {
        Ok(connected(&cg).await == 1)
    })
    .await
    .expect("the allowed peer connects");
    wait_for("stranger refused", || async {
        let metrics = reqwest::get(format!("http://{}/metrics", guarded.api))
            .await?
            .text()
            .await?;
        Ok(metrics
            .lines()
            .any(|l| l.starts_with("chorus_refused_connections_total ") && !l.ends_with(" 0")))
    })
    .await
    .expect("the stranger's connections are refused and counted");
    let view: Value = cg.get("/v1/cluster").await.expect("view");
    let stranger_id = stranger.peer_id.to_base58();
    let peers = view["peers"].as_array().expect("peers");
    assert!(
        !peers
            .iter()
            .any(|p| p["peer_id"] == stranger_id.as_str() && p["connected"] == true),
        "{view}"
    );
    for node in [stranger, guarded, friend] {
        node.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_with_a_code_and_a_message() {
    let root = common::test_dir();
    let mut config = local_config("api", &root.path().join("n"), Vec::new());
    config.api.body_bytes_max = 4096;
    config.api.token = Some("sesame".into());
    config.drills = false;
    let node = daemon::start(config).await.expect("replica");
    let anonymous = client_of(&node).expect("client");
    let c = Client::new(format!("http://{}", node.api), Some("sesame".into())).expect("client");
    let json = "application/json";

    let (status, _) = anonymous
        .raw(reqwest::Method::GET, "/v1/rooms", json, Vec::new())
        .await
        .expect("request");
    assert_eq!(status, 401);
    let (status, _) = anonymous
        .raw(reqwest::Method::GET, "/v1/health", json, Vec::new())
        .await
        .expect("request");
    assert_eq!(status, 200, "health needs no token");

    let _: Value = c
        .send(reqwest::Method::PUT, "/v1/rooms/ok", &json!({}))
        .await
        .expect("create");
    let cases: Vec<(reqwest::Method, &str, Vec<u8>, u16)> = vec![
        (
            reqwest::Method::POST,
            "/v1/rooms/ok/participants",
            b"{not json".to_vec(),
            400,
        ),
        (
            reqwest::Method::POST,
            "/v1/rooms/ok/participants",
            br#"{"session": "s"}"#.to_vec(),
            422,
        ),
        (
            reqwest::Method::PUT,
            "/v1/rooms/ok",
            br#"{"colour": 1}"#.to_vec(),
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/rooms/bad%20id",
            b"{}".to_vec(),
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/rooms/big",
            vec![b' '; 10_000],
            413,
        ),
        (
            reqwest::Method::POST,
            "/v1/rooms/ok/automerge",
            b"garbage".to_vec(),
            400,
        ),
        (reqwest::Method::GET, "/v1/rooms/missing", Vec::new(), 404),
        (
            reqwest::Method::DELETE,
            "/v1/rooms/missing/participants/s-9",
            Vec::new(),
            404,
        ),
        (reqwest::Method::GET, "/v1/nothing-here", Vec::new(), 404),
        (reqwest::Method::POST, "/v1/drill/heal", b"{}".to_vec(), 403),
    ];
    for (method, path, body, expected) in cases {
        let (status, text) = c
            .raw(method.clone(), path, json, body)
            .await
            .expect("request");
        assert_eq!(status, expected, "{method} {path}: {text}");
        let error: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        assert!(
            error["code"].is_string() && error["message"].is_string(),
            "{text}"
        );
    }
    // A room survives all of that, and the API still answers.
    let room: Value = c.get("/v1/rooms/ok").await.expect("read");
    assert_eq!(room["id"], "ok");
    node.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_stream_resumes_and_automerge_bytes_round_trip() {
    let root = common::test_dir();
    let a = daemon::start(local_config("a", &root.path().join("a"), Vec::new()))
        .await
        .expect("a");
    let lone = daemon::start(local_config("lone", &root.path().join("l"), Vec::new()))
        .await
        .expect("an unconnected replica");
    let ca = client_of(&a).expect("client");
    for room in ["e1", "e2", "e3"] {
        let _: Value = ca
            .send(
                reqwest::Method::PUT,
                &format!("/v1/rooms/{room}"),
                &json!({}),
            )
            .await
            .expect("create");
    }
    // Resume from the start of the stored change log: the three writes are
    // replayed, each with its stamp as its id (node/tests/api.rs covers
    // resuming after a given id, across a restart).
    let zero = "0000000000000000-00000000-0000000000000000";
    let response = reqwest::Client::new()
        .get(format!("http://{}/v1/changes", a.api))
        .header("Last-Event-ID", zero)
        .send()
        .await
        .expect("subscribe");
    assert_eq!(response.status(), 200);
    let mut response = response;
    let mut text = String::new();
    while !(text.contains("\"e3\"")) {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), response.chunk())
            .await
            .expect("events arrive")
            .expect("stream")
            .expect("not closed");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("\"e1\"") && text.contains("\"e2\""), "{text}");
    assert!(
        text.contains("id: 0") && text.contains("\"replayed\""),
        "{text}"
    );

    // A room's automerge bytes merge into a replica that never saw it.
    let bytes = reqwest::get(format!("http://{}/v1/rooms/e2/automerge", a.api))
        .await
        .expect("export")
        .bytes()
        .await
        .expect("bytes");
    assert!(bytes.len() > 50);
    let cl = client_of(&lone).expect("client");
    let (status, body) = cl
        .raw(
            reqwest::Method::POST,
            "/v1/rooms/e2/automerge",
            "application/octet-stream",
            bytes.to_vec(),
        )
        .await
        .expect("import");
    assert_eq!(status, 200, "{body}");
    let imported: Value = cl.get("/v1/rooms/e2").await.expect("read");
    let original: Value = ca.get("/v1/rooms/e2").await.expect("read");
    assert_eq!(imported, original);
    a.stop().await.expect("stop");
    lone.stop().await.expect("stop");
}
