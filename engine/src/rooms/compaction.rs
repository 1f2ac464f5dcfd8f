//! A room set's side of history compaction (`room::compact`): where a room
//! stands towards its next compaction, and the compaction itself, stored
//! and logged like any write.

use automerge::{Change, ChangeHash};

use super::index::{index_updates, IndexView};
use super::{head, readable, LogEntry, RoomSet};
use crate::error::Error;
use crate::hlc::Timestamp;
use crate::ids::RoomId;
use crate::limits::{
    COMPACTION_CARRY_IN_LINE_MAX, COMPACTION_TOP_UPS_MAX, COMPACTION_TOP_UPS_SHRINKING_MAX,
};
use crate::model::Head;
use crate::model::RoomSnapshot;
use crate::room::{Intake, RoomDoc, Switch};
use crate::storage::{Batch, KvRead};

/// The result of a compaction: the new history, what to persist and log.
#[derive(Debug)]
pub struct Compaction {
    pub generation: u64,
    /// The base, then the carried tail.
    pub changes: Vec<Change>,
    pub batch: Batch,
    /// Log entries still to stamp and write (see `RoomSet::record`).
    pub log_rest: Vec<LogEntry>,
    /// What the peers' changes released with the new history changed
    /// (the pruning itself is not an event: departed sessions leave the
    /// history, they do not leave the room again).
    pub kinds: Vec<crate::events::ChangeKind>,
}

/// A compaction to compute off the replica's task: a copy of the room and
/// the request to cut at. Its result, a [`PreparedCompaction`], goes back
/// to the replica (`Input::Worked`).
pub struct CompactionJob {
    room: RoomId,
    request: ChangeHash,
    /// The room's heads when copied.
    heads: Vec<ChangeHash>,
    /// Changes in the copy's history (`RoomDoc::history_len`).
    history: u64,
    doc: RoomDoc,
    task: Task,
    /// Top-ups done before this job (`COMPACTION_TOP_UPS_MAX`,
    /// `COMPACTION_TOP_UPS_SHRINKING_MAX`).
    top_ups: u32,
    /// Changes this job carries (a top-up: what the room took while the
    /// last round ran; 0 for the first). Top-ups go on past
    /// `COMPACTION_TOP_UPS_MAX` only while each carries fewer.
    carrying: u64,
    /// Whether the result must bring how the compacted room reads: only
    /// when the room's reading was cold at the copy. A compaction changes
    /// no live session, so a warm reading is kept across the switch
    /// (`compact_hot`), and reading a room that still holds every session
    /// of its retention was about 40 % of a top-up.
    read: bool,
    /// The caller's number for it, handed back with the result
    /// (`CompactionJob::number`).
    number: u64,
}

/// What a [`CompactionJob`] does with its copy.
enum Task {
    /// Builds the base and carries the tail.
    Prepare,
    /// Carries the changes the room took since a prepared compaction's
    /// copy (whose heads were `copied`) onto its result.
    TopUp {
        copied: Vec<ChangeHash>,
        ready: Box<Ready>,
    },
}

impl std::fmt::Debug for CompactionJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactionJob")
            .field("room", &self.room)
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

impl CompactionJob {
    /// Numbers the job: its result carries the number, so a replica can
    /// tell the result of the job it is waiting for from a late one of an
    /// earlier job on the same room.
    pub fn number(&mut self, number: u64) {
        self.number = number;
    }

    /// The costly part of a compaction (building the base, carrying the
    /// tail, reading the result when asked to), on the caller's thread.
    pub fn run(self) -> PreparedCompaction {
        // On a thread of its own, a panic inside automerge would leave the
        // room waiting for a result forever: it becomes an error result.
        let (doc, request) = (&self.doc, self.request);
        let ready = match self.task {
            Task::Prepare => crate::room::import::unless_panic("compact", || {
                doc.prepare_compaction(request, self.read)
            })
            .and_then(|result| result)
            .map(|(carrier, switch, reading)| Ready {
                carrier,
                switch,
                reading,
            }),
            Task::TopUp { copied, ready } => {
                let Ready {
                    carrier, switch, ..
                } = *ready;
                doc.top_up_compaction(&copied, carrier, switch, self.read)
                    .map(|(carrier, switch, reading)| Ready {
                        carrier,
                        switch,
                        reading,
                    })
            }
        };
        PreparedCompaction {
            room: self.room,
            request: self.request,
            heads: self.heads,
            history: self.history,
            top_ups: self.top_ups,
            carrying: self.carrying,
            number: self.number,
            ready,
        }
    }
}

