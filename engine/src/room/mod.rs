//! One room as an automerge document: creation (with its deterministic
//! genesis change), local writes, causally-buffered remote changes, reads.
//!
//! This module is pure: no storage, no clock, no randomness.

mod carry;
mod catch_up;
pub mod compact;
pub mod departed;
pub mod end_proof;
mod generation;
mod genesis;
mod history;
pub mod import;
pub mod inflate;
mod old_import;
mod op;
pub mod read;
mod remote;
pub mod schema;
mod session_write;
mod touched;
pub mod validate;
mod write;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use automerge::{ActorId, Automerge, Change, ChangeHash, ReadDoc};
use lru::LruCache;

pub use carry::Carrier;
pub use generation::Switch;
#[doc(hidden)]
pub use genesis::forget_genesis_changes;
pub use genesis::{genesis_change, genesis_hash, is_end_change};
pub use history::{KnownChanges, NoKnownChanges};
pub use op::RoomOp;
pub use validate::Refusal;
pub use write::WriteCtx;

use crate::error::Error;
use crate::events::ChangeKind;
use crate::ids::{RoomId, SessionId};
use crate::limits::REFUSED_CHANGES_PER_ROOM_MAX;
use crate::model::{Lifecycle, Owner, RoomSnapshot, RoomSummary, SessionReading, SessionState};

/// A room document plus the remote changes still waiting for their deps.
#[derive(Debug)]
pub struct RoomDoc {
    id: RoomId,
    doc: Automerge,
    pending: BTreeMap<ChangeHash, Change>,
    /// Bytes of the changes in `pending`.
    pending_bytes: usize,
    /// Changes refused by validation (and what depends on them), so a
    /// resent one costs a lookup. Every replica refuses the same ones.
    refused: Refused,
    /// The hash of this room's genesis change, computed on first need.
    genesis: Option<ChangeHash>,
    /// automerge panicked inside this document: it must be reloaded from
    /// storage before any further use.
    poisoned: bool,
    /// The room as last read, without the sessions that have left, kept in
    /// step with every change by re-reading only the parts a change touched
    /// (`touched`; a local write's counters are added to, not read again:
    /// `Touched::counted`). `None` until first read. Departed sessions are read
    /// from the document when asked for (`read::departed`): a room that
    /// sees thousands of joins a day keeps in memory what is live, not
    /// every session of its retention period.
    cache: Option<RoomSnapshot>,
    /// Object id → layout part, for working out what remote changes touched.
    parts: Option<touched::ObjParts>,
    objs: Option<read::RootObjs>,
    /// The hashes of the history the last compaction replaced, and of the
    /// peers' changes of that history ignored since: a peer's change that
    /// depends on one belongs to that history and is ignored (its writer
    /// carries it), instead of waiting in `pending` forever.
    replaced: std::collections::HashSet<ChangeHash>,
    /// Counts changes to `pending` (every peer change passes through it),
    /// `refused` and `replaced`: a copy forked at the same heads and the
    /// same count holds all this one knows (`RoomSet::install`).
    beside_heads: u64,
    /// Which hot copy of the room this is (`RoomSet::admit`): the count
    /// starts again at each load.
    admitted: u64,
    /// The one peer's base whose cut is not held here that this room may
    /// catch up on (`catch_up.rs`): the replica permits one once enough of
    /// its peers sent it.
    catch_up_permit: Option<ChangeHash>,
}

