//! A real partition: three `chorus` daemons in three network namespaces,
//! each joined by a veth link to a Linux bridge in a fourth namespace. One
//! daemon's link is cut at the bridge with `ip link set … down`, so its
//! packets vanish without a FIN or a RST — unlike the drill API, which
//! closes connections and lets both sides know at once. The test checks:
//!
//! 1. the two survivors own the cut-off node's calls within 2.5 s;
//! 2. the cut-off node keeps accepting writes;
//! 3. once the link is back up, all three converge (same rooms, same
//!    digest root) and the cut-off node sees its calls' new owners.
//!
//! It needs root and `ip` (iproute2); without them it says why and passes.
//! Every address it uses is inside a namespace it created (10.77.0.0/24 on
//! the veths, and each namespace's own loopback for the HTTP API).

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use chorus_node::client::Client;
use chorus_node::demo::wait_for;
use chorus_node::keys;

mod common;
use common::{spawn_ready, Process};

/// The issue's budget: cut → the survivors own every call of the cut node.
const FAILOVER_BUDGET: Duration = Duration::from_millis(2500);
/// How long the test watches for the re-homing: past the budget, so that a
/// slow run still reports its time before it fails.
const FAILOVER_WAIT_MAX: Duration = Duration::from_secs(10);
/// An `ip` command that has not finished by then is stuck.
const IP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a namespace's client thread may take to start.
const THREAD_START_MAX: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);
/// The daemons' libp2p port on their veth. Every daemon has a namespace of
/// its own, so fixed ports cannot collide, not even with a parallel run.
const P2P_PORT: u16 = 4001;
/// The HTTP API, on the loopback of the daemon's own namespace: it stays
/// reachable while the veth is cut off.
const API_LISTEN: &str = "127.0.0.1:7070";
/// Calls hosted by the node that gets cut off.
const CALLS: usize = 6;
const NAMES: [&str; 3] = ["a", "b", "c"];

#[test]
fn a_cut_link_moves_the_calls_and_the_heal_converges() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: creating network namespaces needs root");
        return;
    }
    let started = Instant::now();
    let root = tempfile::tempdir().expect("temp dir");
    // Declared after `root`, so dropped before it: the daemons die and the
    // namespaces go before their stores are deleted.
    let mut lab = Lab {
        pid: std::process::id(),
        namespaces: Vec::new(),
        daemons: Vec::new(),
    };
    if let Err(err) = lab.add_namespace(&lab.namespace("br")) {
        // No `ip`, or no permission for namespaces (a container, say).
        eprintln!("skipped: cannot create a network namespace: {err:#}");
        return;
    }
    // Past the first namespace the machine can do it: a failure is a bug.
    lab.build_network().expect("the links and the bridge");
    let nodes = lab.start_daemons(root.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(scenario(&lab, &nodes));
    println!(
        "partition test wall time {} ms",
        started.elapsed().as_millis()
    );
}

/// One daemon as the test sees it.
struct Node {
    name: &'static str,
    peer_id: String,
    api: NsClient,
}

