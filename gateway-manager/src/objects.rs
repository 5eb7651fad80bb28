//! The Kubernetes objects of the gateway and of the tunnels, built as plain
//! values (no client here, unit-tested). Only fields Kubernetes 1.20 knows.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EndpointAddress,
    EndpointPort, EndpointSubset, Endpoints, PodSpec, PodTemplateSpec, Probe, SecretVolumeSource,
    Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use offload_runtime::kubeapi;
use offload_wire::keys;
use sha2::{Digest, Sha256};

use offload_wire::tunnel::{ContainerPort, GatewayPort, PortMap};

/// Label on every object gateway-manager owns, value [`COMPONENT_VALUE`].
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const COMPONENT_VALUE: &str = "offload-tunnel";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// On local tunnel Services: `pod` (per-pod Service) or `workload`.
pub const LABEL_TUNNEL_KIND: &str = "tunnel.offload.dev/kind";
/// Pod-template annotation: hash of the config, so a change restarts sshd.
pub const ANNOTATION_CONFIG_HASH: &str = "tunnel.offload.dev/config-hash";

pub const GATEWAY_UID: i64 = 1000;
/// Data key of the gateway's private host key in its Secret (the public
/// key is next to it, with `.pub`).
pub const HOST_KEY_PRIVATE: &str = "ssh_host_ed25519_key";
pub const SSH_PORT_NAME: &str = "ssh";

/// Where and how the gateway runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySpec {
    pub namespace: String,
    pub name: String,
    pub image: String,
    pub image_pull_policy: String,
    /// Port of the ClusterIP Service (targets sshd's 2222).
    pub service_port: u16,
    /// NodePort of the NodePort Service; `None`: no NodePort Service.
    pub node_port: Option<u16>,
}

