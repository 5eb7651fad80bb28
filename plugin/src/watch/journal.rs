//! The journal of status changes: pure logic, no I/O.
//!
//! Fed with what the remote pod reflector saw ([`Step`]), it numbers every
//! change of a caller-visible status, keeps the last `capacity` of them (the
//! ring a resume replays from) and fans each one out to the subscribers of
//! that caller through bounded channels. A change whose mapped status did not
//! change (a resourceVersion bump, a relist) is not a change: it gets no
//! sequence number and reaches nobody.
//!
//! Hand-written rather than a `tokio::sync::broadcast`: a broadcast channel
//! has a ring, but it cannot replay from a token, filter per caller before
//! queueing, or tell a lagging receiver apart at send time.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::{DefaultHasher, Hash, Hasher},
    sync::Mutex,
};

use bytes::Bytes;
use offload_wire::{PodStatus, watch::WatchEvent};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::status::LocalIdentity;

/// A remote pod: (namespace, name).
pub type RemoteKey = (String, String);

/// A remote pod as the journal needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub key: RemoteKey,
    /// The caller label (principal + local node, hashed).
    pub caller: String,
    pub id: LocalIdentity,
    /// What `/status` would answer for it now.
    pub status: PodStatus,
}

/// One reflector event, reduced.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Added or modified (during a relist too).
    Applied(Box<Observed>),
    /// Deleted.
    Deleted(RemoteKey),
    /// A relist starts: pods it does not list again are gone.
    RelistStart,
    /// The relist is complete.
    RelistDone,
}

/// What a stream starts with.
#[derive(Debug)]
pub enum Start {
    /// The token was honoured: the changes after it (this caller's), then a
    /// bookmark at `seq`.
    Resumed { lines: Vec<Bytes>, seq: u64 },
    /// A full replay is due: the current status of every pod of the caller,
    /// then `Synced` at `seq`. Every change after `seq` comes through the
    /// channel.
    Full { seq: u64 },
}

/// A new subscriber: how to start, and the channel of what follows.
pub struct Subscription {
    pub start: Start,
    pub rx: mpsc::Receiver<Bytes>,
}

/// Counters the journal keeps (registered by the caller).
#[derive(Clone, Default)]
pub struct JournalCounters {
    /// Changes numbered.
    pub changes: Counter,
    /// Subscribers cut because their channel was full.
    pub slow_disconnects: Counter,
}

struct Known {
    caller: String,
    id: LocalIdentity,
    hash: u64,
}

struct Change {
    seq: u64,
    caller: String,
    line: Bytes,
}

#[derive(Default)]
struct Inner {
    seq: u64,
    /// Highest sequence number dropped from the ring: a token below it
    /// cannot be honoured.
    evicted_upto: u64,
    ring: VecDeque<Change>,
    known: HashMap<RemoteKey, Known>,
    /// Pods listed by the relist under way.
    relisted: Option<HashSet<RemoteKey>>,
    subscribers: HashMap<String, Vec<mpsc::Sender<Bytes>>>,
}

/// See the module docs.
pub struct Journal {
    epoch: String,
    capacity: usize,
    buffer: usize,
    counters: JournalCounters,
    inner: Mutex<Inner>,
}

impl Journal {
    /// `epoch` names this process (tokens of another never match);
    /// `capacity` changes are kept for resumes; `buffer` lines may wait per
    /// subscriber before it counts as too slow.
    pub fn new(epoch: String, capacity: usize, buffer: usize, counters: JournalCounters) -> Self {
        Self {
            epoch,
            capacity: capacity.max(1),
            buffer: buffer.max(1),
            counters,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// A new process epoch: the start time in nanoseconds and a random part,
    /// so two replicas started together differ too.
    pub fn new_epoch() -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("{nanos:x}{:04x}", rand::random::<u16>())
    }

    /// The token of position `seq`.
    pub fn token(&self, seq: u64) -> String {
        format!("{}:{seq}", self.epoch)
    }

    /// The token carried by the lines of a full replay: it resumes into a
    /// full replay again, since a replay cut short is not complete.
    pub fn replay_token(&self) -> String {
        format!("{}:replay", self.epoch)
    }

    /// The position a token names, if this process can resume from it.
    fn position(&self, token: &str, inner: &Inner) -> Option<u64> {
        let (epoch, seq) = token.split_once(':')?;
        let seq: u64 = seq.parse().ok()?;
        (epoch == self.epoch && seq <= inner.seq && seq >= inner.evicted_upto).then_some(seq)
    }

    /// Applies one reflector step.
    pub fn apply(&self, step: Step) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        match step {
            Step::Applied(o) => {
                if let Some(r) = inner.relisted.as_mut() {
                    r.insert(o.key.clone());
                }
                self.applied(&mut inner, *o);
            }
            Step::Deleted(key) => self.deleted(&mut inner, &key),
            Step::RelistStart => inner.relisted = Some(HashSet::new()),
            Step::RelistDone => {
                let Some(listed) = inner.relisted.take() else {
                    return;
                };
                let gone: Vec<RemoteKey> = inner
                    .known
                    .keys()
                    .filter(|k| !listed.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.deleted(&mut inner, &key);
                }
            }
        }
    }

