//! Answering a peer's requests and pushes. Answers are computed from the
//! current state; a responder keeps no per-request state.

use automerge::{Change, ChangeHash};
use serde_bytes::ByteBuf;

use super::digest::DEPTH;
use super::overlay::Overlay;
use super::wire::{
    Body, Digest, RoomChanges, RoomDocument, RoomHeads, WireHead, ANCESTRY_MAX,
    SYNC_BATCH_BYTES_MAX,
};
use super::{unique, Replica};
use crate::hlc::Timestamp;
use crate::ids::{NodeId, RoomId};
use crate::limits::LOG_PAGE_ENTRIES;
use crate::limits::SNAPSHOT_PAGE_ROOMS;
use crate::model::Head;
use crate::rooms::RoomSet;
use crate::storage::keys;

/// Parses raw changes (bounded: `room::import::parse_change`); `None` (and
/// a counted rejection) if any is malformed, so a room's batch is applied
/// whole or not at all.
pub(super) fn parse_changes(raw: Vec<ByteBuf>) -> Option<Vec<Change>> {
    crate::room::import::parse_changes(raw.into_iter().map(ByteBuf::into_vec)).ok()
}

impl Replica {
    pub(super) fn on_push(&mut self, from: &NodeId, rooms: Vec<RoomChanges>) {
        let mut missing = Vec::new();
        let mut purged = Vec::new();
        for RoomChanges { room, changes } in rooms {
            if self.rooms.is_purged(&room) {
                self.stats.purged_refused += 1;
                purged.push(room);
                continue;
            }
            let Some(changes) = parse_changes(changes) else {
                self.stats.changes_rejected += 1;
                continue;
            };
            self.stats.changes_received += changes.len() as u64;
            let sent: Vec<ChangeHash> = changes.iter().map(Change::hash).collect();
            if let Some(write) = self.apply_remote(from, &room, changes) {
                if write.outcome.pending > 0 {
                    missing.push((room, sent));
                }
            }
        }
        missing
            .retain(|(room, _)| !self.compacting_off_task(room) && !self.applying_off_task(room));
        // Some dependency has not arrived: ask the pusher for it, unless
        // it arrives meanwhile (`replica::missing`).
        self.pull_missing(from, missing);
        if !purged.is_empty() {
            self.send_purged(from, unique(purged));
        }
    }

    /// Whether a peer's request showing changes we lack may be answered by
    /// pulling them back: not while another pull-back is out (after a heal
    /// every peer's walk would otherwise fetch us the same changes), nor
    /// while a round of ours is fetching. What is left is fetched by our
    /// next rounds, or pulled back from the next peer that walks us.
    fn may_pull_back(&self) -> bool {
        let out = self
            .anti_entropy
            .pulling_back
            .as_ref()
            .is_some_and(|(_, until)| *until > self.now_ms);
        let fetching = self
            .peers
            .values()
            .any(|p| p.round.as_ref().is_some_and(|r| r.phase.fetching()));
        !out && !fetching
    }

    /// Our heads of each room, with ancestry hints, for a `ChangesReq`.
    pub(super) fn heads_of(&mut self, rooms: Vec<RoomId>) -> Vec<RoomHeads> {
        rooms
            .into_iter()
            .map(|room| {
                let heads = self.heads(&room).unwrap_or_default();
                let view = Overlay {
                    base: self.store.as_ref(),
                    staged: &self.staged,
                };
                let ancestry = self
                    .rooms
                    .ancestry(&view, &room, ANCESTRY_MAX)
                    .unwrap_or_default();
                RoomHeads {
                    room,
                    heads: heads.into_iter().map(WireHead::from).collect(),
                    ancestry,
                }
            })
            .collect()
    }

