//! External mode: the suite against an existing installation, given by the local
//! cluster's kubeconfig and the virtual node's name (and, optionally, the remote
//! cluster's kubeconfig). It starts nothing; before creating its namespace it
//! checks that the node is a Ready virtual node of ours that its pods can land on.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::Api;
use offload_wire::keys;

use super::{Mode, Running, Suite};

/// The local kubeconfig (switches external mode on).
pub const ENV_KUBECONFIG: &str = "OFFLOAD_CONFORMANCE_KUBECONFIG";
/// The virtual node's name.
pub const ENV_NODE: &str = "OFFLOAD_CONFORMANCE_NODE";
/// The remote cluster's kubeconfig (optional).
pub const ENV_REMOTE_KUBECONFIG: &str = "OFFLOAD_CONFORMANCE_REMOTE_KUBECONFIG";

/// Where the installation is.
#[derive(Debug, Clone)]
pub struct ExternalConfig {
    /// Kubeconfig of the local cluster (its current context), where the virtual
    /// node is and the suite creates its namespace.
    pub kubeconfig: PathBuf,
    /// The virtual node.
    pub node: String,
    /// Kubeconfig of the remote cluster: without it, remote checks do not run.
    pub remote_kubeconfig: Option<PathBuf>,
    /// The suite's namespace is `<prefix>-<random>`.
    pub namespace_prefix: String,
}

impl ExternalConfig {
    /// The configuration the environment gives: `None` (in-process mode) when
    /// neither `OFFLOAD_CONFORMANCE_KUBECONFIG` nor `OFFLOAD_CONFORMANCE_NODE` is set,
    /// an error when only one is.
    pub fn from_env() -> Result<Option<ExternalConfig>> {
        let get = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        Self::from_values(
            get(ENV_KUBECONFIG).map(PathBuf::from),
            get(ENV_NODE).map(|n| n.to_string_lossy().into_owned()),
            get(ENV_REMOTE_KUBECONFIG).map(PathBuf::from),
        )
    }

    fn from_values(
        kubeconfig: Option<PathBuf>,
        node: Option<String>,
        remote_kubeconfig: Option<PathBuf>,
    ) -> Result<Option<ExternalConfig>> {
        match (kubeconfig, node) {
            (None, None) if remote_kubeconfig.is_none() => Ok(None),
            (Some(kubeconfig), Some(node)) => Ok(Some(ExternalConfig {
                kubeconfig,
                node,
                remote_kubeconfig,
                namespace_prefix: "offload-conformance".into(),
            })),
            _ => bail!(
                "external mode needs both {ENV_KUBECONFIG} (the local cluster's kubeconfig) and \
                 {ENV_NODE} (the virtual node's name); {ENV_REMOTE_KUBECONFIG} is optional"
            ),
        }
    }
}

/// Checks the installation's virtual node, then creates the suite's fresh
/// namespace. Fails, creating nothing, when the node is missing, not Ready, not a
/// virtual node of ours, or not usable by the suite's pods.
pub async fn start_external(cfg: ExternalConfig) -> Result<(Suite, Running)> {
    crate::init_tracing("warn");
    testbed::install_crypto_provider();
    let began = Instant::now();
    let mut local_cluster = cluster("local", &cfg.kubeconfig, &cfg.node);
    let local = local_cluster.client().await?;
    let node = Api::<Node>::all(local.clone())
        .get_opt(&cfg.node)
        .await
        .with_context(|| {
            format!(
                "reading node {} with kubeconfig {}",
                cfg.node,
                cfg.kubeconfig.display()
            )
        })?
        .ok_or_else(|| {
            anyhow!(
                "node {:?} does not exist in the cluster of kubeconfig {}; the virtual nodes \
                 there: kubectl get nodes -l type=virtual-kubelet",
                cfg.node,
                cfg.kubeconfig.display()
            )
        })?;
    check_virtual_node(&node).map_err(|e| anyhow!("{e}"))?;
    local_cluster.node_ip = internal_ip(&node).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));

    let (remote_cluster, remote) = match &cfg.remote_kubeconfig {
        Some(path) => {
            let c = cluster("remote", path, "");
            let client = c.client().await?;
            client
                .apiserver_version()
                .await
                .with_context(|| format!("reaching the remote cluster of {}", path.display()))?;
            (c, client)
        }
        None => (
            cluster("remote", &PathBuf::from("/dev/null"), ""),
            no_remote_client(),
        ),
    };
    let tb: &'static testbed::Testbed = Box::leak(Box::new(testbed::Testbed {
        local: local_cluster,
        remote: remote_cluster,
    }));
    let ns = tb
        .local
        .test_namespace(&cfg.namespace_prefix)
        .await
        .context("creating the suite's namespace")?;
    let mode = Mode::External {
        remote: cfg.remote_kubeconfig.is_some(),
    };
    let suite = Suite::new(tb, local, remote, ns.name.clone(), cfg.node, mode);
    let running = Running {
        began,
        setup: began.elapsed(),
        ns,
        components: None,
    };
    Ok((suite, running))
}

