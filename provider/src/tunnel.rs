//! The local half of the tunnel, embedded: gateway-manager runs the SSH
//! gateway in the local cluster and gives every TCP `containerPort` of an
//! offloaded pod a gateway port, the remote bastion forwards it to the remote
//! pod, and the local Service `<pod>-tunnel` (plus the workload Service named
//! by `interlink.io/tunnel-service`) reaches it.
//!
//! What the provider does with it (`controller/` calls these hooks):
//! - start: [`start`] applies the gateway and rebuilds the port allocations
//!   from the annotations of live pods (restart-safe: the cluster is the
//!   source of truth), then keeps probing the tunnels and writing Endpoints;
//!   the bastion's public key comes from the plugin (`GET
//!   /bastion/publicKey`, pinned on first use and re-read every
//!   `--bastion-key-refresh`: another key is refused until an operator
//!   accepts it, `crate::bastion_pin`) or from `--bastion-public-key`;
//! - before the plugin's create: `GatewayManager::prepare_pod` (ports,
//!   annotations on the local pod, Services); the annotated pod is what is
//!   sent, so the annotations reach the remote pod and the bastion;
//! - status: the pod condition [`CONDITION_TUNNEL_UP`] ([`tunnel_condition`]);
//! - delete (or the pod finishing): `GatewayManager::release_pod`.

use std::sync::Arc;

use gateway_manager::objects::GatewaySpec;
use gateway_manager::{GatewayManager, Settings};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use offload_runtime::kubeapi::{self, field_manager};
use offload_wire::keys;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::bastion_pin;
use crate::client::PluginClient;
use crate::config::{Config, PluginMode};

pub use gateway_manager::manager::CONDITION_TUNNEL_UP;

/// Where the namespace of an in-cluster pod is written.
const IN_CLUSTER_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("--gateway-address {0:?} has no port and --gateway-node-port is 0: give HOST:PORT")]
    NoPort(String),
    #[error("--gateway-address {0:?} is not HOST or HOST:PORT")]
    Address(String),
    #[error(
        "the tunnel needs the bastion's public key: with --plugin-mode interlink the provider \
         cannot ask the plugin for it, give --bastion-public-key"
    )]
    NoBastionKey,
    #[error("--bastion-public-key: {0}")]
    BastionKey(#[from] offload_wire::tunnel::KeyError),
    #[error("gateway namespace {namespace:?}: {source}")]
    Namespace {
        namespace: String,
        source: kube::Error,
    },
    #[error("starting the gateway: {0}")]
    Gateway(#[from] gateway_manager::Error),
}

/// The namespace the provider runs in (in-cluster), if any.
fn own_namespace() -> Option<String> {
    std::fs::read_to_string(IN_CLUSTER_NAMESPACE)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// `HOST[:PORT]` -> `HOST:PORT`, the port defaulting to the NodePort
/// (gateway-manager's, shared with the standalone binary).
pub fn gateway_address(addr: &str, node_port: u16) -> Result<String, TunnelError> {
    use gateway_manager::args::{AddressError, public_address};
    public_address(addr, node_port).map_err(|e| match e {
        AddressError::Invalid(a) => TunnelError::Address(a),
        AddressError::NoPort(a) => TunnelError::NoPort(a),
    })
}

/// gateway-manager's settings from the provider's flags; `None` when the
/// tunnel is off (no `--gateway-address`).
pub fn settings(config: &Config) -> Result<Option<Settings>, TunnelError> {
    let g = &config.gateway;
    let Some(addr) = g.address.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let public_address = gateway_address(addr, g.node_port)?;
    let bastion_key = config
        .bastion_public_key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    if bastion_key.is_none() && config.plugin_mode == PluginMode::Interlink {
        return Err(TunnelError::NoBastionKey);
    }
    let mut s = Settings::new(g.spec(g.namespace_or(own_namespace)), public_address);
    s.range = g.port_range;
    s.node_name = Some(config.node_name.clone());
    s.bastion_public_key = match bastion_key {
        Some(k) => Some(offload_wire::tunnel::normalise_public_key(k)?),
        None => None,
    };
    Ok(Some(s))
}

async fn ensure_namespace(client: &kube::Client, ns: &str) -> Result<(), TunnelError> {
    let err = |source| TunnelError::Namespace {
        namespace: ns.to_owned(),
        source,
    };
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(ns).await.map_err(err)?.is_some() {
        return Ok(());
    }
    let labels = [(
        keys::LABEL_MANAGED_BY.to_owned(),
        keys::MANAGED_BY_PROVIDER.to_owned(),
    )]
    .into();
    if kubeapi::create_namespace(client, field_manager::PROVIDER, ns, labels)
        .await
        .map_err(err)?
    {
        info!(namespace = ns, "created the gateway namespace");
    }
    Ok(())
}

/// Start the tunnel when `--gateway-address` is set: gateway objects,
/// allocations rebuilt from the cluster, then (as tasks in `tasks`) the
/// probe/Endpoints loop and the bastion-key follower.
pub async fn start(
    config: &Config,
    client: &kube::Client,
    plugin: &PluginClient,
    tasks: &mut JoinSet<()>,
    cancel: &CancellationToken,
) -> Result<Option<Arc<GatewayManager>>, TunnelError> {
    let Some(settings) = settings(config)? else {
        info!("tunnel off (no --gateway-address)");
        return Ok(None);
    };
    let mut settings = settings;
    ensure_namespace(client, &settings.gateway.namespace).await?;
    let configured_key = settings.bastion_public_key.is_some();
    let pins =
        bastion_pin::PinStore::new(client, &settings.gateway.namespace, &settings.gateway.name);
    if !configured_key {
        // Start with the pinned key (or, before any pin, the one the gateway
        // already has, or the plugin's first): applying the gateway without
        // it would restart the gateway pod and drop every tunnel, and a fresh
        // gateway is created with the key rather than rolled out twice.
        let authorized = authorized_key(client, &settings.gateway).await;
        settings.bastion_public_key = bastion_pin::initial_key(&pins, authorized, plugin).await;
    }
    let initial_key = settings.bastion_public_key.clone();
    let (ns, name, addr) = (
        settings.gateway.namespace.clone(),
        settings.gateway.name.clone(),
        settings.public_address.clone(),
    );
    let gm = GatewayManager::start(client.clone(), settings).await?;
    info!(
        namespace = %ns,
        gateway = %name,
        address = %addr,
        pods = gm.tunnel_pods().len(),
        "tunnel gateway ready; allocations rebuilt from the cluster"
    );

    tasks.spawn(Arc::clone(&gm).run_until(config.gateway.sync_interval, cancel.clone()));
    if !configured_key {
        let reporter = bastion_pin::Reporter {
            client: client.clone(),
            node: config.node_name.clone(),
            metrics: bastion_pin::PinMetrics::register(plugin.metrics()),
        };
        tasks.spawn(bastion_pin::follow(
            Arc::clone(&gm),
            plugin.clone(),
            pins,
            reporter,
            initial_key,
            config.bastion_key_refresh,
            cancel.clone(),
        ));
    }
    Ok(Some(gm))
}

/// The bastion key in the gateway's current `authorized_keys`, if any.
async fn authorized_key(client: &kube::Client, gateway: &GatewaySpec) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &gateway.namespace);
    let cm = cms.get_opt(&gateway.name).await.ok()??;
    let text = cm.data?.remove("authorized_keys")?;
    key_of_authorized_keys(&text)
}

