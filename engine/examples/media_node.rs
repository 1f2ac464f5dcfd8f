//! A media node (an SFU) embedding the Chorus engine: it creates a room,
//! admits participants, records which node hosts each call, reacts to
//! changes, moves a call to another node and reads everything back — all
//! locally, durably, without waiting on any network.
//!
//! Run: `cargo run --release -p chorus-engine --example media_node [DATA_DIR]`
//! (without DATA_DIR it uses a fresh temporary directory).

use std::time::Instant;

use chorus_engine::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    let me = NodeId::parse("sfu-eu-1")?;
    let started = Instant::now();
    let engine = Engine::open(&dir, EngineConfig::new(me.clone()))?;
    println!(
        "opened store at {} in {:?}",
        dir.display(),
        started.elapsed()
    );

    // React to changes the way a media node would (forwarding tables etc.).
    let mut changes = engine.subscribe();
    let watcher = std::thread::spawn(move || {
        let mut seen = 0;
        while let Ok(event) = changes.blocking_recv() {
            for change in &event.changes {
                println!(
                    "  event: room {} {:?} ({:?})",
                    event.room, change, event.origin
                );
            }
            seen += 1;
            if event.changes.contains(&ChangeKind::RoomEnded) {
                break;
            }
        }
        seen
    });

    let room = RoomId::parse("standup")?;
    let config = RoomConfig {
        max_participants: 8,
        ..RoomConfig::default()
    };
    engine.create_room(&room, &TenantId::parse("acme")?, config)?;

    let t = Instant::now();
    for (session, user, role) in [
        ("s-alice", "alice", Role::Host),
        ("s-bob", "bob", Role::Speaker),
    ] {
        engine.join(
            &room,
            JoinRequest {
                session: SessionId::parse(session)?,
                user: UserId::parse(user)?,
                role,
                owner: me.clone(),
                region: RegionId::parse("eu-west")?,
                resume_token: Some(format!("secret-{session}")),
            },
        )?;
        let s = SessionId::parse(session)?;
        engine.set_state(&room, &s, SessionState::Active)?;
        let cam = Track {
            kind: TrackKind::Video,
            simulcast_layers: 3,
        };
        engine.publish(&room, &s, &TrackId::parse("cam")?, cam)?;
    }
    println!(
        "2 participants admitted with 6 durable writes in {:?}",
        t.elapsed()
    );

    // This node is draining: hand bob's call to a peer at a higher epoch.
    let peer = NodeId::parse("sfu-eu-2")?;
    engine.set_owner(&room, &SessionId::parse("s-bob")?, &peer, 2)?;
    println!("calls hosted here: {:?}", engine.calls_owned_by(&me)?);
    println!(
        "calls hosted by {peer}: {:?}",
        engine.calls_owned_by(&peer)?
    );

    let snapshot = engine.room(&room)?.ok_or("room vanished")?;
    println!(
        "room as JSON:\n{}",
        serde_json::to_string_pretty(&snapshot)?
    );
    let bytes = engine.export_room(&room)?;
    println!("exported {} bytes of standard automerge", bytes.len());

    engine.end_room(&room)?;
    let events = watcher.join().map_err(|_| "watcher thread panicked")?;
    println!(
        "watcher saw {events} events; {} durability flushes ran",
        engine.flush_count()
    );
    Ok(())
}
