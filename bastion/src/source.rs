//! Where the desired forwards come from: the remote pods the plugin created
//! ([`watch_pods`]), or a JSON file for tests and manual use ([`watch_file`]).
//!
//! The plugin copies the local pod's tunnel annotations onto the remote pod.
//! The bastion watches pods labelled `interlink.io=offloading` (all
//! namespaces, or one) through a kube-runtime reflector and recomputes the
//! desired set on every change, under its [`Policy`]: the gateways come from
//! its own configuration (`--gateways`, written by the plugin), and, when it
//! watches every namespace, only pods of namespaces the plugin owns count
//! (read with a `get` per namespace, cached for [`NAMESPACE_TTL`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use offload_wire::keys;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use offload_wire::tunnel::{GatewayPort, split_host_port};

use crate::desired::{
    Clash, Computed, Desired, Forwards, Gateway, Policy, Skipped, Target, from_pods,
};
use crate::metrics::{Metrics, ReasonLabels};

/// How long a namespace's ownership is believed before it is read again.
pub const NAMESPACE_TTL: Duration = Duration::from_secs(60);
/// How long a failed namespace read counts as "not owned" (fail closed).
const NAMESPACE_ERROR_TTL: Duration = Duration::from_secs(5);
/// How often the desired set is recomputed without a pod event (namespace
/// ownership may change).
const RECOMPUTE: Duration = Duration::from_secs(15);

/// What the pod source watches and what it accepts.
#[derive(Debug, Clone)]
pub struct PodSource {
    /// Watch this namespace only (the operator chose it: every pod in it
    /// counts); `None`: every namespace, and only plugin-owned ones count.
    pub namespace: Option<String>,
    pub label_selector: String,
    /// The gateways the plugin configured.
    pub gateways: BTreeSet<Gateway>,
    /// This plugin instance: owned namespaces must carry it too, when set.
    pub instance: Option<String>,
}

/// Whether the plugin (this instance, when `instance` is set) owns the
/// namespace: it created it with its managed-by label, and with its instance
/// label unless it was created before plugins had instances (such a
/// namespace keeps working after an upgrade: the plugin only creates
/// namespaces, it does not relabel them). Another instance's is not ours.
pub fn plugin_owned(ns: &Namespace, instance: Option<&str>) -> bool {
    let labels = ns.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    label(keys::LABEL_MANAGED_BY) == Some(keys::MANAGED_BY_PLUGIN)
        && instance.is_none_or(|i| label(keys::LABEL_PLUGIN_INSTANCE).is_none_or(|l| l == i))
}

/// Namespace ownership, read on demand and cached.
struct Owners {
    api: Api<Namespace>,
    instance: Option<String>,
    cache: HashMap<String, (bool, Instant)>,
}

impl Owners {
    /// Which of `names` the plugin owns (a failed read: not owned, for now).
    async fn owned(&mut self, names: BTreeSet<String>) -> BTreeSet<String> {
        let now = Instant::now();
        let mut out = BTreeSet::new();
        for name in names {
            let fresh = self.cache.get(&name).filter(|(_, until)| *until > now);
            let owned = match fresh {
                Some((o, _)) => *o,
                None => {
                    let (o, ttl) = match self.api.get_opt(&name).await {
                        Ok(ns) => (
                            ns.is_some_and(|n| plugin_owned(&n, self.instance.as_deref())),
                            NAMESPACE_TTL,
                        ),
                        Err(e) => {
                            warn!(namespace = %name, error = %e, "cannot read namespace; its pods are not forwarded for now");
                            (false, NAMESPACE_ERROR_TTL)
                        }
                    };
                    self.cache.insert(name.clone(), (o, now + ttl));
                    o
                }
            };
            if owned {
                out.insert(name);
            }
        }
        out
    }
}

/// Logs what is new among the ignored pods and clashes, and sets the metrics.
#[derive(Default)]
struct Reporter {
    skipped: BTreeSet<Skipped>,
    clashes: BTreeSet<Clash>,
}

