//! A conviction reaches every member at the speed of its links, not of
//! the periodic gossip (`GOSSIP_ON_DOWN_GAP_MS`): members wired to each
//! other with instant delivery, one of them crashed. Enough members that
//! the news takes several hops.

use super::*;

const NODES: usize = 40;
const CRASH_MS: u64 = 5_000;
const STEP_MS: u64 = 5;

fn id(name: &str) -> NodeId {
    NodeId::parse(name).expect("valid")
}

/// Delivers every datagram, and those they cause, until none is left;
/// nothing reaches or leaves `dead` once it has crashed.
fn deliver(members: &mut [Membership], names: &[NodeId], now: u64, dead: Option<usize>) {
    loop {
        let mut moved = false;
        for from in 0..members.len() {
            let out = std::mem::take(&mut members[from].out);
            if Some(from) == dead {
                continue;
            }
            for (to, bytes) in out {
                let Some(to) = names.iter().position(|n| *n == to) else {
                    continue;
                };
                if Some(to) != dead {
                    members[to].on_datagram(now, &names[from], &bytes);
                    moved = true;
                }
            }
        }
        if !moved {
            return;
        }
    }
}

#[test]
fn a_conviction_spreads_at_once() {
    let names: Vec<NodeId> = (0..NODES).map(|i| id(&format!("n{i}"))).collect();
    let mut members: Vec<Membership> = (0..NODES)
        .map(|i| Membership::new(names[i].clone(), 1, DetectorConfig::default(), i as u64 + 7))
        .collect();
    for m in members.iter_mut().skip(1) {
        m.announce(0, &names[0]);
    }
    let victim = NODES - 1;
    let mut down_at: Vec<Option<u64>> = vec![None; NODES];
    let mut now = 0;
    while now < CRASH_MS + 10_000 {
        now += STEP_MS;
        let dead = (now >= CRASH_MS).then_some(victim);
        for (i, m) in members.iter_mut().enumerate() {
            if Some(i) != dead {
                m.tick(now);
            }
        }
        deliver(&mut members, &names, now, dead);
        if now < CRASH_MS {
            continue;
        }
        for i in (0..NODES).filter(|&i| i != victim) {
            if down_at[i].is_none() && members[i].grade(&names[victim]) == Some(Grade::Down) {
                down_at[i] = Some(now);
            }
        }
        if (0..NODES).all(|i| i == victim || down_at[i].is_some()) {
            break;
        }
    }
    let times: Vec<u64> = (0..NODES)
        .filter(|&i| i != victim)
        .map(|i| down_at[i].expect("every live member convicts the crashed one"))
        .collect();
    let first = times.iter().min().copied().unwrap_or_default();
    // Periodic gossip alone (every 200 ms, to 3 members) takes several
    // periods to reach 39 members; gossiped at once, the news goes round
    // within a step of the first conviction (a few members a push
    // epidemic misses learn it later).
    let at_once = times.iter().filter(|&&t| t <= first + STEP_MS).count();
    eprintln!("convicted at {times:?}");
    assert!(
        at_once * 10 >= times.len() * 9,
        "{at_once} of {} convicted with the first: the news waited for periodic gossip",
        times.len()
    );
    let gossips: u64 = members.iter().map(|m| m.down_gossips).sum();
    assert!(gossips >= 1, "no conviction was gossiped at once");
}
