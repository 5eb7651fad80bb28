//! The bastion, installed and kept by the plugin: one per remote cluster, it
//! carries the SSH reverse tunnels of every offloaded pod with ports.
//!
//! The plugin applies it with [`offload_bastion::install::apply`] at start
//! and again every `--bastion-resync-interval` (so a deleted Deployment,
//! Secret or RBAC object comes back by itself). The bastion's ed25519 key is
//! generated once on the remote side and kept in a remote Secret; only its
//! public key leaves the cluster, through `GET /bastion/publicKey`, for the
//! provider's gateway to authorize. The bastion watches the remote pods
//! (label `interlink.io=offloading`) and reads the tunnel annotations the
//! plugin copies from the local pod, but it dials only the gateways the
//! plugin configured it with: every create request (authenticated: only a
//! provider sends one) names its gateway (address and pinned host key), the
//! plugin remembers it ([`BastionKey::learn_gateway`]) and re-applies the
//! bastion's Deployment with it (`--gateways`, through `BASTION_GATEWAYS`).
//! A restarted plugin starts from the gateways in the current Deployment, so
//! none is dropped. A pod a remote tenant labels by hand names no gateway the
//! bastion will dial.

use std::collections::{BTreeMap, BTreeSet};
use std::{sync::Mutex, sync::RwLock, time::Duration};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};
use offload_bastion::desired::Gateway;
use offload_bastion::install::{self, BastionSpec};
use offload_runtime::kubeapi;
use offload_wire::tunnel::{TunnelAnnotations, normalise_public_key, split_host_port};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::remote::{FIELD_MANAGER, namespace_labels};

/// Where the namespace of an in-cluster pod is written.
const IN_CLUSTER_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// Bastion namespace when neither the flag nor an in-cluster namespace says.
pub const DEFAULT_NAMESPACE: &str = "offload-system";

/// The namespace the plugin runs in (in-cluster), if any.
pub fn own_namespace() -> Option<String> {
    std::fs::read_to_string(IN_CLUSTER_NAMESPACE)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// What `GET /bastion/publicKey` can say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// `--no-bastion`: this plugin keeps no bastion.
    Disabled,
    /// Not installed yet; the last error, if an attempt failed.
    Pending {
        namespace: String,
        error: Option<String>,
    },
    /// Installed; the bastion's public key (`ssh-ed25519 AAAA…`).
    Ready { namespace: String, key: String },
}

/// The bastion's public key as the HTTP layer sees it.
/// Also the gateways the bastion may dial, learnt from create requests.
#[derive(Debug)]
pub struct BastionKey {
    state: RwLock<KeyState>,
    gateways: Mutex<BTreeSet<Gateway>>,
    /// Woken when a new gateway is learnt: the bastion is re-applied at once.
    new_gateway: Notify,
}

/// The gateway named by a create request's tunnel annotations, checked
/// (`host:port`, an OpenSSH public key), the key without its comment.
pub fn gateway_of(annotations: &BTreeMap<String, String>) -> Option<Gateway> {
    let t = TunnelAnnotations::from_map(annotations).ok()??;
    split_host_port(&t.gateway_address)?;
    let host_key = normalise_public_key(&t.gateway_host_key).ok()?;
    Some(Gateway {
        address: t.gateway_address,
        host_key,
    })
}

impl BastionKey {
    fn with_state(state: KeyState) -> Self {
        Self {
            state: RwLock::new(state),
            gateways: Mutex::new(BTreeSet::new()),
            new_gateway: Notify::new(),
        }
    }

    pub fn disabled() -> Self {
        Self::with_state(KeyState::Disabled)
    }

    pub fn pending(namespace: &str) -> Self {
        Self::with_state(KeyState::Pending {
            namespace: namespace.to_owned(),
            error: None,
        })
    }

    /// A create request's pod annotations: remember its gateway for the
    /// bastion. Call only with what an authenticated caller sent. Returns
    /// whether the gateway is new.
    pub fn learn_gateway(&self, annotations: Option<&BTreeMap<String, String>>) -> bool {
        if self.get() == KeyState::Disabled {
            return false;
        }
        let Some(gw) = annotations.and_then(gateway_of) else {
            return false;
        };
        let new = self.lock_gateways().insert(gw.clone());
        if new {
            info!(gateway = %gw.address, "new tunnel gateway; configuring the bastion with it");
            self.new_gateway.notify_one();
        }
        new
    }

    /// The gateways learnt so far.
    pub fn gateways(&self) -> BTreeSet<Gateway> {
        self.lock_gateways().clone()
    }

    fn lock_gateways(&self) -> std::sync::MutexGuard<'_, BTreeSet<Gateway>> {
        self.gateways.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self) -> KeyState {
        self.state
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn set(&self, s: KeyState) {
        match self.state.write() {
            Ok(mut g) => *g = s,
            Err(e) => *e.into_inner() = s,
        }
    }

    /// The result of one apply: a key makes it ready; an error keeps a key
    /// already known (the Secret is only ever read, so the key stays valid).
    fn record(&self, namespace: &str, result: Result<String, String>) {
        let next = match (result, self.get()) {
            (Ok(key), _) => KeyState::Ready {
                namespace: namespace.to_owned(),
                key,
            },
            (Err(_), ready @ KeyState::Ready { .. }) => ready,
            (Err(error), _) => KeyState::Pending {
                namespace: namespace.to_owned(),
                error: Some(error),
            },
        };
        self.set(next);
    }
}

