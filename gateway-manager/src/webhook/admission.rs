//! The admission decisions, pure: which pods get tunnel ports, under which
//! reservation key, and the JSON patch that writes the tunnel annotations.
//! No Kubernetes I/O and no allocator here (see [`super::reservations`]).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, Operation};

use crate::pod::tcp_container_ports;
use offload_wire::tunnel::ContainerPort;
use offload_wire::tunnel::TunnelAnnotations;

/// The node label interLink's docs select the virtual node with.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Prefix of reservation keys (never a pod UID: UIDs are hex and dashes).
pub const RESERVATION_PREFIX: &str = "admission:";
/// Prefix of the key a dry-run create reserves under (released at once).
const DRY_RUN_PREFIX: &str = "dryrun:";

/// Whether the pod targets the virtual node `node` (see the module docs of
/// [`crate::webhook`]).
pub fn targets_node(pod: &Pod, node: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.node_name.as_deref() == Some(node)
        || spec
            .node_selector
            .as_ref()
            .and_then(|s| s.get(HOSTNAME_LABEL))
            .is_some_and(|n| n == node)
}

/// What to do with one admission request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the pod through untouched, for this reason (logged and counted).
    Skip(&'static str),
    /// Reserve one gateway port per container port under `key`, then patch.
    Reserve {
        key: String,
        wanted: BTreeSet<ContainerPort>,
    },
}

/// The provisional allocation key of a pod at admission (see the module
/// docs of [`crate::webhook`]).
pub fn reservation_key(namespace: &str, pod: &Pod, request_uid: &str) -> Option<String> {
    match pod.metadata.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => Some(format!("{RESERVATION_PREFIX}{namespace}/{name}")),
        None => {
            let prefix = pod
                .metadata
                .generate_name
                .as_deref()
                .filter(|g| !g.is_empty())?;
            Some(format!(
                "{RESERVATION_PREFIX}{namespace}/{prefix}*{request_uid}"
            ))
        }
    }
}

/// Whether reservation `key` was made for this (now created) pod.
pub fn reservation_matches(key: &str, pod: &Pod) -> bool {
    let Some(rest) = key.strip_prefix(RESERVATION_PREFIX) else {
        return false;
    };
    let Some((ns, who)) = rest.split_once('/') else {
        return false;
    };
    if pod.metadata.namespace.as_deref() != Some(ns) {
        return false;
    }
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    match who.split_once('*') {
        None => name == who,
        Some((prefix, _request)) => {
            pod.metadata.generate_name.as_deref() == Some(prefix) && name.starts_with(prefix)
        }
    }
}

/// Decide on one admission request for virtual node `node`.
pub fn decide(req: &AdmissionRequest<Pod>, node: &str) -> Decision {
    if req.operation != Operation::Create {
        return Decision::Skip("not a create");
    }
    if req.sub_resource.as_deref().is_some_and(|s| !s.is_empty()) {
        return Decision::Skip("subresource");
    }
    let Some(pod) = req.object.as_ref() else {
        return Decision::Skip("no object");
    };
    if !targets_node(pod, node) {
        return Decision::Skip("not for the virtual node");
    }
    let wanted = tcp_container_ports(pod);
    if wanted.is_empty() {
        return Decision::Skip("no TCP containerPort");
    }
    let namespace = req
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| "default".to_owned());
    let key = if req.dry_run {
        // A key of its own: released at once, never touches a real reservation.
        format!("{DRY_RUN_PREFIX}{}", req.uid)
    } else {
        match reservation_key(&namespace, pod, &req.uid) {
            Some(k) => k,
            None => return Decision::Skip("pod has neither name nor generateName"),
        }
    };
    Decision::Reserve { key, wanted }
}

