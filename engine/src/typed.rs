//! The typed writes of [`Engine`]: one method per room operation, each a
//! [`RoomOp`] through [`Engine::write`].

use crate::error::Result;
use crate::ids::{NodeId, RoomId, SessionId, TenantId, TrackId, UserId};
use crate::model::*;
use crate::room::RoomOp;
use crate::Engine;

impl Engine {
    pub fn create_room(
        &self,
        room: &RoomId,
        tenant: &TenantId,
        config: RoomConfig,
    ) -> Result<WriteAck> {
        self.write(
            room,
            RoomOp::Create {
                tenant: tenant.clone(),
                config,
            },
        )
    }

    pub fn update_config(&self, room: &RoomId, update: ConfigUpdate) -> Result<WriteAck> {
        self.write(room, RoomOp::UpdateConfig { update })
    }

    pub fn set_permission(
        &self,
        room: &RoomId,
        user: &UserId,
        permission: Permission,
    ) -> Result<WriteAck> {
        self.write(
            room,
            RoomOp::SetPermission {
                user: user.clone(),
                permission,
            },
        )
    }

    pub fn remove_permission(&self, room: &RoomId, user: &UserId) -> Result<WriteAck> {
        self.write(room, RoomOp::RemovePermission { user: user.clone() })
    }

    pub fn join(&self, room: &RoomId, request: JoinRequest) -> Result<WriteAck> {
        self.write(room, RoomOp::Join { request })
    }

    pub fn set_state(
        &self,
        room: &RoomId,
        session: &SessionId,
        state: SessionState,
    ) -> Result<WriteAck> {
        self.write(
            room,
            RoomOp::SetState {
                session: session.clone(),
                state,
            },
        )
    }

    pub fn leave(&self, room: &RoomId, session: &SessionId) -> Result<WriteAck> {
        self.write(
            room,
            RoomOp::Leave {
                session: session.clone(),
            },
        )
    }

    pub fn publish(
        &self,
        room: &RoomId,
        session: &SessionId,
        track_id: &TrackId,
        track: Track,
    ) -> Result<WriteAck> {
        let op = RoomOp::Publish {
            session: session.clone(),
            track_id: track_id.clone(),
            track,
        };
        self.write(room, op)
    }

    pub fn unpublish(
        &self,
        room: &RoomId,
        session: &SessionId,
        track_id: &TrackId,
    ) -> Result<WriteAck> {
        self.write(
            room,
            RoomOp::Unpublish {
                session: session.clone(),
                track_id: track_id.clone(),
            },
        )
    }

    /// Moves a call to `node` at `epoch`; `(epoch, node)` must exceed the
    /// current owner's.
    pub fn set_owner(
        &self,
        room: &RoomId,
        session: &SessionId,
        node: &NodeId,
        epoch: u64,
    ) -> Result<WriteAck> {
        let owner = Owner {
            epoch,
            node: node.clone(),
        };
        self.write(
            room,
            RoomOp::SetOwner {
                session: session.clone(),
                owner,
            },
        )
    }

    pub fn end_room(&self, room: &RoomId) -> Result<WriteAck> {
        self.write(room, RoomOp::End)
    }
}
