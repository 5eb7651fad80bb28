//! What the bastion should forward, computed from remote pods. Pure.
//!
//! The plugin copies the local pod's annotations onto the remote pod, so each
//! offloaded pod that has a tunnel carries the gateway address, the pinned
//! gateway host key and its containerPort -> gateway port map. A pod is
//! forwarded once it has an IP and is not terminating.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use offload_wire::tunnel::{GatewayPort, TunnelAnnotations};

/// One gateway: where it is and which host key it must show.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gateway {
    /// `host:port`.
    pub address: String,
    /// OpenSSH public key line of the gateway host key.
    pub host_key: String,
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

/// A pod that could not be used, and why (logged by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub pod: String,
    pub reason: String,
}

/// Compute the desired forwards from the pods the bastion sees. When two live
/// pods claim the same gateway port (an old pod still terminating while its
/// replacement runs cannot happen since terminating pods are skipped, but a
/// stale copy can), the most recently created wins.
pub fn from_pods<'a, I>(pods: I) -> (Desired, Vec<Skipped>)
where
    I: IntoIterator<Item = &'a Pod>,
{
    let mut chosen: BTreeMap<(Gateway, GatewayPort), (Option<String>, Target)> = BTreeMap::new();
    let mut skipped = Vec::new();
    for pod in pods {
        let name = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or("")
        );
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(annotations) = pod.metadata.annotations.as_ref() else {
            continue;
        };
        let tunnel = match TunnelAnnotations::from_map(annotations) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(e) => {
                skipped.push(Skipped {
                    pod: name,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let status = pod.status.as_ref();
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let Some(ip) = status
            .and_then(|s| s.pod_ip.as_deref())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let gateway = Gateway {
            address: tunnel.gateway_address,
            host_key: tunnel.gateway_host_key,
        };
        let created = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string());
        for (container_port, gateway_port) in tunnel.ports {
            let target = Target {
                host: ip.to_owned(),
                port: container_port.0,
            };
            let key = (gateway.clone(), gateway_port);
            match chosen.get(&key) {
                Some((c, _)) if *c >= created => {}
                _ => {
                    chosen.insert(key, (created.clone(), target));
                }
            }
        }
    }
    let mut desired = Desired::new();
    for ((gateway, port), (_, target)) in chosen {
        desired.entry(gateway).or_default().insert(port, target);
    }
    (desired, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use offload_wire::keys::tunnel;
    use pretty_assertions::assert_eq;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGf";

    fn pod(name: &str, ip: Option<&str>, ports: &str, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                creation_timestamp: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(created).expect("ts"),
                )),
                annotations: Some(BTreeMap::from([
                    (tunnel::GATEWAY_ADDRESS.into(), "10.0.0.1:30222".into()),
                    (tunnel::GATEWAY_HOST_KEY.into(), KEY.into()),
                    (tunnel::PORTS.into(), ports.into()),
                ])),
                ..Default::default()
            },
            status: Some(PodStatus {
                pod_ip: ip.map(str::to_owned),
                phase: Some("Running".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn gw() -> Gateway {
        Gateway {
            address: "10.0.0.1:30222".into(),
            host_key: KEY.into(),
        }
    }

    fn t(host: &str, port: u16) -> Target {
        Target {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn pods_to_forwards() {
        let mut done = pod("done", Some("10.1.0.9"), r#"{"80":40009}"#, 1);
        if let Some(s) = done.status.as_mut() {
            s.phase = Some("Succeeded".into());
        }
        let mut gone = pod("gone", Some("10.1.0.8"), r#"{"80":40008}"#, 1);
        gone.metadata.deletion_timestamp = gone.metadata.creation_timestamp.clone();
        let mut broken = pod("broken", Some("10.1.0.7"), "nope", 1);
        broken.metadata.name = Some("broken".into());
        let pods = vec![
            pod("a", Some("10.1.0.1"), r#"{"80":40000,"8080":40001}"#, 1),
            pod("pending", None, r#"{"80":40002}"#, 1),
            pod("old", Some("10.1.0.3"), r#"{"80":40003}"#, 1),
            pod("new", Some("10.1.0.4"), r#"{"80":40003}"#, 2),
            done,
            gone,
            broken,
            Pod::default(),
        ];
        let (desired, skipped) = from_pods(&pods);
        assert_eq!(
            desired,
            Desired::from([(
                gw(),
                Forwards::from([
                    (GatewayPort(40000), t("10.1.0.1", 80)),
                    (GatewayPort(40001), t("10.1.0.1", 8080)),
                    (GatewayPort(40003), t("10.1.0.4", 80)),
                ])
            )])
        );
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].pod, "ns/broken");
    }

    #[test]
    fn plan_diff() {
        let active = BTreeSet::from([1, 2, 3].map(GatewayPort));
        let desired = Forwards::from([(GatewayPort(2), t("a", 1)), (GatewayPort(4), t("b", 1))]);
        assert_eq!(
            Plan::diff(&active, &desired),
            Plan {
                cancel: vec![GatewayPort(1), GatewayPort(3)],
                request: vec![GatewayPort(4)]
            }
        );
        assert!(Plan::diff(&BTreeSet::from([2, 4].map(GatewayPort)), &desired).is_empty());
        assert_eq!(
            Plan::diff(&BTreeSet::new(), &Forwards::new()),
            Plan::default()
        );
    }
}
