//! Replica counters summed over every replica and every incarnation (a
//! restarted replica starts its counters from zero; the simulator keeps
//! what the crashed one had counted).

use chorus_engine::replica::ReplicaStats;
use serde::Serialize;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SyncPaths {
    pub incremental: u64,
    pub since: u64,
    pub full: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct StatTotals {
    pub sync_paths: SyncPaths,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    /// Bytes sent by message kind: where the traffic goes.
    pub bytes_by_kind: std::collections::BTreeMap<&'static str, u64>,
    pub local_writes: u64,
    /// Rooms compacted, summed over replicas.
    pub compactions: u64,
    /// Compactions off a replica's task: finished in line because the
    /// room moved meanwhile, sent off again to carry what it took (top-ups),
    /// and started when a peer's base arrived first.
    pub compactions_redone: u64,
    pub compaction_top_ups: u64,
    pub compactions_on_peer_base: u64,
    /// Peers' batches applied on a copy off a replica's task, and those
    /// applied again in line because the room moved meanwhile.
    pub applies_off_task: u64,
    pub applies_redone: u64,
    pub local_write_errors: u64,
    /// Peers' changes received, duplicates included.
    pub changes_received: u64,
    pub changes_applied: u64,
    pub changes_rejected: u64,
    /// Remote changes dropped because a room's pending buffer was full.
    pub pending_dropped: u64,
    /// Peers' bases left for a later round: their cut is not a request
    /// this replica may take.
    pub peer_bases_deferred: u64,
    /// Peers' bases taken by merging a room compacted past onto them.
    pub peer_bases_merged: u64,
    /// Such bases permitted once enough peers sent them.
    pub catch_ups_permitted: u64,
    /// Replicas compaction stopped waiting for (held Down for
    /// `compaction_absent_ms`).
    pub compaction_absent: u64,
    /// Purges followed on peers' word (a proof of another generation).
    pub purges_voted: u64,
    /// Rooms asked of a pusher for changes its push did not bring, and
    /// those spared because the changes applied during the wait.
    pub missing_pulls: u64,
    pub missing_pulls_spared: u64,
    pub push_skipped_oversize: u64,
    pub rounds_started: u64,
    pub rounds_idle: u64,
    pub rounds_timed_out: u64,
    pub stale_responses: u64,
    /// Differing rooms walks did not ask for (the peer was behind).
    pub leaf_rooms_skipped: u64,
    pub decode_errors: u64,
    pub foreign_cluster: u64,
    pub clock_drift_refused: u64,
    pub purged: u64,
    pub purged_refused: u64,
    pub storage_errors: u64,
    /// Suspicions ended by the suspect's own `Refuted`.
    pub swim_refutations: u64,
}

impl StatTotals {
    pub fn add(&mut self, s: &ReplicaStats) {
        self.sync_paths.incremental += s.sync_incremental;
        self.sync_paths.since += s.sync_since;
        self.sync_paths.full += s.sync_full;
        self.messages_sent += s.messages_sent();
        self.bytes_sent += s.bytes_sent();
        for (kind, traffic) in &s.sent {
            *self.bytes_by_kind.entry(kind).or_default() += traffic.bytes;
        }
        self.local_writes += s.local_writes;
        self.compactions += s.compactions;
        self.compactions_redone += s.compactions_redone;
        self.compaction_top_ups += s.compaction_top_ups;
        self.compactions_on_peer_base += s.compactions_on_peer_base;
        self.applies_off_task += s.applies_off_task;
        self.applies_redone += s.applies_redone;
        self.local_write_errors += s.local_write_errors;
        self.changes_received += s.changes_received;
        self.changes_applied += s.changes_applied;
        self.changes_rejected += s.changes_rejected;
        self.pending_dropped += s.pending_dropped;
        self.peer_bases_deferred += s.peer_bases_deferred;
        self.peer_bases_merged += s.peer_bases_merged;
        self.catch_ups_permitted += s.catch_ups_permitted;
        self.compaction_absent += s.compaction_absent;
        self.purges_voted += s.purges_voted;
        self.missing_pulls += s.missing_pulls;
        self.missing_pulls_spared += s.missing_pulls_spared;
        self.push_skipped_oversize += s.push_skipped_oversize;
        self.rounds_started += s.rounds_started;
        self.rounds_idle += s.rounds_idle;
        self.rounds_timed_out += s.rounds_timed_out;
        self.stale_responses += s.stale_responses;
        self.leaf_rooms_skipped += s.leaf_rooms_skipped;
        self.decode_errors += s.decode_errors.values().sum::<u64>();
        self.foreign_cluster += s.foreign_cluster;
        self.clock_drift_refused += s.clock_drift_refused;
        self.purged += s.purged;
        self.purged_refused += s.purged_refused;
        self.storage_errors += s.storage_errors;
        self.swim_refutations += s.swim_refutations;
    }
}
