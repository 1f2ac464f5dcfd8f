#![no_main]
//! Any bytes offered as an exported room (`POST /v1/rooms/{id}/export`, or
//! `Engine::import_room`): import must return, never panic. Whatever it
//! accepts is a readable room whose export imports again into a fresh
//! replica as the same room with the same heads and the same snapshot, and
//! a second import of the same bytes changes nothing.

use chorus_engine::{Engine, EngineConfig, NodeId};
use libfuzzer_sys::fuzz_target;

fn engine(name: &str) -> Engine {
    let node = NodeId::parse(name).expect("a valid node id");
    Engine::in_memory(EngineConfig::new(node)).expect("an in-memory engine")
}

fuzz_target!(|data: &[u8]| {
    let first = engine("a");
    let Ok(room) = first.import_room(data) else {
        return;
    };
    let snapshot = first
        .room(&room)
        .expect("an imported room reads")
        .expect("an imported room exists");
    assert_eq!(snapshot.id, room);
    let heads = first.heads(&room).expect("heads");
    assert!(!heads.is_empty(), "an imported room has heads");

    assert_eq!(first.import_room(data).expect("re-import"), room);
    assert_eq!(first.heads(&room).expect("heads"), heads);

    let exported = first.export_room(&room).expect("an imported room exports");
    let second = engine("b");
    assert_eq!(
        second.import_room(&exported).expect("an export imports"),
        room
    );
    assert_eq!(second.heads(&room).expect("heads"), heads);
    assert_eq!(
        second.room(&room).expect("reads").expect("exists"),
        snapshot
    );
});
