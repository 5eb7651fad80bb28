//! The Endpoints plan, pure: from the tunneled pods, the gateway pod IPs and
//! the result of probing every tunnel, which pods are up and what the
//! Endpoints of every tunnel Service must list (only the ports that are up).
//! [`GatewayManager::sync`](crate::GatewayManager::sync) probes, calls
//! [`endpoints_plan`] and writes what changed.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Endpoints, Pod};

use crate::objects::{self, TunnelServiceKind};
use crate::pod::TunnelPod;
use offload_wire::tunnel::{ContainerPort, GatewayPort, PortMap};

/// One probe of one tunnel port: a TCP connect to the gateway pod on
/// `gateway_port` (sshd listens there only while the bastion's forward is up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortProbe {
    /// UID of the pod whose port this is.
    pub uid: String,
    pub container_port: ContainerPort,
    pub gateway_port: GatewayPort,
    pub up: bool,
}

/// What [`endpoints_plan`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointsPlan {
    /// Pod UID -> all its ports up.
    pub up: BTreeMap<String, bool>,
    /// The Endpoints of every tunnel Service, by (namespace, Service name).
    pub endpoints: BTreeMap<(String, String), Endpoints>,
}

/// IPs of the gateway pods that are ready and not terminating: where the
/// tunnels are probed, and what the Endpoints list.
pub fn ready_pod_ips(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()))
        .collect()
}

/// The probes to run: every port of every tunneled pod.
pub fn probes_of(pods: &[TunnelPod]) -> impl Iterator<Item = PortProbe> + '_ {
    pods.iter().flat_map(|p| {
        p.ports.iter().map(|(cp, gw)| PortProbe {
            uid: p.uid.clone(),
            container_port: *cp,
            gateway_port: *gw,
            up: false,
        })
    })
}

