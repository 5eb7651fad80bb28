//! What the bastion should forward, computed from remote pods and the
//! bastion's own configuration. Pure.
//!
//! The plugin copies the local pod's tunnel annotations (written by the
//! provider's gateway-manager) onto the remote pod: the gateway address, the
//! pinned gateway host key and the containerPort -> gateway port map. Pod
//! annotations are not trusted on their own: anyone who can create a pod with
//! the offloading label can write them. So a pod's tunnel counts only when
//! ([`Policy`]):
//! - its namespace is one the plugin owns (created by the plugin, labelled
//!   `app.kubernetes.io/managed-by=offload-plugin`, and of this plugin
//!   instance when the bastion is told its instance); and
//! - its gateway (address *and* host key) is one of the gateways the plugin
//!   configured the bastion with (learnt from the authenticated provider's
//!   create requests): the bastion never dials an address a pod names.
//!
//! Two pods claiming one gateway port: the oldest keeps it (deterministic,
//! and a newcomer cannot take a running pod's port); the clash is reported.
//! A pod is forwarded once it has an IP and is not terminating.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::Pod;
use offload_wire::tunnel::{GatewayPort, TunnelAnnotations};

/// One gateway: where it is and which host key it must show.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// `host:port`.
    pub address: String,
    /// OpenSSH public key line of the gateway host key.
    pub host_key: String,
}

impl Gateway {
    /// The same gateway: same address, same key (type and blob; the comment
    /// of an OpenSSH key line is not part of the key).
    pub fn same(&self, address: &str, host_key: &str) -> bool {
        self.address == address && key_id(&self.host_key) == key_id(host_key)
    }
}

/// `type blob` of an OpenSSH public key line.
fn key_id(line: &str) -> Vec<&str> {
    line.split_whitespace().take(2).collect()
}

/// Where a forwarded connection goes on the remote side.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

/// Gateway port -> target, for one gateway.
pub type Forwards = BTreeMap<GatewayPort, Target>;

/// Everything the bastion should hold.
pub type Desired = BTreeMap<Gateway, Forwards>;

/// Which forwards to cancel and which to request on one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub cancel: Vec<GatewayPort>,
    pub request: Vec<GatewayPort>,
}

impl Plan {
    /// `active`: ports the gateway granted on this connection. A target change
    /// needs no SSH round trip (targets are looked up when a connection
    /// arrives), so only the port sets are compared.
    pub fn diff(active: &BTreeSet<GatewayPort>, desired: &Forwards) -> Self {
        Self {
            cancel: active
                .iter()
                .filter(|p| !desired.contains_key(p))
                .copied()
                .collect(),
            request: desired
                .keys()
                .filter(|p| !active.contains(p))
                .copied()
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.cancel.is_empty() && self.request.is_empty()
    }
}

/// What the bastion accepts, from its own configuration (never from pods).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The gateways the plugin configured; a pod naming another is ignored.
    pub gateways: BTreeSet<Gateway>,
    /// The namespaces whose pods may carry forwards. `None`: every watched
    /// namespace (the bastion watches one namespace the operator chose).
    pub namespaces: Option<BTreeSet<String>>,
}

impl Policy {
    /// The configured gateway the annotations name, if any.
    fn gateway(&self, t: &TunnelAnnotations) -> Option<&Gateway> {
        self.gateways
            .iter()
            .find(|g| g.same(&t.gateway_address, &t.gateway_host_key))
    }

    fn owns(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|n| n.contains(namespace))
    }
}

/// Why a pod's tunnel was not (entirely) used.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// Its tunnel annotations do not decode.
    Annotations(String),
    /// Its namespace is not one the plugin owns.
    ForeignNamespace,
    /// It names a gateway the bastion was not configured with.
    UnknownGateway,
}

