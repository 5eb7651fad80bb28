//! Coalescing of pending status writes: several changes of one pod that
//! arrive before its write starts become one write of the latest, and one
//! pod is never written by two workers at once. Pure (no I/O): the writer
//! (`controller::status_writer`) holds one behind a lock.
//!
//! Hand-written: a keyed, de-duplicating FIFO with an in-flight set is a few
//! lines; kube-runtime's scheduler de-duplicates by key but keeps the first
//! message, not the latest, and has no notion of a key in flight.

use std::collections::{HashMap, HashSet, VecDeque};

/// What [`Coalescer::push`] did with a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// A new write is queued.
    Queued,
    /// It replaced a value still waiting: one write less.
    Coalesced,
    /// The key is being written now: queued again when that write ends.
    Deferred,
}

/// Pending values by key, in arrival order of their first pending value;
/// the values the priority says are urgent first (e.g. a pod that started
/// or ended, before a burst of thousands of pods that are still pending).
#[derive(Debug)]
pub struct Coalescer<V> {
    latest: HashMap<String, V>,
    /// Keys with a pending value that are not in flight (each once).
    order: VecDeque<String>,
    /// Keys whose pending value is urgent, also not in flight (each once;
    /// such a key may also sit in `order`, where it is skipped).
    urgent: VecDeque<String>,
    queued_urgent: HashSet<String>,
    in_flight: HashSet<String>,
    is_urgent: fn(&V) -> bool,
}

impl<V> Default for Coalescer<V> {
    fn default() -> Self {
        Self::with_priority(|_| false)
    }
}

impl<V> Coalescer<V> {
    /// A coalescer that hands out the values `is_urgent` picks before the
    /// others (each kind in arrival order).
    pub fn with_priority(is_urgent: fn(&V) -> bool) -> Self {
        Coalescer {
            latest: HashMap::new(),
            order: VecDeque::new(),
            urgent: VecDeque::new(),
            queued_urgent: HashSet::new(),
            in_flight: HashSet::new(),
            is_urgent,
        }
    }

    /// Keep `value` as the one to write for `key`; `merge(old, new)` makes
    /// the kept value when one was waiting (e.g. to keep the first arrival
    /// time for the lag metric).
    pub fn push(&mut self, key: &str, value: V, merge: impl FnOnce(V, V) -> V) -> Pushed {
        let (value, pushed) = match self.latest.remove(key) {
            Some(old) => (merge(old, value), Pushed::Coalesced),
            None if self.in_flight.contains(key) => (value, Pushed::Deferred),
            None => {
                self.order.push_back(key.to_owned());
                (value, Pushed::Queued)
            }
        };
        if !self.in_flight.contains(key) {
            self.queue_if_urgent(key, &value);
        }
        self.latest.insert(key.to_owned(), value);
        pushed
    }

    fn queue_if_urgent(&mut self, key: &str, value: &V) {
        if (self.is_urgent)(value) && self.queued_urgent.insert(key.to_owned()) {
            self.urgent.push_back(key.to_owned());
        }
    }

    /// The oldest urgent pending key, else the oldest pending key, and its
    /// latest value; the key is in flight until [`Coalescer::done`].
    pub fn take(&mut self) -> Option<(String, V)> {
        while let Some(key) = self.urgent.pop_front().or_else(|| self.order.pop_front()) {
            if let Some(v) = self.latest.remove(&key) {
                self.queued_urgent.remove(&key);
                self.in_flight.insert(key.clone());
                return Some((key, v));
            }
        }
        None
    }

    /// The write of `key` ended; a value that came meanwhile is queued.
    pub fn done(&mut self, key: &str) {
        self.in_flight.remove(key);
        if let Some(v) = self.latest.remove(key) {
            self.order.push_back(key.to_owned());
            self.queue_if_urgent(key, &v);
            self.latest.insert(key.to_owned(), v);
        }
    }

    /// Whether a value waits for `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.latest.contains_key(key)
    }

    /// Values waiting (not in flight).
    pub fn pending(&self) -> usize {
        self.latest.len()
    }

    /// Keys being written now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep_new(_: u32, new: u32) -> u32 {
        new
    }

    #[test]
    fn several_changes_before_the_write_are_one_write_of_the_latest() {
        let mut c = Coalescer::default();
        assert_eq!(c.push("a", 1, keep_new), Pushed::Queued);
        assert_eq!(c.push("b", 10, keep_new), Pushed::Queued);
        assert_eq!(c.push("a", 2, keep_new), Pushed::Coalesced);
        assert_eq!(c.push("a", 3, keep_new), Pushed::Coalesced);
        assert_eq!(c.pending(), 2);
        // First arrival order, latest value.
        assert_eq!(c.take(), Some(("a".into(), 3)));
        assert_eq!(c.take(), Some(("b".into(), 10)));
        assert_eq!(c.take(), None);
    }

    #[test]
    fn a_key_in_flight_is_not_handed_out_twice_and_comes_back_after_done() {
        let mut c = Coalescer::default();
        c.push("a", 1, keep_new);
        assert_eq!(c.take(), Some(("a".into(), 1)));
        assert_eq!(c.in_flight(), 1);
        assert_eq!(c.push("a", 2, keep_new), Pushed::Deferred);
        assert!(c.contains("a"));
        assert_eq!(c.push("a", 3, keep_new), Pushed::Coalesced);
        assert_eq!(c.take(), None, "a is being written");
        c.done("a");
        assert_eq!(c.take(), Some(("a".into(), 3)));
        c.done("a");
        assert_eq!(c.take(), None);
        assert_eq!((c.pending(), c.in_flight()), (0, 0));
    }

    #[test]
    fn urgent_values_go_first_and_a_change_can_make_a_key_urgent() {
        let mut c = Coalescer::with_priority(|v: &u32| *v >= 100);
        for k in ["a", "b", "c"] {
            c.push(k, 1, keep_new);
        }
        c.push("d", 100, keep_new);
        // b became urgent while waiting: it goes before a and c.
        assert_eq!(c.push("b", 200, keep_new), Pushed::Coalesced);
        assert_eq!(c.take(), Some(("d".into(), 100)));
        assert_eq!(c.take(), Some(("b".into(), 200)));
        assert_eq!(c.take(), Some(("a".into(), 1)));
        // An urgent change of a key in flight goes first once it is done.
        c.push("a", 300, keep_new);
        c.done("a");
        assert_eq!(c.take(), Some(("a".into(), 300)));
        assert_eq!(c.take(), Some(("c".into(), 1)));
        assert_eq!(c.take(), None, "b's old place in the queue is skipped");
        for k in ["a", "b", "c", "d"] {
            c.done(k);
        }
        assert_eq!((c.pending(), c.in_flight()), (0, 0));
    }

    #[test]
    fn merge_sees_old_and_new() {
        let mut c = Coalescer::default();
        c.push("a", (5, "first"), |o, _| o);
        c.push("a", (9, "second"), |old: (u32, &str), new: (u32, &str)| {
            (old.0, new.1)
        });
        assert_eq!(c.take(), Some(("a".into(), (5, "second"))));
    }
}
