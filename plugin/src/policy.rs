//! What the remote operator allows. Pure; checked before anything is created.

use k8s_openapi::api::core::v1::PodSpec;

/// Toggles of the admission policy. Everything risky is refused by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub allow_host_path: bool,
    pub allow_privileged: bool,
    pub allow_host_network: bool,
    pub allow_host_pid: bool,
    pub allow_host_ipc: bool,
}

impl Policy {
    /// Everything allowed (what the Python plugin did, minus its silent drops).
    pub fn permissive() -> Self {
        Self {
            allow_host_path: true,
            allow_privileged: true,
            allow_host_network: true,
            allow_host_pid: true,
            allow_host_ipc: true,
        }
    }

    /// Every reason this spec is refused (empty: allowed). Each reason names
    /// the field and the flag that would allow it.
    pub fn violations(&self, spec: &PodSpec) -> Vec<String> {
        let mut out = Vec::new();
        if !self.allow_host_network && spec.host_network == Some(true) {
            out.push(
                "spec.hostNetwork is true; not allowed by the remote policy (--allow-host-network)"
                    .into(),
            );
        }
        if !self.allow_host_pid && spec.host_pid == Some(true) {
            out.push(
                "spec.hostPID is true; not allowed by the remote policy (--allow-host-pid)".into(),
            );
        }
        if !self.allow_host_ipc && spec.host_ipc == Some(true) {
            out.push(
                "spec.hostIPC is true; not allowed by the remote policy (--allow-host-ipc)".into(),
            );
        }
        if !self.allow_host_path {
            for v in spec.volumes.iter().flatten() {
                if let Some(hp) = &v.host_path {
                    out.push(format!(
                        "volume {:?} is a hostPath ({}); not allowed by the remote policy (--allow-host-path)",
                        v.name, hp.path
                    ));
                }
            }
        }
        if !self.allow_privileged {
            let containers = spec
                .init_containers
                .iter()
                .flatten()
                .chain(spec.containers.iter());
            for c in containers {
                let sc = c.security_context.as_ref();
                if sc.and_then(|s| s.privileged) == Some(true) {
                    out.push(format!(
                        "container {:?} asks for privileged: true; not allowed by the remote policy (--allow-privileged)",
                        c.name
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, HostPathVolumeSource, SecurityContext, Volume};

    fn spec() -> PodSpec {
        PodSpec {
            containers: vec![Container {
                name: "c".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn plain_pod_is_allowed() {
        assert!(Policy::default().violations(&spec()).is_empty());
    }

    #[test]
    fn defaults_refuse_host_path_privileged_and_host_namespaces() {
        let mut s = spec();
        s.host_network = Some(true);
        s.host_pid = Some(true);
        s.volumes = Some(vec![Volume {
            name: "root".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/".into(),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        s.containers[0].security_context = Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
        let v = Policy::default().violations(&s);
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(
            v.iter()
                .any(|m| m.contains("hostPath") && m.contains("\"root\""))
        );
        assert!(
            v.iter()
                .any(|m| m.contains("privileged") && m.contains("\"c\""))
        );
        assert!(Policy::permissive().violations(&s).is_empty());
    }
}