    pub(super) fn serve_digest(
        &mut self,
        from: &NodeId,
        round: u64,
        root: Digest,
        cursor: Option<Timestamp>,
    ) {
        let ours = self.rooms.tree().root();
        // Counting the gap costs a log scan: only when the roots differ.
        let since_count = match cursor {
            Some(cursor) if root != ours && self.log_covers(&cursor) => {
                let view = Overlay {
                    base: self.store.as_ref(),
                    staged: &self.staged,
                };
                let limit = usize::try_from(self.config.since_entries_max)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1);
                RoomSet::log_after(&view, Some(&cursor), limit)
                    .ok()
                    .map(|e| e.len() as u64)
            }
            _ => None,
        };
        let log_head = self.hlc.tick(self.now_ms);
        self.send(
            from,
            Body::DigestResp {
                round,
                root: ours,
                log_head,
                since_count,
            },
        );
    }

    /// Whether our change log still reaches back to `cursor`.
    pub(super) fn log_covers(&self, cursor: &Timestamp) -> bool {
        self.purge
            .log_horizon
            .is_none_or(|horizon| *cursor >= horizon)
    }

    pub(super) fn serve_tree(&mut self, from: &NodeId, round: u64, level: u8, nodes: &[u32]) {
        if level >= DEPTH {
            self.stats.changes_rejected += 1;
            return;
        }
        let mut children = Vec::with_capacity(nodes.len() * super::digest::FANOUT);
        for node in nodes {
            match self.rooms.tree().children(level, *node) {
                Some(kids) => children.extend(kids.iter().map(super::wire::short)),
                None => {
                    let reason = format!("tree node {node} out of range at level {level}");
                    self.emit(super::Event::Rejected {
                        peer: from.clone(),
                        reason,
                    });
                    return;
                }
            }
        }
        self.send(
            from,
            Body::TreeResp {
                round,
                level,
                children,
            },
        );
    }

    pub(super) fn serve_leaves(&mut self, from: &NodeId, round: u64, buckets: &[u32]) {
        let rooms = buckets
            .iter()
            .flat_map(|b| self.rooms.tree().leaf(*b))
            .map(|(room, item)| (room, super::wire::short(&item)))
            .collect();
        self.send(from, Body::LeafResp { round, rooms });
    }

    pub(super) fn serve_changes(&mut self, from: &NodeId, round: u64, rooms: Vec<RoomHeads>) {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut truncated = false;
        // A room left out of the answer (compacting here, or it did not
        // load): the asker must not take the answer as complete, or a walk
        // would claim our log head without that room's changes.
        let mut incomplete = false;
        let mut pull_back = Vec::new();
        let mut purged = Vec::new();
        for RoomHeads {
            room,
            heads: their_heads,
            ancestry,
        } in rooms
        {
            if self.rooms.is_purged(&room) {
                purged.push(room);
                continue;
            }
            if truncated {
                continue;
            }
            let view = Overlay {
                base: self.store.as_ref(),
                staged: &self.staged,
            };
            // A head this replica refused is not pulled back: the pull
            // would bring it again, to be refused again, and two replicas
            // that each refuse the other's changes would pull from each
            // other without end, as fast as the network carries it.
            let known: Vec<Head> = their_heads
                .iter()
                .filter(|h| {
                    matches!(
                        self.rooms.has_or_refused(&view, &room, &Head::from(**h)),
                        Ok(true)
                    )
                })
                .map(|h| Head::from(*h))
                .collect();
            // Nor from a peer whose base waits here for more peers to send
            // it (`compaction::catch_up`): the pull would bring it again.
            let busy = self.compacting_off_task(&room)
                || self.applying_off_task(&room)
                || self.catch_up_waits_on(&room, from);
            if known.len() < their_heads.len() && !busy {
                // They hold changes we lack: pull them back. Not while this
                // replica compacts the room off its task: it holds back the
                // peer's base-carrying changes, so a compacted peer and this
                // one would pull from each other without end.
                pull_back.push(room.clone());
            }
            if self.compacting_off_task(&room) {
                // This history is about to be replaced: a peer that
                // compacted would ignore it, and one that did not gets the
                // compacted history once it is installed.
                incomplete = true;
                continue;
            }
            let heads: Vec<automerge::ChangeHash> = their_heads
                .iter()
                .map(|h| automerge::ChangeHash(h.0))
                .collect();
            let changes = match self.rooms.changes_for(&view, &room, &heads, &ancestry) {
                Ok(changes) => changes,
                Err(_) => {
                    self.stats.storage_errors += 1;
                    incomplete = true;
                    Vec::new()
                }
            };
            let mut list = Vec::new();
            for change in changes {
                let raw = change.raw_bytes();
                // Always send at least one change, so an oversized one still moves.
                if bytes + raw.len() > SYNC_BATCH_BYTES_MAX && bytes > 0 {
                    truncated = true;
                    break;
                }
                bytes += raw.len();
                list.push(ByteBuf::from(raw.to_vec()));
            }
            if !list.is_empty() {
                out.push(RoomChanges {
                    room,
                    changes: list,
                });
            }
        }
        self.send(
            from,
            Body::ChangesResp {
                round,
                rooms: out,
                truncated: truncated || incomplete,
            },
        );
        if !pull_back.is_empty() && self.may_pull_back() {
            let rooms = self.heads_of(pull_back);
            let until = self.now_ms.saturating_add(self.config.round_timeout_ms);
            self.anti_entropy.pulling_back = Some((from.clone(), until));
            self.send(from, Body::ChangesReq { round: 0, rooms });
        }
        if !purged.is_empty() {
            self.send_purged(from, unique(purged));
        }
    }

    pub(super) fn serve_since(
        &mut self,
        from: &NodeId,
        round: u64,
        cursor: Timestamp,
        known: &[[u8; 8]],
    ) {
        if !self.log_covers(&cursor) {
            self.send(from, Body::Unavailable { round });
            return;
        }
        let known: std::collections::HashSet<[u8; 8]> = known.iter().copied().collect();
        let mut out: Vec<RoomChanges> = Vec::new();
        let mut bytes = 0;
        let mut next_cursor = cursor;
        let mut complete = false;
        'pages: loop {
            let view = Overlay {
                base: self.store.as_ref(),
                staged: &self.staged,
            };
            let Ok(page) = RoomSet::log_after(&view, Some(&next_cursor), LOG_PAGE_ENTRIES) else {
                self.stats.storage_errors += 1;
                break;
            };
            let last_page = page.len() < LOG_PAGE_ENTRIES;
            for (stamp, entry) in page {
                if self.rooms.is_purged(&entry.room) {
                    next_cursor = stamp;
                    continue;
                }
                // What the asker holds is skipped, the costly rebuilding
                // of the change included.
                let wanted: Vec<Head> = entry
                    .hashes
                    .iter()
                    .filter(|h| !known.contains(&super::round::hash_prefix(&h.0)))
                    .copied()
                    .collect();
                let view = Overlay {
                    base: self.store.as_ref(),
                    staged: &self.staged,
                };
                let Ok(changes) = self.rooms.changes_by_hash(&view, &entry.room, &wanted) else {
                    // The room did not load: answer what we have, and let
                    // the asker come back for this entry.
                    self.stats.storage_errors += 1;
                    break 'pages;
                };
                let list: Vec<ByteBuf> = changes
                    .iter()
                    .map(|change| ByteBuf::from(change.raw_bytes().to_vec()))
                    .collect();
                if list.is_empty() {
                    next_cursor = stamp;
                    continue;
                }
                let size: usize = list.iter().map(|c| c.len()).sum();
                if bytes + size > SYNC_BATCH_BYTES_MAX && bytes > 0 {
                    break 'pages;
                }
                bytes += size;
                next_cursor = stamp;
                match out.last_mut() {
                    Some(last) if last.room == entry.room => last.changes.extend(list),
                    _ => out.push(RoomChanges {
                        room: entry.room,
                        changes: list,
                    }),
                }
            }
            if last_page {
                complete = true;
                break;
            }
        }
        self.send(
            from,
            Body::SinceResp {
                round,
                rooms: out,
                next_cursor,
                complete,
            },
        );
    }

    pub(super) fn serve_snapshot(&mut self, from: &NodeId, round: u64, after: Option<RoomId>) {
        let log_head = self.hlc.tick(self.now_ms);
        let mut rooms = Vec::new();
        let mut too_large = Vec::new();
        let mut bytes = 0;
        let mut cursor = after;
        let mut next = None;
        'pages: loop {
            let after_key = cursor.as_ref().map(keys::index);
            let Ok(page) = self.store_scan_index(after_key.as_deref()) else {
                self.stats.storage_errors += 1;
                break;
            };
            let last_page = page.len() < SNAPSHOT_PAGE_ROOMS;
            for room in page {
                let view = Overlay {
                    base: self.store.as_ref(),
                    staged: &self.staged,
                };
                let doc = self
                    .rooms
                    .export(&view, &room)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                if doc.len() > SYNC_BATCH_BYTES_MAX {
                    too_large.push(room.clone());
                } else if bytes + doc.len() > SYNC_BATCH_BYTES_MAX && bytes > 0 {
                    next = cursor;
                    break 'pages;
                } else if !doc.is_empty() {
                    bytes += doc.len();
                    rooms.push(RoomDocument {
                        room: room.clone(),
                        doc: ByteBuf::from(doc),
                    });
                }
                cursor = Some(room);
            }
            if last_page {
                break;
            }
        }
        self.send(
            from,
            Body::SnapshotResp {
                round,
                rooms,
                too_large,
                next,
                log_head,
            },
        );
    }

    /// A page of room ids from the room index, after `after_key`.
    fn store_scan_index(
        &self,
        after_key: Option<&[u8]>,
    ) -> Result<Vec<RoomId>, crate::error::Error> {
        let view = Overlay {
            base: self.store.as_ref(),
            staged: &self.staged,
        };
        use crate::storage::KvRead;
        let entries = view.scan_after(keys::INDEX, after_key, SNAPSHOT_PAGE_ROOMS)?;
        Ok(entries
            .into_iter()
            .filter_map(|(key, _)| keys::room_of(keys::INDEX, &key))
            .collect())
    }
}