fn cluster(name: &str, kubeconfig: &std::path::Path, node: &str) -> testbed::Cluster {
    testbed::Cluster {
        name: name.into(),
        kubeconfig: kubeconfig.to_path_buf(),
        node_name: node.into(),
        node_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

fn internal_ip(node: &Node) -> Option<IpAddr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())
}

/// A client whose every call fails saying that the remote cluster was not given:
/// a remote check a case forgot to guard fails, it never passes unseen.
fn no_remote_client() -> Client {
    let service = tower::service_fn(|_req: http::Request<kube::client::Body>| async {
        Err::<http::Response<kube::client::Body>, tower::BoxError>(
            format!(
                "the remote cluster was not given ({ENV_REMOTE_KUBECONFIG} / --remote-kubeconfig): \
                 this check of the remote side cannot run"
            )
            .into(),
        )
    });
    Client::new(service, "default")
}

/// Whether the suite may run on `node`: a virtual node of offload-provider (its
/// labels), Ready, reaching its plugin, schedulable, and without taints the
/// suite's pods do not tolerate. The error says which and what to do.
pub fn check_virtual_node(node: &Node) -> Result<(), String> {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let ours = [
        ("type", "virtual-kubelet"),
        (keys::LABEL_NODE_TYPE, keys::NODE_TYPE_VALUE),
    ];
    let missing: Vec<String> = ours
        .iter()
        .filter(|(k, v)| labels.get(*k).map(String::as_str) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "node {name:?} is not a virtual node of offload-provider: it lacks the label(s) {}; \
             give the name of the provider's node (kubectl get nodes -l type=virtual-kubelet)",
            missing.join(", ")
        ));
    }
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let condition = |t: &str| conditions.iter().find(|c| c.type_ == t);
    match condition("Ready") {
        Some(c) if c.status == "True" => {}
        Some(c) => {
            return Err(format!(
                "node {name:?} is not Ready (Ready={}, {}: {}); is its provider running?",
                c.status,
                c.reason.as_deref().unwrap_or("no reason"),
                c.message.as_deref().unwrap_or("")
            ));
        }
        None => {
            return Err(format!(
                "node {name:?} is not Ready (no Ready condition: no provider has reported it); \
                 is its provider running?"
            ));
        }
    }
    if let Some(c) = condition(keys::CONDITION_PLUGIN_REACHABLE).filter(|c| c.status == "False") {
        return Err(format!(
            "node {name:?} is Ready but its provider does not reach its plugin ({}=False: {}); \
             pods would not be offloaded (docs/troubleshooting.md)",
            keys::CONDITION_PLUGIN_REACHABLE,
            c.message.as_deref().unwrap_or("")
        ));
    }
    let spec = node.spec.clone().unwrap_or_default();
    if spec.unschedulable == Some(true) {
        return Err(format!(
            "node {name:?} is cordoned (unschedulable): kubectl uncordon {name}"
        ));
    }
    let blocking: Vec<String> = spec
        .taints
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.effect != "PreferNoSchedule" && t.key != keys::TAINT_NO_SCHEDULE)
        .map(|t| format!("{}={}:{}", t.key, t.value.unwrap_or_default(), t.effect))
        .collect();
    if !blocking.is_empty() {
        return Err(format!(
            "node {name:?} has taints the suite's pods do not tolerate (they tolerate only {}): {}",
            keys::TAINT_NO_SCHEDULE,
            blocking.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(
        labels: serde_json::Value,
        conditions: serde_json::Value,
        spec: serde_json::Value,
    ) -> Node {
        serde_json::from_value(json!({
            "metadata": { "name": "vn", "labels": labels },
            "spec": spec,
            "status": { "conditions": conditions },
        }))
        .expect("node")
    }

    fn ours() -> serde_json::Value {
        json!({ "type": "virtual-kubelet", keys::LABEL_NODE_TYPE: keys::NODE_TYPE_VALUE })
    }

    fn ready() -> serde_json::Value {
        json!([{ "type": "Ready", "status": "True" }, { "type": "PluginReachable", "status": "True" }])
    }

    #[test]
    fn a_ready_virtual_node_of_ours_passes() {
        let taint = json!({ "taints": [
            { "key": keys::TAINT_NO_SCHEDULE, "value": "", "effect": "NoSchedule" },
            { "key": "soft", "effect": "PreferNoSchedule" },
        ] });
        assert_eq!(check_virtual_node(&node(ours(), ready(), taint)), Ok(()));
    }

    #[test]
    fn each_refusal_says_why() {
        let cases = [
            (
                node(
                    json!({ "kubernetes.io/hostname": "vn" }),
                    ready(),
                    json!({}),
                ),
                "is not a virtual node",
            ),
            (node(ours(), json!([]), json!({})), "no Ready condition"),
            (
                node(
                    ours(),
                    json!([{ "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown" }]),
                    json!({}),
                ),
                "not Ready (Ready=Unknown, NodeStatusUnknown",
            ),
            (
                node(
                    ours(),
                    json!([{ "type": "Ready", "status": "True" },
                    { "type": "PluginReachable", "status": "False", "message": "connection refused" }]),
                    json!({}),
                ),
                "does not reach its plugin (PluginReachable=False: connection refused)",
            ),
            (
                node(ours(), ready(), json!({ "unschedulable": true })),
                "cordoned",
            ),
            (
                node(
                    ours(),
                    ready(),
                    json!({ "taints": [{ "key": "gpu", "value": "a", "effect": "NoExecute" }] }),
                ),
                "taints the suite's pods do not tolerate (they tolerate only virtual-node.interlink/no-schedule): gpu=a:NoExecute",
            ),
        ];
        for (n, want) in cases {
            let err = check_virtual_node(&n).expect_err(want);
            assert!(err.contains(want), "{err:?} does not say {want:?}");
        }
    }

    #[test]
    fn external_mode_needs_the_kubeconfig_and_the_node() {
        assert!(
            ExternalConfig::from_values(None, None, None)
                .expect("in-process")
                .is_none()
        );
        let cfg = ExternalConfig::from_values(Some("k".into()), Some("vn".into()), None)
            .expect("external")
            .expect("some");
        assert_eq!(cfg.node, "vn");
        assert!(cfg.remote_kubeconfig.is_none());
        for (k, n, r) in [
            (Some("k"), None, None),
            (None, Some("vn"), None),
            (None, None, Some("r")),
        ] {
            let err = ExternalConfig::from_values(
                k.map(PathBuf::from),
                n.map(String::from),
                r.map(PathBuf::from),
            )
            .expect_err("half a configuration");
            assert!(format!("{err}").contains(ENV_NODE), "{err}");
        }
    }

    #[tokio::test]
    async fn without_the_remote_kubeconfig_remote_calls_fail_saying_so() {
        let err = Api::<Node>::all(no_remote_client())
            .list(&Default::default())
            .await
            .expect_err("no remote cluster");
        assert!(
            format!("{err}").contains("remote cluster was not given"),
            "{err}"
        );
    }
}
