//! Ended rooms: the end is replicated as part of the room document; once
//! every known replica has acknowledged it (or after the purge horizon) the
//! room is purged, leaving a marker that refuses stale replicas' changes and
//! that anti-entropy spreads to replicas that have not purged yet.

use std::collections::BTreeSet;

use super::overlay::Overlay;
use super::wire::{Body, ROOMS_PER_MESSAGE_MAX};
use super::{Event, Replica};
use crate::error::Error;
use crate::ids::{NodeId, RoomId};
use crate::model::{Lifecycle, RoomSummary};
use crate::storage::keys;

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
        self.ended.entry(room.clone()).or_insert_with(|| Ended {
            seen_ms: now,
            acks: BTreeSet::new(),
        });
    }

    /// Tells every peer which rooms we hold as ended (lost acks are resent).
    pub(super) fn announce_ended(&mut self) {
        let rooms: Vec<RoomId> = self
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
            if let Some(ended) = self.ended.get_mut(&room) {
                ended.acks.insert(from.clone());
            }
        }
        self.purge_due();
    }

    /// Purges ended rooms acknowledged by every known replica, or past the horizon.
    pub(super) fn purge_due(&mut self) {
        let known: BTreeSet<&NodeId> = self.peers.keys().chain(self.config.peers.iter()).collect();
        let horizon = self.config.purge_horizon_ms;
        let now = self.now_ms;
        let due: Vec<RoomId> = self
            .ended
            .iter()
            .filter(|(_, e)| {
                known.iter().all(|p| e.acks.contains(*p))
                    || now.saturating_sub(e.seen_ms) >= horizon
            })
            .map(|(room, _)| room.clone())
            .collect();
        for room in &due {
            self.purge_room(room);
        }
        // The last ack that made us purge may be the one our peers still
        // miss from us (we stop announcing a purged room): tell them, so
        // they purge too instead of waiting for the horizon. A lost
        // broadcast is repaired by anti-entropy's leaf comparison.
        for rooms in due.chunks(ROOMS_PER_MESSAGE_MAX) {
            self.broadcast(Body::Purged {
                rooms: rooms.to_vec(),
            });
        }
    }

    pub(super) fn purge_room(&mut self, room: &RoomId) {
        self.ended.remove(room);
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        match self.rooms.purge(&view, room, self.now_ms) {
            Ok(batch) => {
                self.staged.add(batch, true);
                self.stats.purged += 1;
                self.emit(Event::Purged { room: room.clone() });
            }
            Err(_) => self.stats.storage_errors += 1,
        }
    }

    pub(super) fn on_purged(&mut self, rooms: Vec<RoomId>) {
        for room in rooms {
            // Only a room that ended is ever purged, so following a peer's
            // purge cannot drop a live room.
            if !self.rooms.is_purged(&room) {
                self.purge_room(&room);
            }
        }
    }
}
