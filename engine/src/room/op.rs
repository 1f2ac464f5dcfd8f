//! The local write operations on a room, as one serializable enum: the
//! typed API, the daemon's HTTP API and the simulator's workload all produce
//! these, so every write takes the same path.

use serde::{Deserialize, Serialize};

use crate::ids::{SessionId, TenantId, TrackId, UserId};
use crate::model::{ConfigUpdate, JoinRequest, Owner, Permission, RoomConfig, SessionState, Track};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RoomOp {
    Create {
        tenant: TenantId,
        config: RoomConfig,
    },
    UpdateConfig {
        update: ConfigUpdate,
    },
    SetPermission {
        user: UserId,
        permission: Permission,
    },
    RemovePermission {
        user: UserId,
    },
    Join {
        request: JoinRequest,
    },
    SetState {
        session: SessionId,
        state: SessionState,
    },
    Leave {
        session: SessionId,
    },
    Publish {
        session: SessionId,
        track_id: TrackId,
        track: Track,
    },
    Unpublish {
        session: SessionId,
        track_id: TrackId,
    },
    /// Moves a call to `owner`, which must supersede the current owner
    /// (a higher epoch, or the same epoch and a higher node id).
    SetOwner {
        session: SessionId,
        owner: Owner,
    },
    End,
    /// Several operations as one transaction: one change, one flush, one
    /// acknowledgement, all applied or none. Later operations see earlier
    /// ones (a join, then its tracks). At most `BATCH_OPS_MAX`; neither
    /// `Create` nor another batch may be inside.
    Batch {
        // A batch holds no batch (checked on write); the schema must not
        // recurse forever either.
        #[cfg_attr(feature = "openapi", schema(no_recursion))]
        ops: Vec<RoomOp>,
    },
    /// Asks every replica to compact the room's history (written by the
    /// replica itself, never by a caller: see `room::compact`).
    #[serde(skip)]
    RequestCompaction {
        request: super::compact::Request,
    },
}

impl RoomOp {
    /// The operations this one applies, in order (a batch's, or itself).
    pub fn parts(&self) -> &[RoomOp] {
        match self {
            RoomOp::Batch { ops } => ops,
            one => std::slice::from_ref(one),
        }
    }
}
