//! `chorus-sim`: the deterministic partition simulator. See
//! `docs/simulator.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use chorus_simulator::mutation::Mutation;
use chorus_simulator::progress::{self, RunProgress, SeedBar};
use chorus_simulator::report::Report;
use chorus_simulator::run::{run, RunOptions, RunResult};
use chorus_simulator::scenario::Scenario;
use chorus_simulator::{svg, swarm};

// Large runs spend about half their time allocating and freeing
// automerge's small objects: loading cold rooms and dropping evicted ones
// (docs/scale.md, "Where the whole minute goes"). mimalloc does that
// faster than the system allocator; results are unchanged (allocation
// order is not part of any trace).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "chorus-sim",
    version,
    about = "Chorus partition simulator: seeded fault schedules against the real replica"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one scenario file with one seed.
    Run {
        #[command(flatten)]
        run: RunArgs,
        /// Test only: break something on purpose (lying-disk:NODE,
        /// deaf-to-room:NODE:ROOM, misread-room:NODE, ownership-min,
        /// compaction-drops-joins, compaction-ignores-gate); the run must
        /// then fail.
        #[arg(long, hide = true)]
        mutate: Option<Mutation>,
    },
    /// Runs many seeds, each drawing its own cluster, network and faults.
    Swarm {
        /// How many seeds.
        #[arg(long)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Seeds run in parallel.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// One JSON report per line instead of a line of text per seed.
        #[arg(long)]
        json: bool,
    },
    /// Re-runs a seed twice, checks the two runs are identical, and prints
    /// its trace. `--scenario swarm` replays a swarm seed.
    Replay {
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// A scenario file, or `swarm` for the scenario a swarm seed draws.
    #[arg(long)]
    scenario: PathBuf,
    #[arg(long)]
    seed: u64,
    /// Print one JSON object instead of the text summary.
    #[arg(long)]
    json: bool,
    /// Draw the run as a timeline (SVG) into this file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Write a line per notable event into this file.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Run the scenario with this many nodes instead of its own `nodes`
    /// (for a curve over cluster sizes with everything else the same).
    /// Refused if an event, region or link names a node past it.
    #[arg(long)]
    nodes: Option<usize>,
}

fn main() -> ExitCode {
    match dispatch(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Ok(passed) or a usage error.
fn dispatch(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Run { run, mutate } => run_once(&run, mutate, false),
        Command::Replay { run } => run_once(&run, None, true),
        Command::Swarm {
            seeds,
            from,
            jobs,
            json,
        } => Ok(run_swarm(seeds, from, jobs, json)),
    }
}

fn is_swarm(path: &Path) -> bool {
    path.as_os_str() == swarm::SWARM
}

fn run_once(args: &RunArgs, mutation: Option<Mutation>, replay: bool) -> anyhow::Result<bool> {
    let (scenario, name) = if is_swarm(&args.scenario) {
        (swarm::draw(args.seed), swarm::SWARM.to_string())
    } else {
        let mut scenario = Scenario::load(&args.scenario)?;
        if let Some(nodes) = args.nodes {
            scenario.nodes = nodes;
            scenario
                .validate()
                .map_err(|e| anyhow::anyhow!("--nodes {nodes}: {e}"))?;
        }
        (scenario, args.scenario.display().to_string())
    };
    if args.nodes.is_some() && is_swarm(&args.scenario) {
        bail!("--nodes: a swarm seed draws its own cluster");
    }
    if let Some(m) = &mutation {
        if m.node().is_some_and(|n| n >= scenario.nodes) {
            bail!("--mutate {m}: the scenario has {} nodes", scenario.nodes);
        }
    }
    let mut reproduce = if is_swarm(&args.scenario) {
        swarm::reproduce(args.seed)
    } else {
        format!("chorus-sim run --scenario {name} --seed {}", args.seed)
    };
    if let Some(nodes) = args.nodes {
        reproduce += &format!(" --nodes {nodes}");
    }
    if let Some(m) = &mutation {
        reproduce += &format!(" --mutate {m}");
    }
    let opts = RunOptions {
        seed: args.seed,
        scenario_name: name,
        reproduce,
        trace: args.trace.is_some() || replay,
        timeline: args.svg.is_some(),
        mutation,
        progress: progress::wanted(args.json).then(|| Arc::new(RunProgress::stderr())),
        leak_at_end: !replay,
    };
    let result = run(&scenario, &opts);
    if replay {
        let again = run(&scenario, &opts);
        if again.report.trace_hash != result.report.trace_hash || again.trace != result.trace {
            bail!(
                "the replay diverged: trace {} then {}: the run is not deterministic",
                result.report.trace_hash,
                again.report.trace_hash
            );
        }
        if args.trace.is_none() {
            for line in &result.trace {
                println!("{line}");
            }
        }
    }
    write_outputs(args, &result)?;
    if args.json {
        println!("{}", result.report.to_json());
    } else {
        print!("{}", result.report.to_text());
        if replay {
            println!(
                "  replayed twice: identical (trace {})",
                result.report.trace_hash
            );
        }
    }
    if !result.report.passed {
        eprintln!("FAILED: reproduce with: {}", result.report.reproduce);
    }
    Ok(result.report.passed)
}

fn write_outputs(args: &RunArgs, result: &RunResult) -> anyhow::Result<()> {
    if let Some(path) = &args.svg {
        let r = &result.report;
        let verdict = if r.passed { "pass" } else { "FAIL" };
        let title = format!("{}  seed {}  {verdict}", r.scenario, r.seed);
        std::fs::write(path, svg::render(&result.timeline, &title))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.trace {
        let mut text = result.trace.join("\n");
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn run_swarm(seeds: u64, from: u64, jobs: usize, json: bool) -> bool {
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut passed = 0u64;
    let mut bar = SeedBar::new(seeds, progress::wanted(json));
    swarm::run_many(from, seeds, jobs, |scenario, report| {
        bar.record(report.passed, || print_seed(scenario, report, json));
        if report.passed {
            passed += 1;
        } else {
            failed.push(report.seed);
        }
    });
    bar.finish();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{seeds} seeds from {from}: {passed} passed, {} failed in {secs:.1} s ({:.1} seeds/s, {jobs} jobs)",
        failed.len(),
        seeds as f64 / secs.max(1e-9)
    );
    for seed in &failed {
        eprintln!(
            "FAILED seed {seed}: reproduce with: {}",
            swarm::reproduce(*seed)
        );
    }
    failed.is_empty()
}

/// A seed's outcome on stdout: its JSON report, or a line with what it drew
/// and its verdict.
fn print_seed(scenario: &Scenario, report: &Report, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        );
        return;
    }
    let verdict = if report.passed {
        match report.convergence_ms {
            Some(ms) => format!("pass +{ms}ms"),
            None => "pass".into(),
        }
    } else {
        let names: Vec<&str> = report
            .invariants
            .iter()
            .filter(|(_, v)| **v == "fail")
            .map(|(k, _)| *k)
            .collect();
        format!("FAIL {}", names.join(","))
    };
    println!(
        "seed {:>6} {verdict:<14} {} wall {}ms",
        report.seed,
        swarm::describe(scenario),
        report.wall_ms
    );
}
