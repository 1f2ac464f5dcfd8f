//! Reading a room document into a [`RoomSnapshot`], applying the conflict
//! rules of `docs/data-model.md`. Every rule reads *all* concurrent values
//! (`get_all`), never automerge's arbitrary winner. Values a foreign writer
//! left malformed are skipped, never trusted and never a panic.

use std::collections::BTreeMap;

use automerge::{ObjId, ObjType, ReadDoc, Value, ROOT};
use serde::de::DeserializeOwned;

use super::schema as s;
use crate::error::Error;
use crate::hlc::Timestamp;
use crate::ids::{RegionId, RoomId, SessionId, TenantId, TrackId, UserId};
use crate::model::{
    CallSession, Lifecycle, Owner, Permission, Role, RoomConfig, RoomCounters, RoomSnapshot,
    SessionState, Track, SCHEMA_VERSION,
};

/// Reads the whole room.
pub fn snapshot<R: ReadDoc>(doc: &R, id: &RoomId) -> Result<RoomSnapshot, Error> {
    let objs = RootObjs::find(doc, id)?;
    Ok(RoomSnapshot {
        id: id.clone(),
        schema_version: SCHEMA_VERSION,
        tenant: lww::<_, TenantId>(doc, &objs.meta, s::TENANT).map(|(_, v)| v),
        created_at_ms: lww(doc, &objs.meta, s::CREATED_AT).map(|(_, v)| v),
        lifecycle: lifecycle(doc, &objs.meta),
        config: config(doc, &objs)?,
        permissions: permissions(doc, &objs.permissions),
        sessions: sessions(doc, &objs.sessions),
        counters: counters(doc, &objs.counters),
    })
}

/// Re-reads the parts of `snap` that `touched` names.
pub fn refresh<R: ReadDoc>(
    doc: &R,
    objs: &RootObjs,
    snap: &mut RoomSnapshot,
    touched: &super::touched::Touched,
) -> Result<(), Error> {
    if touched.everything {
        *snap = snapshot(doc, &snap.id)?;
        return Ok(());
    }
    if touched.meta {
        snap.tenant = lww::<_, TenantId>(doc, &objs.meta, s::TENANT).map(|(_, v)| v);
        snap.created_at_ms = lww(doc, &objs.meta, s::CREATED_AT).map(|(_, v)| v);
        snap.lifecycle = lifecycle(doc, &objs.meta);
    }
    if touched.config {
        snap.config = config(doc, objs)?;
    }
    if touched.permissions {
        snap.permissions = permissions(doc, &objs.permissions);
    }
    if touched.counters {
        snap.counters = counters(doc, &objs.counters);
    }
    for key in &touched.sessions {
        let Ok(id) = SessionId::parse(key.as_str()) else {
            continue;
        };
        let read = map_obj(doc, &objs.sessions, key).and_then(|obj| session(doc, &obj));
        match read {
            Some(session) => snap.sessions.insert(id, session),
            None => snap.sessions.remove(&id),
        };
    }
    Ok(())
}

/// The object ids of the maps every room has from its genesis change.
#[derive(Debug, Clone)]
pub struct RootObjs {
    pub meta: ObjId,
    pub config: ObjId,
    pub attrs: ObjId,
    pub permissions: ObjId,
    pub sessions: ObjId,
    pub counters: ObjId,
}

impl RootObjs {
    pub fn find<R: ReadDoc>(doc: &R, id: &RoomId) -> Result<Self, Error> {
        let version = doc
            .get(ROOT, s::SCHEMA)
            .ok()
            .flatten()
            .and_then(|(v, _)| v.as_u64());
        match version {
            Some(SCHEMA_VERSION) => {}
            Some(found) => return Err(Error::SchemaVersion { found }),
            None => return Err(corrupt(id, "no schema version")),
        }
        let need = |parent: &ObjId, key: &'static str| {
            map_obj(doc, parent, key).ok_or_else(|| corrupt(id, key))
        };
        let config = need(&ROOT, s::CONFIG)?;
        Ok(Self {
            meta: need(&ROOT, s::META)?,
            attrs: need(&config, s::ATTRS)?,
            config,
            permissions: need(&ROOT, s::PERMISSIONS)?,
            sessions: need(&ROOT, s::SESSIONS)?,
            counters: need(&ROOT, s::COUNTERS)?,
        })
    }
}

