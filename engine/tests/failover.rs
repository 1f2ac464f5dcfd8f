//! Failure detection and failover on directly wired replicas: a node cut
//! off is convicted and its calls move at the failover rate; the cut-off
//! node, a minority, takes nothing; coming back within the grace period
//! stops the failover with the rest of the calls still home. Drains and
//! application health through the library inputs.

mod common;

use std::collections::BTreeMap;

use chorus_engine::membership::{AppHealth, Grade};
use chorus_engine::replica::{Event, Input, ReplicaConfig};
use chorus_engine::*;
use common::moving::{detect, grade, host_calls, node};
use common::pair::Net;
use common::*;

fn formed() -> Net {
    let mut net = Net::new(3, detect);
    net.connect_all();
    net.run_for(2_000);
    for i in 0..3 {
        for j in 0..3 {
            assert_eq!(grade(&net, i, j), Some(Grade::Healthy), "{i} grades {j}");
        }
    }
    net
}

#[test]
fn a_node_cut_off_is_convicted_and_a_quick_return_rolls_its_failover_back() {
    let mut net = formed();
    host_calls(&mut net, 2, 8);
    net.run_for(500);
    assert_eq!(net.members[0].replica.calls_owned_by(&node(2)).len(), 8);
    net.disconnect(2, 0);
    net.disconnect(2, 1);
    net.run_for(2_500);
    for i in [0, 1] {
        assert_eq!(grade(&net, i, 2), Some(Grade::Down), "replica {i}");
    }
    // 8 calls at 2/s: about 4 s to move them all; some have moved.
    let left = net.members[0].replica.calls_owned_by(&node(2)).len();
    assert!(left > 0 && left < 8, "a failover in progress: {left} left");
    // The cut-off node sees a majority Down and takes nothing.
    assert_eq!(net.members[2].replica.stats().rehomed, 0);
    assert!(net.members[2].replica.stats().failover_held_minority > 0);
    // Back within the grace period: the failover stops.
    net.reconnect(0, 2);
    net.reconnect(1, 2);
    net.run_for(3_000);
    for i in [0, 1] {
        assert_eq!(grade(&net, i, 2), Some(Grade::Healthy), "replica {i}");
        let stopped = net.members[i]
            .events
            .iter()
            .any(|e| matches!(e, Event::MoveStopped { node: n, calls_left, .. } if *n == node(2) && *calls_left > 0));
        assert!(stopped, "replica {i} reports the rollback");
    }
    let stay = net.members[0].replica.calls_owned_by(&node(2)).len();
    assert!(stay > 0, "the calls not yet moved stay home");
    let moved = 8 - stay;
    let takeovers: u64 = (0..3).map(|i| net.members[i].replica.stats().rehomed).sum();
    assert_eq!(takeovers as usize, moved, "one takeover per moved call");
    assert!(net.converged());
    let journal = net.members[0]
        .replica
        .incidents(None, 1_000)
        .expect("journal reads");
    let has = |kind: replica::IncidentKind| journal.iter().any(|e| e.kind == kind);
    assert!(has(replica::IncidentKind::Suspected));
    assert!(has(replica::IncidentKind::Convicted));
    assert!(has(replica::IncidentKind::Rollback));
}

#[test]
fn a_drain_moves_calls_away_and_a_cancel_stops_it() {
    let mut net = formed();
    let r = host_calls(&mut net, 1, 8);
    net.run_for(500);
    net.input(
        0,
        Input::Drain {
            node: node(1),
            rate_per_s: None,
            active: true,
        },
    );
    net.run_for(2_000);
    for i in 0..3 {
        let view = net.members[i].replica.membership().view(&node(1)).cloned();
        assert!(
            view.is_some_and(|v| v.draining),
            "replica {i} knows of the drain"
        );
    }
    // No new calls go to a draining node.
    for s in 0..20 {
        let session = SessionId::parse(format!("new-{s}")).expect("valid");
        let placed =
            net.members[2]
                .replica
                .place(&r, &session, &RegionId::parse("default").expect("valid"));
        assert_ne!(placed, Some(node(1)));
    }
    net.input(
        0,
        Input::Drain {
            node: node(1),
            rate_per_s: None,
            active: false,
        },
    );
    net.run_for(3_000);
    let stay = net.members[2].replica.calls_owned_by(&node(1)).len();
    assert!(stay > 0 && stay < 8, "{stay} calls stay");
    assert!(net.converged());
}

