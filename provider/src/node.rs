//! Pure building of the virtual Node and its Lease.

pub mod outage;
pub mod taints;

use std::collections::BTreeMap;
use std::net::IpAddr;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use offload_wire::PingResponse;
use offload_wire::keys::{LABEL_NODE_TYPE, NODE_TYPE_VALUE, TAINT_NO_SCHEDULE};

use crate::config::Config;

/// What the node object is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpecInput {
    pub name: String,
    pub ip: IpAddr,
    pub kubelet_port: u16,
    pub labels: Vec<(String, String)>,
    /// (key, value, effect)
    pub taints: Vec<(String, String, String)>,
    pub default_taint: bool,
    /// Capacity when neither pinned nor reported by the plugin's ping.
    pub capacity: BTreeMap<String, String>,
    /// Capacity the operator pinned by flag: wins over the ping, per resource.
    pub pinned: BTreeMap<String, String>,
}

/// The capacity of a virtual node whose plugin reports none and whose
/// operator pinned none (interLink's defaults).
pub const DEFAULT_CAPACITY: [(&str, &str); 3] =
    [("cpu", "100"), ("memory", "3000Gi"), ("pods", "10000")];

impl NodeSpecInput {
    pub fn from_config(c: &Config, ip: IpAddr, kubelet_port: u16) -> Self {
        NodeSpecInput {
            name: c.node_name.clone(),
            ip,
            kubelet_port,
            labels: c.node_labels.clone(),
            taints: c
                .node_taints
                .iter()
                .map(|t| (t.key.clone(), t.value.clone(), t.effect.clone()))
                .collect(),
            default_taint: !c.no_default_taint,
            capacity: DEFAULT_CAPACITY
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            pinned: [("cpu", &c.cpu), ("memory", &c.memory), ("pods", &c.pods)]
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.clone()?)))
                .collect(),
        }
    }
}

/// Plugin reachability as the node shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reachability {
    /// Not pinged yet.
    Unknown,
    Reachable,
    Unreachable {
        error: String,
    },
    /// The provider is shutting down.
    Stopped,
}

pub fn labels(input: &NodeSpecInput) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", input.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/role", "agent"),
        ("type", "virtual-kubelet"),
        (LABEL_NODE_TYPE, NODE_TYPE_VALUE),
        (
            "alpha.service-controller.kubernetes.io/exclude-balancer",
            "true",
        ),
        (
            "node.kubernetes.io/exclude-from-external-load-balancers",
            "true",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // interLink's VK labels `kubernetes.io/os=virtual-kubelet`, which keeps
    // DaemonSets away; we say linux (pods run on Linux nodes remotely) and rely
    // on the taint to keep ordinary workloads off. Users may override.
    for (k, v) in &input.labels {
        l.insert(k.clone(), v.clone());
    }
    l
}

