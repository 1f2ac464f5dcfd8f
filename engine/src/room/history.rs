//! Walking a room's history: ancestors of its heads, and the changes a
//! peer lacks. automerge answers a change's metadata or bytes by decoding
//! its op columns, at a cost that grows with the document; the replica's
//! most recent changes are at hand elsewhere (`KnownChanges`), and a walk
//! reads those from there. And the causal order of a set of changes, and
//! the dependants of a set among others.

use std::collections::{HashMap, HashSet};

use automerge::{Change, ChangeHash, ReadDoc};

use super::RoomDoc;

/// Changes at hand outside a room's document, by hash (the replica's
/// most recent ones): automerge answers a change's metadata or bytes by
/// decoding its op columns, at a cost that grows with the document.
pub trait KnownChanges {
    fn known(&self, hash: &ChangeHash) -> Option<&Change>;
}

/// No change at hand: everything is read from the document.
pub struct NoKnownChanges;

impl KnownChanges for NoKnownChanges {
    fn known(&self, _: &ChangeHash) -> Option<&Change> {
        None
    }
}

impl RoomDoc {
    /// Up to `limit` ancestors of the heads (the heads excluded), nearest
    /// first, read from change metadata (no op is decoded).
    pub fn ancestors(&self, limit: usize, known: &dyn KnownChanges) -> Vec<ChangeHash> {
        let heads = self.doc.get_heads();
        self.walk_back_known(limit + heads.len(), |_| false, known)
            .into_iter()
            .map(|(hash, _)| hash)
            .filter(|hash| !heads.contains(hash))
            .take(limit)
            .collect()
    }

    /// Walks back from the heads (included) through dependencies, breadth
    /// first, visiting at most `limit` changes. A change for which `stop`
    /// holds is not walked past; it comes back marked `true`.
    pub fn walk_back(
        &self,
        limit: usize,
        stop: impl FnMut(&ChangeHash) -> bool,
    ) -> Vec<(ChangeHash, bool)> {
        self.walk_back_known(limit, stop, &NoKnownChanges)
    }

    /// `walk_back`, reading the dependencies of the changes `known` holds
    /// from there: automerge finds a change's metadata by decoding its
    /// columns, at a cost that grows with the document (a walk of 256
    /// changes took milliseconds in a room of a thousand). A hash names
    /// its dependencies, so a change known elsewhere has the same ones.
    pub fn walk_back_known(
        &self,
        limit: usize,
        mut stop: impl FnMut(&ChangeHash) -> bool,
        known: &dyn KnownChanges,
    ) -> Vec<(ChangeHash, bool)> {
        let heads = self.doc.get_heads();
        let mut seen: std::collections::HashSet<ChangeHash> = heads.iter().copied().collect();
        let mut queue: std::collections::VecDeque<ChangeHash> = heads.into_iter().collect();
        let mut out = Vec::new();
        while let Some(hash) = queue.pop_front() {
            if out.len() == limit {
                break;
            }
            let stopped = stop(&hash);
            out.push((hash, stopped));
            if stopped {
                continue;
            }
            let deps = match known.known(&hash) {
                Some(change) => change.deps().to_vec(),
                None => match self.doc.get_change_meta_by_hash(&hash) {
                    Some(meta) => meta.deps,
                    None => continue,
                },
            };
            for dep in deps {
                if seen.insert(dep) {
                    queue.push_back(dep);
                }
            }
        }
        out
    }
    /// Changes a peer whose heads are `have` lacks.
    pub fn changes_since(&self, have: &[ChangeHash]) -> Vec<Change> {
        self.doc.get_changes(have)
    }

    /// `changes_since`, taking the changes `known` holds from there, in
    /// the order automerge lists them. automerge rebuilds every change it
    /// returns from the op columns, in a pass over the whole document:
    /// answering a peer that lacks the last few changes cost about as
    /// much as one lacking them all. With no heads given (the whole
    /// history), automerge's own pass is the cheaper one.
    pub fn changes_since_known(
        &self,
        have: &[ChangeHash],
        known: &dyn KnownChanges,
    ) -> Vec<Change> {
        if have.is_empty() {
            return self.doc.get_changes(have);
        }
        let hashes: Vec<ChangeHash> = self
            .doc
            .get_changes_meta(have)
            .into_iter()
            .map(|meta| meta.hash)
            .collect();
        let missing: Vec<ChangeHash> = hashes
            .iter()
            .filter(|hash| known.known(hash).is_none())
            .copied()
            .collect();
        if hashes.is_empty() {
            return Vec::new();
        }
        // automerge's pass over the changes asked for costs about a sixth
        // of rebuilding them one by one (`changes_by_hash`): past a few
        // misses, the pass is the cheaper.
        if missing.len().saturating_mul(6) > hashes.len() {
            return self.doc.get_changes(have);
        }
        let mut rebuilt: std::collections::HashMap<ChangeHash, Change> = self
            .changes_by_hash(&missing)
            .into_iter()
            .map(|change| (change.hash(), change))
            .collect();
        hashes
            .iter()
            .filter_map(|hash| known.known(hash).cloned().or_else(|| rebuilt.remove(hash)))
            .collect()
    }

