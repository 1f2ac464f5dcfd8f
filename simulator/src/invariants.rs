//! The invariants a run must keep, each checked and reported on its own:
//!
//! 1. `convergence` — after the liveness phase every replica is up and all
//!    hold the same digest root and the same snapshot of every room;
//! 2. `acked_writes_durable` — every acknowledged write is on every replica
//!    (unless its room was purged there);
//! 3. `equal_heads_equal_state` — during the run, two replicas with equal
//!    heads of a room read equal snapshots of it;
//! 4. `purged_stay_purged` — a replica that reported a room purged never
//!    shows it again;
//! 5. `single_owner` — after convergence every replica names the same owner
//!    for each live call, and it is the greatest `(epoch, node)` any
//!    acknowledged write gave that call;
//! 6. `bounded_queues` — no bounded buffer overflowed (pending changes).
//!
//! 7. `version_gate` — no room is compacted while a member runs a build
//!    that cannot read compacted rooms (`older_builds`).
//!
//! An eighth, `no_panic`, fails when the engine (or the driver) panicked.

use std::collections::{BTreeMap, BTreeSet};

use chorus_engine::{
    Head, Lifecycle, Owner, RoomId, RoomOp, RoomSnapshot, SessionId, SessionState,
};
use serde::Serialize;

use crate::cluster::{AckedWrite, Cluster};
use crate::rng::Rng;

/// Failure messages kept per invariant (the rest are only counted).
const MESSAGES_MAX: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    Convergence,
    AckedWritesDurable,
    EqualHeadsEqualState,
    PurgedStayPurged,
    SingleOwner,
    BoundedQueues,
    /// The scenario's failover budget and false-failover limit hold.
    Failover,
    VersionGate,
    NoPanic,
}

impl Invariant {
    pub const ALL: [Invariant; 9] = [
        Invariant::Convergence,
        Invariant::AckedWritesDurable,
        Invariant::EqualHeadsEqualState,
        Invariant::PurgedStayPurged,
        Invariant::SingleOwner,
        Invariant::BoundedQueues,
        Invariant::Failover,
        Invariant::VersionGate,
        Invariant::NoPanic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Invariant::Convergence => "convergence",
            Invariant::AckedWritesDurable => "acked_writes_durable",
            Invariant::EqualHeadsEqualState => "equal_heads_equal_state",
            Invariant::PurgedStayPurged => "purged_stay_purged",
            Invariant::SingleOwner => "single_owner",
            Invariant::BoundedQueues => "bounded_queues",
            Invariant::Failover => "failover",
            Invariant::VersionGate => "version_gate",
            Invariant::NoPanic => "no_panic",
        }
    }
}

/// What went wrong with one invariant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Failures {
    pub count: u64,
    pub first: Vec<String>,
}

/// Records the invariants' failures over a run.
pub struct Checker {
    /// The checker's own generator: which rooms a check samples never
    /// changes the run itself.
    rng: Rng,
    rooms_per_check: usize,
    /// `[checks] replicas_per_room`: the live replicas a room-level check
    /// reads (all when `None`).
    replicas_per_room: Option<usize>,
    failures: BTreeMap<Invariant, Failures>,
    pub checks_run: u64,
    pub rooms_compared: u64,
    /// Per room, what the last periodic check of (iii) found: see
    /// [`Verified`].
    verified: BTreeMap<RoomId, Verified>,
}

/// Heads that several replicas held at a periodic check, the reading they
/// agreed on, and which replicas read it (node, life). While a replica's
/// heads stay, it is not read again: at 20 replicas, reading the sampled
/// rooms on every replica at every check was 15 % of a run's wall time.
/// The cost: a reading that changed on a replica without its heads
/// changing (a cached reading gone stale) is caught by the final check,
/// which reads every replica, not by the periodic ones. A restarted
/// replica is a new life and is read again. At most one entry per room
/// the checks sample.
struct Verified {
    heads: Vec<Head>,
    reading: Option<RoomSnapshot>,
    read_by: BTreeSet<(usize, u64)>,
    /// The node whose reading the others are compared with, and when.
    reference: usize,
    read_at_ms: u64,
}

/// `n` of the positions `0..len`, evenly spaced, starting at `k`: over
/// consecutive `k` every position is taken in turn (`n` < `len`).
fn spread(len: usize, n: usize, k: usize) -> Vec<usize> {
    (0..n).map(|j| (k + j * len / n) % len).collect()
}

impl Checker {
    pub fn new(seed: u64, rooms_per_check: usize, replicas_per_room: Option<usize>) -> Self {
        Self {
            rng: Rng::new(seed ^ 0x0C4E_C4E5_C4E5_C4E5),
            rooms_per_check,
            replicas_per_room,
            failures: BTreeMap::new(),
            checks_run: 0,
            rooms_compared: 0,
            verified: BTreeMap::new(),
        }
    }

