//! Failure detection wired to the room data: grades from the membership
//! layer, leaderless re-homing of a Down node's calls, rollback. Drain
//! orders (what starts a drain) are in `drain.rs`.
//!
//! Every replica runs the same rule on its own view, with no coordinator:
//! for each call owned by a node that is Down (or draining), once the
//! call's slot in the move schedule is due, compute the new owner by
//! weighted rendezvous hashing over the nodes this replica grades Healthy;
//! if that owner is this replica, write the takeover (epoch + 1). Equal
//! views give one writer per call; unequal views give concurrent takeovers
//! that the ownership rule (highest `(epoch, node)`) reconciles.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{journal::IncidentKind, wire::Body, Event, Output, Replica};
use crate::ids::{NodeId, RoomId, SessionId};
use crate::limits::EPOCH_MAX;
pub(super) use crate::limits::MOVE_INTERVAL_MS;
use crate::limits::{HANDOFFS_PER_TICK_MAX, TAKEOVERS_PER_TICK_MAX};
use crate::membership::{candidate_of, AppHealth, DrainOrder, Grade, GradeChange, HealthReport};
use crate::model::{OwnedCall, Owner};
use crate::placement::{self, Candidate};
use crate::room::RoomOp;

/// Why calls move.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveKind {
    Failover,
    Drain,
}

/// A move in progress: a node's calls leaving it at a rate.
#[derive(Debug, Clone)]
pub(super) struct Move {
    pub kind: MoveKind,
    pub started_ms: u64,
    /// Calls the node owned when the move started: with the rate, it sets
    /// each call's slot.
    pub total: usize,
    pub rate_per_s: u32,
    /// Takeovers this replica wrote.
    pub moved_here: u64,
    /// A failover acts only once a majority was heard from since it
    /// started (`quorum.rs`); drains need no such evidence.
    pub heard_majority: bool,
    /// Calls this replica handed to the node placement names
    /// (`late_calls.rs`): once each per move.
    pub handed: std::collections::BTreeSet<(RoomId, SessionId)>,
}

impl Move {
    /// This move without its `handed` set.
    fn settings(&self) -> Move {
        Move {
            handed: Default::default(),
            ..*self
        }
    }
}

/// The failover and drain component's state.
#[derive(Debug)]
pub(super) struct State {
    /// Failovers and drains in progress, by the node whose calls move.
    pub moves: BTreeMap<NodeId, Move>,
    /// The newest drain order per node.
    pub drains: BTreeMap<NodeId, DrainOrder>,
    /// When this replica's next health report is due.
    pub next_health_ms: u64,
    /// Who hears this replica's report, and when (`reports.rs`).
    pub spread: super::reports::Spread,
    /// When the mover next looks for due calls.
    pub next_move_ms: u64,
    /// Since when this replica has seen a majority of the cluster (`None`
    /// while it does not): failovers wait a grace after it returns.
    pub majority_since_ms: Option<u64>,
    /// `sees_majority` as of a version of the grades
    /// (`Membership::grades_version`): every SWIM datagram and health
    /// report asks, and counting the answering peers each time was O(n).
    pub majority_seen: Option<(u64, bool)>,
    /// When the nodes a waiting failover has not heard from were last
    /// asked (`quorum.rs`).
    pub quorum_asked_ms: Option<u64>,
}

impl State {
    pub fn new(now_ms: u64) -> Self {
        Self {
            moves: BTreeMap::new(),
            drains: BTreeMap::new(),
            next_health_ms: now_ms,
            spread: super::reports::Spread::default(),
            next_move_ms: now_ms,
            majority_since_ms: None,
            majority_seen: None,
            quorum_asked_ms: None,
        }
    }
}

/// What `rehome_call` did with a due call.
pub(super) enum Rehome {
    /// A takeover was written (or refused): it counts against the tick's
    /// budget, whether or not it won.
    Tried,
    /// Placement gives the call to this other node.
    Elsewhere(NodeId),
    /// Nothing to do: not the node's call any more, no candidate.
    Skipped,
}

/// A call that moved, as the replica reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rehomed {
    pub room: RoomId,
    pub session: SessionId,
    pub from: NodeId,
    pub to: NodeId,
    pub epoch: u64,
    pub kind: MoveKind,
}

/// The fraction in [0, 1) of a move's duration after which a call moves:
/// a hash, so every replica schedules every call alike.
fn slot(room: &RoomId, session: &SessionId) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(room.as_str().as_bytes());
    hasher.update(&[0]);
    hasher.update(session.as_str().as_bytes());
    let mut top = [0u8; 8];
    top.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    (u64::from_le_bytes(top) >> 11) as f64 / (1u64 << 53) as f64
}

