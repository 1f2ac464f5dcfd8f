//! A replica its peers compacted past: the catch-up of a straggler.
//!
//! Peers compact once every replica *they know of* names the cut
//! (`docs/protocol.md`, "Compacting long-lived rooms"). A replica they did
//! not know of (it joined cut off from them, or they all restarted while
//! it was away), or held Down for `compaction_absent_ms`, is not waited
//! for: its peers cut at a request it never
//! held, or compact twice, and their base reaches it with a cut it cannot
//! compute. Nobody holds the history it would need any more, so waiting
//! would wait for ever, and neither side would take the other's writes.
//!
//! So it takes its peers' base, checked as a replica that starts empty
//! checks one, and merges its own room's reading onto it, as an import from
//! before the cut is merged (`old_import`, `Source::Straggler`): its writes
//! made apart from its peers come along as one change, by the room's
//! conflict rules. What the merge cannot tell from what the room forgot
//! (`old_import`) is left out; the replica's own live sessions are not.
//!
//! Nothing here can check such a base (anyone can name a cut nobody
//! holds), so the room takes one only once permitted: the replica permits a
//! base after two of its peers sent it, or its one peer if it knows of one
//! only (`replica::compaction::catch_up`). Until then the base waits
//! (`RemoteApply::catch_up_asked`).

use automerge::{Change, ChangeHash};

use super::old_import::{self, Source};
use super::{compact, import, Intake, Refusal, RemoteApply, RoomDoc, Switch};
use crate::error::Error;

impl RoomDoc {
    /// Lets this room catch up on the peer's base `base` (its hash) when it
    /// comes again: the replica saw enough of its peers send it.
    pub fn permit_catch_up(&mut self, base: ChangeHash) {
        self.catch_up_permit = Some(base);
    }

    /// Switches this room to `base`, a peer's base of a newer generation
    /// whose cut is not held here, with the batch's changes that stand on
    /// it, and merges the room's reading from before onto it. Returns what
    /// of `changes` is left to take as usual. If any step fails, the room
    /// is left as it was and the base is refused (remembered: not tried
    /// again).
    pub(super) fn catch_up_on(
        &mut self,
        base: Change,
        changes: Vec<Change>,
        outcome: &mut RemoteApply,
    ) -> Result<Vec<Change>, Error> {
        let hash = base.hash();
        let mut fresh = RoomDoc::empty(self.id.clone(), self.doc.get_actor().clone());
        // Another base or genesis in the batch stands on nothing: left out,
        // so that the new document starts at `base`.
        let on_base: Vec<Change> = std::iter::once(base.clone())
            .chain(changes.iter().filter(|c| !c.deps().is_empty()).cloned())
            .collect();
        let taken = match fresh.apply_remote(on_base, Intake::EachChange) {
            Ok(taken) => taken,
            Err(err) => {
                let why = format!("it cannot be applied: {err}");
                return Ok(self.refuse_base(base, &why, changes, outcome));
            }
        };
        if !fresh.has_change(&hash) {
            let why = taken
                .refused
                .into_iter()
                .find(|(h, _)| *h == hash)
                .map_or_else(|| "its checks".to_owned(), |(_, why)| why.reason);
            return Ok(self.refuse_base(base, &why, changes, outcome));
        }
        let Some(horizon_ms) = compact::horizon_of(&fresh.doc) else {
            // A base from before compaction format 5 does not say what it
            // forgot; the merge cannot be made safely.
            let why = "it does not record its horizon (compaction format before 5)";
            return Ok(self.refuse_base(base, why, changes, outcome));
        };
        let (room, id, old) = (&fresh.doc, &self.id, &self.doc);
        let merged = import::unless_panic("merge", || {
            old_import::merge(room, id, old, horizon_ms, Source::Straggler)
        })
        .and_then(|merged| merged);
        let merged = match merged {
            Ok(merged) => merged,
            Err(err) => {
                let why = format!("this replica's room cannot be merged onto it: {err}");
                return Ok(self.refuse_base(base, &why, changes, outcome));
            }
        };
        let mut carried: Vec<Change> = taken
            .applied
            .into_iter()
            .filter(|c| c.hash() != hash)
            .collect();
        if let Some(merge) = merged {
            let applied = match fresh.apply_remote(vec![merge], Intake::EachChange) {
                Ok(applied) => applied,
                Err(err) => {
                    let why = format!("this replica's writes merged onto it fail: {err}");
                    return Ok(self.refuse_base(base, &why, changes, outcome));
                }
            };
            if let Some((_, why)) = applied.refused.first() {
                let why = format!(
                    "this replica's writes merged onto it are refused ({}): {}",
                    why.path, why.reason
                );
                return Ok(self.refuse_base(base, &why, changes, outcome));
            }
            carried.extend(applied.applied);
        }
        outcome.replaced_reading = self.install_taking_reading(fresh.doc);
        outcome.bases_merged += 1;
        outcome.compacted = Some(Switch {
            base,
            carried,
            prune_before_ms: horizon_ms,
        });
        Ok(changes)
    }

    fn refuse_base(
        &mut self,
        base: Change,
        why: &str,
        changes: Vec<Change>,
        outcome: &mut RemoteApply,
    ) -> Vec<Change> {
        outcome.refused.push((
            base.hash(),
            Refusal {
                path: String::new(),
                reason: format!("a base whose cut is not held here: {why}"),
            },
        ));
        changes
    }
}