    /// The live replicas that the room-level checks read for the `k`th room
    /// (or write): every one, or `replicas_per_room` of them spread evenly
    /// over the node numbers, starting at a different node for each `k`.
    /// Reading a room loads it (about a third of a millisecond), so at 200
    /// replicas reading every room on every one cost minutes; the digest
    /// roots, compared on every replica, already show that they all hold
    /// the same heads of every room.
    fn readers(&self, cluster: &Cluster, k: usize) -> Vec<usize> {
        let live: Vec<usize> = (0..cluster.len())
            .filter(|&i| cluster.nodes[i].is_up())
            .collect();
        match self.replicas_per_room {
            Some(n) if n > 0 && n < live.len() => spread(live.len(), n, k)
                .into_iter()
                .map(|at| live[at])
                .collect(),
            _ => live,
        }
    }

    pub fn fail(&mut self, invariant: Invariant, message: String) {
        let f = self.failures.entry(invariant).or_default();
        f.count += 1;
        if f.first.len() < MESSAGES_MAX {
            f.first.push(message);
        }
    }

    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    pub fn failures(&self) -> &BTreeMap<Invariant, Failures> {
        &self.failures
    }

    /// Invariant name → "pass" / "fail".
    pub fn verdicts(&self) -> BTreeMap<&'static str, &'static str> {
        Invariant::ALL
            .iter()
            .map(|&i| {
                let verdict = if self.failures.contains_key(&i) {
                    "fail"
                } else {
                    "pass"
                };
                (i.name(), verdict)
            })
            .collect()
    }

    /// The checks made during the run: (iii) on a sample of rooms, (iv).
    pub fn periodic(&mut self, cluster: &mut Cluster, rooms: &[RoomId]) {
        self.checks_run += 1;
        let sample = self.sample(rooms);
        self.equal_heads_equal_state(cluster, &sample, true);
        self.purged_stay_purged(cluster);
        self.version_gate(cluster);
    }

    /// (vii): checked before every upgrade and at every check.
    fn version_gate(&mut self, cluster: &mut Cluster) {
        cluster.check_version_gate();
        if self.failures.contains_key(&Invariant::VersionGate) {
            return;
        }
        if let Some(breach) = &cluster.gate_breach {
            self.fail(Invariant::VersionGate, breach.clone());
        }
    }

    fn sample(&mut self, rooms: &[RoomId]) -> Vec<RoomId> {
        if rooms.len() <= self.rooms_per_check {
            return rooms.to_vec();
        }
        let mut picked = BTreeSet::new();
        while picked.len() < self.rooms_per_check {
            picked.insert(self.rng.index(rooms.len()));
        }
        picked.into_iter().map(|i| rooms[i].clone()).collect()
    }

    /// (iii): replicas holding the same heads of a room read the same room.
    /// `remember`: a replica (one life of a node) that already read the
    /// room at these heads, equal to the others, is not read again while
    /// the heads stay; the end-of-run check reads every replica.
    pub fn equal_heads_equal_state(
        &mut self,
        cluster: &mut Cluster,
        rooms: &[RoomId],
        remember: bool,
    ) {
        for (k, room) in rooms.iter().enumerate() {
            self.rooms_compared += 1;
            let mut by_heads: BTreeMap<Vec<Head>, Vec<usize>> = BTreeMap::new();
            for i in self.readers(cluster, k) {
                if let Some(heads) = cluster.heads(i, room).filter(|h| !h.is_empty()) {
                    by_heads.entry(heads).or_default().push(i);
                }
            }
            let mut known = self.verified.remove(room).filter(|_| remember);
            let mut kept: Option<Verified> = None;
            for (heads, nodes) in by_heads.into_iter().filter(|(_, n)| n.len() > 1) {
                let mut verified = match known.take() {
                    Some(v) if v.heads == heads => v,
                    other => {
                        known = other;
                        Verified {
                            heads,
                            reading: cluster.room(nodes[0], room),
                            read_by: BTreeSet::from([cluster.life(nodes[0])]),
                            reference: nodes[0],
                            read_at_ms: cluster.now_ms,
                        }
                    }
                };
                for &other in &nodes {
                    if verified.read_by.contains(&cluster.life(other)) {
                        continue;
                    }
                    if cluster.room(other, room) != verified.reading {
                        let message = format!(
                            "at {} ms room {room}: node {} (read at {} ms) and node {other} \
                             hold equal heads but read different snapshots",
                            cluster.now_ms, verified.reference, verified.read_at_ms
                        );
                        self.fail(Invariant::EqualHeadsEqualState, message);
                    } else {
                        verified.read_by.insert(cluster.life(other));
                    }
                }
                if kept
                    .as_ref()
                    .is_none_or(|k| k.read_by.len() < verified.read_by.len())
                {
                    kept = Some(verified);
                }
            }
            if let Some(verified) = kept.filter(|_| remember) {
                self.verified.insert(room.clone(), verified);
            }
        }
    }

