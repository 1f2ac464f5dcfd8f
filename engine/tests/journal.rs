//! The incident journal: peers lost and regained and catch-ups are
//! recorded in order, survive a restart, and the journal stays bounded.

mod common;

use chorus_engine::replica::{IncidentKind, ReplicaConfig};
use chorus_engine::RoomOp;
use common::pair::Net;
use common::*;

fn small_journal(config: &mut ReplicaConfig) {
    config.journal_entries_max = 6;
}

#[test]
fn a_partition_and_its_catch_up_are_journaled_and_the_journal_is_bounded() {
    let mut net = Net::new(2, small_journal);
    net.connect_all();
    net.disconnect(0, 1);
    net.write(
        1,
        &room("j-1"),
        RoomOp::Create {
            tenant: tenant("acme"),
            config: chorus_engine::RoomConfig::default(),
        },
    );
    net.reconnect(0, 1);
    let kinds: Vec<IncidentKind> = net.members[0]
        .replica
        .incidents(None, 100)
        .expect("read")
        .into_iter()
        .map(|i| i.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            IncidentKind::PeerUp,
            IncidentKind::PeerDown,
            IncidentKind::PeerUp,
            IncidentKind::CatchUp
        ],
        "in order: connected, cut off, back, caught up"
    );
    let catch_up = net.members[0].replica.incidents(None, 100).expect("read")[3].clone();
    assert!(catch_up.detail.contains("r1"), "{}", catch_up.detail);

    for _ in 0..10 {
        net.disconnect(0, 1);
        net.reconnect(0, 1);
    }
    let all = net.members[0].replica.incidents(None, 100).expect("read");
    assert_eq!(all.len(), 6, "bounded to journal_entries_max");
    assert!(all.windows(2).all(|w| w[0].at < w[1].at), "oldest first");
    let after = net.members[0]
        .replica
        .incidents(Some(&all[3].at), 100)
        .expect("read");
    assert_eq!(after, all[4..].to_vec());
}