impl GatewaySpec {
    pub fn host_key_secret(&self) -> String {
        format!("{}-host-key", self.name)
    }
    pub fn nodeport_service(&self) -> String {
        format!("{}-nodeport", self.name)
    }
    pub fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_NAME.to_owned(), "offload-gateway".to_owned()),
            (LABEL_INSTANCE.to_owned(), self.name.clone()),
        ])
    }
    fn labels(&self) -> BTreeMap<String, String> {
        let mut l = self.selector();
        l.insert(LABEL_COMPONENT.into(), COMPONENT_VALUE.into());
        l.insert(
            keys::LABEL_MANAGED_BY.into(),
            keys::MANAGED_BY_PROVIDER.into(),
        );
        l
    }
    fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            ..Default::default()
        }
    }

    pub fn config_map(&self, sshd_config: &str, authorized_keys: &str) -> ConfigMap {
        ConfigMap {
            metadata: self.meta(self.name.clone()),
            data: Some(BTreeMap::from([
                ("sshd_config".to_owned(), sshd_config.to_owned()),
                ("authorized_keys".to_owned(), authorized_keys.to_owned()),
            ])),
            ..Default::default()
        }
    }

    pub fn host_key_secret_object(
        &self,
        private: &str,
        public: &str,
    ) -> k8s_openapi::api::core::v1::Secret {
        k8s_openapi::api::core::v1::Secret {
            metadata: self.meta(self.host_key_secret()),
            type_: Some("Opaque".into()),
            string_data: Some(BTreeMap::from([
                (HOST_KEY_PRIVATE.to_owned(), private.to_owned()),
                (format!("{HOST_KEY_PRIVATE}.pub"), format!("{public}\n")),
            ])),
            ..Default::default()
        }
    }

    /// One replica, `Recreate`: two sshd pods would each hold half the
    /// forwards; the old one must be gone (its ports with it) first.
    pub fn deployment(&self, config_hash: &str) -> Deployment {
        let template_annotations =
            BTreeMap::from([(ANNOTATION_CONFIG_HASH.to_owned(), config_hash.to_owned())]);
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(self.labels()),
                annotations: Some(template_annotations),
                ..Default::default()
            }),
            spec: Some(self.pod_spec()),
        };
        kubeapi::recreate_deployment(self.meta(self.name.clone()), 1, self.selector(), template)
    }

    fn pod_spec(&self) -> PodSpec {
        PodSpec {
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            // Secret files are root-owned; group-readable by us (fsGroup).
            security_context: Some(kubeapi::non_root_pod_security_context(GATEWAY_UID)),
            containers: vec![self.sshd_container()],
            volumes: Some(self.volumes()),
            ..Default::default()
        }
    }

    /// Stock OpenSSH in the foreground, logging to stderr, on 2222.
    fn sshd_container(&self) -> Container {
        Container {
            command: Some(
                [
                    "/usr/sbin/sshd",
                    "-D",
                    "-e",
                    "-f",
                    "/etc/ssh/gateway/config/sshd_config",
                ]
                .map(String::from)
                .to_vec(),
            ),
            ports: Some(vec![kubeapi::tcp_container_port(SSH_PORT_NAME, SSHD_PORT)]),
            // Every second: the NodePort lists the pod only once it is ready,
            // and the bastion's reconnect waits for that after a restart.
            readiness_probe: Some(Probe {
                period_seconds: Some(1),
                ..sshd_probe()
            }),
            liveness_probe: Some(Probe {
                initial_delay_seconds: Some(5),
                ..sshd_probe()
            }),
            resources: Some(kubeapi::container_resources("50m", "32Mi", "512Mi")),
            volume_mounts: Some(volume_mounts()),
            ..kubeapi::hardened_container("sshd", &self.image, &self.image_pull_policy)
        }
    }

    /// The config (ConfigMap), the host key (Secret) and a small tmpfs.
    fn volumes(&self) -> Vec<Volume> {
        let volume = |name: &str| Volume {
            name: name.into(),
            ..Default::default()
        };
        vec![
            Volume {
                config_map: Some(ConfigMapVolumeSource {
                    name: self.name.clone(),
                    default_mode: Some(0o444),
                    ..Default::default()
                }),
                ..volume("config")
            },
            Volume {
                secret: Some(SecretVolumeSource {
                    secret_name: Some(self.host_key_secret()),
                    default_mode: Some(0o440),
                    ..Default::default()
                }),
                ..volume("hostkey")
            },
            Volume {
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: Some(Quantity("1Mi".into())),
                }),
                ..volume("tmp")
            },
        ]
    }

    fn ssh_port(&self, node_port: Option<u16>) -> ServicePort {
        ServicePort {
            name: Some(SSH_PORT_NAME.into()),
            port: i32::from(self.service_port),
            target_port: Some(IntOrString::Int(SSHD_PORT)),
            node_port: node_port.map(i32::from),
            protocol: Some("TCP".into()),
            ..Default::default()
        }
    }

    pub fn cluster_service(&self) -> Service {
        Service {
            metadata: self.meta(self.name.clone()),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                selector: Some(self.selector()),
                ports: Some(vec![self.ssh_port(None)]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn nodeport_service_object(&self) -> Option<Service> {
        let np = self.node_port?;
        Some(Service {
            metadata: self.meta(self.nodeport_service()),
            spec: Some(ServiceSpec {
                type_: Some("NodePort".into()),
                selector: Some(self.selector()),
                ports: Some(vec![self.ssh_port(Some(np))]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}

/// Port sshd listens on inside the gateway pod.
const SSHD_PORT: i32 = 2222;

/// A TCP check of sshd's port every 5 s.
fn sshd_probe() -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(SSHD_PORT),
            host: None,
        }),
        period_seconds: Some(5),
        ..Default::default()
    }
}

fn volume_mounts() -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    };
    vec![
        mount("config", "/etc/ssh/gateway/config", true),
        mount("hostkey", "/etc/ssh/gateway/hostkey", true),
        mount("tmp", "/tmp", false),
    ]
}

/// Hash of the rendered config (goes on the pod template).
pub fn config_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// Name of the per-pod tunnel Service: `<pod>-tunnel`, shortened with a hash
/// suffix when it would exceed 63 characters.
pub fn pod_service_name(pod_name: &str) -> String {
    let full = format!("{pod_name}-tunnel");
    if full.len() <= 63 && is_rfc1035_label(&full) {
        return full;
    }
    let hash = hex::encode(&Sha256::digest(pod_name.as_bytes())[..4]);
    let mut prefix: String = pod_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63 - 1 - 8 - 7)
        .collect();
    while prefix.ends_with('-') {
        prefix.pop();
    }
    let prefix = prefix.trim_start_matches(|c: char| !c.is_ascii_alphabetic());
    if prefix.is_empty() {
        format!("t{hash}-tunnel")
    } else {
        format!("{prefix}-{hash}-tunnel")
    }
}

/// Is `s` an RFC 1035 label (a lower-case letter first, then lower-case
/// alphanumerics and `-`, not ending in `-`, 1..=63 characters)?
///
/// RFC 1035 (not the laxer RFC 1123 the plugin checks pod names with) because
/// Kubernetes requires it of Service names, which this checks: a Service name
/// becomes a DNS name and may not start with a digit.
pub fn is_rfc1035_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub fn port_name(cp: ContainerPort) -> String {
    format!("p{cp}")
}

/// Which tunnel Service (label [`LABEL_TUNNEL_KIND`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TunnelServiceKind {
    /// `<pod>-tunnel`, one per tunneled pod, owned by the pod.
    Pod,
    /// The `interlink.io/tunnel-service` of the pods of a workload.
    Workload,
}