impl Reporter {
    fn report(&mut self, c: &Computed, metrics: &Metrics) {
        let skipped: BTreeSet<Skipped> = c.skipped.iter().cloned().collect();
        for s in skipped.difference(&self.skipped) {
            warn!(pod = %s.pod, reason = %s.reason, "pod tunnel annotations ignored");
        }
        let clashes: BTreeSet<Clash> = c.clashes.iter().cloned().collect();
        for k in clashes.difference(&self.clashes) {
            warn!(gateway = %k.gateway, port = k.port.0, kept_by = %k.kept, claimed_by = %k.lost, "gateway port claimed twice; the oldest pod keeps it");
            metrics.port_clashes_total.inc();
        }
        metrics
            .port_clashes
            .set(i64::try_from(clashes.len()).unwrap_or(i64::MAX));
        let mut by_reason: BTreeMap<&'static str, i64> =
            ["bad_annotations", "foreign_namespace", "unknown_gateway"]
                .into_iter()
                .map(|r| (r, 0))
                .collect();
        for s in &skipped {
            *by_reason.entry(s.reason.label()).or_default() += 1;
        }
        for (reason, n) in by_reason {
            metrics
                .pods_ignored
                .get_or_create(&ReasonLabels {
                    reason: reason.to_owned(),
                })
                .set(n);
        }
        self.skipped = skipped;
        self.clashes = clashes;
    }
}

/// The desired forwards of `pods` under the policy: the configured
/// gateways and, watching every namespace, the plugin-owned namespaces.
async fn compute(pods: &[Arc<Pod>], source: &PodSource, owners: Option<&mut Owners>) -> Computed {
    let namespaces = match owners {
        None => None,
        Some(o) => {
            let seen = pods
                .iter()
                .filter_map(|p| p.metadata.namespace.clone())
                .collect();
            Some(o.owned(seen).await)
        }
    };
    let policy = Policy {
        gateways: source.gateways.clone(),
        namespaces,
    };
    from_pods(pods.iter().map(|p| p.as_ref()), &policy)
}

/// Watch pods and publish the desired forwards until `desired` has no receivers.
pub async fn watch_pods(
    client: Client,
    source: PodSource,
    metrics: Arc<Metrics>,
    desired: watch::Sender<Desired>,
) {
    let api: Api<Pod> = match &source.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut owners = source.namespace.is_none().then(|| Owners {
        api: Api::all(client),
        instance: source.instance.clone(),
        cache: HashMap::new(),
    });
    metrics
        .gateways_configured
        .set(i64::try_from(source.gateways.len()).unwrap_or(i64::MAX));
    info!(gateways = source.gateways.len(), instance = ?source.instance, "forwarding only to the configured gateways");
    let (store, writer) = reflector::store();
    let config = watcher::Config::default().labels(&source.label_selector);
    let stream = watcher(api, config).default_backoff().reflect(writer);
    futures::pin_mut!(stream);
    let mut tick = tokio::time::interval(RECOMPUTE);
    let mut synced = false;
    let mut reporter = Reporter::default();
    loop {
        tokio::select! {
            event = stream.next() => match event {
                None => return,
                Some(Err(e)) => {
                    warn!(error = %e, "pod watch error (retrying)");
                    continue;
                }
                // Do not publish a half-listed state during a (re)list.
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => continue,
                Some(Ok(_)) => synced = true,
            },
            _ = tick.tick() => if !synced { continue },
        }
        let pods = store.state();
        let computed = compute(&pods, &source, owners.as_mut()).await;
        reporter.report(&computed, &metrics);
        debug!(
            gateways = computed.desired.len(),
            "desired forwards computed"
        );
        let want = computed.desired;
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

/// One gateway of a forwards file.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileEntry {
    gateway: String,
    host_key: String,
    /// Gateway port -> `host:port` of the target.
    forwards: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("port {0:?}: not a port number")]
    Port(String),
    #[error("target {0:?} is not host:port")]
    Target(String),
}