impl Replica {
    /// Grades, re-homing and drains as seen here.
    pub fn membership(&self) -> &crate::membership::Membership {
        &self.members
    }

    /// Moves in progress: (node, kind, started, calls at start, rate).
    pub fn moves(&self) -> Vec<(NodeId, MoveKind, u64, usize, u32)> {
        self.failover
            .moves
            .iter()
            .map(|(n, m)| (n.clone(), m.kind, m.started_ms, m.total, m.rate_per_s))
            .collect()
    }

    /// Drain orders known here (active and cancelled).
    pub fn drains(&self) -> impl Iterator<Item = &DrainOrder> {
        self.failover.drains.values()
    }

    /// Where a new call should go: the same rendezvous rule re-homing
    /// uses, over Healthy nodes that are not draining.
    pub fn place(
        &self,
        room: &RoomId,
        session: &SessionId,
        region: &crate::RegionId,
    ) -> Option<NodeId> {
        let candidates = self.candidates();
        placement::rehome(room, session, region, &candidates).map(|c| c.node.clone())
    }

    /// Live calls that the owner index (through staged writes) gives
    /// `node`. A storage error reads as none, and is counted.
    pub fn calls_owned_by(&self, node: &NodeId) -> Vec<OwnedCall> {
        let view = super::overlay::Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        crate::rooms::owned_calls(&view, node).unwrap_or_default()
    }

    fn candidates(&self) -> Vec<Candidate> {
        self.members
            .views()
            .filter(|v| v.grade == Grade::Healthy && !v.draining)
            .filter_map(|v| {
                let (region, capacity) = candidate_of(v)?;
                Some(Candidate {
                    node: v.node.clone(),
                    region,
                    capacity: f64::from(capacity),
                })
            })
            .collect()
    }

    /// Every node known but this one: where drain orders go, and what
    /// health reports rotate over (`reports.rs`).
    /// Down nodes too: a node wrongly convicted must keep hearing from us
    /// (and we from it) for the evidence-of-life layer to clear it; to a
    /// really dead node the daemon drops them unsent (no connection).
    pub(super) fn membership_targets(&self) -> Vec<NodeId> {
        let mut targets: Vec<NodeId> = self
            .members
            .views()
            .filter(|v| v.node != self.config.node)
            .map(|v| v.node.clone())
            .collect();
        for peer in &self.config.peers {
            if !targets.contains(peer) {
                targets.push(peer.clone());
            }
        }
        targets
    }

    pub(super) fn datagram(&mut self, to: &NodeId, body: Body) {
        let bytes = self.encode(body);
        self.pending_outputs.push(Output::Datagram {
            to: to.clone(),
            bytes,
        });
    }

    pub(super) fn on_swim(&mut self, from: &NodeId, data: &[u8]) {
        let before = self.members.refused;
        self.members.on_datagram(self.now_ms, from, data);
        self.stats.swim_refused += self.members.refused - before;
        self.after_membership();
    }

    pub(super) fn on_health_report(&mut self, from: &NodeId, report: HealthReport) {
        for order in &report.drains {
            self.on_peer_drain(from, order.clone());
        }
        self.members.on_report(self.now_ms, from, report);
        self.after_membership();
    }

    pub(super) fn on_local_health(&mut self, app: AppHealth) {
        self.members.set_own_health(self.now_ms, app);
        self.after_membership();
        // Tell the cluster now rather than at the next interval.
        self.failover.next_health_ms = self.now_ms;
    }

    /// Whether this replica may fail calls over: it sees a majority of the
    /// configured cluster (its allow-list and itself), or of the nodes it
    /// knows when no cluster is configured, and has seen it for at least
    /// `silence_ms` (a replica back from the minority side first hears
    /// the nodes it convicted as renewed identities; until then they are
    /// alive but still Down here).
    fn may_fail_over(&mut self) -> bool {
        if !self.config.failover_needs_majority {
            return true;
        }
        self.track_majority().is_some_and(|since| {
            self.now_ms.saturating_sub(since) >= self.config.detector.silence_ms
        })
    }

    /// Notes whether this replica sees a majority now, and since when.
    /// Run on every membership change, so the moment is exact.
    fn track_majority(&mut self) -> Option<u64> {
        let version = self.members.grades_version();
        let sees = match self.failover.majority_seen {
            Some((seen, sees)) if seen == version => sees,
            _ => {
                let sees = self.sees_majority();
                self.failover.majority_seen = Some((version, sees));
                sees
            }
        };
        if !sees {
            self.failover.majority_since_ms = None;
            return None;
        }
        Some(*self.failover.majority_since_ms.get_or_insert(self.now_ms))
    }

