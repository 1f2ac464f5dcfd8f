#![no_main]
//! Any bytes a peer sends: decode must return, never panic, and whatever it
//! accepts must re-encode to a frame that decodes to the same message.

use chorus_engine::replica::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = wire::decode(data) {
        let again = wire::decode(&wire::encode(&envelope)).expect("re-encoded frames decode");
        assert_eq!(again, envelope);
    }
});