pub fn taints(input: &NodeSpecInput, extra: &[(String, String, String)]) -> Vec<Taint> {
    let mut t: Vec<Taint> = vec![];
    if input.default_taint {
        t.push(Taint {
            key: TAINT_NO_SCHEDULE.into(),
            value: Some("true".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        });
    }
    for (k, v, e) in input.taints.iter().chain(extra) {
        if t.iter().any(|x| &x.key == k && &x.effect == e) {
            continue;
        }
        t.push(Taint {
            key: k.clone(),
            value: (!v.is_empty()).then(|| v.clone()),
            effect: e.clone(),
            time_added: None,
        });
    }
    t
}

/// The node's capacity (and allocatable), per resource: what the operator
/// pinned, else what the plugin's ping reports (the remote cluster's
/// allocatable, extended resources as accelerators), else the defaults. A
/// resource the ping stops reporting goes (the status is applied whole).
pub fn capacity(input: &NodeSpecInput, ping: Option<&PingResponse>) -> BTreeMap<String, Quantity> {
    let mut c: BTreeMap<String, Quantity> = input
        .capacity
        .iter()
        .map(|(k, v)| (k.clone(), Quantity(v.clone())))
        .collect();
    if let Some(r) = ping.and_then(|p| p.resources.as_ref()) {
        for (k, v) in [("cpu", &r.cpu), ("memory", &r.memory), ("pods", &r.pods)] {
            if let Some(v) = v.as_ref().filter(|v| valid_quantity(v)) {
                c.insert(k.to_string(), Quantity(v.clone()));
            }
        }
        for a in &r.accelerators {
            if !a.resource_type.is_empty() && valid_quantity(&a.available) {
                c.insert(a.resource_type.clone(), Quantity(a.available.clone()));
            }
        }
    }
    for (k, v) in &input.pinned {
        c.insert(k.clone(), Quantity(v.clone()));
    }
    c
}

/// A loose check of Kubernetes quantity syntax (digits, optional decimal,
/// optional suffix), so a bad plugin answer cannot make the node invalid.
pub fn valid_quantity(s: &str) -> bool {
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    !num.is_empty()
        && num.parse::<f64>().is_ok()
        && matches!(
            suffix,
            "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
        )
}

/// Metadata and spec of the node (written once at start).
pub fn node_object(input: &NodeSpecInput, ping: Option<&PingResponse>) -> Node {
    let extra: Vec<(String, String, String)> = ping
        .and_then(|p| p.taints.as_ref())
        .into_iter()
        .flatten()
        .map(|t| (t.key.clone(), t.value.clone(), t.effect.clone()))
        .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(input.name.clone()),
            labels: Some(labels(input)),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(format!("external:///{}", input.name)),
            taints: Some(taints(input, &extra)),
            ..Default::default()
        }),
        status: None,
    }
}

/// The pressure conditions a virtual node never has: (type, reason), all
/// `False`, in the order the kubelet reports them.
const HEALTHY_CONDITIONS: [(&str, &str); 4] = [
    ("MemoryPressure", "KubeletHasSufficientMemory"),
    ("DiskPressure", "KubeletHasNoDiskPressure"),
    ("PIDPressure", "KubeletHasSufficientPID"),
    ("NetworkUnavailable", "RouteCreated"),
];

pub(crate) fn condition(
    old: &[NodeCondition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> NodeCondition {
    let old = old
        .iter()
        .map(|c| (&*c.type_, &*c.status, c.last_transition_time.as_ref()));
    let transition = crate::status::transition_time(old, type_, status, now);
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(transition),
    }
}

/// Node status: `Ready` (true while the provider runs) and
/// `PluginReachable` following plugin pings (see [`outage`]), capacity,
/// addresses, daemon endpoint and the ten NodeSystemInfo strings.
pub fn node_status(
    input: &NodeSpecInput,
    reach: &Reachability,
    ping: Option<&PingResponse>,
    old: &[NodeCondition],
    now: Timestamp,
) -> NodeStatus {
    let (ready, reason, message) = outage::ready(reach);
    let cap = capacity(input, ping);
    let ready = condition(old, "Ready", ready, reason, &message, now);
    let healthy = HEALTHY_CONDITIONS
        .iter()
        .map(|(type_, reason)| condition(old, type_, "False", reason, "virtual node", now));
    let plugin = outage::plugin_condition(reach, old, now);
    NodeStatus {
        conditions: Some(
            std::iter::once(ready)
                .chain(healthy)
                .chain(std::iter::once(plugin))
                .collect(),
        ),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: input.ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: input.name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(input.kubelet_port),
            }),
        }),
        allocatable: Some(cap.clone()),
        capacity: Some(cap),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            boot_id: String::new(),
            container_runtime_version: "offload://remote".into(),
            kernel_version: String::new(),
            kube_proxy_version: String::new(),
            kubelet_version: format!("v1.20.2-offload-{}", env!("CARGO_PKG_VERSION")),
            machine_id: String::new(),
            operating_system: "linux".into(),
            os_image: "offload-provider".into(),
            system_uuid: String::new(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The node's Lease in `kube-node-lease`, owned by the Node like the kubelet's.
pub fn lease(node: &str, node_uid: Option<&str>, duration_seconds: i32, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node.into()),
            namespace: Some("kube-node-lease".into()),
            owner_references: node_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node.into(),
                    uid: uid.into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.into()),
            lease_duration_seconds: Some(duration_seconds),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests;
