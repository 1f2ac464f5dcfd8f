//! The Chorus partition simulator: real replicas, a virtual clock, one
//! seeded RNG, and a network that loses, duplicates, reorders, delays and
//! partitions. See `docs/simulator.md`.

pub mod cluster;
pub mod net;
pub mod rng;
pub mod workload;
