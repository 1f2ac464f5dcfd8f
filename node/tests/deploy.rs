//! The deployment kit in `node/deploy/`, used as a new operator would:
//! `local-cluster.sh` generates the keys and secrets, starts three replicas
//! from the configs there, waits until they are ready, and stops them; the
//! replicas replicate through the configured PSK, allow-list and token.
//! And the daemon's systemd notifications (`chorus.service` is
//! `Type=notify`): READY=1 once the API listens, STOPPING=1 on SIGTERM.
//! Everything binds loopback only.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use chorus_node::client::{Client, HttpError};
use chorus_node::demo::{all_equal, wait_for};

mod common;
use common::{spawn_ready, test_dir, Process};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local-cluster.sh");
const NODES: [&str; 3] = ["a", "b", "c"];
/// The ports `local-cluster.sh` uses above its base port: the APIs, then
/// replication.
const PORT_OFFSETS: [u16; 6] = [0, 1, 2, 10, 11, 12];

/// A base port whose six ports are free on loopback now. Below Linux's
/// ephemeral range (32768 and up), so that no outgoing connection takes
/// one meanwhile; the start is spread by pid and time, so that test
/// binaries running in parallel rarely try the same block first.
fn free_base_port() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = u64::from(std::process::id()) ^ u64::from(nanos);
    for attempt in 0..500u64 {
        let base = 20_000 + ((seed + attempt * 7919) % 1_200) as u16 * 10;
        let free = PORT_OFFSETS
            .iter()
            .all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no block of free ports on loopback");
}

/// `local-cluster.sh MODE STATE` with the binary under test.
fn script(mode: &str, state: &Path, base: u16) -> Output {
    Command::new(SCRIPT)
        .arg(mode)
        .arg(state)
        .env("CHORUS_BIN", env!("CARGO_BIN_EXE_chorus"))
        .env("CHORUS_BASE_PORT", base.to_string())
        // CI's two cores are shared with other test binaries.
        .env("CHORUS_READY_TIMEOUT", "120")
        .env("RUST_LOG", "info,libp2p=warn,tower_http=warn")
        .stdin(Stdio::null())
        .output()
        .expect("run local-cluster.sh")
}

fn text(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Stops the cluster when dropped, so that a failing test leaves no daemon
/// behind (the script starts them in the background).
struct Cluster {
    state: PathBuf,
    base: u16,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = script("stop", &self.state, self.base);
    }
}

/// Whether `pid` is a live process: gone, or a zombie nobody reaped, is not.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|s| s != "Z"))
        })
        .unwrap_or(false)
}

fn pids(state: &Path) -> Vec<i32> {
    NODES
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(state.join(format!("node-{n}.pid")))
                .expect("a pid file per replica");
            text.trim().parse().expect("a pid")
        })
        .collect()
}

/// The first `@NAME@` placeholder of a template left in `text`.
fn placeholder(text: &str) -> Option<&str> {
    text.match_indices('@').find_map(|(at, _)| {
        let rest = &text[at + 1..];
        let end = rest.find(|c: char| !(c.is_ascii_uppercase() || c == '_'))?;
        (end > 0 && rest[end..].starts_with('@')).then(|| &text[at..at + end + 2])
    })
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777
}

fn clients(base: u16, token: Option<&str>) -> Vec<Client> {
    (0..3)
        .map(|i| {
            Client::new(
                format!("http://127.0.0.1:{}", base + i),
                token.map(String::from),
            )
            .expect("client")
        })
        .collect()
}

