//! Hostile automerge bytes through the daemon's import route: refused with
//! a 4xx that names the path and the reason, changing nothing, and every
//! acknowledged write still there after a restart.

mod common;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjType, ReadDoc, ScalarValue, ROOT};
use serde_json::{json, Value};

use chorus_node::client::Client;
use chorus_node::daemon;
use chorus_node::demo::{client_of, local_config};

const BYTES: &str = "application/octet-stream";

fn join(session: &str) -> Value {
    json!({
        "session": session, "user": "alice", "role": "host", "owner": "media-1",
        "region": "eu", "resume_token": format!("t-{session}"),
    })
}

async fn create(c: &Client, room: &str, tenant: &str) {
    let _: Value = c
        .send(
            reqwest::Method::PUT,
            &format!("/v1/rooms/{room}"),
            &json!({"tenant": tenant}),
        )
        .await
        .expect("create");
}

async fn export(api: &std::net::SocketAddr, room: &str) -> Vec<u8> {
    let response = reqwest::get(format!("http://{api}/v1/rooms/{room}/automerge"))
        .await
        .expect("export");
    assert_eq!(response.status(), 200);
    response.bytes().await.expect("bytes").to_vec()
}

async fn import(c: &Client, room: &str, bytes: Vec<u8>) -> (u16, Value) {
    let (status, text) = c
        .raw(
            reqwest::Method::POST,
            &format!("/v1/rooms/{room}/automerge"),
            BYTES,
            bytes,
        )
        .await
        .expect("import request");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, body)
}

fn map(doc: &AutoCommit, parent: &automerge::ObjId, key: &str) -> automerge::ObjId {
    match doc.get(parent, key).expect("get") {
        Some((automerge::Value::Object(_), id)) => id,
        other => panic!("{key}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_imports_are_refused_and_acknowledged_writes_survive_a_restart() {
    let root = common::test_dir();
    let dir = root.path().join("n");
    let node = daemon::start(local_config("n", &dir, Vec::new()))
        .await
        .expect("daemon");
    let c = client_of(&node).expect("client");
    create(&c, "b", "acme").await;
    let _: Value = c
        .send(
            reqwest::Method::POST,
            "/v1/rooms/b/participants",
            &join("s1"),
        )
        .await
        .expect("an acknowledged join");

    // Delete the session, replace config, bump the schema: one change.
    let mut doc = AutoCommit::load(&export(&node.api, "b").await).expect("automerge");
    doc.set_actor(ActorId::from(b"js-client-00001".as_slice()));
    let sessions = map(&doc, &ROOT, "sessions");
    doc.delete(&sessions, "s1").expect("delete");
    doc.put_object(ROOT, "config", ObjType::Map)
        .expect("replace");
    doc.put(ROOT, "schema", ScalarValue::Uint(99))
        .expect("schema");
    let (status, body) = import(&c, "b", doc.save()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "refused", "{body}");
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains("refused at"),
        "the path is named: {message}"
    );

    // A plain JS string is a text object: refused, nothing counted.
    let mut doc = AutoCommit::load(&export(&node.api, "b").await).expect("automerge");
    doc.set_actor(ActorId::from(b"js-client-00002".as_slice()));
    let sessions = map(&doc, &ROOT, "sessions");
    let s2 = doc.put_object(&sessions, "s2", ObjType::Map).expect("map");
    let user = doc.put_object(&s2, "user", ObjType::Text).expect("text");
    doc.splice_text(&user, 0, 0, "bob").expect("splice");
    let counters = map(&doc, &ROOT, "counters");
    doc.increment(&counters, "joins", 1).expect("count");
    let (status, body) = import(&c, "b", doc.save()).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("sessions/s2/user")),
        "{body}"
    );

    // Another room's export under this room's name, or under a new name.
    create(&c, "a", "evil").await;
    let a = export(&node.api, "a").await;
    let (status, body) = import(&c, "b", a.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("room_id")),
        "{body}"
    );
    let (status, body) = import(&c, "c", a).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = c
        .raw(reqwest::Method::GET, "/v1/rooms/c", BYTES, Vec::new())
        .await
        .expect("read");
    assert_eq!(status, 404, "no room c was created");

    // An epoch that would pin the call forever.
    let (status, text) = c
        .raw(
            reqwest::Method::PUT,
            "/v1/rooms/b/participants/s1/owner",
            "application/json",
            json!({"epoch": u64::MAX, "node": "media-9"})
                .to_string()
                .into_bytes(),
        )
        .await
        .expect("owner request");
    assert_eq!(status, 400, "{text}");

    let room: Value = c.get("/v1/rooms/b").await.expect("still readable");
    assert_eq!(room["tenant"], "acme");
    assert_eq!(room["counters"]["joins"], 1);
    assert!(room["sessions"]["s1"].is_object(), "{room}");
    assert!(room["sessions"].get("s2").is_none(), "{room}");

    node.stop().await.expect("stop");
    let node = daemon::start(local_config("n", &dir, Vec::new()))
        .await
        .expect("restart");
    let c = client_of(&node).expect("client");
    let room: Value = c.get("/v1/rooms/b").await.expect("readable after restart");
    assert!(
        room["sessions"]["s1"].is_object(),
        "the acknowledged join: {room}"
    );
    node.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_is_refused_before_it_inflates() {
    let root = common::test_dir();
    let node = daemon::start(local_config("n", &root.path().join("n"), Vec::new()))
        .await
        .expect("daemon");
    let c = client_of(&node).expect("client");
    create(&c, "b", "acme").await;
    let bytes = chorus_engine::room::inflate::bomb(512 << 20);
    assert!(bytes.len() < 1 << 20, "{} bytes", bytes.len());
    let started = std::time::Instant::now();
    let (status, body) = import(&c, "b", bytes).await;
    eprintln!("a 512 MiB bomb refused in {:?}", started.elapsed());
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "too_large", "{body}");
    let _: Value = c
        .get("/v1/rooms/b")
        .await
        .expect("the daemon still answers");
    node.stop().await.expect("stop");
}
