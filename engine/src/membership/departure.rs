//! Planned departures: a node that stops on purpose says so, with an
//! intent, instead of letting the detector find out (`docs/failover.md`,
//! "Planned restarts").
//!
//! - `Restart`: its media keeps running while the replica restarts (the
//!   daemon). Peers grade it Leaving, never Down, and hold its calls for
//!   `restart_grace_ms`; back within it (a newer SWIM identity answers),
//!   it is Healthy again and nothing moved. Not back by then, it is graded
//!   as the detector finds it (Down, by then), and its calls fail over.
//! - `Stop`: its media stops with it (an embedded media node). Peers grade
//!   it Down at once and take its calls, without waiting for the detector.
//!
//! A departure is only ever taken from the node itself (the transport
//! authenticates the sender), and only one per node is kept.

use serde::{Deserialize, Serialize};

use super::Grade;

/// Why a node leaves.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// Back soon; its calls stay where they are meanwhile.
    Restart,
    /// Gone; its calls move now.
    Stop,
}

impl Intent {
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Restart => "restart",
            Intent::Stop => "stop",
        }
    }
}

impl std::str::FromStr for Intent {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "restart" => Ok(Intent::Restart),
            "stop" => Ok(Intent::Stop),
            other => Err(format!("unknown intent {other:?}: restart or stop")),
        }
    }
}

/// A departure a node announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Departure {
    pub intent: Intent,
    /// The newest SWIM incarnation of the node when it left: a newer one
    /// alive means it is back.
    pub incarnation: u64,
    /// Until when a restart holds its calls (local time).
    pub until_ms: u64,
}

impl Departure {
    /// The grade of a node that left, while it is not back and its grace
    /// (for a restart) has not ended.
    pub fn grade(&self, now_ms: u64) -> (Grade, String) {
        match self.intent {
            Intent::Stop => (Grade::Down, "left: stopped by its operator".to_string()),
            Intent::Restart => (
                Grade::Leaving,
                format!(
                    "restarting; its calls are held for {} ms more",
                    self.until_ms.saturating_sub(now_ms)
                ),
            ),
        }
    }
}
