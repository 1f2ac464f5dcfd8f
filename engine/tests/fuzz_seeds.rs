//! Writes seed inputs for the fuzz targets in `engine/fuzz`: real exported
//! rooms (`import`), real wire frames (`decode`) and real SWIM conversations
//! in the `swim` target's script format. Ignored by default; run it by hand
//! before minimising a corpus:
//!
//! ```sh
//! cargo test -p chorus-engine --test fuzz_seeds -- --ignored
//! ```
//!
//! It writes `seed-*` files under `engine/fuzz/corpus/<target>/` (or under
//! `$CHORUS_FUZZ_SEEDS/<target>/` when that is set).

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chorus_engine::replica::wire::{self, Body};
use chorus_engine::replica::{Input, Output, Replica, ReplicaConfig};
use chorus_engine::storage::{Kv, MemKv};
use chorus_engine::*;
use common::*;

/// The `swim` target's replica: node `a` of cluster 7, peers `b` and `c`,
/// seed 1, started at this time. The conversation here uses the same.
const CLUSTER: u64 = 7;
const START_MS: u64 = 1_700_000_000_000;
/// The `swim` target's `-max_len`.
const SWIM_SCRIPT_MAX: usize = 8192;

fn out_dir(target: &str) -> PathBuf {
    let root = std::env::var_os("CHORUS_FUZZ_SEEDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"));
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    dir
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

#[test]
#[ignore = "writes the fuzz seed corpora; run by hand"]
fn write_fuzz_seeds() {
    import_seeds();
    conversation_seeds();
}

/// Rooms as `export_room` writes them, from a bare room to a merged,
/// ended one.
fn import_seeds() {
    let dir = out_dir("import");
    let a = replica("a", 1_000);
    let b = replica("b", 2_000);

    let bare = room("bare");
    a.engine
        .create_room(&bare, &tenant("acme"), RoomConfig::default())
        .expect("create");
    write(
        &dir,
        "seed-bare",
        &a.engine.export_room(&bare).expect("export"),
    );

    let call = room("call-1");
    let mut config = RoomConfig {
        max_participants: 8,
        preferred_region: Some(region("eu-west")),
        recording: true,
        ..RoomConfig::default()
    };
    config.attributes.insert("topic".into(), "standup".into());
    a.engine
        .create_room(&call, &tenant("acme"), config)
        .expect("create");
    a.engine
        .set_permission(
            &call,
            &user("alice"),
            Permission {
                role: Role::Speaker,
                publish: true,
                subscribe: true,
            },
        )
        .expect("permission");
    a.engine
        .join(&call, join_request("s1", "alice", "sfu-1"))
        .expect("join");
    let video = Track {
        kind: TrackKind::Video,
        simulcast_layers: 3,
    };
    a.engine
        .publish(&call, &session("s1"), &track("cam"), video)
        .expect("publish");
    a.engine
        .set_state(&call, &session("s1"), SessionState::Active)
        .expect("state");
    write(
        &dir,
        "seed-call",
        &a.engine.export_room(&call).expect("export"),
    );

    // Concurrent writes on two replicas, merged both ways.
    sync_both(&a.engine, &b.engine, &call);
    b.engine
        .join(&call, join_request("s2", "bob", "sfu-2"))
        .expect("join");
    a.engine
        .join(&call, join_request("s3", "carol", "sfu-1"))
        .expect("join");
    a.engine.leave(&call, &session("s1")).expect("leave");
    b.engine
        .set_owner(&call, &session("s1"), &node("sfu-2"), 2)
        .expect("owner");
    sync_both(&a.engine, &b.engine, &call);
    write(
        &dir,
        "seed-merged",
        &a.engine.export_room(&call).expect("export"),
    );
    a.engine.end_room(&call).expect("end");
    write(
        &dir,
        "seed-ended",
        &a.engine.export_room(&call).expect("export"),
    );
}

/// Frames in flight: (from, to, bytes).
type Queue = VecDeque<(usize, usize, Vec<u8>)>;

/// One replica of the three-node conversation.
struct Member {
    kv: Arc<MemKv>,
    replica: Replica,
}

