//! The HTTP API's hardening on a real daemon: slow clients are cut off,
//! every rejection answers in the JSON error shape, and the change feed
//! resumes from the persisted change log across a restart.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use chorus_node::config::Config;
use chorus_node::daemon::{self, Running};
use chorus_node::demo::{client_of, local_config};

/// How long a test waits for an event before failing.
const EVENT_WAIT: Duration = Duration::from_secs(10);

fn config(dir: &Path) -> Config {
    local_config("api", dir, Vec::new())
}

/// One Server-Sent Event as the test sees it.
#[derive(Debug, Clone, Default)]
struct Sse {
    id: Option<String>,
    kind: Option<String>,
    data: String,
}

impl Sse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }

    fn room(&self) -> String {
        self.json()["room"].as_str().unwrap_or_default().to_string()
    }
}

/// An open `GET /v1/changes`, parsed event by event.
struct Feed {
    response: reqwest::Response,
    buffer: String,
}

impl Feed {
    async fn open(node: &Running, last_event_id: Option<&str>) -> Feed {
        let mut request = reqwest::Client::new().get(format!("http://{}/v1/changes", node.api));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("subscribe");
        assert_eq!(response.status(), 200);
        Feed {
            response,
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut event = Sse::default();
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.kind = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        event.data.push_str(v.trim_start());
                    }
                }
                if event.id.is_none() && event.kind.is_none() && event.data.is_empty() {
                    continue; // a keep-alive comment
                }
                return event;
            }
            let chunk = tokio::time::timeout(EVENT_WAIT, self.response.chunk())
                .await
                .expect("an event arrives")
                .expect("the stream stays up")
                .expect("the stream is not closed");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events until one for `room` (inclusive).
    async fn until_room(&mut self, room: &str) -> Vec<Sse> {
        let mut events = Vec::new();
        loop {
            let event = self.next().await;
            let done = event.room() == room;
            events.push(event);
            if done {
                return events;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_headers_slowly_is_cut_off() {
    let root = common::test_dir();
    let mut config = config(root.path());
    config.api.header_read_timeout_ms = 500;
    let node = daemon::start(config).await.expect("daemon");
    // A change feed opened before stays open past the timeout: the timer
    // covers reading headers, not streaming a response.
    let mut feed = Feed::open(&node, None).await;

    let started = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(node.api)
        .await
        .expect("connect");
    slow.write_all(b"GET /v1/hea").await.expect("half a line");
    let mut buf = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
            .await
            .expect("the server closes the connection within 5 s");
        match read {
            Ok(0) | Err(_) => break, // closed (or reset)
            Ok(_) => continue,       // an error response before closing
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "closed after {took:?}, before the timeout"
    );

    tokio::time::sleep(Duration::from_millis(700)).await;
    common::create_room(&node, "after-timeout").await;
    let event = feed.next().await;
    assert_eq!(event.room(), "after-timeout", "{event:?}");
    drop(feed);
    node.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_answers_in_the_json_error_shape() {
    let root = common::test_dir();
    let node = daemon::start(config(root.path())).await.expect("daemon");
    let client = client_of(&node).expect("client");
    let json = "application/json";
    let cases: Vec<(reqwest::Method, &str, u16)> = vec![
        // Path segments that are not UTF-8 once decoded.
        (reqwest::Method::GET, "/v1/rooms/%FF", 400),
        (reqwest::Method::PUT, "/v1/rooms/%C3%28", 400),
        (
            reqwest::Method::DELETE,
            "/v1/rooms/ok/participants/%FF",
            400,
        ),
        (reqwest::Method::POST, "/v1/nodes/%FF/drain", 400),
        // Ids made only of dots.
        (reqwest::Method::PUT, "/v1/rooms/...", 400),
        // Query strings that do not fit.
        (reqwest::Method::GET, "/v1/incidents?limit=many", 400),
        (reqwest::Method::GET, "/v1/incidents?colour=red", 400),
        (reqwest::Method::GET, "/v1/placement?room=a", 400),
        // A method the route does not take.
        (reqwest::Method::PATCH, "/v1/rooms/ok", 405),
    ];
    for (method, path, expected) in cases {
        let (status, text) = client
            .raw(method.clone(), path, json, Vec::new())
            .await
            .expect("request");
        assert_eq!(status, expected, "{method} {path}: {text}");
        let error: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        assert!(
            error["code"].is_string() && error["message"].is_string(),
            "{method} {path}: {text}"
        );
    }
    let response = reqwest::Client::new()
        .get(format!("http://{}/v1/changes", node.api))
        .header("Last-Event-ID", "7")
        .send()
        .await
        .expect("subscribe");
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("a JSON error");
    assert_eq!(error["code"], "invalid");
    node.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_resumes_from_the_stored_log_after_a_restart() {
    let root = common::test_dir();
    let node = daemon::start(config(root.path())).await.expect("daemon");
    let mut feed = Feed::open(&node, None).await;
    common::create_room(&node, "r1").await;
    common::create_room(&node, "r2").await;
    let seen = feed.until_room("r2").await;
    let id = |room: &str, events: &[Sse]| {
        events
            .iter()
            .find(|e| e.room() == room)
            .and_then(|e| e.id.clone())
            .unwrap_or_else(|| panic!("no id for {room} in {events:?}"))
    };
    let (r1, r2) = (id("r1", &seen), id("r2", &seen));
    assert!(r1 < r2, "ids are stamps in order: {r1} {r2}");
    drop(feed);
    node.stop().await.expect("stop");

    let node = daemon::start(config(root.path())).await.expect("restart");
    common::create_room(&node, "r3").await;
    common::create_room(&node, "r4").await;
    let mut feed = Feed::open(&node, Some(&r1)).await;
    common::create_room(&node, "r5").await; // live, possibly also in the first page
    let events = feed.until_room("r5").await;
    let rooms: Vec<String> = events.iter().map(Sse::room).collect();
    assert_eq!(rooms, ["r2", "r3", "r4", "r5"], "{events:?}");
    assert_eq!(events[0].id.as_deref(), Some(r2.as_str()), "the same id");
    assert_eq!(events[0].json()["origin"], "replayed");
    assert!(events[0].json()["hashes"][0].is_string(), "{events:?}");
    let ids: Vec<&str> = events.iter().filter_map(|e| e.id.as_deref()).collect();
    assert_eq!(ids.len(), events.len(), "every event has an id");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // Nothing further is sent twice: the next event is the next write.
    common::create_room(&node, "r6").await;
    assert_eq!(feed.next().await.room(), "r6");
    drop(feed);
    node.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_past_the_trimmed_log_sends_a_reset_first() {
    let root = common::test_dir();
    let mut config = config(root.path());
    config.replica.log_retention_ms = 500;
    config.replica.log_trim_interval_ms = 50;
    let node = daemon::start(config).await.expect("daemon");
    let mut feed = Feed::open(&node, None).await;
    common::create_room(&node, "old-1").await;
    common::create_room(&node, "old-2").await;
    let seen = feed.until_room("old-2").await;
    let first = seen[0].id.clone().expect("an id");
    drop(feed);
    // Both entries age out of the log (retention 500 ms, trimmed every 50).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    common::create_room(&node, "new").await;

    let mut feed = Feed::open(&node, Some(&first)).await;
    let reset = feed.next().await;
    assert_eq!(reset.kind.as_deref(), Some("reset"), "{reset:?}");
    let next = feed.next().await;
    assert_eq!(next.room(), "new", "from the oldest entry held: {next:?}");
    drop(feed);
    node.stop().await.expect("stop");
}

/// `POST /v1/rooms/{room}/batch`: several operations, including those with
/// no route of their own, as one transaction; one refused operation
/// refuses them all with a JSON error and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_writes_several_operations_as_one() {
    let root = common::test_dir();
    let node = daemon::start(config(root.path())).await.expect("daemon");
    common::create_room(&node, "b").await;
    let client = client_of(&node).expect("client");
    let join = json!({"op": "join", "request": {
        "session": "s1", "user": "u1", "role": "speaker", "owner": "sfu-1", "region": "eu"
    }});
    let publish = json!({"op": "publish", "session": "s1", "track_id": "cam",
        "track": {"kind": "video", "simulcast_layers": 2}});
    let active = json!({"op": "set_state", "session": "s1", "state": "active"});
    let ack: Value = client
        .send(
            reqwest::Method::POST,
            "/v1/rooms/b/batch",
            &json!({"ops": [join, publish, active]}),
        )
        .await
        .expect("batch");
    assert_eq!(ack["heads"].as_array().map(Vec::len), Some(1), "{ack}");
    let room: Value = client.get("/v1/rooms/b").await.expect("room");
    assert_eq!(room["sessions"]["s1"]["state"], "active", "{room}");
    assert_eq!(room["sessions"]["s1"]["tracks"]["cam"]["kind"], "video");

    let leave_nobody = json!({"op": "leave", "session": "nobody"});
    let join2 = json!({"op": "join", "request": {
        "session": "s2", "user": "u2", "role": "speaker", "owner": "sfu-1", "region": "eu"
    }});
    let (status, text) = client
        .raw(
            reqwest::Method::POST,
            "/v1/rooms/b/batch",
            "application/json",
            serde_json::to_vec(&json!({"ops": [join2, leave_nobody]})).expect("json"),
        )
        .await
        .expect("request");
    assert!((400..500).contains(&status), "{status} {text}");
    let error: Value = serde_json::from_str(&text).expect("a JSON error");
    assert_eq!(error["code"], "not_found", "{text}");
    let room: Value = client.get("/v1/rooms/b").await.expect("room");
    assert!(
        room["sessions"].get("s2").is_none(),
        "nothing applied: {room}"
    );
    node.stop().await.expect("stop");
}

/// Every write of a room's fields has its own route: a session's state and
/// tracks, permissions, attributes (set and removed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_field_of_a_room_has_a_route() {
    let root = common::test_dir();
    let node = daemon::start(config(root.path())).await.expect("daemon");
    common::create_room(&node, "f").await;
    let client = client_of(&node).expect("client");
    let join = json!({"session": "s1", "user": "u1", "role": "speaker",
        "owner": "sfu-1", "region": "eu"});
    let put = |path: &'static str, body: Value| {
        let client = client.clone();
        async move {
            let ack: Value = client
                .send(reqwest::Method::PUT, path, &body)
                .await
                .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
            assert!(ack["heads"].is_array(), "{ack}");
        }
    };
    let _: Value = client
        .send(reqwest::Method::POST, "/v1/rooms/f/participants", &join)
        .await
        .expect("join");
    put(
        "/v1/rooms/f/participants/s1/state",
        json!({"state": "active"}),
    )
    .await;
    put(
        "/v1/rooms/f/participants/s1/tracks/cam",
        json!({"kind": "video", "simulcast_layers": 3}),
    )
    .await;
    put(
        "/v1/rooms/f/participants/s1/tracks/mic",
        json!({"kind": "audio", "simulcast_layers": 1}),
    )
    .await;
    put(
        "/v1/rooms/f/permissions/u2",
        json!({"role": "audience", "publish": false, "subscribe": true}),
    )
    .await;
    put("/v1/rooms/f/attributes/topic", json!({"value": "rust"})).await;
    put("/v1/rooms/f/attributes/lang", json!({"value": "en"})).await;
    let room: Value = client.get("/v1/rooms/f").await.expect("room");
    let s1 = &room["sessions"]["s1"];
    assert_eq!(s1["state"], "active", "{room}");
    assert_eq!(s1["tracks"]["cam"]["simulcast_layers"], 3, "{room}");
    assert_eq!(s1["tracks"]["mic"]["kind"], "audio", "{room}");
    assert_eq!(room["permissions"]["u2"]["role"], "audience", "{room}");
    assert_eq!(room["config"]["attributes"]["topic"], "rust", "{room}");

    for path in [
        "/v1/rooms/f/participants/s1/tracks/cam",
        "/v1/rooms/f/permissions/u2",
        "/v1/rooms/f/attributes/topic",
    ] {
        let ack: Value = client
            .delete(path)
            .await
            .unwrap_or_else(|e| panic!("DELETE {path}: {e}"));
        assert!(ack["heads"].is_array(), "{ack}");
    }
    let room: Value = client.get("/v1/rooms/f").await.expect("room");
    let s1 = &room["sessions"]["s1"];
    assert!(s1["tracks"].get("cam").is_none(), "{room}");
    assert_eq!(s1["tracks"]["mic"]["kind"], "audio", "{room}");
    assert!(room["permissions"].get("u2").is_none(), "{room}");
    assert!(
        room["config"]["attributes"].get("topic").is_none(),
        "{room}"
    );
    assert_eq!(room["config"]["attributes"]["lang"], "en", "{room}");

    // Bad input: a clear 4xx in the JSON error shape, nothing written.
    for (method, path, body, status) in [
        (
            reqwest::Method::PUT,
            "/v1/rooms/f/participants/s1/state",
            r#"{"state": "dancing"}"#,
            422,
        ),
        (
            reqwest::Method::PUT,
            "/v1/rooms/f/participants/s1/state",
            r#"{"state": "left"}"#,
            400,
        ),
        (
            reqwest::Method::PUT,
            "/v1/rooms/f/participants/nobody/tracks/t",
            r#"{"kind": "audio", "simulcast_layers": 1}"#,
            404,
        ),
        (
            reqwest::Method::DELETE,
            "/v1/rooms/f/participants/s1/tracks/cam",
            "",
            404,
        ),
        (
            reqwest::Method::PUT,
            "/v1/rooms/f/permissions/u%20x",
            r#"{"role": "host", "publish": true, "subscribe": true}"#,
            400,
        ),
    ] {
        let (got, text) = client
            .raw(
                method.clone(),
                path,
                "application/json",
                body.as_bytes().to_vec(),
            )
            .await
            .expect("answered");
        assert_eq!(got, status, "{method} {path}: {text}");
        let error: Value = serde_json::from_str(&text).expect("a JSON error");
        assert!(error["code"].is_string(), "{text}");
    }
    node.stop().await.expect("stop");
}

/// `/v1/ready` answers 200 while the replica sees a majority and 503 once
/// it does not; `/v1/health` stays 200 (liveness). `/metrics` names each
/// node's grade and the build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_majority_and_metrics_name_grades() {
    let root = common::test_dir();
    let (a, b) = common::two_replicas(root.path()).await;
    let client = client_of(&a).expect("client");
    let b_id = b.peer_id.to_base58();
    let metrics = || async {
        reqwest::get(format!("http://{}/metrics", a.api))
            .await?
            .text()
            .await
    };
    chorus_node::demo::wait_for("a grades b healthy", || async {
        let text = metrics().await?;
        Ok(text.contains(&format!(
            "chorus_node_grade{{node=\"{b_id}\",grade=\"healthy\"}} 1"
        )))
    })
    .await
    .expect("b healthy in a's metrics");
    let text = metrics().await.expect("metrics");
    assert!(
        text.lines()
            .any(|l| l.starts_with("chorus_build_info{version=") && l.ends_with(" 1")),
        "{text}"
    );
    let ready = |client: chorus_node::client::Client| async move {
        client
            .raw(
                reqwest::Method::GET,
                "/v1/ready",
                "application/json",
                Vec::new(),
            )
            .await
            .expect("answered")
    };
    let (status, text) = ready(client.clone()).await;
    assert_eq!(status, 200, "{text}");

    b.stop().await.expect("stop b");
    chorus_node::demo::wait_for("a sees no majority", || async {
        Ok(ready(client.clone()).await.0 == 503)
    })
    .await
    .expect("not ready without a majority");
    let (_, text) = ready(client.clone()).await;
    let error: Value = serde_json::from_str(&text).expect("a JSON error");
    assert_eq!(error["code"], "not_ready", "{text}");
    let (status, _) = client
        .raw(
            reqwest::Method::GET,
            "/v1/health",
            "application/json",
            Vec::new(),
        )
        .await
        .expect("answered");
    assert_eq!(status, 200, "health is liveness only");
    a.stop().await.expect("stop a");
}
