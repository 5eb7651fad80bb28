//! Namespace GC: remote namespaces this plugin instance created, that have
//! been empty and unused for `--namespace-gc-after`, are deleted (before,
//! they piled up forever: one per local namespace that ever offloaded).
//!
//! Only namespaces labelled managed-by `offload-plugin` *and* with this
//! instance's `offload.dev/plugin-instance`, strictly under the (non-empty)
//! prefix, never an exclusion, never the bastion's. "Empty" means no pod at
//! all and no PersistentVolumeClaim (user data the pods mounted); our
//! ConfigMaps and Secrets are owned by our pods and go with them. "Unused":
//! every scan of this process saw it empty for the whole time, and the
//! namespace is itself older than that (a create setting it up right now is
//! not yet done). The delete carries the UID and resourceVersion read just
//! after a last emptiness check, so a namespace replaced or relabelled in
//! between is not deleted; a create racing the last moment finds the
//! namespace terminating and is answered "retry" (`remote::Remote::create`).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Preconditions},
};
use offload_wire::keys;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{metrics::Metrics, remote::Remote};

/// What the GC needs to know.
#[derive(Clone, Debug)]
pub struct GcConfig {
    pub instance: String,
    /// The namespace prefix (GC is off without one).
    pub prefix: String,
    /// Never collected, whatever their labels (the bastion's, exclusions).
    pub protected: Vec<String>,
    pub after: Duration,
    pub every: Duration,
}

impl GcConfig {
    /// Whether `ns` (labelled ours) may be collected at all.
    pub fn may_collect(&self, ns: &str) -> bool {
        !self.prefix.is_empty()
            && ns
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('-'))
            && !self.protected.iter().any(|p| p == ns)
            && !ns.starts_with("kube-")
    }

    fn selector(&self) -> String {
        format!(
            "{}={},{}={}",
            keys::LABEL_MANAGED_BY,
            keys::MANAGED_BY_PLUGIN,
            keys::LABEL_PLUGIN_INSTANCE,
            self.instance
        )
    }
}

/// Since when each namespace has been seen empty. Pure.
#[derive(Debug, Default)]
pub struct EmptySince(HashMap<String, Instant>);

impl EmptySince {
    /// Records one scan's observation; returns whether `ns` has now been
    /// empty for `after`.
    pub fn observe(&mut self, ns: &str, empty: bool, now: Instant, after: Duration) -> bool {
        if !empty {
            self.0.remove(ns);
            return false;
        }
        let since = *self.0.entry(ns.to_string()).or_insert(now);
        now.saturating_duration_since(since) >= after
    }

    /// Drops namespaces that are gone.
    pub fn retain(&mut self, present: &[String]) {
        self.0.retain(|ns, _| present.contains(ns));
    }
}

/// Runs the GC until `cancel` (nothing if `after` is zero or no prefix).
pub(crate) async fn run(
    remote: Arc<Remote>,
    cfg: GcConfig,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    if cfg.after.is_zero() {
        return;
    }
    if cfg.prefix.is_empty() {
        warn!("namespace GC is off: it needs a namespace prefix");
        return;
    }
    info!(instance = %cfg.instance, after = ?cfg.after, "namespace GC on");
    let mut seen = EmptySince::default();
    let mut tick = tokio::time::interval(cfg.every.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !remote.is_ready() {
            continue;
        }
        if let Err(e) = scan(&remote, &cfg, &metrics, &mut seen).await {
            metrics.namespace_gc_result("error");
            warn!(error = %e, "namespace GC scan failed");
        }
    }
}

async fn scan(
    remote: &Remote,
    cfg: &GcConfig,
    metrics: &Metrics,
    seen: &mut EmptySince,
) -> Result<(), kube::Error> {
    let api: Api<Namespace> = Api::all(remote.client().clone());
    metrics.remote_call("list_namespaces");
    let list = api
        .list(&ListParams::default().labels(&cfg.selector()))
        .await?;
    let jiff_now = jiff::Timestamp::now();
    let mut present = Vec::new();
    for ns in list.items {
        let Some(name) = ns.metadata.name.clone() else {
            continue;
        };
        present.push(name.clone());
        if !cfg.may_collect(&name) || ns.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let empty = is_empty(remote, &name, metrics).await?;
        let old_enough = ns
            .metadata
            .creation_timestamp
            .as_ref()
            .is_some_and(|t| age(jiff_now, t.0) >= cfg.after);
        if seen.observe(&name, empty, Instant::now(), cfg.after) && old_enough {
            collect(remote, &name, metrics).await;
        } else if empty {
            debug!(namespace = %name, "namespace GC: empty, within its grace");
        }
    }
    seen.retain(&present);
    Ok(())
}

