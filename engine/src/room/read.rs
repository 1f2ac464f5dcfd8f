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
    read_room(doc, id, &RootObjs::find(doc, id)?, Sessions::All)
}

/// Reads the room without the sessions that have left: what a hot room
/// keeps (`RoomDoc`). A departed session is read from the document when a
/// reader asks for it (`departed`), so the memory a hot room holds follows
/// its live sessions, not the churn of its retention period.
pub fn live_snapshot<R: ReadDoc>(doc: &R, id: &RoomId) -> Result<RoomSnapshot, Error> {
    read_room(doc, id, &RootObjs::find(doc, id)?, Sessions::Live)
}

/// `live_snapshot`, with the room's maps already found (finding them costs
/// seven lookups: `RootObjs::find`).
pub fn live_snapshot_in<R: ReadDoc>(
    doc: &R,
    id: &RoomId,
    objs: &RootObjs,
) -> Result<RoomSnapshot, Error> {
    read_room(doc, id, objs, Sessions::Live)
}

/// Which sessions a reading holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sessions {
    All,
    Live,
}

fn read_room<R: ReadDoc>(
    doc: &R,
    id: &RoomId,
    objs: &RootObjs,
    which: Sessions,
) -> Result<RoomSnapshot, Error> {
    Ok(RoomSnapshot {
        id: id.clone(),
        schema_version: SCHEMA_VERSION,
        tenant: lww::<_, TenantId>(doc, &objs.meta, s::TENANT).map(|(_, v)| v),
        created_at_ms: lww(doc, &objs.meta, s::CREATED_AT).map(|(_, v)| v),
        lifecycle: lifecycle(doc, &objs.meta),
        config: config(doc, objs)?,
        permissions: permissions(doc, &objs.permissions),
        sessions: sessions(doc, &objs.sessions, which),
        counters: counters(doc, &objs.counters),
    })
}

/// The sessions that have left, except those that left at or before
/// `left_before_ms` (`None`: every one the document holds).
pub fn departed<R: ReadDoc>(
    doc: &R,
    objs: &RootObjs,
    left_before_ms: Option<u64>,
    live: &BTreeMap<SessionId, CallSession>,
) -> Vec<(SessionId, CallSession)> {
    // A session of the live reading has not left: its fields are not read
    // (a reading of a busy room would otherwise read every live session
    // twice, once into the cache and once here to be dropped).
    session_maps(doc, &objs.sessions)
        .filter(|(id, _)| !live.contains_key(id))
        .filter_map(|(id, obj)| {
            let fields = Fields::read(doc, &obj);
            let states = fields.strings(s::STATE);
            if state_of(&states) != Some(SessionState::Left) {
                return None;
            }
            if let (Some(before), Some(at)) = (left_before_ms, left_at_of(&states)) {
                if at <= before {
                    return None;
                }
            }
            Some((id, session_of(doc, &fields)?))
        })
        .collect()
}

/// Each session's id and map, in one walk over the sessions map.
fn session_maps<'a, R: ReadDoc>(
    doc: &'a R,
    sessions: &ObjId,
) -> impl Iterator<Item = (SessionId, ObjId)> + 'a {
    doc.map_range(sessions, ..).filter_map(|item| {
        let id = SessionId::parse(item.key.as_ref()).ok()?;
        let obj = item.id();
        match item.value.into_value() {
            Value::Object(ObjType::Map) => Some((id, obj)),
            _ => None,
        }
    })
}

/// One session by id, as the document holds it (`None`: unknown or
/// malformed).
pub fn session_by_id<R: ReadDoc>(doc: &R, objs: &RootObjs, id: &SessionId) -> Option<CallSession> {
    session(doc, &map_obj(doc, &objs.sessions, id.as_str())?)
}

