//! Every limit of the daemon's API, CLI client and config, in one place,
//! with the reason for its value (the engine's are in
//! `chorus_engine::limits`).

use std::time::Duration;

/// Largest HTTP request body the API reads (an automerge document upload is
/// the big case); larger bodies get 413.
pub const BODY_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;

/// How long a client may take to send a request's headers before its
/// connection is closed (on a new connection, and between requests on a
/// kept-alive one), so that slow clients (slowloris) cannot hold
/// connections and tasks open. Headers are a few hundred bytes: ten seconds
/// is generous on any real link, and a third of hyper's default.
pub const HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// The shortest `api.header_read_timeout_ms` accepted: below it, ordinary
/// clients on a congested link would be cut off.
pub const HEADER_READ_TIMEOUT_MS_MIN: u64 = 100;

/// How long a handler waits for the engine before answering 503.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Engine calls the API runs at once; more wait for a slot (up to
/// `COMMAND_TIMEOUT`, then 503). The engine's own command queue holds 1024.
pub const CALLS_IN_FLIGHT_MAX: usize = 1024;

/// Journal entries returned by one `GET /v1/incidents` at most.
pub const INCIDENTS_PER_PAGE_MAX: usize = 1000;

/// Change-log entries read per daemon command while replaying: small enough
/// that one page holds the daemon task (which also serves writes) for well
/// under a millisecond, large enough that replaying the default hour of log
/// takes few round trips.
pub const REPLAY_PAGE_ENTRIES: usize = 256;

/// One request of the CLI's client may take this long before it gives up.
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// `chorus bench daemons`: at most this many processes, joins offered
/// per second, and joins in all (each is remembered for the checks).
pub const BENCH_DAEMONS_MAX: usize = 200;
pub const BENCH_RATE_MAX: f64 = 10_000.0;
pub const BENCH_WRITES_MAX: usize = 1_000_000;

const _: () = assert!(HEADER_READ_TIMEOUT_MS_MIN <= HEADER_READ_TIMEOUT_MS_DEFAULT);
const _: () = assert!(CALLS_IN_FLIGHT_MAX >= 1 && INCIDENTS_PER_PAGE_MAX >= 1);
const _: () = assert!(CALLS_IN_FLIGHT_MAX <= chorus_engine::limits::COMMAND_QUEUE_MAX);
