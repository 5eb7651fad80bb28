//! The two small pieces of state behind the kubelet API's authentication and
//! authorization: a bounded cache whose entries expire, and the token bucket
//! that caps TokenReviews. Both take the time as an argument so their tests
//! need no clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A map whose entries expire, holding at most `capacity` of them: when full,
/// expired entries go first, then the one closest to expiry. Every key costs
/// at most one entry, so a caller sending new keys (unknown tokens) can only
/// push out other entries, never grow the memory.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    entries: HashMap<K, (V, Instant)>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        TtlCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The value of `key` unless it expired at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(_, until)| now < *until)
            .map(|(v, _)| v.clone())
    }

    /// Keeps `value` for `ttl` from `now` (a zero `ttl` keeps nothing).
    pub fn insert(&mut self, key: K, value: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, until)| now < *until);
            if self.entries.len() >= self.capacity
                && let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, until))| *until)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&soonest);
            }
        }
        self.entries.insert(key, (value, now + ttl));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A token bucket: `burst` calls at once, then `rate` per second.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`. A rate of zero (or less) allows only the burst.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one at `now`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn entries_expire_after_their_own_ttl() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(10);
        c.insert("allowed", true, 300 * S, t0);
        c.insert("denied", false, 30 * S, t0);
        assert_eq!(c.get(&"allowed", t0 + 29 * S), Some(true));
        assert_eq!(c.get(&"denied", t0 + 29 * S), Some(false));
        assert_eq!(c.get(&"denied", t0 + 30 * S), None);
        assert_eq!(c.get(&"allowed", t0 + 299 * S), Some(true));
        assert_eq!(c.get(&"allowed", t0 + 300 * S), None);
        c.insert("zero", true, Duration::ZERO, t0);
        assert_eq!(c.get(&"zero", t0), None);
    }

    #[test]
    fn a_full_cache_drops_expired_then_soonest_and_never_grows() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(3);
        c.insert(1, (), 10 * S, t0);
        c.insert(2, (), 100 * S, t0);
        c.insert(3, (), 50 * S, t0);
        // Nothing expired: the one closest to expiry (1) goes.
        c.insert(4, (), 100 * S, t0);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&1, t0), None);
        // At t0+60 s, 3 has expired and goes first.
        c.insert(5, (), 100 * S, t0 + 60 * S);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&2, t0 + 60 * S), Some(()));
        assert_eq!(c.get(&4, t0 + 60 * S), Some(()));
        // Replacing a key needs no room.
        c.insert(5, (), 200 * S, t0 + 60 * S);
        assert_eq!(c.len(), 3);
        for k in 100..1000 {
            c.insert(k, (), S, t0 + 61 * S);
        }
        assert_eq!(c.len(), 3, "new keys push out old ones, never grow");
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3, t0);
        let taken = (0..100).filter(|_| b.try_take(t0)).count();
        assert_eq!(taken, 3, "the burst at once");
        // Half a second at 2/s refills one token.
        assert!(b.try_take(t0 + S / 2));
        assert!(!b.try_take(t0 + S / 2));
        // A long pause refills no more than the burst.
        let later = t0 + 3600 * S;
        assert_eq!((0..100).filter(|_| b.try_take(later)).count(), 3);
    }

    #[test]
    fn bucket_with_zero_rate_allows_only_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.0, 1, t0);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0 + 3600 * S));
    }
}