/// A compaction computed on a copy of its room, to install.
pub struct PreparedCompaction {
    room: RoomId,
    request: ChangeHash,
    heads: Vec<ChangeHash>,
    history: u64,
    top_ups: u32,
    carrying: u64,
    number: u64,
    ready: Result<Ready, Error>,
}

impl PreparedCompaction {
    pub fn room(&self) -> &RoomId {
        &self.room
    }

    /// Whether the work failed (an error or a panic inside automerge).
    pub fn failed(&self) -> bool {
        self.ready.is_err()
    }

    /// The request it cut at.
    pub fn request(&self) -> ChangeHash {
        self.request
    }

    /// The number of the job that computed it (`CompactionJob::number`).
    pub fn job(&self) -> u64 {
        self.number
    }

    /// The hash of the base it computed (`None` if it failed).
    pub fn base_hash(&self) -> Option<ChangeHash> {
        self.ready.as_ref().ok().map(|r| r.switch.base.hash())
    }
}

impl std::fmt::Debug for PreparedCompaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedCompaction")
            .field("room", &self.room)
            .field("request", &self.request)
            .field("ok", &self.ready.is_ok())
            .finish_non_exhaustive()
    }
}

struct Ready {
    /// The new history, and what carrying the room's later changes on
    /// it needs.
    carrier: crate::room::Carrier,
    switch: Switch,
    /// How the result reads, when the job was asked to read it.
    reading: Option<RoomSnapshot>,
}

/// The reading from before a compaction without the sessions it pruned:
/// those that left before its horizon and are gone from the new history
/// (`after`). One that left before the horizon but after the cut is still
/// held, and is no event either.
pub(super) fn kept(
    before: &RoomSnapshot,
    after: Option<&RoomSnapshot>,
    switch: &Switch,
) -> RoomSnapshot {
    let held = |id: &crate::ids::SessionId| after.is_some_and(|a| a.sessions.contains_key(id));
    before.with_sessions(|id, s| !s.departed_by(switch.prune_before_ms) || held(id))
}

/// What became of a compaction prepared off the replica's task.
#[derive(Debug)]
pub enum CompactionInstall {
    /// Installed; `true` if the changes the room took since the copy were
    /// carried in line.
    Done(Compaction, bool),
    /// The room took more changes since the copy than are worth carrying
    /// on the replica's task: this job carries them off it.
    TopUp(Box<CompactionJob>),
    /// Nothing to compact any more (see `RoomSet::compact`).
    Nothing,
}

/// How `compact_hot` gets the compacted document.
enum How {
    InLine,
    /// Prepared on a copy with the room's current heads.
    Prepared(Box<Ready>),
    /// Prepared on a copy whose heads were these: the changes the room
    /// took since are carried in line.
    OnCopy(Vec<ChangeHash>, Box<Ready>),
}

/// Where a room stands towards its next compaction.
#[derive(Debug, Clone, Copy)]
pub struct CompactionStatus {
    pub history: u64,
    pub generation: u64,
    /// The request the next compaction cuts at, once one is written.
    pub request: Option<ChangeHash>,
    /// Not ended: an ended room gets no new compaction request.
    pub active: bool,
}

impl RoomSet {
    /// Changes in a hot room's history (`None`: the room is not hot).
    pub fn history_len(&self, room: &RoomId) -> Option<u64> {
        self.hot.peek(room).map(|h| h.doc.history_len())
    }

    /// A hot room's generation (`None`: the room is not hot).
    pub fn generation(&self, room: &RoomId) -> Option<u64> {
        self.hot.peek(room).map(|h| h.doc.generation())
    }

