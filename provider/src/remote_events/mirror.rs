//! Which local Event write a remote event calls for: pure, the time is an
//! argument.
//!
//! Deduplication: every (local pod, type, reason, message, container) is one
//! local Event (one series), whatever the number of remote Events behind it;
//! its count is the sum of the remote Events' counts. A remote event seen
//! again with the same count (the plugin's ring replayed after a restart of
//! either side) changes nothing and writes nothing. Series untouched for
//! [`SERIES_TTL`] are forgotten (the apiserver's Event TTL is one hour too).
//!
//! A series is remembered by digests, not by its words (about 100 bytes
//! each): a node of 10,000 pods with a `FailedScheduling` each needs them
//! all, and a series forgotten costs three writes when it comes again (a
//! create refused as existing, a read, the count).
//!
//! Rate limit: every write (a new Event or a higher count) takes a token of
//! the pod's bucket: [`BURST`] at once, then one per [`REFILL`], like the
//! kubelet's event spam filter. A write refused is dropped (and counted);
//! the series' next occurrence writes the full count, so only an Event whose
//! first write was refused is lost.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use offload_wire::events::RemoteEvent;
use sha2::{Digest, Sha256};

use crate::kubelet_api::cache::TokenBucket;

/// Writes at once per pod.
pub const BURST: u32 = 25;
/// Then one write per this, per pod.
pub const REFILL: Duration = Duration::from_secs(5);
/// A series untouched this long is forgotten.
pub const SERIES_TTL: Duration = Duration::from_secs(3600);
/// Series remembered at most (the least recently touched go first).
pub const MAX_SERIES: usize = 65_536;

/// What makes two events one local Event.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub pod_uid: String,
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub field_path: Option<String>,
}

impl SeriesKey {
    pub fn of(e: &RemoteEvent) -> Self {
        SeriesKey {
            pod_uid: e.pod.uid.clone(),
            type_: e.type_.clone(),
            reason: e.reason.clone(),
            message: e.message.clone(),
            field_path: e.field_path.clone(),
        }
    }

    /// The local Event's name: the pod's name (cut so the whole stays a
    /// valid name) and a hash of the key. The same across provider restarts,
    /// so a restarted provider finds its Event instead of writing another.
    pub fn event_name(&self, pod_name: &str) -> String {
        let digest = self.digest();
        let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let base: String = pod_name.chars().take(200).collect();
        format!("{base}.r{hash}")
    }

    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [
            self.pod_uid.as_str(),
            &self.type_,
            &self.reason,
            &self.message,
            self.field_path.as_deref().unwrap_or(""),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    /// What the mirror remembers the series by.
    fn id(&self) -> SeriesId {
        let d = self.digest();
        SeriesId {
            key: first16(&d),
            pod: digest16(&self.pod_uid),
        }
    }
}

/// A series as remembered: digests of its key and of its pod's UID (so that
/// the series of pods that left can go).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SeriesId {
    key: [u8; 16],
    pod: [u8; 16],
}

/// 128 bits of SHA-256 of `s`: a UID as remembered.
fn digest16(s: &str) -> [u8; 16] {
    first16(&Sha256::digest(s.as_bytes()).into())
}

fn first16(d: &[u8; 32]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// A write the mirror asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// No local Event yet: create it with this count.
    Create { count: i32 },
    /// Raise the local Event's count to this.
    Update { count: i32 },
}

/// The outcome of one remote event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Seen already: nothing to write.
    Unchanged,
    /// The pod's bucket is empty: dropped.
    RateLimited,
    Write(Write),
}

struct Series {
    /// Digest of a remote Event's UID -> its highest count seen (mostly
    /// one Event per series).
    counts: Vec<([u8; 16], i32)>,
    /// The count the local Event has (0: none written yet).
    written: i32,
    touched: Instant,
}

impl Series {
    fn total(&self) -> i32 {
        self.counts
            .iter()
            .fold(0i32, |acc, (_, c)| acc.saturating_add(*c))
    }
}

/// The series known and the per-pod buckets.
pub struct Mirror {
    series: HashMap<SeriesId, Series>,
    buckets: HashMap<String, TokenBucket>,
    max_series: usize,
}

impl Default for Mirror {
    fn default() -> Self {
        Self::new(MAX_SERIES)
    }
}

impl Mirror {
    pub fn new(max_series: usize) -> Self {
        Mirror {
            series: HashMap::new(),
            buckets: HashMap::new(),
            max_series: max_series.max(1),
        }
    }

    /// Records `e` and says what to write.
    pub fn observe(&mut self, e: &RemoteEvent, now: Instant) -> Decision {
        let key = SeriesKey::of(e).id();
        if !self.series.contains_key(&key) {
            self.make_room(now);
        }
        let s = self.series.entry(key).or_insert_with(|| Series {
            counts: Vec::with_capacity(1),
            written: 0,
            touched: now,
        });
        s.touched = now;
        let event = digest16(&e.id);
        let count = e.count.max(1);
        match s.counts.iter_mut().find(|(id, _)| *id == event) {
            Some((_, seen)) => *seen = (*seen).max(count),
            None => s.counts.push((event, count)),
        }
        let total = s.total();
        if total <= s.written {
            return Decision::Unchanged;
        }
        let bucket = self
            .buckets
            .entry(e.pod.uid.clone())
            .or_insert_with(|| TokenBucket::new(1.0 / REFILL.as_secs_f64(), BURST, now));
        if !bucket.try_take(now) {
            return Decision::RateLimited;
        }
        Decision::Write(if s.written == 0 {
            Write::Create { count: total }
        } else {
            Write::Update { count: total }
        })
    }

    /// The local Event of `key` now says `count` (after a write, or found
    /// with that count).
    pub fn written(&mut self, key: &SeriesKey, count: i32) {
        if let Some(s) = self.series.get_mut(&key.id()) {
            s.written = s.written.max(count);
        }
    }

    /// The local Event of `key` is gone (expired): the next write creates it.
    pub fn lost(&mut self, key: &SeriesKey) {
        if let Some(s) = self.series.get_mut(&key.id()) {
            s.written = 0;
        }
    }

    /// Forgets the pods not in `alive` (their buckets and series).
    pub fn retain_pods(&mut self, alive: &HashSet<String>) {
        self.buckets.retain(|uid, _| alive.contains(uid));
        let alive: HashSet<[u8; 16]> = alive.iter().map(|uid| digest16(uid)).collect();
        self.series.retain(|k, _| alive.contains(&k.pod));
    }

    pub fn series_len(&self) -> usize {
        self.series.len()
    }

    /// Expired series go; at capacity, the least recently touched too.
    fn make_room(&mut self, now: Instant) {
        if self.series.len() < self.max_series {
            return;
        }
        self.series
            .retain(|_, s| now.saturating_duration_since(s.touched) < SERIES_TTL);
        if self.series.len() < self.max_series {
            return;
        }
        // The oldest eighth at once: one pass for many inserts, not one each.
        let excess = self.series.len() + 1 - self.max_series;
        let evict = excess.max(self.max_series / 8).min(self.series.len());
        let mut times: Vec<Instant> = self.series.values().map(|s| s.touched).collect();
        let (_, cut, _) = times.select_nth_unstable(evict - 1);
        let cut = *cut;
        self.series.retain(|_, s| s.touched > cut);
    }
}
