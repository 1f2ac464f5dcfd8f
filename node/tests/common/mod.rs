//! Helpers shared by the daemon tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use chorus_node::daemon::{self, Running};
use chorus_node::demo::local_config;

/// A test's temporary directory, removed when the test passes. A failing
/// test keeps it: its in-process replicas outlive the test's body (the API
/// server's tasks hold them until the runtime shuts down) and flush then,
/// and sled waits forever on a store whose files were removed under it, so
/// removing it would turn a failure into a hang. Kept, it is named for a
/// look.
pub struct TestDir(Option<tempfile::TempDir>);

#[allow(dead_code)] // not every test file uses it
impl TestDir {
    pub fn path(&self) -> &Path {
        self.0.as_ref().map_or(Path::new("."), |d| d.path())
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.0.take() {
                eprintln!("the failed test's stores are kept in {:?}", dir.keep());
            }
        }
    }
}

#[allow(dead_code)] // not every test file uses it
pub fn test_dir() -> TestDir {
    TestDir(Some(tempfile::tempdir().expect("temp dir")))
}

/// A `chorus run` child process (killed when dropped).
#[allow(dead_code)] // not every test file uses it
pub struct Process {
    pub child: Child,
    pub api: String,
    pub peer_id: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `chorus run --config <path>` and waits for its ready line.
#[allow(dead_code)] // not every test file uses it
pub fn spawn_daemon(config_path: &Path) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chorus"));
    command.args(["run", "--config"]).arg(config_path);
    spawn_ready(command)
}

/// Starts `command`, a `chorus run` possibly behind a wrapper such as
/// `ip netns exec` that execs it (so killing the child kills the daemon),
/// and waits for its ready line.
pub fn spawn_ready(mut command: Command) -> Process {
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn chorus run");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the ready line");
    let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert_eq!(ready["event"], "ready");
    Process {
        child,
        api: format!("http://{}", ready["api"].as_str().expect("api")),
        peer_id: ready["peer_id"].as_str().expect("peer id").to_string(),
    }
}

/// Two in-process replicas `a` and `b` (b dials a) under `root`.
#[allow(dead_code)] // not every test file uses it
pub async fn two_replicas(root: &Path) -> (Running, Running) {
    let a = daemon::start(local_config("a", &root.join("a"), Vec::new()))
        .await
        .expect("replica a");
    let b = daemon::start(local_config(
        "b",
        &root.join("b"),
        vec![a.dial_addr().expect("a listens")],
    ))
    .await
    .expect("replica b");
    (a, b)
}

/// The grade `client`'s replica gives `node`, if it knows it.
#[allow(dead_code)] // not every test file uses it
pub async fn grade(client: &chorus_node::client::Client, node: &str) -> Option<String> {
    let view: Value = client.get("/v1/nodes").await.ok()?;
    view["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node"] == node)
        .and_then(|n| n["grade"].as_str().map(String::from))
}

/// Creates `room` with the defaults through `node`'s API.
#[allow(dead_code)] // not every test file uses it
pub async fn create_room(node: &Running, room: &str) {
    let client = chorus_node::demo::client_of(node).expect("client");
    let _: Value = client
        .send(
            reqwest::Method::PUT,
            &format!("/v1/rooms/{room}"),
            &serde_json::json!({}),
        )
        .await
        .expect("create a room");
}
