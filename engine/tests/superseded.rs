//! A compacted room ignores a peer's changes of the history it replaced
//! (their writer carries them when it compacts), and keeps ignoring their
//! dependants, however they arrive: in a later batch, or before them.
//! Before, a dependant in a later batch waited in `pending` for a change
//! that never comes, and every push into the room asked for it again.

mod common;

use chorus_engine::room::Intake;
use chorus_engine::RoomOp;
use common::docs::{write_at, Pair};
use common::join_request;

#[test]
fn the_dependants_of_an_ignored_change_are_ignored_whenever_they_come() {
    let mut pair = Pair::new();
    for i in 0..4 {
        pair.write(
            i % 2,
            RoomOp::Join {
                request: join_request(&format!("s{i}"), &format!("u{i}"), "sfu-1"),
            },
        );
    }
    pair.sync(0, 1);
    pair.sync(1, 0);
    // Replica 1 as it was before it compacted: it goes on writing on the
    // history both replicas then replaced.
    let mut behind = pair.docs[1].fork();
    let before = behind.heads();
    pair.compact();
    for i in 0..3 {
        let op = RoomOp::Join {
            request: join_request(&format!("late{i}"), &format!("v{i}"), "sfu-2"),
        };
        write_at(&pair.room, &mut behind, 1, pair.now_ms() + i, &op).expect("writes");
    }
    let old = behind.changes_since(&before);
    assert_eq!(old.len(), 3);
    let doc = &mut pair.docs[0];

    // The last first: it waits for the second, which has not come.
    let third = doc
        .apply_remote(vec![old[2].clone()], Intake::EachChange)
        .expect("applies");
    assert_eq!((third.pending, third.superseded), (1, 0));
    // The first depends on the replaced history: ignored.
    let first = doc
        .apply_remote(vec![old[0].clone()], Intake::EachChange)
        .expect("applies");
    assert_eq!((first.pending, first.superseded), (1, 1));
    // The second depends on the first: ignored too, in its own batch, and
    // so is the third, waiting here.
    let second = doc
        .apply_remote(vec![old[1].clone()], Intake::EachChange)
        .expect("applies");
    assert_eq!((second.pending, second.superseded), (0, 2));
    assert!(second.applied.is_empty());
    assert_eq!(doc.pending_len(), 0);
    // Sent again, each is known for what it is.
    let again = doc
        .apply_remote(old[1..].to_vec(), Intake::EachChange)
        .expect("applies");
    assert_eq!((again.pending, again.superseded), (0, 2));
}
