//! Remote Events about offloaded pods, for `GET /events` (our extension of
//! the interLink API, the wire types in `offload_wire::events`).
//!
//! Pure logic here: [`translate`] turns a remote core/v1 Event about one of
//! our remote pods into the event of the local pod (local names and UID,
//! the remote pod's name replaced by the local one in the message, the
//! message cut to 1 KiB, the container field path kept only when it names
//! a container of the pod), and [`EventRing`] keeps the last
//! [`RING_CAPACITY`] of them, each with the caller whose pod it is about,
//! and answers one caller's events after a cursor. Memory is bounded by the
//! ring whatever the remote cluster does. The watch (`events/watch.rs`) and
//! the handler (`events/handler.rs`) are the thin I/O around it.

mod handler;
mod watch;

pub use self::handler::events_handler;
pub use self::watch::spawn;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use offload_wire::events::{EventPod, MAX_EVENTS, RemoteEvent, truncate_message};
use offload_wire::keys;

/// Events kept (all callers together).
pub const RING_CAPACITY: usize = 4096;

/// A remote Event translated for its local pod, and whose pod it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Captured {
    /// The caller label of the remote pod.
    pub caller: String,
    pub event: RemoteEvent,
}

/// The local event of remote `event` about remote `pod`, if `pod` is ours
/// (managed by this plugin `instance`, created for a caller) and the event
/// is really about it (same UID when the event names one).
pub fn translate(event: &Event, pod: &Pod, instance: &str) -> Option<Captured> {
    let obj = &event.involved_object;
    let (rns, rname) = (
        pod.metadata.namespace.as_deref()?,
        pod.metadata.name.as_deref()?,
    );
    if obj.kind.as_deref() != Some("Pod")
        || obj.namespace.as_deref() != Some(rns)
        || obj.name.as_deref() != Some(rname)
    {
        return None;
    }
    if let Some(uid) = obj.uid.as_deref().filter(|u| !u.is_empty())
        && pod.metadata.uid.as_deref() != Some(uid)
    {
        // About an earlier pod of that name.
        return None;
    }
    let labels = pod.metadata.labels.as_ref()?;
    let label = |k: &str| labels.get(k).map(String::as_str).filter(|v| !v.is_empty());
    if label(keys::LABEL_MANAGED_BY) != Some(keys::MANAGED_BY_PLUGIN)
        || label(keys::LABEL_PLUGIN_INSTANCE).is_some_and(|i| i != instance)
    {
        return None;
    }
    let caller = label(keys::LABEL_CALLER)?.to_string();
    let local_uid = label(keys::LABEL_SOURCE_POD_UID)?.to_string();
    let annotations = pod.metadata.annotations.as_ref()?;
    let annotation = |k: &str| annotations.get(k).filter(|v| !v.is_empty()).cloned();
    let local = EventPod {
        namespace: annotation(keys::ANNOTATION_SOURCE_NAMESPACE)?,
        name: annotation(keys::ANNOTATION_SOURCE_NAME)?,
        uid: local_uid,
    };
    let reason = event.reason.clone().filter(|r| !r.is_empty())?;
    let message = local_message(event.message.as_deref().unwrap_or(""), pod, &local);
    let series = event.series.as_ref();
    let count = event
        .count
        .or_else(|| series.and_then(|s| s.count))
        .unwrap_or(1)
        .max(1);
    let micro = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime| Time(t.0);
    let last = event
        .last_timestamp
        .clone()
        .or_else(|| {
            series
                .and_then(|s| s.last_observed_time.as_ref())
                .map(micro)
        })
        .or_else(|| event.event_time.as_ref().map(micro));
    let first = event.first_timestamp.clone().or_else(|| last.clone());
    Some(Captured {
        caller,
        event: RemoteEvent {
            id: event.metadata.uid.clone().filter(|u| !u.is_empty())?,
            pod: local,
            type_: match event.type_.as_deref() {
                Some("Warning") => "Warning".into(),
                _ => "Normal".into(),
            },
            reason: truncate_message(&reason).chars().take(128).collect(),
            message,
            count,
            first_timestamp: first,
            last_timestamp: last,
            field_path: obj
                .field_path
                .as_deref()
                .filter(|p| names_a_container(p, pod))
                .map(str::to_string),
        },
    })
}