impl TunnelServiceKind {
    pub fn label(self) -> &'static str {
        match self {
            TunnelServiceKind::Pod => "pod",
            TunnelServiceKind::Workload => "workload",
        }
    }
}

fn tunnel_labels(kind: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_COMPONENT.to_owned(), COMPONENT_VALUE.to_owned()),
        (
            keys::LABEL_MANAGED_BY.to_owned(),
            keys::MANAGED_BY_PROVIDER.to_owned(),
        ),
        (LABEL_TUNNEL_KIND.to_owned(), kind.to_owned()),
    ])
}

/// A selectorless Service: its Endpoints are written by gateway-manager and
/// point at the gateway pod on gateway ports (Services cannot select pods of
/// another namespace, and the gateway port is not the containerPort).
pub fn tunnel_service(
    namespace: &str,
    name: &str,
    kind: &str,
    container_ports: impl IntoIterator<Item = ContainerPort>,
    owner: Option<OwnerReference>,
) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(tunnel_labels(kind)),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            ports: Some(
                container_ports
                    .into_iter()
                    .map(|cp| ServicePort {
                        name: Some(port_name(cp)),
                        port: i32::from(cp),
                        target_port: Some(IntOrString::Int(i32::from(cp))),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One replica's up ports: gateway pod IPs x (containerPort -> gateway port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpTunnel {
    pub ports: BTreeMap<ContainerPort, GatewayPort>,
}

/// Endpoints of a tunnel Service: one subset per replica (each replica has its
/// own gateway ports), listing only its ports that are up.
pub fn tunnel_endpoints(
    namespace: &str,
    name: &str,
    kind: &str,
    gateway_ips: &[String],
    replicas: &[PortMap],
) -> Endpoints {
    let subsets: Vec<EndpointSubset> = if gateway_ips.is_empty() {
        Vec::new()
    } else {
        replicas
            .iter()
            .filter(|r| !r.is_empty())
            .map(|r| EndpointSubset {
                addresses: Some(
                    gateway_ips
                        .iter()
                        .map(|ip| EndpointAddress {
                            ip: ip.clone(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ports: Some(
                    r.iter()
                        .map(|(cp, gw)| EndpointPort {
                            name: Some(port_name(*cp)),
                            port: i32::from(*gw),
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            })
            .collect()
    };
    Endpoints {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(tunnel_labels(kind)),
            ..Default::default()
        },
        subsets: Some(subsets),
    }
}

#[cfg(test)]
mod tests;