    pub(super) fn stop_move(&mut self, node: &NodeId, why: &'static str) {
        if let Some(m) = self.failover.moves.remove(node) {
            let calls_left = self.calls_owned_by(node).len();
            self.emit(Event::MoveStopped {
                node: node.clone(),
                kind: m.kind,
                calls_left,
                moved_here: m.moved_here,
                why,
            });
        }
    }

    /// Carries out what the membership layer produced: datagrams, grade
    /// changes (events, journal, failovers, rollbacks), SWIM notes.
    pub(super) fn after_membership(&mut self) {
        self.stats.swim_down_gossips = self.members.down_gossips;
        self.stats.swim_refutations = self.members.refutations;
        (self.stats.watch_suspicions, self.stats.watch_convictions) = self.members.watch_counts();
        self.track_majority();
        if std::mem::take(&mut self.members.rejoined) {
            // After a partition both sides hold each other Down, and SWIM
            // ignores a Down identity: the renewed identity must introduce
            // itself to every peer we are connected to. (Their answer tells
            // them they were convicted too; they renew and announce back.)
            let up: Vec<NodeId> = self
                .peers
                .iter()
                .filter(|(_, p)| p.up)
                .map(|(id, _)| id.clone())
                .collect();
            for peer in up {
                self.members.announce(self.now_ms, &peer);
            }
        }
        for (to, data) in std::mem::take(&mut self.members.out) {
            self.datagram(
                &to,
                Body::Swim {
                    data: serde_bytes::ByteBuf::from(data),
                },
            );
        }
        for note in std::mem::take(&mut self.members.notes) {
            self.journal(IncidentKind::Rejoined, note);
        }
        for change in std::mem::take(&mut self.members.changes) {
            self.on_grade_change(change);
        }
    }

    fn on_grade_change(&mut self, change: GradeChange) {
        // The grade first: what it sets off (a rollback) comes after it.
        self.emit(Event::Grade(change.clone()));
        let node = change.node.clone();
        if change.to == Grade::Suspect && node != self.config.node {
            self.ask_suspect(&node);
        }
        if change.from == Grade::Suspect && change.to != Grade::Down {
            self.linger_asking(&node);
        }
        if change.to == Grade::Down && node != self.config.node {
            // A failover that never heard from a majority (this replica
            // was cut off) starts afresh: its evidence must postdate this
            // conviction.
            let replace = self
                .failover
                .moves
                .get(&node)
                .is_none_or(|m| m.kind == MoveKind::Drain || !m.heard_majority);
            if replace {
                self.start_failover(node.clone());
            }
        }
        if change.from == Grade::Down && change.to.answers() {
            // A failover that never heard from a majority moved nothing
            // here: it ends whenever the node is back, grace or not.
            let (within_grace, unheard) =
                self.failover.moves.get(&node).map_or((false, false), |m| {
                    let failover = m.kind == MoveKind::Failover;
                    (
                        failover
                            && self.now_ms.saturating_sub(m.started_ms)
                                <= self.config.rollback_grace_ms,
                        failover && !m.heard_majority,
                    )
                });
            if within_grace || unheard {
                let why = if within_grace {
                    "back healthy within the grace period"
                } else {
                    "back before a majority was heard from"
                };
                self.stop_move(&node, why);
                // A drain ordered before the failover resumes its course.
                if self.failover.drains.get(&node).is_some_and(|o| o.active) {
                    let rate = self.failover.drains[&node].rate_per_s.max(1);
                    self.start_drain_move(node.clone(), rate);
                }
            }
        }
    }

    /// Starts moving `node`'s calls away now; a failover supersedes a
    /// drain (the calls must go now).
    pub(super) fn start_failover(&mut self, node: NodeId) {
        let total = self.calls_owned_by(&node).len();
        self.failover.moves.insert(
            node,
            Move {
                kind: MoveKind::Failover,
                started_ms: self.now_ms,
                total,
                rate_per_s: self.config.failover_rate_per_s.max(1),
                moved_here: 0,
                heard_majority: !self.config.failover_needs_majority,
                handed: Default::default(),
            },
        );
        self.failover.next_move_ms = self.now_ms;
    }

