//! Pods and admission requests for the webhook's unit tests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort as KPort, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::{AdmissionRequest, AdmissionReview};

use super::HOSTNAME_LABEL;
use offload_wire::tunnel::TunnelAnnotations;

pub const NODE: &str = "vk-node";

pub fn pod(name: Option<&str>, generate: Option<&str>, spec: PodSpec) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: name.map(str::to_owned),
            generate_name: generate.map(str::to_owned),
            namespace: Some("apps".into()),
            ..Default::default()
        },
        spec: Some(spec),
        ..Default::default()
    }
}

pub fn spec(node_name: Option<&str>, hostname: Option<&str>, ports: &[i32]) -> PodSpec {
    PodSpec {
        node_name: node_name.map(str::to_owned),
        node_selector: hostname.map(|h| BTreeMap::from([(HOSTNAME_LABEL.into(), h.into())])),
        containers: vec![Container {
            name: "c".into(),
            ports: Some(
                ports
                    .iter()
                    .map(|p| KPort {
                        container_port: *p,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An AdmissionReview as the apiserver sends it (request uid `uid`,
/// namespace `apps`).
pub fn review(uid: &str, op: &str, dry_run: bool, pod: &Pod) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod.metadata.name.clone().unwrap_or_default(),
            "namespace": "apps",
            "operation": op,
            "userInfo": {},
            "object": pod,
            "dryRun": dry_run,
        }
    })
}

pub fn request(op: &str, dry_run: bool, pod: &Pod) -> AdmissionRequest<Pod> {
    let review: AdmissionReview<Pod> =
        serde_json::from_value(review("req-1", op, dry_run, pod)).expect("review");
    review.try_into().expect("request")
}

pub fn ann() -> TunnelAnnotations {
    TunnelAnnotations {
        gateway_address: "10.201.0.1:30222".into(),
        gateway_host_key: "ssh-ed25519 AAAAkey".into(),
        ports: offload_wire::tunnel::port_map([(80, 40000), (8080, 40001)]),
    }
}