/// Creates a namespace when it does not exist: the bastion's (out of cluster
/// the default `offload-system` usually does not exist), and a watched
/// namespace the plugin would otherwise create only with its first pod (the
/// bastion's Role lives there). `offloading`: labelled like the namespaces
/// the plugin maps pods to.
async fn ensure_namespace(client: &Client, ns: &str, offloading: bool) -> Result<(), kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(ns).await?.is_some() {
        return Ok(());
    }
    let labels = namespace_labels(offloading);
    if kubeapi::create_namespace(client, FIELD_MANAGER, ns, labels).await? {
        info!(namespace = ns, "created a namespace for the bastion");
    }
    Ok(())
}

/// A kube error in one line (the apiserver's message, not its whole Status).
fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// One install pass: namespaces, then the bastion's objects. Returns the
/// bastion's public key.
pub async fn apply_once(client: &Client, spec: &BastionSpec) -> Result<String, String> {
    ensure_namespace(client, &spec.namespace, false)
        .await
        .map_err(|e| format!("bastion namespace {:?}: {}", spec.namespace, short(&e)))?;
    if let Some(watched) = &spec.watch_namespace {
        ensure_namespace(client, watched, true)
            .await
            .map_err(|e| format!("watched namespace {watched:?}: {}", short(&e)))?;
    }
    install::apply(client, spec).await.map_err(|e| {
        let why = match &e {
            install::Error::Kube(k) => short(k),
            other => other.to_string(),
        };
        format!("installing the bastion in {:?}: {why}", spec.namespace)
    })
}

/// Installs the bastion and keeps it: re-applies every `every` (quicker,
/// with backoff, while it fails) until `cancel`.
pub async fn keep(
    client: Client,
    spec: BastionSpec,
    key: std::sync::Arc<BastionKey>,
    every: Duration,
    metrics: std::sync::Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut spec = spec;
    let every = every.max(Duration::from_secs(1));
    let mut failures: u32 = 0;
    seed_gateways(&client, &spec, &key).await;
    loop {
        spec.gateways = key.gateways();
        let result = apply_once(&client, &spec).await;
        metrics.bastion_apply(result.is_ok());
        let delay = match &result {
            Ok(k) => {
                if !matches!(key.get(), KeyState::Ready { key: ref old, .. } if old == k) {
                    info!(namespace = %spec.namespace, public_key = %k, "bastion installed");
                }
                failures = 0;
                every
            }
            Err(e) => {
                warn!(error = %e, "bastion not installed; retrying");
                failures = failures.saturating_add(1);
                let backoff = Duration::from_secs(1) * 2u32.saturating_pow(failures.min(5) - 1);
                backoff.min(every)
            }
        };
        key.record(&spec.namespace, result);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
            _ = key.new_gateway.notified() => {}
        }
    }
}

/// The gateways of the Deployment a previous run applied: a restarted
/// plugin keeps configuring them (the Deployment is only written by us).
async fn seed_gateways(client: &Client, spec: &BastionSpec, key: &BastionKey) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &spec.namespace);
    match api.get_opt(&spec.name).await {
        Ok(Some(d)) => {
            let known = BastionSpec::gateways_of(&d);
            info!(
                gateways = known.len(),
                "bastion gateways taken over from its Deployment"
            );
            key.lock_gateways().extend(known);
        }
        Ok(None) => {}
        Err(e) => {
            warn!(error = %short(&e), "cannot read the bastion Deployment; its gateways come back with the next creates")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use offload_wire::keys::tunnel;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDW0qSYcz0v4W0o7cWQn0eNqJXyYcEVrwNJZKJ8sBqXk";

    fn ann(addr: &str, key: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (tunnel::GATEWAY_ADDRESS.to_owned(), addr.to_owned()),
            (tunnel::GATEWAY_HOST_KEY.to_owned(), key.to_owned()),
            (tunnel::PORTS.to_owned(), r#"{"80":40000}"#.to_owned()),
        ])
    }

    #[test]
    fn gateways_are_learnt_from_create_requests_once_and_checked() {
        let k = BastionKey::pending("offload-system");
        assert!(k.learn_gateway(Some(&ann("10.0.0.1:30222", &format!("{KEY} gw")))));
        assert!(!k.learn_gateway(Some(&ann("10.0.0.1:30222", KEY))));
        assert!(!k.learn_gateway(Some(&ann("no-port", KEY))));
        assert!(!k.learn_gateway(Some(&ann("10.0.0.1:1", "not a key"))));
        assert!(!k.learn_gateway(None));
        let gws = k.gateways();
        assert_eq!(gws.len(), 1);
        let gw = gws.first().expect("one");
        assert_eq!(gw.host_key, KEY, "normalised, without the comment");
        let off = BastionKey::disabled();
        assert!(!off.learn_gateway(Some(&ann("10.0.0.1:30222", KEY))));
    }

    #[test]
    fn a_known_key_survives_a_failed_reapply() {
        let k = BastionKey::pending("offload-system");
        k.record("offload-system", Err("apiserver down".into()));
        assert_eq!(
            k.get(),
            KeyState::Pending {
                namespace: "offload-system".into(),
                error: Some("apiserver down".into())
            }
        );
        k.record("offload-system", Ok("ssh-ed25519 AAAA".into()));
        k.record("offload-system", Err("apiserver down".into()));
        assert_eq!(
            k.get(),
            KeyState::Ready {
                namespace: "offload-system".into(),
                key: "ssh-ed25519 AAAA".into()
            }
        );
        assert_eq!(BastionKey::disabled().get(), KeyState::Disabled);
    }
}
