//! Rooms on every replica before a run (`[workload] rooms_at_start`), and
//! room-level checks that read a spread of replicas
//! (`[checks] replicas_per_room`): what lets the simulator run hundreds of
//! replicas holding thousands of rooms.

use chorus_engine::replica::ReplicaConfig;
use chorus_simulator::cluster::{preload, Cluster};
use chorus_simulator::mutation::Mutation;
use chorus_simulator::net::NetConfig;
use chorus_simulator::run::{run, RunOptions};
use chorus_simulator::scenario::Scenario;

fn quiet(config: &mut ReplicaConfig) {
    config.failure_detection = false;
}

#[test]
fn preloaded_rooms_are_on_every_replica_before_the_first_event() {
    let rooms = preload::rooms(40);
    let cluster = Cluster::with_absent(4, 1, NetConfig::default(), quiet, &[3], &[], &rooms);
    for i in 0..3 {
        let replica = cluster.nodes[i].replica.as_ref().expect("started");
        let listed = replica.list_rooms().expect("rooms list");
        assert_eq!(listed.len(), 40, "node {i}");
        assert_eq!(
            replica.root(),
            cluster.nodes[0].replica.as_ref().expect("up").root()
        );
    }
    // A node that joins later starts empty and catches up like any other.
    assert!(cluster.nodes[3].replica.is_none());
}

fn scenario(extra: &str) -> Scenario {
    let text = format!(
        "nodes = 5\nrooms = 40\nduration_ms = 4000\nliveness_ms = 10000\n\
         [workload]\nops_per_sec = 50\nrooms_at_start = 40\n\
         [checks]\nreplicas_per_room = 2\n{extra}"
    );
    Scenario::parse(&text).expect("valid scenario")
}

#[test]
fn the_workload_writes_to_preloaded_rooms_from_the_start() {
    let result = run(&scenario(""), &RunOptions::shipped("preloaded", 1));
    let report = result.report;
    assert!(report.passed, "{}", report.to_text());
    let writes = &report.writes;
    assert!(writes.writes_acked > 100, "{writes:?}");
    // No room is created: every write goes to a preloaded room, which
    // every replica must already know.
    assert_eq!(
        writes.refused_by_reason.get("UnknownRoom"),
        None,
        "{writes:?}"
    );
}

#[test]
fn reading_a_spread_of_replicas_still_catches_a_replica_that_diverges() {
    let room = chorus_engine::RoomId::parse("room-3").expect("valid id");
    let opts = RunOptions {
        mutation: Some(Mutation::DeafToRoom { node: 4, room }),
        ..RunOptions::shipped("preloaded", 1)
    };
    let report = run(&scenario(""), &opts).report;
    // The roots differ; and the writes node 4 lacks are found, although
    // each write is looked for on 2 of the 5 replicas only.
    let text = report.to_text();
    assert_eq!(report.invariants["convergence"], "fail", "{text}");
    assert_eq!(report.invariants["acked_writes_durable"], "fail", "{text}");
}

#[test]
fn too_many_preloaded_rooms_are_refused() {
    let text = "nodes = 2\nduration_ms = 1000\n[workload]\nrooms_at_start = 100001\n";
    let err = format!("{:#}", Scenario::parse(text).expect_err("refused"));
    assert!(err.contains("rooms_at_start"), "{err}");
    let text = "nodes = 2\nduration_ms = 1000\n[checks]\nreplicas_per_room = 1\n";
    let err = format!("{:#}", Scenario::parse(text).expect_err("refused"));
    assert!(err.contains("replicas_per_room"), "{err}");
}
