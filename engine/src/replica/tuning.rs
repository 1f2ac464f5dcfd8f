//! Replica settings a configuration file may override; unset ones keep the
//! defaults of [`ReplicaConfig::new`]. Shared by the daemon's config and the
//! simulator's scenarios, so both accept the same keys.

use serde::{Deserialize, Serialize};

use super::ReplicaConfig;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaTuning {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_entropy_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_entries_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_retention_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_trim_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_horizon_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ack_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot_rooms: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_period_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_rtt_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspect_to_down_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_grace_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indirect_probes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded_load_permille: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded_setup_failure_permille: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<crate::ids::RegionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_rate_per_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_rate_per_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_needs_majority: Option<bool>,
}

impl ReplicaTuning {
    /// Overrides the fields that are set. `ReplicaConfig::validate` checks
    /// the result.
    pub fn apply(&self, c: &mut ReplicaConfig) {
        let set = |target: &mut u64, value: Option<u64>| {
            if let Some(v) = value {
                *target = v;
            }
        };
        set(
            &mut c.anti_entropy_interval_ms,
            self.anti_entropy_interval_ms,
        );
        set(&mut c.round_timeout_ms, self.round_timeout_ms);
        set(&mut c.push_delay_ms, self.push_delay_ms);
        set(&mut c.since_entries_max, self.since_entries_max);
        set(&mut c.log_retention_ms, self.log_retention_ms);
        set(&mut c.log_trim_interval_ms, self.log_trim_interval_ms);
        set(&mut c.purge_horizon_ms, self.purge_horizon_ms);
        set(&mut c.end_ack_interval_ms, self.end_ack_interval_ms);
        set(&mut c.probe_period_ms, self.probe_period_ms);
        set(&mut c.probe_rtt_ms, self.probe_rtt_ms);
        set(&mut c.suspect_to_down_ms, self.suspect_to_down_ms);
        set(&mut c.silence_ms, self.silence_ms);
        set(&mut c.health_interval_ms, self.health_interval_ms);
        set(&mut c.rollback_grace_ms, self.rollback_grace_ms);
        if let Some(v) = self.indirect_probes {
            c.indirect_probes = v;
        }
        if let Some(v) = self.degraded_load_permille {
            c.degraded_load_permille = v;
        }
        if let Some(v) = self.degraded_setup_failure_permille {
            c.degraded_setup_failure_permille = v;
        }
        if let Some(v) = self.region.clone() {
            c.region = v;
        }
        if let Some(v) = self.capacity {
            c.capacity = v;
        }
        if let Some(v) = self.failover_rate_per_s {
            c.failover_rate_per_s = v;
        }
        if let Some(v) = self.drain_rate_per_s {
            c.drain_rate_per_s = v;
        }
        if let Some(v) = self.failover_needs_majority {
            c.failover_needs_majority = v;
        }
        if let Some(hot) = self.hot_rooms {
            c.hot_rooms = hot;
        }
    }
}
