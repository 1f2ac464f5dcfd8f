//! The anti-entropy digest tree: every room contributes one 16-byte item
//! (a hash of its id and sorted heads, or a purge marker); a fixed tree of
//! fanout 16 and 4 levels (root, 16, 256, 4096 leaf buckets) XORs the items
//! below each node. XOR makes every update O(levels): remove the old item,
//! add the new one. Equal roots mean equal rooms everywhere (up to a 2^-64
//! collision among authenticated peers); unequal roots are narrowed down
//! level by level, O(d · log n) for d differing rooms.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::RoomId;
use crate::model::Head;

/// A digest: blake3 truncated to 128 bits. Collisions need 2^64 work, and
/// peers are authenticated, so 16 bytes are plenty and halve the tree's bytes.
pub type Digest = [u8; 16];

/// Children per node.
pub const FANOUT: usize = 16;
/// Levels below the root; leaves are at this level.
pub const DEPTH: u8 = 3;
/// Leaf buckets: FANOUT^DEPTH. 4096 buckets keep ~25 rooms per bucket at 100k rooms.
pub const LEAVES: usize = 4096;
const _: () = assert!(FANOUT.pow(DEPTH as u32) == LEAVES);

const EMPTY: Digest = [0; 16];

/// The item digest of a live room.
pub fn room_item(room: &RoomId, heads: &[Head]) -> Digest {
    let mut sorted: Vec<&Head> = heads.iter().collect();
    sorted.sort();
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"chorus-room-item-v1\0");
    hasher.update(room.as_str().as_bytes());
    for head in sorted {
        hasher.update(&head.0);
    }
    truncate(hasher.finalize())
}

/// The item digest of a purged room: the same on every replica, so replicas
/// that purged agree, and one that has not can recognise it.
pub fn purged_item(room: &RoomId) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"chorus-room-purged-v1\0");
    hasher.update(room.as_str().as_bytes());
    truncate(hasher.finalize())
}

fn truncate(hash: blake3::Hash) -> Digest {
    let mut out = EMPTY;
    out.copy_from_slice(&hash.as_bytes()[..16]);
    out
}

/// The leaf bucket of a room: the top 12 bits of blake3(room id).
pub fn bucket_of(room: &RoomId) -> u32 {
    let hash = blake3::hash(room.as_str().as_bytes());
    let b = hash.as_bytes();
    (u32::from(b[0]) << 4) | (u32::from(b[1]) >> 4)
}

fn xor(into: &mut Digest, item: &Digest) {
    for (a, b) in into.iter_mut().zip(item) {
        *a ^= b;
    }
}

#[derive(Debug, Clone)]
pub struct DigestTree {
    /// `levels[l]` has FANOUT^l nodes.
    levels: Vec<Vec<Digest>>,
    items: BTreeMap<RoomId, Digest>,
    buckets: BTreeMap<u32, BTreeSet<RoomId>>,
}

impl Default for DigestTree {
    fn default() -> Self {
        Self::new()
    }
}

impl DigestTree {
    pub fn new() -> Self {
        let levels = (0..=DEPTH)
            .map(|l| vec![EMPTY; FANOUT.pow(u32::from(l))])
            .collect();
        Self {
            levels,
            items: BTreeMap::new(),
            buckets: BTreeMap::new(),
        }
    }