#[test]
fn an_overloaded_node_is_degraded_and_gets_no_new_calls() {
    let mut net = formed();
    net.input(
        1,
        Input::Health {
            app: AppHealth::from_ratios(1.5, 0.0),
        },
    );
    net.run_for(1_000);
    assert_eq!(grade(&net, 0, 1), Some(Grade::Degraded));
    let r = room("x");
    for s in 0..20 {
        let session = SessionId::parse(format!("s-{s}")).expect("valid");
        let placed =
            net.members[0]
                .replica
                .place(&r, &session, &RegionId::parse("default").expect("valid"));
        assert!(placed.is_some());
        assert_ne!(placed, Some(node(1)));
    }
    // Degraded is not Down: nothing fails over.
    let moved: u64 = (0..3).map(|i| net.members[i].replica.stats().rehomed).sum();
    assert_eq!(moved, 0);
}

#[test]
fn peers_cannot_drain_unknown_nodes_or_stamp_orders_ahead_of_time() {
    use chorus_engine::hlc::Timestamp;
    use chorus_engine::membership::DrainOrder;
    use chorus_engine::replica::wire::{self, Body, Envelope};
    let mut net = formed();
    let now = net.now_ms;
    let stamp = |wall_ms| Timestamp {
        wall_ms,
        logical: 0,
        actor: 7,
    };
    let orders = [
        (NodeId::parse("ghost").expect("valid"), now),
        (node(2), now + 3_600_000),
    ];
    for (target, at) in orders {
        let order = DrainOrder {
            node: target,
            at: stamp(at),
            rate_per_s: 5,
            active: true,
        };
        let bytes = wire::encode(&Envelope {
            cluster: common::pair::CLUSTER,
            sent_at: stamp(now),
            body: Body::Drain { order },
        });
        net.input(
            0,
            Input::Message {
                from: node(1),
                bytes,
            },
        );
    }
    net.run_for(1_000);
    assert_eq!(net.members[0].replica.stats().drains_refused, 2);
    let view = net.members[0].replica.membership().view(&node(2)).cloned();
    assert!(
        view.is_some_and(|v| !v.draining),
        "the future order was refused"
    );
    assert!(net.members[0]
        .replica
        .membership()
        .view(&NodeId::parse("ghost").expect("valid"))
        .is_none());
}

#[test]
fn a_node_back_from_the_minority_side_takes_no_call_from_a_live_node() {
    let mut net = formed();
    host_calls(&mut net, 0, 6);
    net.run_for(500);
    // Node 2 alone: it convicts 0 and 1 while it has no majority.
    net.disconnect(2, 0);
    net.disconnect(2, 1);
    net.run_for(3_000);
    assert_eq!(grade(&net, 2, 0), Some(Grade::Down));
    // Node 1 comes back first, node 0 a moment later: for that moment node 2
    // counts a majority while 0, alive, is still Down in its view.
    net.reconnect(2, 1);
    net.run_for(200);
    net.reconnect(2, 0);
    net.run_for(4_000);
    assert_eq!(
        net.members[2].replica.stats().rehomed,
        0,
        "node 2 took calls from node 0, which never died"
    );
    assert_eq!(net.members[2].replica.calls_owned_by(&node(0)).len(), 6);
    assert!(net.converged());
}

fn grace_3s(config: &mut ReplicaConfig) {
    detect(config);
    config.detector.restart_grace_ms = 3_000;
}

fn rehomed(net: &Net) -> u64 {
    (0..net.members.len())
        .map(|i| net.members[i].replica.stats().rehomed)
        .sum()
}

/// Node 2 announces `intent` and everyone acknowledges; then its process
/// is gone (nothing reaches it, nothing comes from it).
fn leaves(net: &mut Net, intent: Intent) {
    net.input(2, Input::Leave { intent });
    assert!(net.members[2].replica.departure_acknowledged());
    net.disconnect(2, 0);
    net.disconnect(2, 1);
}

