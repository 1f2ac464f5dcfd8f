//! What the cluster does with each replica's events: acknowledged writes
//! for the invariants, purges, failover samples, the trace.

use super::*;

impl Cluster {
    pub(super) fn on_event(&mut self, i: usize, event: Event) {
        self.counters.events += 1;
        match event {
            // The simulator sends no `Input::Apply`.
            Event::Applied { .. } => {}
            Event::WriteDone { id, result } => {
                let Some(pending) = self.pending_writes.remove(&id) else {
                    return;
                };
                match result {
                    Ok(ack) => {
                        self.counters.writes_acked += 1;
                        if let chorus_engine::RoomOp::Leave { session } = &pending.op {
                            self.left_acked
                                .insert((pending.room.clone(), session.clone()));
                        }
                        self.acked.push(AckedWrite {
                            node: i,
                            holder: i,
                            room: pending.room,
                            heads: ack.heads,
                            at_ms: self.now_ms,
                            owner: pending.owner,
                            op: pending.op,
                        });
                    }
                    Err(err) => {
                        self.counters.writes_refused += 1;
                        let debug = format!("{err:?}");
                        let kind = debug.split(['(', ' ', '{']).next().unwrap_or("Other");
                        *self
                            .counters
                            .refused_by_reason
                            .entry(kind.to_string())
                            .or_default() += 1;
                    }
                }
            }
            Event::Purged { room } => {
                self.note(Some(i), || format!("purged {room}"));
                self.purges.push(PurgeRecord {
                    node: i,
                    room,
                    at_ms: self.now_ms,
                });
            }
            Event::SyncStarted { peer, path } => {
                self.note(Some(i), || {
                    format!("sync_started peer={peer} path={path:?}")
                });
            }
            Event::SyncFinished {
                peer,
                path,
                changes,
            } => {
                self.note(Some(i), || {
                    format!("sync_finished peer={peer} path={path:?} changes={changes}")
                });
            }
            Event::Rejected { peer, reason } => {
                self.counters.rejected += 1;
                self.note(Some(i), || format!("rejected peer={peer}: {reason}"));
            }
            Event::Changed { .. } => {}
            Event::Grade(change) => {
                let line = format!(
                    "grade {}: {:?} -> {:?} ({})",
                    change.node, change.from, change.to, change.reason
                );
                self.failover.incident(self.now_ms, i, line.clone());
                self.note(Some(i), || line);
                if let Some(j) = self.index_of(&change.node) {
                    let up = self.nodes[j].is_up();
                    // Cut now, or opened less than a suspicion's length
                    // ago: the suspicion that ends in this conviction began
                    // while the pair was cut.
                    let suspicion_ms = self.nodes[i]
                        .replica
                        .as_ref()
                        .map_or(0, |r| r.config().detector.suspect_to_down_ms);
                    let recently_cut = [(i, j), (j, i)].iter().any(|pair| {
                        self.unblocked_at
                            .get(pair)
                            .is_some_and(|&at| self.now_ms.saturating_sub(at) < suspicion_ms)
                    });
                    let cut_off =
                        self.net.is_blocked(i, j) || self.net.is_blocked(j, i) || recently_cut;
                    match change.to {
                        Grade::Down if up && cut_off => self.failover.partition_convictions += 1,
                        Grade::Down => self.failover.convicted(i, j, self.now_ms, up),
                        Grade::Suspect => {
                            self.failover.suspected(up);
                            if change.reason.starts_with("convicted by SWIM, but") {
                                self.failover.convictions_held += 1;
                            }
                        }
                        _ => {}
                    }
                }
            }
            Event::Rehomed(moved) => {
                let line = format!(
                    "rehomed {}/{} {} -> {} epoch {} ({:?})",
                    moved.room, moved.session, moved.from, moved.to, moved.epoch, moved.kind
                );
                let needs_majority = self.nodes[i]
                    .replica
                    .as_ref()
                    .is_some_and(|r| r.config().failover_needs_majority);
                if moved.kind == chorus_engine::replica::MoveKind::Failover && needs_majority {
                    // The cluster is the members (a late joiner counts once
                    // it joined); the engine's evidence is what it hears,
                    // so a node counts if it is up and its messages reach
                    // this one.
                    let members: Vec<usize> = (0..self.nodes.len())
                        .filter(|&j| self.nodes[j].member)
                        .collect();
                    let reach = members
                        .iter()
                        .filter(|&&j| {
                            j == i || (self.nodes[j].is_up() && !self.net.is_blocked(j, i))
                        })
                        .count();
                    if 2 * reach <= members.len() {
                        self.failover.minority_takeover(
                            self.now_ms,
                            i,
                            reach,
                            members.len(),
                            &line,
                        );
                    }
                }
                self.failover
                    .takeover(self.now_ms, i, moved.from.as_str(), line.clone());
                self.note(Some(i), || line);
            }
            Event::Drain {
                node,
                active,
                rate_per_s,
            } => {
                let line = format!("drain {node} active={active} rate={rate_per_s}/s");
                self.failover.incident(self.now_ms, i, line.clone());
                self.note(Some(i), || line);
            }
            Event::MoveStopped {
                node,
                kind,
                calls_left,
                ..
            } => {
                self.failover.moves_stopped += 1;
                let line =
                    format!("{kind:?} of {node} stopped (rollback); {calls_left} calls stay");
                self.failover.incident(self.now_ms, i, line.clone());
                self.note(Some(i), || line);
            }
        }
    }

    /// Counts orphaned calls while a crash is being handled.
    pub fn sample_failover(&mut self) {
        if !self.failover.watching() {
            return;
        }
        let up: Vec<bool> = self.nodes.iter().map(SimNode::is_up).collect();
        let nodes = &self.nodes;
        self.failover.sample(self.now_ms, &up, |i, node| {
            nodes[i]
                .replica
                .as_ref()
                .map_or(0, |r| r.calls_owned_by(&nodes[node].id).len())
        });
    }

    /// Node `i` reports its application health.
    pub fn report_health(&mut self, i: usize, load: f64, setup_failure_rate: f64) {
        let app = AppHealth::from_ratios(load, setup_failure_rate);
        self.fault(
            "degrade",
            Some(i),
            &format!("load={load} setup_failures={setup_failure_rate}"),
        );
        self.input(i, Input::Health { app });
    }

    /// An operator drains `node` (or cancels) through the first live replica.
    pub fn order_drain(&mut self, node: usize, active: bool) {
        let what = if active { "drain" } else { "undrain" };
        self.fault(what, Some(node), "");
        let Some(via) = (0..self.nodes.len()).find(|&j| self.nodes[j].is_up()) else {
            return;
        };
        let target = self.nodes[node].id.clone();
        self.input(
            via,
            Input::Drain {
                node: target,
                rate_per_s: None,
                active,
            },
        );
    }

    /// Node `node` tells its peers it is leaving (it keeps running until a
    /// crash event ends it).
    pub fn leave(&mut self, node: usize, intent: chorus_engine::Intent) {
        self.fault("leave", Some(node), intent.as_str());
        if self.nodes[node].is_up() {
            self.input(node, Input::Leave { intent });
        }
    }

    /// Nodes replica `i` would give new calls: graded Healthy, not
    /// draining (empty if `i` is down).
    pub fn placeable(&self, i: usize) -> Vec<NodeId> {
        let Some(replica) = self.nodes[i].replica.as_ref() else {
            return Vec::new();
        };
        replica
            .membership()
            .views()
            .filter(|v| v.grade == Grade::Healthy && !v.draining)
            .map(|v| v.node.clone())
            .collect()
    }
}
