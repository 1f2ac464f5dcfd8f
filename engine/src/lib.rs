//! Chorus engine: leaderless replication of real-time audio/video session
//! state. Rooms are automerge documents; see `docs/architecture.md`.

mod clock;
mod driver;
mod engine;
pub mod error;
pub mod events;
pub mod hlc;
pub mod ids;
pub mod limits;
pub mod membership;
pub mod model;
#[cfg(feature = "mutations")]
pub mod mutation;
#[cfg(feature = "network")]
pub mod net;
#[cfg(feature = "openapi")]
mod openapi;
mod pending;
pub mod placement;
pub mod replica;
pub mod resume;
pub mod room;
pub mod rooms;
pub mod storage;
mod subscription;
mod typed;

pub use driver::{AcquireReason, NodeEvent, StampedChange, Standalone, Transport};
pub use engine::{Clock, Engine, EngineConfig, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use events::{ChangeEvent, ChangeKind, Origin};
pub use ids::{IdError, NodeId, RegionId, RoomId, SessionId, TenantId, TrackId, UserId};
pub use membership::Intent;
pub use model::*;
pub use pending::PendingWrite;
pub use resume::Resumed;
pub use room::RoomOp;
pub use subscription::{RecvError, Subscription};

/// The README's code runs (its examples are doctests; they need the
/// `network` feature, which the workspace's tests build with).
#[doc = include_str!("../../README.md")]
#[cfg(all(doctest, feature = "network"))]
pub struct ReadmeDoctests;
