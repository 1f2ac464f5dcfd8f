//! The replication protocol.
pub mod digest;
pub mod wire;
