//! Daemons as child processes (`chorus run`), for the bench that needs one
//! process each: a SIGKILL that takes a whole replica down, and CPU time
//! and memory measured per daemon rather than shared by one process.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::client::Client;

/// How long a daemon may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A `chorus run` child, killed (SIGKILL) when dropped.
pub struct Daemon {
    pub peer_id: String,
    /// Its first listen address with `/p2p/<peer id>`: what later daemons dial.
    pub dial: String,
    pub client: Client,
    child: tokio::process::Child,
}

impl Daemon {
    /// Starts `exe run` with a config written under `dir`: loopback, ports
    /// chosen by the system, drills on, `peers` dialled; otherwise every
    /// default, as an operator would start it.
    pub async fn spawn(
        exe: &Path,
        name: &str,
        dir: &Path,
        peers: &[String],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let config = format!(
            "name = {name:?}\ndata_dir = {:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n\
             peers = {peers:?}\ndrills = true\n[api]\nlisten = \"127.0.0.1:0\"\n",
            dir.join("data").display().to_string(),
        );
        let config_path = dir.join("chorus.toml");
        std::fs::write(&config_path, config).context("write the config")?;
        // Kept with the store for a look after a failure (RUST_LOG=warn).
        let log = dir.join("stderr.log");
        let stderr = std::fs::File::create(&log).context("create the log")?;
        let mut command = tokio::process::Command::new(exe);
        // The config file says it all: no CHORUS_* override from the
        // caller's environment (an API token would refuse every request).
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CHORUS_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args(["run", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", exe.display()))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let mut line = String::new();
        let read = tokio::time::timeout(READY_TIMEOUT, async {
            BufReader::new(stdout).read_line(&mut line).await
        });
        match read.await {
            Ok(Ok(n)) if n > 0 => {}
            _ => bail!(
                "{name}: no ready line within {READY_TIMEOUT:?} (its log: {})",
                log.display()
            ),
        }
        let ready: Value =
            serde_json::from_str(&line).with_context(|| format!("{name}: ready line {line:?}"))?;
        let field = |key: &str| -> anyhow::Result<String> {
            ready[key]
                .as_str()
                .map(String::from)
                .with_context(|| format!("{name}: ready line without {key}: {line}"))
        };
        let peer_id = field("peer_id")?;
        let listen = ready["listen"][0]
            .as_str()
            .with_context(|| format!("{name}: ready line without a listen address: {line}"))?;
        Ok(Self {
            dial: format!("{listen}/p2p/{peer_id}"),
            client: Client::new(format!("http://{}", field("api")?), None)?,
            peer_id,
            child,
        })
    }

    /// SIGKILL, and the exit reaped: no leave, no flush.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait().context("exit status")?.is_some() {
            return Ok(()); // already gone
        }
        self.child.start_kill().context("SIGKILL")?;
        self.child.wait().await.context("reap")?;
        Ok(())
    }

    /// Its CPU time and resident memory now (`None` off Linux, or once it
    /// exited).
    pub fn usage(&self) -> Option<Usage> {
        Usage::of(self.child.id()?)
    }
}

/// One process's CPU time (user and system, every thread) and resident set.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub cpu: Duration,
    pub rss_bytes: u64,
}

impl Usage {
    /// From `/proc/<pid>/stat` (utime, stime in clock ticks) and
    /// `/proc/<pid>/status` (VmRSS).
    fn of(pid: u32) -> Option<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name, in parentheses, may hold spaces: count the
        // fields after its closing one (state is the first, utime the 12th).
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf reads a system constant; it has no pointers.
        let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let per_s = u64::try_from(per_s).ok().filter(|&t| t > 0)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(Usage {
            cpu: Duration::from_secs_f64(ticks as f64 / per_s as f64),
            rss_bytes: rss_kib * 1024,
        })
    }
}

/// CPU (share of one core) and memory over a window, per daemon.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub cpu_percent: Vec<f64>,
    pub rss_bytes: Vec<u64>,
}

impl Window {
    /// Between `before` and `after`, samples of the same daemons taken
    /// `secs` apart (daemons missing either sample are left out).
    pub fn between(before: &[Option<Usage>], after: &[Option<Usage>], secs: f64) -> Self {
        let mut window = Window::default();
        for (b, a) in before.iter().zip(after) {
            if let (Some(b), Some(a)) = (b, a) {
                let cpu = a.cpu.saturating_sub(b.cpu).as_secs_f64();
                window
                    .cpu_percent
                    .push(100.0 * cpu / secs.max(f64::EPSILON));
                window.rss_bytes.push(a.rss_bytes);
            }
        }
        window
    }

    /// `cpu mean/max % of a core, memory mean/max MiB`, or why not.
    pub fn describe(&self) -> String {
        if self.cpu_percent.is_empty() {
            return "not measured (needs /proc)".into();
        }
        let n = self.cpu_percent.len() as f64;
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let cpu_max = self.cpu_percent.iter().copied().fold(0.0, f64::max);
        let rss_max = self.rss_bytes.iter().copied().max().unwrap_or(0);
        format!(
            "cpu {:.1}% of a core per daemon (max {cpu_max:.1}%), memory {:.0} MiB (max {:.0} MiB)",
            self.cpu_percent.iter().sum::<f64>() / n,
            self.rss_bytes.iter().map(|&b| mib(b)).sum::<f64>() / n,
            mib(rss_max),
        )
    }
}
