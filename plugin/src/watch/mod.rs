//! `GET /status/watch` (contract: `offload_wire::watch`): the stream of
//! status changes of a caller's pods, fed by the one remote pod reflector
//! ([`crate::remote::Remote::start`] hands every event to [`StatusWatch::tap`];
//! there is no second watch of the remote pods).
//!
//! - [`journal`]: numbering, the ring of recent changes, resume tokens,
//!   per-caller fan-out through bounded channels (pure);
//! - `stream`: the HTTP handler (replay, then the live lines, bookmarks);
//! - here: remote pod -> [`journal::Observed`] (the `/status` mapping of
//!   [`crate::status`], keyed by the local identity the remote pod carries),
//!   and the bookmark ticker.
//!
//! A caller is principal + `node` ([`crate::caller`]); only pods of this
//! plugin instance labelled with that caller are ever sent to it.

pub mod journal;
mod stream;

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use offload_wire::{keys, watch::BOOKMARK_SECONDS};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use self::journal::{Journal, JournalCounters, Observed, Step};
pub(crate) use self::stream::handler;
use crate::{metrics::Metrics, status::LocalIdentity};

/// Lines that may wait for one slow reader before it is cut off (it then
/// resumes, from the ring or with a full replay).
const SUBSCRIBER_BUFFER: usize = 1024;

/// The status watch of one plugin process.
pub struct StatusWatch {
    journal: Journal,
    instance: String,
    /// One permit per open stream (`--max-watch-streams`).
    streams: Arc<Semaphore>,
    max_streams: usize,
    open: Gauge,
}

impl StatusWatch {
    /// `history` changes are kept for resumes, at most `max_streams`
    /// streams are open at once.
    pub fn new(instance: String, history: usize, max_streams: usize, metrics: &Metrics) -> Self {
        let counters = JournalCounters {
            changes: metrics.watch_changes.clone(),
            slow_disconnects: metrics.watch_slow_disconnects.clone(),
        };
        Self {
            journal: Journal::new(Journal::new_epoch(), history, SUBSCRIBER_BUFFER, counters),
            instance,
            streams: Arc::new(Semaphore::new(max_streams)),
            max_streams,
            open: metrics.watch_streams.clone(),
        }
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Called by the reflector's task for every event, after the store
    /// took it: the change reaches the open streams at once.
    pub fn tap(&self, event: &watcher::Event<Pod>) {
        let step = match event {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                match observe(p, &self.instance) {
                    Some(o) => Step::Applied(Box::new(o)),
                    None => return,
                }
            }
            watcher::Event::Delete(p) => match key_of(p) {
                Some(k) => Step::Deleted(k),
                None => return,
            },
            watcher::Event::Init => Step::RelistStart,
            watcher::Event::InitDone => Step::RelistDone,
        };
        self.journal.apply(step);
    }

    /// Sends a bookmark to every stream every [`BOOKMARK_SECONDS`] until
    /// `cancel`.
    pub async fn run_bookmarks(self: Arc<Self>, cancel: CancellationToken) {
        let every = Duration::from_secs(BOOKMARK_SECONDS);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => self.journal.bookmark(),
            }
        }
    }
}

fn key_of(p: &Pod) -> Option<journal::RemoteKey> {
    Some((p.metadata.namespace.clone()?, p.metadata.name.clone()?))
}

/// The local identity a remote pod carries (UID label, source name and
/// namespace annotations), if it has all of it.
pub fn local_identity(p: &Pod) -> Option<LocalIdentity> {
    let label = |k: &str| p.metadata.labels.as_ref()?.get(k).cloned();
    let annotation = |k: &str| p.metadata.annotations.as_ref()?.get(k).cloned();
    Some(LocalIdentity {
        uid: label(keys::LABEL_SOURCE_POD_UID)?,
        name: annotation(keys::ANNOTATION_SOURCE_NAME)?,
        namespace: annotation(keys::ANNOTATION_SOURCE_NAMESPACE)?,
    })
}

/// The caller of a remote pod of this instance; `None` for another
/// instance's pod or one without a caller.
pub fn caller_of(p: &Pod, instance: &str) -> Option<String> {
    let (caller, inst) = crate::caller::labels_of(p);
    (inst.as_deref() == Some(instance))
        .then_some(caller)
        .flatten()
}

/// A remote pod as the journal sees it: `None` when it is not one a caller
/// of this instance may see.
pub fn observe(p: &Pod, instance: &str) -> Option<Observed> {
    let caller = caller_of(p, instance)?;
    let id = local_identity(p)?;
    let status = crate::status::pod_status(&id, None, Some(p));
    Some(Observed {
        key: key_of(p)?,
        caller,
        id,
        status,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{
        api::core::v1::{Container, PodSpec},
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    use super::*;

    fn remote_pod(instance: &str, caller: Option<&str>) -> Pod {
        let mut labels = BTreeMap::from([
            (keys::LABEL_SOURCE_POD_UID.to_owned(), "u1".to_owned()),
            (keys::LABEL_PLUGIN_INSTANCE.to_owned(), instance.to_owned()),
        ]);
        if let Some(c) = caller {
            labels.insert(keys::LABEL_CALLER.to_owned(), c.to_owned());
        }
        Pod {
            metadata: ObjectMeta {
                name: Some("remote-name".into()),
                namespace: Some("offloading-team".into()),
                uid: Some("r1".into()),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([
                    (keys::ANNOTATION_SOURCE_NAME.to_owned(), "web".to_owned()),
                    (
                        keys::ANNOTATION_SOURCE_NAMESPACE.to_owned(),
                        "team".to_owned(),
                    ),
                ])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn a_remote_pod_is_seen_under_its_local_identity_by_its_caller_only() {
        let o = observe(&remote_pod("inst", Some("c1")), "inst").expect("ours");
        assert_eq!(o.caller, "c1");
        assert_eq!(o.key, ("offloading-team".into(), "remote-name".into()));
        assert_eq!(
            (o.status.name.as_str(), o.status.namespace.as_str()),
            ("web", "team")
        );
        assert_eq!((o.status.uid.as_str(), o.status.jid.as_str()), ("u1", "r1"));
        assert_eq!(o.status.containers.len(), 1);
        assert_eq!(observe(&remote_pod("other", Some("c1")), "inst"), None);
        assert_eq!(observe(&remote_pod("inst", None), "inst"), None);
        let mut anonymous = remote_pod("inst", Some("c1"));
        anonymous.metadata.annotations = None;
        assert_eq!(observe(&anonymous, "inst"), None);
    }
}