/// The scenario proper, once the three daemons run: calls on c, the cut,
/// writes on both sides, the heal, convergence.
async fn scenario(lab: &Lab, nodes: &[Node]) {
    let [a, b, c] = nodes else {
        panic!("three nodes, got {}", nodes.len())
    };
    wait_for("all healthy", || all_healthy(nodes))
        .await
        .expect("membership forms over the bridge");

    // c hosts the calls that must move; a hosts one that must not: c, alone
    // on its side, has no majority (but see the known issue in after_heal).
    host_calls(c, "c-calls", "s", CALLS).await;
    host_calls(a, "a-calls", "a", 1).await;
    wait_for("the calls reach every replica", || async {
        for node in nodes {
            // A room not there yet is a 404: not yet, rather than an error.
            let c_calls = owners(&node.api, "c-calls").await.unwrap_or_default();
            let a_calls = owners(&node.api, "a-calls").await.unwrap_or_default();
            if c_calls.len() != CALLS || a_calls.len() != 1 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
    .expect("the calls replicate");

    lab.set_link("c", "down");
    let cut = Instant::now();
    let took = rehomed_after(&[a, b], &c.peer_id, cut)
        .await
        .unwrap_or_else(|| {
            panic!("the cut node's calls were not owned by survivors within {FAILOVER_WAIT_MAX:?}")
        });
    println!(
        "link cut -> calls re-homed on both survivors: {} ms",
        took.as_millis()
    );
    assert!(took <= FAILOVER_BUDGET, "{took:?} > {FAILOVER_BUDGET:?}");

    while_cut(a, c).await;

    lab.set_link("c", "up");
    let healed = Instant::now();
    wait_for("c rejoins: all healthy again", || all_healthy(nodes))
        .await
        .expect("membership re-forms after the heal");
    let rejoined = healed.elapsed();
    // With every node Healthy everywhere no failover runs any more, so the
    // state that converges now stays converged.
    wait_for("the three replicas converge", || converged(nodes))
        .await
        .expect("convergence after the heal");
    println!(
        "link up -> all healthy everywhere: {} ms; same digest root and rooms: {} ms",
        rejoined.as_millis(),
        healed.elapsed().as_millis()
    );
    after_heal(a, b, c).await;
}

/// While c is cut off: it takes a join and still thinks it hosts its calls
/// (nothing reached it); it knows it is in the minority and has taken no
/// call over; a takes a join too.
async fn while_cut(a: &Node, c: &Node) {
    let during = join(c, "c-calls", "late").await;
    during.expect("the cut-off node accepts a join");
    let during = join(a, "a-calls", "a-late").await;
    during.expect("a survivor accepts a join");
    let seen_by_c = owners(&c.api, "c-calls").await.expect("c reads its room");
    assert!(seen_by_c.contains_key("late"), "{seen_by_c:?}");
    for i in 0..CALLS {
        let owner = seen_by_c.get(&format!("s-{i}")).map(|o| o.0.as_str());
        assert_eq!(
            owner,
            Some(c.peer_id.as_str()),
            "c cannot know of a takeover yet"
        );
    }
    wait_for("c sees no majority", || async {
        Ok(c.api.get("/v1/nodes").await?["majority"] == false)
    })
    .await
    .expect("the cut-off node knows it is in the minority");
    let taken = takeovers(c).await.expect("c's journal");
    assert!(taken.is_empty(), "no majority, no takeover: {taken:?}");
}

/// After convergence: c sees the same owners as the survivors, and every
/// call it hosted has moved (a higher epoch); both partition writes
/// survived. Then the known issue below.
async fn after_heal(a: &Node, b: &Node, c: &Node) {
    let reference = owners(&a.api, "c-calls").await.expect("read a's room");
    for node in [b, c] {
        let view = owners(&node.api, "c-calls").await.expect("read the room");
        assert_eq!(view, reference, "{}'s view", node.name);
    }
    for i in 0..CALLS {
        let (owner, epoch) = reference.get(&format!("s-{i}")).expect("a live call");
        assert!(*epoch >= 2, "s-{i} never moved from {owner}");
    }
    assert!(reference.contains_key("late"), "c's partition-time join");
    let a_calls = owners(&c.api, "a-calls").await.expect("read c's room");
    assert!(a_calls.contains_key("a-late"), "{a_calls:?}");

    // c was alone during the cut and convicted a and b there. It must never
    // take a call over: a and b were alive throughout. (When b came back
    // Healthy first, c used to count a majority again and fail over a's
    // calls while a, alive, was still Down in its view; failovers now wait
    // `silence_ms` after a majority returns.)
    let stolen = takeovers(c).await.expect("c's journal");
    assert!(
        stolen.is_empty(),
        "after the heal the cut-off node took over calls of live nodes: {stolen:#?}"
    );
}

/// The takeovers `node` wrote itself, from its incident journal.
async fn takeovers(node: &Node) -> anyhow::Result<Vec<String>> {
    let journal = node.api.get("/v1/incidents").await?;
    let entries = journal.as_array().cloned().unwrap_or_default();
    Ok(entries
        .iter()
        .filter(|e| e["kind"] == "rehomed")
        .filter_map(|e| e["detail"].as_str())
        // A finished move is journalled as `rehomed` too, without an epoch.
        .filter(|detail| detail.contains("(epoch"))
        .map(String::from)
        .collect())
}

/// Creates `room` on `node` and joins `count` calls hosted by it.
async fn host_calls(node: &Node, room: &str, prefix: &str, count: usize) {
    let path = format!("/v1/rooms/{room}");
    let created = node.api.send(reqwest::Method::PUT, &path, json!({})).await;
    created.expect("create the room");
    for i in 0..count {
        join(node, room, &format!("{prefix}-{i}"))
            .await
            .expect("join");
    }
}

/// Joins `session` to `room` on `node`, hosted by `node` (a media node
/// admits participants onto itself).
async fn join(node: &Node, room: &str, session: &str) -> anyhow::Result<Value> {
    let body = json!({
        "session": session, "user": format!("user-{session}"), "role": "speaker",
        "owner": node.peer_id, "region": "local", "resume_token": format!("token-{session}"),
    });
    let path = format!("/v1/rooms/{room}/participants");
    node.api.send(reqwest::Method::POST, &path, body).await
}

/// Polls the survivors until none of the cut node's calls is still its
/// own on either; the time since `cut`, or `None` past the wait.
async fn rehomed_after(survivors: &[&Node], victim: &str, cut: Instant) -> Option<Duration> {
    while cut.elapsed() < FAILOVER_WAIT_MAX {
        let mut done = true;
        for node in survivors {
            let calls = owners(&node.api, "c-calls").await.unwrap_or_default();
            done &= calls.len() == CALLS && calls.values().all(|(owner, _)| owner != victim);
        }
        if done {
            return Some(cut.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

/// Every replica has the same digest root (the same heads for every room)
/// and reads the same JSON for both rooms.
async fn converged(nodes: &[Node]) -> anyhow::Result<bool> {
    let mut states = Vec::new();
    for node in nodes {
        let cluster = node.api.get("/v1/cluster").await?;
        states.push((
            cluster["root"].clone(),
            node.api.get("/v1/rooms/c-calls").await?,
            node.api.get("/v1/rooms/a-calls").await?,
        ));
    }
    Ok(states.windows(2).all(|pair| pair[0] == pair[1]))
}

/// Live calls of `room` as `api`'s replica sees them: session → (owner, epoch).
async fn owners(api: &NsClient, room: &str) -> anyhow::Result<BTreeMap<String, (String, u64)>> {
    let snapshot = api.get(&format!("/v1/rooms/{room}")).await?;
    let sessions = snapshot["sessions"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    Ok(sessions
        .into_iter()
        .filter(|(_, s)| s["state"] != "left")
        .filter_map(|(id, s)| {
            let node = s["owner"]["node"].as_str()?.to_string();
            Some((id, (node, s["owner"]["epoch"].as_u64()?)))
        })
        .collect())
}

/// Every replica grades all three nodes healthy.
async fn all_healthy(nodes: &[Node]) -> anyhow::Result<bool> {
    for node in nodes {
        let view = node.api.get("/v1/nodes").await?;
        let healthy = |id: &String| {
            view["nodes"].as_array().is_some_and(|all| {
                all.iter()
                    .any(|n| n["node"] == id.as_str() && n["grade"] == "healthy")
            })
        };
        if !nodes.iter().all(|n| healthy(&n.peer_id)) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The namespaces, links and daemons of one run, named with the test's pid
/// so that parallel or leftover runs never collide. Dropping it kills the
/// daemons, then deletes the namespaces, which destroys the veths and the
/// bridge with them.
struct Lab {
    pid: u32,
    namespaces: Vec<String>,
    daemons: Vec<Process>,
}

impl Lab {
    fn namespace(&self, who: &str) -> String {
        format!("chorus-{}-{who}", self.pid)
    }

    /// The bridge's port for `who` (lives in the bridge namespace).
    fn port(&self, who: &str) -> String {
        format!("ch-{}-{who}", self.pid)
    }

    /// `who`'s end of its link (lives in `who`'s namespace).
    fn inner(&self) -> String {
        format!("ch-{}", self.pid)
    }

    fn address(index: usize) -> String {
        format!("10.77.0.{}", index + 1)
    }

    fn add_namespace(&mut self, name: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }

    /// In the bridge namespace (already added), a bridge; one namespace per
    /// daemon, linked to it. Links are created from inside the namespaces
    /// (`-n`), so nothing is ever added to the root namespace.
    fn build_network(&mut self) -> anyhow::Result<()> {
        let bridge_ns = self.namespace("br");
        let bridge = format!("br-{}", self.pid);
        ip(&["-n", &bridge_ns, "link", "add", &bridge, "type", "bridge"])?;
        ip(&["-n", &bridge_ns, "link", "set", &bridge, "up"])?;
        for (index, who) in NAMES.iter().enumerate() {
            let (ns, port, inner) = (self.namespace(who), self.port(who), self.inner());
            self.add_namespace(&ns)?;
            ip(&[
                "-n", &bridge_ns, "link", "add", &port, "type", "veth", "peer", "name", &inner,
                "netns", &ns,
            ])?;
            ip(&["-n", &bridge_ns, "link", "set", &port, "master", &bridge])?;
            ip(&["-n", &bridge_ns, "link", "set", &port, "up"])?;
            let cidr = format!("{}/24", Self::address(index));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", &inner])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
        }
        Ok(())
    }

    /// Cuts (`down`) or restores (`up`) `who`'s link at the bridge: the
    /// daemon's own interface stays up and its packets are silently lost,
    /// as with a dead switch port.
    fn set_link(&self, who: &str, state: &str) {
        let bridge_ns = self.namespace("br");
        ip(&["-n", &bridge_ns, "link", "set", &self.port(who), state])
            .unwrap_or_else(|e| panic!("set {who}'s link {state}: {e:#}"));
    }

    /// Writes keys and configs, starts one daemon per namespace (each dials
    /// the other two) and opens a client in each namespace.
    fn start_daemons(&mut self, root: &Path) -> Vec<Node> {
        let ids: Vec<String> = NAMES
            .iter()
            .map(|who| {
                let key = keys::generate(&root.join(who).join("node.key")).expect("a node key");
                key.public().to_peer_id().to_base58()
            })
            .collect();
        let mut nodes = Vec::new();
        for (index, who) in NAMES.iter().enumerate() {
            let config_path = root.join(format!("{who}.toml"));
            std::fs::write(&config_path, config_text(index, &root.join(who), &ids))
                .expect("write the config");
            let mut command = Command::new("ip");
            command
                .args(["netns", "exec", &self.namespace(who)])
                .arg(env!("CARGO_BIN_EXE_chorus"))
                .args(["run", "--config"])
                .arg(&config_path);
            let daemon = spawn_ready(command);
            assert_eq!(daemon.peer_id, ids[index], "the daemon uses its key");
            let api = NsClient::enter(&self.namespace(who), &daemon.api)
                .expect("a client in the namespace");
            self.daemons.push(daemon);
            nodes.push(Node {
                name: who,
                peer_id: ids[index].clone(),
                api,
            });
        }
        nodes
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Daemons first: a namespace with a process in it outlives `ip
        // netns delete`, and its links with it.
        self.daemons.clear();
        for ns in self.namespaces.iter().rev() {
            if let Err(err) = ip(&["netns", "delete", ns]) {
                eprintln!("cleanup: {err:#}");
            }
        }
    }
}

/// The config of daemon `index`: its veth address, the other two as peers
/// (and the only peers allowed), fast anti-entropy as in the other tests.
fn config_text(index: usize, dir: &Path, ids: &[String]) -> String {
    let others = (0..ids.len()).filter(|&i| i != index);
    let peers: Vec<String> = others
        .clone()
        .map(|i| format!("\"/ip4/{}/tcp/{P2P_PORT}/p2p/{}\"", Lab::address(i), ids[i]))
        .collect();
    // The others only: the daemon refuses to start with its own id here.
    let allowed: Vec<String> = others.map(|i| format!("\"{}\"", ids[i])).collect();
    format!(
        "name = \"{name}\"\ndata_dir = {dir:?}\nlisten = [\"/ip4/{addr}/tcp/{P2P_PORT}\"]\n\
         peers = [{peers}]\nallowed_peers = [{allowed}]\n\
         [api]\nlisten = \"{API_LISTEN}\"\n[replica]\nanti_entropy_interval_ms = 200\n",
        name = NAMES[index],
        dir = dir.display().to_string(),
        addr = Lab::address(index),
        peers = peers.join(", "),
        allowed = allowed.join(", "),
    )
}

/// Runs `ip ARGS` to completion within [`IP_TIMEOUT`]; an error carries
/// its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `ip` (iproute2)")?;
    let deadline = Instant::now() + IP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().context("wait for ip")? {
            if status.success() {
                return Ok(());
            }
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            bail!("ip {}: {status}: {}", args.join(" "), stderr.trim());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("ip {}: not done within {IP_TIMEOUT:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An HTTP client whose sockets live in one network namespace. A namespace
/// belongs to a thread, so a dedicated thread enters it (setns) and drives
/// a current-thread runtime; requests run there as tasks, and every socket
/// they open is the namespace's.
struct NsClient {
    client: Client,
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsClient {
    fn enter(ns: &str, api: &str) -> anyhow::Result<Self> {
        let client = Client::new(api, None)?;
        // Where `ip netns add` mounts a namespace.
        let path = PathBuf::from("/var/run/netns").join(ns);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("in-{ns}"))
            .spawn(move || {
                let runtime = enter_namespace(&path).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("a runtime")
                });
                match runtime {
                    Ok(runtime) => {
                        let _ = ready_tx.send(Ok(runtime.handle().clone()));
                        // Drives the request tasks until the client is dropped.
                        runtime.block_on(async {
                            let _ = stopped.await;
                        });
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                    }
                }
            })
            .context("spawn the namespace's thread")?;
        let handle = ready_rx
            .recv_timeout(THREAD_START_MAX)
            .context("the namespace's thread did not start")??;
        Ok(Self {
            client,
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `job` with this namespace's client, on the namespace's thread.
    async fn run<T, Fut>(&self, job: impl FnOnce(Client) -> Fut) -> anyhow::Result<T>
    where
        T: Send + 'static,
        Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
    {
        self.handle
            .spawn(job(self.client.clone()))
            .await
            .context("the namespace's thread stopped")?
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let path = path.to_string();
        self.run(|client| async move { client.get(&path).await })
            .await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let path = path.to_string();
        self.run(|client| async move { client.send(method, &path, &body).await })
            .await
    }
}

impl Drop for NsClient {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter_namespace(path: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: setns only reads the descriptor, which `file` keeps open for
    // the call, and it moves the calling thread alone.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!(
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
