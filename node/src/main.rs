//! `chorus`: the replica daemon and its CLI. See `docs/operations.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use chorus_node::client::{Client, HttpError};
use chorus_node::config::Config;
use chorus_node::{bench, daemon, demo, keys, render};

#[derive(Parser)]
#[command(name = "chorus", version, about = "Chorus replica daemon and CLI")]
struct Cli {
    #[command(flatten)]
    api: Api,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Api {
    /// The replica's API.
    #[arg(
        long,
        global = true,
        env = "CHORUS_API",
        default_value = "http://127.0.0.1:7070"
    )]
    api: String,
    /// The API's bearer token, if it has one.
    #[arg(long, global = true, env = "CHORUS_API_TOKEN")]
    token: Option<String>,
    /// Output: headed tables for people, or the API's JSON for scripts.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a replica (with no config: one replica on loopback, store in ./chorus-data).
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Writes a new node key and prints its peer id.
    Keygen {
        #[arg(long, default_value = "node.key")]
        out: PathBuf,
    },
    /// The replica's health and peers.
    Status,
    /// The replica's view of the cluster.
    Cluster,
    /// Rooms: list, get, create, end.
    Rooms {
        #[command(subcommand)]
        action: RoomsAction,
    },
    /// The replica's incident journal as a timeline.
    Incidents {
        /// Only entries after this one (its `at`, as the JSON shows it).
        #[arg(long)]
        after: Option<String>,
        /// Only the last N entries.
        #[arg(long)]
        tail: Option<usize>,
        /// Keep printing new entries as they come (every second).
        #[arg(long)]
        follow: bool,
    },
    /// Every node this replica knows: grade, reason, drains, moves.
    Nodes,
    /// Drains NODE: no new calls, its calls move away at a rate. `--cancel`
    /// stops a drain; the calls not yet moved stay.
    Drain {
        /// The node id (a peer id, as `chorus nodes` shows it).
        node: String,
        /// Calls per second (default: the replica's `drain_rate_per_s`).
        #[arg(long)]
        rate: Option<u32>,
        #[arg(long)]
        cancel: bool,
    },
    /// Asks the replica to leave the cluster and exit: `restart` (peers hold
    /// its calls for their restart grace) or `stop` (they take them now).
    /// Without `--intent`: the replica's `shutdown_intent`.
    Leave {
        #[arg(long, value_parser = ["restart", "stop"])]
        intent: Option<String>,
    },
    /// Prints the peer id of an existing key file.
    Id { keyfile: PathBuf },
    /// Configuration files.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Prints a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Prints the HTTP API's OpenAPI 3.1 document (what a daemon serves at
    /// `/v1/openapi.json`), for client generators.
    Openapi,
    /// Three replicas on loopback: replication, a partition drill, the merge, a failover.
    Demo,
    /// Benchmarks against real daemons on loopback.
    Bench {
        #[command(subcommand)]
        what: bench::Bench,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Reads FILE (and the CHORUS_* environment) as `chorus run` would,
    /// and reports the first error or the warnings; exit 0 if it would run.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum RoomsAction {
    List,
    Get {
        room: String,
    },
    /// Creates ROOM; an existing room is refused (exit 4) unless `--update`.
    Create {
        room: String,
        #[arg(long)]
        max_participants: Option<u32>,
        /// Update the room's config if it exists.
        #[arg(long)]
        update: bool,
    },
    End {
        room: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.api, cli.command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// A failure the CLI names by its exit code.
#[derive(Debug, thiserror::Error)]
enum Exit {
    #[error("{0}")]
    Conflict(String),
}

/// Exit codes (`docs/operations.md`, "CLI"): 1 any other failure, 2 usage
/// (clap's own), 3 not found, 4 conflict, 5 unavailable (no answer, a
/// timeout, 503), 6 refused (another 4xx: invalid, unauthorized, too large).
fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(Exit::Conflict(_)) = err.downcast_ref::<Exit>() {
        return 4;
    }
    if let Some(http) = err.downcast_ref::<HttpError>() {
        return match http.status {
            404 => 3,
            409 => 4,
            502..=504 => 5,
            400..=499 => 6,
            _ => 1,
        };
    }
    let unreachable = err.chain().any(|cause| {
        cause
            .downcast_ref::<reqwest::Error>()
            .is_some_and(|e| e.is_connect() || e.is_timeout())
    });
    if unreachable {
        5
    } else {
        1
    }
}

/// `default` applies unless `RUST_LOG` is set.
fn init_logs(json: bool, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn dispatch(api: Api, command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Run { config } => run(config).await?,
        Command::Keygen { out } => {
            let key = keys::generate(&out)?;
            api.peer_id(&key.public().to_peer_id().to_base58())?;
        }
        Command::Status => {
            let health = api.client()?.get("/v1/health").await?;
            api.emit(&health, render::status)?
        }
        Command::Cluster => {
            let view = api.client()?.get("/v1/cluster").await?;
            api.emit(&view, render::cluster)?
        }
        Command::Rooms { action } => rooms(&api, action).await?,
        Command::Incidents {
            after,
            tail,
            follow,
        } => incidents(&api, after, tail, follow).await?,
        Command::Nodes => nodes(&api).await?,
        Command::Drain { node, rate, cancel } => drain(&api, &node, rate, cancel).await?,
        Command::Leave { intent } => {
            let body = match intent {
                Some(intent) => json!({ "intent": intent }),
                None => json!({}),
            };
            let answer: Value = api
                .client()?
                .send(reqwest::Method::POST, "/v1/leave", &body)
                .await?;
            api.emit(&answer, render::object)?
        }
        Command::Id { keyfile } => {
            let key = keys::load(&keyfile)?;
            api.peer_id(&key.public().to_peer_id().to_base58())?;
        }
        Command::Config {
            action: ConfigAction::Check { file },
        } => {
            let config = Config::load(Some(&file))?;
            let warnings = config.startup_warnings();
            if api.output == Output::Json {
                print_json(&json!({"file": file, "ok": true, "warnings": warnings}))?;
            } else {
                for warning in warnings {
                    eprintln!("warning: {warning}");
                }
                println!("{}: ok", file.display());
            }
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "chorus", &mut std::io::stdout());
        }
        Command::Openapi => println!("{}", chorus_node::api::openapi().to_pretty_json()?),
        Command::Demo => {
            init_logs(false, "warn");
            return demo::run().await;
        }
        Command::Bench { what } => {
            init_logs(false, "warn");
            return bench::run(what).await;
        }
    }
    Ok(true)
}

