//! The replication protocol converges over a hostile network: 2–7 real
//! replicas, 30 % datagram loss, 50 % duplication, reordering, 5 % of sync
//! messages lost with their stream, writes on every replica. Every replica
//! ends with the same rooms and every acknowledged write, on that same
//! network.

use chorus_engine::replica::ReplicaConfig;
use chorus_simulator::cluster::Cluster;
use chorus_simulator::net::NetConfig;
use chorus_simulator::workload::Workload;

fn hostile() -> NetConfig {
    NetConfig {
        latency_ms: [1, 40],
        loss: 0.30,
        duplicate: 0.50,
        reorder: true,
        stream_reset: 0.05,
        between: Vec::new(),
    }
}

fn fast_rounds(config: &mut ReplicaConfig) {
    config.anti_entropy_interval_ms = 200;
    config.round_timeout_ms = 1_000;
}

/// Writes for `write_ms` on a hostile network, then calms it and checks.
fn converge(nodes: usize, seed: u64, write_ms: u64) {
    let mut cluster = Cluster::new(nodes, seed, hostile(), fast_rounds);
    let mut workload = Workload::new(20, true, 0);
    let mut rng = cluster.rng.fork();
    while cluster.now_ms < write_ms {
        workload.step(&mut cluster, &mut rng);
        let next = cluster.now_ms + rng.range(1, 10);
        cluster.run_until(next);
    }
    assert!(
        cluster.counters.writes_acked > 50,
        "the workload must really write"
    );
    let converged = cluster.run_until_converged(60_000, 100);
    assert!(
        converged.is_some(),
        "{nodes} replicas (seed {seed}) did not converge in 60 s"
    );
    assert_all_equal(&mut cluster, &workload);
    assert_acked_writes_present(&mut cluster);
}

fn assert_all_equal(cluster: &mut Cluster, workload: &Workload) {
    for room in workload.room_ids() {
        let first = cluster.room(0, &room);
        for i in 1..cluster.len() {
            assert_eq!(
                cluster.room(i, &room),
                first,
                "room {room} differs on node {i}"
            );
        }
    }
}

fn assert_acked_writes_present(cluster: &mut Cluster) {
    let acked = cluster.acked.clone();
    for write in &acked {
        for i in 0..cluster.len() {
            let replica = cluster.nodes[i].replica.as_mut().expect("all nodes up");
            if replica.is_purged(&write.room) {
                continue;
            }
            for head in &write.heads {
                assert!(
                    replica.has_change(&write.room, head),
                    "node {i} lacks acknowledged write {head} of room {} (acked on node {})",
                    write.room,
                    write.node
                );
            }
        }
    }
}

#[test]
fn two_to_seven_replicas_converge_with_30pct_loss_and_50pct_duplication() {
    for nodes in 2..=7 {
        for seed in 0..3 {
            converge(nodes, seed * 100 + nodes as u64, 3_000);
        }
    }
}

#[test]
fn a_partition_heals_into_one_state() {
    let mut cluster = Cluster::new(5, 42, NetConfig::default(), fast_rounds);
    let mut workload = Workload::new(30, true, 0);
    let mut rng = cluster.rng.fork();
    for _ in 0..100 {
        workload.step(&mut cluster, &mut rng);
        let next = cluster.now_ms + 5;
        cluster.run_until(next);
    }
    cluster.partition(&[vec![0, 1], vec![2, 3, 4]]);
    for _ in 0..400 {
        workload.step(&mut cluster, &mut rng);
        let next = cluster.now_ms + 5;
        cluster.run_until(next);
    }
    assert!(!cluster.converged(), "two sides writing apart must diverge");
    cluster.heal();
    let at = cluster
        .run_until_converged(30_000, 50)
        .expect("converges after heal");
    assert_all_equal(&mut cluster, &workload);
    assert_acked_writes_present(&mut cluster);
    println!(
        "converged {} ms after heal",
        at - (cluster.now_ms - (cluster.now_ms - at))
    );
}

#[test]
fn convergence_does_not_need_pushes() {
    // Every gossip datagram is lost: only anti-entropy moves changes.
    let net = NetConfig {
        loss: 1.0,
        ..NetConfig::default()
    };
    let mut cluster = Cluster::new(3, 7, net, fast_rounds);
    let mut workload = Workload::new(10, true, 0);
    let mut rng = cluster.rng.fork();
    for _ in 0..200 {
        workload.step(&mut cluster, &mut rng);
        let next = cluster.now_ms + 2;
        cluster.run_until(next);
    }
    cluster
        .run_until_converged(30_000, 50)
        .expect("anti-entropy alone converges");
    assert_all_equal(&mut cluster, &workload);
    assert_acked_writes_present(&mut cluster);
    assert_eq!(
        cluster.net.stats.dropped,
        cluster.net.stats.sent - stream_messages(&cluster)
    );
    let synced: u64 = cluster
        .nodes
        .iter()
        .filter_map(|n| n.replica.as_ref())
        .map(|r| r.stats().changes_applied)
        .sum();
    assert!(synced > 0, "sync rounds must have moved the changes");
}

/// Messages sent on sync streams (none of which this network drops).
fn stream_messages(cluster: &Cluster) -> u64 {
    cluster
        .nodes
        .iter()
        .filter_map(|n| n.replica.as_ref())
        .map(|r| {
            r.stats()
                .sent
                .iter()
                // Pushes, end acks and failure-detection datagrams go as
                // gossip; everything else rides the sync streams.
                .filter(|(kind, _)| {
                    ![
                        "push",
                        "end_ack",
                        "swim",
                        "health",
                        "health_ask",
                        "watch_check",
                        "watch_seen",
                        "suspected",
                        "refuted",
                        "drain",
                    ]
                    .contains(*kind)
                })
                .map(|(_, t)| t.messages)
                .sum::<u64>()
        })
        .sum()
}