fn corrupt(id: &RoomId, what: &str) -> Error {
    Error::Corrupt {
        room: id.clone(),
        reason: format!("missing {what}"),
    }
}

pub fn map_obj<R: ReadDoc>(doc: &R, parent: &ObjId, key: &str) -> Option<ObjId> {
    match doc.get(parent, key) {
        Ok(Some((Value::Object(ObjType::Map), obj))) => Some(obj),
        _ => None,
    }
}

/// Every concurrent string value at `key`.
pub(super) fn all_strings<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Vec<String> {
    let values = doc.get_all(obj, key).unwrap_or_default();
    values
        .into_iter()
        .filter_map(|(v, _)| match v {
            Value::Scalar(scalar) => scalar.as_str().map(str::to_owned),
            Value::Object(_) => None,
        })
        .collect()
}

/// Last-writer-wins by HLC stamp over all concurrent values.
pub fn lww<R: ReadDoc, T: DeserializeOwned>(
    doc: &R,
    obj: &ObjId,
    key: &str,
) -> Option<(Timestamp, T)> {
    all_strings(doc, obj, key)
        .iter()
        .filter_map(|text| s::decode_stamped::<T>(text))
        .max_by_key(|(stamp, _)| *stamp)
}

/// A removable field (an attribute, a permission, a track): last writer
/// wins over its values and its removals (stamped `null`s); `None` when the
/// newest is a removal, or nothing at `key` parses.
pub fn removable<R: ReadDoc, T: DeserializeOwned>(
    doc: &R,
    obj: &ObjId,
    key: &str,
) -> Option<(Timestamp, T)> {
    let (stamp, value) = lww::<_, Option<T>>(doc, obj, key)?;
    Some((stamp, value?))
}

/// How many keys of a map of removable fields read as present.
pub fn present_keys<R: ReadDoc>(doc: &R, obj: &ObjId) -> usize {
    doc.keys(obj)
        .filter(|key| removable::<_, serde_json::Value>(doc, obj, key).is_some())
        .count()
}

/// The plain (unstamped) string at `key`, parsed; written once per object.
fn plain<R: ReadDoc, T: std::str::FromStr>(doc: &R, obj: &ObjId, key: &str) -> Option<T> {
    let text = all_strings(doc, obj, key).into_iter().max()?;
    text.parse().ok()
}

/// Ownership: max `(epoch, node)` over all concurrent values.
pub fn owner<R: ReadDoc>(doc: &R, session: &ObjId) -> Option<Owner> {
    let claims = all_strings(doc, session, s::OWNER);
    let claims = claims.iter().filter_map(|text| s::decode_owner(text));
    #[cfg(feature = "mutations")]
    if crate::mutation::ownership_min() {
        return claims.min();
    }
    claims.max()
}

/// Session state: `left` is terminal and wins over any concurrent value;
/// otherwise last-writer-wins.
pub fn session_state<R: ReadDoc>(doc: &R, session: &ObjId) -> Option<SessionState> {
    let values: Vec<(Timestamp, SessionState)> = all_strings(doc, session, s::STATE)
        .iter()
        .filter_map(|text| s::decode_stamped(text))
        .collect();
    if values.iter().any(|(_, state)| *state == SessionState::Left) {
        return Some(SessionState::Left);
    }
    values
        .into_iter()
        .max_by_key(|(stamp, _)| *stamp)
        .map(|(_, v)| v)
}

/// The wall time of the newest `left` value's stamp: when the session left.
fn left_at<R: ReadDoc>(doc: &R, session: &ObjId) -> Option<u64> {
    all_strings(doc, session, s::STATE)
        .iter()
        .filter_map(|text| s::decode_stamped::<SessionState>(text))
        .filter(|(_, state)| *state == SessionState::Left)
        .map(|(stamp, _)| stamp.wall_ms)
        .max()
}

