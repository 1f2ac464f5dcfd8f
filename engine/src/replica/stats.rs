//! Counters a driver exports as metrics. Plain numbers; no I/O.

use std::collections::BTreeMap;

/// Messages and bytes of one message kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub messages: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    pub sent: BTreeMap<&'static str, Traffic>,
    pub received: BTreeMap<&'static str, Traffic>,
    /// Frames that failed to decode, by reason.
    pub decode_errors: BTreeMap<&'static str, u64>,
    pub foreign_cluster: u64,
    pub clock_drift_refused: u64,
    pub local_writes: u64,
    /// Rooms whose history this replica compacted (`room::compact`).
    pub compactions: u64,
    /// Compactions prepared off the replica's task that found their room
    /// changed meanwhile, and were finished in line (carrying what the
    /// room took since the copy onto the copy's result).
    pub compactions_redone: u64,
    /// Peers' changes carrying a newer base that arrived while this
    /// replica compacted the room off its task, and were dropped because
    /// too many were already held back (anti-entropy brings them again).
    pub compaction_held_dropped: u64,
    /// Compactions off the replica's task that failed, or whose result
    /// did not come back within `COMPACTION_WORK_MS_MAX`.
    pub compactions_failed: u64,
    /// Copies of a large room sent off the replica's task with peers'
    /// changes to apply (`replica::offload`).
    pub applies_off_task: u64,
    /// Of those, the ones whose room was written to meanwhile (or that
    /// failed): their changes applied again in line.
    pub applies_redone: u64,
    /// Peers' changes dropped because a large room already held
    /// `APPLY_HELD_BYTES_MAX` for its next copy (anti-entropy brings them
    /// again).
    pub apply_held_dropped: u64,
    /// Copies whose result did not come back within
    /// `COMPACTION_WORK_MS_MAX` (their changes come again by
    /// anti-entropy).
    pub applies_failed: u64,
    /// Imports prepared off the replica's task that found their room
    /// changed meanwhile, and were merged in line instead.
    pub imports_in_line: u64,
    pub local_write_errors: u64,
    pub changes_applied: u64,
    pub changes_rejected: u64,
    /// Changes refused by schema validation (`room::validate`), from peers.
    pub changes_refused: u64,
    /// Drain orders from peers refused (unknown node, stamped too far ahead).
    pub drains_refused: u64,
    /// Peers' purges refused for want of an end change of the room.
    pub purges_refused: u64,
    pub pending_dropped: u64,
    /// Peer changes of histories this replica compacted away, ignored.
    pub changes_superseded: u64,
    pub push_skipped_oversize: u64,
    pub rounds_started: u64,
    pub rounds_idle: u64,
    /// Rounds that found a difference but left it to a later turn because
    /// a round with another peer was already pulling.
    pub rounds_deferred: u64,
    pub rounds_timed_out: u64,
    pub stale_responses: u64,
    pub sync_incremental: u64,
    pub sync_since: u64,
    pub sync_full: u64,
    pub purged: u64,
    pub purged_refused: u64,
    pub storage_errors: u64,
    /// SWIM datagrams refused (malformed, spoofed sender, foca errors).
    pub swim_refused: u64,
    /// Calls this replica took over (failover or drain).
    pub rehomed: u64,
    /// Takeovers refused (another replica moved the call first).
    pub rehome_refused: u64,
    /// Orphaned calls with no healthy node to take them.
    pub rehome_no_candidate: u64,
    /// Move ticks that held a failover back: this replica saw no majority.
    pub failover_held_minority: u64,
}

impl ReplicaStats {
    pub fn record_sent(&mut self, kind: &'static str, bytes: usize) {
        let t = self.sent.entry(kind).or_default();
        t.messages += 1;
        t.bytes += bytes as u64;
    }

    pub fn record_received(&mut self, kind: &'static str, bytes: usize) {
        let t = self.received.entry(kind).or_default();
        t.messages += 1;
        t.bytes += bytes as u64;
    }

    pub fn bytes_sent(&self) -> u64 {
        self.sent.values().map(|t| t.bytes).sum()
    }

    pub fn messages_sent(&self) -> u64 {
        self.sent.values().map(|t| t.messages).sum()
    }
}