/// The plan for `pods`, given the gateway pod IPs and the probe results.
/// A pod is up when it has ports and all of them answered; its Service
/// `<pod>-tunnel` lists its up ports; a workload Service lists one subset
/// per replica.
pub fn endpoints_plan(
    pods: &[TunnelPod],
    gateway_ips: &[String],
    probes: &[PortProbe],
) -> EndpointsPlan {
    let mut up_ports: HashMap<&str, PortMap> = HashMap::new();
    for p in probes.iter().filter(|p| p.up) {
        up_ports
            .entry(p.uid.as_str())
            .or_default()
            .insert(p.container_port, p.gateway_port);
    }
    let mut up = BTreeMap::new();
    let mut wanted: BTreeMap<(String, String), (TunnelServiceKind, Vec<PortMap>)> = BTreeMap::new();
    for p in pods {
        let ports = up_ports.get(p.uid.as_str()).cloned().unwrap_or_default();
        up.insert(
            p.uid.clone(),
            !p.ports.is_empty() && ports.len() == p.ports.len(),
        );
        wanted.insert(
            (p.namespace.clone(), objects::pod_service_name(&p.name)),
            (TunnelServiceKind::Pod, vec![ports.clone()]),
        );
        if let Some(w) = &p.workload_service {
            wanted
                .entry((p.namespace.clone(), w.clone()))
                .or_insert_with(|| (TunnelServiceKind::Workload, Vec::new()))
                .1
                .push(ports);
        }
    }
    let endpoints = wanted
        .into_iter()
        .map(|((ns, name), (kind, replicas))| {
            let eps = objects::tunnel_endpoints(&ns, &name, kind.label(), gateway_ips, &replicas);
            ((ns, name), eps)
        })
        .collect();
    EndpointsPlan { up, endpoints }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn tunneled(uid: &str, name: &str, ports: &[(u16, u16)], workload: Option<&str>) -> TunnelPod {
        TunnelPod {
            namespace: "ns".into(),
            name: name.into(),
            uid: uid.into(),
            ports: offload_wire::tunnel::port_map(ports.iter().copied()),
            workload_service: workload.map(str::to_owned),
        }
    }

    fn answered(pods: &[TunnelPod], down: &[u16]) -> Vec<PortProbe> {
        probes_of(pods)
            .map(|p| PortProbe {
                up: !down.contains(&p.gateway_port.0),
                ..p
            })
            .collect()
    }

    /// (port name, gateway port) of each subset of `eps`.
    fn listed(eps: &Endpoints) -> Vec<Vec<(String, i32)>> {
        eps.subsets
            .iter()
            .flatten()
            .map(|s| {
                s.ports
                    .iter()
                    .flatten()
                    .map(|p| (p.name.clone().unwrap_or_default(), p.port))
                    .collect()
            })
            .collect()
    }

    fn key(name: &str) -> (String, String) {
        ("ns".to_owned(), name.to_owned())
    }

    /// The tunnel kind label (`pod`, `workload`) of the Endpoints `name`.
    fn kind(plan: &EndpointsPlan, name: &str) -> Option<String> {
        let labels = plan.endpoints[&key(name)].metadata.labels.as_ref()?;
        labels.get(objects::LABEL_TUNNEL_KIND).cloned()
    }

    #[test]
    fn pods_are_up_when_every_port_answers_and_list_only_up_ports() {
        let pods = [
            tunneled("u1", "web", &[(80, 40000), (8080, 40001)], None),
            tunneled("u2", "db", &[(5432, 40002)], None),
        ];
        let ips = vec!["10.244.0.5".to_owned()];
        let plan = endpoints_plan(&pods, &ips, &answered(&pods, &[40001]));
        assert_eq!(
            plan.up,
            BTreeMap::from([("u1".into(), false), ("u2".into(), true)])
        );
        assert_eq!(plan.endpoints.len(), 2);
        assert_eq!(
            listed(&plan.endpoints[&key("web-tunnel")]),
            vec![vec![("p80".to_owned(), 40000)]]
        );
        assert_eq!(
            listed(&plan.endpoints[&key("db-tunnel")]),
            vec![vec![("p5432".to_owned(), 40002)]]
        );
        assert_eq!(kind(&plan, "db-tunnel"), Some("pod".into()));
    }

    #[test]
    fn workload_services_list_one_subset_per_replica() {
        let pods = [
            tunneled("a", "web-0", &[(80, 40000)], Some("web")),
            tunneled("b", "web-1", &[(80, 40001)], Some("web")),
            tunneled("c", "web-2", &[(80, 40002)], Some("web")),
        ];
        let ips = vec!["10.244.0.5".to_owned()];
        let plan = endpoints_plan(&pods, &ips, &answered(&pods, &[40001]));
        assert_eq!(plan.endpoints.len(), 4);
        assert_eq!(
            listed(&plan.endpoints[&key("web")]),
            vec![
                vec![("p80".to_owned(), 40000)],
                vec![("p80".to_owned(), 40002)]
            ]
        );
        assert_eq!(kind(&plan, "web"), Some("workload".into()));
    }

    #[test]
    fn only_ready_live_gateway_pods_count() {
        use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let gw = |ip: &str, ready: &str, deleting: bool| {
            let mut p = Pod {
                status: Some(PodStatus {
                    pod_ip: Some(ip.into()),
                    conditions: Some(vec![PodCondition {
                        type_: "Ready".into(),
                        status: ready.into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            if deleting {
                p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
            }
            p
        };
        let pods = [
            gw("10.0.0.1", "True", false),
            gw("10.0.0.2", "False", false),
            gw("10.0.0.3", "True", true),
            Pod::default(),
        ];
        assert_eq!(ready_pod_ips(&pods), vec!["10.0.0.1".to_owned()]);
    }

    #[test]
    fn no_gateway_pod_no_addresses_and_nothing_up() {
        let pods = [tunneled("u1", "web", &[(80, 40000)], None)];
        let plan = endpoints_plan(&pods, &[], &[]);
        assert_eq!(plan.up, BTreeMap::from([("u1".into(), false)]));
        assert_eq!(plan.endpoints[&key("web-tunnel")].subsets, Some(vec![]));
        assert_eq!(probes_of(&pods).count(), 1);
        assert!(endpoints_plan(&[], &[], &[]).endpoints.is_empty());
    }
}