    fn applied(&self, inner: &mut Inner, o: Observed) {
        let Ok(body) = serde_json::to_vec(&o.status) else {
            return;
        };
        let mut h = DefaultHasher::new();
        body.hash(&mut h);
        let hash = h.finish();
        if let Some(k) = inner.known.get(&o.key)
            && k.hash == hash
            && k.caller == o.caller
        {
            return;
        }
        let seq = inner.seq + 1;
        let line = line(&WatchEvent::Status {
            resume: self.token(seq),
            status: o.status,
        });
        inner.known.insert(
            o.key,
            Known {
                caller: o.caller.clone(),
                id: o.id,
                hash,
            },
        );
        self.push(inner, o.caller, line);
    }

    fn deleted(&self, inner: &mut Inner, key: &RemoteKey) {
        let Some(k) = inner.known.remove(key) else {
            return;
        };
        let seq = inner.seq + 1;
        let line = line(&WatchEvent::Gone {
            resume: self.token(seq),
            namespace: k.id.namespace,
            name: k.id.name,
            uid: k.id.uid,
        });
        self.push(inner, k.caller, line);
    }

    /// Numbers, keeps and fans out one change.
    fn push(&self, inner: &mut Inner, caller: String, line: Bytes) {
        inner.seq += 1;
        self.counters.changes.inc();
        if let Some(subs) = inner.subscribers.get_mut(&caller) {
            self.send_all(subs, &line);
            if subs.is_empty() {
                inner.subscribers.remove(&caller);
            }
        }
        inner.ring.push_back(Change {
            seq: inner.seq,
            caller,
            line,
        });
        while inner.ring.len() > self.capacity {
            if let Some(old) = inner.ring.pop_front() {
                inner.evicted_upto = old.seq;
            }
        }
    }

    /// Sends `line` to every subscriber in `subs`; one whose channel is
    /// full is dropped (its stream ends after what it has queued, and its
    /// resume replays the rest), as is one that went away.
    fn send_all(&self, subs: &mut Vec<mpsc::Sender<Bytes>>, line: &Bytes) {
        subs.retain(|tx| match tx.try_send(line.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.counters.slow_disconnects.inc();
                false
            }
            Err(TrySendError::Closed(_)) => false,
        });
    }

    /// A bookmark to every subscriber: nothing of theirs changed up to now.
    pub fn bookmark(&self) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let line = line(&WatchEvent::Bookmark {
            resume: self.token(inner.seq),
        });
        let mut subscribers = std::mem::take(&mut inner.subscribers);
        for subs in subscribers.values_mut() {
            self.send_all(subs, &line);
        }
        subscribers.retain(|_, s| !s.is_empty());
        inner.subscribers = subscribers;
    }

    /// Subscribes `caller`, resuming after `resume` when this process can.
    pub fn subscribe(&self, caller: &str, resume: Option<&str>) -> Subscription {
        let (tx, rx) = mpsc::channel(self.buffer);
        let Ok(mut inner) = self.inner.lock() else {
            return Subscription {
                start: Start::Full { seq: 0 },
                rx,
            };
        };
        let seq = inner.seq;
        let start = match resume.and_then(|t| self.position(t, &inner)) {
            Some(from) => {
                let mut lines: Vec<Bytes> = inner
                    .ring
                    .iter()
                    .filter(|c| c.seq > from && c.caller == caller)
                    .map(|c| c.line.clone())
                    .collect();
                lines.push(line(&WatchEvent::Bookmark {
                    resume: self.token(seq),
                }));
                Start::Resumed { lines, seq }
            }
            None => Start::Full { seq },
        };
        inner
            .subscribers
            .entry(caller.to_owned())
            .or_default()
            .push(tx);
        Subscription { start, rx }
    }

    /// Open subscribers (for tests and the gauge's sanity).
    pub fn subscribers(&self) -> usize {
        self.inner
            .lock()
            .map(|i| i.subscribers.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// The `Synced` line of a full replay that ended at `seq`.
    pub fn synced_line(&self, seq: u64) -> Bytes {
        line(&WatchEvent::Synced {
            resume: self.token(seq),
        })
    }

    /// A `Status` line of a full replay.
    pub fn replay_line(&self, status: PodStatus) -> Bytes {
        line(&WatchEvent::Status {
            resume: self.replay_token(),
            status,
        })
    }
}

/// One NDJSON line.
pub fn line(e: &WatchEvent) -> Bytes {
    let mut v = serde_json::to_vec(e).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
