//! Pushing local changes: at once when the replica has pushed nothing for
//! `push_delay_ms` (an idle replica's write does not wait), otherwise
//! batched for up to `push_delay_ms` or until a push frame is full, then
//! broadcast. Pushes are an optimisation — anti-entropy delivers whatever
//! a push loses.

use std::collections::BTreeMap;

use automerge::Change;
use serde_bytes::ByteBuf;

use super::wire::{Body, RoomChanges, PUSH_BYTES_MAX};
use super::Replica;
use crate::ids::RoomId;
use crate::limits::PUSH_FRAMING_BYTES;

/// Local changes waiting to be pushed.
#[derive(Debug, Default)]
pub struct Outbox {
    rooms: BTreeMap<RoomId, Vec<ByteBuf>>,
    bytes: usize,
    since_ms: Option<u64>,
    /// The batch goes out at once: nothing was pushed for a whole delay
    /// before its first change.
    eager: bool,
    /// When the outbox was last emptied: a push went out (unless every
    /// change was too big for one, which anti-entropy carries).
    last_flush_ms: Option<u64>,
}

impl Outbox {
    pub fn add(&mut self, room: &RoomId, changes: &[Change], now_ms: u64, delay_ms: u64) {
        if changes.is_empty() {
            return;
        }
        if self.since_ms.is_none() {
            self.eager = self
                .last_flush_ms
                .is_none_or(|last| now_ms.saturating_sub(last) >= delay_ms);
        }
        let list = self.rooms.entry(room.clone()).or_default();
        for change in changes {
            self.bytes += change.raw_bytes().len() + room.as_str().len();
            list.push(ByteBuf::from(change.raw_bytes().to_vec()));
        }
        self.since_ms.get_or_insert(now_ms);
    }

    /// When the batch must go out, if anything waits.
    pub fn due_ms(&self, delay_ms: u64) -> Option<u64> {
        let delay = if self.eager { 0 } else { delay_ms };
        self.since_ms.map(|since| since.saturating_add(delay))
    }

    fn is_idle(&self) -> bool {
        self.rooms.is_empty() && self.bytes == 0 && self.since_ms.is_none()
    }

    pub fn full(&self) -> bool {
        self.bytes + PUSH_FRAMING_BYTES >= PUSH_BYTES_MAX
    }

    fn take(&mut self, now_ms: u64) -> BTreeMap<RoomId, Vec<ByteBuf>> {
        self.bytes = 0;
        self.since_ms = None;
        self.eager = false;
        self.last_flush_ms = Some(now_ms);
        std::mem::take(&mut self.rooms)
    }
}

impl Replica {
    /// Queues new changes for the next push (flushed at once if the push is
    /// full). A replica that knows of no other (a single-node store) keeps
    /// no push: there is nobody to send it to, and a peer that appears
    /// later catches up by anti-entropy when it connects.
    pub(super) fn queue_push(&mut self, room: &RoomId, changes: &[Change]) {
        if self.peers.is_empty() && self.config.peers.is_empty() {
            return;
        }
        self.outbox
            .add(room, changes, self.now_ms, self.config.push_delay_ms);
        if self.outbox.full() {
            self.flush_push();
        }
    }

    /// Broadcasts everything in the outbox, in frames under the push limit.
    pub(super) fn flush_push(&mut self) {
        let budget = PUSH_BYTES_MAX - PUSH_FRAMING_BYTES;
        let mut frame: Vec<RoomChanges> = Vec::new();
        let mut frame_bytes = 0;
        for (room, changes) in self.outbox.take(self.now_ms) {
            for change in changes {
                let size = change.len() + room.as_str().len() + 8;
                if size > budget {
                    // Too big for gossip; anti-entropy will carry it.
                    self.stats.push_skipped_oversize += 1;
                    continue;
                }
                if frame_bytes + size > budget {
                    self.broadcast(Body::Push {
                        rooms: std::mem::take(&mut frame),
                    });
                    frame_bytes = 0;
                }
                match frame.last_mut() {
                    Some(last) if last.room == room => last.changes.push(change),
                    _ => frame.push(RoomChanges {
                        room: room.clone(),
                        changes: vec![change],
                    }),
                }
                frame_bytes += size;
            }
        }
        debug_assert!(self.outbox.is_idle(), "a flushed outbox holds nothing");
        if !frame.is_empty() {
            self.broadcast(Body::Push { rooms: frame });
        }
    }
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ROOT};

    use super::*;

    fn change(value: i64) -> Change {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(ROOT, "k", value).expect("put");
        tx.commit();
        doc.get_changes(&[]).pop().expect("one change")
    }

    #[test]
    fn an_idle_replicas_push_goes_at_once_and_a_burst_waits_the_delay() {
        let room = RoomId::parse("r").expect("room id");
        let delay = 2;
        let mut outbox = Outbox::default();
        outbox.add(&room, &[change(1)], 100, delay);
        assert_eq!(outbox.due_ms(delay), Some(100), "the first push waited");
        outbox.take(100);
        // Within the delay of the last push: batched.
        outbox.add(&room, &[change(2)], 101, delay);
        outbox.add(&room, &[change(3)], 102, delay);
        assert_eq!(outbox.due_ms(delay), Some(103), "a burst was not batched");
        outbox.take(103);
        // Idle for the whole delay: at once again.
        outbox.add(&room, &[change(4)], 105, delay);
        assert_eq!(outbox.due_ms(delay), Some(105), "an idle push waited");
    }
}
