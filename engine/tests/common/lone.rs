//! One replica driven by hand over an in-memory store, as a driver would:
//! every persist applied (and flushed when durable) before the next input.

use chorus_engine::replica::{Event, Input, Output, Replica};
use chorus_engine::storage::{Kv, MemKv};
use chorus_engine::*;

/// Carries out `replica`'s outputs; the last write's result, if any.
pub fn drain(replica: &mut Replica, kv: &MemKv) -> Option<Result<WriteAck>> {
    let mut done = None;
    while let Some(output) = replica.poll_output() {
        match output {
            Output::Persist { batch, durable } => {
                kv.apply(batch).expect("apply");
                if durable {
                    kv.flush().expect("flush");
                }
            }
            Output::Event(Event::WriteDone { result, .. }) => done = Some(result),
            _ => {}
        }
    }
    done
}

/// Feeds `input` at time 0 and carries out what follows.
pub fn run(replica: &mut Replica, kv: &MemKv, input: Input) -> Option<Result<WriteAck>> {
    replica.handle_input(0, input);
    drain(replica, kv)
}
