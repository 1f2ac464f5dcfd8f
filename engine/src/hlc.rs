//! Hybrid logical clock (Kulkarni et al., 2014). Physical time is always
//! passed in; the clock never reads one itself, so the simulator can skew it.
//!
//! A [`Timestamp`] orders by (wall ms, logical counter, actor). Its text form
//! is fixed-width lower-case hex, so comparing the strings compares the
//! timestamps — the stamped values stored in room documents rely on that.

use std::fmt;

use crate::limits::HLC_MAX_DRIFT_MS;

/// One HLC reading. Totally ordered; the actor breaks ties between replicas.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Timestamp {
    pub wall_ms: u64,
    pub logical: u32,
    pub actor: u64,
}

/// Length of [`Timestamp`]'s text form: 16 + 1 + 8 + 1 + 16 hex digits/dashes.
pub const TIMESTAMP_TEXT_LEN: usize = 42;

impl Timestamp {
    /// Parses the fixed-width text form written by `Display`.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != TIMESTAMP_TEXT_LEN {
            return None;
        }
        let mut parts = text.split('-');
        let wall_ms = hex_u64(parts.next()?, 16)?;
        let logical = u32::try_from(hex_u64(parts.next()?, 8)?).ok()?;
        let actor = hex_u64(parts.next()?, 16)?;
        parts.next().is_none().then_some(Self {
            wall_ms,
            logical,
            actor,
        })
    }
}

fn hex_u64(part: &str, width: usize) -> Option<u64> {
    let lower_hex = part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if part.len() != width || !lower_hex {
        return None;
    }
    u64::from_str_radix(part, 16).ok()
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:016x}-{:08x}-{:016x}",
            self.wall_ms, self.logical, self.actor
        )
    }
}

/// A remote timestamp too far ahead of our physical clock to be believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("remote clock is {ahead_ms} ms ahead of ours (limit {HLC_MAX_DRIFT_MS} ms)")]
pub struct ClockDriftError {
    pub ahead_ms: u64,
}

/// The clock of one replica.
#[derive(Debug, Clone)]
pub struct Hlc {
    last: Timestamp,
}

impl Hlc {
    pub fn new(actor: u64) -> Self {
        Self {
            last: Timestamp {
                actor,
                ..Timestamp::default()
            },
        }
    }

    /// The latest timestamp issued or observed.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// A new timestamp for a local event at physical time `physical_ms`.
    /// Strictly greater than every timestamp issued or observed before, even
    /// when the physical clock steps backwards.
    pub fn tick(&mut self, physical_ms: u64) -> Timestamp {
        self.advance(physical_ms, 0, 0);
        self.last
    }

    /// Continues after a stamp this replica issued before a restart (its
    /// newest stored log or journal key), whatever the wall clock says now:
    /// stamps stay increasing across restarts, so a cursor or a
    /// `Last-Event-ID` taken before a restart never hides a later change.
    /// No drift bound applies: these are our own stamps, from our store.
    pub fn restore(&mut self, issued: Timestamp) {
        let issued = Timestamp {
            actor: self.last.actor,
            ..issued
        };
        if issued > self.last {
            self.last = issued;
        }
    }

    /// Merges a timestamp seen on a message, so that whatever this replica
    /// stamps next orders after it. Refuses timestamps implausibly far ahead.
    pub fn observe(&mut self, remote: Timestamp, physical_ms: u64) -> Result<(), ClockDriftError> {
        let ahead_ms = remote.wall_ms.saturating_sub(physical_ms);
        if ahead_ms > HLC_MAX_DRIFT_MS {
            return Err(ClockDriftError { ahead_ms });
        }
        self.advance(physical_ms, remote.wall_ms, remote.logical);
        Ok(())
    }

    fn advance(&mut self, physical_ms: u64, remote_wall: u64, remote_logical: u32) {
        let last = self.last;
        self.advance_from(last, physical_ms, remote_wall, remote_logical);
        // Invariant: every stamp this clock gives or observes orders after
        // the last one (only a wall clock at u64::MAX could stop it).
        debug_assert!(self.last > last || last.wall_ms == u64::MAX);
    }

    fn advance_from(
        &mut self,
        last: Timestamp,
        physical_ms: u64,
        remote_wall: u64,
        remote_logical: u32,
    ) {
        let wall = physical_ms.max(last.wall_ms).max(remote_wall);
        let logical = if wall == last.wall_ms && wall == remote_wall {
            last.logical.max(remote_logical).checked_add(1)
        } else if wall == last.wall_ms {
            last.logical.checked_add(1)
        } else if wall == remote_wall {
            remote_logical.checked_add(1)
        } else {
            Some(0)
        };
        // A logical overflow (4 billion events in one ms) borrows the next ms.
        self.last = match logical {
            Some(logical) => Timestamp {
                wall_ms: wall,
                logical,
                ..last
            },
            None => Timestamp {
                wall_ms: wall + 1,
                logical: 0,
                ..last
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_orders_like_the_value() {
        let a = Timestamp {
            wall_ms: 5,
            logical: 9,
            actor: 1,
        };
        let b = Timestamp {
            wall_ms: 6,
            logical: 0,
            actor: 0,
        };
        assert_eq!(Timestamp::parse(&a.to_string()), Some(a));
        assert!(a.to_string() < b.to_string());
        assert!(Timestamp::parse("zz").is_none());
        let hexy = Timestamp {
            wall_ms: 0xabc,
            logical: 0xf,
            actor: 0xd,
        };
        assert!(Timestamp::parse(&hexy.to_string().to_uppercase()).is_none());
    }

    #[test]
    fn monotonic_when_the_physical_clock_steps_back() {
        let mut hlc = Hlc::new(1);
        let t1 = hlc.tick(1_000);
        let t2 = hlc.tick(400); // NTP stepped the clock back 600 ms
        let t3 = hlc.tick(400);
        assert!(t1 < t2 && t2 < t3);
        assert_eq!(t3.wall_ms, 1_000);
    }

    #[test]
    fn observing_a_skewed_peer_orders_after_it() {
        let mut fast = Hlc::new(1);
        let mut slow = Hlc::new(2);
        let remote = fast.tick(10_000 + 4_000); // peer 4 s ahead
        slow.observe(remote, 10_000).expect("within drift");
        let local = slow.tick(10_001);
        assert!(local > remote, "{local} must order after {remote}");
    }

    #[test]
    fn refuses_a_clock_from_the_far_future() {
        let mut hlc = Hlc::new(1);
        let far = Timestamp {
            wall_ms: 10 + HLC_MAX_DRIFT_MS + 1,
            logical: 0,
            actor: 2,
        };
        assert!(hlc.observe(far, 10).is_err());
        assert_eq!(
            hlc.last().wall_ms,
            0,
            "a refused stamp must not move the clock"
        );
    }

    #[test]
    fn logical_overflow_borrows_a_millisecond() {
        let mut hlc = Hlc::new(1);
        hlc.last = Timestamp {
            wall_ms: 7,
            logical: u32::MAX,
            actor: 1,
        };
        let next = hlc.tick(7);
        assert_eq!((next.wall_ms, next.logical), (8, 0));
    }
}
