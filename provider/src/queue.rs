//! Work queue and backoff bookkeeping.
//!
//! [`QueueState`] is the pure part (client-go's workqueue semantics): a key is
//! queued at most once, a key being processed is never handed to a second
//! worker, and a key added while it is processed is queued again when the
//! worker is done. [`WorkQueue`] is the thin async shell around it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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
}

/// Pure queue bookkeeping.
#[derive(Debug)]
pub struct QueueState<K> {
    queue: VecDeque<K>,
    queued: HashSet<K>,
    processing: HashSet<K>,
    dirty: HashSet<K>,
    failures: HashMap<K, u32>,
}

impl<K: Clone + Eq + Hash> Default for QueueState<K> {
    fn default() -> Self {
        QueueState {
            queue: VecDeque::new(),
            queued: HashSet::new(),
            processing: HashSet::new(),
            dirty: HashSet::new(),
            failures: HashMap::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> QueueState<K> {
    /// Add a key; returns whether a worker should be woken.
    pub fn add(&mut self, key: K) -> bool {
        if self.processing.contains(&key) {
            self.dirty.insert(key);
            return false;
        }
        if self.queued.insert(key.clone()) {
            self.queue.push_back(key);
            return true;
        }
        false
    }

    /// Take the next key to process.
    pub fn pop(&mut self) -> Option<K> {
        let key = self.queue.pop_front()?;
        self.queued.remove(&key);
        self.processing.insert(key.clone());
        Some(key)
    }

    /// The worker is done with `key`; returns whether it was re-added meanwhile
    /// (and is now queued again).
    pub fn done(&mut self, key: &K) -> bool {
        self.processing.remove(key);
        if self.dirty.remove(key) {
            self.add(key.clone());
            return true;
        }
        false
    }

    /// Count a failure of `key`; returns the attempt number (0 for the first).
    pub fn fail(&mut self, key: &K) -> u32 {
        let n = self.failures.entry(key.clone()).or_insert(0);
        let attempt = *n;
        *n = n.saturating_add(1);
        attempt
    }

    /// Forget the failure history of `key` (it succeeded or is gone).
    pub fn forget(&mut self, key: &K) {
        self.failures.remove(key);
    }

    pub fn failures(&self, key: &K) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }

    /// Keys waiting for a worker.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.processing.len()
    }
}

/// The async work queue shared by the watcher (producer) and the workers.
pub struct WorkQueue<K> {
    state: Mutex<QueueState<K>>,
    notify: Notify,
    backoff: Backoff,
    cancel: CancellationToken,
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    pub fn new(backoff: Backoff, cancel: CancellationToken) -> Arc<Self> {
        Arc::new(WorkQueue {
            state: Mutex::new(QueueState::default()),
            notify: Notify::new(),
            backoff,
            cancel,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState<K>> {
        // A poisoned lock only means a worker panicked mid-update; the state
        // is still consistent enough to keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, key: K) {
        if self.lock().add(key) {
            self.notify.notify_one();
        }
    }

    /// Add `key` after `delay` (unless the queue is shut down first).
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => me.add(key),
                _ = me.cancel.cancelled() => {}
            }
        });
    }

    /// Retry `key` with backoff; returns the delay used.
    pub fn retry(self: &Arc<Self>, key: K) -> Duration {
        let attempt = self.lock().fail(&key);
        let delay = self.backoff.delay(attempt);
        self.add_after(key, delay);
        delay
    }

    pub fn forget(&self, key: &K) {
        self.lock().forget(key);
    }

    pub fn failures(&self, key: &K) -> u32 {
        self.lock().failures(key)
    }

    /// Next key, or `None` once the queue is shut down.
    pub async fn next(&self) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            if self.cancel.is_cancelled() {
                return None;
            }
            if let Some(k) = self.lock().pop() {
                return Some(k);
            }
            tokio::select! {
                _ = notified => {}
                _ = self.cancel.cancelled() => return None,
            }
        }
    }

    pub fn done(&self, key: &K) {
        let requeued = self.lock().done(key);
        if requeued {
            self.notify.notify_one();
        }
    }

    pub fn depth(&self) -> usize {
        self.lock().len()
    }

    pub fn in_flight(&self) -> usize {
        self.lock().in_flight()
    }
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
    fn keys_are_deduplicated() {
        let mut q = QueueState::default();
        assert!(q.add("a"));
        assert!(!q.add("a"));
        assert!(q.add("b"));
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(), Some("a"));
        assert_eq!(q.pop(), Some("b"));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn key_in_progress_is_not_handed_out_twice_but_requeued_after() {
        let mut q = QueueState::default();
        q.add("a");
        assert_eq!(q.pop(), Some("a"));
        assert!(!q.add("a"), "no second worker for a key in progress");
        assert_eq!(q.pop(), None);
        assert!(q.done(&"a"));
        assert_eq!(q.pop(), Some("a"));
        assert!(!q.done(&"a"));
        assert!(q.is_empty());
    }

    #[test]
    fn failures_are_counted_until_forgotten() {
        let mut q: QueueState<&str> = QueueState::default();
        assert_eq!(q.fail(&"a"), 0);
        assert_eq!(q.fail(&"a"), 1);
        assert_eq!(q.failures(&"a"), 2);
        q.forget(&"a");
        assert_eq!(q.failures(&"a"), 0);
    }

    #[tokio::test]
    async fn async_queue_hands_out_and_shuts_down() {
        let cancel = CancellationToken::new();
        let q = WorkQueue::new(
            Backoff::new(Duration::from_millis(10), Duration::from_millis(50)),
            cancel.clone(),
        );
        q.add(1u32);
        assert_eq!(q.next().await, Some(1));
        q.done(&1);
        let d = q.retry(2);
        assert_eq!(d, Duration::from_millis(10));
        assert_eq!(q.next().await, Some(2));
        q.done(&2);
        cancel.cancel();
        assert_eq!(q.next().await, None);
    }
}