/// What a batch of remote changes did.
#[derive(Debug, Default)]
pub struct RemoteApply {
    /// Changes newly applied, in an order that respects their dependencies.
    pub applied: Vec<Change>,
    /// Changes held back because a dependency has not arrived.
    pub pending: usize,
    /// Changes refused because the pending buffer was full.
    pub dropped: usize,
    /// Bases of a newer generation left for a later round: their cut is
    /// not a request this replica may take, or is still on its way (or,
    /// from an import, not held).
    pub bases_deferred: usize,
    /// Peers' bases this replica, compacted past, took by merging its own
    /// room onto them (`catch_up.rs`).
    pub bases_merged: usize,
    /// A peer's base whose cut is not held here, which this room would
    /// catch up on if permitted (`RoomDoc::permit_catch_up`); counted in
    /// `bases_deferred` meanwhile.
    pub catch_up_asked: Option<ChangeHash>,
    /// Changes refused by validation, with the reason (none applied when
    /// the intake is `Whole`).
    pub refused: Vec<(ChangeHash, Refusal)>,
    /// A peer's base made this replica compact the room first.
    pub compacted: Option<Switch>,
    /// Changes of a history this replica compacted away, ignored.
    pub superseded: usize,
    /// The reading of what the applied changes touched (`Touched::part`),
    /// before and after; `None` when the reading was not warm before (or a
    /// compaction replaced it).
    pub delta: Option<(RoomSnapshot, RoomSnapshot)>,
    /// The whole reading from before a peer's base replaced the history.
    pub replaced_reading: Option<RoomSnapshot>,
    /// The newest HLC stamp (wall ms) of each applied change that puts
    /// stamped values, in `applied` order: the replication lag samples.
    pub stamps_ms: Vec<u64>,
}

/// How a batch of changes from outside is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// A peer's changes: each valid change applies; each invalid one (and
    /// each that depends on one) is refused and remembered. Every replica
    /// decides alike, so honest replicas never diverge.
    EachChange,
    /// An import: all or nothing.
    Whole,
}

impl RoomDoc {
    /// A document with no history yet, for a room first heard of from a peer.
    pub fn empty(id: RoomId, actor: ActorId) -> Self {
        Self {
            id,
            doc: Automerge::new().with_actor(actor),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            refused: Refused::default(),
            genesis: None,
            poisoned: false,
            cache: None,
            parts: None,
            objs: None,
            replaced: Default::default(),
            beside_heads: 0,
            admitted: 0,
            catch_up_permit: None,
        }
    }

    /// Rebuilds a room from its stored snapshot and incremental chunks.
    pub fn load(
        id: RoomId,
        actor: ActorId,
        snapshot: Option<&[u8]>,
        chunks: &[Vec<u8>],
    ) -> Result<Self, Error> {
        let mut doc = match snapshot {
            Some(bytes) => Automerge::load(bytes)?,
            None => Automerge::new(),
        };
        for chunk in chunks {
            doc.load_incremental(chunk)?;
        }
        doc.set_actor(actor);
        Ok(Self {
            id,
            doc,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            refused: Refused::default(),
            genesis: None,
            poisoned: false,
            cache: None,
            parts: None,
            objs: None,
            replaced: Default::default(),
            beside_heads: 0,
            admitted: 0,
            catch_up_permit: None,
        })
    }

    pub fn id(&self) -> &RoomId {
        &self.id
    }

    /// A copy to prepare changes on away from this one (an import's merge,
    /// off the replica's task). Same actor: the copy makes no changes of its
    /// own, it only takes others'.
    pub fn fork(&self) -> RoomDoc {
        RoomDoc {
            id: self.id.clone(),
            doc: self.doc.clone(),
            pending: self.pending.clone(),
            pending_bytes: self.pending_bytes,
            refused: self.refused.clone(),
            genesis: self.genesis,
            poisoned: self.poisoned,
            cache: self.cache.clone(),
            parts: self.parts.clone(),
            objs: self.objs.clone(),
            replaced: self.replaced.clone(),
            beside_heads: self.beside_heads,
            admitted: self.admitted,
            catch_up_permit: self.catch_up_permit,
        }
    }

    /// True until the genesis change has been applied.
    pub fn is_empty(&self) -> bool {
        self.doc.get_heads().is_empty()
    }

    pub fn heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// The actor this replica writes the room's changes as.
    pub fn actor(&self) -> &ActorId {
        self.doc.get_actor()
    }

    /// Whether automerge panicked inside this document (reload it).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Up to `n` of the changes waiting for their dependencies.
    pub fn pending_hashes(&self, n: usize) -> Vec<ChangeHash> {
        self.pending.keys().take(n).copied().collect()
    }

    /// Which hot copy this is, and how many changes it has had to what
    /// the room knows beside its history (changes waiting, refused, or of
    /// a replaced history): equal for a fork and the room it was forked
    /// from until either takes such a change.
    pub fn beside_heads(&self) -> (u64, u64) {
        (self.admitted, self.beside_heads)
    }

