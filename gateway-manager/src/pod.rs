//! What the tunnel needs from a pod: its TCP ports, its tunnel as recorded
//! in its annotations, which gateway wrote them. Pure.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use offload_wire::keys::tunnel;

use crate::objects::is_rfc1035_label;
use offload_wire::tunnel::{ContainerPort, PortMap};

/// What gateway-manager knows of one tunneled pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ports: PortMap,
    /// `interlink.io/tunnel-service` of the pod, if any.
    pub workload_service: Option<String>,
}

/// The TCP `containerPort`s declared by the pod's regular containers
/// (deduplicated; init containers serve nothing for long; UDP and SCTP cannot
/// travel an SSH forward).
pub fn tcp_container_ports(pod: &Pod) -> BTreeSet<ContainerPort> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| u16::try_from(p.container_port).ok().filter(|p| *p != 0))
        .map(ContainerPort)
        .collect()
}

/// Whether the pod has finished (Succeeded or Failed): its ports can go.
pub fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether the pod's tunnel annotations were written by the gateway whose
/// host public key is `host_key` (`None`: any gateway). The host key names a
/// gateway: it is generated once per gateway and kept in its Secret.
pub fn annotated_by(p: &Pod, host_key: Option<&str>) -> bool {
    let Some(want) = host_key else {
        return true;
    };
    fn key(s: &str) -> Vec<&str> {
        s.split_whitespace().take(2).collect()
    }
    let same = |a: &str, b: &str| key(a) == key(b);
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(tunnel::GATEWAY_HOST_KEY))
        .is_some_and(|k| same(k, want))
}

/// A pod's tunnel as recorded in its annotations (live pods only).
pub fn tunnel_pod(p: &Pod) -> Option<TunnelPod> {
    // A terminating pod still holds its ports until the provider releases
    // them on delete, so it is kept.
    if finished(p) {
        return None;
    }
    let ann = p.metadata.annotations.as_ref()?;
    let ports = offload_wire::tunnel::decode_ports(ann.get(tunnel::PORTS)?).ok()?;
    if ports.is_empty() {
        return None;
    }
    Some(TunnelPod {
        namespace: p.metadata.namespace.clone()?,
        name: p.metadata.name.clone()?,
        uid: p.metadata.uid.clone()?,
        ports,
        workload_service: ann
            .get(tunnel::SERVICE)
            .filter(|s| is_rfc1035_label(s))
            .cloned(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort as KPort, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn port(p: i32, proto: Option<&str>) -> KPort {
        KPort {
            container_port: p,
            protocol: proto.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn tcp_ports_only_deduplicated() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![
                    Container {
                        name: "a".into(),
                        ports: Some(vec![
                            port(80, None),
                            port(53, Some("UDP")),
                            port(8080, Some("TCP")),
                        ]),
                        ..Default::default()
                    },
                    Container {
                        name: "b".into(),
                        ports: Some(vec![port(80, Some("TCP")), port(70000, None)]),
                        ..Default::default()
                    },
                ],
                init_containers: Some(vec![Container {
                    name: "i".into(),
                    ports: Some(vec![port(9000, None)]),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            tcp_container_ports(&pod),
            BTreeSet::from([ContainerPort(80), ContainerPort(8080)])
        );
        assert!(tcp_container_ports(&Pod::default()).is_empty());
    }

    fn pod_with_key(key: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                annotations: key
                    .map(|k| BTreeMap::from([(tunnel::GATEWAY_HOST_KEY.to_owned(), k.to_owned())])),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn pods_of_another_gateway_are_not_ours() {
        let ours = "ssh-ed25519 AAAAours";
        assert!(annotated_by(&pod_with_key(Some(ours)), Some(ours)));
        // The comment is not part of the key.
        assert!(annotated_by(
            &pod_with_key(Some("ssh-ed25519 AAAAours offload-gateway")),
            Some(ours)
        ));
        assert!(!annotated_by(
            &pod_with_key(Some("ssh-ed25519 AAAAtheirs")),
            Some(ours)
        ));
        assert!(!annotated_by(&pod_with_key(None), Some(ours)));
        assert!(annotated_by(&pod_with_key(None), None));
    }
}