    /// Moves the calls whose slot is due and whose new owner is this replica.
    pub(super) fn move_tick(&mut self) {
        if self.failover.moves.is_empty() {
            return;
        }
        let majority = self.may_fail_over();
        let candidates = self.candidates();
        let mut budget = TAKEOVERS_PER_TICK_MAX;
        let mut finished = Vec::new();
        // The moves' settings (not their `handed` sets, which can be as
        // large as a node's calls): each tick would copy them.
        let moves: Vec<(NodeId, Move)> = self
            .failover
            .moves
            .iter()
            .map(|(node, m)| (node.clone(), m.settings()))
            .collect();
        let mut handoffs = HANDOFFS_PER_TICK_MAX;
        // The latest start among failovers still waiting for a majority to
        // be heard from: one round of asks serves them all.
        let mut ask_since: Option<u64> = None;
        for (node, m) in moves {
            if m.kind == MoveKind::Failover {
                // Paused while the node is not Down here (evidence of life
                // came back); a return to Healthy rolls it back.
                if self.members.grade(&node) != Some(Grade::Down) {
                    continue;
                }
                if !majority {
                    self.stats.failover_held_minority += 1;
                    continue;
                }
                if !m.heard_majority {
                    if !self.heard_majority_since(m.started_ms) {
                        self.stats.failover_awaiting_quorum += 1;
                        ask_since = ask_since.max(Some(m.started_ms));
                        continue;
                    }
                    if let Some(m) = self.failover.moves.get_mut(&node) {
                        m.heard_majority = true;
                    }
                }
            }
            let calls = self.calls_owned_by(&node);
            if calls.is_empty() {
                finished.push(node);
                continue;
            }
            let elapsed_ms = self.now_ms.saturating_sub(m.started_ms) as f64;
            let duration_ms = m.total.max(1) as f64 * 1000.0 / f64::from(m.rate_per_s);
            for OwnedCall { room, session, .. } in calls {
                if budget == 0 {
                    break;
                }
                let due_ms = slot(&room, &session) * duration_ms;
                if due_ms > elapsed_ms {
                    continue;
                }
                let call = (room.clone(), session.clone());
                match self.rehome_call(&node, m.kind, room, session, &candidates) {
                    Rehome::Tried => budget -= 1,
                    Rehome::Elsewhere(to) if m.kind == MoveKind::Failover && handoffs > 0 => {
                        let overdue_ms = elapsed_ms - due_ms;
                        if self.maybe_hand_off(&node, &to, call, overdue_ms, candidates.len()) {
                            handoffs -= 1;
                        }
                    }
                    Rehome::Elsewhere(_) | Rehome::Skipped => {}
                }
            }
        }
        if let Some(since) = ask_since {
            self.ask_for_quorum(since);
        }
        for node in finished {
            // Failovers end when the node has no calls left; drains stay
            // (the node gets no new calls) until cancelled.
            if self
                .failover
                .moves
                .get(&node)
                .is_some_and(|m| m.kind == MoveKind::Failover)
            {
                if let Some(m) = self.failover.moves.remove(&node) {
                    self.journal(
                        IncidentKind::Rehomed,
                        format!(
                            "{node}: failover complete; {} calls moved here",
                            m.moved_here
                        ),
                    );
                }
            }
        }
    }

    /// Moves one call of `from` here if placement names this replica.
    fn rehome_call(
        &mut self,
        from: &NodeId,
        kind: MoveKind,
        room: RoomId,
        session: SessionId,
        candidates: &[Candidate],
    ) -> Rehome {
        let Some((region, owner)) = self.call_of(&room, &session) else {
            return Rehome::Skipped;
        };
        if owner.node != *from {
            return Rehome::Skipped;
        }
        let Some(target) = placement::rehome(&room, &session, &region, candidates) else {
            self.stats.rehome_no_candidate += 1;
            return Rehome::Skipped;
        };
        let me = self.config.node.clone();
        if target.node != me {
            return Rehome::Elsewhere(target.node.clone());
        }
        // Epochs past EPOCH_MAX are refused on every write path, so this
        // only fails for a store written before that rule.
        let Some(epoch) = owner.epoch.checked_add(1).filter(|e| *e <= EPOCH_MAX) else {
            self.stats.rehome_no_candidate += 1;
            return Rehome::Skipped;
        };
        let op = RoomOp::SetOwner {
            session: session.clone(),
            owner: Owner {
                epoch,
                node: me.clone(),
            },
        };
        match self.write_local(&room, &op) {
            Ok(_) => {
                self.stats.rehomed += 1;
                if let Some(live) = self.failover.moves.get_mut(from) {
                    live.moved_here += 1;
                }
                let moved = Rehomed {
                    room,
                    session,
                    from: from.clone(),
                    to: me,
                    epoch,
                    kind,
                };
                self.emit(Event::Rehomed(moved));
            }
            // Someone moved it first (a stale epoch): fine.
            Err(_) => self.stats.rehome_refused += 1,
        }
        Rehome::Tried
    }

    /// A live call's region and current owner, from the room itself.
    fn call_of(&mut self, room: &RoomId, session: &SessionId) -> Option<(crate::RegionId, Owner)> {
        let snapshot = self.room_with_session(room, session).ok()??.room;
        let call = snapshot.live_sessions().find(|(id, _)| *id == session)?.1;
        Some((call.region.clone(), call.owner.clone()))
    }

    /// Whether any move still has work (for the mover's timer).
    pub(super) fn moving(&self) -> bool {
        !self.failover.moves.is_empty()
    }
}