#[test]
fn a_node_that_announces_a_restart_keeps_its_calls_and_is_healthy_when_back() {
    let mut net = formed();
    host_calls(&mut net, 2, 8);
    net.run_for(500);
    leaves(&mut net, Intent::Restart);
    // Well past the detector's conviction (about 2 s without a word).
    net.run_for(5_000);
    for i in [0, 1] {
        assert_eq!(grade(&net, i, 2), Some(Grade::Leaving), "replica {i}");
        assert_eq!(net.members[i].replica.calls_owned_by(&node(2)).len(), 8);
    }
    net.restart(2, detect);
    net.reconnect(0, 2);
    net.reconnect(1, 2);
    net.run_for(3_000);
    for i in [0, 1] {
        assert_eq!(grade(&net, i, 2), Some(Grade::Healthy), "replica {i}");
    }
    assert_eq!(net.members[0].replica.calls_owned_by(&node(2)).len(), 8);
    assert_eq!(rehomed(&net), 0, "a planned restart moves no call");
    assert!(net.converged());
}

#[test]
fn a_restart_not_back_within_its_grace_fails_over() {
    let mut net = Net::new(3, grace_3s);
    net.connect_all();
    net.run_for(2_000);
    host_calls(&mut net, 2, 8);
    net.run_for(500);
    leaves(&mut net, Intent::Restart);
    net.run_for(2_900);
    assert_eq!(grade(&net, 0, 2), Some(Grade::Leaving));
    assert_eq!(rehomed(&net), 0);
    net.run_for(2_000);
    assert_eq!(grade(&net, 0, 2), Some(Grade::Down));
    assert!(rehomed(&net) > 0, "its calls fail over once the grace ends");
}

#[test]
fn a_node_that_announces_a_stop_is_down_at_once_and_its_calls_move() {
    let mut net = formed();
    host_calls(&mut net, 2, 8);
    net.run_for(500);
    leaves(&mut net, Intent::Stop);
    for i in [0, 1] {
        assert_eq!(grade(&net, i, 2), Some(Grade::Down), "replica {i}");
    }
    // Sooner than the detector could convict it (suspicion alone waits
    // 800 ms after failed probes).
    net.run_for(600);
    assert!(rehomed(&net) > 0, "its calls move without waiting");
}

#[test]
fn a_restarting_node_does_not_count_towards_a_majority() {
    let mut net = formed();
    host_calls(&mut net, 1, 4);
    net.run_for(500);
    leaves(&mut net, Intent::Restart);
    // Then the link between the two others breaks: each is alone, with
    // only a restarting node beside it.
    net.disconnect(0, 1);
    net.run_for(5_000);
    assert_eq!(grade(&net, 0, 1), Some(Grade::Down));
    assert_eq!(grade(&net, 0, 2), Some(Grade::Leaving));
    assert_eq!(rehomed(&net), 0, "no side of the split fails over");
    assert!(net.members[0].replica.stats().failover_held_minority > 0);
}

/// Which nodes `from` sent a health report to (`health` datagrams), by
/// the bytes counted so far.
fn told(net: &Net, from: usize) -> BTreeMap<usize, u64> {
    net.bytes
        .iter()
        .filter(|((f, _, kind), _)| *f == from && *kind == "health")
        .map(|((_, to, _), bytes)| (*to, *bytes))
        .collect()
}

/// Nodes whose count grew between two snapshots of `told`.
fn newly_told(before: &BTreeMap<usize, u64>, after: &BTreeMap<usize, u64>) -> usize {
    after
        .iter()
        .filter(|(to, bytes)| before.get(to).is_none_or(|b| b < bytes))
        .count()
}

