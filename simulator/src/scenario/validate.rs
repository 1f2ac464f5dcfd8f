//! Scenario validation: every refusal names the key at fault.

use super::*;

impl Scenario {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=NODES_MAX).contains(&self.nodes) {
            return Err(format!(
                "nodes = {}: must be between 1 and {NODES_MAX}",
                self.nodes
            ));
        }
        if self.rooms == 0 {
            return Err("rooms = 0: must be at least 1".into());
        }
        if !(1..=DURATION_MS_MAX).contains(&self.duration_ms) {
            return Err(format!(
                "duration_ms = {}: must be between 1 and {DURATION_MS_MAX}",
                self.duration_ms
            ));
        }
        if !(1..=DURATION_MS_MAX).contains(&self.liveness_ms) {
            return Err(format!(
                "liveness_ms = {}: must be between 1 and {DURATION_MS_MAX}",
                self.liveness_ms
            ));
        }
        self.network.validate()?;
        if self.regions.len() > self.nodes {
            return Err(format!(
                "regions: {} entries for {} nodes",
                self.regions.len(),
                self.nodes
            ));
        }
        for (i, &node) in self.older_builds.iter().enumerate() {
            if node >= self.nodes {
                return Err(format!(
                    "older_builds[{i}] = {node}: no such node (nodes = {})",
                    self.nodes
                ));
            }
            if self.late_joiners().contains(&node) {
                return Err(format!(
                    "older_builds[{i}] = {node}: a node that joins later starts as the current build"
                ));
            }
        }
        for (i, &node) in self.unlisted.iter().enumerate() {
            if node >= self.nodes {
                return Err(format!(
                    "unlisted[{i}] = {node}: no such node (nodes = {})",
                    self.nodes
                ));
            }
        }
        if let Some([lo, hi]) = self.compaction_work_ms {
            if lo > hi || hi > 60_000 {
                return Err(format!(
                    "compaction_work_ms = [{lo}, {hi}]: expected min <= max <= 60000"
                ));
            }
        }
        for (i, region) in self.regions.iter().enumerate() {
            chorus_engine::RegionId::parse(region.as_str())
                .map_err(|e| format!("regions[{i}] = {region:?}: {e}"))?;
        }
        let known = self.region_names();
        for (i, b) in self.network.between.iter().enumerate() {
            for region in &b.regions {
                if !known.contains(&region.as_str()) {
                    return Err(format!(
                        "network.between[{i}].regions: no node is in region {region:?} (regions: {known:?})"
                    ));
                }
            }
        }
        if let Some([a, b]) = self.workload.idle_ms {
            if a >= b || b > self.duration_ms {
                return Err(format!(
                    "workload.idle_ms = [{a}, {b}]: expected start < end <= duration_ms"
                ));
            }
        }
        let ops = self.workload.ops_per_sec;
        if !(0.0..=100_000.0).contains(&ops) {
            return Err(format!(
                "workload.ops_per_sec = {ops}: must be between 0 and 100000"
            ));
        }
        if let Some(n) = self.checks.replicas_per_room {
            if n < 2 {
                return Err(format!(
                    "checks.replicas_per_room = {n}: at least 2 (a check compares replicas)"
                ));
            }
        }
        let preload = self.workload.rooms_at_start;
        if preload > ROOMS_AT_START_MAX {
            return Err(format!(
                "workload.rooms_at_start = {preload}: at most {ROOMS_AT_START_MAX}"
            ));
        }
        self.replica
            .validate()
            .map_err(|e| format!("replica: {e}"))?;
        let c = &self.checks;
        for (key, value) in [("interval_ms", c.interval_ms), ("sample_ms", c.sample_ms)] {
            if value == 0 {
                return Err(format!("checks.{key} = 0: must be at least 1"));
            }
        }
        self.validate_events()
    }

    fn validate_events(&self) -> Result<(), String> {
        let mut joined = std::collections::BTreeMap::new();
        for (i, event) in self.events.iter().enumerate() {
            if let Some(node) = event.join {
                if joined.insert(node, event.at_ms).is_some() {
                    return Err(format!("events[{i}].join = {node}: the node joins twice"));
                }
            }
        }
        for (i, event) in self.events.iter().enumerate() {
            self.validate_event(event)
                .map_err(|msg| format!("events[{i}].{msg}"))?;
            if let Some(node) = event.restart {
                if joined.get(&node).is_some_and(|&at| at > event.at_ms) {
                    return Err(format!(
                        "events[{i}].restart = {node}: the node has not joined yet"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks one event; the error names the key (without the `events[i].`).
    fn validate_event(&self, e: &EventSpec) -> Result<(), String> {
        if e.at_ms > self.duration_ms {
            return Err(format!(
                "at_ms = {}: after duration_ms ({})",
                e.at_ms, self.duration_ms
            ));
        }
        let n = self.nodes;
        let node = |key: &str, v: usize| {
            if v < n {
                Ok(())
            } else {
                Err(format!("{key} = {v}: no such node (nodes = {n})"))
            }
        };
        let pair = |key: &str, a: usize, b: usize| {
            node(key, a)?;
            node(key, b)?;
            if a == b {
                return Err(format!("{key} = [{a}, {b}]: a node with itself"));
            }
            Ok(())
        };
        let actions = e.actions();
        if actions.len() != 1 {
            return Err(format!(
                "at_ms = {}: needs exactly one action, found {}",
                e.at_ms,
                if actions.is_empty() {
                    "none".to_string()
                } else {
                    actions.join(", ")
                }
            ));
        }
        if let Some(groups) = &e.partition {
            let mut seen = std::collections::BTreeSet::new();
            for group in groups {
                if group.is_empty() {
                    return Err("partition: a group is empty".into());
                }
                for &v in group {
                    node("partition", v)?;
                    if !seen.insert(v) {
                        return Err(format!("partition: node {v} is in two groups"));
                    }
                }
            }
        }
        if let Some(groups) = &e.partition_regions {
            let known = self.region_names();
            let mut seen = std::collections::BTreeSet::new();
            for group in groups {
                if group.is_empty() {
                    return Err("partition_regions: a group is empty".into());
                }
                for region in group {
                    if !known.contains(&region.as_str()) {
                        return Err(format!(
                            "partition_regions: no node is in region {region:?} (regions: {known:?})"
                        ));
                    }
                    if !seen.insert(region) {
                        return Err(format!(
                            "partition_regions: region {region:?} is in two groups"
                        ));
                    }
                }
            }
            // Regions in no group form one more: one group of every
            // region cuts nothing.
            if groups.len() == 1 && seen.len() == known.len() {
                return Err("partition_regions: one group of every region cuts nothing".into());
            }
        }
        if let Some(OneWay { from, to }) = e.oneway {
            pair("oneway", from, to)?;
        }
        if let Some(d) = e.degrade {
            node("degrade.node", d.node)?;
            for (key, v) in [
                ("load", d.load),
                ("setup_failure_rate", d.setup_failure_rate),
            ] {
                if !(0.0..=1000.0).contains(&v) {
                    return Err(format!("degrade.{key} = {v}: must be between 0 and 1000"));
                }
            }
        }
        if let Some(l) = e.leave {
            node("leave.node", l.node)?;
        }
        for (key, v) in [
            ("drain", e.drain),
            ("undrain", e.undrain),
            ("isolate", e.isolate),
            ("crash", e.crash),
            ("restart", e.restart),
            ("upgrade", e.upgrade),
            ("wipe", e.wipe),
            ("join", e.join),
        ] {
            if let Some(v) = v {
                node(key, v)?;
            }
        }
        if let Some(k) = e.split {
            if !(2..=n).contains(&k) {
                return Err(format!("split = {k}: needs 2 to {n} groups"));
            }
        }
        for (key, p) in [("cut", e.cut), ("connect", e.connect)] {
            if let Some([a, b]) = p {
                pair(key, a, b)?;
            }
        }
        if let Some(f) = e.flap {
            pair("flap", f.a, f.b)?;
            if f.period_ms == 0 {
                return Err("flap.period_ms = 0: must be at least 1".into());
            }
            if f.until_ms < e.at_ms || f.until_ms > self.duration_ms {
                return Err(format!(
                    "flap.until_ms = {}: must be between at_ms and duration_ms",
                    f.until_ms
                ));
            }
        }
        if e.heal == Some(false) || e.reset_streams == Some(false) {
            return Err("heal / reset_streams: only `true` means anything".into());
        }
        if let Some(skew) = e.clock_skew {
            node("clock_skew.node", skew.node)?;
            if skew.offset_ms.unsigned_abs() > DURATION_MS_MAX {
                return Err(format!(
                    "clock_skew.offset_ms = {}: more than a day",
                    skew.offset_ms
                ));
            }
            if skew.drift_ppm.abs() > DRIFT_PPM_MAX {
                return Err(format!(
                    "clock_skew.drift_ppm = {}: must be within ±{DRIFT_PPM_MAX}",
                    skew.drift_ppm
                ));
            }
        }
        if let Some(update) = &e.network {
            update.applied_to(&self.network).validate()?;
        }
        Ok(())
    }
}