impl SkipReason {
    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::Annotations(_) => "bad_annotations",
            SkipReason::ForeignNamespace => "foreign_namespace",
            SkipReason::UnknownGateway => "unknown_gateway",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Annotations(e) => write!(f, "tunnel annotations unusable: {e}"),
            SkipReason::ForeignNamespace => f.write_str("namespace not owned by the plugin"),
            SkipReason::UnknownGateway => {
                f.write_str("names a gateway the bastion is not configured with")
            }
        }
    }
}

/// A pod that could not be used, and why (logged by the caller).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    pub pod: String,
    pub reason: SkipReason,
}

/// Two pods claiming one gateway port: `kept` (the older) holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Clash {
    pub gateway: String,
    pub port: GatewayPort,
    pub kept: String,
    pub lost: String,
}

/// What [`from_pods`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Computed {
    pub desired: Desired,
    pub skipped: Vec<Skipped>,
    pub clashes: Vec<Clash>,
}

/// One pod's accepted tunnel, before clashes are settled.
struct Candidate {
    /// Oldest first (creation second; none sorts last), then by name.
    order: (i64, String),
    name: String,
    gateway: Gateway,
    forwards: Vec<(GatewayPort, Target)>,
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// The pod's IP when it is alive and has one.
fn live_ip(pod: &Pod) -> Option<&str> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    status.pod_ip.as_deref().filter(|ip| !ip.is_empty())
}

/// The pod's tunnel if the policy accepts it; `Err` says why not; `Ok(None)`:
/// no tunnel, or not forwardable yet.
fn candidate(pod: &Pod, policy: &Policy) -> Result<Option<Candidate>, SkipReason> {
    let Some(annotations) = pod.metadata.annotations.as_ref() else {
        return Ok(None);
    };
    let tunnel = match TunnelAnnotations::from_map(annotations) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(None),
        Err(e) => return Err(SkipReason::Annotations(e.to_string())),
    };
    if !policy.owns(pod.metadata.namespace.as_deref().unwrap_or("")) {
        return Err(SkipReason::ForeignNamespace);
    }
    let gateway = policy.gateway(&tunnel).ok_or(SkipReason::UnknownGateway)?;
    let Some(ip) = live_ip(pod) else {
        return Ok(None);
    };
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second());
    let name = pod_name(pod);
    Ok(Some(Candidate {
        order: (created.unwrap_or(i64::MAX), name.clone()),
        name,
        gateway: gateway.clone(),
        forwards: tunnel
            .ports
            .iter()
            .map(|(cp, gp)| {
                let target = Target {
                    host: ip.to_owned(),
                    port: cp.0,
                };
                (*gp, target)
            })
            .collect(),
    }))
}

/// Compute the desired forwards from the pods the bastion sees, under its
/// policy. On a port clash the oldest pod (then the first by name) keeps the
/// port; the others are reported in [`Computed::clashes`].
pub fn from_pods<'a, I>(pods: I, policy: &Policy) -> Computed
where
    I: IntoIterator<Item = &'a Pod>,
{
    let mut out = Computed::default();
    let mut candidates = Vec::new();
    for pod in pods {
        match candidate(pod, policy) {
            Ok(Some(c)) => candidates.push(c),
            Ok(None) => {}
            Err(reason) => out.skipped.push(Skipped {
                pod: pod_name(pod),
                reason,
            }),
        }
    }
    candidates.sort_by(|a, b| a.order.cmp(&b.order));
    let mut holder: BTreeMap<(Gateway, GatewayPort), String> = BTreeMap::new();
    for c in candidates {
        for (port, target) in c.forwards {
            let key = (c.gateway.clone(), port);
            if let Some(kept) = holder.get(&key) {
                out.clashes.push(Clash {
                    gateway: c.gateway.address.clone(),
                    port,
                    kept: kept.clone(),
                    lost: c.name.clone(),
                });
                continue;
            }
            holder.insert(key, c.name.clone());
            out.desired
                .entry(c.gateway.clone())
                .or_default()
                .insert(port, target);
        }
    }
    out.skipped.sort();
    out.clashes.sort();
    out
}

#[cfg(test)]
mod tests;
