//! A media-node-like workload: rooms created and ended, participants
//! joining and leaving, tracks published, calls moved between nodes. Ops go
//! to random live replicas; some are refused (a replica that has not yet
//! seen a room, a stale epoch) exactly as they would be in production.

use std::collections::BTreeMap;

use chorus_engine::{
    JoinRequest, NodeId, Owner, RegionId, Role, RoomConfig, RoomId, RoomOp, SessionId,
    SessionState, TenantId, Track, TrackId, TrackKind, UserId,
};

use crate::cluster::Cluster;
use crate::rng::Rng;

/// What the workload believes about one room (it may be stale).
#[derive(Debug, Default)]
struct RoomModel {
    sessions: BTreeMap<u64, u64>, // session number → believed owner epoch
    ended: bool,
    /// Written to by the workload (created by it, or preloaded and since
    /// written): the rooms the invariants read on every replica. A
    /// preloaded room never written is the same copy everywhere, which
    /// equal digest roots already show.
    touched: bool,
}

#[derive(Debug)]
pub struct Workload {
    /// Rooms the workload keeps alive at once.
    pub rooms_target: usize,
    /// Whether rooms end (`WorkloadConfig::end_rooms`).
    pub end_rooms: bool,
    rooms: BTreeMap<u64, RoomModel>,
    next_room: u64,
    next_session: u64,
    /// How many rooms are `touched`.
    touched: usize,
}

/// The configuration of every room the workload creates.
pub fn room_config() -> RoomConfig {
    RoomConfig {
        max_participants: 50,
        ..RoomConfig::default()
    }
}

fn id<T: std::str::FromStr>(text: String) -> T
where
    T::Err: std::fmt::Debug,
{
    text.parse().expect("generated ids are valid")
}

impl Workload {
    /// `preloaded`: rooms `room-0 ..` exist on every replica before the
    /// run (`preload::rooms`).
    pub fn new(rooms_target: usize, end_rooms: bool, preloaded: usize) -> Self {
        Self {
            rooms_target: rooms_target.max(1),
            end_rooms,
            rooms: (0..preloaded as u64)
                .map(|n| (n, RoomModel::default()))
                .collect(),
            next_room: preloaded as u64,
            next_session: 0,
            touched: 0,
        }
    }

    /// Issues one operation on a random live node.
    pub fn step(&mut self, cluster: &mut Cluster, rng: &mut Rng) {
        let live: Vec<usize> = (0..cluster.len())
            .filter(|&i| cluster.nodes[i].is_up())
            .collect();
        if live.is_empty() {
            return;
        }
        let node = live[rng.index(live.len())];
        // Media nodes place calls only on nodes their replica grades
        // Healthy and not draining (Degraded and draining nodes get none).
        let placeable = cluster.placeable(node);
        let (room, op) = self.next_op(rng, node, cluster.len(), &placeable);
        cluster.write(node, &room, op);
    }

    /// The next operation, issued on `node` of `nodes`.
    fn next_op(
        &mut self,
        rng: &mut Rng,
        node: usize,
        nodes: usize,
        placeable: &[NodeId],
    ) -> (RoomId, RoomOp) {
        let active: Vec<u64> = self
            .rooms
            .iter()
            .filter(|(_, r)| !r.ended)
            .map(|(n, _)| *n)
            .collect();
        if active.len() < self.rooms_target && (active.is_empty() || rng.chance(0.3)) {
            return self.create();
        }
        let room_no = active[rng.index(active.len())];
        let room: RoomId = id(format!("room-{room_no}"));
        let dice = rng.range(0, 99);
        let model = self.rooms.entry(room_no).or_default();
        if !model.touched {
            model.touched = true;
            self.touched += 1;
        }
        let sessions: Vec<u64> = model.sessions.keys().copied().collect();
        let pick = |rng: &mut Rng| sessions.get(rng.index(sessions.len().max(1))).copied();
        let owner = |rng: &mut Rng| -> NodeId {
            if placeable.is_empty() {
                id(format!("node-{}", rng.index(nodes)))
            } else {
                placeable[rng.index(placeable.len())].clone()
            }
        };
        let me: NodeId = id(format!("node-{node}"));
        let admit_here = placeable.is_empty() || placeable.contains(&me);
        // Standing rooms never end: those draws leave instead.
        let dice = if !self.end_rooms && dice <= 1 {
            40
        } else {
            dice
        };
        let op = match (dice, pick(rng)) {
            (0..=1, _) => {
                model.ended = true;
                RoomOp::End
            }
            (2..=39, _) | (_, None) => {
                self.next_session += 1;
                let s = self.next_session;
                model.sessions.insert(s, 1);
                RoomOp::Join {
                    request: JoinRequest {
                        session: id(format!("s-{s}")),
                        user: id::<UserId>(format!("user-{}", s % 50)),
                        role: Role::Speaker,
                        // A media node admits a participant onto itself.
                        owner: if admit_here { me.clone() } else { owner(rng) },
                        region: id::<RegionId>("region-a".into()),
                        resume_token: Some(format!("token-{s}")),
                    },
                }
            }
            (40..=59, Some(s)) => {
                model.sessions.remove(&s);
                RoomOp::Leave {
                    session: id::<SessionId>(format!("s-{s}")),
                }
            }
            (60..=74, Some(s)) => RoomOp::Publish {
                session: id(format!("s-{s}")),
                track_id: id::<TrackId>(format!("t-{}", rng.range(0, 2))),
                track: Track {
                    kind: TrackKind::Video,
                    simulcast_layers: 3,
                },
            },
            (75..=89, Some(s)) => {
                let epoch = model.sessions.get(&s).copied().unwrap_or(1) + 1;
                model.sessions.insert(s, epoch);
                RoomOp::SetOwner {
                    session: id(format!("s-{s}")),
                    owner: Owner {
                        epoch,
                        node: owner(rng),
                    },
                }
            }
            (_, Some(s)) => RoomOp::SetState {
                session: id(format!("s-{s}")),
                state: SessionState::Active,
            },
        };
        (room, op)
    }

    fn create(&mut self) -> (RoomId, RoomOp) {
        let n = self.next_room;
        self.next_room += 1;
        let model = RoomModel {
            touched: true,
            ..RoomModel::default()
        };
        self.rooms.insert(n, model);
        self.touched += 1;
        let room = id(format!("room-{n}"));
        (
            room,
            RoomOp::Create {
                tenant: id::<TenantId>("tenant".into()),
                config: room_config(),
            },
        )
    }

    /// How many rooms the workload has written to.
    pub fn rooms_named(&self) -> usize {
        self.touched
    }

    /// Every room the workload ever wrote to (created, or preloaded and
    /// written since).
    pub fn room_ids(&self) -> Vec<RoomId> {
        self.rooms
            .iter()
            .filter(|(_, r)| r.touched)
            .map(|(n, _)| id(format!("room-{n}")))
            .collect()
    }
}
