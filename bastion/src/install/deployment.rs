//! The bastion's Deployment, from small named pieces: its arguments, its
//! environment, its container and its pod.
//!
//! `Recreate`: two *active* bastions would fight over the same gateway
//! ports, so the old ones must be gone first. With `replicas` > 1 the
//! replicas elect a leader over a Lease and only the leader is active (a
//! stopping leader releases the Lease, so the hand-over is quick).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use offload_runtime::kubeapi::{
    hardened_security_context, non_root_pod_security_context, recreate_deployment,
};

use super::{ANNOTATION_PUBLIC_KEY, BASTION_UID, BastionSpec, KEY_DIR, KEY_FILE};
use crate::desired::Gateway;

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    }
}

/// `POD_NAME` from the downward API: the replica's identity in the Lease.
fn pod_name_env() -> EnvVar {
    EnvVar {
        name: "POD_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                api_version: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), q("50m")),
            ("memory".into(), q("32Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), q("256Mi"))])),
        ..Default::default()
    }
}

impl BastionSpec {
    /// `--gateways` as the bastion reads it.
    pub fn gateways_json(&self) -> String {
        serde_json::to_string(&self.gateways).unwrap_or_else(|_| "[]".to_owned())
    }

    /// The gateways of a Deployment this function's sibling rendered (what a
    /// restarted plugin starts from, so it never drops a gateway).
    pub fn gateways_of(deployment: &Deployment) -> BTreeSet<Gateway> {
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .into_iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.env.iter().flatten())
            .filter(|e| e.name == "BASTION_GATEWAYS")
            .filter_map(|e| e.value.as_deref())
            .filter_map(|v| serde_json::from_str::<Vec<Gateway>>(v).ok())
            .flatten()
            .collect()
    }

    /// `offload-bastion run ...`: what to watch, where to serve, which Lease.
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "run".to_owned(),
            "--label-selector".into(),
            self.label_selector.clone(),
            "--admin-addr".into(),
            format!("0.0.0.0:{}", self.admin_port),
        ];
        if let Some(ns) = &self.watch_namespace {
            args.extend(["--namespace".to_owned(), ns.clone()]);
        }
        if let Some(i) = &self.plugin_instance {
            args.extend(["--plugin-instance".to_owned(), i.clone()]);
        }
        if self.leader_election() {
            args.extend([
                "--lease-name".to_owned(),
                self.lease_name(),
                "--lease-namespace".to_owned(),
                self.namespace.clone(),
            ]);
        }
        args
    }

    fn env(&self) -> Vec<EnvVar> {
        let mut env = vec![
            env("BASTION_KEY_FILE", format!("{KEY_DIR}/{KEY_FILE}")),
            env("RUST_LOG", "info,russh=warn".into()),
            // Sorted (a set): the same gateways render the same template.
            env("BASTION_GATEWAYS", self.gateways_json()),
        ];
        if self.leader_election() {
            env.push(pod_name_env());
        }
        env
    }

    fn admin_probe(&self, path: &str) -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::Int(i32::from(self.admin_port)),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }
    }

    fn container(&self) -> Container {
        Container {
            name: "bastion".into(),
            image: Some(self.image.clone()),
            image_pull_policy: Some(self.image_pull_policy.clone()),
            command: Some(vec!["/usr/bin/offload-bastion".into()]),
            args: Some(self.args()),
            env: Some(self.env()),
            ports: Some(vec![ContainerPort {
                name: Some("admin".into()),
                container_port: i32::from(self.admin_port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            liveness_probe: Some(Probe {
                initial_delay_seconds: Some(5),
                ..self.admin_probe("/healthz")
            }),
            resources: Some(resources()),
            security_context: Some(hardened_security_context()),
            volume_mounts: Some(vec![VolumeMount {
                name: "key".into(),
                mount_path: KEY_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn key_volume(&self) -> Volume {
        Volume {
            name: "key".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(self.key_secret()),
                default_mode: Some(0o440),
                items: None,
                optional: Some(false),
            }),
            ..Default::default()
        }
    }

    fn pod_spec(&self) -> PodSpec {
        PodSpec {
            service_account_name: Some(self.name.clone()),
            enable_service_links: Some(false),
            // SIGTERM cancels every forward; that takes milliseconds.
            termination_grace_period_seconds: Some(10),
            security_context: Some(non_root_pod_security_context(BASTION_UID)),
            containers: vec![self.container()],
            volumes: Some(vec![self.key_volume()]),
            ..Default::default()
        }
    }

    /// The Deployment (see the module doc for `Recreate`).
    pub fn deployment(&self) -> Deployment {
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(self.labels()),
                ..Default::default()
            }),
            spec: Some(self.pod_spec()),
        };
        recreate_deployment(
            self.meta(self.name.clone(), true),
            self.replicas.max(1),
            self.selector(),
            template,
        )
    }

    /// [`deployment`](Self::deployment) whose pod template names the
    /// bastion's public key, so a rotated key restarts the pod.
    pub fn deployment_for_key(&self, public_key: &str) -> Deployment {
        let mut d = self.deployment();
        if let Some(meta) = d.spec.as_mut().and_then(|s| s.template.metadata.as_mut()) {
            meta.annotations.get_or_insert_with(BTreeMap::new).insert(
                ANNOTATION_PUBLIC_KEY.to_owned(),
                public_key.trim().to_owned(),
            );
        }
        d
    }
}