/// Re-reads the parts of `snap` that `touched` names.
pub fn refresh<R: ReadDoc>(
    doc: &R,
    objs: &RootObjs,
    snap: &mut RoomSnapshot,
    touched: &super::touched::Touched,
) -> Result<(), Error> {
    if touched.everything {
        *snap = live_snapshot_in(doc, &snap.id, objs)?;
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
        snap.counters = touched
            .counted
            .and_then(|steps| counted(&snap.counters, steps))
            .unwrap_or_else(|| counters(doc, &objs.counters));
        #[cfg(debug_assertions)]
        if touched.counted.is_some() {
            let read = counters(doc, &objs.counters);
            debug_assert_eq!(snap.counters, read, "counted as the document counts");
        }
    }
    for key in &touched.sessions {
        let Ok(id) = SessionId::parse(key.as_str()) else {
            continue;
        };
        let read = map_obj(doc, &objs.sessions, key).and_then(|obj| session(doc, &obj));
        match read {
            Some(session) if session.state != SessionState::Left => {
                snap.sessions.insert(id, session)
            }
            _ => snap.sessions.remove(&id),
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
    strings_of(values.iter().map(|(v, _)| v))
}

fn strings_of<'v>(values: impl Iterator<Item = &'v Value<'v>>) -> Vec<String> {
    values
        .filter_map(|v| match v {
            Value::Scalar(scalar) => scalar.as_str().map(str::to_owned),
            Value::Object(_) => None,
        })
        .collect()
}

/// Every key of the map `obj` with all its concurrent values, in one walk
/// over the map (`map_range`): automerge marks a key whose winner has
/// rivals, and only those keys are read again whole (`get_all`). The same
/// values as a `get_all` per key, where each lookup would seek the
/// document's columns anew (tens of microseconds a session in a room of a
/// thousand sessions).
struct Fields {
    /// Key → (automerge's winner, every concurrent value).
    keys: BTreeMap<String, (Value<'static>, ObjId, Vec<Value<'static>>)>,
}

impl Fields {
    fn read<R: ReadDoc>(doc: &R, obj: &ObjId) -> Self {
        let keys = doc
            .map_range(obj, ..)
            .map(|item| {
                let key = item.key.to_string();
                let id = item.id();
                let winner = item.value.into_value();
                let all = if item.conflict {
                    doc.get_all(obj, key.as_str())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(v, _)| v.into_owned())
                        .collect()
                } else {
                    vec![winner.clone()]
                };
                (key, (winner, id, all))
            })
            .collect();
        Self { keys }
    }

    fn strings(&self, key: &str) -> Vec<String> {
        self.keys
            .get(key)
            .map(|(_, _, all)| strings_of(all.iter()))
            .unwrap_or_default()
    }

    fn winner(&self, key: &str) -> Option<(&Value<'static>, &ObjId)> {
        self.keys.get(key).map(|(value, id, _)| (value, id))
    }

    fn map(&self, key: &str) -> Option<ObjId> {
        match self.winner(key)? {
            (Value::Object(ObjType::Map), id) => Some(id.clone()),
            _ => None,
        }
    }
}

/// Last-writer-wins by HLC stamp over all concurrent values.
pub fn lww<R: ReadDoc, T: DeserializeOwned>(
    doc: &R,
    obj: &ObjId,
    key: &str,
) -> Option<(Timestamp, T)> {
    lww_of(&all_strings(doc, obj, key))
}

fn lww_of<T: DeserializeOwned>(values: &[String]) -> Option<(Timestamp, T)> {
    values
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
    removable_of(&all_strings(doc, obj, key))
}

fn removable_of<T: DeserializeOwned>(values: &[String]) -> Option<(Timestamp, T)> {
    let (stamp, value) = lww_of::<Option<T>>(values)?;
    Some((stamp, value?))
}

/// How many keys of a map of removable fields read as present.
pub fn present_keys<R: ReadDoc>(doc: &R, obj: &ObjId) -> usize {
    doc.keys(obj)
        .filter(|key| removable::<_, serde_json::Value>(doc, obj, key).is_some())
        .count()
}

