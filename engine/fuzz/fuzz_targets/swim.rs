#![no_main]
//! The SWIM datagram path, driven as the daemon drives it: every datagram a
//! peer sends reaches the replica as `Input::Message { from, bytes }` (a wire
//! frame whose body is `Swim`, `Health` or `Drain`), interleaved with time
//! passing, peers coming and going, and local health reports. The replica
//! must never panic, its timers must settle after a tick, and what it keeps
//! per node stays bounded (`MEMBERS_MAX`).
//!
//! The input is a script of operations (see `swim_script` in
//! `engine/tests/fuzz_seeds.rs`, which writes the seed corpus in this format):
//!
//! | op byte (low nibble) | operation                                        |
//! |----------------------|--------------------------------------------------|
//! | 0–7                  | SWIM payload: `u16` LE length, bytes; wrapped in |
//! |                      | a valid envelope of our cluster                  |
//! | 8–9                  | raw frame: `u16` LE length, bytes, fed as-is     |
//! |                      | unless it decodes to a non-datagram body         |
//! | 10–12                | time passes: one byte × 20 ms; due timers fire   |
//! | 13 / 14              | the sender's connection comes up / goes down     |
//! | 15                   | local health: two bytes (load, setup failures)   |
//!
//! The high nibble picks the sender: `b` and `c` are configured peers, `d`
//! is a stranger.

use std::sync::Arc;

use chorus_engine::hlc::Timestamp;
use chorus_engine::membership::{AppHealth, MEMBERS_MAX};
use chorus_engine::replica::wire::{self, Body, Envelope};
use chorus_engine::replica::{Input, Output, Replica, ReplicaConfig};
use chorus_engine::storage::{Kv, MemKv};
use chorus_engine::NodeId;
use libfuzzer_sys::fuzz_target;

const CLUSTER: u64 = 7;
const START_MS: u64 = 1_700_000_000_000;
/// A tick at `now` must leave no timer due at or before `now` for long:
/// more rounds than this is a busy loop in the daemon.
const TICKS_PER_STEP_MAX: usize = 10_000;

fn id(name: &str) -> NodeId {
    NodeId::parse(name).expect("a valid node id")
}

struct Driver {
    kv: Arc<MemKv>,
    replica: Replica,
    now_ms: u64,
}

impl Driver {
    fn new() -> Self {
        let kv = Arc::new(MemKv::new());
        let mut config = ReplicaConfig::new(id("a"), CLUSTER);
        config.peers = vec![id("b"), id("c")];
        config.seed = 1;
        let replica = Replica::new(config, kv.clone(), START_MS).expect("a valid replica");
        let mut driver = Self {
            kv,
            replica,
            now_ms: START_MS,
        };
        driver.drain();
        driver
    }

    fn input(&mut self, input: Input) {
        self.replica.handle_input(self.now_ms, input);
        self.drain();
        assert!(
            self.replica.membership().known() <= MEMBERS_MAX,
            "membership grew past MEMBERS_MAX"
        );
    }

    /// As the daemon does: apply every `Persist` in order, drop the rest
    /// (the network is lossy; a datagram may go nowhere).
    fn drain(&mut self) {
        while let Some(output) = self.replica.poll_output() {
            if let Output::Persist { batch, durable } = output {
                self.kv.apply(batch).expect("memory store applies");
                if durable {
                    self.kv.flush().expect("memory store flushes");
                }
            }
        }
    }

    fn advance(&mut self, ms: u64) {
        let until = self.now_ms + ms;
        let mut rounds = 0;
        while let Some((at, timer)) = self.replica.poll_timeout() {
            if at > until {
                break;
            }
            rounds += 1;
            assert!(
                rounds <= TICKS_PER_STEP_MAX,
                "timer {timer:?} stays due at {at} (now {})",
                self.now_ms
            );
            self.now_ms = self.now_ms.max(at);
            self.input(Input::Tick);
        }
        self.now_ms = until;
        self.input(Input::Tick);
    }
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(data.len());
    let (head, tail) = data.split_at(n);
    *data = tail;
    head
}

fn take_len(data: &mut &[u8]) -> usize {
    let raw = take(data, 2);
    let mut le = [0u8; 2];
    le[..raw.len()].copy_from_slice(raw);
    usize::from(u16::from_le_bytes(le))
}

fuzz_target!(|data: &[u8]| {
    let senders = [id("b"), id("c"), id("d")];
    let mut driver = Driver::new();
    let mut data = data;
    while let Some((&op, rest)) = data.split_first() {
        data = rest;
        let from = senders[usize::from(op >> 4) % senders.len()].clone();
        match op & 0x0f {
            0..=7 => {
                let n = take_len(&mut data);
                let payload = take(&mut data, n).to_vec();
                let frame = wire::encode(&Envelope {
                    cluster: CLUSTER,
                    sent_at: Timestamp {
                        wall_ms: driver.now_ms,
                        logical: 0,
                        actor: u64::from(op >> 4),
                    },
                    body: Body::Swim {
                        data: serde_bytes::ByteBuf::from(payload),
                    },
                });
                driver.input(Input::Message { from, bytes: frame });
            }
            8 | 9 => {
                let n = take_len(&mut data);
                let bytes = take(&mut data, n).to_vec();
                // Datagram kinds (and garbage) only: pushes and sync
                // messages apply automerge changes, which is another path
                // (a known automerge panic there is reported in
                // docs/benchmarks.md, "Fuzzing").
                let datagram = match wire::decode(&bytes) {
                    Ok(envelope) => matches!(
                        envelope.body,
                        Body::Swim { .. } | Body::Health { .. } | Body::Drain { .. }
                    ),
                    Err(_) => true,
                };
                if datagram {
                    driver.input(Input::Message { from, bytes });
                }
            }
            10..=12 => {
                let step = take(&mut data, 1).first().copied().unwrap_or(0);
                driver.advance(u64::from(step) * 20);
            }
            13 => driver.input(Input::PeerUp { peer: from }),
            14 => driver.input(Input::PeerDown { peer: from }),
            _ => {
                let raw = take(&mut data, 2);
                let load = u32::from(raw.first().copied().unwrap_or(0)) * 10;
                let setup = u32::from(raw.get(1).copied().unwrap_or(0)) * 4;
                driver.input(Input::Health {
                    app: AppHealth {
                        load_permille: load,
                        setup_failure_permille: setup,
                    },
                });
            }
        }
    }
});
