//! Replicas compaction goes on without.
//!
//! A compaction completes only once every replica names its request, and
//! the version gate opens only once every replica said it can compact. A
//! replica that never comes back (a media node retired without being
//! removed from the configured peers, a store lost for good) would hold
//! every room's compaction back for ever, and with it the bound on their
//! history. So a replica held Down for `compaction_absent_ms` (24 hours by
//! default, as long as an ended room waits for an acknowledgement) is no
//! longer waited for, as long as the replicas not held so make a majority
//! with this one. If it comes back, its rooms were compacted past it and
//! it catches up as a straggler does (`catch_up.rs`, `room::catch_up`);
//! from then on it is waited for again.
//!
//! Both conditions keep one request per generation:
//! - **The majority.** Without it, each side of a long partition went on
//!   without the other and compacted at a request of its own, and the
//!   histories forked (the swarm found lost writes and replicas that never
//!   converged within a few hundred seeds, with the wait drawn short).
//! - **Held Down, not merely unheard.** If only the link between A and C
//!   is cut, each still reaches B; had each gone on without the other (a
//!   majority with B), A could compact at its request once B named it and
//!   C at its own once B named that. SWIM probes through other members,
//!   so neither holds the other Down. A replica that SWIM does not know at
//!   all since this one opened (a configured peer never heard from, and
//!   that no member gossips about) counts from the opening, so a restart
//!   starts the wait again.
//!
//! Without failure detection nothing is held Down, and every replica is
//! waited for. The majority is counted over the replicas this one knows
//! of (its configured peers and those heard from since it opened), so it
//! holds when every replica lists the same peers, as the daemon's
//! allow-list makes them.

use std::collections::BTreeSet;

use crate::ids::NodeId;
use crate::membership::Grade;
use crate::replica::journal::IncidentKind;
use crate::replica::Replica;

impl Replica {
    /// The replicas a compaction waits for, the version gate asks, and
    /// whose reading of stamped removals counts: every one this replica
    /// knows of that is not absent, if those make a majority with it.
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

    /// Whether `node` has been held Down, or unknown to SWIM since this
    /// replica opened, for `compaction_absent_ms`.
    fn absent(&self, node: &NodeId) -> bool {
        if !self.config.failure_detection {
            return false;
        }
        let since = match self.members.view(node) {
            Some(view) if view.grade == Grade::Down => view.since_ms,
            Some(_) => return false,
            None => self.compaction.opened_ms,
        };
        self.now_ms.saturating_sub(since) >= self.config.compaction_absent_ms
    }

    /// Journals the replicas compaction went on without, or waits for
    /// again, since the last compaction tick.
    pub(super) fn journal_absent(&mut self) {
        let awaited = self.awaited_replicas();
        let mut absent = self.known_replicas();
        absent.retain(|node| !awaited.contains(node));
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
            let note = format!("{node}: held Down for {window} ms; compaction goes on without it");
            self.journal(IncidentKind::Compaction, note);
        }
        for node in back {
            let note = format!("{node}: compaction waits for it again");
            self.journal(IncidentKind::Compaction, note);
        }
        self.compaction.absent = absent;
    }
}
