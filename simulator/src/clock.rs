//! A simulated node's wall clock: the true (simulated) time plus an offset,
//! running fast or slow by a drift in parts per million. A skew event resets
//! the offset at that moment; drift accumulates from then on.

/// The largest drift a scenario may set: ±10 %.
pub const DRIFT_PPM_MAX: i64 = 100_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeClock {
    /// True time at which the current offset was set.
    base_true_ms: u64,
    /// The node's clock minus the true time at `base_true_ms`.
    offset_ms: i64,
    /// The clock gains `drift_ppm` µs per true second.
    drift_ppm: i64,
}

impl NodeClock {
    /// From `now` on, the clock reads `now + offset_ms` and drifts by
    /// `drift_ppm` (clamped to ±[`DRIFT_PPM_MAX`]).
    pub fn set(&mut self, now: u64, offset_ms: i64, drift_ppm: i64) {
        self.base_true_ms = now;
        self.offset_ms = offset_ms;
        self.drift_ppm = drift_ppm.clamp(-DRIFT_PPM_MAX, DRIFT_PPM_MAX);
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    pub fn drift_ppm(&self) -> i64 {
        self.drift_ppm
    }

    /// What the node's clock reads at true time `now` (never below 0).
    pub fn local(&self, now: u64) -> u64 {
        let elapsed = i128::from(now) - i128::from(self.base_true_ms);
        let drift = elapsed * i128::from(self.drift_ppm) / 1_000_000;
        let local = i128::from(now) + i128::from(self.offset_ms) + drift;
        u64::try_from(local.max(0)).unwrap_or(u64::MAX)
    }

    /// The earliest true time at or after `now` at which the clock reads at
    /// least `local`.
    pub fn true_time_for(&self, local: u64, now: u64) -> u64 {
        if self.local(now) >= local {
            return now;
        }
        // Invert local(t) = t + offset + (t − base)·ppm/1e6, then correct
        // the integer rounding by stepping (the clock never runs backwards,
        // so at most a couple of steps).
        let rate = 1_000_000 + i128::from(self.drift_ppm);
        let base = i128::from(self.base_true_ms);
        let target = i128::from(local) - i128::from(self.offset_ms) - base;
        let guess = base + (target * 1_000_000) / rate;
        let mut t = u64::try_from(guess.max(i128::from(now))).unwrap_or(u64::MAX);
        while t > now && self.local(t - 1) >= local {
            t -= 1;
        }
        while self.local(t) < local {
            t += 1;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_is_exact_with_drift_and_offset() {
        for (offset, ppm) in [
            (0, 0),
            (-4_000, 0),
            (2_500, 700),
            (-300, -90_000),
            (0, 100_000),
        ] {
            let mut clock = NodeClock::default();
            clock.set(1_000, offset, ppm);
            for now in [1_000u64, 5_000, 77_777] {
                for ahead in [0u64, 1, 3, 999, 12_345] {
                    let want = clock.local(now) + ahead;
                    let t = clock.true_time_for(want, now);
                    assert!(clock.local(t) >= want);
                    assert!(t == now || clock.local(t - 1) < want);
                }
            }
        }
    }

    #[test]
    fn a_clock_set_back_reads_zero_rather_than_negative() {
        let mut clock = NodeClock::default();
        clock.set(100, -4_000, 0);
        assert_eq!(clock.local(200), 0);
        assert_eq!(clock.local(5_000), 1_000);
    }
}