/// The public key of the first entry of an `authorized_keys` text (the
/// options never contain blanks in what gateway-manager renders; the key is
/// the last two fields, comments are never rendered).
pub fn key_of_authorized_keys(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let [.., kind, blob] = fields.as_slice() else {
                return None;
            };
            offload_wire::tunnel::normalise_public_key(&format!("{kind} {blob}")).ok()
        })
}

/// Whether the pod holds gateway ports (known to gateway-manager, or
/// annotated by a run before a restart).
pub fn has_tunnel(gm: &GatewayManager, pod: &Pod) -> bool {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(keys::tunnel::PORTS));
    annotated || pod.metadata.uid.as_deref().is_some_and(|uid| gm.knows(uid))
}

/// The pod to send with the tunnel annotations gateway-manager allocated
/// for it, and no other `tunnel.offload.dev/*` key: whatever a user wrote
/// under that prefix never reaches the plugin (the store may not have the
/// patched pod yet, so the allocation is merged in here).
pub fn annotated(pod: &Pod, tunnel: &offload_wire::tunnel::TunnelAnnotations) -> Pod {
    let mut p = without_tunnel_annotations(pod);
    p.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .extend(tunnel.to_map());
    p
}

/// The pod to send when gateway-manager allocated nothing for it (tunnel
/// off, or no TCP containerPort): every `tunnel.offload.dev/*` annotation a
/// user wrote is dropped.
pub fn without_tunnel_annotations(pod: &Pod) -> Pod {
    let mut p = pod.clone();
    crate::payload::strip_tunnel_annotations(&mut p);
    p
}

/// The tunnel condition for a pod: `up` (`None`: not probed yet) with the
/// transition time kept from `old` while the status does not change.
pub fn tunnel_condition(
    old: &[PodCondition],
    up: Option<bool>,
    now: jiff::Timestamp,
) -> PodCondition {
    let mut c = gateway_manager::manager::tunnel_condition(up.unwrap_or(false));
    c.message = Some(
        match up {
            Some(true) => "every containerPort answers through the gateway",
            Some(false) => "waiting for the bastion's forwards (remote pod not running yet, or the tunnel is reconnecting)",
            None => "tunnel not probed yet",
        }
        .to_owned(),
    );
    c.last_transition_time = Some(
        old.iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
            .and_then(|o| o.last_transition_time.clone())
            .unwrap_or(Time(now)),
    );
    c
}

/// Put the tunnel condition of `pod` into a status about to be written.
pub fn add_condition(
    gm: &GatewayManager,
    pod: &Pod,
    st: &mut k8s_openapi::api::core::v1::PodStatus,
    now: jiff::Timestamp,
) {
    let Some(uid) = pod.metadata.uid.as_deref() else {
        return;
    };
    if !gm.knows(uid) {
        return;
    }
    let old = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let c = tunnel_condition(&old, gm.tunnel_up(uid), now);
    let conds = st.conditions.get_or_insert_with(Vec::new);
    conds.retain(|o| o.type_ != c.type_);
    conds.push(c);
}

#[cfg(test)]
mod tests;
