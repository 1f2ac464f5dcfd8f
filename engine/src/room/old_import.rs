//! An import of a document so old that it lacks the change the room was
//! last cut at (`generation.rs`, `RoomDoc::carried_import`): a client
//! exported the room, kept the document through one or more compactions,
//! and brings it back with writes of its own. Its changes cannot be
//! carried change by change (the history they stand on is gone on every
//! replica), so the document's *reading* is merged instead, value by value,
//! by the room's conflict rules (`carry::winner`): every value is a
//! stamped register, an owner or a string that merges by `max`, so merging
//! two readings is what merging the two histories reads.
//!
//! One thing the compacted room no longer knows is what its compactions
//! forgot: a removed attribute, permission or track, a pruned session.
//! It forgets only what happened at or before its horizon
//! (`schema::HORIZON`: a session is pruned once it left that long ago, and
//! a removal made after it is kept in the base). A value the document
//! holds at a removable key the room lacks is therefore taken only if it
//! is stamped after the horizon: it would win over anything forgotten. A
//! plain automerge delete in the room's current history has no stamp to
//! weigh, so after one no removable value of the room's maps is taken. An older one is left out: the room
//! cannot tell it from what it forgot, and nothing the room removed or
//! pruned comes back. A session the room remembers as pruned
//! (`departed.rs`) never comes back either. A session the document joined
//! after the horizon is taken whole.
//!
//! A replica its peers compacted past (`catch_up.rs`) merges its own
//! room onto their base the same way, with one difference: a session the
//! room lacks that is live in its document is taken whatever its stamps,
//! unless the room remembers it as pruned. Its join is an acknowledged
//! write the peers never saw; left out, it would be lost without a trace.
//! (A session pruned so long ago that the room no longer remembers it,
//! whose leave this replica never heard of, would come back live: that
//! takes more than `DEPARTED_REMEMBERED_MAX` later prunes.)
//!
//! The merge is one change, written by an actor derived from the room's
//! heads and the document's (`schema::merge_actor`): importing the same
//! document on the same room writes the same change, and a second import
//! finds nothing left to say.

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{Automerge, AutomergeError, Change, ObjId, ObjType, ReadDoc, ScalarValue};

use super::carry;
use super::read::{self, map_obj, RootObjs};
use super::{departed, schema as s};
use crate::error::Error;
use crate::ids::{RoomId, SessionId};
use crate::model::SessionState;

/// Whose document a merge brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A client's export from before the room's cut.
    Import,
    /// This replica's own room, which its peers compacted past.
    Straggler,
}

/// Merges the reading of `old` (room `id`, from before its cut) onto
/// `room`, the room's document, whose horizon is `horizon_ms`. Returns the change that
/// writes it (`None`: the room already reads all the document says).
pub fn merge(
    room: &Automerge,
    id: &RoomId,
    old: &Automerge,
    horizon_ms: u64,
    source: Source,
) -> Result<Option<Change>, Error> {
    let theirs = RootObjs::find(old, id).map_err(|err| Error::Invalid {
        field: "document",
        reason: format!("it does not read as room {id}: {err}"),
    })?;
    let mut doc = room.clone();
    doc.set_actor(s::merge_actor(id, &room.get_heads(), &old.get_heads()));
    let success = doc
        .transact_with(
            |_| CommitOptions::default().with_time(0),
            |tx| {
                let ours = RootObjs::find(tx, id)?;
                let mut merge = Merge {
                    tx,
                    old,
                    horizon_ms,
                    source,
                    plain_deletes: holds_plain_deletes(room),
                    counts: Counts::default(),
                };
                // Never removed, always in a base: the room lacking one
                // has forgotten nothing.
                merge.key(&ours.meta, &theirs.meta, &[s::META], s::ENDED, None)?;
                for key in [s::MAX_PARTICIPANTS, s::PREFERRED_REGION, s::RECORDING] {
                    merge.key(&ours.config, &theirs.config, &[s::CONFIG], key, None)?;
                }
                let at = [s::CONFIG, s::ATTRS];
                merge.removable(&ours.attrs, &theirs.attrs, &at)?;
                merge.removable(&ours.permissions, &theirs.permissions, &[s::PERMISSIONS])?;
                merge.sessions(&ours.sessions, &theirs.sessions)?;
                let counts = merge.counts;
                for (key, by) in [
                    (s::JOINS, counts.joins),
                    (s::LEAVES, counts.leaves),
                    (s::OWNER_CHANGES, counts.owner_changes),
                ] {
                    // The validator takes increments of 1 only.
                    for _ in 0..by {
                        tx.increment(&ours.counters, key, 1)?;
                    }
                }
                Ok::<_, Error>(())
            },
        )
        .map_err(|failure| failure.error)?;
    Ok(success.hash.and_then(|hash| doc.get_change_by_hash(&hash)))
}

