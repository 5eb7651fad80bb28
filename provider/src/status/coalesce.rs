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

/// Pending values by key, in arrival order of their first pending value.
#[derive(Debug)]
pub struct Coalescer<V> {
    latest: HashMap<String, V>,
    /// Keys with a pending value that are not in flight (each once).
    order: VecDeque<String>,
    in_flight: HashSet<String>,
}

impl<V> Default for Coalescer<V> {
    fn default() -> Self {
        Coalescer {
            latest: HashMap::new(),
            order: VecDeque::new(),
            in_flight: HashSet::new(),
        }
    }
}

impl<V> Coalescer<V> {
    /// Keep `value` as the one to write for `key`; `merge(old, new)` makes
    /// the kept value when one was waiting (e.g. to keep the first arrival
    /// time for the lag metric).
    pub fn push(&mut self, key: &str, value: V, merge: impl FnOnce(V, V) -> V) -> Pushed {
        let value = match self.latest.remove(key) {
            Some(old) => {
                self.latest.insert(key.to_owned(), merge(old, value));
                return Pushed::Coalesced;
            }
            None => value,
        };
        self.latest.insert(key.to_owned(), value);
        if self.in_flight.contains(key) {
            Pushed::Deferred
        } else {
            self.order.push_back(key.to_owned());
            Pushed::Queued
        }
    }

    /// The oldest pending key and its latest value; the key is in flight
    /// until [`Coalescer::done`].
    pub fn take(&mut self) -> Option<(String, V)> {
        while let Some(key) = self.order.pop_front() {
            if let Some(v) = self.latest.remove(&key) {
                self.in_flight.insert(key.clone());
                return Some((key, v));
            }
        }
        None
    }

    /// The write of `key` ended; a value that came meanwhile is queued.
    pub fn done(&mut self, key: &str) {
        self.in_flight.remove(key);
        if self.latest.contains_key(key) {
            self.order.push_back(key.to_owned());
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
    fn merge_sees_old_and_new() {
        let mut c = Coalescer::default();
        c.push("a", (5, "first"), |o, _| o);
        c.push("a", (9, "second"), |old: (u32, &str), new: (u32, &str)| {
            (old.0, new.1)
        });
        assert_eq!(c.take(), Some(("a".into(), (5, "second"))));
    }
}