    pub(crate) fn set_admitted(&mut self, n: u64) {
        self.admitted = n;
    }

    /// Whether `change` ends this room by the `meta` map this copy holds
    /// (a compacted room's is its base's: `end_proof::check_in`).
    pub fn ends_this_copy(&self, change: &Change) -> end_proof::EndProof {
        end_proof::check_in(&self.doc, &self.id, change)
    }

    /// Whether `hash` waits for its dependencies here.
    pub fn is_pending(&self, hash: &ChangeHash) -> bool {
        self.pending.contains_key(hash)
    }

    /// The room after every conflict rule, every session the document
    /// holds included: the live ones from the cache, the departed ones
    /// read from the document.
    pub fn snapshot(&mut self) -> Result<RoomSnapshot, Error> {
        self.reading(None)
    }

    /// Computes the cached reading if it is cold (no copy is made).
    pub fn ensure_reading(&mut self) -> Result<(), Error> {
        if self.cache.is_none() && !self.is_empty() {
            let objs = self.root_objs()?;
            self.cache = Some(read::live_snapshot_in(&self.doc, &self.id, &objs)?);
        }
        Ok(())
    }

    /// The room after every conflict rule, without the sessions that left
    /// at or before `left_before_ms` (`None`: with every session the
    /// document holds). Copies only what it returns.
    pub fn reading(&mut self, left_before_ms: Option<u64>) -> Result<RoomSnapshot, Error> {
        let objs = self.root_objs()?;
        if self.cache.is_none() {
            self.cache = Some(read::live_snapshot_in(&self.doc, &self.id, &objs)?);
        }
        let Some(live) = &self.cache else {
            return read::snapshot(&self.doc, &self.id);
        };
        let departed = read::departed(&self.doc, &objs, left_before_ms, &live.sessions);
        let mut snap = live.clone();
        snap.sessions.extend(departed);
        Ok(snap)
    }

    /// How many sessions the cached reading holds (`None`: cold): the live
    /// ones only, whatever the document still holds.
    pub fn warm_sessions(&self) -> Option<usize> {
        self.cache.as_ref().map(|snap| snap.sessions.len())
    }

    /// How many sessions the document holds, live and departed.
    pub fn sessions_held(&mut self) -> usize {
        match self.root_objs() {
            Ok(objs) => self.doc.length(&objs.sessions),
            Err(_) => 0,
        }
    }

    /// The room with one session (`None`: the room is not readable yet):
    /// the checks that must tell a departed session from an unknown one (a
    /// resume) read this, at the cost of that session.
    pub fn reading_of(&mut self, session: &SessionId) -> Result<Option<SessionReading>, Error> {
        if self.is_empty() {
            return Ok(None);
        }
        self.ensure_reading()?;
        let objs = self.root_objs()?;
        let Some(live) = &self.cache else {
            return Ok(None);
        };
        let mut snap = live.with_sessions(|id, _| id == session);
        if snap.sessions.is_empty() {
            if let Some(departed) = read::session_by_id(&self.doc, &objs, session) {
                snap.sessions.insert(session.clone(), departed);
            }
        }
        let pruned = snap.sessions.is_empty() && departed::remembers(&self.doc, session);
        Ok(Some(SessionReading { room: snap, pruned }))
    }

    /// The part of the reading `touched` names (`Touched::part`), departed
    /// sessions read from the document: taken before and after a batch of
    /// changes, it gives the batch's events. `None` while the cache is
    /// cold.
    fn touched_part(&mut self, touched: &touched::Touched) -> Result<Option<RoomSnapshot>, Error> {
        if self.cache.is_none() {
            return Ok(None);
        }
        if touched.everything {
            return self.snapshot().map(Some);
        }
        let objs = self.root_objs()?;
        let Some(live) = &self.cache else {
            return Ok(None);
        };
        let mut part = touched.part(live);
        for key in &touched.sessions {
            let Ok(id) = SessionId::parse(key.as_str()) else {
                continue;
            };
            if part.sessions.contains_key(&id) {
                continue;
            }
            if let Some(departed) = read::session_by_id(&self.doc, &objs, &id) {
                part.sessions.insert(id, departed);
            }
        }
        Ok(Some(part))
    }

