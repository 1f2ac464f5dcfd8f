//! Ended rooms: the end is replicated as part of the room document; once
//! every known replica not held Down has acknowledged it (or after the
//! purge horizon) the room is purged, leaving a marker that refuses stale
//! replicas' changes and that anti-entropy spreads to replicas that have
//! not purged yet.

use std::collections::{BTreeMap, BTreeSet};

use serde_bytes::ByteBuf;

use super::overlay::Overlay;
use super::votes::Votes;
use super::wire::{Body, PurgeProof, PURGE_PROOF_BYTES_MAX, PUSH_BYTES_MAX, ROOMS_PER_MESSAGE_MAX};
use super::{Event, Replica, ReplicaConfig};
use crate::error::Error;
use crate::hlc::Timestamp;
use crate::ids::{NodeId, RoomId};
use crate::limits::PURGE_PROOF_LOADS_MAX;
use crate::membership::Grade;
use crate::model::{Lifecycle, RoomSummary};
use crate::room::end_proof::EndProof;
use crate::storage::keys;

/// The purge component's state: ended rooms and the change log's horizon.
#[derive(Debug)]
pub(super) struct State {
    pub ended: BTreeMap<RoomId, Ended>,
    /// The newest log stamp trimmed away: a peer whose cursor is older
    /// cannot catch up from the log.
    pub log_horizon: Option<Timestamp>,
    /// Log entries written since this replica opened and trimmed since
    /// (with `RoomSet::logged`: how many of the entries it wrote remain).
    pub log_trimmed: u64,
    /// The newest log entry's stamp when this replica opened: entries up
    /// to it were written before, and their trimming counts for nothing.
    pub log_newest_at_open: Option<Timestamp>,
    pub next_end_ack_ms: u64,
    pub next_log_trim_ms: u64,
    /// Proofs this replica cannot check, and the peers that sent each.
    pub votes: Votes,
}

impl State {
    pub fn new(now_ms: u64, config: &ReplicaConfig) -> Self {
        Self {
            ended: BTreeMap::new(),
            log_horizon: None,
            log_trimmed: 0,
            log_newest_at_open: None,
            next_end_ack_ms: now_ms + config.end_ack_interval_ms,
            next_log_trim_ms: now_ms + config.log_trim_interval_ms,
            votes: Votes::default(),
        }
    }
}

#[derive(Debug)]
pub struct Ended {
    /// When this replica first saw the room ended (its own clock).
    pub seen_ms: u64,
    /// Replicas that told us they hold the room as ended.
    pub acks: BTreeSet<NodeId>,
}

impl Replica {
    /// Finds ended rooms in the room index after a restart.
    pub(super) fn restore_ended(&mut self) -> Result<(), Error> {
        for (_, value) in self.store.scan_prefix(keys::INDEX)? {
            let Ok(summary) = serde_json::from_slice::<RoomSummary>(&value) else {
                continue;
            };
            if summary.lifecycle == Lifecycle::Ended {
                self.note_ended(&summary.id);
            }
        }
        Ok(())
    }

    pub(super) fn note_ended(&mut self, room: &RoomId) {
        let now = self.now_ms;
        self.purge
            .ended
            .entry(room.clone())
            .or_insert_with(|| Ended {
                seen_ms: now,
                acks: BTreeSet::new(),
            });
    }

    /// Tells every peer which rooms we hold as ended (lost acks are resent).
    pub(super) fn announce_ended(&mut self) {
        let rooms: Vec<RoomId> = self
            .purge
            .ended
            .keys()
            .take(ROOMS_PER_MESSAGE_MAX)
            .cloned()
            .collect();
        if !rooms.is_empty() {
            self.broadcast(Body::EndAck { rooms });
        }
    }

    pub(super) fn on_end_ack(&mut self, from: &NodeId, rooms: Vec<RoomId>) {
        for room in rooms {
            if let Some(ended) = self.purge.ended.get_mut(&room) {
                ended.acks.insert(from.clone());
            }
        }
        self.purge_due();
    }