    pub fn root(&self) -> Digest {
        self.levels[0][0]
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn item(&self, room: &RoomId) -> Option<Digest> {
        self.items.get(room).copied()
    }

    /// Sets (or replaces) a room's item.
    pub fn set(&mut self, room: &RoomId, item: Digest) {
        let old = self.items.insert(room.clone(), item);
        let bucket = bucket_of(room);
        if let Some(old) = old {
            self.apply(bucket, &old);
        }
        self.apply(bucket, &item);
        self.buckets.entry(bucket).or_default().insert(room.clone());
    }

    pub fn remove(&mut self, room: &RoomId) {
        if let Some(old) = self.items.remove(room) {
            let bucket = bucket_of(room);
            self.apply(bucket, &old);
            if let Some(rooms) = self.buckets.get_mut(&bucket) {
                rooms.remove(room);
            }
        }
    }

    fn apply(&mut self, bucket: u32, item: &Digest) {
        for level in 0..=DEPTH {
            let shift = 4 * u32::from(DEPTH - level);
            let node = (bucket >> shift) as usize;
            xor(&mut self.levels[usize::from(level)][node], item);
        }
        debug_assert!(
            self.path_consistent(bucket),
            "digest tree: a parent is not the XOR of its children"
        );
    }

    /// Invariant (checked in debug builds, so in every simulator run): on
    /// the path from `bucket` to the root, each node is the XOR of its
    /// FANOUT children. 4 levels of 16: cheap enough for every update.
    fn path_consistent(&self, bucket: u32) -> bool {
        (0..DEPTH).all(|level| {
            let shift = 4 * u32::from(DEPTH - level);
            let node = (bucket >> shift) as usize;
            let mut children = [0u8; 16];
            let below = &self.levels[usize::from(level) + 1];
            for child in &below[node * FANOUT..(node + 1) * FANOUT] {
                xor(&mut children, child);
            }
            children == self.levels[usize::from(level)][node]
        })
    }

    /// The FANOUT children of `node` at `level` (< DEPTH); `None` if out of range.
    pub fn children(&self, level: u8, node: u32) -> Option<&[Digest]> {
        if level >= DEPTH {
            return None;
        }
        let below = self.levels.get(usize::from(level) + 1)?;
        let start = (node as usize).checked_mul(FANOUT)?;
        below.get(start..start + FANOUT)
    }

    /// The rooms in a leaf bucket with their items.
    pub fn leaf(&self, bucket: u32) -> Vec<(RoomId, Digest)> {
        self.buckets
            .get(&bucket)
            .into_iter()
            .flatten()
            .filter_map(|room| Some((room.clone(), *self.items.get(room)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(i: usize) -> RoomId {
        RoomId::parse(format!("room-{i}")).expect("valid")
    }

    #[test]
    fn root_depends_on_content_not_insertion_order() {
        let mut a = DigestTree::new();
        let mut b = DigestTree::new();
        for i in 0..100 {
            a.set(&room(i), room_item(&room(i), &[Head([i as u8; 32])]));
        }
        for i in (0..100).rev() {
            b.set(&room(i), room_item(&room(i), &[Head([i as u8; 32])]));
        }
        assert_eq!(a.root(), b.root());
        b.set(&room(5), room_item(&room(5), &[Head([99; 32])]));
        assert_ne!(a.root(), b.root());
        b.set(&room(5), room_item(&room(5), &[Head([5; 32])]));
        assert_eq!(a.root(), b.root(), "replacing an item undoes cleanly");
        b.remove(&room(7));
        assert_ne!(a.root(), b.root());
        assert_eq!(b.len(), 99);
    }

    #[test]
    fn a_difference_is_visible_down_one_path() {
        let mut a = DigestTree::new();
        for i in 0..1000 {
            a.set(&room(i), purged_item(&room(i)));
        }
        let mut b = a.clone();
        b.set(&room(42), room_item(&room(42), &[]));
        let bucket = bucket_of(&room(42));
        let mut node = 0u32;
        for level in 0..DEPTH {
            let ca = a.children(level, node).expect("in range");
            let cb = b.children(level, node).expect("in range");
            let differing: Vec<usize> = (0..FANOUT).filter(|&i| ca[i] != cb[i]).collect();
            assert_eq!(differing.len(), 1);
            node = node * FANOUT as u32 + differing[0] as u32;
        }
        assert_eq!(node, bucket);
        assert!(a.children(DEPTH, 0).is_none());
        assert!(a.children(0, 1).is_none());
    }
}
