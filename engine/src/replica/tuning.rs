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
        if let Some(hot) = self.hot_rooms {
            c.hot_rooms = hot;
        }
    }
}