/// The plain (unstamped) string among `values`, parsed; written once per
/// object.
fn plain_of<T: std::str::FromStr>(values: Vec<String>) -> Option<T> {
    values.into_iter().max()?.parse().ok()
}

/// Ownership: max `(epoch, node)` over all concurrent values.
pub fn owner<R: ReadDoc>(doc: &R, session: &ObjId) -> Option<Owner> {
    owner_of(&all_strings(doc, session, s::OWNER))
}

fn owner_of(values: &[String]) -> Option<Owner> {
    let claims = values.iter().filter_map(|text| s::decode_owner(text));
    #[cfg(feature = "mutations")]
    if crate::mutation::ownership_min() {
        return claims.min();
    }
    claims.max()
}

/// Session state: `left` is terminal and wins over any concurrent value;
/// otherwise last-writer-wins.
pub fn session_state<R: ReadDoc>(doc: &R, session: &ObjId) -> Option<SessionState> {
    state_of(&all_strings(doc, session, s::STATE))
}

fn state_of(values: &[String]) -> Option<SessionState> {
    let values: Vec<(Timestamp, SessionState)> = values
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
fn left_at_of(values: &[String]) -> Option<u64> {
    values
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

fn sessions<R: ReadDoc>(doc: &R, obj: &ObjId, which: Sessions) -> BTreeMap<SessionId, CallSession> {
    session_maps(doc, obj)
        .filter_map(|(id, session_obj)| {
            let fields = Fields::read(doc, &session_obj);
            if which == Sessions::Live
                && state_of(&fields.strings(s::STATE)) == Some(SessionState::Left)
            {
                return None;
            }
            Some((id, session_of(doc, &fields)?))
        })
        .collect()
}

/// One session; `None` if a required field is missing or malformed.
pub fn session<R: ReadDoc>(doc: &R, obj: &ObjId) -> Option<CallSession> {
    session_of(doc, &Fields::read(doc, obj))
}

fn session_of<R: ReadDoc>(doc: &R, fields: &Fields) -> Option<CallSession> {
    let role: Role = serde_json::from_value(serde_json::Value::String(plain_of(
        fields.strings(s::ROLE),
    )?))
    .ok()?;
    let joined_at_ms = fields.winner(s::JOINED_AT).and_then(|(v, _)| v.as_u64())?;
    let states = fields.strings(s::STATE);
    Some(CallSession {
        user: plain_of(fields.strings(s::USER))?,
        role,
        owner: owner_of(&fields.strings(s::OWNER))?,
        region: plain_of(fields.strings(s::REGION))?,
        joined_at_ms,
        tracks: fields
            .map(s::TRACKS)
            .map(|tracks| read_tracks(doc, &tracks))
            .unwrap_or_default(),
        resume_token_hash: fields.strings(s::RESUME_HASH).into_iter().max(),
        state: state_of(&states)?,
        left_at_ms: left_at_of(&states),
    })
}

fn read_tracks<R: ReadDoc>(doc: &R, obj: &ObjId) -> BTreeMap<TrackId, Track> {
    let fields = Fields::read(doc, obj);
    fields
        .keys
        .keys()
        .filter_map(|key| {
            let id = TrackId::parse(key.as_str()).ok()?;
            let (_, track) = removable_of::<Track>(&fields.strings(key))?;
            Some((id, track))
        })
        .collect()
}

/// `counters` after the increments `steps`; `None` past `i64`.
fn counted(counters: &RoomCounters, steps: [u64; 3]) -> Option<RoomCounters> {
    let add = |value: i64, step: u64| value.checked_add(i64::try_from(step).ok()?);
    Some(RoomCounters {
        joins: add(counters.joins, steps[0])?,
        leaves: add(counters.leaves, steps[1])?,
        owner_changes: add(counters.owner_changes, steps[2])?,
    })
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
