//! What a media node says about itself (load, call-setup failures, region,
//! capacity) and what operators ask of nodes (drains). Both travel in small
//! periodic broadcasts, never in automerge: they change every second and
//! would bloat every room's history for nothing a merge needs.

use serde::{Deserialize, Serialize};

use crate::hlc::Timestamp;
use crate::ids::{NodeId, RegionId};
pub use crate::limits::DRAIN_ORDERS_MAX;

/// Application health, reported by the media node through the library
/// (`Input::Health`) or the daemon's API. Ratios are in per-mille so the
/// wire form stays exact and comparable.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppHealth {
    /// Load relative to declared capacity: 1000 = exactly at capacity.
    pub load_permille: u32,
    /// Share of recent call setups that failed: 1000 = all of them.
    pub setup_failure_permille: u32,
}

impl AppHealth {
    /// From ratios as a person writes them (`load = 1.5`); out-of-range and
    /// non-finite values are clamped to `[0, 1000×]`, never a panic.
    pub fn from_ratios(load: f64, setup_failure_rate: f64) -> Self {
        let permille = |x: f64| {
            if x.is_finite() {
                (x * 1000.0).clamp(0.0, 1_000_000.0) as u32
            } else {
                1_000_000
            }
        };
        Self {
            load_permille: permille(load),
            setup_failure_permille: permille(setup_failure_rate),
        }
    }
}

/// One node's periodic self-report, with the drains its sender knows of.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub region: RegionId,
    /// Declared capacity (calls): rendezvous weight for re-homing.
    pub capacity: u32,
    pub app: AppHealth,
    pub drains: Vec<DrainOrder>,
}

/// An operator's order to drain `node` (or, `active: false`, to stop).
/// Orders merge last-writer-wins by `at`, so every replica ends with the
/// same view whichever order they arrive in.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainOrder {
    pub node: NodeId,
    pub at: Timestamp,
    /// Calls moved away per second, cluster-wide.
    pub rate_per_s: u32,
    pub active: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_clamp_instead_of_panicking() {
        let h = AppHealth::from_ratios(1.5, 0.25);
        assert_eq!(h.load_permille, 1500);
        assert_eq!(h.setup_failure_permille, 250);
        let h = AppHealth::from_ratios(f64::NAN, -3.0);
        assert_eq!(h.load_permille, 1_000_000);
        assert_eq!(h.setup_failure_permille, 0);
    }
}