/// Escape one JSON pointer token (RFC 6901).
fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// The RFC 6902 patch that sets the tunnel annotations on `pod` (overwriting
/// any value the pod came with).
pub fn annotation_patch(pod: &Pod, ann: &TunnelAnnotations) -> serde_json::Value {
    let wanted = ann.to_map();
    // An empty map is omitted from the apiserver's JSON (omitempty): then
    // the per-key paths would not exist, so add the whole map.
    match pod.metadata.annotations.as_ref().filter(|a| !a.is_empty()) {
        None => serde_json::json!([
            { "op": "add", "path": "/metadata/annotations", "value": wanted }
        ]),
        Some(_) => serde_json::Value::Array(
            wanted
                .iter()
                .map(|(k, v)| {
                    serde_json::json!({
                        "op": "add",
                        "path": format!("/metadata/annotations/{}", pointer_token(k)),
                        "value": v,
                    })
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::ResourceExt;
    use offload_wire::keys::tunnel;
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::webhook::fixtures::{NODE, ann, pod, request, spec};

    #[test]
    fn only_pods_pinned_to_the_node_are_ours() {
        assert!(targets_node(
            &pod(Some("a"), None, spec(Some(NODE), None, &[80])),
            NODE
        ));
        assert!(targets_node(
            &pod(Some("a"), None, spec(None, Some(NODE), &[80])),
            NODE
        ));
        assert!(!targets_node(
            &pod(Some("a"), None, spec(Some("real"), None, &[80])),
            NODE
        ));
        assert!(!targets_node(
            &pod(Some("a"), None, spec(None, Some("other"), &[80])),
            NODE
        ));
        // A toleration alone does not pin a pod anywhere.
        let mut tolerating = spec(None, None, &[80]);
        tolerating.tolerations = Some(vec![k8s_openapi::api::core::v1::Toleration {
            key: Some(offload_wire::keys::TAINT_NO_SCHEDULE.into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        assert!(!targets_node(&pod(Some("a"), None, tolerating), NODE));
        assert!(!targets_node(&Pod::default(), NODE));
    }

    #[test]
    fn decisions() {
        let ours = pod(Some("web"), None, spec(Some(NODE), None, &[80, 8080]));
        assert_eq!(
            decide(&request("CREATE", false, &ours), NODE),
            Decision::Reserve {
                key: "admission:apps/web".into(),
                wanted: BTreeSet::from([80, 8080].map(ContainerPort)),
            }
        );
        // Dry run: a key of its own, never the real reservation.
        assert_eq!(
            decide(&request("CREATE", true, &ours), NODE),
            Decision::Reserve {
                key: "dryrun:req-1".into(),
                wanted: BTreeSet::from([80, 8080].map(ContainerPort)),
            }
        );
        let generated = pod(None, Some("web-"), spec(None, Some(NODE), &[80]));
        assert_eq!(
            decide(&request("CREATE", false, &generated), NODE),
            Decision::Reserve {
                key: "admission:apps/web-*req-1".into(),
                wanted: BTreeSet::from([ContainerPort(80)]),
            }
        );
        assert!(matches!(
            decide(&request("UPDATE", false, &ours), NODE),
            Decision::Skip(_)
        ));
        let elsewhere = pod(Some("web"), None, spec(Some("real"), None, &[80]));
        assert_eq!(
            decide(&request("CREATE", false, &elsewhere), NODE),
            Decision::Skip("not for the virtual node")
        );
        let portless = pod(Some("web"), None, spec(Some(NODE), None, &[]));
        assert_eq!(
            decide(&request("CREATE", false, &portless), NODE),
            Decision::Skip("no TCP containerPort")
        );
    }

    #[test]
    fn reservations_match_their_pod_only() {
        let mut named = pod(Some("web"), None, spec(Some(NODE), None, &[80]));
        assert!(reservation_matches("admission:apps/web", &named));
        assert!(!reservation_matches("admission:apps/web2", &named));
        assert!(!reservation_matches("admission:other/web", &named));
        assert!(!reservation_matches("0b3c-uid", &named));
        assert!(!reservation_matches("dryrun:req-1", &named));
        // After creation a generateName pod has its generated name.
        let mut generated = pod(
            Some("web-x7k2p"),
            Some("web-"),
            spec(None, Some(NODE), &[80]),
        );
        assert!(reservation_matches("admission:apps/web-*req-1", &generated));
        generated.metadata.generate_name = Some("db-".into());
        assert!(!reservation_matches(
            "admission:apps/web-*req-1",
            &generated
        ));
        named.metadata.namespace = None;
        assert!(!reservation_matches("admission:apps/web", &named));
    }

    fn apply_patch(pod: &Pod, patch: serde_json::Value) -> Pod {
        let mut doc = serde_json::to_value(pod).expect("pod json");
        let patch: json_patch_type::Patch = serde_json::from_value(patch).expect("patch");
        json_patch_type::patch(&mut doc, &patch).expect("patch applies");
        serde_json::from_value(doc).expect("pod")
    }

    // The json-patch crate kube uses, reached through kube's re-export-free
    // API: the patch type is inferred from `with_patch`, and applied here
    // with the same crate to check the result.
    mod json_patch_type {
        pub use json_patch::{Patch, patch};
    }

    #[test]
    fn patch_sets_annotations_with_or_without_existing_ones() {
        let bare = pod(Some("web"), None, spec(Some(NODE), None, &[80, 8080]));
        let patched = apply_patch(&bare, annotation_patch(&bare, &ann()));
        assert_eq!(patched.annotations(), &ann().to_map());
        let mut empty = bare.clone();
        empty.metadata.annotations = Some(BTreeMap::new());
        let as_sent: Pod = serde_json::from_value(
            serde_json::json!({ "metadata": { "name": "web" }, "spec": bare.spec }),
        )
        .expect("pod");
        let patched = apply_patch(&as_sent, annotation_patch(&empty, &ann()));
        assert_eq!(patched.annotations(), &ann().to_map());

        // Existing annotations are kept; stale tunnel values are overwritten;
        // keys with '/' are escaped in the JSON pointer.
        let mut copied = bare.clone();
        copied.metadata.annotations = Some(BTreeMap::from([
            ("team".to_owned(), "a/b".to_owned()),
            (tunnel::PORTS.to_owned(), r#"{"80":41234}"#.to_owned()),
        ]));
        let patched = apply_patch(&copied, annotation_patch(&copied, &ann()));
        let mut want = ann().to_map();
        want.insert("team".into(), "a/b".into());
        assert_eq!(patched.annotations(), &want);
        assert_eq!(pointer_token("a/b~c"), "a~1b~0c");
    }
}
