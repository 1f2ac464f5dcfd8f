//! Group commit: a write is acknowledged only after a flush that covers it,
//! and writes waiting at the same time share one flush.
//!
//! Each write takes a ticket right after its batch is applied (tickets are
//! issued in apply order). The first waiter to find no flush running becomes
//! the leader: it notes the highest ticket issued so far, flushes, and marks
//! everything up to that ticket durable. Others wait on the condvar; a write
//! that arrived during the flush is covered by the next one. No thread of
//! its own: the callers flush.

use std::sync::{Condvar, Mutex, MutexGuard};

use crate::storage::StorageError;

#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    flushed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    issued: u64,
    durable: u64,
    flushing: bool,
    flushes: u64,
}

/// A claim on a future durability point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

impl GroupCommit {
    pub fn new() -> Self {
        Self::default()
    }

    /// Call right after the write's batch has been applied to the store.
    pub fn issue(&self) -> Ticket {
        let mut state = self.lock();
        state.issued += 1;
        Ticket(state.issued)
    }

    /// How many flushes have run (for metrics and tests).
    pub fn flushes(&self) -> u64 {
        self.lock().flushes
    }

    /// Returns once `ticket` is durable, flushing if no one else is.
    pub fn wait(
        &self,
        ticket: Ticket,
        flush: impl Fn() -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let mut state = self.lock();
        loop {
            if state.durable >= ticket.0 {
                return Ok(());
            }
            if state.flushing {
                state = self.flushed.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.flushing = true;
            let target = state.issued;
            drop(state);
            let result = flush();
            state = self.lock();
            state.flushing = false;
            state.flushes += 1;
            if result.is_ok() {
                state.durable = state.durable.max(target);
            }
            self.flushed.notify_all();
            result?;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Counters only; a panic elsewhere cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn concurrent_waiters_share_flushes() {
        let commit = Arc::new(GroupCommit::new());
        let flushes = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let commit = commit.clone();
                let flushes = flushes.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let ticket = commit.issue();
                        commit
                            .wait(ticket, || {
                                flushes.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(1));
                                Ok(())
                            })
                            .expect("flush ok");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let n = flushes.load(Ordering::SeqCst);
        assert!(
            n < 400,
            "400 writes took {n} flushes; group commit should share them"
        );
        assert_eq!(n, commit.flushes());
    }

    #[test]
    fn a_failed_flush_is_reported_and_retried() {
        let commit = GroupCommit::new();
        let ticket = commit.issue();
        let err = commit.wait(ticket, || Err(StorageError::Backend("disk".into())));
        assert!(err.is_err());
        commit
            .wait(ticket, || Ok(()))
            .expect("second flush succeeds");
    }
}