fn age(now: jiff::Timestamp, then: jiff::Timestamp) -> Duration {
    Duration::try_from(now.duration_since(then)).unwrap_or(Duration::ZERO)
}

/// No pod (cached of ours, or any in the apiserver) and no claim.
async fn is_empty(remote: &Remote, ns: &str, metrics: &Metrics) -> Result<bool, kube::Error> {
    let cached = remote
        .store()
        .state()
        .iter()
        .any(|p| p.metadata.namespace.as_deref() == Some(ns));
    if cached {
        return Ok(false);
    }
    let one = ListParams::default().limit(1);
    metrics.remote_call("list_pods");
    let pods: Api<Pod> = Api::namespaced(remote.client().clone(), ns);
    if !pods.list_metadata(&one).await?.items.is_empty() {
        return Ok(false);
    }
    metrics.remote_call("list_pvcs");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(remote.client().clone(), ns);
    Ok(pvcs.list_metadata(&one).await?.items.is_empty())
}

/// Deletes `ns` if it is still empty, with the UID and resourceVersion read
/// right after that last check.
async fn collect(remote: &Remote, ns: &str, metrics: &Metrics) {
    let api: Api<Namespace> = Api::all(remote.client().clone());
    let result = async {
        metrics.remote_call("get_namespace");
        let Some(current) = api.get_opt(ns).await? else {
            return Ok("gone");
        };
        if !is_empty(remote, ns, metrics).await? {
            return Ok("in_use");
        }
        let pre = Preconditions {
            uid: current.metadata.uid.clone(),
            resource_version: current.metadata.resource_version.clone(),
        };
        metrics.remote_call("delete_namespace");
        match api
            .delete(ns, &DeleteParams::default().preconditions(pre))
            .await
        {
            Ok(_) => Ok("deleted"),
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok("changed"),
            Err(e) => Err(e),
        }
    }
    .await;
    match result {
        Ok(outcome) => {
            metrics.namespace_gc_result(outcome);
            if outcome == "deleted" {
                remote.namespace_gone(ns);
                info!(
                    namespace = ns,
                    "namespace GC: deleted empty remote namespace"
                );
            } else {
                debug!(namespace = ns, outcome, "namespace GC: kept");
            }
        }
        Err(e) => {
            metrics.namespace_gc_result("error");
            warn!(namespace = ns, error = %e, "namespace GC: delete failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GcConfig {
        GcConfig {
            instance: "i".into(),
            prefix: "offloading".into(),
            protected: vec!["offloading-bastion".into()],
            after: Duration::from_secs(60),
            every: Duration::from_secs(5),
        }
    }

    #[test]
    fn only_namespaces_strictly_under_a_prefix_and_not_protected() {
        let c = cfg();
        assert!(c.may_collect("offloading-team-a"));
        assert!(!c.may_collect("offloading-"));
        assert!(!c.may_collect("offloading"));
        assert!(!c.may_collect("offloadingx-a"));
        assert!(!c.may_collect("offloading-bastion"));
        assert!(!c.may_collect("kube-system"));
        assert!(
            !GcConfig {
                prefix: String::new(),
                ..cfg()
            }
            .may_collect("anything")
        );
        assert_eq!(
            c.selector(),
            "app.kubernetes.io/managed-by=offload-plugin,offload.dev/plugin-instance=i"
        );
    }

    #[test]
    fn empty_for_the_whole_time_and_any_pod_restarts_the_clock() {
        let t0 = Instant::now();
        let after = Duration::from_secs(60);
        let mut s = EmptySince::default();
        assert!(!s.observe("a", true, t0, after));
        assert!(!s.observe("a", true, t0 + Duration::from_secs(59), after));
        assert!(!s.observe("a", false, t0 + Duration::from_secs(60), after));
        assert!(!s.observe("a", true, t0 + Duration::from_secs(61), after));
        assert!(s.observe("a", true, t0 + Duration::from_secs(121), after));
        s.retain(&[]);
        assert!(!s.observe("a", true, t0 + Duration::from_secs(200), after));
    }
}
