//! What the [`Engine`](crate::Engine) handle asks of its driver.

use tokio::sync::oneshot;

use crate::error::Result;
use crate::ids::{RoomId, TenantId};
use crate::model::{ConfigUpdate, RemoteOutcome, RoomConfig, WriteAck};
use crate::replica::{Input, Replica};
use crate::room::RoomOp;

/// Where a command's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// One request to the driver task, which owns the replica.
pub(crate) enum Command {
    /// A write, answered once it is durable.
    Write { write: Write, reply: Reply<Done> },
    /// A read, run on the driver after any pending flush: nothing it sees
    /// can be lost in a crash.
    Query(Query),
    /// An input with no answer (health reports, drain orders).
    Input(Input),
    /// Finish this turn, flush and stop.
    Stop,
}

/// A read of the replica (and, with a network, of the transport); given
/// the store's error instead while the store is broken.
pub(crate) type Query = Box<dyn FnOnce(Result<&mut QueryCtx<'_>>) + Send>;

/// What a query sees.
pub(crate) struct QueryCtx<'a> {
    pub replica: &'a mut Replica,
    /// The network, if any, for its own views (peers, counters, drills).
    pub transport: &'a mut dyn std::any::Any,
}

pub(crate) enum Write {
    Local {
        room: RoomId,
        op: RoomOp,
    },
    /// Creates the room, or updates its config if it exists: decided on the
    /// driver, so no other write comes in between.
    Upsert {
        room: RoomId,
        tenant: TenantId,
        config: RoomConfig,
        update: ConfigUpdate,
    },
    /// An import merged on the caller's thread (see `rooms::prepare`).
    ImportPrepared(Box<crate::rooms::PreparedImport>),
    Apply {
        room: RoomId,
        changes: Vec<Vec<u8>>,
    },
}

/// A durable write's answer.
#[derive(Debug)]
pub(crate) enum Done {
    Ack(WriteAck),
    Applied(RemoteOutcome),
}
