//! The room set's indexes: the listing entry of each room and the owner
//! index (calls by media node), kept in step with every write by comparing
//! what a write could change before and after it.

use std::collections::BTreeMap;

use crate::error::Error;
use crate::ids::{NodeId, RoomId, SessionId};
use crate::model::{Owner, RoomSnapshot, RoomSummary, SessionState};
use crate::room::RoomOp;
use crate::storage::{keys, Batch, KvRead, StorageError};

/// What the indexes hold for a room: its listing entry and who owns which
/// live call. Compared before and after a write to produce index updates.
#[derive(Debug, Default, PartialEq)]
pub(super) struct IndexView {
    pub(super) summary: Option<RoomSummary>,
    pub(super) owners: BTreeMap<SessionId, Owner>,
}

impl IndexView {
    pub(super) fn of(snapshot: Option<&RoomSnapshot>) -> Self {
        let Some(snap) = snapshot else {
            return Self::default();
        };
        let active = snap.lifecycle == crate::model::Lifecycle::Active;
        Self {
            summary: Some(RoomSummary {
                id: snap.id.clone(),
                tenant: snap.tenant.clone(),
                lifecycle: snap.lifecycle,
            }),
            owners: snap
                .sessions
                .iter()
                .filter(|(_, s)| active && s.state != SessionState::Left)
                .map(|(id, s)| (id.clone(), s.owner.clone()))
                .collect(),
        }
    }
}

/// Which part of the indexes an op can change.
pub(super) enum IndexScope {
    Nothing,
    Session(SessionId),
    Room,
}

pub(super) fn index_scope(op: &RoomOp) -> IndexScope {
    match op {
        // One session's scope if the batch touches only that one; the
        // whole room's otherwise.
        RoomOp::Batch { ops } => {
            ops.iter()
                .map(index_scope)
                .fold(IndexScope::Nothing, |a, b| match (a, b) {
                    (IndexScope::Nothing, b) => b,
                    (a, IndexScope::Nothing) => a,
                    (IndexScope::Session(x), IndexScope::Session(y)) if x == y => {
                        IndexScope::Session(x)
                    }
                    _ => IndexScope::Room,
                })
        }
        RoomOp::Create { .. } | RoomOp::End => IndexScope::Room,
        RoomOp::Join { request } => IndexScope::Session(request.session.clone()),
        RoomOp::SetState { session, .. }
        | RoomOp::Leave { session }
        | RoomOp::SetOwner { session, .. } => IndexScope::Session(session.clone()),
        RoomOp::UpdateConfig { .. }
        | RoomOp::SetPermission { .. }
        | RoomOp::RemovePermission { .. }
        | RoomOp::Publish { .. }
        | RoomOp::Unpublish { .. }
        | RoomOp::RequestCompaction { .. } => IndexScope::Nothing,
    }
}

pub(super) fn index_updates(
    room: &RoomId,
    before: &IndexView,
    after: &IndexView,
    batch: &mut Batch,
) {
    if let Some(summary) = &after.summary {
        if before.summary.as_ref() != Some(summary) {
            // RoomSummary is plain data; JSON encoding cannot fail.
            let json = serde_json::to_vec(summary).expect("summary serializes");
            batch.put(keys::index(room), json);
        }
    }
    let sessions = before.owners.keys().chain(after.owners.keys());
    for session in sessions.collect::<std::collections::BTreeSet<_>>() {
        let was = before.owners.get(session);
        let now = after.owners.get(session);
        if was == now {
            continue;
        }
        if let Some(owner) = was {
            batch.delete(keys::owner(&owner.node, room, session));
        }
        if let Some(owner) = now {
            batch.put(
                keys::owner(&owner.node, room, session),
                owner.epoch.to_be_bytes().to_vec(),
            );
        }
    }
}

/// Live calls in active rooms whose current owner is `node`, from the owner
/// index (shared by `Engine` and the replica's failover).
pub fn owned_calls(
    store: &dyn KvRead,
    node: &NodeId,
) -> Result<Vec<crate::model::OwnedCall>, Error> {
    let prefix = keys::owned_by(node);
    let entries = store.scan_prefix(&prefix)?;
    let mut calls = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let malformed = || {
            Error::Storage(StorageError::Malformed {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason: "owner index entry".into(),
            })
        };
        let (room, session) = keys::owner_tail(&key[prefix.len()..]).ok_or_else(malformed)?;
        let epoch: [u8; 8] = value.as_slice().try_into().map_err(|_| malformed())?;
        calls.push(crate::model::OwnedCall {
            room,
            session,
            epoch: u64::from_be_bytes(epoch),
        });
    }
    Ok(calls)
}

/// Debug builds check a remote apply against the whole readings in rooms
/// holding at most this many sessions (`check_touched_part`): a whole
/// reading reads every departed session from the document, so the check
/// covers every test's small rooms and the early part of its long ones.
#[cfg(debug_assertions)]
pub(super) const WHOLE_CHECK_SESSIONS_MAX: usize = 256;

/// Debug builds: the events and index updates of a remote apply, computed
/// from the touched part of the reading (`before`, `after`), equal those of
/// the whole cached readings (`whole`).
#[cfg(debug_assertions)]
pub(super) fn check_touched_part(
    room: &RoomId,
    whole: &(Option<RoomSnapshot>, Option<RoomSnapshot>),
    part: &(Option<RoomSnapshot>, Option<RoomSnapshot>),
    kinds: &[crate::events::ChangeKind],
) {
    let whole_kinds = whole
        .1
        .as_ref()
        .map(|a| crate::events::diff(whole.0.as_ref(), a))
        .unwrap_or_default();
    debug_assert_eq!(whole_kinds, kinds, "events from the touched part");
    let updates = |(b, a): &(Option<RoomSnapshot>, Option<RoomSnapshot>)| {
        let mut batch = Batch::default();
        index_updates(
            room,
            &IndexView::of(b.as_ref()),
            &IndexView::of(a.as_ref()),
            &mut batch,
        );
        batch
    };
    debug_assert_eq!(
        updates(whole),
        updates(part),
        "index updates from the touched part"
    );
}
