//! `/metrics` in the OpenMetrics text format, through `prometheus-client`.
//!
//! Two registries. The counters and gauges live in the sans-IO replica
//! (`ReplicaStats`) and the engine's network (`NetStats`), and so do the
//! write and replication latency histograms: a scrape copies them and a
//! collector (`Snapshot`) encodes that copy, so there is no second set of
//! counters that could drift from them. What only the daemon sees (the
//! API's latency, the build) is live in `LIVE`, built once.

mod http;

use std::fmt;
use std::sync::LazyLock;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use chorus_engine::membership::Grade;
use chorus_engine::net::NetStats as StatsView;
use chorus_engine::replica::stats::Histogram;
use chorus_engine::replica::NodesView;

pub use http::observe_request;

/// The daemon's own metrics, registered once: their values live in them.
static LIVE: LazyLock<Registry> = LazyLock::new(|| {
    let mut registry = Registry::default();
    // `Registry::register` appends the full stop to these help texts.
    registry.register(
        "chorus_build",
        "The running build",
        Info::new([("version", escape(env!("CARGO_PKG_VERSION")))]),
    );
    registry.register_with_unit(
        "chorus_http_request",
        "API requests by method and route (the route's pattern, or \
         unmatched), until the response's head is ready",
        Unit::Seconds,
        http::REQUESTS.clone(),
    );
    registry
});

/// The whole exposition: this scrape's copy of the engine's stats, then
/// the live metrics, then `# EOF`.
pub fn render(s: &StatsView, nodes: &NodesView) -> String {
    let mut snapshot = Registry::default();
    snapshot.register_collector(Box::new(Snapshot {
        stats: s.clone(),
        nodes: nodes.clone(),
    }));
    let mut out = String::new();
    let encoded = prometheus_client::encoding::text::encode_registry(&mut out, &snapshot)
        .and_then(|()| prometheus_client::encoding::text::encode_registry(&mut out, &LIVE))
        .and_then(|()| prometheus_client::encoding::text::encode_eof(&mut out));
    // Writing to a `String` cannot fail; a value the encoder refuses
    // (a gauge past `i64::MAX`) can. A truncated exposition without its
    // `# EOF` is refused whole by the scraper, which is the right outcome.
    if let Err(fmt::Error) = encoded {
        tracing::warn!("a metric could not be encoded; this scrape is incomplete");
    }
    out
}

