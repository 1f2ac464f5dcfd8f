//! The Chorus partition simulator: real replicas, a virtual clock, one
//! seeded RNG, and a network that loses, duplicates, reorders, delays and
//! partitions; scenario files, swarm runs, invariant checks and a timeline.
//! See `docs/simulator.md`.

pub mod clock;
pub mod cluster;
pub mod failover;
pub mod invariants;
pub mod mutation;
pub mod net;
pub mod progress;
pub mod report;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod svg;
pub mod swarm;
pub mod timeline;
pub mod workload;
