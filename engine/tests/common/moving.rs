//! Calls hosted on a node, and how replicas grade it: the setting of the
//! failover tests.

use chorus_engine::membership::Grade;
use chorus_engine::replica::ReplicaConfig;
use chorus_engine::*;

use super::pair::Net;

pub fn detect(config: &mut ReplicaConfig) {
    config.failure_detection = true;
    config.anti_entropy_interval_ms = 100;
    // Slow enough to see a move in progress.
    config.failover_rate_per_s = 2;
    config.drain_rate_per_s = 2;
}

pub fn node(i: usize) -> NodeId {
    NodeId::parse(format!("r{i}")).expect("valid")
}

pub fn grade(net: &Net, at: usize, of: usize) -> Option<Grade> {
    net.members[at].replica.membership().grade(&node(of))
}

/// A room with `calls` calls owned by `owner`, written on `owner`.
pub fn host_calls(net: &mut Net, owner: usize, calls: usize) -> RoomId {
    let r = super::room("call-room");
    net.write(
        owner,
        &r,
        RoomOp::Create {
            tenant: TenantId::parse("t").expect("valid"),
            config: RoomConfig::default(),
        },
    );
    for i in 0..calls {
        net.write(
            owner,
            &r,
            RoomOp::Join {
                request: JoinRequest {
                    session: SessionId::parse(format!("s-{i}")).expect("valid"),
                    user: UserId::parse(format!("u-{i}")).expect("valid"),
                    role: Role::Speaker,
                    owner: node(owner),
                    region: RegionId::parse("default").expect("valid"),
                    resume_token: None,
                },
            },
        );
    }
    r
}
