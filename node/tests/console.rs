//! The web console (`/ui/`): served without the token but calling the API
//! with it; and, in headless Chromium during a partition drill, showing the
//! nodes with their grades and the failover with every call moved, as the
//! page updates itself (it is opened before the drill and never reloaded).
//!
//! The browser part needs Chromium (`/usr/bin/chromium`, or
//! `CHORUS_CHROMIUM`), `node`, and `npm ci --prefix node/tests/js` (for
//! playwright-core); `.ci/run` installs them. Without them it prints
//! `skipped: <reason>` and passes. `CHORUS_UPDATE_SCREENSHOT=1` writes the
//! screenshot to `docs/console.png`; otherwise it goes to a temporary
//! directory.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use chorus_node::client::Client;
use chorus_node::daemon::{self, Running};
use chorus_node::demo::{local_config, wait_for};
use common::grade;

const TOKEN: &str = "console-test-token";

/// How long the browser script may take for each phase (it waits 30 s
/// itself, then answers).
const PHASE_TIMEOUT: Duration = Duration::from_secs(90);

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHORUS_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Why the browser cannot run here, if it cannot.
fn missing() -> Option<String> {
    let browser = chromium();
    if !browser.is_file() {
        return Some(format!(
            "no Chromium at {} (apt-get install chromium, or set CHORUS_CHROMIUM)",
            browser.display()
        ));
    }
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {
            // playwright-core needs Node.js 20 or later.
            let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let major = version
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok());
            if major.is_none_or(|m| m < 20) {
                return Some(format!(
                    "Node.js {version}: playwright-core needs 20 or later"
                ));
            }
        }
        Ok(out) => return Some(format!("`node --version` failed: {}", out.status)),
        Err(e) => return Some(format!("no `node` ({e})")),
    }
    let module = js_dir().join("node_modules/playwright-core");
    (!module.is_dir())
        .then(|| "playwright-core is not installed (npm ci --prefix node/tests/js)".to_owned())
}

/// A replica on loopback with the API token set.
async fn start(name: &str, root: &Path, peers: Vec<libp2p::Multiaddr>) -> Running {
    let mut config = local_config(name, &root.join(name), peers);
    config.api.token = Some(TOKEN.to_owned());
    daemon::start(config).await.expect("replica starts")
}

