//! The official JavaScript automerge against a real daemon: a join written
//! the way `docs/data-model.md` shows is accepted and visible in the room;
//! the same join with plain JS strings (text objects) is refused.
//!
//! Needs `node` and `npm ci --prefix node/tests/js` (`.ci/run` does it);
//! without them the test prints `skipped: <reason>` and passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use chorus_node::daemon;
use chorus_node::demo::{client_of, local_config};

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// Why the JS side cannot run here, if it cannot.
fn missing() -> Option<String> {
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => return Some(format!("`node --version` failed: {}", out.status)),
        Err(e) => return Some(format!("no `node` ({e})")),
    }
    let module = js_dir().join("node_modules/@automerge/automerge");
    (!module.is_dir())
        .then(|| "@automerge/automerge is not installed (npm ci --prefix node/tests/js)".to_owned())
}

/// Runs `interop.mjs` against room `js` of the daemon at `api`; what it saw.
async fn run_interop(api: String) -> Value {
    let script = js_dir().join("interop.mjs");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(&api)
            .arg("js")
            .output()
            .expect("run node")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("interop.mjs: {stdout}");
    assert!(
        out.status.success(),
        "interop.mjs failed ({}): {stdout}\n{stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not found"))
        + start.len();
    let len = text[from..]
        .find(end)
        .unwrap_or_else(|| panic!("{end:?} not found"));
    &text[from..from + len]
}

/// The JavaScript example in the docs is the code the test runs.
#[test]
fn the_documented_example_is_the_code_the_test_runs() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/data-model.md"),
    )
    .expect("docs/data-model.md");
    let section = between(&docs, "## Writing from other languages", "\n## ");
    let example = between(section, "```js\n", "```");
    let script = std::fs::read_to_string(js_dir().join("interop.mjs")).expect("interop.mjs");
    let import = "import * as A from \"@automerge/automerge\";\n";
    assert!(
        script.contains(import),
        "interop.mjs imports automerge as A"
    );
    let code = between(
        &script,
        "// --- the documented way: exactly the example in docs/data-model.md ---\n",
        "// --- end of the example ---",
    );
    assert_eq!(
        example,
        format!("{import}{code}"),
        "docs/data-model.md's JavaScript example and node/tests/js/interop.mjs differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_automerge_joins_the_documented_way_and_plain_strings_are_refused() {
    if let Some(reason) = missing() {
        println!("skipped: {reason}");
        return;
    }
    let root = common::test_dir();
    let node = daemon::start(local_config("n", &root.path().join("n"), Vec::new()))
        .await
        .expect("daemon");
    let c = client_of(&node).expect("client");
    let _: Value = c
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/js",
            &json!({"tenant": "acme"}),
        )
        .await
        .expect("create");

    let api = format!("http://{}", node.api);
    let seen = run_interop(api).await;
    assert_eq!(seen["documented"]["status"], 200, "{seen}");
    assert_eq!(seen["naive"]["status"], 422, "{seen}");
    assert_eq!(seen["naive"]["body"]["code"], "refused", "{seen}");

    let room: Value = c.get("/v1/rooms/js").await.expect("room");
    let session = &room["sessions"]["s-js"];
    assert_eq!(session["user"], "bob", "{room}");
    assert_eq!(session["role"], "speaker", "{room}");
    assert_eq!(session["region"], "eu-west", "{room}");
    assert_eq!(session["state"], "connecting", "{room}");
    assert_eq!(session["owner"]["epoch"], 1, "{room}");
    assert_eq!(session["owner"]["node"], "sfu-1", "{room}");
    assert!(
        session["joined_at_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{room}"
    );
    assert_eq!(
        room["counters"]["joins"], 1,
        "only the documented join counts: {room}"
    );
    assert!(room["sessions"].get("s-js-naive").is_none(), "{room}");

    node.stop().await.expect("stop");
}

/// A room compacted by the daemon (its history starts at a base, not at the
/// genesis) is still standard automerge: JavaScript loads it, writes the
/// documented join on it, and the daemon takes that join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_automerge_writes_to_a_compacted_room() {
    if let Some(reason) = missing() {
        println!("skipped: {reason}");
        return;
    }
    let root = common::test_dir();
    let mut config = local_config("n", &root.path().join("n"), Vec::new());
    config.replica.history_changes_max = 40;
    config.replica.end_ack_interval_ms = 50;
    config.replica.session_retention_ms = 0;
    let node = daemon::start(config).await.expect("daemon");
    let c = client_of(&node).expect("client");
    let _: Value = c
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/js",
            &json!({"tenant": "acme"}),
        )
        .await
        .expect("create");
    for i in 0..30 {
        let session = format!("churn-{i}");
        let body = json!({
            "session": session, "user": "u", "role": "speaker",
            "owner": "sfu-1", "region": "eu-west",
        });
        let _: Value = c
            .send(reqwest::Method::POST, "/v1/rooms/js/participants", &body)
            .await
            .expect("join");
        let _: Value = c
            .delete(&format!("/v1/rooms/js/participants/{session}"))
            .await
            .expect("leave");
    }
    let api = format!("http://{}", node.api);
    let export = format!("{api}/v1/rooms/js/automerge");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let bytes = reqwest::get(&export)
            .await
            .expect("export")
            .bytes()
            .await
            .expect("bytes");
        let doc = automerge::Automerge::load(&bytes).expect("an export loads");
        use automerge::ReadDoc;
        if doc
            .get(automerge::ROOT, "generation")
            .ok()
            .flatten()
            .is_some()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the room was not compacted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let seen = run_interop(api).await;
    assert_eq!(seen["documented"]["status"], 200, "{seen}");
    let room: Value = c.get("/v1/rooms/js").await.expect("room");
    assert_eq!(room["sessions"]["s-js"]["user"], "bob", "{room}");
    assert_eq!(room["counters"]["joins"], 31, "{room}");
    node.stop().await.expect("stop");
}
