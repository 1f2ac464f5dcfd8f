//! The bytes of the changes this replica applied most recently, by hash,
//! within a byte budget. Peers catching up ask for exactly these (the
//! since path serves the change log's newest entries), and automerge can
//! only rebuild a change from its op columns: 28 µs a change one by one,
//! or a pass over the whole document, for a room of 15 000 changes. Served
//! from here, an answer is a copy. A miss (evicted, or from before a
//! restart) falls back to automerge.

use std::collections::{HashMap, VecDeque};

use automerge::{Change, ChangeHash};

use crate::limits::RECENT_CHANGE_BYTES_MAX;
use crate::room::KnownChanges;

#[derive(Debug, Default)]
pub struct RecentChanges {
    by_hash: HashMap<ChangeHash, Change>,
    /// Oldest first: the order of eviction.
    order: VecDeque<ChangeHash>,
    bytes: usize,
}

impl RecentChanges {
    pub fn add(&mut self, changes: &[Change]) {
        for change in changes {
            let len = change.raw_bytes().len();
            if len > RECENT_CHANGE_BYTES_MAX || self.by_hash.contains_key(&change.hash()) {
                continue;
            }
            while self.bytes + len > RECENT_CHANGE_BYTES_MAX {
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                if let Some(gone) = self.by_hash.remove(&oldest) {
                    self.bytes -= gone.raw_bytes().len();
                }
            }
            self.bytes += len;
            self.order.push_back(change.hash());
            self.by_hash.insert(change.hash(), change.clone());
        }
    }

    pub fn get(&self, hash: &ChangeHash) -> Option<&Change> {
        self.by_hash.get(hash)
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl KnownChanges for RecentChanges {
    fn known(&self, hash: &ChangeHash) -> Option<&Change> {
        self.get(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ReadDoc, ROOT};

    fn changes(n: usize, size: usize) -> Vec<Change> {
        let mut doc = Automerge::new();
        (0..n)
            .map(|i| {
                let mut tx = doc.transaction();
                tx.put(ROOT, format!("k{i}"), "x".repeat(size))
                    .expect("put");
                let hash = tx.commit().0.expect("a change");
                doc.get_change_by_hash(&hash).expect("held")
            })
            .collect()
    }

    #[test]
    fn holds_the_newest_within_the_budget() {
        let size = RECENT_CHANGE_BYTES_MAX / 8;
        let all = changes(20, size);
        let mut recent = RecentChanges::default();
        recent.add(&all);
        assert!(recent.bytes() <= RECENT_CHANGE_BYTES_MAX);
        assert!(
            recent.get(&all[0].hash()).is_none(),
            "the oldest went first"
        );
        let newest = all.last().expect("some");
        assert_eq!(
            recent.get(&newest.hash()).map(Change::raw_bytes),
            Some(newest.raw_bytes())
        );
        // Adding one already held changes nothing.
        let before = recent.bytes();
        recent.add(std::slice::from_ref(newest));
        assert_eq!(recent.bytes(), before);
    }
}