impl Api {
    fn client(&self) -> anyhow::Result<Client> {
        Client::new(self.api.clone(), self.token.clone())
    }

    /// `value` as a table (`table` renders it) or as its JSON.
    fn emit(&self, value: &Value, table: fn(&Value) -> String) -> anyhow::Result<()> {
        match self.output {
            Output::Json => print_json(value),
            Output::Table => {
                print!("{}", table(value));
                Ok(())
            }
        }
    }

    /// A peer id: bare (for scripts' `$(chorus id KEY)`) or as JSON.
    fn peer_id(&self, id: &str) -> anyhow::Result<()> {
        match self.output {
            Output::Json => print_json(&json!({ "peer_id": id })),
            Output::Table => {
                println!("{id}");
                Ok(())
            }
        }
    }
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn rooms(api: &Api, action: RoomsAction) -> anyhow::Result<()> {
    let client = api.client()?;
    let (out, table): (Value, fn(&Value) -> String) = match action {
        RoomsAction::List => (client.get("/v1/rooms").await?, render::room_list),
        RoomsAction::Get { room } => (
            client.get(&format!("/v1/rooms/{room}")).await?,
            render::room,
        ),
        RoomsAction::Create {
            room,
            max_participants,
            update,
        } => {
            let path = format!("/v1/rooms/{room}");
            if !update && client.get_opt::<Value>(&path).await?.is_some() {
                return Err(Exit::Conflict(format!(
                    "room {room} exists (use --update to change its config)"
                ))
                .into());
            }
            let mut body = json!({});
            if let Some(max) = max_participants {
                body["max_participants"] = json!(max);
            }
            let ack = client
                .send(reqwest::Method::PUT, &format!("/v1/rooms/{room}"), &body)
                .await?;
            (ack, render::write_ack)
        }
        RoomsAction::End { room } => (
            client.delete(&format!("/v1/rooms/{room}")).await?,
            render::write_ack,
        ),
    };
    api.emit(&out, table)
}

/// The journal as a timeline, every page of it (or the entries after
/// `after`, or the last `tail`), then, with `follow`, new entries as they
/// come.
async fn incidents(
    api: &Api,
    mut after: Option<String>,
    tail: Option<usize>,
    follow: bool,
) -> anyhow::Result<()> {
    let client = api.client()?;
    let mut first = true;
    let mut header = true;
    loop {
        let mut entries: Vec<Value> = Vec::new();
        loop {
            let path = match &after {
                Some(at) => format!("/v1/incidents?after={at}"),
                None => "/v1/incidents".to_string(),
            };
            let page: Vec<Value> = client.get(&path).await?;
            let Some(last) = page.last() else {
                break;
            };
            let Some(last) = last["at"].as_str() else {
                anyhow::bail!(
                    "the replica's incidents have no text `at` (a build from before it \
                     was a stamp string): use GET /v1/incidents"
                );
            };
            after = Some(last.to_string());
            entries.extend(page);
        }
        if let (true, Some(tail)) = (first, tail) {
            let skip = entries.len().saturating_sub(tail);
            entries.drain(..skip);
        }
        first = false;
        if api.output == Output::Json {
            // One entry per line: the output of `--follow` stays parseable
            // line by line however long it runs.
            for e in &entries {
                println!("{e}");
            }
            if !follow {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        }
        if header && !entries.is_empty() {
            header = false;
            println!("{:<23}  {:<10} DETAIL", "TIME (UTC)", "KIND");
        }
        for e in &entries {
            println!(
                "{:<23}  {:<10} {}",
                readable_time(e["at"].as_str()),
                e["kind"].as_str().unwrap_or("?"),
                e["detail"].as_str().unwrap_or("")
            );
        }
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// An incident's `at` (an HLC stamp) as a UTC time to the millisecond.
fn readable_time(at: Option<&str>) -> String {
    at.and_then(chorus_engine::hlc::Timestamp::parse)
        .map(|t| std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.wall_ms))
        .map_or_else(
            || "?".to_string(),
            |time| {
                humantime::format_rfc3339_millis(time)
                    .to_string()
                    .replace('T', " ")
                    .trim_end_matches('Z')
                    .to_string()
            },
        )
}

/// Every known node, then the moves in progress; this replica's own node
/// is shown with its name.
async fn nodes(api: &Api) -> anyhow::Result<()> {
    let client = api.client()?;
    let view: Value = client.get("/v1/nodes").await?;
    if api.output == Output::Json {
        return print_json(&view);
    }
    let cluster: Value = client.get("/v1/cluster").await?;
    let names = match (cluster["peer_id"].as_str(), cluster["name"].as_str()) {
        (Some(id), Some(name)) => vec![(id.to_string(), name.to_string())],
        _ => Vec::new(),
    };
    print!("{}", render::nodes(&view, &names));
    Ok(())
}

async fn drain(api: &Api, node: &str, rate: Option<u32>, cancel: bool) -> anyhow::Result<()> {
    let client = api.client()?;
    let path = format!("/v1/nodes/{node}/drain");
    let order: Value = if cancel {
        client.delete(&path).await?
    } else {
        let body = match rate {
            Some(rate) => json!({ "rate_per_s": rate }),
            None => json!({}),
        };
        client.send(reqwest::Method::POST, &path, &body).await?
    };
    api.emit(&order, render::drain_order)
}

async fn run(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(path.as_deref())?;
    init_logs(config.log_json, "info,libp2p=warn");
    let shutdown_intent = config.shutdown_intent;
    // Listen for SIGTERM/SIGINT before the daemon says it is ready (its
    // stdout line, systemd's READY=1): a stop right after would otherwise
    // meet the default action and kill it without announcing its leave.
    let mut signals = ShutdownSignals::new()?;
    // Opening a large store takes a while: a stop meanwhile ends the start
    // (nothing was announced or acknowledged yet, so nothing to leave).
    let mut node = tokio::select! {
        node = daemon::start(config) => node?,
        () = signals.recv() => {
            tracing::info!("stopped while starting");
            return Ok(());
        }
    };
    let mut leave_requests = node.leave_requests();
    // One line on stdout for whoever started us (tests, scripts).
    let ready = json!({
        "event": "ready",
        "peer_id": node.peer_id.to_base58(),
        "api": node.api.to_string(),
        "listen": node.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    println!("{ready}");
    let intent = tokio::select! {
        result = node.wait() => return result.context("the replica stopped"),
        () = signals.recv() => shutdown_intent,
        Some(intent) = leave_requests.recv() => intent,
    };
    tracing::info!(intent = intent.as_str(), "leaving the cluster");
    node.leave(intent).await
}

/// SIGTERM and SIGINT, subscribed to when made (tokio installs the handler
/// then, not when first awaited).
struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
                interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
