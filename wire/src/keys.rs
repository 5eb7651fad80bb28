//! Label, annotation and taint keys shared by every component.
//!
//! The `interlink.io/...` keys on remote objects are those of the Python
//! interLink Kubernetes plugin, so existing tooling keeps working.

/// Label on every remote object we create, value [`OFFLOADING_VALUE`].
pub const LABEL_OFFLOADING: &str = "interlink.io";
/// Value of [`LABEL_OFFLOADING`].
pub const OFFLOADING_VALUE: &str = "offloading";
/// Label selector of the remote pods we offloaded: [`LABEL_OFFLOADING`]`=`[`OFFLOADING_VALUE`].
pub const OFFLOADING_SELECTOR: &str = "interlink.io=offloading";
/// Label on remote objects: the UID of the local pod they belong to.
pub const LABEL_SOURCE_POD_UID: &str = "interlink.io/source.pod_uid";
/// Our own managed-by label, so everything we own can be listed and swept.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`] on objects created by the plugin.
pub const MANAGED_BY_PLUGIN: &str = "offload-plugin";
/// Value of [`LABEL_MANAGED_BY`] on objects created by the provider / gateway-manager.
pub const MANAGED_BY_PROVIDER: &str = "offload-provider";

/// Label on remote objects and the namespaces the plugin creates: which plugin instance
/// (`--instance`, one name per plugin installation, shared by its replicas) owns them.
/// Two plugins on one remote cluster never touch each other's objects.
pub const LABEL_PLUGIN_INSTANCE: &str = "offload.dev/plugin-instance";
/// Label on remote pods: a short hash naming the caller (the local virtual node and the
/// authenticated principal behind it) that created the pod. The orphan sweep judges a
/// pod only by the liveness of its own caller.
pub const LABEL_CALLER: &str = "offload.dev/caller";

/// Condition type on the virtual node: whether the provider reaches its plugin. While it
/// is `False` the node is tainted [`TAINT_PLUGIN_UNREACHABLE`] (NoSchedule) and stays
/// `Ready`, so an outage never evicts the offloaded pods.
pub const CONDITION_PLUGIN_REACHABLE: &str = "PluginReachable";
/// NoSchedule taint of the virtual node while its plugin is unreachable.
pub const TAINT_PLUGIN_UNREACHABLE: &str = "offload.dev/plugin-unreachable";

/// Annotations on remote objects: identity of the local pod.
pub const ANNOTATION_SOURCE_UID: &str = "interlink.io/source.uid";
pub const ANNOTATION_SOURCE_NAME: &str = "interlink.io/source.name";
pub const ANNOTATION_SOURCE_NAMESPACE: &str = "interlink.io/source.namespace";

/// Annotation the interLink Virtual Kubelet writes on the local pod with the
/// `PodJID` answered by create. Our provider writes the same key.
pub const ANNOTATION_JOB_ID: &str = "JobID";

/// Taint and label of the virtual node, compatible with interLink.
pub const TAINT_NO_SCHEDULE: &str = "virtual-node.interlink/no-schedule";
pub const LABEL_NODE_TYPE: &str = "virtual-node.interlink/type";
pub const NODE_TYPE_VALUE: &str = "virtual-kubelet";

/// Tunnel annotations on the local (virtual) pod, written by gateway-manager
/// before create and read by the plugin. No secret material goes here: the
/// host key is the gateway's *public* key.
pub mod tunnel {
    /// Prefix of every tunnel annotation gateway-manager writes. The
    /// provider drops every key under it from what users wrote before it
    /// sends a pod, and sends only what gateway-manager allocated.
    pub const PREFIX: &str = "tunnel.offload.dev/";
    /// gateway-manager's HMAC over the pod UID and its tunnel annotations,
    /// keyed by a secret only gateway-manager holds: after a restart only
    /// allocations it provably wrote are taken back. Never sent remotely.
    pub const ALLOCATION_SIGNATURE: &str = "tunnel.offload.dev/allocation-signature";
    /// `host:port` of the gateway SSH server as seen from the remote cluster.
    pub const GATEWAY_ADDRESS: &str = "tunnel.offload.dev/gateway-address";
    /// The gateway's SSH host public key (OpenSSH one-line format), pinned by the bastion.
    pub const GATEWAY_HOST_KEY: &str = "tunnel.offload.dev/gateway-host-key";
    /// JSON object `{"<containerPort>": <gatewayPort>, ...}`.
    pub const PORTS: &str = "tunnel.offload.dev/ports";
    /// Set by users on a workload's pod template: name of the stable local
    /// Service that load-balances every replica's tunnel.
    pub const SERVICE: &str = "interlink.io/tunnel-service";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offloading_selector_is_the_label_and_its_value() {
        assert_eq!(
            OFFLOADING_SELECTOR,
            format!("{LABEL_OFFLOADING}={OFFLOADING_VALUE}")
        );
    }
}