    /// Brings the cached snapshot up to date with what changed.
    fn refresh(&mut self, touched: &touched::Touched) -> Result<(), Error> {
        if self.cache.is_none() {
            return Ok(());
        }
        if touched.everything {
            // The catch-all: nothing cached is trusted.
            self.objs = None;
        }
        let objs = self.root_objs()?;
        let Some(snap) = self.cache.as_mut() else {
            return Ok(());
        };
        if let Err(err) = read::refresh(&self.doc, &objs, snap, touched) {
            self.cache = None;
            return Err(err);
        }
        // The maps of sessions that left go with them (`ObjParts`).
        if touched.everything {
            self.parts = None;
        } else if let Some(parts) = self.parts.as_mut() {
            let gone: std::collections::BTreeSet<String> = touched
                .sessions
                .iter()
                .filter(|key| {
                    SessionId::parse(key.as_str()).is_ok_and(|id| !snap.sessions.contains_key(&id))
                })
                .cloned()
                .collect();
            parts.forget(&gone);
        }
        Ok(())
    }

    /// The whole document in automerge's standard format.
    pub fn save(&self) -> Vec<u8> {
        self.doc.save()
    }
    /// `save` without deflating its columns (`HotRoom::persist_saved`).
    pub fn save_nocompress(&self) -> Vec<u8> {
        self.doc.save_nocompress()
    }

    /// A change that wrote the room's end marker, if the room has ended:
    /// the proof of its end that a purge carries.
    pub fn end_change(&mut self) -> Option<Change> {
        let meta = self.root_objs().ok()?.meta;
        let (_, op) = self
            .doc
            .get_all(&meta, schema::ENDED)
            .ok()?
            .into_iter()
            .next()?;
        let automerge::ObjId::Id(counter, actor, _) = op else {
            return None;
        };
        self.doc.get_changes(&[]).into_iter().find(|c| {
            c.actor_id() == &actor
                && (c.start_op().get()..c.start_op().get() + c.len() as u64).contains(&counter)
        })
    }

    /// Whether the document holds `hash`. Cheap: asks the change graph
    /// (`get_change_by_hash` would rebuild the change from its columns).
    /// The document's own queue is always empty: remote changes wait in
    /// `pending` until their dependencies are present.
    pub fn has_change(&self, hash: &ChangeHash) -> bool {
        self.doc.get_missing_deps(&[*hash]).is_empty()
    }

    /// Whether this replica refused the change `hash` lately (it, or one
    /// it depends on, broke the room's rules or automerge's).
    pub fn refused(&self, hash: &ChangeHash) -> bool {
        self.refused.contains(hash)
    }

    /// Whether a peer's change `hash`, brought here, would be refused or
    /// ignored: refused before, or of a history this room's compaction
    /// replaced. A peer holding such changes has nothing to pull back: the
    /// pull would bring them to be ignored again, and two replicas would
    /// pull from each other without end.
    pub fn would_ignore(&self, hash: &ChangeHash) -> bool {
        self.refused.contains(hash) || self.replaced.contains(hash)
    }

