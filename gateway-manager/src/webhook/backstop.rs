//! The watcher backstop: after creation, reconcile the pods of the virtual
//! node (hand reservations over, give ports to pods admitted while the
//! webhook was down) and release the ports of pods that go away.
//!
//! Two watches instead of every pod of the cluster: pods bound to the node
//! (`spec.nodeName=<node>`) and pods not scheduled yet (`spec.nodeName=`),
//! where a pod pinned by `nodeSelector` waits. A pod leaving the second
//! watch (the apiserver reports it deleted from that watch) was either
//! deleted or bound; the backstop asks the apiserver which.
//!
//! Pods deleted while a watch was down are found missing when both watches
//! have listed again ([`Seen`], pure).

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::admission::targets_node;
use super::reservations::Webhook;
use crate::manager::TunnelPod;

/// The two pod watches of the backstop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodWatch {
    /// Pods bound to the virtual node.
    Bound,
    /// Pods no scheduler has bound yet.
    Unscheduled,
}

impl PodWatch {
    const ALL: [PodWatch; 2] = [PodWatch::Bound, PodWatch::Unscheduled];

    fn index(self) -> usize {
        self as usize
    }

    /// The field selector of this watch for virtual node `node`.
    pub fn field_selector(self, node: &str) -> String {
        match self {
            PodWatch::Bound => format!("spec.nodeName={node}"),
            PodWatch::Unscheduled => "spec.nodeName=".to_owned(),
        }
    }
}

/// The pods (UIDs) of the node each watch holds, to tell which tunneled
/// pods vanished while a watch was down.
#[derive(Debug, Default)]
pub struct Seen {
    watches: [Membership; 2],
}

#[derive(Debug, Default)]
struct Membership {
    /// What the watch holds, as of its last complete list and the events since.
    current: BTreeSet<String>,
    /// Being re-listed: what the list returned so far.
    relist: Option<BTreeSet<String>>,
    /// Listed completely at least once.
    listed: bool,
}

impl Seen {
    /// Watch `w` starts a (re-)list.
    pub fn init(&mut self, w: PodWatch) {
        self.watches[w.index()].relist = Some(BTreeSet::new());
    }

    /// Watch `w` holds pod `uid`.
    pub fn apply(&mut self, w: PodWatch, uid: &str) {
        let m = &mut self.watches[w.index()];
        match m.relist.as_mut() {
            Some(r) => r.insert(uid.to_owned()),
            None => m.current.insert(uid.to_owned()),
        };
    }

    /// Watch `w` no longer holds pod `uid`.
    pub fn delete(&mut self, w: PodWatch, uid: &str) {
        let m = &mut self.watches[w.index()];
        m.current.remove(uid);
        if let Some(r) = m.relist.as_mut() {
            r.remove(uid);
        }
    }

    /// Watch `w` finished its list. True when both watches have a complete
    /// list now: then a tunneled pod neither holds is gone.
    pub fn init_done(&mut self, w: PodWatch) -> bool {
        let m = &mut self.watches[w.index()];
        m.current = m.relist.take().unwrap_or_default();
        m.listed = true;
        self.watches.iter().all(|m| m.listed && m.relist.is_none())
    }

    /// Whether some watch holds pod `uid`.
    pub fn holds(&self, uid: &str) -> bool {
        self.watches
            .iter()
            .any(|m| m.current.contains(uid) || m.relist.as_ref().is_some_and(|r| r.contains(uid)))
    }

    /// The tunneled pods no watch holds.
    pub fn vanished<'a>(&self, tunneled: &'a [TunnelPod]) -> Vec<&'a TunnelPod> {
        tunneled.iter().filter(|t| !self.holds(&t.uid)).collect()
    }
}

/// A stand-in for a pod that is gone, enough to release it.
pub fn gone_pod(t: &TunnelPod) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(t.name.clone()),
            namespace: Some(t.namespace.clone()),
            uid: Some(t.uid.clone()),
            ..Default::default()
        },
        ..Default::default()
    }
}

type PodEvents = std::pin::Pin<
    Box<dyn Stream<Item = (PodWatch, Result<watcher::Event<Pod>, watcher::Error>)> + Send>,
>;

/// Both watches of `node`'s pods as one stream, each with kube-runtime's
/// default backoff between failed attempts.
fn pod_events(client: Client, node: &str) -> PodEvents {
    let streams = PodWatch::ALL.map(|w| {
        let api: Api<Pod> = Api::all(client.clone());
        let cfg = watcher::Config::default().fields(&w.field_selector(node));
        watcher(api, cfg)
            .default_backoff()
            .map(move |ev| (w, ev))
            .boxed()
    });
    futures::stream::select_all(streams).boxed()
}