    /// The changes among `hashes` that the document holds. automerge
    /// rebuilds a change from its op columns: one by one costs about 6x
    /// what rebuilding every change of the document costs per change
    /// (28 µs against 5 µs, release build, 15 000 changes). So a few are
    /// rebuilt one by one, and many in one pass over the whole document.
    pub fn changes_by_hash(&self, hashes: &[ChangeHash]) -> Vec<Change> {
        let total = usize::try_from(self.doc.stats().num_changes).unwrap_or(usize::MAX);
        if hashes.len().saturating_mul(6) <= total {
            return hashes
                .iter()
                .filter_map(|h| self.doc.get_change_by_hash(h))
                .collect();
        }
        let wanted: std::collections::HashSet<&ChangeHash> = hashes.iter().collect();
        let mut changes = self.doc.get_changes(&[]);
        changes.retain(|c| wanted.contains(&c.hash()));
        changes
    }
}

/// `changes` with every change after the ones it depends on: by level
/// (a change with no dependency among them first, then those depending
/// only on those, and so on), in the given order within a level. Levels
/// are found in one walk: a pass per level was quadratic in a chain.
pub(super) fn causal_order(changes: Vec<Change>) -> Vec<Change> {
    let index: HashMap<ChangeHash, usize> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.hash(), i))
        .collect();
    let inside = |i: usize| -> Vec<usize> {
        changes[i]
            .deps()
            .iter()
            .filter_map(|d| index.get(d).copied())
            .collect()
    };
    let mut level: Vec<Option<usize>> = vec![None; changes.len()];
    let mut entered = vec![false; changes.len()];
    for start in 0..changes.len() {
        let mut stack = vec![start];
        while let Some(&i) = stack.last() {
            if level[i].is_some() {
                stack.pop();
                continue;
            }
            let deps = inside(i);
            if !entered[i] {
                entered[i] = true;
                stack.extend(
                    deps.iter()
                        .copied()
                        .filter(|&j| level[j].is_none() && !entered[j]),
                );
                continue;
            }
            // A cycle cannot happen (hashes chain); a dependency still
            // unleveled counts as level 0.
            let below = deps.iter().filter_map(|&j| level[j]).max();
            level[i] = Some(below.map_or(0, |l| l + 1));
            stack.pop();
        }
    }
    let mut order: Vec<(usize, Change)> = changes
        .into_iter()
        .enumerate()
        .map(|(i, c)| (level[i].unwrap_or(0), c))
        .collect();
    order.sort_by_key(|(l, _)| *l);
    order.into_iter().map(|(_, c)| c).collect()
}

/// Adds to `gone` every change of `within` that depends, directly or
/// through others of `within`, on a change in `gone` or on one `root`
/// names. How a replaced history's changes and what waits on them are
/// found (`RoomDoc::drop_superseded`, `RoomDoc::install`). Linear, through
/// an index of each change's dependants: a fixpoint re-scanning `within`
/// once per step was quadratic in a chain that came newest first.
pub(super) fn spread_to_dependants<'a>(
    gone: &mut HashSet<ChangeHash>,
    within: impl IntoIterator<Item = &'a Change>,
    root: impl Fn(&ChangeHash) -> bool,
) {
    let mut dependants: HashMap<ChangeHash, Vec<ChangeHash>> = HashMap::new();
    let mut queue: Vec<ChangeHash> = gone.iter().copied().collect();
    for change in within {
        let hash = change.hash();
        for dep in change.deps() {
            if root(dep) && gone.insert(hash) {
                queue.push(hash);
            }
            dependants.entry(*dep).or_default().push(hash);
        }
    }
    while let Some(hash) = queue.pop() {
        for dependant in dependants.get(&hash).into_iter().flatten() {
            if gone.insert(*dependant) {
                queue.push(*dependant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ROOT};

    use super::*;

    /// A chain of `n` changes, oldest first.
    fn chain(n: usize, actor: &[u8]) -> Vec<Change> {
        let mut doc = AutoCommit::new().with_actor(automerge::ActorId::from(actor));
        for i in 0..n {
            doc.put(ROOT, "k", i as u64).expect("put");
            doc.commit();
        }
        doc.get_changes(&[])
    }

    #[test]
    fn dependants_are_found_whatever_the_order_and_only_they() {
        let line = chain(50, b"a");
        let other = chain(3, b"b");
        let mut newest_first: Vec<&Change> = line.iter().rev().collect();
        newest_first.extend(other.iter());
        let mut gone: HashSet<ChangeHash> = [line[10].hash()].into();
        spread_to_dependants(&mut gone, newest_first.iter().copied(), |_| false);
        let expected: HashSet<ChangeHash> = line[10..].iter().map(Change::hash).collect();
        assert_eq!(gone, expected);
        // From a root outside the set: the changes standing on it.
        let mut gone = HashSet::new();
        let root = line[19].hash();
        spread_to_dependants(&mut gone, line[20..].iter().rev(), |d| *d == root);
        assert_eq!(gone, line[20..].iter().map(Change::hash).collect());
    }
}
