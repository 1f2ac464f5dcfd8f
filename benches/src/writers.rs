//! Durable writers the benches share: threads that each wait for every
//! write, and one writer that keeps writes in flight
//! (`Engine::begin_write`). Each write is a join into a room of the
//! writer's own, `JOINS_PER_ROOM` joins a room, so the cost measured is
//! that of a write, not of an ever-growing document. Rooms are created
//! first, untimed. Every write's latency is kept, from the call that
//! starts it to its acknowledgement (the write is durable then).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use chorus_engine::{
    Engine, JoinRequest, NodeId, RegionId, Role, RoomConfig, RoomId, RoomOp, SessionId, TenantId,
    UserId,
};

/// Joins per room.
pub const JOINS_PER_ROOM: u64 = 8;

/// Writes a pipelining writer keeps in flight.
pub const PIPELINE_DEPTH: usize = 32;

pub fn room_id(text: &str) -> RoomId {
    RoomId::parse(text).expect("valid room id")
}

pub fn join_request(session: &str) -> JoinRequest {
    JoinRequest {
        session: SessionId::parse(session).expect("valid session id"),
        user: UserId::parse(format!("user-{session}")).expect("valid user id"),
        role: Role::Speaker,
        owner: NodeId::parse("sfu-1").expect("valid node id"),
        region: RegionId::parse("eu-west").expect("valid region id"),
        resume_token: Some(format!("token-{session}")),
    }
}

pub fn tenant() -> TenantId {
    TenantId::parse("bench").expect("valid tenant id")
}

/// Distinguishes the rooms of every timed run within one store.
static RUN: AtomicU64 = AtomicU64::new(0);

/// A timed run: from the first write to the last acknowledgement, and
/// each write's latency.
#[derive(Debug, Default)]
pub struct Timed {
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Timed {
    pub fn per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `q` (0.99: p99).
    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len().saturating_sub(1)) as f64 * q).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    }
}

/// Joins `thread` of `threads` makes out of `total`.
pub fn writes_of(thread: u64, threads: u64, total: u64) -> u64 {
    total / threads + u64::from(thread < total % threads)
}

/// Rooms [`durable_writes`] creates for `total` joins over `threads`.
pub fn rooms_created(threads: usize, total: u64) -> u64 {
    let threads = threads as u64;
    (0..threads)
        .map(|t| writes_of(t, threads, total).div_ceil(JOINS_PER_ROOM))
        .sum()
}

fn create_rooms(engine: &Engine, prefix: &str, writes: u64) -> Vec<RoomId> {
    let rooms: Vec<RoomId> = (0..writes.div_ceil(JOINS_PER_ROOM))
        .map(|k| room_id(&format!("{prefix}-r{k}")))
        .collect();
    for id in &rooms {
        engine
            .create_room(id, &tenant(), RoomConfig::default())
            .expect("create room");
    }
    rooms
}

/// `total` durable joins split over `threads` writers, each waiting for
/// every join. The clock runs from a barrier to the last join.
pub fn durable_writes(engine: &Engine, threads: usize, total: u64) -> Timed {
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let barrier = Barrier::new(threads + 1);
    let threads_u64 = threads as u64;
    let latencies = Mutex::new(Vec::with_capacity(total as usize));
    let start = std::thread::scope(|scope| {
        for t in 0..threads_u64 {
            let (barrier, latencies) = (&barrier, &latencies);
            scope.spawn(move || {
                let writes = writes_of(t, threads_u64, total);
                let rooms = create_rooms(engine, &format!("run{run}-t{t}"), writes);
                let mut mine = Vec::with_capacity(writes as usize);
                barrier.wait();
                for i in 0..writes {
                    let id = &rooms[(i / JOINS_PER_ROOM) as usize];
                    let began = Instant::now();
                    engine
                        .join(id, join_request(&format!("s{i}")))
                        .expect("durable join");
                    mine.push(began.elapsed());
                }
                latencies.lock().expect("not poisoned").extend(mine);
            });
        }
        barrier.wait();
        // The scope ends only after every writer has finished.
        Instant::now()
    });
    Timed {
        elapsed: start.elapsed(),
        latencies: latencies.into_inner().expect("not poisoned"),
    }
}

/// `total` durable joins from one writer that keeps `depth` in flight: it
/// begins a join, and once `depth` are unanswered waits for the oldest.
/// The clock stops when the last join is durable. A write's latency ends
/// when the writer sees its acknowledgement, as a pipelining client does.
pub fn pipelined_writes(engine: &Engine, total: u64, depth: usize) -> Timed {
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let rooms = create_rooms(engine, &format!("pipe{run}"), total);
    let mut latencies = Vec::with_capacity(total as usize);
    let start = Instant::now();
    let mut in_flight = VecDeque::with_capacity(depth);
    for i in 0..total {
        let id = &rooms[(i / JOINS_PER_ROOM) as usize];
        let op = RoomOp::Join {
            request: join_request(&format!("s{i}")),
        };
        in_flight.push_back((Instant::now(), engine.begin_write(id, op).expect("begun")));
        if in_flight.len() == depth {
            if let Some((began, oldest)) = in_flight.pop_front() {
                oldest.wait().expect("durable join");
                latencies.push(began.elapsed());
            }
        }
    }
    for (began, pending) in in_flight {
        pending.wait().expect("durable join");
        latencies.push(began.elapsed());
    }
    Timed {
        elapsed: start.elapsed(),
        latencies,
    }
}