    /// Purges ended rooms acknowledged by every known replica not held
    /// Down, or past the horizon. A replica that knows of no other (a
    /// single-node store), or holds every other Down, has no
    /// acknowledgement to wait for and keeps them until the horizon, so an
    /// ended room stays readable there as long as on a cluster.
    ///
    /// A replica held Down is not waited for: a crashed node never
    /// acknowledges, and waiting for it kept every room that ended after the
    /// crash on every replica's `EndAck` list, sent to every peer every
    /// interval, until the horizon (24 h). Nothing depends on its ack: a
    /// replica that comes back still holding such a room is told `Purged`
    /// with the end change the marker keeps (anti-entropy's leaf
    /// comparison), as one that was away past the horizon is.
    pub(super) fn purge_due(&mut self) {
        // Runs on every tick: with nothing ended, skip building `known`,
        // a walk of every peer.
        if self.purge.ended.is_empty() {
            return;
        }
        let members = &self.members;
        let known: BTreeSet<&NodeId> = self
            .peers
            .keys()
            .chain(self.config.peers.iter())
            .filter(|node| members.grade(node) != Some(Grade::Down))
            .collect();
        let horizon = self.config.purge_horizon_ms;
        let now = self.now_ms;
        let mut acked = Vec::new();
        let mut expired = Vec::new();
        for (room, e) in &self.purge.ended {
            if !known.is_empty() && known.iter().all(|p| e.acks.contains(*p)) {
                acked.push(room.clone());
            } else if now.saturating_sub(e.seen_ms) >= horizon {
                expired.push(room.clone());
            }
        }
        // The last ack that made us purge may be the one our peers still
        // miss from us (we stop announcing a purged room): tell them, so
        // they purge too instead of waiting for the horizon. A lost
        // broadcast is repaired by anti-entropy's leaf comparison. Every
        // peer not held Down told us it holds an acknowledged room as
        // ended, which is all a receiver needs to purge it (`on_purged`),
        // so those go without their end change: every replica sends this
        // to every other, and the proof was most of its bytes. A peer held
        // Down that hears it anyway and does not hold the room as ended
        // refuses it, and gets the proof by anti-entropy. Rooms purged at
        // the horizon carry it (a peer may never have seen the end).
        let mut messages = fit_push(acked.iter().map(|room| PurgeProof {
            room: room.clone(),
            end: ByteBuf::new(),
        }));
        for room in acked.iter().chain(&expired) {
            self.purge_room(room, None);
        }
        messages.extend(self.purge_proofs(expired));
        for proofs in messages {
            self.broadcast(Body::Purged { rooms: proofs });
        }
    }

    /// `Purged` messages for `rooms`, each room with its end change, cut to
    /// fit a push (they are broadcast as one).
    pub(super) fn purge_proofs(&mut self, rooms: Vec<RoomId>) -> Vec<Vec<PurgeProof>> {
        let mut proofs = Vec::new();
        for room in rooms {
            let view = Overlay {
                base: self.store.as_ref(),
                staged: &self.staged,
            };
            let Ok(end) = self.rooms.purge_proof(&view, &room) else {
                self.stats.storage_errors += 1;
                continue;
            };
            // A receiver refuses a whole message over the bound: such a
            // room purges at each replica's own horizon instead.
            if end.len() > PURGE_PROOF_BYTES_MAX {
                continue;
            }
            proofs.push(PurgeProof {
                room,
                end: ByteBuf::from(end),
            });
        }
        fit_push(proofs.into_iter())
    }

    /// Tells `to` that `rooms` were purged here, with the proofs.
    pub(super) fn send_purged(&mut self, to: &NodeId, rooms: Vec<RoomId>) {
        for proofs in self.purge_proofs(rooms) {
            self.send(to, Body::Purged { rooms: proofs });
        }
    }

