//! How far a run or a swarm is, on stderr, for the person waiting. On a
//! terminal an indicatif bar; otherwise (a log file, a pipe) a run prints a
//! plain line every [`LINE_EVERY`] of wall time so that the log still says
//! how far it got, and a swarm prints nothing more, since each seed already
//! prints its line. Progress only reads a run's figures: it never touches
//! the simulation's generator or clock, so it cannot change a trace.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often a run without a terminal prints its plain progress line.
pub const LINE_EVERY: Duration = Duration::from_secs(10);

/// Whether the operator wants progress at all: not for machines, that is
/// not with `--json` and not under CI (which sets `CI`).
pub fn wanted(json: bool) -> bool {
    !json && std::env::var_os("CI").is_none()
}

/// Where a run is, as the runner tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunStatus {
    /// Simulated ms done.
    pub sim_ms: u64,
    /// The scenario's `duration_ms`: the writes and faults.
    pub duration_ms: u64,
    /// In the liveness phase: its start and its budget (simulated ms).
    pub liveness: Option<(u64, u64)>,
    /// Invariant failures recorded so far.
    pub failures: usize,
}

/// One run's progress on stderr. The runner calls [`RunProgress::update`]
/// often (every tenth of a second of wall time) and [`RunProgress::finish`]
/// once; a `replay` reuses it for its second run, so `update` after
/// `finish` starts afresh.
pub struct RunProgress {
    terminal: bool,
    hidden: bool,
    state: Mutex<Option<Shown>>,
    /// Updates received: shows a test that the runner reported.
    updates: AtomicU64,
}

struct Shown {
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
    /// The bar's current style is the liveness one.
    liveness: bool,
}

impl fmt::Debug for RunProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunProgress")
            .field("terminal", &self.terminal)
            .field("hidden", &self.hidden)
            .finish_non_exhaustive()
    }
}

impl RunProgress {
    /// A bar when stderr is a terminal indicatif can draw on (`TERM` set
    /// and not `dumb`), plain lines otherwise.
    pub fn stderr() -> Self {
        Self {
            terminal: !ProgressDrawTarget::stderr().is_hidden(),
            hidden: false,
            state: Mutex::new(None),
            updates: AtomicU64::new(0),
        }
    }

    /// Goes through the bar's motions without drawing (for tests).
    pub fn hidden() -> Self {
        Self {
            terminal: true,
            hidden: true,
            state: Mutex::new(None),
            updates: AtomicU64::new(0),
        }
    }

    /// How many times the runner reported.
    pub fn updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    pub fn update(&self, status: &RunStatus) {
        self.updates.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let shown = state.get_or_insert_with(|| Shown {
            started: now,
            last_line: now,
            bar: self.terminal.then(|| self.new_bar(status.duration_ms)),
            liveness: false,
        });
        match &shown.bar {
            Some(bar) => {
                if status.liveness.is_some() && !shown.liveness {
                    shown.liveness = true;
                    bar.set_style(liveness_style());
                }
                bar.set_position(status.sim_ms);
                bar.set_message(message(status));
            }
            None if now.duration_since(shown.last_line) >= LINE_EVERY => {
                shown.last_line = now;
                eprintln!("  {}", line(status, now.duration_since(shown.started)));
            }
            None => {}
        }
    }

    /// Clears the bar (the run's summary follows).
    pub fn finish(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = state.take().and_then(|s| s.bar) {
            bar.finish_and_clear();
        }
    }

    fn new_bar(&self, duration_ms: u64) -> ProgressBar {
        let target = if self.hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        ProgressBar::with_draw_target(Some(duration_ms.max(1)), target).with_style(faults_style())
    }
}

/// Simulated seconds, and the speed as a multiple of real time: the bar
/// counts simulated ms, so its rate is simulated ms per wall second.
fn faults_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} [{bar:30}] {sim} of {total} s simulated, {speed} real time, ETA {eta}; {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key("sim", |s: &ProgressState, w: &mut dyn fmt::Write| {
        let _ = write!(w, "{:.1}", s.pos() as f64 / 1_000.0);
    })
    .with_key("total", |s: &ProgressState, w: &mut dyn fmt::Write| {
        let _ = write!(w, "{:.1}", s.len().unwrap_or(0) as f64 / 1_000.0);
    })
    .with_key("speed", |s: &ProgressState, w: &mut dyn fmt::Write| {
        let _ = write!(w, "{:.1}×", s.per_sec() / 1_000.0);
    })
    .progress_chars("=> ")
}

/// The liveness phase ends at convergence, usually long before its
/// budget, so it shows no bar and no ETA (either would mislead).
fn liveness_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} liveness phase: {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn message(status: &RunStatus) -> String {
    let failed = failed(status.failures);
    match status.liveness {
        Some((from, budget)) => format!(
            "converging, {:.1} of {:.1} s of budget used; {failed}",
            status.sim_ms.saturating_sub(from) as f64 / 1_000.0,
            budget as f64 / 1_000.0
        ),
        None => failed,
    }
}

fn failed(failures: usize) -> String {
    match failures {
        0 => "no invariant failed yet".into(),
        n => format!("{n} invariant failures so far"),
    }
}

/// The plain line for logs: everything the bar shows, in words.
fn line(status: &RunStatus, wall: Duration) -> String {
    let wall_s = wall.as_secs_f64();
    let speed = status.sim_ms as f64 / 1_000.0 / wall_s.max(0.001);
    if status.liveness.is_some() {
        return format!(
            "liveness phase after {wall_s:.0} s wall, {speed:.1}x real time: {}",
            message(status)
        );
    }
    let end = status.duration_ms;
    let eta_s = end.saturating_sub(status.sim_ms) as f64 / 1_000.0 / speed.max(0.001);
    format!(
        "{:>5.1} % simulated ({} of {} s) in {wall_s:.0} s wall, {speed:.1}x real time, about {eta_s:.0} s to go; {}",
        100.0 * status.sim_ms as f64 / end.max(1) as f64,
        status.sim_ms / 1_000,
        end / 1_000,
        failed(status.failures),
    )
}

/// A swarm's bar over its seeds, with the passed and failed counts. Hidden
/// unless wanted and stderr is a terminal.
pub struct SeedBar {
    bar: ProgressBar,
    passed: u64,
    failed: u64,
}

impl SeedBar {
    pub fn new(seeds: u64, wanted: bool) -> Self {
        let target = if wanted {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let style = ProgressStyle::with_template(
            "{spinner} [{bar:30}] {pos}/{len} seeds, {msg}, {rate} seeds/s, ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |s: &ProgressState, w: &mut dyn fmt::Write| {
            let _ = write!(w, "{:.1}", s.per_sec());
        })
        .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(seeds), target).with_style(style);
        bar.set_message("0 passed, 0 failed");
        Self {
            bar,
            passed: 0,
            failed: 0,
        }
    }

    /// Prints with the bar out of the way (a seed's line on stdout, which
    /// may be the same terminal), then counts the seed.
    pub fn record(&mut self, passed: bool, print: impl FnOnce()) {
        self.bar.suspend(print);
        if passed {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        self.bar
            .set_message(format!("{} passed, {} failed", self.passed, self.failed));
        self.bar.inc(1);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
