//! Writes that do not block their writer: [`Engine::begin_write`] hands the
//! write to the driver and returns at once; the [`PendingWrite`] resolves
//! once the write is durable. The driver applies everything queued in one
//! turn and flushes once, so a writer with several writes in flight shares
//! one flush among them (a blocked writer pays one flush per write).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::driver::{Command, Done, Write};
use crate::engine::{ack, stopped};
use crate::error::Result;
use crate::ids::RoomId;
use crate::model::WriteAck;
use crate::room::RoomOp;
use crate::Engine;

/// A write handed to the driver, not yet answered. It resolves to the
/// write's acknowledgement once the write is durable, or to its error;
/// nothing that carries the write (a push, a change event) leaves before
/// that flush. Dropping it does not cancel the write.
#[derive(Debug)]
#[must_use = "the write's outcome is known only from its answer"]
pub struct PendingWrite {
    answer: oneshot::Receiver<Result<Done>>,
}

impl PendingWrite {
    /// Blocks until the write is durable (or failed). Not for use inside
    /// an async task: `.await` the write there instead.
    pub fn wait(self) -> Result<WriteAck> {
        futures::executor::block_on(self)
    }
}

impl Future for PendingWrite {
    type Output = Result<WriteAck>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.answer)
            .poll(cx)
            .map(|answer| match answer {
                Ok(result) => result.and_then(ack),
                Err(_) => Err(stopped()),
            })
    }
}

impl Engine {
    /// Hands `op` to the replica and returns without waiting for it. Writes
    /// begun from one thread apply in the order begun; each succeeds or
    /// fails on its own (a refused write does not stop the next). Blocks
    /// only while the driver's queue is full (`COMMAND_QUEUE_MAX`): like
    /// every call of [`Engine`], call it from a thread that may block (in
    /// async code, `spawn_blocking`), then `.await` the answer anywhere.
    pub fn begin_write(&self, room: &RoomId, op: RoomOp) -> Result<PendingWrite> {
        let (reply, answer) = oneshot::channel();
        let write = Write::Local {
            room: room.clone(),
            op,
        };
        self.send(Command::Write { write, reply })?;
        Ok(PendingWrite { answer })
    }

    /// Several operations on one room as one transaction: one change, one
    /// flush and one acknowledgement, all applied or none (see
    /// [`RoomOp::Batch`]). For the writes of one signalling event.
    pub fn write_batch(&self, room: &RoomId, ops: Vec<RoomOp>) -> Result<WriteAck> {
        self.write(room, RoomOp::Batch { ops })
    }
}