/// Counter increments the merge stands for: what the document did that
/// the room had not counted (a session it adds, a leave, an owner change).
#[derive(Default)]
struct Counts {
    joins: i64,
    leaves: i64,
    owner_changes: i64,
}

/// A session's fields merged by their rules (`joined_at` is written once,
/// by the join; tracks are a map of their own).
const FIELDS: [&str; 6] = [
    s::USER,
    s::ROLE,
    s::REGION,
    s::RESUME_HASH,
    s::OWNER,
    s::STATE,
];

struct Merge<'a, 't> {
    tx: &'a mut Transaction<'t>,
    old: &'a Automerge,
    horizon_ms: u64,
    source: Source,
    /// The room's history since its base holds a plain automerge delete.
    plain_deletes: bool,
    counts: Counts,
}

impl Merge<'_, '_> {
    /// Merges the values the document holds at `key` into the room's. If
    /// the room lacks the key, only values stamped after `horizon` (ms) are
    /// taken; all of them if `None` (a key never removed, or a session the
    /// merge adds: all of it is new).
    fn key(
        &mut self,
        ours: &ObjId,
        theirs: &ObjId,
        at: &[&str],
        key: &str,
        horizon: Option<u64>,
    ) -> Result<(), AutomergeError> {
        let their_values = read::all_strings(self.old, theirs, key);
        if their_values.is_empty() {
            return Ok(());
        }
        let current = read::all_strings(self.tx, ours, key);
        let mut candidates = current.clone();
        for value in their_values {
            // If the room lacks the key, it may have forgotten a removal.
            let unknowable = current.is_empty()
                && horizon.is_some_and(|h| s::stamp_of(&value).is_none_or(|t| t.wall_ms <= h));
            if !unknowable && !candidates.contains(&value) {
                candidates.push(value);
            }
        }
        if candidates.len() == current.len() {
            return Ok(());
        }
        let at: Vec<String> = at.iter().map(|p| (*p).to_owned()).collect();
        carry::settle(self.tx, ours, &at, key, &current, &candidates)
    }

    /// Whether a stamped value was written after the room's horizon.
    fn after_horizon(&self, value: &str) -> bool {
        s::stamp_of(value).is_some_and(|stamp| stamp.wall_ms > self.horizon_ms)
    }

    /// A map of removable values the room holds (attributes, permissions,
    /// a held session's tracks). A plain delete (written while some peer
    /// did not read stamped removals) leaves no stamp: after one, the room
    /// cannot tell a removed value from one it never had, whether it holds
    /// the key or not (add wins keeps a concurrent value beside a deleted
    /// one), so none of the map is taken.
    fn removable(
        &mut self,
        ours: &ObjId,
        theirs: &ObjId,
        at: &[&str],
    ) -> Result<(), AutomergeError> {
        if self.plain_deletes {
            return Ok(());
        }
        self.map(ours, theirs, at, Some(self.horizon_ms))
    }

    /// Merges every key of a map of stamped values.
    fn map(
        &mut self,
        ours: &ObjId,
        theirs: &ObjId,
        at: &[&str],
        horizon: Option<u64>,
    ) -> Result<(), AutomergeError> {
        for key in self.old.keys(theirs).collect::<Vec<_>>() {
            self.key(ours, theirs, at, &key, horizon)?;
        }
        Ok(())
    }

