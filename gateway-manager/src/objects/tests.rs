//! Unit tests of the object builders.

use super::*;
use offload_wire::tunnel::GATEWAY_USER;

fn spec() -> GatewaySpec {
    GatewaySpec {
        namespace: "offload-system".into(),
        name: "offload-gateway".into(),
        image: "localhost/offload-gateway:local".into(),
        image_pull_policy: "IfNotPresent".into(),
        service_port: 2222,
        node_port: Some(30222),
    }
}

#[test]
fn gateway_objects() {
    let s = spec();
    let d = s.deployment("abc").spec.expect("deployment spec");
    let pod = d.template.spec.expect("pod spec");
    assert_eq!(pod.security_context.and_then(|s| s.run_as_user), Some(1000));
    assert_eq!(
        d.strategy.and_then(|s| s.type_).as_deref(),
        Some("Recreate")
    );
    let np = s.nodeport_service_object().expect("nodeport");
    let port = &np
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .expect("ports")[0];
    assert_eq!(port.node_port, Some(30222));
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert!(
        GatewaySpec {
            node_port: None,
            ..spec()
        }
        .nodeport_service_object()
        .is_none()
    );
    assert_eq!(GATEWAY_USER, "tunnel");
}

#[test]
fn service_names() {
    assert_eq!(pod_service_name("web-0"), "web-0-tunnel");
    let long = "a".repeat(70);
    let n = pod_service_name(&long);
    assert!(n.len() <= 63 && is_rfc1035_label(&n), "{n}");
    assert_ne!(pod_service_name(&"a".repeat(71)), n);
    let odd = pod_service_name("1.2.3");
    assert!(is_rfc1035_label(&odd), "{odd}");
}

#[test]
fn endpoints_per_replica_only_up_ports() {
    let ips = vec!["10.244.0.5".to_owned()];
    let e = tunnel_endpoints(
        "ns",
        "web",
        "workload",
        &ips,
        &[
            offload_wire::tunnel::port_map([(80, 40000)]),
            PortMap::new(),
            offload_wire::tunnel::port_map([(80, 40007)]),
        ],
    );
    let subsets = e.subsets.expect("subsets");
    assert_eq!(subsets.len(), 2);
    let port = |i: usize| {
        subsets[i]
            .ports
            .as_ref()
            .map(|p| (p[0].name.clone(), p[0].port))
    };
    assert_eq!(port(0), Some((Some("p80".into()), 40000)));
    assert_eq!(port(1), Some((Some("p80".into()), 40007)));
    let none = tunnel_endpoints(
        "ns",
        "web",
        "workload",
        &[],
        &[offload_wire::tunnel::port_map([(80, 1)])],
    );
    assert_eq!(none.subsets, Some(vec![]));
}
