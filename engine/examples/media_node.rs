//! Three media nodes (SFUs), each a separate process embedding a full
//! Chorus replica on loopback. Each creates a room and hosts its calls;
//! the rooms replicate. Then one node is SIGKILLed: the survivors take its
//! calls over and print one line per event:
//!
//! ```text
//! node-1: acquired room-0/call-2 epoch 2 from <node-0's id> (failover)
//! ```
//!
//! The run exits 0 when every orphaned call ends owned by exactly one
//! survivor, the survivors agree, and for each call their "acquired" minus
//! "released" events add up to 1.
//!
//! Run: `cargo run --release -p chorus-engine --features network --example media_node`

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_engine::net::{Keypair, Multiaddr, Network, PeerId};
use chorus_engine::storage::SledKv;
use chorus_engine::*;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const NODES: usize = 3;
const CALLS: usize = 4;
/// The failover budget: "now yours" must reach the survivors within it.
const FAILOVER_BUDGET: Duration = Duration::from_millis(2500);

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--node") {
        return node(&args[2..]);
    }
    let ok = orchestrate()?;
    std::process::exit(if ok { 0 } else { 1 });
}

// ---- one media node ------------------------------------------------------

/// Args: INDEX DIR PORT0 PORT1 PORT2. Keys are DIR/key-N.
fn node(args: &[String]) -> Res<()> {
    let me: usize = args[0].parse()?;
    let dir = std::path::PathBuf::from(&args[1]);
    let ports: Vec<u16> = args[2..]
        .iter()
        .map(|p| p.parse())
        .collect::<Result<_, _>>()?;
    let keys: Vec<Keypair> = (0..NODES).map(|i| key(&dir, i)).collect::<Res<_>>()?;
    let ids: Vec<PeerId> = keys.iter().map(|k| k.public().to_peer_id()).collect();
    let mut network = Network::new(keys[me].clone(), vec![addr(ports[me], None)?]);
    network.peers = (0..NODES)
        .filter(|&i| i != me)
        .map(|i| addr(ports[i], Some(ids[i])))
        .collect::<Res<_>>()?;
    network.allowed_peers = ids.clone();
    network.name = format!("node-{me}");
    let this = network.node_id();
    let kv = Arc::new(SledKv::open(&dir.join(format!("store-{me}")))?);
    let engine = Engine::start_networked(
        kv,
        EngineConfig::new(this.clone()),
        network,
        Arc::new(SystemClock),
    )?;

    // Announce events as they come.
    let mut events = engine.node_events();
    std::thread::spawn(move || {
        while let Ok(event) = events.blocking_recv() {
            match event {
                NodeEvent::Acquired {
                    room,
                    session,
                    epoch,
                    from,
                    reason,
                } => {
                    let from = from.map_or("nobody".into(), |n| n.to_string());
                    println!("acquired {room}/{session} epoch {epoch} from {from} ({reason:?})");
                }
                NodeEvent::Released {
                    room,
                    session,
                    epoch,
                    to,
                } => {
                    println!("released {room}/{session} epoch {epoch} to {to}");
                }
                _ => {}
            }
        }
    });

    // Host a room and its calls.
    let room = RoomId::parse(format!("room-{me}"))?;
    engine.create_room(&room, &TenantId::parse("acme")?, RoomConfig::default())?;
    for c in 0..CALLS {
        engine.join(
            &room,
            JoinRequest {
                session: SessionId::parse(format!("call-{c}"))?,
                user: UserId::parse(format!("user-{me}-{c}"))?,
                role: Role::Speaker,
                owner: this.clone(),
                region: RegionId::parse("default")?,
                resume_token: None,
            },
        )?;
    }
    // Ready once every node's room is here.
    while engine.list_rooms()?.len() < NODES {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("ready {this}");
    // Commands on stdin: `report` prints who owns every call.
    for line in std::io::stdin().lines() {
        if line? == "report" {
            for summary in engine.list_rooms()? {
                let Some(snapshot) = engine.room(&summary.id)? else {
                    continue;
                };
                for (session, s) in &snapshot.sessions {
                    println!("owner {}/{session} {}", summary.id, s.owner.node);
                }
            }
            println!("end");
        }
    }
    Ok(())
}

fn key(dir: &std::path::Path, i: usize) -> Res<Keypair> {
    let bytes = std::fs::read(dir.join(format!("key-{i}")))?;
    Ok(Keypair::from_protobuf_encoding(&bytes)?)
}

fn addr(port: u16, peer: Option<PeerId>) -> Res<Multiaddr> {
    let text = match peer {
        Some(peer) => format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}"),
        None => format!("/ip4/127.0.0.1/tcp/{port}"),
    };
    Ok(text.parse()?)
}

// ---- the orchestrator ----------------------------------------------------

struct Proc {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    id: String,
}

