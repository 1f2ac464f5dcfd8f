//! The three-process media-node example, run as it ships: three processes
//! embed the engine on loopback, one is SIGKILLed, and the survivors must
//! take its calls over (see `examples/media_node.rs` for the checks).

use std::process::Command;

#[test]
fn three_media_nodes_survive_a_sigkill() {
    // `cargo test --test media_node` alone does not rebuild examples: build
    // it, so the test never runs a stale binary (a no-op when up to date).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "-p", "chorus-engine", "--features", "network"])
        .args(["--example", "media_node"])
        .status()
        .expect("cargo build");
    assert!(built.success(), "the example does not build");
    // Integration tests live in target/<profile>/deps; examples beside it.
    let exe = std::env::current_exe().expect("test path");
    let profile = exe.parent().and_then(|d| d.parent()).expect("profile dir");
    let example = profile.join("examples").join("media_node");
    let out = Command::new(&example)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", example.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "the example failed:\n{stdout}");
    let acquired = stdout
        .lines()
        .filter(|l| l.contains(": acquired room-0/"))
        .count();
    assert!(acquired >= 4, "every orphaned call is acquired:\n{stdout}");
    assert!(stdout.contains("PASS"));
    assert!(
        stdout.contains("(Failover)"),
        "acquisitions say why:\n{stdout}"
    );
}
