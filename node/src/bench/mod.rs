//! `chorus bench`: benchmarks against real daemons on loopback, all in
//! this process (libp2p, sled, the engine's driver, the HTTP API).

mod churn;
mod propagation;

pub use churn::churn;
pub use propagation::propagation;