    fn sessions(&mut self, ours: &ObjId, theirs: &ObjId) -> Result<(), Error> {
        for key in self.old.keys(theirs).collect::<Vec<_>>() {
            let Ok(session) = SessionId::parse(key.as_str()) else {
                continue;
            };
            let Some(their_obj) = map_obj(self.old, theirs, &key) else {
                continue;
            };
            match map_obj(self.tx, ours, &key) {
                Some(our_obj) => self.session(&our_obj, &their_obj, &key)?,
                None => self.new_session(ours, &their_obj, &session)?,
            }
        }
        Ok(())
    }

    /// A session both hold: each field by its rule, then its tracks.
    fn session(&mut self, ours: &ObjId, theirs: &ObjId, key: &str) -> Result<(), AutomergeError> {
        let at = [s::SESSIONS, key];
        let was_left = read::session_state(self.tx, ours) == Some(SessionState::Left);
        let owner = read::owner(self.tx, ours);
        for field in FIELDS {
            self.key(ours, theirs, &at, field, Some(self.horizon_ms))?;
        }
        if !was_left && read::session_state(self.tx, ours) == Some(SessionState::Left) {
            self.counts.leaves += 1;
        }
        if owner.is_some() && read::owner(self.tx, ours) != owner {
            self.counts.owner_changes += 1;
        }
        if let (Some(our_tracks), Some(their_tracks)) = (
            map_obj(self.tx, ours, s::TRACKS),
            map_obj(self.old, theirs, s::TRACKS),
        ) {
            self.removable(&our_tracks, &their_tracks, &[s::SESSIONS, key, s::TRACKS])?;
        }
        Ok(())
    }

    /// A session only the document holds: added if every state it holds
    /// for it was written after the room's horizon (or, from a straggler,
    /// if it is live), and the room does not remember it as pruned.
    fn new_session(
        &mut self,
        ours: &ObjId,
        theirs: &ObjId,
        session: &SessionId,
    ) -> Result<(), Error> {
        let states = read::all_strings(self.old, theirs, s::STATE);
        let after_cut = !states.is_empty() && states.iter().all(|v| self.after_horizon(v));
        let Some(read) = read::session(self.old, theirs) else {
            return Ok(());
        };
        let live_here = self.source == Source::Straggler && read.state != SessionState::Left;
        if !(after_cut || live_here) || departed::remembers(self.tx, session) {
            return Ok(());
        }
        let obj = self
            .tx
            .put_object(ours, session.as_str(), ObjType::Map)
            .map_err(Error::from)?;
        self.tx
            .put(&obj, s::JOINED_AT, ScalarValue::Uint(read.joined_at_ms))
            .map_err(Error::from)?;
        self.tx
            .put_object(&obj, s::TRACKS, ObjType::Map)
            .map_err(Error::from)?;
        let at = [s::SESSIONS, session.as_str()];
        for field in FIELDS {
            self.key(&obj, theirs, &at, field, None)?;
        }
        if let (Some(our_tracks), Some(their_tracks)) = (
            map_obj(self.tx, &obj, s::TRACKS),
            map_obj(self.old, theirs, s::TRACKS),
        ) {
            let at = [s::SESSIONS, session.as_str(), s::TRACKS];
            self.map(&our_tracks, &their_tracks, &at, None)?;
        }
        self.counts.joins += 1;
        if read::session_state(self.tx, &obj) == Some(SessionState::Left) {
            self.counts.leaves += 1;
        }
        Ok(())
    }
}

/// Whether `doc`'s history holds a plain automerge delete: a removal
/// without a stamp (every removal this build writes once all its peers
/// read them is a stamped `null`; `docs/data-model.md`, "Removals").
fn holds_plain_deletes(doc: &Automerge) -> bool {
    doc.get_changes(&[])
        .iter()
        .any(super::compact::plain_delete)
}