fn client(node: &Running) -> Client {
    Client::new(format!("http://{}", node.api), Some(TOKEN.to_owned())).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_without_the_token_and_the_api_still_needs_it() {
    let root = common::test_dir();
    let a = start("a", root.path(), Vec::new()).await;
    let base = format!("http://{}", a.api);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");

    let moved = http.get(format!("{base}/ui")).send().await.expect("/ui");
    assert_eq!(moved.status(), 308);
    assert_eq!(moved.headers()["location"], "/ui/");

    for (path, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let res = http.get(format!("{base}{path}")).send().await.expect(path);
        assert_eq!(res.status(), 200, "{path} without a token");
        let headers = res.headers();
        let content_type = headers["content-type"].to_str().expect("ascii");
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        let csp = headers["content-security-policy"].to_str().expect("ascii");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }

    // The operator's guide quotes the policy as served.
    let csp = page_csp(&http, &base).await;
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .expect("docs/operations.md");
    let flat = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat(&docs).contains(&flat(&csp)),
        "docs/operations.md quotes the policy: {csp}"
    );

    // The page runs no inline script or style (the policy would block it)
    // and puts data into the page as text only.
    let html = http
        .get(format!("{base}/ui/"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(html.contains(r#"<script src="app.js" defer></script>"#));
    assert_eq!(html.matches("<script").count(), 1, "one external script");
    assert!(!html.contains("style="), "no inline style");
    let js = http
        .get(format!("{base}/ui/app.js"))
        .send()
        .await
        .expect("script")
        .text()
        .await
        .expect("text");
    for sink in [
        ".innerHTML",
        ".outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!js.contains(sink), "app.js uses {sink}");
    }

    // The data stays behind the token.
    let nodes = http
        .get(format!("{base}/v1/nodes"))
        .send()
        .await
        .expect("nodes");
    assert_eq!(nodes.status(), 401);
    let _: Value = client(&a).get("/v1/nodes").await.expect("with the token");
    // Only the console's own paths are public.
    let other = http
        .get(format!("{base}/ui/secrets.json"))
        .send()
        .await
        .expect("unknown asset");
    assert_eq!(other.status(), 404);
    a.stop().await.expect("stop a");
}

/// The policy the page is served with.
async fn page_csp(http: &reqwest::Client, base: &str) -> String {
    let res = http.get(format!("{base}/ui/")).send().await.expect("page");
    res.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// The browser script (`tests/js/console.mjs`), talked to by lines.
struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Browser {
    fn open(url: &str, screenshot: &Path, nodes: usize) -> Self {
        let mut child = Command::new("node")
            .arg(js_dir().join("console.mjs"))
            .arg(chromium())
            .arg(url)
            .arg(screenshot)
            .arg(nodes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run node");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        // A thread: the script's output must not block the runtime that
        // serves the daemons the page reads.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// The script's next report (`{phase, dom, problems, ...}`); panics on
    /// its failure or silence.
    async fn report(&mut self, phase: &str) -> Value {
        let line = tokio::time::timeout(PHASE_TIMEOUT, self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("the browser said nothing within {PHASE_TIMEOUT:?}"))
            .unwrap_or_else(|| panic!("the browser script ended before {phase:?}"));
        let report: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert_eq!(
            report["phase"], phase,
            "the page did not get there: {report:#}"
        );
        assert_eq!(
            report["problems"],
            json!([]),
            "script errors or CSP violations: {report:#}"
        );
        report
    }

    fn tell(&mut self, what: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{what}").expect("write to the browser script");
        stdin.flush().expect("flush");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A closed stdin tells the script to close the browser and exit;
        // killed instead, it could leave Chromium behind.
        drop(self.stdin.take());
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Owners of the live calls of `room` as `client` sees them, by session.
async fn owners(client: &Client, room: &str) -> anyhow::Result<Vec<(String, String)>> {
    let snapshot: Value = client.get(&format!("/v1/rooms/{room}")).await?;
    let sessions = snapshot["sessions"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    Ok(sessions
        .into_iter()
        .filter(|(_, s)| s["state"] != "left")
        .filter_map(|(id, s)| Some((id, s["owner"]["node"].as_str()?.to_owned())))
        .collect())
}

async fn join(client: &Client, room: &str, session: &str, owner: &str) {
    let body = json!({
        "session": session, "user": format!("user-{session}"), "role": "speaker",
        "owner": owner, "region": "local", "resume_token": format!("t-{session}"),
    });
    let _: Value = client
        .send(
            reqwest::Method::POST,
            &format!("/v1/rooms/{room}/participants"),
            &body,
        )
        .await
        .expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_grades_and_the_failover_of_a_partition_drill() {
    if let Some(reason) = missing() {
        println!("skipped: {reason}");
        return;
    }
    let root = common::test_dir();
    let a = start("a", root.path(), Vec::new()).await;
    let b = start("b", root.path(), vec![a.dial_addr().expect("a listens")]).await;
    let c = start(
        "c",
        root.path(),
        vec![
            a.dial_addr().expect("a listens"),
            b.dial_addr().expect("b listens"),
        ],
    )
    .await;
    let (ca, cb, cc) = (client(&a), client(&b), client(&c));
    let ids = [&a, &b, &c].map(|n| n.peer_id.to_base58());
    wait_for("every replica grades every other healthy", || async {
        for client in [&ca, &cb, &cc] {
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

    // C hosts the town hall's five calls; A and B a call each elsewhere.
    let victim = ids[2].clone();
    for (client, room) in [(&cc, "town-hall"), (&ca, "standup")] {
        let _: Value = client
            .send(
                reqwest::Method::PUT,
                &format!("/v1/rooms/{room}"),
                &json!({}),
            )
            .await
            .expect("create the room");
    }
    let moved: Vec<String> = (0..5).map(|i| format!("town-hall/s-{i}")).collect();
    for i in 0..5 {
        join(&cc, "town-hall", &format!("s-{i}"), &victim).await;
    }
    join(&ca, "standup", "alice", &ids[0]).await;
    join(&ca, "standup", "bob", &ids[1]).await;
    wait_for("the calls reach a", || async {
        let on = owners(&ca, "town-hall").await?;
        Ok(on.len() == 5 && owners(&ca, "standup").await?.len() == 2)
    })
    .await
    .expect("the calls replicate");

    // The console of A, opened before the drill.
    let screenshot = if std::env::var_os("CHORUS_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console.png")
    } else {
        root.path().join("console.png")
    };
    let url = format!("http://{}/ui/#token={TOKEN}", a.api);
    let mut browser = Browser::open(&url, &screenshot, 3);
    let report = browser.report("ready").await;
    // Opened without the token first, the page asked for it.
    assert_eq!(
        report["form"],
        json!({ "asked": "This API needs a token.", "typed_in": true }),
        "{report:#}"
    );
    let ready = &report["dom"];
    assert_eq!(ready["name"], "a");
    // The token left the address but stays for the tab.
    assert_eq!(ready["url"], format!("http://{}/ui/", a.api), "{ready:#}");
    assert_eq!(ready["token_stored"], TOKEN);
    for call in moved
        .iter()
        .chain(["standup/alice".into(), "standup/bob".into()].iter())
    {
        assert!(
            ready["calls"]
                .as_array()
                .is_some_and(|c| c.iter().any(|x| x == call.as_str())),
            "{call} listed: {ready:#}"
        );
    }

    // The drill: C is cut off from A and B. They convict it and take its
    // calls; C, in a minority, holds back.
    let _: Value = cc
        .send(
            reqwest::Method::POST,
            "/v1/drill/partition",
            &json!({ "peers": [ids[0], ids[1]] }),
        )
        .await
        .expect("partition");
    wait_for("a and b own the town hall's calls", || async {
        for client in [&ca, &cb] {
            let on = owners(client, "town-hall").await?;
            if on.len() != 5 || on.iter().any(|(_, o)| o == &victim) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
    .expect("the calls fail over");

    browser.tell(&json!({ "node": victim, "grades": ["down", "suspect"], "calls": moved }));
    let dom = browser.report("done").await["dom"].clone();
    println!("the console showed: {dom:#}");

    // The nodes with their names and grades: A by its name, all by id; C
    // graded down (or still suspect), the others healthy.
    let rows = dom["nodes"].as_array().expect("rows");
    assert_eq!(rows.len(), 3, "{dom:#}");
    for (id, want) in ids.iter().zip(["healthy", "healthy", "down"]) {
        let row = rows
            .iter()
            .find(|r| r["node"] == id.as_str())
            .unwrap_or_else(|| panic!("no row for {id}: {dom:#}"));
        let cells = row["cells"].as_array().expect("cells");
        let shown_grade = cells[1].as_str().unwrap_or_default();
        if want == "down" {
            assert!(["down", "suspect"].contains(&shown_grade), "{id}: {row}");
        } else {
            assert_eq!(shown_grade, want, "{id}: {row}");
        }
        let name = cells[0].as_str().unwrap_or_default();
        assert!(
            name.contains(id.as_str()) || name == "a (this node)",
            "{row}"
        );
    }
    assert!(
        rows.iter().any(|r| r["cells"][0] == "a (this node)"),
        "{dom:#}"
    );

    // The last failover: C's, every call moved (to A or B), on the chart.
    assert_eq!(dom["failover_node"], victim.as_str(), "{dom:#}");
    let listed = dom["moved"].as_array().expect("moves");
    for call in &moved {
        let entry = listed
            .iter()
            .find(|m| m["call"] == call.as_str())
            .unwrap_or_else(|| panic!("{call} not in the failover timeline: {dom:#}"));
        assert!(
            ids[..2].iter().any(|id| entry["to"] == id.as_str()),
            "{call} moved to a survivor: {entry}"
        );
    }
    let chart = dom["chart"].as_array().expect("chart text");
    assert!(chart.iter().any(|t| t == "convicted"), "{dom:#}");
    assert!(
        chart
            .iter()
            .any(|t| t.as_str().is_some_and(|t| t.starts_with("town-hall/s-"))),
        "{dom:#}"
    );
    assert!(dom["incidents"]
        .as_array()
        .is_some_and(|k| k.iter().any(|k| k == "convicted")));
    assert_eq!(dom["feed"], "live", "{dom:#}");
    assert!(
        screenshot.is_file(),
        "screenshot at {}",
        screenshot.display()
    );
    println!("screenshot: {}", screenshot.display());

    drop(browser);
    let _: Value = cc
        .send(reqwest::Method::POST, "/v1/drill/heal", &json!({}))
        .await
        .expect("heal");
    for node in [a, b, c] {
        node.stop().await.expect("stop");
    }
}
