//! `chorus`: the Chorus replica daemon and its CLI.
//!
//! The daemon (libp2p networking, HTTP API, demo cluster) is being built;
//! today the binary can inspect a local store written by the engine.

use std::path::PathBuf;

use anyhow::Context;
use chorus_engine::{Engine, EngineConfig, NodeId};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "chorus", version, about = "Chorus replica daemon and CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the rooms of a local store.
    Rooms {
        /// The store's directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Print one room of a local store as JSON.
    Room {
        #[arg(long)]
        data_dir: PathBuf,
        room: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Rooms { data_dir } => {
            let engine = open(&data_dir)?;
            for room in engine.list_rooms()? {
                println!("{}", serde_json::to_string(&room)?);
            }
        }
        Command::Room { data_dir, room } => {
            let engine = open(&data_dir)?;
            let id = room.parse().context("room id")?;
            let snapshot = engine.room(&id)?.with_context(|| format!("no room {id}"))?;
            println!("{}", serde_json::to_string_pretty(&snapshot)?);
        }
    }
    Ok(())
}

fn open(dir: &std::path::Path) -> anyhow::Result<Engine> {
    anyhow::ensure!(dir.is_dir(), "no store at {}", dir.display());
    let node = NodeId::parse("chorus-cli").context("node id")?;
    Engine::open(dir, EngineConfig::new(node)).with_context(|| format!("opening {}", dir.display()))
}
