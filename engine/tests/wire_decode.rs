//! The wire decoder never panics: arbitrary bytes and mutated valid frames
//! either decode or return an error. (`engine/fuzz` runs the same target
//! under libFuzzer for longer.)

use chorus_engine::hlc::Timestamp;
use chorus_engine::replica::wire::{self, Body, Envelope, RoomChanges, WireHead};
use chorus_engine::RoomId;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "../proptest-regressions/engine-wire-decode.txt",
        ))),
        ..ProptestConfig::default()
    }
}

fn sample_frames() -> Vec<Vec<u8>> {
    let room = RoomId::parse("room-1").expect("valid");
    let sent_at = Timestamp {
        wall_ms: 1_700_000_000_000,
        logical: 2,
        actor: 77,
    };
    let bodies = vec![
        Body::Push {
            rooms: vec![RoomChanges {
                room: room.clone(),
                changes: vec![vec![1u8; 40].into()],
            }],
        },
        Body::DigestReq {
            round: 3,
            root: [7; 16],
            cursor: Some(sent_at),
        },
        Body::ChangesReq {
            round: 9,
            rooms: vec![chorus_engine::replica::wire::RoomHeads {
                room: room.clone(),
                heads: vec![WireHead([5; 32])],
                ancestry: vec![[6; 8]],
            }],
        },
        Body::LeafResp {
            round: 1,
            rooms: vec![(room, [1; 8])],
        },
        Body::TreeReq {
            round: 2,
            level: 1,
            nodes: vec![1, 2, 3],
        },
        Body::LeafHeadsResp {
            round: 4,
            rooms: vec![wire::LeafRoom {
                room: RoomId::parse("room-2").expect("valid"),
                digest: [2; 8],
                heads: vec![WireHead([3; 32]), WireHead([4; 32])],
            }],
        },
    ];
    bodies
        .into_iter()
        .map(|body| {
            wire::encode(&Envelope {
                cluster: 9,
                sent_at,
                body,
            })
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = wire::decode(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(
        which in 0usize..6,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut frame = sample_frames()[which].clone();
        for (at, byte) in flips {
            let i = at.index(frame.len());
            frame[i] = byte;
        }
        let _ = wire::decode(&frame);
        let keep = cut.index(frame.len() + 1);
        let _ = wire::decode(&frame[..keep]);
    }

    #[test]
    fn every_accepted_frame_reencodes_identically(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(envelope) = wire::decode(&bytes) {
            let again = wire::decode(&wire::encode(&envelope));
            prop_assert_eq!(again, Ok(envelope));
        }
    }
}

#[test]
fn sample_frames_round_trip() {
    for frame in sample_frames() {
        let envelope = wire::decode(&frame).expect("valid frame");
        assert_eq!(wire::encode(&envelope), frame);
    }
}

#[test]
fn a_leaf_answer_with_too_many_heads_for_a_room_is_refused() {
    let body = Body::LeafHeadsResp {
        round: 1,
        rooms: vec![wire::LeafRoom {
            room: RoomId::parse("room-1").expect("valid"),
            digest: [0; 8],
            heads: vec![WireHead([1; 32]); wire::LEAF_HEADS_MAX + 1],
        }],
    };
    let frame = wire::encode(&Envelope {
        cluster: 9,
        sent_at: Timestamp::default(),
        body,
    });
    assert!(matches!(
        wire::decode(&frame),
        Err(wire::DecodeError::TooMany { what: "heads", .. })
    ));
}
