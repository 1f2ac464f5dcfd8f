//! The chorus replica daemon: a thin driver of the sans-IO replica over
//! libp2p and sled, with an HTTP API. See `docs/operations.md`.

pub mod api;
pub mod bench;
pub mod client;
pub mod config;
pub mod daemon;
pub mod demo;
mod env_overrides;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod nodes;
pub mod render;