    pub fn compaction_status(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
    ) -> Result<Option<CompactionStatus>, Error> {
        let Some(hot) = self.load(store, room)? else {
            return Ok(None);
        };
        if hot.doc.is_empty() {
            return Ok(None);
        }
        let active = hot
            .doc
            .summary()
            .is_some_and(|s| s.lifecycle == crate::model::Lifecycle::Active);
        Ok(Some(CompactionStatus {
            history: hot.doc.history_len(),
            generation: hot.doc.generation(),
            request: hot.doc.compaction_request().map(|(hash, _)| hash),
            active,
        }))
    }

    /// Compacts `room` at `request`, the request every replica named
    /// (`room::compact`), if it is still the room's: the stored history
    /// becomes the base and the carried tail, and they are logged under
    /// `stamp` so that peers catching up since a cursor receive them.
    /// Changes that were waiting for the new history (a peer's carried
    /// changes) apply with it. `Ok(None)`: nothing to compact (the room is
    /// gone, ended, or now has another request).
    ///
    /// Atomic like `local_write`.
    pub fn compact(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
        request: ChangeHash,
        stamp: Timestamp,
    ) -> Result<Option<Compaction>, Error> {
        if self.purged.contains(room) || self.load(store, room)?.is_none() {
            return Ok(None);
        }
        let heads = self.hot_heads(room);
        let result = self.compact_hot(room, request, stamp, How::InLine);
        self.evict_if_moved(room, heads, result.is_err());
        result
    }

    /// A copy of `room` to compact at `request` away from the replica's
    /// task (`CompactionJob::run`), if `request` is still the room's.
    pub fn compaction_job(
        &mut self,
        store: &dyn KvRead,
        room: &RoomId,
        request: ChangeHash,
    ) -> Result<Option<CompactionJob>, Error> {
        if self.purged.contains(room) {
            return Ok(None);
        }
        let Some(hot) = self.load(store, room)? else {
            return Ok(None);
        };
        if hot.doc.compaction_request().map(|(hash, _)| hash) != Some(request) {
            return Ok(None);
        }
        Ok(Some(CompactionJob {
            room: room.clone(),
            request,
            heads: hot.doc.heads(),
            history: hot.doc.history_len(),
            doc: hot.doc.fork(),
            task: Task::Prepare,
            top_ups: 0,
            carrying: 0,
            read: hot.doc.warm_sessions().is_none(),
            number: 0,
        }))
    }

    /// Installs a compaction prepared by a `CompactionJob`, stored and
    /// logged like `compact`. If the room took changes since the copy was
    /// made, the changes it took since are carried onto the prepared
    /// result in line (`RoomDoc::compact_on_copy`); the result is the
    /// same either way. More than `COMPACTION_CARRY_IN_LINE_MAX` of them
    /// are carried off the task first, by a top-up job (up to
    /// `COMPACTION_TOP_UPS_MAX` times, then up to
    /// `COMPACTION_TOP_UPS_SHRINKING_MAX` while each carries fewer than the
    /// last): under steady writes the room moves while a compaction is
    /// prepared, and carrying what it took costs about half a millisecond
    /// a change.
    pub fn install_compaction(
        &mut self,
        store: &dyn KvRead,
        prepared: PreparedCompaction,
        stamp: Timestamp,
    ) -> Result<CompactionInstall, Error> {
        let room = prepared.room.clone();
        let ready = prepared.ready?;
        if self.purged.contains(&room) {
            return Ok(CompactionInstall::Nothing);
        }
        let Some(hot) = self.load(store, &room)? else {
            return Ok(CompactionInstall::Nothing);
        };
        let moved = hot.doc.history_len().saturating_sub(prepared.history);
        if moved > COMPACTION_CARRY_IN_LINE_MAX
            && (prepared.top_ups < COMPACTION_TOP_UPS_MAX
                || (prepared.top_ups < COMPACTION_TOP_UPS_SHRINKING_MAX
                    && moved < prepared.carrying))
            && hot.doc.compaction_request().map(|(hash, _)| hash) == Some(prepared.request)
            && hot.doc.holds_all(&prepared.heads)
        {
            return Ok(CompactionInstall::TopUp(Box::new(CompactionJob {
                room,
                request: prepared.request,
                heads: hot.doc.heads(),
                history: hot.doc.history_len(),
                doc: hot.doc.fork(),
                task: Task::TopUp {
                    copied: prepared.heads,
                    ready: Box::new(ready),
                },
                top_ups: prepared.top_ups.saturating_add(1),
                carrying: moved,
                read: hot.doc.warm_sessions().is_none(),
                number: prepared.number,
            })));
        }
        let heads = self.hot_heads(&room);
        let same = heads == prepared.heads;
        let how = if same {
            How::Prepared(Box::new(ready))
        } else {
            How::OnCopy(prepared.heads, Box::new(ready))
        };
        let result = self.compact_hot(&room, prepared.request, stamp, how);
        self.evict_if_moved(&room, heads, result.is_err());
        Ok(match result? {
            Some(done) => CompactionInstall::Done(done, !same),
            None => CompactionInstall::Nothing,
        })
    }