    /// Applies one local operation as one change. `Create` on an empty
    /// document first applies the room's genesis change, so it returns two.
    pub fn apply_local(
        &mut self,
        ctx: &WriteCtx<'_>,
        op: &RoomOp,
    ) -> Result<(Vec<Change>, Vec<ChangeKind>), Error> {
        let mut changes = Vec::new();
        if matches!(op, RoomOp::Create { .. }) {
            if !self.is_empty() {
                return Err(Error::RoomExists(self.id.clone()));
            }
            let genesis = genesis_change(&self.id)?;
            self.doc.apply_changes([genesis.clone()])?;
            changes.push(genesis);
        } else if self.is_empty() {
            return Err(Error::UnknownRoom(self.id.clone()));
        }
        let objs = self.root_objs()?;
        // Capacity is checked against the cached reading: no other write can
        // touch this document while this one runs.
        let joins = op.parts().iter().any(|o| matches!(o, RoomOp::Join { .. }));
        let live = if joins {
            self.warm().map_or(0, |s| s.live_sessions().count())
        } else {
            0
        };
        let commit_secs = i64::try_from(ctx.now_ms / 1000).unwrap_or(i64::MAX);
        let doc = &mut self.doc;
        let outcome = import::unless_panic("write", || {
            doc.transact_with(
                |_| automerge::transaction::CommitOptions::default().with_time(commit_secs),
                |tx| write::apply(tx, &objs, ctx, op, live),
            )
        });
        // A panic inside automerge leaves the document unknown: reload it.
        let Ok(outcome) = outcome else {
            self.poisoned = true;
            return Err(Error::Automerge(
                "automerge could not apply this write".into(),
            ));
        };
        let success = outcome.map_err(|failure| failure.error)?;
        let kinds = success.result;
        if let Some(change) = success.hash.and_then(|h| self.doc.get_change_by_hash(&h)) {
            changes.push(change);
        }
        self.refresh(&touched::Touched::by_write(op, &kinds))?;
        Ok((changes, kinds))
    }

    /// The cached reading, computed on first use; `None` before genesis
    /// (or for a document that is not a readable room).
    fn warm(&mut self) -> Option<&RoomSnapshot> {
        if self.cache.is_none() && !self.is_empty() {
            let objs = self.root_objs().ok()?;
            self.cache = read::live_snapshot_in(&self.doc, &self.id, &objs).ok();
        }
        self.cache.as_ref()
    }

    /// The room's listing entry; `None` while the genesis change is missing.
    pub fn summary(&mut self) -> Option<RoomSummary> {
        let snap = self.warm()?;
        Some(RoomSummary {
            id: snap.id.clone(),
            tenant: snap.tenant.clone(),
            lifecycle: snap.lifecycle,
        })
    }

    /// Owners of live sessions (all, or just `only`) while the room is
    /// active; an ended room owns nothing.
    pub fn live_owners(&mut self, only: Option<&SessionId>) -> BTreeMap<SessionId, Owner> {
        let Some(snap) = self.warm() else {
            return BTreeMap::new();
        };
        if snap.lifecycle == Lifecycle::Ended {
            return BTreeMap::new();
        }
        let live = |(id, s): (&SessionId, &crate::model::CallSession)| {
            (s.state != SessionState::Left).then(|| (id.clone(), s.owner.clone()))
        };
        match only {
            Some(id) => snap
                .sessions
                .get_key_value(id)
                .and_then(live)
                .into_iter()
                .collect(),
            None => snap.sessions.iter().filter_map(live).collect(),
        }
    }
}

/// Changes refused by validation, the last `REFUSED_CHANGES_PER_ROOM_MAX`.
/// The cache is made at the first refusal: an `LruCache` allocates its
/// whole table up front, about 35 KB, and almost every hot room never
/// refuses anything.
#[derive(Clone, Debug, Default)]
struct Refused(Option<LruCache<ChangeHash, ()>>);

impl Refused {
    fn contains(&self, hash: &ChangeHash) -> bool {
        self.0.as_ref().is_some_and(|r| r.contains(hash))
    }

    fn put(&mut self, hash: ChangeHash) {
        let cap = NonZeroUsize::new(REFUSED_CHANGES_PER_ROOM_MAX).unwrap_or(NonZeroUsize::MIN);
        self.0
            .get_or_insert_with(|| LruCache::new(cap))
            .put(hash, ());
    }
}

fn refused_dependency() -> Refusal {
    Refusal {
        path: String::new(),
        reason: "depends on a refused change".into(),
    }
}

/// The change a transaction on a document of its own made (`hash`, its
/// commit's); `what` names the change in the error should it have made
/// none.
fn made_change(
    doc: &Automerge,
    hash: Option<ChangeHash>,
    room: &RoomId,
    what: &str,
) -> Result<Change, Error> {
    hash.and_then(|hash| doc.get_change_by_hash(&hash))
        .ok_or_else(|| Error::Corrupt {
            room: room.clone(),
            reason: format!("{what} made no change"),
        })
}
