//! `/metrics` in the OpenMetrics text format. The counters live in the
//! sans-IO replica (`ReplicaStats`) and the engine's network and are copied
//! at scrape time, so they are rendered directly rather than mirrored into a
//! second registry that could drift from them.

use std::fmt::Write;

use chorus_engine::membership::Grade;
use chorus_engine::net::NetStats as StatsView;
use chorus_engine::replica::NodesView;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "# HELP {name} {help}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "counter", help);
    let _ = writeln!(out, "{name}_total {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

pub fn render(s: &StatsView, nodes: &NodesView) -> String {
    let mut out = String::new();
    replica_counters(&mut out, s);
    traffic(&mut out, s);
    protocol_counters(&mut out, s);
    node_gauges(&mut out, s);
    grades(&mut out, nodes);
    build_info(&mut out);
    out.push_str("# EOF\n");
    out
}

/// Every grade a node can have, as the API names them.
const GRADES: [(Grade, &str); 5] = [
    (Grade::Healthy, "healthy"),
    (Grade::Degraded, "degraded"),
    (Grade::Leaving, "leaving"),
    (Grade::Suspect, "suspect"),
    (Grade::Down, "down"),
];

/// `chorus_node_grade{node, grade}`: 1 for the grade this replica gives
/// each node it knows, 0 for the others (so a query can alert on
/// `chorus_node_grade{grade="down"} == 1`).
fn grades(out: &mut String, nodes: &NodesView) {
    family(
        out,
        "chorus_node_grade",
        "gauge",
        "The grade this replica gives each node it knows (1: the current one).",
    );
    for view in &nodes.nodes {
        for (grade, name) in GRADES {
            let _ = writeln!(
                out,
                "chorus_node_grade{{node=\"{}\",grade=\"{name}\"}} {}",
                escape(view.node.as_str()),
                u8::from(view.grade == grade)
            );
        }
    }
}

fn build_info(out: &mut String) {
    family(out, "chorus_build", "info", "The running build.");
    let _ = writeln!(
        out,
        "chorus_build_info{{version=\"{}\"}} 1",
        escape(env!("CARGO_PKG_VERSION"))
    );
}

/// A label value with `\`, `"` and newlines escaped (OpenMetrics).
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes, takeovers and refusals of the replica.
fn replica_counters(out: &mut String, s: &StatsView) {
    let r = &s.replica;
    counter(
        out,
        "chorus_changes_applied",
        "Remote changes applied.",
        r.changes_applied,
    );
    counter(
        out,
        "chorus_changes_rejected",
        "Remote changes refused: malformed, or for a room that refuses them.",
        r.changes_rejected,
    );
    counter(
        out,
        "chorus_changes_refused_invalid",
        "Peers' changes refused by schema validation (they would break the room).",
        r.changes_refused,
    );
    counter(
        out,
        "chorus_calls_rehomed",
        "Calls this replica took over (failover or drain).",
        r.rehomed,
    );
    counter(
        out,
        "chorus_rehome_refused",
        "Takeovers refused because another replica moved the call first.",
        r.rehome_refused,
    );
    counter(
        out,
        "chorus_rehome_no_candidate",
        "Orphaned calls found with no healthy node to take them.",
        r.rehome_no_candidate,
    );
    counter(
        out,
        "chorus_failover_held_minority",
        "Move ticks that held a failover back: no majority in sight.",
        r.failover_held_minority,
    );
    counter(
        out,
        "chorus_swim_refused",
        "Failure-detection datagrams refused (malformed or spoofed).",
        r.swim_refused,
    );
    counter(
        out,
        "chorus_datagrams_dropped",
        "Failure-detection datagrams not sent: no connection to the peer.",
        s.datagrams_dropped,
    );
    counter(
        out,
        "chorus_local_writes",
        "Local writes acknowledged.",
        r.local_writes,
    );
    counter(
        out,
        "chorus_local_write_errors",
        "Local writes and imports refused.",
        r.local_write_errors,
    );
    counter(
        out,
        "chorus_compactions",
        "Room histories this replica compacted.",
        r.compactions,
    );
    counter(
        out,
        "chorus_compactions_redone",
        "Compactions whose room changed while they ran off the replica's task, finished on it.",
        r.compactions_redone,
    );
    counter(
        out,
        "chorus_compaction_held_dropped",
        "Peer changes carrying a newer base, dropped while a compaction held back too many.",
        r.compaction_held_dropped,
    );
    counter(
        out,
        "chorus_compactions_failed",
        "Compactions off the replica's task that failed or never came back.",
        r.compactions_failed,
    );
    counter(
        out,
        "chorus_applies_off_task",
        "Copies of a large room sent off the replica's task with peers' changes to apply.",
        r.applies_off_task,
    );
    counter(
        out,
        "chorus_applies_redone",
        "Copies whose room was written to meanwhile, their changes applied again in line.",
        r.applies_redone,
    );
    counter(
        out,
        "chorus_apply_held_dropped",
        "Peers' batches dropped while a large room held too many for its next copy.",
        r.apply_held_dropped,
    );
    counter(
        out,
        "chorus_applies_failed",
        "Copies applied off the replica's task whose result never came back.",
        r.applies_failed,
    );
    counter(
        out,
        "chorus_imports_in_line",
        "Imports whose room changed while they merged off the replica's task, merged again on it.",
        r.imports_in_line,
    );
}

/// Bytes by message kind, catch-ups by path, and what followed them.
fn traffic(out: &mut String, s: &StatsView) {
    let r = &s.replica;
    family(
        out,
        "chorus_sent_bytes",
        "counter",
        "Bytes sent, by message kind.",
    );
    for (kind, t) in &r.sent {
        let _ = writeln!(
            out,
            "chorus_sent_bytes_total{{kind=\"{kind}\"}} {}",
            t.bytes
        );
    }
    family(
        out,
        "chorus_received_bytes",
        "counter",
        "Bytes received, by message kind.",
    );
    for (kind, t) in &r.received {
        let _ = writeln!(
            out,
            "chorus_received_bytes_total{{kind=\"{kind}\"}} {}",
            t.bytes
        );
    }
    family(
        out,
        "chorus_sync",
        "counter",
        "Completed catch-ups, by path.",
    );
    for (path, n) in [
        ("incremental", r.sync_incremental),
        ("since", r.sync_since),
        ("full", r.sync_full),
    ] {
        let _ = writeln!(out, "chorus_sync_total{{path=\"{path}\"}} {n}");
    }
    counter(
        out,
        "chorus_rounds_started",
        "Anti-entropy rounds started.",
        r.rounds_started,
    );
    counter(
        out,
        "chorus_rounds_idle",
        "Rounds that found the replicas equal.",
        r.rounds_idle,
    );
    counter(
        out,
        "chorus_rounds_mismatched",
        "Rounds that found a difference.",
        r.rounds_started.saturating_sub(r.rounds_idle),
    );
    counter(
        out,
        "chorus_rounds_timed_out",
        "Rounds abandoned.",
        r.rounds_timed_out,
    );
}

/// Decoding errors and the protocol's other counters.
fn protocol_counters(out: &mut String, s: &StatsView) {
    let r = &s.replica;
    family(
        out,
        "chorus_decode_errors",
        "counter",
        "Frames that failed to decode, by reason.",
    );
    for (reason, n) in &r.decode_errors {
        let _ = writeln!(out, "chorus_decode_errors_total{{reason=\"{reason}\"}} {n}");
    }
    counter(
        out,
        "chorus_foreign_cluster",
        "Messages from another cluster.",
        r.foreign_cluster,
    );
    counter(
        out,
        "chorus_pending_dropped",
        "Out-of-order changes dropped (buffer full).",
        r.pending_dropped,
    );
    counter(out, "chorus_purged", "Rooms purged.", r.purged);
    counter(
        out,
        "chorus_storage_errors",
        "Store reads that failed.",
        r.storage_errors,
    );
    counter(
        out,
        "chorus_refused_connections",
        "Connections refused (not allowed, or cut by a drill).",
        s.refused_connections,
    );
    counter(
        out,
        "chorus_failed_requests",
        "Requests to peers that failed.",
        s.failed_requests,
    );
    counter(
        out,
        "chorus_gossip_received",
        "Pushes received by gossip.",
        s.gossip_received,
    );
    counter(
        out,
        "chorus_gossip_refused",
        "Gossip messages dropped: their author is not on the allow-list.",
        s.gossip_refused,
    );
    counter(
        out,
        "chorus_drains_refused",
        "Peers' drain orders refused: unknown node, or stamped too far ahead.",
        s.replica.drains_refused,
    );
    counter(
        out,
        "chorus_purges_refused",
        "Peers' purges refused: no end change of the room as proof.",
        s.replica.purges_refused,
    );
    counter(
        out,
        "chorus_pushes_by_request",
        "Pushes sent by request while gossip had no subscribers.",
        s.pushes_by_request,
    );
}

/// The node's network counters and gauges.
fn node_gauges(out: &mut String, s: &StatsView) {
    gauge(
        out,
        "chorus_connected_peers",
        "Peers connected now.",
        s.connected_peers as u64,
    );
    gauge(
        out,
        "chorus_unsent_pushes",
        "Pushes held for gossip subscribers.",
        s.unsent_pushes as u64,
    );
    gauge(
        out,
        "chorus_command_queue_depth",
        "API commands waiting for the replica.",
        s.commands_queued as u64,
    );
    gauge(
        out,
        "chorus_rooms",
        "Rooms held (live and purged markers).",
        s.rooms as u64,
    );
}
