//! Plain, serde-serializable views of a room. These are what the typed API
//! returns and takes; no automerge type appears here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, RegionId, RoomId, SessionId, TenantId, TrackId, UserId};

/// Version of the document layout described in `docs/data-model.md`.
pub const SCHEMA_VERSION: u64 = 1;

/// A room read for one session (`Replica::room_with_session`): the room
/// with that session only, if the document holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReading {
    pub room: RoomSnapshot,
    /// The document no longer holds the session, but remembers a compaction
    /// pruning it (`room::departed`): it left, and is refused as such.
    pub pruned: bool,
}

/// A whole room, as read after applying every conflict rule.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSnapshot {
    pub id: RoomId,
    pub schema_version: u64,
    pub tenant: Option<TenantId>,
    pub created_at_ms: Option<u64>,
    pub lifecycle: Lifecycle,
    pub config: RoomConfig,
    pub permissions: BTreeMap<UserId, Permission>,
    pub sessions: BTreeMap<SessionId, CallSession>,
    pub counters: RoomCounters,
}

impl RoomSnapshot {
    /// A copy without the sessions that left at or before `left_before_ms`
    /// (wall time of their leave's HLC stamp): what a reader sees once the
    /// retention period (`session_retention_ms`) has passed since a leave.
    /// Copies only what it keeps.
    pub fn pruned(&self, left_before_ms: u64) -> RoomSnapshot {
        self.with_sessions(|_, s| !s.departed_by(left_before_ms))
    }

    /// A copy holding only the sessions `keep` accepts. Copies only what
    /// it keeps.
    pub fn with_sessions(&self, keep: impl Fn(&SessionId, &CallSession) -> bool) -> RoomSnapshot {
        RoomSnapshot {
            id: self.id.clone(),
            schema_version: self.schema_version,
            tenant: self.tenant.clone(),
            created_at_ms: self.created_at_ms,
            lifecycle: self.lifecycle,
            config: self.config.clone(),
            permissions: self.permissions.clone(),
            sessions: self
                .sessions
                .iter()
                .filter(|(id, s)| keep(id, s))
                .map(|(id, s)| (id.clone(), s.clone()))
                .collect(),
            counters: self.counters,
        }
    }

    /// Sessions that have not left.
    pub fn live_sessions(&self) -> impl Iterator<Item = (&SessionId, &CallSession)> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.state != SessionState::Left)
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    Active,
    Ended,
}

/// Room configuration. Each scalar is last-writer-wins by HLC stamp.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomConfig {
    pub max_participants: u32,
    pub preferred_region: Option<RegionId>,
    pub recording: bool,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            // A typical interactive room; large broadcasts set their own.
            max_participants: 100,
            preferred_region: None,
            recording: false,
            attributes: BTreeMap::new(),
        }
    }
}

/// A partial update of [`RoomConfig`]: `None` leaves a field alone.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigUpdate {
    pub max_participants: Option<u32>,
    /// `Some(None)` clears the preferred region.
    pub preferred_region: Option<Option<RegionId>>,
    pub recording: Option<bool>,
    /// Attributes to set.
    #[serde(default)]
    pub set_attributes: BTreeMap<String, String>,
    /// Attributes to remove.
    #[serde(default)]
    pub remove_attributes: Vec<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Host,
    Speaker,
    Audience,
}

impl Role {
    /// The rights a role has unless a permission entry says otherwise.
    pub fn default_permission(self) -> Permission {
        let publish = !matches!(self, Role::Audience);
        Permission {
            role: self,
            publish,
            subscribe: true,
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub role: Role,
    pub publish: bool,
    pub subscribe: bool,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSession {
    pub user: UserId,
    pub role: Role,
    pub owner: Owner,
    pub region: RegionId,
    pub joined_at_ms: u64,
    pub tracks: BTreeMap<TrackId, Track>,
    /// blake3 of the client's resume token, hex. The token itself is never stored.
    pub resume_token_hash: Option<String>,
    pub state: SessionState,
    /// When the session left: the wall time (ms) of its leave's HLC stamp
    /// (the newest, if several replicas wrote one). Absent while live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_at_ms: Option<u64>,
}

impl CallSession {
    /// Whether the session left at or before `left_before_ms`.
    pub fn departed_by(&self, left_before_ms: u64) -> bool {
        self.state == SessionState::Left && self.left_at_ms.is_some_and(|at| at <= left_before_ms)
    }
}

/// Which media node hosts a call. Conflicts resolve to the max of
/// `(epoch, node)` over all concurrent values.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owner {
    pub epoch: u64,
    pub node: NodeId,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Connecting,
    Active,
    Reconnecting,
    /// Terminal: once any replica writes `left`, the session stays left.
    Left,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    pub kind: TrackKind,
    pub simulcast_layers: u8,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
    Data,
}

/// Counters merge by adding concurrent increments.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomCounters {
    pub joins: i64,
    pub leaves: i64,
    pub owner_changes: i64,
}

/// What a media node sends to admit a participant.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub session: SessionId,
    pub user: UserId,
    pub role: Role,
    pub owner: NodeId,
    pub region: RegionId,
    /// The client's resume token; only its blake3 hash is stored.
    #[serde(default)]
    pub resume_token: Option<String>,
}

/// One entry of the room list, read from an index without loading the room.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    pub id: RoomId,
    pub tenant: Option<TenantId>,
    pub lifecycle: Lifecycle,
}

/// A call hosted by a media node, from the owner index.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OwnedCall {
    pub room: RoomId,
    pub session: SessionId,
    pub epoch: u64,
}

/// The hex blake3 hash stored for a resume token.
pub fn resume_token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// The hash of one automerge change, as the typed API shows it (hex).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Head(pub [u8; 32]);

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Head({self})")
    }
}

impl Serialize for Head {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Head {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::hex_schema("The hash of one automerge change.", 64)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Head {}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Head::parse(&text).ok_or_else(|| serde::de::Error::custom("a head is 64 hex digits"))
    }
}

impl Head {
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Head(out))
    }
}

/// What a durable local write returns.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteAck {
    pub room: RoomId,
    /// The room's heads right after the write.
    pub heads: Vec<Head>,
}

/// What applying a batch of remote changes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteOutcome {
    pub applied: usize,
    pub pending: usize,
    pub dropped: usize,
    /// Changes of a history this replica compacted away (a peer that has
    /// not compacted yet sent them): ignored, their writer carries them.
    #[serde(default)]
    pub superseded: usize,
    /// Peers' bases of a newer generation whose cut is not a request this
    /// replica may take, or is still on its way (or an import's, whose cut
    /// is not held): left for a later round.
    #[serde(default)]
    pub bases_deferred: usize,
    /// Peers' bases whose cut this replica could never hold (its peers
    /// compacted past it): taken, with its room merged onto them.
    #[serde(default)]
    pub bases_merged: usize,
    /// Changes refused by validation (see `docs/data-model.md`).
    pub refused: usize,
}
