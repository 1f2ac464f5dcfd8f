//! The network seen from the driver. The sans-IO replica names peers by
//! [`NodeId`]; a transport maps them to connections. Without one the engine
//! is a single-node store.

use std::any::Any;
use std::future::Future;

use crate::ids::NodeId;
use crate::replica::{Event, Input};

/// A network the driver sends through and receives from.
pub trait Transport: Send + 'static {
    /// A request to one peer (sync messages, answers).
    fn send(&mut self, to: &NodeId, bytes: Vec<u8>);
    /// A push to every peer.
    fn broadcast(&mut self, bytes: Vec<u8>);
    /// Best effort to one peer (failure detection): dropping it is fine.
    fn datagram(&mut self, to: &NodeId, bytes: Vec<u8>);
    /// The next input from the network (`None`: something happened that
    /// the replica need not hear of). Must be cancel-safe: the driver
    /// selects over it.
    fn next(&mut self) -> impl Future<Output = Option<Input>> + Send;
    /// Peers connected now (told to a replica reopened after a store
    /// failure).
    fn connected(&self) -> Vec<NodeId> {
        Vec::new()
    }
    /// Every replica event passes here first (sync reports for peer views).
    fn observe(&mut self, _event: &Event) {}
    /// For queries that read the transport's own state.
    fn as_any(&mut self) -> &mut dyn Any;
}

/// No network: a single-node store.
#[derive(Debug, Default)]
pub struct Standalone;

impl Transport for Standalone {
    fn send(&mut self, _to: &NodeId, _bytes: Vec<u8>) {}
    fn broadcast(&mut self, _bytes: Vec<u8>) {}
    fn datagram(&mut self, _to: &NodeId, _bytes: Vec<u8>) {}
    async fn next(&mut self) -> Option<Input> {
        std::future::pending().await
    }
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}