    /// (iv): a room a replica purged stays purged there.
    pub fn purged_stay_purged(&mut self, cluster: &mut Cluster) {
        let records: BTreeSet<(usize, RoomId)> = cluster
            .purges
            .iter()
            .map(|p| (p.node, p.room.clone()))
            .collect();
        for (node, room) in records {
            let Some(replica) = cluster.nodes[node].replica.as_mut() else {
                continue;
            };
            let purged = replica.is_purged(&room);
            let readable = matches!(replica.room(&room), Ok(Some(_)));
            if !purged || readable {
                let message = format!(
                    "at {} ms node {node} purged room {room} earlier, now is_purged = \
                     {purged}, readable = {readable}",
                    cluster.now_ms
                );
                self.fail(Invariant::PurgedStayPurged, message);
            }
        }
    }

    /// The end-of-run checks, after the liveness phase.
    pub fn final_checks(&mut self, cluster: &mut Cluster, rooms: &[RoomId], converged: bool) {
        self.convergence(cluster, rooms, converged);
        self.acked_writes(cluster);
        self.equal_heads_equal_state(cluster, rooms, false);
        self.purged_stay_purged(cluster);
        self.single_owner(cluster, rooms);
        self.version_gate(cluster);
        let dropped = cluster.stat_totals().pending_dropped;
        if dropped > 0 {
            let message = format!("{dropped} remote changes dropped: a pending buffer was full");
            self.fail(Invariant::BoundedQueues, message);
        }
    }

    /// (i): every replica up, equal roots, equal snapshots of every room.
    fn convergence(&mut self, cluster: &mut Cluster, rooms: &[RoomId], converged: bool) {
        let down: Vec<usize> = (0..cluster.len())
            .filter(|&i| !cluster.nodes[i].is_up())
            .collect();
        if !down.is_empty() {
            self.fail(
                Invariant::Convergence,
                format!("nodes {down:?} are down after the liveness phase"),
            );
        }
        if !converged {
            let roots: Vec<String> = cluster
                .nodes
                .iter()
                .filter_map(|n| n.replica.as_ref())
                .map(|r| hex(&r.root()[..4]))
                .collect();
            self.fail(
                Invariant::Convergence,
                format!("digest roots still differ when the liveness budget ran out: {roots:?}"),
            );
        }
        for (k, room) in rooms.iter().enumerate() {
            let readers = self.readers(cluster, k);
            let Some((&first, others)) = readers.split_first() else {
                return;
            };
            let expected = cluster.room(first, room);
            for &other in others {
                if cluster.room(other, room) != expected {
                    let message =
                        format!("room {room} reads differently on node {first} and node {other}");
                    self.fail(Invariant::Convergence, message);
                }
            }
        }
    }

    /// (ii): every acknowledged write is on every live replica.
    fn acked_writes(&mut self, cluster: &mut Cluster) {
        let acked = std::mem::take(&mut cluster.acked);
        // Sessions whose leave was acknowledged: a compaction may prune them.
        let left = cluster.left_acked.clone();
        for (k, write) in acked.iter().enumerate() {
            for i in self.readers(cluster, k) {
                let Some(replica) = cluster.nodes[i].replica.as_mut() else {
                    continue;
                };
                if replica.is_purged(&write.room) {
                    continue;
                }
                let missing = write
                    .heads
                    .iter()
                    .filter(|h| !replica.has_change(&write.room, h))
                    .count();
                // A compacted room no longer holds the hashes of what it
                // compacted: there the write's content is checked instead.
                let compacted = missing > 0
                    && matches!(replica.room_generation(&write.room), Ok(Some(g)) if g > 0);
                if compacted {
                    let reading = replica.room_as_of(&write.room, None).ok().flatten();
                    if let Err(why) = content_holds(write, reading.as_ref(), &left) {
                        let message = format!(
                            "node {i} lost a write to room {} acknowledged by node {} at {} ms \
                             (its room is compacted: {why})",
                            write.room, write.node, write.at_ms
                        );
                        self.fail(Invariant::AckedWritesDurable, message);
                    }
                    continue;
                }
                if missing > 0 {
                    let message = format!(
                        "node {i} lacks a write to room {} acknowledged by node {} at {} ms \
                         ({missing} of {} heads missing)",
                        write.room,
                        write.node,
                        write.at_ms,
                        write.heads.len()
                    );
                    self.fail(Invariant::AckedWritesDurable, message);
                }
            }
        }
        cluster.acked = acked;
    }