/// Ended if any replica wrote an end marker (ending is terminal).
pub fn lifecycle<R: ReadDoc>(doc: &R, meta: &ObjId) -> Lifecycle {
    if all_strings(doc, meta, s::ENDED).is_empty() {
        Lifecycle::Active
    } else {
        Lifecycle::Ended
    }
}

fn config<R: ReadDoc>(doc: &R, objs: &RootObjs) -> Result<RoomConfig, Error> {
    let default = RoomConfig::default();
    let preferred_region: Option<Option<RegionId>> =
        lww(doc, &objs.config, s::PREFERRED_REGION).map(|(_, v)| v);
    let mut attributes = BTreeMap::new();
    for key in doc.keys(&objs.attrs) {
        if let Some((_, value)) = removable::<_, String>(doc, &objs.attrs, &key) {
            attributes.insert(key, value);
        }
    }
    Ok(RoomConfig {
        max_participants: lww(doc, &objs.config, s::MAX_PARTICIPANTS)
            .map_or(default.max_participants, |(_, v)| v),
        preferred_region: preferred_region.flatten(),
        recording: lww(doc, &objs.config, s::RECORDING).map_or(default.recording, |(_, v)| v),
        attributes,
    })
}

fn permissions<R: ReadDoc>(doc: &R, obj: &ObjId) -> BTreeMap<UserId, Permission> {
    doc.keys(obj)
        .filter_map(|key| {
            let user = UserId::parse(key.as_str()).ok()?;
            let (_, perm) = removable::<_, Permission>(doc, obj, &key)?;
            Some((user, perm))
        })
        .collect()
}

fn sessions<R: ReadDoc>(doc: &R, obj: &ObjId) -> BTreeMap<SessionId, CallSession> {
    doc.keys(obj)
        .filter_map(|key| {
            let id = SessionId::parse(key.as_str()).ok()?;
            let session_obj = map_obj(doc, obj, &key)?;
            Some((id, session(doc, &session_obj)?))
        })
        .collect()
}

/// One session; `None` if a required field is missing or malformed.
pub fn session<R: ReadDoc>(doc: &R, obj: &ObjId) -> Option<CallSession> {
    let role: Role =
        serde_json::from_value(serde_json::Value::String(plain(doc, obj, s::ROLE)?)).ok()?;
    let joined_at_ms = doc
        .get(obj, s::JOINED_AT)
        .ok()
        .flatten()
        .and_then(|(v, _)| v.as_u64())?;
    Some(CallSession {
        user: plain(doc, obj, s::USER)?,
        role,
        owner: owner(doc, obj)?,
        region: plain(doc, obj, s::REGION)?,
        joined_at_ms,
        tracks: tracks(doc, obj),
        resume_token_hash: all_strings(doc, obj, s::RESUME_HASH).into_iter().max(),
        state: session_state(doc, obj)?,
        left_at_ms: left_at(doc, obj),
    })
}

fn tracks<R: ReadDoc>(doc: &R, session: &ObjId) -> BTreeMap<TrackId, Track> {
    let Some(obj) = map_obj(doc, session, s::TRACKS) else {
        return BTreeMap::new();
    };
    doc.keys(&obj)
        .filter_map(|key| {
            let id = TrackId::parse(key.as_str()).ok()?;
            let (_, track) = removable::<_, Track>(doc, &obj, &key)?;
            Some((id, track))
        })
        .collect()
}

pub(super) fn counters<R: ReadDoc>(doc: &R, obj: &ObjId) -> RoomCounters {
    let read = |key: &str| {
        doc.get(obj, key)
            .ok()
            .flatten()
            .and_then(|(v, _)| v.as_i64())
            .unwrap_or(0)
    };
    RoomCounters {
        joins: read(s::JOINS),
        leaves: read(s::LEAVES),
        owner_changes: read(s::OWNER_CHANGES),
    }
}
