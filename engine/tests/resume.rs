//! Client resume on any replica: the token is checked against the hash in
//! the replicated room; the answer is the call's current owner and state.

mod common;

use chorus_engine::*;
use common::*;

#[test]
fn a_client_resumes_with_its_token_and_learns_the_current_owner() {
    let r = replica("a", 1_000);
    let id = room("room-1");
    r.engine
        .create_room(&id, &tenant("acme"), RoomConfig::default())
        .expect("create");
    r.engine
        .join(&id, join_request("s1", "alice", "sfu-1"))
        .expect("join");
    let resumed = r
        .engine
        .resume(&id, &session("s1"), "token-s1")
        .expect("the right token resumes");
    assert_eq!(resumed.owner.node, node("sfu-1"));

    // The call moved (a failover); resume names the new owner.
    r.engine
        .set_owner(&id, &session("s1"), &node("sfu-2"), 2)
        .expect("move");
    let resumed = r
        .engine
        .resume(&id, &session("s1"), "token-s1")
        .expect("resume");
    assert_eq!(
        resumed.owner,
        Owner {
            epoch: 2,
            node: node("sfu-2")
        }
    );

    let wrong = r
        .engine
        .resume(&id, &session("s1"), "token-s2")
        .unwrap_err();
    assert!(matches!(wrong, Error::ResumeRefused { .. }), "{wrong}");
    assert!(wrong.to_string().contains("wrong resume token"), "{wrong}");
    let unknown = r
        .engine
        .resume(&id, &session("s9"), "token-s9")
        .unwrap_err();
    assert!(matches!(unknown, Error::UnknownSession { .. }), "{unknown}");
    let no_room = r
        .engine
        .resume(&room("nowhere"), &session("s1"), "x")
        .unwrap_err();
    assert!(matches!(no_room, Error::UnknownRoom(_)), "{no_room}");

    let mut tokenless = join_request("s2", "bob", "sfu-1");
    tokenless.resume_token = None;
    r.engine.join(&id, tokenless).expect("join without a token");
    let none = r
        .engine
        .resume(&id, &session("s2"), "anything")
        .unwrap_err();
    assert!(
        none.to_string().contains("without a resume token"),
        "{none}"
    );

    r.engine.leave(&id, &session("s1")).expect("leave");
    let left = r
        .engine
        .resume(&id, &session("s1"), "token-s1")
        .unwrap_err();
    assert!(left.to_string().contains("has left"), "{left}");

    r.engine.end_room(&id).expect("end");
    let ended = r
        .engine
        .resume(&id, &session("s2"), "anything")
        .unwrap_err();
    assert!(matches!(ended, Error::RoomEnded(_)), "{ended}");
}
