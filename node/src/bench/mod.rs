//! `chorus bench`: benchmarks against real daemons on loopback: all in
//! this process (libp2p, sled, the engine's driver, the HTTP API), or one
//! `chorus run` process each (`daemons`).

use anyhow::Context;

mod churn;
mod daemons;
mod process;
mod propagation;

pub use churn::churn;

/// `chorus bench` (the CLI's subcommands).
#[derive(clap::Subcommand)]
pub enum Bench {
    /// Write on one daemon, time until every other daemon has it.
    Propagation {
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        #[arg(long, default_value_t = 1000)]
        writes: usize,
        /// Writes per second offered, each begun on time whether or not the
        /// earlier ones are acknowledged; 0 writes as fast as acknowledged,
        /// 32 in flight.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
    },
    /// `chorus run` processes on loopback: membership, idle and busy CPU
    /// and memory per daemon, writes on every daemon, a SIGKILL, a drill
    /// that cuts a quarter off and heals it.
    Daemons {
        #[arg(long, default_value_t = 20)]
        nodes: usize,
        /// Joins per second offered, through every daemon's API in turn.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        #[arg(long, default_value_t = 10)]
        busy_secs: u64,
    },
    /// One standing room on three daemons: join+leave pairs through the
    /// HTTP API, latency at the start and at the end, size and convergence.
    Churn {
        #[arg(long, default_value_t = 20_000)]
        cycles: usize,
        /// The daemons' `session_retention_ms`: short, so that pruning and
        /// compaction happen during the run.
        #[arg(long, default_value_t = 5_000)]
        retention_ms: u64,
    },
}

/// Runs one bench; `Ok(false)` when it measured a failure.
pub async fn run(what: Bench) -> anyhow::Result<bool> {
    match what {
        Bench::Propagation {
            nodes,
            writes,
            rate,
        } => propagation(nodes, writes, rate).await,
        Bench::Churn {
            cycles,
            retention_ms,
        } => churn(cycles, retention_ms).await,
        Bench::Daemons {
            nodes,
            rate,
            busy_secs,
        } => {
            // This binary is the daemons' `chorus`.
            let exe = std::env::current_exe().context("this binary's path")?;
            let options = DaemonsOptions {
                nodes,
                rate,
                busy: std::time::Duration::from_secs(busy_secs),
            };
            daemons(&exe, &options).await?.print();
            Ok(true)
        }
    }
}
pub use daemons::{daemons, Options as DaemonsOptions, Report as DaemonsReport, FAILOVER_WALL_MAX};
pub use propagation::propagation;
