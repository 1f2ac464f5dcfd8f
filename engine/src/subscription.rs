//! A bounded stream of change events. Writers never wait for subscribers:
//! one that falls more than its capacity behind gets [`RecvError::Lagged`]
//! with the number of events it missed, then continues from the oldest
//! event still held.

use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    #[error("subscriber fell behind and missed {missed} events")]
    Lagged { missed: u64 },
    #[error("the engine was dropped")]
    Closed,
    #[error("no event ready")]
    Empty,
}

/// One subscriber's view of an event stream (change events by default).
#[derive(Debug)]
pub struct Subscription<T = crate::events::ChangeEvent> {
    rx: broadcast::Receiver<T>,
}

impl<T: Clone> Subscription<T> {
    pub(crate) fn new(rx: broadcast::Receiver<T>) -> Self {
        Self { rx }
    }

    /// Waits for the next event (async; any runtime).
    pub async fn recv(&mut self) -> Result<T, RecvError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(missed) => RecvError::Lagged { missed },
            broadcast::error::RecvError::Closed => RecvError::Closed,
        })
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Result<T, RecvError> {
        self.rx.try_recv().map_err(|e| match e {
            broadcast::error::TryRecvError::Lagged(missed) => RecvError::Lagged { missed },
            broadcast::error::TryRecvError::Closed => RecvError::Closed,
            broadcast::error::TryRecvError::Empty => RecvError::Empty,
        })
    }

    /// Blocks the thread for the next event. Not for use inside an async runtime.
    pub fn blocking_recv(&mut self) -> Result<T, RecvError> {
        self.rx.blocking_recv().map_err(|e| match e {
            broadcast::error::RecvError::Lagged(missed) => RecvError::Lagged { missed },
            broadcast::error::RecvError::Closed => RecvError::Closed,
        })
    }
}
