//! Bytes on the wire: every TCP connection's reads and writes, counted
//! under the pre-shared key, noise and yamux, so that gossipsub's relays,
//! its control messages, framing and encryption are all in the figure the
//! replica's own per-kind counters (`ReplicaStats::sent`) leave out.
//!
//! Written by hand because it is a few lines: libp2p's bandwidth metrics
//! come with a second prometheus-client version and count per transport
//! stack, which says nothing more than this total.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};

/// Totals over every connection of one swarm.
#[derive(Debug, Default)]
pub struct WireBytes {
    sent: AtomicU64,
    received: AtomicU64,
}

impl WireBytes {
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// A connection whose bytes go into `WireBytes`.
pub struct Counted<S> {
    inner: S,
    bytes: Arc<WireBytes>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, bytes: Arc<WireBytes>) -> Self {
        Self { inner, bytes }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.bytes.received.fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.bytes.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn reads_and_writes_are_counted() {
        let bytes = Arc::new(WireBytes::default());
        futures::executor::block_on(async {
            let mut out = Counted::new(futures::io::Cursor::new(Vec::new()), bytes.clone());
            out.write_all(b"hello").await.expect("write");
            let mut back = Counted::new(futures::io::Cursor::new(b"hey".to_vec()), bytes.clone());
            let mut read = Vec::new();
            back.read_to_end(&mut read).await.expect("read");
        });
        assert_eq!((bytes.sent(), bytes.received()), (5, 3));
    }
}
