//! Retry delays: capped exponential backoff, with jitter for the controller
//! so pods that failed together (a plugin outage) do not retry in lockstep;
//! and jittered periods for the loops that tick (node heartbeat, pings,
//! status polls), so the providers of many nodes, restarted together, do not
//! hit the apiserver and the plugin in the same instant forever.

use std::time::Duration;

/// Exponential backoff: `base * 2^attempt`, capped at `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max }
    }

    /// Delay before retry number `attempt` (0 = first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// [`Backoff::delay`] less up to a fifth at random: never above the
    /// unjittered delay (so never above `max`), never below 80% of it.
    pub fn jittered(&self, attempt: u32) -> Duration {
        self.delay(attempt).mul_f64(rand::random_range(0.8..=1.0))
    }
}

/// `period` stretched or shrunk by up to a tenth at random. A Lease renewed
/// every quarter of its duration stays far from expiry.
pub fn jittered_period(period: Duration) -> Duration {
    period.mul_f64(rand::random_range(0.9..=1.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.delay(0), Duration::from_millis(100));
        assert_eq!(b.delay(1), Duration::from_millis(200));
        assert_eq!(b.delay(3), Duration::from_millis(800));
        assert_eq!(b.delay(4), Duration::from_secs(1));
        assert_eq!(b.delay(200), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_a_fifth_below_the_delay() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for attempt in [0, 2, 10] {
            for _ in 0..100 {
                let d = b.jittered(attempt);
                assert!(d <= b.delay(attempt), "{d:?}");
                assert!(d >= b.delay(attempt).mul_f64(0.8), "{d:?}");
            }
        }
    }

    #[test]
    fn periods_spread_by_a_tenth() {
        let p = Duration::from_secs(10);
        let seen: Vec<Duration> = (0..200).map(|_| jittered_period(p)).collect();
        assert!(
            seen.iter()
                .all(|d| *d >= p.mul_f64(0.9) && *d <= p.mul_f64(1.1))
        );
        assert!(seen.iter().any(|d| *d != seen[0]), "not a fixed period");
    }
}