    fn compact_hot(
        &mut self,
        room: &RoomId,
        request: ChangeHash,
        stamp: Timestamp,
        how: How,
    ) -> Result<Option<Compaction>, Error> {
        let Some(hot) = self.hot.get_mut(room) else {
            return Ok(None);
        };
        // An ended room is compacted too once its request was named by
        // every replica: the others compact, and its end must be carried.
        if hot.doc.compaction_request().map(|(hash, _)| hash) != Some(request) {
            return Ok(None);
        }
        // A compaction reads as the room did, less the sessions that left
        // before its horizon (`room::compact`), and no live session leaves:
        // the live reading is kept across the switch. Then the peers'
        // changes that waited for the new history apply like any peer's,
        // their events and index updates read from what they touched
        // (`RemoteApply::delta`). Two whole readings of the room, which
        // holds every session that left within its retention, cost tens of
        // milliseconds on the replica's task in a busy room: they are taken
        // only for a room whose reading is cold, and by debug builds, which
        // check the result against them.
        let live = hot.doc.take_live_reading();
        let before = match &live {
            Some(_) if !cfg!(debug_assertions) => None,
            _ => readable(&mut hot.doc)?,
        };
        let switch = match how {
            How::InLine => hot.doc.compact_at(request)?,
            How::Prepared(ready) => {
                let ready = *ready;
                hot.doc
                    .install_compacted(ready.carrier.into_doc(), ready.reading);
                ready.switch
            }
            How::OnCopy(copied, ready) => {
                let base = ready.switch.base.clone();
                match hot
                    .doc
                    .compact_on_copy(&copied, ready.carrier, ready.switch)?
                {
                    Some(switch) => switch,
                    None => hot.doc.compact_at_with_base(request, &base)?,
                }
            }
        };
        let warm = live.is_some();
        if let Some(live) = live {
            hot.doc.keep_reading(live);
        }
        // Changes parked for the new history (a peer compacted first).
        let mut released = hot.doc.apply_remote(Vec::new(), Intake::EachChange)?;
        let (was, is) = match released.delta.take() {
            Some((was, is)) => (Some(was), Some(is)),
            None if warm => (None, None),
            None => {
                let is = readable(&mut hot.doc)?;
                let was = before.as_ref().map(|b| kept(b, is.as_ref(), &switch));
                (was, is)
            }
        };
        let kinds = match &is {
            Some(is) => crate::events::diff(was.as_ref(), is),
            None => Vec::new(),
        };
        #[cfg(debug_assertions)]
        if warm {
            let after = readable(&mut hot.doc)?;
            let whole = (before.map(|b| kept(&b, after.as_ref(), &switch)), after);
            super::index::check_touched_part(room, &whole, &(was.clone(), is.clone()), &kinds);
        }
        let mut batch = Batch::default();
        hot.rewrite(&mut batch);
        index_updates(
            room,
            &IndexView::of(was.as_ref()),
            &IndexView::of(is.as_ref()),
            &mut batch,
        );
        let heads: Vec<Head> = hot.doc.heads().iter().map(head).collect();
        let generation = hot.doc.generation();
        let mut changes = vec![switch.base];
        changes.extend(switch.carried);
        changes.extend(released.applied);
        let log_rest = self.record(room, &heads, &changes, stamp, &mut batch);
        Ok(Some(Compaction {
            generation,
            changes,
            batch,
            log_rest,
            kinds,
        }))
    }
}
