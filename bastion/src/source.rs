//! Where the desired forwards come from: the remote pods the plugin created.
//!
//! The plugin copies the local pod's annotations onto the remote pod, so the
//! tunnel annotations written by gateway-manager arrive with it. The bastion
//! watches pods labelled `interlink.io=offloading` (all namespaces, or one)
//! through a kube-runtime reflector and recomputes the desired set on every
//! change; a new forward is requested as soon as the pod has an IP.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::desired::{Desired, from_pods};

/// Watch pods and publish the desired forwards until `desired` has no receivers.
pub async fn watch_pods(
    client: Client,
    namespace: Option<String>,
    label_selector: String,
    desired: watch::Sender<Desired>,
) {
    let api: Api<Pod> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let (store, writer) = reflector::store();
    let config = watcher::Config::default().labels(&label_selector);
    let stream = watcher(api, config).default_backoff().reflect(writer);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Err(e) => {
                warn!(error = %e, "pod watch error (retrying)");
                continue;
            }
            // Do not publish a half-listed state during a (re)list.
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(_) => {}
        }
        let pods = store.state();
        let (want, skipped) = from_pods(pods.iter().map(|p| p.as_ref()));
        for s in skipped {
            debug!(pod = %s.pod, reason = %s.reason, "pod tunnel annotations unusable");
        }
        desired.send_if_modified(|d| {
            let changed = *d != want;
            *d = want;
            changed
        });
        if desired.is_closed() {
            return;
        }
    }
}