/// Runs `a`, `b` and `c` with failure detection on, every output carried
/// at once, for a few simulated seconds; `c` then goes silent. Records what
/// `a` receives as `swim` scripts and every frame as `decode` seeds.
fn conversation_seeds() {
    let ids = [node("a"), node("b"), node("c")];
    let mut members: Vec<Member> = ids
        .iter()
        .enumerate()
        .map(|(i, me)| {
            let kv = Arc::new(MemKv::new());
            let mut config = ReplicaConfig::new(me.clone(), CLUSTER);
            config.peers = ids.iter().filter(|p| *p != me).cloned().collect();
            config.seed = i as u64 + 1;
            let replica = Replica::new(config, kv.clone(), START_MS).expect("replica");
            Member { kv, replica }
        })
        .collect();
    let mut now = START_MS;
    let mut script: Vec<u8> = Vec::new();
    let mut frames: BTreeMap<&'static str, Vec<Vec<u8>>> = BTreeMap::new();
    let mut queue = Queue::new();
    let mut silent_c = false;
    let step = |members: &mut [Member], i, input, now, queue: &mut Queue| {
        carry(members, &ids, i, input, now, queue)
    };

    // Connections come up; `a` hears of them as the target's op 13.
    for i in 0..3 {
        for (j, peer) in ids.iter().enumerate() {
            if i != j {
                let peer = peer.clone();
                step(&mut members, i, Input::PeerUp { peer }, now, &mut queue);
            }
        }
    }
    script.extend([0x0d, 0x1d]);
    // A room written on `b`, so pushes and anti-entropy carry changes.
    let call = room("call-1");
    step(
        &mut members,
        1,
        Input::LocalWrite {
            id: 1,
            room: call.clone(),
            op: RoomOp::Create {
                tenant: tenant("acme"),
                config: RoomConfig::default(),
            },
        },
        now,
        &mut queue,
    );

    let mut scripts = Vec::new();
    for tick in 0..200u64 {
        while let Some((from, to, bytes)) = queue.pop_front() {
            if silent_c && (from == 2 || to == 2) {
                continue;
            }
            if let Ok(envelope) = wire::decode(&bytes) {
                let kind = envelope.body.kind();
                let seen = frames.entry(kind).or_default();
                if seen.len() < 4 {
                    seen.push(bytes.clone());
                }
                if to == 0 {
                    // `b` is sender 0 of the target, `c` sender 1.
                    let sender = (from as u8 - 1) << 4;
                    match envelope.body {
                        Body::Swim { data } => {
                            script.push(sender);
                            script.extend((data.len() as u16).to_le_bytes());
                            script.extend(data.iter());
                        }
                        _ => {
                            script.push(sender | 0x08);
                            script.extend((bytes.len() as u16).to_le_bytes());
                            script.extend(&bytes);
                        }
                    }
                }
            }
            let from_id = ids[from].clone();
            step(
                &mut members,
                to,
                Input::Message {
                    from: from_id,
                    bytes,
                },
                now,
                &mut queue,
            );
        }
        if script.len() > SWIM_SCRIPT_MAX / 2 {
            scripts.push(std::mem::take(&mut script));
        }
        if tick == 60 {
            silent_c = true;
        }
        if tick % 20 == 5 {
            step(
                &mut members,
                1,
                Input::LocalWrite {
                    id: 2 + tick,
                    room: call.clone(),
                    op: RoomOp::Join {
                        request: join_request(&format!("s{tick}"), "alice", "sfu-1"),
                    },
                },
                now,
                &mut queue,
            );
        }
        // 50 ms pass: the target's op 10 with 50 / 20 ≈ 2 (+ the rest).
        now += 50;
        script.extend([0x0a, 2]);
        for i in 0..3 {
            if silent_c && i == 2 {
                continue;
            }
            step(&mut members, i, Input::Tick, now, &mut queue);
        }
    }
    if !script.is_empty() {
        scripts.push(script);
    }

    let dir = out_dir("swim");
    for (n, script) in scripts.iter().enumerate() {
        let cut = script.len().min(SWIM_SCRIPT_MAX);
        write(&dir, &format!("seed-conversation-{n:02}"), &script[..cut]);
    }
    let dir = out_dir("decode");
    for (kind, seen) in &frames {
        for (n, frame) in seen.iter().enumerate() {
            write(&dir, &format!("seed-{kind}-{n}"), frame);
        }
    }
}

/// Feeds `input` to member `i` and carries its outputs: writes applied,
/// frames queued for their receivers.
fn carry(
    members: &mut [Member],
    ids: &[NodeId],
    i: usize,
    input: Input,
    now: u64,
    queue: &mut Queue,
) {
    members[i].replica.handle_input(now, input);
    while let Some(output) = members[i].replica.poll_output() {
        match output {
            Output::Persist { batch, durable } => {
                members[i].kv.apply(batch).expect("apply");
                if durable {
                    members[i].kv.flush().expect("flush");
                }
            }
            Output::Send { to, bytes } | Output::Datagram { to, bytes } => {
                let j = ids.iter().position(|n| n == &to).expect("known peer");
                queue.push_back((i, j, bytes));
            }
            Output::Broadcast { bytes } => {
                for j in (0..ids.len()).filter(|j| *j != i) {
                    queue.push_back((i, j, bytes.clone()));
                }
            }
            Output::Event(_) => {}
            Output::Work(_) => unreachable!("work_off_task is off"),
        }
    }
}
