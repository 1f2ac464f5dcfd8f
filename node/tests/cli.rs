//! The CLI against a real daemon: `--api` anywhere on the line, distinct
//! exit codes, headed tables and `-o json`, `rooms create` refusing an existing room, `id`, `config
//! check` and completions.

use std::process::{Command, Output};

use chorus_node::daemon;
use chorus_node::demo::local_config;

mod common;

fn chorus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(args)
        .env_remove("CHORUS_API")
        .env_remove("CHORUS_API_TOKEN")
        .output()
        .expect("chorus runs")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("an exit code")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_api_anywhere_and_exits_with_distinct_codes() {
    let root = common::test_dir();
    let node = daemon::start(local_config("cli", &root.path().join("n"), Vec::new()))
        .await
        .expect("daemon");
    let api = format!("http://{}", node.api);
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            chorus(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let args = |parts: &[&str]| parts.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // Before or after the subcommand, and after a nested one.
    let before = run(args(&["--api", &api, "rooms", "create", "r1"]))
        .await
        .expect("ran");
    assert_eq!(code(&before), 0, "{before:?}");
    let again = run(args(&["rooms", "create", "r1", "--api", &api]))
        .await
        .expect("ran");
    assert_eq!(code(&again), 4, "an existing room is a conflict: {again:?}");
    let update = run(args(&["rooms", "create", "r1", "--update", "--api", &api]))
        .await
        .expect("ran");
    assert_eq!(code(&update), 0, "{update:?}");
    let missing = run(args(&["rooms", "get", "nope", "--api", &api]))
        .await
        .expect("ran");
    assert_eq!(code(&missing), 3, "not found: {missing:?}");
    let invalid = run(args(&["drain", "not a node", "--api", &api]))
        .await
        .expect("ran");
    assert_eq!(code(&invalid), 6, "refused: {invalid:?}");
    let usage = run(args(&["rooms", "--no-such-flag"])).await.expect("ran");
    assert_eq!(code(&usage), 2, "usage: {usage:?}");
    let status = run(args(&["status", "--api", &api])).await.expect("ran");
    assert_eq!(code(&status), 0, "{status:?}");

    // Headed tables by default, the API's JSON with `-o json`.
    let table = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(table.starts_with("NAME"), "a headed table: {table}");
    assert!(
        table.lines().nth(1).is_some_and(|l| l.starts_with("cli ")),
        "{table}"
    );
    let json = run(args(&["status", "-o", "json", "--api", &api]))
        .await
        .expect("ran");
    let health: serde_json::Value =
        serde_json::from_slice(&json.stdout).unwrap_or_else(|e| panic!("{e}: {json:?}"));
    assert_eq!(health["name"], "cli", "{health}");
    let rooms = run(args(&["rooms", "list", "--api", &api]))
        .await
        .expect("ran");
    let rooms = String::from_utf8_lossy(&rooms.stdout).to_string();
    assert!(
        rooms.starts_with("ROOM") && rooms.contains("\nr1 "),
        "{rooms}"
    );
    let nodes = run(args(&["nodes", "--api", &api])).await.expect("ran");
    let nodes = String::from_utf8_lossy(&nodes.stdout).to_string();
    assert!(
        nodes.starts_with("NODE") && nodes.contains(" cli "),
        "named: {nodes}"
    );
    for command in [
        &["cluster"][..],
        &["rooms", "get", "r1"],
        &["incidents"],
        &["nodes"],
    ] {
        let mut line = args(command);
        line.extend(args(&["-o", "json", "--api", &api]));
        let out = run(line).await.expect("ran");
        assert_eq!(code(&out), 0, "{command:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        // `incidents -o json` prints one entry per line.
        let documents: Vec<&str> = if command == ["incidents"] {
            text.lines().collect()
        } else {
            vec![&text]
        };
        for piece in documents {
            serde_json::from_str::<serde_json::Value>(piece)
                .unwrap_or_else(|e| panic!("{command:?}: {e}: {piece}"));
        }
    }
    node.stop().await.expect("stop");
    let down = run(args(&["status", "--api", &api])).await.expect("ran");
    assert_eq!(code(&down), 5, "unavailable: {down:?}");

    // The key's id, a config check, completions.
    let key = root.path().join("n").join("node.key");
    let id = run(vec!["id".into(), key.display().to_string()])
        .await
        .expect("ran");
    assert_eq!(code(&id), 0, "{id:?}");
    assert!(
        String::from_utf8_lossy(&id.stdout).starts_with("12D3KooW"),
        "{id:?}"
    );
    let good = root.path().join("good.toml");
    std::fs::write(&good, "name = \"x\"\n").expect("write");
    let checked = run(vec![
        "config".into(),
        "check".into(),
        good.display().to_string(),
    ])
    .await
    .expect("ran");
    assert_eq!(code(&checked), 0, "{checked:?}");
    let bad = root.path().join("bad.toml");
    std::fs::write(&bad, "nmae = \"x\"\n").expect("write");
    let refused = run(vec![
        "config".into(),
        "check".into(),
        bad.display().to_string(),
    ])
    .await
    .expect("ran");
    assert_ne!(code(&refused), 0);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("nmae"),
        "{refused:?}"
    );
    let bash = run(args(&["completions", "bash"])).await.expect("ran");
    assert_eq!(code(&bash), 0);
    assert!(String::from_utf8_lossy(&bash.stdout).contains("chorus"));
}
