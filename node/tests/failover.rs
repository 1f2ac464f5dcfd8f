//! Failover with real daemons on loopback: three replicas host calls, one
//! is SIGKILLed, the survivors detect it and take its calls within 5 s, and
//! their incident journals tell the story. Also: drains through the API and
//! bad failover requests.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use chorus_node::client::Client;
use chorus_node::demo::{client_of, wait_for};

mod common;
use common::{grade, spawn_daemon, two_replicas};

/// The issue's bound: calls of a killed replica owned by survivors within it.
const FAILOVER_WALL_MAX: Duration = Duration::from_secs(5);

/// POSTs raw `body` to `path` and checks the status (for error handling).
async fn expect_status(client: &Client, path: &str, body: &[u8], status: u16) {
    let (got, text) = client
        .raw(
            reqwest::Method::POST,
            path,
            "application/json",
            body.to_vec(),
        )
        .await
        .expect("answered");
    assert_eq!(got, status, "{path}: {text}");
}

/// Owners of the live calls of `room` as `client` sees them.
async fn owners(client: &Client, room: &str) -> anyhow::Result<Vec<String>> {
    let snapshot: Value = client.get(&format!("/v1/rooms/{room}")).await?;
    let sessions = snapshot["sessions"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    Ok(sessions
        .values()
        .filter(|s| s["state"] != "left")
        .filter_map(|s| s["owner"]["node"].as_str().map(String::from))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_media_node_has_its_calls_taken_over_within_five_seconds() {
    let root = common::test_dir();
    let (a, b) = two_replicas(root.path()).await;
    let config_path = root.path().join("c.toml");
    let config = format!(
        "name = \"c\"\ndata_dir = {:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\npeers = [\"{}\", \"{}\"]\n\
         [api]\nlisten = \"127.0.0.1:0\"\n[replica]\nanti_entropy_interval_ms = 200\n",
        root.path().join("c").display().to_string(),
        a.dial_addr().expect("a listens"),
        b.dial_addr().expect("b listens"),
    );
    std::fs::write(&config_path, config).expect("write config");
    let mut c = spawn_daemon(&config_path);
    let survivors = [
        client_of(&a).expect("client"),
        client_of(&b).expect("client"),
    ];
    let victim = c.peer_id.clone();
    let cc = Client::new(c.api.clone(), None).expect("client");
    wait_for("every replica grades every other healthy", || async {
        let all = [&survivors[0], &survivors[1], &cc];
        let ids = [a.peer_id.to_base58(), b.peer_id.to_base58(), victim.clone()];
        for client in all {
            for id in &ids {
                if grade(client, id).await.as_deref() != Some("healthy") {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    })
    .await
    .expect("membership forms");

    // C hosts six calls (a media node admits participants onto itself).
    let _: Value = cc
        .send(reqwest::Method::PUT, "/v1/rooms/call-room", &json!({}))
        .await
        .expect("create the room");
    for i in 0..6 {
        let join = json!({
            "session": format!("s-{i}"), "user": format!("u-{i}"), "role": "speaker",
            "owner": victim, "region": "local", "resume_token": format!("t-{i}"),
        });
        let _: Value = cc
            .send(
                reqwest::Method::POST,
                "/v1/rooms/call-room/participants",
                &join,
            )
            .await
            .expect("join on c");
    }
    wait_for("the calls reach a and b", || async {
        for client in &survivors {
            let on = owners(client, "call-room").await.unwrap_or_default();
            if on.len() != 6 || on.iter().any(|o| o != &victim) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
    .expect("the calls replicate");

    c.child.kill().expect("SIGKILL"); // std's kill is SIGKILL on unix
    let _ = c.child.wait();
    let killed = Instant::now();
    let mut rehomed_after = None;
    while killed.elapsed() < FAILOVER_WALL_MAX {
        let mut done = true;
        for client in &survivors {
            let on = owners(client, "call-room").await.expect("read");
            done &= on.len() == 6 && on.iter().all(|o| o != &victim);
        }
        if done {
            rehomed_after = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = rehomed_after.unwrap_or_else(|| {
        panic!("the killed node's calls were not owned by survivors within {FAILOVER_WALL_MAX:?}")
    });
    println!("calls re-homed {} ms after SIGKILL", took.as_millis());
    let survivor_ids = [a.peer_id.to_base58(), b.peer_id.to_base58()];
    for client in &survivors {
        for owner in owners(client, "call-room").await.expect("read") {
            assert!(
                survivor_ids.contains(&owner),
                "owned by a survivor: {owner}"
            );
        }
    }

    // A client of the dead node resumes on a survivor: its token is good,
    // and the answer names the call's new owner (epoch moved on).
    let resumed: Value = survivors[1]
        .send(
            reqwest::Method::POST,
            "/v1/rooms/call-room/participants/s-0/resume",
            &json!({ "token": "t-0" }),
        )
        .await
        .expect("resume on b");
    let new_owner = resumed["owner"]["node"]
        .as_str()
        .expect("owner")
        .to_string();
    assert!(survivor_ids.contains(&new_owner), "{resumed}");
    assert!(resumed["owner"]["epoch"].as_u64() > Some(1), "{resumed}");
    expect_status(
        &survivors[0],
        "/v1/rooms/call-room/participants/s-0/resume",
        br#"{"token": "wrong"}"#,
        403,
    )
    .await;

    // Both survivors' journals tell the story: suspicion, conviction (with
    // the reason), re-homing (a survivor that took no call journals the
    // failover's end at its next move tick, after the calls moved).
    for client in &survivors {
        let told = wait_for("the journal tells the failover", || async {
            let entries: Vec<Value> = client.get("/v1/incidents").await?;
            let about = |kind: &str| {
                entries.iter().any(|e| {
                    e["kind"] == kind && e["detail"].as_str().is_some_and(|d| d.contains(&victim))
                })
            };
            Ok(about("suspected") && about("convicted") && about("rehomed"))
        })
        .await;
        if told.is_err() {
            let entries: Vec<Value> = client.get("/v1/incidents").await.expect("incidents");
            panic!("the journal misses part of the failover: {entries:#?}");
        }
        assert!(grade(client, &victim).await.as_deref() == Some("down"));
    }
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_go_through_the_api_and_bad_requests_are_refused() {
    let root = common::test_dir();
    let (a, b) = two_replicas(root.path()).await;
    let ca = client_of(&a).expect("client");
    let cb = client_of(&b).expect("client");
    let b_id = b.peer_id.to_base58();
    wait_for("a knows b", || async {
        Ok(grade(&ca, &b_id).await.as_deref() == Some("healthy"))
    })
    .await
    .expect("membership forms");

    let order: Value = ca
        .send(
            reqwest::Method::POST,
            &format!("/v1/nodes/{b_id}/drain"),
            &json!({ "rate_per_s": 5 }),
        )
        .await
        .expect("drain");
    assert_eq!(order["active"], true);
    assert_eq!(order["rate_per_s"], 5);
    // The order spreads: b itself learns it is draining.
    wait_for("b sees its drain", || async {
        let view: Value = cb.get("/v1/nodes").await?;
        Ok(view["nodes"].as_array().is_some_and(|n| {
            n.iter()
                .any(|n| n["node"] == b_id.as_str() && n["draining"] == true)
        }))
    })
    .await
    .expect("the drain order spreads");
    // Placement skips a draining node.
    let placed: Value = ca
        .get("/v1/placement?room=r&session=s&region=local")
        .await
        .expect("placement");
    assert_eq!(placed["node"], a.peer_id.to_base58());
    let cancelled: Value = ca
        .delete(&format!("/v1/nodes/{b_id}/drain"))
        .await
        .expect("cancel");
    assert_eq!(cancelled["active"], false);

    // Bad input: clear 400s, not panics.
    expect_status(
        &ca,
        &format!("/v1/nodes/{b_id}/drain"),
        br#"{"rate_per_s": 0}"#,
        400,
    )
    .await;
    expect_status(&ca, "/v1/nodes/bad%20id/drain", b"", 400).await;
    expect_status(&ca, "/v1/nodes/12D3KooWNobodyKnowsThisNode/drain", b"", 404).await;
    expect_status(&ca, "/v1/health/app", br#"{"load": -1}"#, 400).await;
    // A media node reports overload: its peers grade it Degraded.
    expect_status(&cb, "/v1/health/app", br#"{"load": 1.5}"#, 204).await;
    wait_for("a grades b degraded", || async {
        Ok(grade(&ca, &b_id).await.as_deref() == Some("degraded"))
    })
    .await
    .expect("degraded spreads");
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}
