//! What the remote pod cache keeps of a pod (the reflector's modify step):
//! what the status mapping, the log container choice, the ownership checks,
//! the sweep and the namespace GC read, nothing else. At 10,000 pods the
//! dropped parts (managedFields above all, then env, commands, volumes,
//! probes and the local annotations copied over) are most of the memory.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use offload_wire::keys;

/// Annotations something in the plugin reads.
const KEPT_ANNOTATIONS: &[&str] = &[
    keys::ANNOTATION_SOURCE_UID,
    keys::ANNOTATION_SOURCE_NAME,
    keys::ANNOTATION_SOURCE_NAMESPACE,
    "kubectl.kubernetes.io/default-container",
];

/// A container as the cache keeps it: its name and image (status), its
/// ports and terminal settings (exec, attach, port-forward).
fn container(c: &Container) -> Container {
    Container {
        name: c.name.clone(),
        image: c.image.clone(),
        ports: c.ports.clone(),
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        ..Default::default()
    }
}

/// Strips `pod` in place (see the module docs). Labels, owner references,
/// timestamps and the whole status stay.
pub fn strip(pod: &mut Pod) {
    let m = &mut pod.metadata;
    m.managed_fields = None;
    if let Some(a) = m.annotations.take() {
        let kept: BTreeMap<String, String> = a
            .into_iter()
            .filter(|(k, _)| KEPT_ANNOTATIONS.contains(&k.as_str()))
            .collect();
        m.annotations = (!kept.is_empty()).then_some(kept);
    }
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(PodSpec {
            containers: spec.containers.iter().map(container).collect(),
            init_containers: spec
                .init_containers
                .map(|cs| cs.iter().map(container).collect()),
            restart_policy: spec.restart_policy,
            node_name: spec.node_name,
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{EnvVar, PodStatus, Volume},
        apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta},
    };

    use super::*;

    #[test]
    fn keeps_what_is_read_and_drops_the_rest() {
        let app = Container {
            name: "app".into(),
            image: Some("busybox".into()),
            tty: Some(true),
            command: Some(vec!["sleep".into(); 100]),
            env: Some(vec![EnvVar {
                name: "BIG".into(),
                value: Some("x".repeat(10_000)),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let mut pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                labels: Some(BTreeMap::from([("l".into(), "v".into())])),
                annotations: Some(BTreeMap::from([
                    (keys::ANNOTATION_SOURCE_NAME.into(), "web".into()),
                    ("user/notes".into(), "y".repeat(10_000)),
                ])),
                managed_fields: Some(vec![ManagedFieldsEntry::default(); 3]),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![app],
                init_containers: Some(vec![Container {
                    name: "init".into(),
                    ..Default::default()
                }]),
                restart_policy: Some("Never".into()),
                volumes: Some(vec![Volume::default(); 5]),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..Default::default()
            }),
        };
        let before = serde_json::to_vec(&pod).expect("json").len();
        strip(&mut pod);
        let after = serde_json::to_vec(&pod).expect("json").len();
        assert!(after * 10 < before, "{after} of {before} bytes");
        assert_eq!(pod.metadata.managed_fields, None);
        let a = pod.metadata.annotations.as_ref().expect("kept");
        assert_eq!(a.len(), 1);
        assert_eq!(pod.metadata.labels.as_ref().map(|l| l.len()), Some(1));
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.containers[0].name, "app");
        assert_eq!(spec.containers[0].image.as_deref(), Some("busybox"));
        assert_eq!(spec.containers[0].tty, Some(true));
        assert_eq!(spec.containers[0].env, None);
        assert_eq!(spec.init_containers.as_ref().map(Vec::len), Some(1));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.volumes, None);
        assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));
    }
}