impl Webhook {
    /// Watch the node's pods until `cancel`: reconcile those targeting the
    /// node, release those that go away.
    pub async fn watch_pods_until(self: Arc<Self>, client: Client, cancel: CancellationToken) {
        let mut events = pod_events(client, &self.node);
        let mut seen = Seen::default();
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                _ = cancel.cancelled() => return,
            };
            match next {
                Some((w, Ok(ev))) => self.on_event(w, ev, &mut seen).await,
                // The stream backs off before its next attempt.
                Some((w, Err(e))) => warn!(watch = ?w, error = %e, "pod watch failed; retrying"),
                None => return,
            }
        }
    }

    async fn on_event(&self, w: PodWatch, ev: watcher::Event<Pod>, seen: &mut Seen) {
        match ev {
            watcher::Event::Init => seen.init(w),
            watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                if targets_node(&p, &self.node)
                    && let Some(uid) = p.metadata.uid.as_deref()
                {
                    seen.apply(w, uid);
                }
                self.reconcile_or_retry(p).await;
            }
            watcher::Event::InitDone => {
                if seen.init_done(w) {
                    self.release_vanished(seen).await;
                }
            }
            watcher::Event::Delete(p) => {
                if let Some(uid) = p.metadata.uid.as_deref() {
                    seen.delete(w, uid);
                }
                match w {
                    PodWatch::Bound => self.release_or_log(&p).await,
                    PodWatch::Unscheduled if targets_node(&p, &self.node) => {
                        self.release_if_gone(p).await
                    }
                    PodWatch::Unscheduled => {}
                }
            }
        }
    }

    /// Release the tunneled pods deleted while we were not watching.
    async fn release_vanished(&self, seen: &Seen) {
        let tunneled = self.gm.tunnel_pods();
        for t in seen.vanished(&tunneled) {
            if let Err(e) = self.release(&gone_pod(t)).await {
                warn!(pod = %t.name, namespace = %t.namespace, error = %e, "cannot release a vanished pod");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn tunneled(uid: &str) -> TunnelPod {
        TunnelPod {
            namespace: "apps".into(),
            name: format!("pod-{uid}"),
            uid: uid.into(),
            ports: Default::default(),
            workload_service: None,
        }
    }

    fn uids(v: Vec<&TunnelPod>) -> Vec<&str> {
        v.into_iter().map(|t| t.uid.as_str()).collect()
    }

    #[test]
    fn selectors_split_bound_and_unscheduled_pods() {
        assert_eq!(PodWatch::Bound.field_selector("vk"), "spec.nodeName=vk");
        assert_eq!(PodWatch::Unscheduled.field_selector("vk"), "spec.nodeName=");
    }

    #[test]
    fn vanished_only_once_both_watches_listed() {
        let all = [tunneled("a"), tunneled("b"), tunneled("c")];
        let mut seen = Seen::default();
        seen.init(PodWatch::Bound);
        seen.init(PodWatch::Unscheduled);
        seen.apply(PodWatch::Bound, "a");
        // The other watch is still listing: nothing can be called gone.
        assert!(!seen.init_done(PodWatch::Bound));
        seen.apply(PodWatch::Unscheduled, "b");
        assert!(seen.init_done(PodWatch::Unscheduled));
        assert_eq!(uids(seen.vanished(&all)), vec!["c"]);

        // A pod moving from unscheduled to bound is held all along.
        seen.delete(PodWatch::Unscheduled, "b");
        seen.apply(PodWatch::Bound, "b");
        assert_eq!(uids(seen.vanished(&all)), vec!["c"]);

        // Re-list of one watch: what the other holds still counts, what the
        // re-list has returned so far too; "a" was deleted meanwhile.
        seen.init(PodWatch::Bound);
        assert!(seen.holds("a"));
        seen.apply(PodWatch::Bound, "b");
        assert!(seen.init_done(PodWatch::Bound));
        assert_eq!(uids(seen.vanished(&all)), vec!["a", "c"]);
    }

    #[test]
    fn gone_pods_carry_what_release_needs() {
        let p = gone_pod(&tunneled("u1"));
        assert_eq!(p.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(p.metadata.name.as_deref(), Some("pod-u1"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("apps"));
    }
}