    pub(super) fn purge_room(&mut self, room: &RoomId, end: Option<Vec<u8>>) {
        self.purge.ended.remove(room);
        self.purge.votes.forget(room);
        self.compaction_forget(room);
        self.offload_forget(room);
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        match self.rooms.purge(&view, room, self.now_ms, end) {
            Ok(batch) => {
                self.staged.add(batch, true);
                self.stats.purged += 1;
                self.emit(Event::Purged { room: room.clone() });
            }
            Err(_) => self.stats.storage_errors += 1,
        }
    }

    /// A peer purged these rooms. A room that ended here is purged at once.
    /// Otherwise the peer's proof must be an end change of that room (it
    /// writes `meta.ended` of the genesis's `meta` map, or of the one this
    /// replica's compacted room holds: `RoomSet::is_end_proof`): it is
    /// applied like any change (the room then ends here), and if its
    /// dependencies are missing (this replica was away while the room ended
    /// and was purged everywhere) the proof alone is followed. Without a
    /// valid proof nothing is purged: a peer cannot erase a live room.
    ///
    /// A proof that writes to a `meta` map this copy does not hold (the
    /// peers compacted the room while this replica was away, then ended
    /// it) cannot be checked here, and nobody holds that base any more:
    /// it is followed once enough distinct peers sent the same
    /// (`votes.rs`), as a compacted base whose cut this replica never held
    /// is. Until then it waits, and comes again with the next sync round.
    pub(super) fn on_purged(&mut self, from: &NodeId, proofs: Vec<PurgeProof>) {
        // Rooms loaded from storage to check a compacted room's proof
        // (`RoomSet::is_end_proof`); the rest come again by anti-entropy.
        let mut loads = PURGE_PROOF_LOADS_MAX;
        for PurgeProof { room, end } in proofs {
            if self.rooms.is_purged(&room) {
                continue;
            }
            if self.purge.ended.contains_key(&room) {
                self.purge_room(&room, None);
                continue;
            }
            let legacy = end.is_empty();
            let view = Overlay {
                base: self.store.as_ref(),
                staged: &self.staged,
            };
            let parsed = crate::room::import::parse_change(end.into_vec()).ok();
            let proof = match parsed {
                Some(change) => {
                    match self.rooms.is_end_proof(&view, &room, &change, &mut loads) {
                        Ok(Some(EndProof::Ends)) => Some(change),
                        Ok(Some(EndProof::NotEnds)) => None,
                        Ok(Some(EndProof::Unknown)) => {
                            let needed = self.votes_needed();
                            if !self.purge.votes.vote(from, &room, change.hash(), needed) {
                                self.stats.purge_proofs_waiting += 1;
                                continue;
                            }
                            self.stats.purges_voted += 1;
                            Some(change)
                        }
                        // Checked when it comes again (anti-entropy).
                        Ok(None) => continue,
                        Err(_) => {
                            self.stats.storage_errors += 1;
                            continue;
                        }
                    }
                }
                None => None,
            };
            let Some(change) = proof else {
                self.stats.purges_refused += 1;
                // Markers written before proofs existed carry none; their
                // rooms purge here at the horizon. Journalled otherwise.
                if !legacy {
                    self.emit(Event::Rejected {
                        peer: from.clone(),
                        reason: format!("purge of room {room} without proof that it ended"),
                    });
                }
                continue;
            };
            let raw = change.raw_bytes().to_vec();
            // Ends the room here when its dependencies are present (which
            // notes it ended); its changes are validated like any peer's.
            self.apply_remote_in_line(from, &room, vec![change]);
            self.purge_room(&room, Some(raw));
        }
    }
}

/// Cuts purge proofs into `Purged` messages that each fit a push (they are
/// broadcast like one).
fn fit_push(proofs: impl Iterator<Item = PurgeProof>) -> Vec<Vec<PurgeProof>> {
    /// Envelope and framing room left in a push for the proofs.
    const SLACK: usize = 1024;
    let mut out: Vec<Vec<PurgeProof>> = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for proof in proofs {
        let len = proof.end.len() + proof.room.as_str().len() + 8;
        if !current.is_empty()
            && (bytes + len > PUSH_BYTES_MAX - SLACK || current.len() == ROOMS_PER_MESSAGE_MAX)
        {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += len;
        current.push(proof);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}