/// The remote message with the remote pod's names and UID replaced by the
/// local ones (the scheduler's "Successfully assigned <ns>/<name> to ...",
/// the kubelet's `<name>_<ns>(<uid>)`), cut to the wire's limit.
fn local_message(message: &str, remote: &Pod, local: &EventPod) -> String {
    let m = &remote.metadata;
    let (rns, rname) = (
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or(""),
    );
    let mut out = message
        .replace(
            &format!("{rns}/{rname}"),
            &format!("{}/{}", local.namespace, local.name),
        )
        .replace(
            &format!("{rname}_{rns}"),
            &format!("{}_{}", local.name, local.namespace),
        );
    // Whole names only where they differ from the local ones: a short
    // remote name equal to the local one needs nothing (and could be part
    // of another word).
    for (remote_part, local_part) in [
        (rns, local.namespace.as_str()),
        (rname, local.name.as_str()),
        (m.uid.as_deref().unwrap_or(""), local.uid.as_str()),
    ] {
        if !remote_part.is_empty() && remote_part != local_part {
            out = out.replace(remote_part, local_part);
        }
    }
    truncate_message(&out).to_string()
}

/// `spec.containers{c}`, `spec.initContainers{c}` or
/// `spec.ephemeralContainers{c}` with `c` a container of `pod` (their names
/// are the local ones): the kubelet's field paths, meaningful locally.
fn names_a_container(path: &str, pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let within = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('{'))
            .and_then(|rest| rest.strip_suffix('}'))
    };
    if let Some(name) = within("spec.containers") {
        return spec.containers.iter().any(|c| c.name == name);
    }
    if let Some(name) = within("spec.initContainers") {
        return spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == name);
    }
    if let Some(name) = within("spec.ephemeralContainers") {
        return spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| c.name == name);
    }
    false
}

/// What one caller gets after a cursor.
#[derive(Debug, PartialEq)]
pub struct Page {
    pub events: Vec<RemoteEvent>,
    pub cursor: String,
    pub more: bool,
}

/// The last [`RING_CAPACITY`] captured events, numbered. A cursor is
/// `<epoch>.<number>`: the epoch changes with every process, so a cursor
/// from before a restart reads everything held, never skips.
pub struct EventRing {
    epoch: String,
    inner: Mutex<Ring>,
}

struct Ring {
    capacity: usize,
    next: u64,
    entries: VecDeque<(u64, Captured)>,
    /// Remote Event UID -> (number, count) of its newest entry: an event
    /// seen again unchanged (a watch restart lists everything) is not kept
    /// twice.
    newest: HashMap<String, (u64, i32)>,
}

impl EventRing {
    pub fn new(capacity: usize) -> Self {
        // Unique per process; not a secret.
        let epoch = format!(
            "{:x}{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default()
        );
        Self {
            epoch,
            inner: Mutex::new(Ring {
                capacity: capacity.max(1),
                next: 1,
                entries: VecDeque::new(),
                newest: HashMap::new(),
            }),
        }
    }

    /// Keeps `c` unless the ring holds that remote Event with that count
    /// already; returns whether it was kept.
    pub fn push(&self, c: Captured) -> bool {
        let mut ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if ring
            .newest
            .get(&c.event.id)
            .is_some_and(|(_, count)| *count == c.event.count)
        {
            return false;
        }
        let n = ring.next;
        ring.next += 1;
        ring.newest.insert(c.event.id.clone(), (n, c.event.count));
        ring.entries.push_back((n, c));
        while ring.entries.len() > ring.capacity {
            if let Some((old, c)) = ring.entries.pop_front()
                && ring.newest.get(&c.event.id).is_some_and(|(n, _)| *n == old)
            {
                ring.newest.remove(&c.event.id);
            }
        }
        true
    }

    /// The events of `caller` after `since` (all held for an unknown or
    /// absent cursor), at most `max` of them.
    pub fn page(&self, caller: &str, since: Option<&str>, max: usize) -> Page {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let after = since
            .and_then(|s| s.split_once('.'))
            .filter(|(epoch, _)| *epoch == self.epoch)
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .filter(|n| *n < ring.next)
            .unwrap_or(0);
        let mut events = Vec::new();
        let mut last = ring.next - 1;
        let mut more = false;
        for (n, c) in ring.entries.iter().filter(|(n, _)| *n > after) {
            if c.caller != caller {
                continue;
            }
            if events.len() >= max.min(MAX_EVENTS) {
                more = true;
                break;
            }
            events.push(c.event.clone());
            last = *n;
        }
        if !more {
            // Nothing of this caller after the last one returned: skip the
            // others' events next time too.
            last = ring.next - 1;
        }
        Page {
            events,
            cursor: format!("{}.{last}", self.epoch),
            more,
        }
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
