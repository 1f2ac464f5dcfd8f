//! Replicas compaction goes on without.
//!
//! A compaction completes only once every replica names its request, and
//! the version gate opens only once every replica said it can compact. A
//! replica that never comes back (a media node retired without being
//! removed from the configured peers, a store lost for good) would hold
//! every room's compaction back for ever, and with it the bound on their
//! history. So a replica not heard from for `compaction_absent_ms`
//! (24 hours by default, as long as an ended room waits for an
//! acknowledgement) is no longer waited for, as long as the replicas still
//! heard from make a majority with this one. If it comes back, its rooms
//! were compacted past it and it catches up as a straggler does
//! (`catch_up.rs`, `room::catch_up`); from then on it is waited for again.
//!
//! The majority matters: without it, each side of a long partition went
//! on without the other and compacted at a request of its own, and the
//! histories forked (the swarm found lost writes and replicas that never
//! converged within a few hundred seeds, with the wait drawn short).
//!
//! "Not heard from" is this replica's own view: any valid message counts
//! (`Membership::heard`), and a replica never heard from since this one
//! opened counts from the opening, so a restart starts the wait again.
//! Replicas that disagree on who is absent still compact at the same cut:
//! the base is a function of the request, and one that waited takes a
//! peer's base as its own compaction.

use std::collections::BTreeSet;

use crate::ids::NodeId;
use crate::replica::journal::IncidentKind;
use crate::replica::Replica;

impl Replica {
    /// The replicas a compaction waits for, and the version gate asks:
    /// every one this replica knows of that is not absent.
    pub(in crate::replica) fn awaited_replicas(&self) -> BTreeSet<NodeId> {
        let known = self.known_replicas();
        let present: BTreeSet<NodeId> = known
            .iter()
            .filter(|node| !self.absent(node))
            .cloned()
            .collect();
        // Only a majority goes on without the rest: two sides of a
        // partition must never both compact, each at its own request.
        if (present.len() + 1) * 2 > known.len() + 1 {
            present
        } else {
            known
        }
    }

    /// Whether `node` has not been heard from for `compaction_absent_ms`.
    fn absent(&self, node: &NodeId) -> bool {
        let heard = self
            .members
            .view(node)
            .and_then(|view| view.last_heard_ms)
            .unwrap_or(self.compaction.opened_ms);
        self.now_ms.saturating_sub(heard) >= self.config.compaction_absent_ms
    }

    /// Journals the replicas that became absent, or came back, since the
    /// last compaction tick.
    pub(super) fn journal_absent(&mut self) {
        let mut absent = self.known_replicas();
        absent.retain(|node| self.absent(node));
        let gone: Vec<NodeId> = absent
            .difference(&self.compaction.absent)
            .cloned()
            .collect();
        let back: Vec<NodeId> = self
            .compaction
            .absent
            .difference(&absent)
            .cloned()
            .collect();
        let window = self.config.compaction_absent_ms;
        for node in gone {
            self.stats.compaction_absent += 1;
            let note =
                format!("{node}: not heard from for {window} ms; compaction goes on without it");
            self.journal(IncidentKind::Compaction, note);
        }
        for node in back {
            let note = format!("{node}: heard from again; compaction waits for it");
            self.journal(IncidentKind::Compaction, note);
        }
        self.compaction.absent = absent;
    }
}
