//! `chorus-sim`: the deterministic partition simulator.
//!
//! The simulator drives the replication protocol, which is being built; until
//! then this binary only reports its version.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "chorus-sim",
    version,
    about = "Chorus partition simulator (in development)"
)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    println!(
        "chorus-sim {}: scenarios arrive with the replication protocol",
        env!("CARGO_PKG_VERSION")
    );
}