#[tokio::test]
async fn the_local_cluster_script_starts_three_replicas_that_converge_and_stops_them() {
    let dir = test_dir();
    let state = dir.path().join("state");
    let base = free_base_port();
    let cluster = Cluster {
        state: state.clone(),
        base,
    };

    let started = script("start", &state, base);
    assert!(started.status.success(), "start: {}", text(&started));
    let stdout = String::from_utf8_lossy(&started.stdout);
    for n in NODES {
        assert!(stdout.contains(&format!("node-{n}: ready")), "{stdout}");
    }

    // The secrets and the configs holding them are the operator's alone.
    for file in ["secrets/psk", "secrets/api-token"] {
        assert_eq!(mode(&state.join(file)), 0o600, "{file}");
    }
    for n in NODES {
        let config = state.join(format!("node-{n}.toml"));
        assert_eq!(mode(&config), 0o600, "node-{n}.toml");
        let text = std::fs::read_to_string(&config).expect("config");
        assert_eq!(placeholder(&text), None, "left in node-{n}.toml");
    }
    let token = std::fs::read_to_string(state.join("secrets/api-token")).expect("token");
    let token = token.trim();

    // Ready, each connected to both others (the peers and allow-lists of
    // the configs, through the PSK).
    let nodes = clients(base, Some(token));
    for (client, n) in nodes.iter().zip(NODES) {
        wait_for(
            &format!("node-{n} connected to both others"),
            || async move {
                let ready: Value = client.get("/v1/ready").await?;
                Ok(ready["status"] == "ready" && ready["connected_peers"] == 2)
            },
        )
        .await
        .expect("a full mesh");
    }
    let status = script("status", &state, base);
    assert!(status.status.success(), "status: {}", text(&status));

    // The token is required.
    let anonymous = clients(base, None);
    let refused = anonymous[0]
        .get::<Value>("/v1/rooms")
        .await
        .expect_err("no token, no rooms");
    assert_eq!(
        refused.downcast_ref::<HttpError>().map(|e| e.status),
        Some(401),
        "{refused:#}"
    );

    // A room created on a reaches b and c.
    let _: Value = nodes[0]
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/deploy-check",
            &json!({"max_participants": 7}),
        )
        .await
        .expect("create the room on node-a");
    let nodes = &nodes;
    wait_for("the room on every replica", || async move {
        for client in &nodes[1..] {
            if client
                .get_opt::<Value>("/v1/rooms/deploy-check")
                .await?
                .is_none()
            {
                return Ok(false);
            }
        }
        all_equal(nodes, &["deploy-check"]).await
    })
    .await
    .expect("the replicas converge");

    // Stop: SIGTERM to each, which announces a restart, and each exits.
    let before = pids(&state);
    let stopped = script("stop", &state, base);
    assert!(stopped.status.success(), "stop: {}", text(&stopped));
    for (pid, n) in before.iter().zip(NODES) {
        assert!(!alive(*pid), "node-{n} (pid {pid}) still runs");
        let log = std::fs::read_to_string(state.join(format!("node-{n}.log"))).expect("log");
        assert!(
            log.contains("leaving the cluster"),
            "node-{n} did not leave gracefully:\n{log}"
        );
    }
    let status = script("status", &state, base);
    assert!(
        !status.status.success(),
        "status after stop: {}",
        text(&status)
    );

    // Started again on the same state: the same keys, secrets and stores.
    let configs: Vec<String> = NODES
        .iter()
        .map(|n| std::fs::read_to_string(state.join(format!("node-{n}.toml"))).expect("config"))
        .collect();
    let again = script("start", &state, base);
    assert!(again.status.success(), "second start: {}", text(&again));
    for (before, n) in configs.iter().zip(NODES) {
        let after = std::fs::read_to_string(state.join(format!("node-{n}.toml"))).expect("config");
        assert_eq!(&after, before, "node-{n}.toml changed across restarts");
    }
    // New clients: the old ones' pooled connections went with the old
    // processes.
    let room: Option<Value> = clients(base, Some(token))[2]
        .get_opt("/v1/rooms/deploy-check")
        .await
        .expect("node-c answers");
    assert!(room.is_some(), "the room survived the restart on node-c");
    let stopped = script("stop", &state, base);
    assert!(stopped.status.success(), "second stop: {}", text(&stopped));
    drop(cluster);
}

#[test]
fn the_local_cluster_script_refuses_a_state_dir_inside_the_repository() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if !repo.join(".git").exists() {
        println!("skipped: not a git checkout, the script has no repository to protect");
        return;
    }
    let inside = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/state-in-the-repo");
    let output = Command::new(SCRIPT)
        .arg("start")
        .arg(&inside)
        // Were the check missing, the script would stop here, before
        // writing anything.
        .env("CHORUS_BIN", "/nonexistent/chorus")
        .output()
        .expect("run local-cluster.sh");
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("inside the repository"),
        "{}",
        text(&output)
    );
    assert!(!inside.exists(), "nothing is written in the repository");
}

/// A config for one replica on loopback: replication on any port, the API
/// on `api_port`.
fn single_config(dir: &Path, api_port: u16) -> PathBuf {
    let path = dir.join("chorus.toml");
    let mut file = std::fs::File::create(&path).expect("config");
    write!(
        file,
        "name = \"notify\"\ndata_dir = {:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n\
         [api]\nlisten = \"127.0.0.1:{api_port}\"\n",
        dir.join("data")
    )
    .expect("write config");
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// SIGTERM to `process`, a `chorus run` that printed its ready line or
/// sent READY=1, at once: `chorus run` listens for SIGTERM before either
/// (node/src/main.rs, `run`), so even an immediate stop leaves cleanly.
fn sigterm(process: &Process) {
    let pid = i32::try_from(process.child.id()).expect("a pid");
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0, "SIGTERM sent");
}

fn receive(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 4096];
    let len = socket
        .recv(&mut buffer)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buffer[..len]).into_owned()
}

#[tokio::test]
async fn the_daemon_tells_systemd_ready_once_its_api_listens_and_stopping_on_sigterm() {
    let dir = test_dir();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let api_port = free_port();
    let config = single_config(dir.path(), api_port);
    let log = dir.path().join("chorus.log");
    let child = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("RUST_LOG", "info,libp2p=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn chorus run");
    let mut process = Process {
        child,
        api: format!("http://127.0.0.1:{api_port}"),
        peer_id: String::new(),
    };

    // The first notification is READY=1, and by then the API answers: no
    // retry here.
    let ready = receive(&socket);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=replica ")),
        "{ready:?}"
    );
    let health: Value = Client::new(process.api.clone(), None)
        .expect("client")
        .get("/v1/health")
        .await
        .expect("the API answers once READY=1 is sent");
    assert_eq!(health["name"], "notify");

    sigterm(&process);
    let stopping = receive(&socket);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let status = process.child.wait().expect("exit");
    assert!(
        status.success(),
        "a clean exit after SIGTERM: {status}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[tokio::test]
async fn a_notify_socket_nobody_listens_on_does_not_stop_the_daemon() {
    let dir = test_dir();
    let config = single_config(dir.path(), 0);
    let mut command = Command::new(env!("CARGO_BIN_EXE_chorus"));
    command
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", dir.path().join("nobody-here.sock"));
    let mut process = spawn_ready(command);
    let health: Value = Client::new(process.api.clone(), None)
        .expect("client")
        .get("/v1/health")
        .await
        .expect("the daemon runs");
    assert_eq!(health["name"], "notify");
    sigterm(&process);
    let status = process.child.wait().expect("exit");
    assert!(status.success(), "a clean exit after SIGTERM: {status}");
}