#[test]
fn reports_rotate_an_ask_is_answered_and_a_placement_change_goes_to_every_node() {
    use chorus_engine::hlc::Timestamp;
    use chorus_engine::membership::HealthReport;
    use chorus_engine::replica::wire::{self, Body, Envelope};
    let mut net = Net::new(8, detect);
    net.connect_all();
    net.run_for(3_000);
    // Settled: a report goes to two nodes in turn each interval.
    let before = told(&net, 0);
    net.run_for(500);
    let quiet = newly_told(&before, &told(&net, 0));
    assert!(quiet <= 3, "an idle interval told {quiet} nodes");
    let ask = wire::encode(&Envelope {
        cluster: common::pair::CLUSTER,
        sent_at: Timestamp {
            wall_ms: net.now_ms,
            logical: 0,
            actor: 7,
        },
        body: Body::HealthAsk {
            report: HealthReport {
                region: RegionId::parse("default").expect("valid"),
                capacity: 100,
                app: AppHealth::default(),
                drains: Vec::new(),
            },
        },
    });
    let before = told(&net, 0);
    net.input(
        0,
        Input::Message {
            from: node(1),
            bytes: ask,
        },
    );
    net.run_for(100);
    let after = told(&net, 0);
    assert!(after.get(&1) > before.get(&1), "the ask was answered");
    // Overloaded: every node must stop placing calls here soon, so the
    // report goes to all of them, and again the next interval in case
    // one was lost.
    net.run_for(400);
    let before = told(&net, 0);
    net.input(
        0,
        Input::Health {
            app: AppHealth::from_ratios(1.5, 0.0),
        },
    );
    net.run_for(100);
    assert_eq!(newly_told(&before, &told(&net, 0)), 7, "told at once");
    let before = told(&net, 0);
    net.run_for(500);
    assert_eq!(newly_told(&before, &told(&net, 0)), 7, "and again");
    net.run_for(1_000);
    let before = told(&net, 0);
    net.run_for(500);
    assert!(newly_told(&before, &told(&net, 0)) <= 3, "then in turn");
}

/// A node told it is suspected (`Suspected`, at its own identity) answers
/// `Refuted` at once, whatever gossip does; one known to be an older build
/// (it said what it reads, without `READS_REFUTE`) is never told.
#[test]
fn a_node_told_it_is_suspected_answers_that_it_is_alive() {
    use chorus_engine::hlc::Timestamp;
    use chorus_engine::replica::wire::{self, Body, Envelope, READS_LEAF_HEADS};
    let mut net = Net::new(3, detect);
    net.connect_all();
    net.run_for(3_000);
    let envelope = |now: u64, body: Body| {
        wire::encode(&Envelope {
            cluster: common::pair::CLUSTER,
            sent_at: Timestamp {
                wall_ms: now,
                logical: 0,
                actor: 7,
            },
            body,
        })
    };
    let refuted = |net: &Net| net.bytes.get(&(0, 1, "refuted")).copied().unwrap_or(0);
    let incarnation = net.members[0].replica.membership().own_incarnation();
    let told = envelope(
        net.now_ms,
        Body::Suspected {
            incarnation,
            swim: 0,
        },
    );
    net.input(
        0,
        Input::Message {
            from: node(1),
            bytes: told,
        },
    );
    net.run_for(100);
    assert!(refuted(&net) > 0, "no answer to Suspected");
    // Another identity of it (not this instance): no answer.
    let before = refuted(&net);
    let stale = envelope(
        net.now_ms,
        Body::Suspected {
            incarnation: incarnation + 1,
            swim: 0,
        },
    );
    net.input(
        0,
        Input::Message {
            from: node(1),
            bytes: stale,
        },
    );
    net.run_for(100);
    assert_eq!(refuted(&net), before);

    // Node 1 says it reads only the leaf heads. Node 0 then hears nothing
    // from nodes 1 and 2 (every datagram from them is lost): it suspects
    // both and asks both, but tells node 2 alone.
    let reads = envelope(
        net.now_ms,
        Body::Reads {
            reads: READS_LEAF_HEADS,
            ask: false,
        },
    );
    net.input(
        0,
        Input::Message {
            from: node(1),
            bytes: reads,
        },
    );
    net.cut.insert((1, 0));
    net.cut.insert((2, 0));
    net.run_for(3_000);
    let sent = |to: usize, kind: &'static str| net.bytes.get(&(0, to, kind)).copied();
    assert!(sent(1, "health_ask").is_some_and(|b| b > 0));
    assert!(
        sent(2, "suspected").is_some_and(|b| b > 0),
        "node 2 is told"
    );
    assert_eq!(sent(1, "suspected"), None, "node 1 cannot read it");
}