/// One scrape's copy of the engine's stats, encoded as constant metrics.
#[derive(Debug)]
struct Snapshot {
    stats: StatsView,
    nodes: NodesView,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;
        replica_counters(e, &self.stats)?;
        traffic(e, &self.stats)?;
        protocol_counters(e, &self.stats)?;
        node_gauges(e, &self.stats)?;
        grades(e, &self.nodes)?;
        latencies(e, &self.stats)
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: usize) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A counter family with one label, one sample per `(label value, count)`.
fn counters_by<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in values {
        let labels = [(label, value)];
        ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram the engine keeps (`chorus_engine::replica::stats`), in
/// seconds: the unit is appended to `name` and announced (`# UNIT`).
fn histogram(e: &mut DescriptorEncoder, name: &str, help: &str, h: &Histogram) -> fmt::Result {
    let unit = Unit::Seconds;
    let mut metric = e.encode_descriptor(name, help, Some(&unit), MetricType::Histogram)?;
    metric.encode_histogram::<NoLabelSet>(h.sum_seconds(), h.count, &h.buckets_seconds(), None)
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
fn grades(e: &mut DescriptorEncoder, nodes: &NodesView) -> fmt::Result {
    let mut family = e.encode_descriptor(
        "chorus_node_grade",
        "The grade this replica gives each node it knows (1: the current one).",
        None,
        MetricType::Gauge,
    )?;
    for view in &nodes.nodes {
        let node = escape(view.node.as_str());
        for (grade, name) in GRADES {
            let labels = [("node", node.as_str()), ("grade", name)];
            let current = u32::from(view.grade == grade);
            ConstGauge::new(current).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// A label value with `\`, `"` and newlines escaped (OpenMetrics):
/// prometheus-client writes label values as they are.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes, takeovers and refusals of the replica.
fn replica_counters(e: &mut DescriptorEncoder, s: &StatsView) -> fmt::Result {
    let r = &s.replica;
    let rows = [
        (
            "chorus_changes_applied",
            "Remote changes applied.",
            r.changes_applied,
        ),
        (
            "chorus_changes_received",
            "Remote changes received (pushes, catch-up answers, snapshots), \
             duplicates included: over chorus_changes_applied, how many times \
             each needed change arrived.",
            r.changes_received,
        ),
        (
            "chorus_changes_rejected",
            "Remote changes refused: malformed, or for a room that refuses them.",
            r.changes_rejected,
        ),
        (
            "chorus_changes_refused_invalid",
            "Peers' changes refused by schema validation (they would break the room).",
            r.changes_refused,
        ),
        (
            "chorus_calls_rehomed",
            "Calls this replica took over (failover or drain).",
            r.rehomed,
        ),
        (
            "chorus_rehome_refused",
            "Takeovers refused because another replica moved the call first.",
            r.rehome_refused,
        ),
        (
            "chorus_rehome_no_candidate",
            "Orphaned calls found with no healthy node to take them.",
            r.rehome_no_candidate,
        ),
        (
            "chorus_failovers_restarted",
            "Failovers started again: a call of a Down node arrived after its failover ended.",
            r.failovers_restarted,
        ),
        (
            "chorus_handoffs",
            "Calls handed to the node placement names, which had not moved them.",
            r.handoffs,
        ),
        (
            "chorus_failover_held_minority",
            "Move ticks that held a failover back: no majority in sight.",
            r.failover_held_minority,
        ),
        (
            "chorus_failover_awaiting_quorum",
            "Move ticks that held a failover until a majority was heard from since it started.",
            r.failover_awaiting_quorum,
        ),
        (
            "chorus_swim_refused",
            "Failure-detection datagrams refused (malformed or spoofed).",
            r.swim_refused,
        ),
        (
            "chorus_swim_down_gossips",
            "Failure-detection gossips sent at once on learning that a node is down.",
            r.swim_down_gossips,
        ),
        (
            "chorus_watch_suspicions",
            "Suspicions raised by this replica as the watcher of a node silent for two probe periods.",
            r.watch_suspicions,
        ),
        (
            "chorus_watch_convictions",
            "Convictions that followed this replica's watch suspicions, unrefuted.",
            r.watch_convictions,
        ),
        (
            "chorus_swim_refutations",
            "Suspicions held by this replica that the suspect refuted directly, told it was suspected.",
            r.swim_refutations,
        ),
        (
            "chorus_datagrams_dropped",
            "Failure-detection datagrams not sent: no connection to the peer.",
            s.datagrams_dropped,
        ),
        (
            "chorus_local_writes",
            "Local writes acknowledged.",
            r.local_writes,
        ),
        (
            "chorus_local_write_errors",
            "Local writes and imports refused.",
            r.local_write_errors,
        ),
        (
            "chorus_missing_pulls",
            "Rooms asked of a pusher for changes its push depended on and did not bring.",
            r.missing_pulls,
        ),
        (
            "chorus_missing_pulls_spared",
            "Rooms a push left waiting where nothing waited any more when the request was due.",
            r.missing_pulls_spared,
        ),
        (
            "chorus_compactions",
            "Room histories this replica compacted.",
            r.compactions,
        ),
        (
            "chorus_compactions_redone",
            "Compactions whose room changed while they ran off the replica's task, finished on it.",
            r.compactions_redone,
        ),
        (
            "chorus_compaction_top_ups",
            "Compactions sent off the replica's task again to carry what their room took meanwhile.",
            r.compaction_top_ups,
        ),
        (
            "chorus_compactions_on_peer_base",
            "Compactions started off the replica's task when a peer's base for the room arrived first.",
            r.compactions_on_peer_base,
        ),
        (
            "chorus_compaction_base_mismatches",
            "Results of compactions off the replica's task that met a held peer's base at the same cut that differs (dropped unless a held base matches).",
            r.compaction_base_mismatches,
        ),
        (
            "chorus_compaction_held_dropped",
            "Peer changes carrying a newer base, dropped while a compaction held back too many.",
            r.compaction_held_dropped,
        ),
        (
            "chorus_compactions_failed",
            "Compactions off the replica's task that failed or never came back.",
            r.compactions_failed,
        ),
        (
            "chorus_applies_off_task",
            "Copies of a large room sent off the replica's task with peers' changes to apply.",
            r.applies_off_task,
        ),
        (
            "chorus_applies_redone",
            "Copies whose room was written to meanwhile, their changes applied again in line.",
            r.applies_redone,
        ),
        (
            "chorus_apply_held_dropped",
            "Peers' batches dropped while a large room held too many for its next copy.",
            r.apply_held_dropped,
        ),
        (
            "chorus_applies_failed",
            "Copies applied off the replica's task whose result never came back.",
            r.applies_failed,
        ),
        (
            "chorus_imports_in_line",
            "Imports whose room changed while they merged off the replica's task, merged again on it.",
            r.imports_in_line,
        ),
    ];
    for (name, help, value) in rows {
        counter(e, name, help, value)?;
    }
    Ok(())
}

/// Bytes by message kind, catch-ups by path, and what followed them.
fn traffic(e: &mut DescriptorEncoder, s: &StatsView) -> fmt::Result {
    let r = &s.replica;
    counters_by(
        e,
        "chorus_sent_bytes",
        "Bytes sent, by message kind.",
        "kind",
        r.sent.iter().map(|(kind, t)| (*kind, t.bytes)),
    )?;
    counters_by(
        e,
        "chorus_received_bytes",
        "Bytes received, by message kind.",
        "kind",
        r.received.iter().map(|(kind, t)| (*kind, t.bytes)),
    )?;
    counters_by(
        e,
        "chorus_sync",
        "Completed catch-ups, by path.",
        "path",
        [
            ("incremental", r.sync_incremental),
            ("since", r.sync_since),
            ("full", r.sync_full),
        ],
    )?;
    let mismatched = r.rounds_started.saturating_sub(r.rounds_idle);
    for (name, help, value) in [
        (
            "chorus_rounds_started",
            "Anti-entropy rounds started.",
            r.rounds_started,
        ),
        (
            "chorus_rounds_idle",
            "Rounds that found the replicas equal.",
            r.rounds_idle,
        ),
        (
            "chorus_rounds_mismatched",
            "Rounds that found a difference.",
            mismatched,
        ),
        (
            "chorus_rounds_timed_out",
            "Rounds abandoned.",
            r.rounds_timed_out,
        ),
        (
            "chorus_leaf_rooms_skipped",
            "Differing rooms a walk did not ask for: the peer's leaf answer showed it behind.",
            r.leaf_rooms_skipped,
        ),
    ] {
        counter(e, name, help, value)?;
    }
    Ok(())
}

/// Decoding errors and the protocol's other counters.
fn protocol_counters(e: &mut DescriptorEncoder, s: &StatsView) -> fmt::Result {
    let r = &s.replica;
    counters_by(
        e,
        "chorus_decode_errors",
        "Frames that failed to decode, by reason.",
        "reason",
        r.decode_errors.iter().map(|(reason, n)| (*reason, *n)),
    )?;
    let rows = [
        (
            "chorus_foreign_cluster",
            "Messages from another cluster.",
            r.foreign_cluster,
        ),
        (
            "chorus_pending_dropped",
            "Out-of-order changes dropped (buffer full).",
            r.pending_dropped,
        ),
        (
            "chorus_peer_bases_deferred",
            "Peers' compacted bases left for a later round: their cut is not a request this replica may take.",
            r.peer_bases_deferred,
        ),
        (
            "chorus_peer_bases_merged",
            "Peers' compacted bases taken by merging this replica's room onto them: its peers compacted past it.",
            r.peer_bases_merged,
        ),
        (
            "chorus_catch_ups_permitted",
            "Peers' bases whose cut is not held here, permitted once enough peers sent the same.",
            r.catch_ups_permitted,
        ),
        (
            "chorus_compaction_absent",
            "Replicas compaction stopped waiting for: held Down for compaction_absent_ms.",
            r.compaction_absent,
        ),
        ("chorus_purged", "Rooms purged.", r.purged),
        (
            "chorus_storage_errors",
            "Store reads that failed.",
            r.storage_errors,
        ),
        (
            "chorus_refused_connections",
            "Connections refused (not allowed, or cut by a drill).",
            s.refused_connections,
        ),
        (
            "chorus_failed_requests",
            "Requests to peers that failed.",
            s.failed_requests,
        ),
        (
            "chorus_gossip_received",
            "Pushes received by gossip.",
            s.gossip_received,
        ),
        (
            "chorus_gossip_refused",
            "Gossip messages dropped: their author is not on the allow-list.",
            s.gossip_refused,
        ),
        (
            "chorus_drains_refused",
            "Peers' drain orders refused: unknown node, or stamped too far ahead.",
            r.drains_refused,
        ),
        (
            "chorus_purges_refused",
            "Peers' purges refused: no end change of the room as proof.",
            r.purges_refused,
        ),
        (
            "chorus_purge_proofs_waiting",
            "Peers' purge proofs this replica cannot check (the room ended at another generation), waiting for more peers to send the same.",
            r.purge_proofs_waiting,
        ),
        (
            "chorus_purges_voted",
            "Purges followed on such a proof once enough peers sent it.",
            r.purges_voted,
        ),
        (
            "chorus_pushes_by_request",
            "Pushes sent by request while gossip had no subscribers.",
            s.pushes_by_request,
        ),
        (
            "chorus_wire_sent_bytes",
            "Bytes written to peers' TCP connections: chorus_sent_bytes plus \
             gossip relays and control, framing and encryption.",
            s.wire_sent_bytes,
        ),
        (
            "chorus_wire_received_bytes",
            "Bytes read from peers' TCP connections.",
            s.wire_received_bytes,
        ),
    ];
    for (name, help, value) in rows {
        counter(e, name, help, value)?;
    }
    Ok(())
}

/// The node's network gauges.
fn node_gauges(e: &mut DescriptorEncoder, s: &StatsView) -> fmt::Result {
    gauge(
        e,
        "chorus_connected_peers",
        "Peers connected now.",
        s.connected_peers,
    )?;
    gauge(
        e,
        "chorus_unsent_pushes",
        "Pushes held for gossip subscribers.",
        s.unsent_pushes,
    )?;
    gauge(
        e,
        "chorus_command_queue_depth",
        "API commands waiting for the replica.",
        s.commands_queued,
    )?;
    gauge(
        e,
        "chorus_rooms",
        "Rooms held (live and purged markers).",
        s.rooms,
    )
}

/// The write and replication paths' latencies, kept by the engine.
fn latencies(e: &mut DescriptorEncoder, s: &StatsView) -> fmt::Result {
    let l = &s.replica.latency;
    histogram(
        e,
        "chorus_write_ack",
        "Local writes and imports, from the replica's driver taking them to their ack after the flush.",
        &l.write_ack,
    )?;
    histogram(
        e,
        "chorus_remote_apply",
        "Inputs that applied peers' changes: the apply and staging its writes.",
        &l.remote_apply,
    )?;
    histogram(
        e,
        "chorus_replication_lag",
        "Peers' changes, from their writer's clock stamp to applied here (clock skew included).",
        &l.replication_lag,
    )?;
    histogram(
        e,
        "chorus_sync_round",
        "Anti-entropy rounds, from start to finish (rounds that time out are not timed).",
        &l.sync_round,
    )
}
