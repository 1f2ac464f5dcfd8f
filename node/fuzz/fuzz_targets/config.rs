#![no_main]
//! Any text as the daemon's config file: `Config::parse` then `validate`
//! must return, never panic. A config that validates must also run: the
//! replica it configures starts and its timers fire for a simulated minute
//! (at most `TICKS_MAX` rounds) without a panic (an overflow from an extreme interval, say) and without
//! a timer that stays due (a busy loop in the daemon).

use std::sync::Arc;

use chorus_engine::replica::{Input, Output, Replica};
use chorus_engine::storage::{Kv, MemKv};
use chorus_engine::NodeId;
use chorus_node::config::Config;
use libfuzzer_sys::fuzz_target;

const START_MS: u64 = 1_700_000_000_000;
const RUN_MS: u64 = 60_000;
/// Timer rounds run per input (a 1 ms interval is legal, and slow here).
const TICKS_MAX: usize = 10_000;
/// Ticks in a row at one instant that leave a timer due: a busy loop.
const STALLED_MAX: usize = 100;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text) else {
        return;
    };
    if config.validate().is_err() {
        return;
    }
    let _ = config.key_path();
    let node = NodeId::parse("12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN")
        .expect("a valid node id");
    let replica_config = config.replica_config(node);
    let kv = Arc::new(MemKv::new());
    let mut replica =
        Replica::new(replica_config, kv.clone(), START_MS).expect("a validated config starts");
    let mut now = START_MS;
    let mut ticks = 0;
    let mut stalled = 0;
    loop {
        while let Some(output) = replica.poll_output() {
            if let Output::Persist { batch, durable } = output {
                kv.apply(batch).expect("memory store applies");
                if durable {
                    kv.flush().expect("memory store flushes");
                }
            }
        }
        let Some((at, timer)) = replica.poll_timeout() else {
            break;
        };
        // A 1 ms interval is legal: bound the work, not the config.
        if at > START_MS + RUN_MS || ticks == TICKS_MAX {
            break;
        }
        ticks += 1;
        if at <= now {
            stalled += 1;
            assert!(stalled <= STALLED_MAX, "timer {timer:?} stays due at {at}");
        } else {
            stalled = 0;
        }
        now = now.max(at);
        replica.handle_input(now, Input::Tick);
    }
});