fn orchestrate() -> Res<bool> {
    let dir = tempfile::tempdir()?;
    let mut ports = Vec::new();
    for i in 0..NODES {
        let key = Keypair::generate_ed25519();
        std::fs::write(
            dir.path().join(format!("key-{i}")),
            key.to_protobuf_encoding()?,
        )?;
        // A free port, released for the node to bind.
        ports.push(
            std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port(),
        );
    }
    let mut procs = Vec::new();
    for i in 0..NODES {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--node")
            .arg(i.to_string())
            .arg(dir.path())
            .args(ports.iter().map(u16::to_string))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        procs.push(Proc {
            child,
            stdin,
            lines,
            id: String::new(),
        });
    }
    for (i, p) in procs.iter_mut().enumerate() {
        let line = next_line(p, Duration::from_secs(30), |l| l.starts_with("ready "))?;
        p.id = line["ready ".len()..].to_string();
        println!(
            "node-{i} ({}) hosts room-{i} and its {CALLS} calls; all rooms replicated",
            p.id
        );
    }
    // Let failure detection see everyone alive before the kill.
    std::thread::sleep(Duration::from_secs(2));
    let mut victim = procs.remove(0);
    victim.child.kill()?; // SIGKILL
    let killed = Instant::now();
    println!("SIGKILLed node-0 ({})", victim.id);
    let _ = victim.child.wait();

    // Collect events until every orphaned call was acquired (or a deadline).
    let mut tally = Tally {
        killed: Some(killed),
        victim: victim.id.clone(),
        ..Tally::default()
    };
    let deadline = killed + Duration::from_secs(15);
    while tally.net.values().filter(|v| **v > 0).count() < CALLS && Instant::now() < deadline {
        for (i, p) in procs.iter().enumerate() {
            while let Ok(line) = p.lines.try_recv() {
                println!("node-{}: {line}", i + 1);
                tally.event(&line);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Settle, then read every survivor's view (events still arriving count,
    // and are timed, too).
    std::thread::sleep(Duration::from_secs(2));
    let mut views = Vec::new();
    for (i, p) in procs.iter_mut().enumerate() {
        writeln!(p.stdin, "report")?;
        let mut owners = BTreeMap::new();
        loop {
            let line = next_line(p, Duration::from_secs(10), |_| true)?;
            if line == "end" {
                break;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["owner", call, owner] = words.as_slice() {
                owners.insert(call.to_string(), owner.to_string());
            } else {
                println!("node-{}: {line}", i + 1);
                tally.event(&line);
            }
        }
        views.push(owners);
    }
    for p in procs.iter_mut() {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
    let survivors: Vec<&str> = procs.iter().map(|p| p.id.as_str()).collect();
    let (net, last_acquired) = (&tally.net, tally.last_acquired);
    let mut ok = views.windows(2).all(|w| w[0] == w[1]);
    if !ok {
        println!("FAIL: the survivors disagree on ownership");
    }
    if tally.odd > 0 {
        println!(
            "FAIL: {} acquisitions of the dead node's calls were not failovers from it",
            tally.odd
        );
        ok = false;
    }
    for c in 0..CALLS {
        let call = format!("room-0/call-{c}");
        let owner = views[0].get(&call).map_or("none", String::as_str);
        let sum = net.get(&call).copied().unwrap_or(0);
        let good = survivors.contains(&owner) && sum == 1;
        println!(
            "{call}: owner {owner}, acquired - released = {sum} {}",
            if good { "ok" } else { "FAIL" }
        );
        ok &= good;
    }
    println!("last acquisition {last_acquired:?} after the kill (budget {FAILOVER_BUDGET:?})");
    ok &= last_acquired <= FAILOVER_BUDGET;
    println!("{}", if ok { "PASS" } else { "FAIL" });
    Ok(ok)
}

/// The survivors' events: acquired minus released per call, when the last
/// acquisition came, and acquisitions of the dead node's calls that do not
/// say "from it, by failover".
#[derive(Default)]
struct Tally {
    net: BTreeMap<String, i64>,
    killed: Option<Instant>,
    victim: String,
    last_acquired: Duration,
    odd: usize,
}

impl Tally {
    /// `acquired ROOM/CALL epoch E from NODE (REASON)` or
    /// `released ROOM/CALL epoch E to NODE`.
    fn event(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["acquired", call, "epoch", _, "from", from, reason] => {
                *self.net.entry(call.to_string()).or_default() += 1;
                if let Some(killed) = self.killed {
                    self.last_acquired = killed.elapsed();
                }
                let orphan = call.starts_with("room-0/");
                if orphan && (*from != self.victim || *reason != "(Failover)") {
                    self.odd += 1;
                }
            }
            ["released", call, ..] => *self.net.entry(call.to_string()).or_default() -= 1,
            _ => {}
        }
    }
}

fn next_line(p: &Proc, wait: Duration, want: impl Fn(&str) -> bool) -> Res<String> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = p
            .lines
            .recv_timeout(left)
            .map_err(|_| "a node went quiet")?;
        if want(&line) {
            return Ok(line);
        }
    }
}
