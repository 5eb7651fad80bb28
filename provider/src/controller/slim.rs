//! What the pod store keeps of a pod once it is offloaded (it carries its
//! `JobID`): the name, namespace, UID and annotations, the status, and the
//! parts of the spec the provider still reads (container names, images and
//! ports, whether a readiness or startup probe is set, restart policies, the
//! deadline, the node); not what only the create needed (labels, volumes,
//! env, commands, resources, probe and lifecycle contents, security
//! contexts, scheduling constraints and tolerations, owners). At 10,000 pods
//! the full specs were most of the provider's memory. The lists kept are
//! shrunk to their length: deserialized one by one they have room for four,
//! and four container statuses of 752 bytes each were a fifth of a slimmed
//! pod. Pure.
//!
//! A pod being deleted is not slimmed (the watch hands it whole): its
//! delete, the one step after the create that sends the pod to the plugin,
//! sends it as it is.

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus, Probe};

/// Drops from `pod` what no step after the create reads.
pub fn slim(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.generate_name = None;
    shrink(&mut meta.finalizers);
    if let Some(status) = pod.status.as_mut() {
        shrink_status(status);
    }
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    spec.tolerations = None;
    spec.node_selector = None;
    spec.containers.shrink_to_fit();
    shrink(&mut spec.init_containers);
    spec.volumes = None;
    spec.affinity = None;
    spec.security_context = None;
    spec.image_pull_secrets = None;
    spec.host_aliases = None;
    spec.dns_config = None;
    spec.topology_spread_constraints = None;
    spec.readiness_gates = None;
    spec.overhead = None;
    spec.ephemeral_containers = None;
    spec.containers.iter_mut().for_each(slim_container);
    if let Some(init) = spec.init_containers.as_mut() {
        init.iter_mut().for_each(slim_container);
    }
}

fn shrink_status(status: &mut PodStatus) {
    shrink(&mut status.conditions);
    shrink(&mut status.pod_ips);
    shrink(&mut status.host_ips);
    for list in [
        &mut status.container_statuses,
        &mut status.init_container_statuses,
        &mut status.ephemeral_container_statuses,
    ] {
        shrink(list);
        list.iter_mut()
            .flatten()
            .for_each(|c| shrink(&mut c.volume_mounts));
    }
}

fn shrink<T>(list: &mut Option<Vec<T>>) {
    if let Some(l) = list.as_mut() {
        l.shrink_to_fit();
    }
}

fn slim_container(c: &mut Container) {
    shrink(&mut c.ports);
    c.resources = None;
    c.env = None;
    c.env_from = None;
    c.volume_mounts = None;
    c.volume_devices = None;
    c.command = None;
    c.args = None;
    c.lifecycle = None;
    c.security_context = None;
    c.working_dir = None;
    c.liveness_probe = None;
    // Only whether they are set is read (readiness of a running container).
    c.readiness_probe = c.readiness_probe.as_ref().map(|_| Probe::default());
    c.startup_probe = c.startup_probe.as_ref().map(|_| Probe::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u",
                         "labels": {"app": "web"},
                         "annotations": {"JobID": "j"}},
            "spec": {
                "nodeName": "vn", "restartPolicy": "Never", "activeDeadlineSeconds": 30,
                "tolerations": [{"operator": "Exists"}],
                "volumes": [{"name": "v", "secret": {"secretName": "s"}}],
                "initContainers": [{"name": "i", "image": "busybox", "command": ["true"],
                                    "restartPolicy": "Always",
                                    "startupProbe": {"exec": {"command": ["x"]}}}],
                "containers": [{"name": "c", "image": "busybox",
                                "env": [{"name": "A", "value": "secret"}],
                                "ports": [{"containerPort": 80}],
                                "resources": {"requests": {"cpu": "1"}},
                                "volumeMounts": [{"name": "v", "mountPath": "/v"}],
                                "readinessProbe": {"httpGet": {"port": 80}},
                                "livenessProbe": {"httpGet": {"port": 80}}}]
            },
            "status": {"phase": "Running"}
        }))
        .expect("pod")
    }

    #[test]
    fn keeps_what_is_read_after_the_create() {
        let mut p = pod();
        slim(&mut p);
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("vn"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.active_deadline_seconds, Some(30));
        let c = &spec.containers[0];
        assert_eq!(
            (c.name.as_str(), c.image.as_deref()),
            ("c", Some("busybox"))
        );
        assert!(c.ports.is_some());
        assert!(
            c.readiness_probe.is_some(),
            "a readiness probe is still set"
        );
        let i = &spec.init_containers.as_ref().expect("init")[0];
        assert_eq!(i.restart_policy.as_deref(), Some("Always"));
        assert!(i.startup_probe.is_some());
        assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Running"));
        assert!(p.metadata.annotations.is_some());
    }

    #[test]
    fn lists_kept_have_no_spare_room() {
        // From text, as the watcher reads it (a JSON value would size the
        // lists exactly).
        let text = serde_json::json!({
            "metadata": {"name": "p", "annotations": {"JobID": "j"}},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}],
                     "tolerations": [{"operator": "Exists"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "podIPs": [{"ip": "10.0.0.1"}],
                       "containerStatuses": [{"name": "c", "image": "i", "imageID": "",
                                              "ready": true, "restartCount": 0}]}
        })
        .to_string();
        let mut p: Pod = serde_json::from_str(&text).expect("pod");
        let status = p.status.as_ref().expect("status");
        let cs = status.container_statuses.as_ref().expect("statuses");
        assert!(
            cs.capacity() > cs.len(),
            "serde leaves room: the test needs it"
        );
        slim(&mut p);
        let status = p.status.as_ref().expect("status");
        let cs = status.container_statuses.as_ref().expect("statuses");
        assert_eq!((cs.len(), cs.capacity()), (1, 1));
        let conditions = status.conditions.as_ref().expect("conditions");
        assert_eq!(conditions.capacity(), 1);
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(
            spec.containers[0].ports.as_ref().map(Vec::capacity),
            Some(1)
        );
    }

    #[test]
    fn drops_what_only_the_create_needs() {
        let mut p = pod();
        slim(&mut p);
        let spec = p.spec.as_ref().expect("spec");
        assert!(spec.volumes.is_none() && spec.tolerations.is_none());
        assert!(p.metadata.labels.is_none());
        assert!(spec.containers[0].resources.is_none());
        let c = &spec.containers[0];
        assert!(c.env.is_none() && c.volume_mounts.is_none() && c.liveness_probe.is_none());
        assert_eq!(c.readiness_probe, Some(Probe::default()));
        let i = &spec.init_containers.as_ref().expect("init")[0];
        assert!(i.command.is_none());
        let json = serde_json::to_string(&p).expect("json");
        assert!(!json.contains("secret"), "{json}");
    }
}