/// The desired forwards of a forwards file: `[{"gateway": "host:port",
/// "hostKey": "ssh-ed25519 ...", "forwards": {"40000": "10.0.0.5:80"}}]`.
pub fn parse_forwards_file(text: &str) -> Result<Desired, FileError> {
    let entries: Vec<FileEntry> = serde_json::from_str(text)?;
    let mut desired = Desired::new();
    for e in entries {
        let mut f = Forwards::new();
        for (port, target) in e.forwards {
            let port: u16 = port.parse().map_err(|_| FileError::Port(port.clone()))?;
            let Some((host, tport)) = split_host_port(&target) else {
                return Err(FileError::Target(target));
            };
            let target = Target {
                host: host.to_owned(),
                port: tport,
            };
            f.insert(GatewayPort(port), target);
        }
        let gateway = Gateway {
            address: e.gateway,
            host_key: e.host_key,
        };
        desired.entry(gateway).or_default().extend(f);
    }
    Ok(desired)
}

/// Re-read `path` every half second and publish its forwards when it
/// changed; a broken file is logged and the last good forwards stay.
pub async fn watch_file(path: PathBuf, desired: watch::Sender<Desired>) {
    let mut last: Option<String> = None;
    loop {
        match tokio::fs::read_to_string(&path).await {
            Ok(text) if last.as_deref() != Some(text.as_str()) => {
                match parse_forwards_file(&text) {
                    Ok(d) => {
                        desired.send_replace(d);
                    }
                    Err(e) => warn!(path = %path.display(), error = %e, "bad forwards file"),
                }
                last = Some(text);
            }
            Ok(_) => {}
            Err(e) => warn!(path = %path.display(), error = %e, "cannot read forwards file"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use pretty_assertions::assert_eq;

    fn ns(labels: &[(&str, &str)]) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some("n".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn only_namespaces_the_plugin_created_are_owned() {
        let managed = (keys::LABEL_MANAGED_BY, keys::MANAGED_BY_PLUGIN);
        let ours = (keys::LABEL_PLUGIN_INSTANCE, "a");
        assert!(plugin_owned(&ns(&[managed]), None));
        assert!(plugin_owned(&ns(&[managed, ours]), Some("a")));
        // Told its instance, the bastion refuses another instance's namespace,
        // and takes one from before instances existed (an upgrade).
        assert!(plugin_owned(&ns(&[managed]), Some("a")));
        assert!(!plugin_owned(
            &ns(&[managed, (keys::LABEL_PLUGIN_INSTANCE, "b")]),
            Some("a")
        ));
        assert!(!plugin_owned(&ns(&[]), None));
        assert!(!plugin_owned(
            &ns(&[(keys::LABEL_MANAGED_BY, keys::MANAGED_BY_PROVIDER)]),
            None
        ));
        assert!(!plugin_owned(&Namespace::default(), None));
    }

    #[test]
    fn forwards_file() {
        let text = r#"[{"gateway": "127.0.0.1:2222", "hostKey": "ssh-ed25519 AAAA",
            "forwards": {"40000": "10.0.0.5:80", "40001": "[::1]:81"}}]"#;
        let gateway = Gateway {
            address: "127.0.0.1:2222".into(),
            host_key: "ssh-ed25519 AAAA".into(),
        };
        let target = |host: &str, port| Target {
            host: host.into(),
            port,
        };
        assert_eq!(
            parse_forwards_file(text).expect("parse"),
            Desired::from([(
                gateway,
                Forwards::from([
                    (GatewayPort(40000), target("10.0.0.5", 80)),
                    (GatewayPort(40001), target("::1", 81)),
                ])
            )])
        );
        for bad in [
            r#"[{"gateway": "g:1", "hostKey": "k", "forwards": {"x": "a:1"}}]"#,
            r#"[{"gateway": "g:1", "hostKey": "k", "forwards": {"1": "a"}}]"#,
            r#"[{"gateway": "g:1", "hostKey": "k", "forwards": {}, "extra": 1}]"#,
        ] {
            assert!(parse_forwards_file(bad).is_err(), "{bad}");
        }
    }
}
