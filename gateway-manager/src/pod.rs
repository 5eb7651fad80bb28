//! What the tunnel needs from a pod spec. Pure.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

use crate::ports::ContainerPort;

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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort as KPort, PodSpec};

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
}