    /// (v): one owner per live call, the greatest one acknowledged.
    fn single_owner(&mut self, cluster: &mut Cluster, rooms: &[RoomId]) {
        let mut greatest: BTreeMap<(RoomId, SessionId), Owner> = BTreeMap::new();
        for write in &cluster.acked {
            if let Some((session, owner)) = &write.owner {
                let entry = greatest
                    .entry((write.room.clone(), session.clone()))
                    .or_insert_with(|| owner.clone());
                if owner > entry {
                    *entry = owner.clone();
                }
            }
        }
        for (k, room) in rooms.iter().enumerate() {
            let mut owners: BTreeMap<SessionId, BTreeMap<Owner, Vec<usize>>> = BTreeMap::new();
            for i in self.readers(cluster, k) {
                let Some(snapshot) = cluster.room(i, room) else {
                    continue;
                };
                if snapshot.lifecycle != Lifecycle::Active {
                    continue;
                }
                for (session, call) in snapshot.live_sessions() {
                    owners
                        .entry(session.clone())
                        .or_default()
                        .entry(call.owner.clone())
                        .or_default()
                        .push(i);
                }
            }
            for (session, seen) in owners {
                if seen.len() > 1 {
                    let message = format!(
                        "room {room} session {session}: replicas disagree on the owner: {seen:?}"
                    );
                    self.fail(Invariant::SingleOwner, message);
                    continue;
                }
                let expected = greatest.get(&(room.clone(), session.clone()));
                // A claim can survive without its ack (the node crashed
                // between persisting and acknowledging, or a wiped node's
                // push was still in flight), so only an owner *below* the
                // greatest acknowledged claim breaks the rule.
                if let (Some(expected), Some(owner)) = (expected, seen.keys().next()) {
                    if owner < expected {
                        let message = format!(
                            "room {room} session {session}: owner {owner:?}, but the greatest \
                             acknowledged owner is {expected:?}"
                        );
                        self.fail(Invariant::SingleOwner, message);
                    }
                }
            }
        }
    }
}

/// Whether a compacted room still shows what an acknowledged write did:
/// a join's session is there (unless its leave was acknowledged too, and a
/// compaction pruned it), a leave's session has left (or was pruned), a
/// move's owner is at least the one written, an end ended the room.
/// Last-writer-wins fields (state, tracks, config) may be overwritten by
/// later writes and are not checked.
fn content_holds(
    write: &AckedWrite,
    reading: Option<&RoomSnapshot>,
    left: &BTreeSet<(RoomId, SessionId)>,
) -> Result<(), String> {
    let Some(room) = reading else {
        return Err("the room is gone".into());
    };
    let departed = |session: &SessionId| left.contains(&(write.room.clone(), session.clone()));
    match &write.op {
        RoomOp::Join { request } => match room.sessions.get(&request.session) {
            Some(_) => Ok(()),
            None if departed(&request.session) => Ok(()),
            None => Err(format!("session {} is missing", request.session)),
        },
        RoomOp::Leave { session } => match room.sessions.get(session) {
            Some(s) if s.state != SessionState::Left => {
                Err(format!("session {session} is back from leaving"))
            }
            _ => Ok(()),
        },
        RoomOp::SetOwner { session, owner } => match room.sessions.get(session) {
            Some(s) if s.state != SessionState::Left && s.owner < *owner => Err(format!(
                "session {session} is owned by {:?}, below the acknowledged {owner:?}",
                s.owner
            )),
            Some(_) => Ok(()),
            None if departed(session) => Ok(()),
            None => Err(format!("session {session} is missing")),
        },
        RoomOp::End if room.lifecycle != Lifecycle::Ended => Err("the room is not ended".into()),
        _ => Ok(()),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod spread_tests {
    use super::spread;

    #[test]
    fn a_spread_is_distinct_and_reaches_every_replica_in_turn() {
        for (len, n) in [(5, 2), (199, 20), (200, 20), (21, 20)] {
            let mut seen = vec![false; len];
            for k in 0..len {
                let mut picked = spread(len, n, k);
                for &at in &picked {
                    seen[at] = true;
                }
                picked.sort_unstable();
                picked.dedup();
                assert_eq!(picked.len(), n, "len {len}, n {n}, k {k}");
            }
            assert!(seen.iter().all(|s| *s), "len {len}, n {n}");
        }
    }
}
