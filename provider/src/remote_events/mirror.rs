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
pub const MAX_SERIES: usize = 4096;

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
        let digest = h.finalize();
        let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let base: String = pod_name.chars().take(200).collect();
        format!("{base}.r{hash}")
    }
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
    /// Remote Event UID -> its highest count seen.
    counts: HashMap<String, i32>,
    /// The count the local Event has (0: none written yet).
    written: i32,
    touched: Instant,
}

impl Series {
    fn total(&self) -> i32 {
        self.counts
            .values()
            .fold(0i32, |acc, c| acc.saturating_add(*c))
    }
}

/// The series known and the per-pod buckets.
pub struct Mirror {
    series: HashMap<SeriesKey, Series>,
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
        let key = SeriesKey::of(e);
        if !self.series.contains_key(&key) {
            self.make_room(now);
        }
        let s = self.series.entry(key).or_insert_with(|| Series {
            counts: HashMap::new(),
            written: 0,
            touched: now,
        });
        s.touched = now;
        let seen = s.counts.entry(e.id.clone()).or_insert(0);
        *seen = (*seen).max(e.count.max(1));
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
        if let Some(s) = self.series.get_mut(key) {
            s.written = s.written.max(count);
        }
    }

    /// The local Event of `key` is gone (expired): the next write creates it.
    pub fn lost(&mut self, key: &SeriesKey) {
        if let Some(s) = self.series.get_mut(key) {
            s.written = 0;
        }
    }

    /// Forgets the pods not in `alive` (their buckets and series).
    pub fn retain_pods(&mut self, alive: &HashSet<String>) {
        self.buckets.retain(|uid, _| alive.contains(uid));
        self.series.retain(|k, _| alive.contains(&k.pod_uid));
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
        while self.series.len() >= self.max_series {
            let Some(oldest) = self
                .series
                .iter()
                .min_by_key(|(_, s)| s.touched)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.series.remove(&oldest);
        }
    }
}
