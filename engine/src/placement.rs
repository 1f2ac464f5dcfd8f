//! Leaderless placement: every replica that sees a call orphaned computes
//! the same new owner, by weighted rendezvous hashing over the healthy
//! media nodes — in the call's region when one is healthy there, weighted by
//! declared capacity. Equal inputs give equal answers on every replica, so
//! takeovers agree without a coordinator; if they ever differ (replicas with
//! different views of health), the ownership rule reconciles them.

use crate::ids::{NodeId, RegionId, RoomId, SessionId};

/// A media node that may receive calls.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub node: NodeId,
    pub region: RegionId,
    /// Declared capacity (calls); the share of calls a node wins is
    /// proportional to it. Zero or less never wins.
    pub capacity: f64,
}

/// The new owner of call `(room, session)` among `candidates` (which the
/// caller has already limited to healthy nodes): same region first.
pub fn rehome<'a>(
    room: &RoomId,
    session: &SessionId,
    region: &RegionId,
    candidates: &'a [Candidate],
) -> Option<&'a Candidate> {
    let local = candidates
        .iter()
        .filter(|c| &c.region == region && c.capacity > 0.0);
    best(room, session, local).or_else(|| {
        let anywhere = candidates.iter().filter(|c| c.capacity > 0.0);
        best(room, session, anywhere)
    })
}

fn best<'a>(
    room: &RoomId,
    session: &SessionId,
    candidates: impl Iterator<Item = &'a Candidate>,
) -> Option<&'a Candidate> {
    candidates
        .map(|c| (score(room, session, c), c))
        // Ties (identical scores) break by node id: still the same answer
        // on every replica.
        .max_by(|(a, ca), (b, cb)| a.total_cmp(b).then_with(|| ca.node.cmp(&cb.node)))
        .map(|(_, c)| c)
}

/// Weighted rendezvous score: `-capacity / ln(u)` with `u` in (0, 1) drawn
/// from a hash of (call, node). The highest score wins; a node's chance is
/// proportional to its capacity (Schindelhauer & Schomaker).
fn score(room: &RoomId, session: &SessionId, c: &Candidate) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(room.as_str().as_bytes());
    hasher.update(&[0]);
    hasher.update(session.as_str().as_bytes());
    hasher.update(&[0]);
    hasher.update(c.node.as_str().as_bytes());
    let mut top = [0u8; 8];
    top.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    // 53 bits into (0, 1): never 0 or 1, so ln(u) is finite and negative.
    let u = ((u64::from_le_bytes(top) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -c.capacity / u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, region: &str, capacity: f64) -> Candidate {
        Candidate {
            node: NodeId::parse(name).expect("valid"),
            region: RegionId::parse(region).expect("valid"),
            capacity,
        }
    }

    fn call(i: usize) -> (RoomId, SessionId) {
        (
            RoomId::parse(format!("room-{}", i / 4)).expect("valid"),
            SessionId::parse(format!("s-{i}")).expect("valid"),
        )
    }

    #[test]
    fn every_replica_computes_the_same_owner_whatever_the_order() {
        let nodes = vec![
            node("a", "eu", 10.0),
            node("b", "eu", 10.0),
            node("c", "eu", 10.0),
        ];
        let mut reversed = nodes.clone();
        reversed.reverse();
        let eu = RegionId::parse("eu").expect("valid");
        for i in 0..500 {
            let (room, session) = call(i);
            let x = rehome(&room, &session, &eu, &nodes).map(|c| c.node.clone());
            let y = rehome(&room, &session, &eu, &reversed).map(|c| c.node.clone());
            assert_eq!(x, y);
        }
    }

    #[test]
    fn shares_follow_capacity_and_the_region_comes_first() {
        let nodes = vec![
            node("small", "eu", 10.0),
            node("big", "eu", 30.0),
            node("far", "us", 1000.0),
            node("off", "eu", 0.0),
        ];
        let eu = RegionId::parse("eu").expect("valid");
        let mut won = std::collections::BTreeMap::<String, usize>::new();
        for i in 0..4000 {
            let (room, session) = call(i);
            let owner = rehome(&room, &session, &eu, &nodes).expect("a node");
            *won.entry(owner.node.to_string()).or_default() += 1;
        }
        assert_eq!(
            won.get("far"),
            None,
            "a healthy node in the region comes first"
        );
        assert_eq!(won.get("off"), None, "no capacity, no calls");
        let big = won["big"] as f64 / 4000.0;
        assert!(
            (0.70..0.80).contains(&big),
            "big won {big}, expected about 0.75"
        );
        // With the region empty, calls cross to another one.
        let us_only = vec![node("far", "us", 5.0)];
        let (room, session) = call(1);
        assert_eq!(
            rehome(&room, &session, &eu, &us_only).map(|c| c.node.to_string()),
            Some("far".to_string())
        );
        assert!(rehome(&room, &session, &eu, &[]).is_none());
    }

    #[test]
    fn removing_a_node_moves_only_its_calls() {
        let all = vec![
            node("a", "eu", 1.0),
            node("b", "eu", 1.0),
            node("c", "eu", 1.0),
        ];
        let without_c: Vec<Candidate> = all[..2].to_vec();
        let eu = RegionId::parse("eu").expect("valid");
        for i in 0..1000 {
            let (room, session) = call(i);
            let before = rehome(&room, &session, &eu, &all)
                .expect("a node")
                .node
                .clone();
            let after = rehome(&room, &session, &eu, &without_c)
                .expect("a node")
                .node
                .clone();
            if before.as_str() != "c" {
                assert_eq!(before, after, "a call not on c must not move");
            }
        }
    }
}
