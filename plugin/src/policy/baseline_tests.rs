//! Each Baseline control: an allowed and a forbidden variant.

use k8s_openapi::{
    api::core::v1::{
        AppArmorProfile, Capabilities, ContainerPort, EphemeralContainer, HTTPGetAction,
        HostPathVolumeSource, Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec, Probe,
        SELinuxOptions, SeccompProfile, SecurityContext, Sysctl, TCPSocketAction, Volume,
        WindowsSecurityContextOptions,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::*;
use crate::policy::tests::{pod_with, rules};

/// The violations of `f`'s pod under `policy`.
fn check_with(policy: &Policy, f: impl FnOnce(&mut ObjectMeta, &mut PodSpec)) -> Vec<Violation> {
    let (m, s) = pod_with(f);
    policy.violations(&m, &s)
}

fn check(f: impl FnOnce(&mut ObjectMeta, &mut PodSpec)) -> Vec<Violation> {
    check_with(&Policy::default(), f)
}

fn sc(s: &mut PodSpec) -> &mut SecurityContext {
    s.containers[0]
        .security_context
        .get_or_insert_with(Default::default)
}

fn pod_sc(s: &mut PodSpec) -> &mut PodSecurityContext {
    s.security_context.get_or_insert_with(Default::default)
}

fn annotate(m: &mut ObjectMeta, k: &str, v: &str) {
    m.annotations
        .get_or_insert_with(Default::default)
        .insert(k.into(), v.into());
}

#[test]
fn host_process() {
    let windows = |hp| WindowsSecurityContextOptions {
        host_process: Some(hp),
        ..Default::default()
    };
    assert!(check(|_, s| sc(s).windows_options = Some(windows(false))).is_empty());
    let v = check(|_, s| sc(s).windows_options = Some(windows(true)));
    assert_eq!(
        rules(&v),
        [(
            "spec.containers[0].securityContext.windowsOptions.hostProcess",
            "baseline: host-process"
        )]
    );
}

#[test]
fn host_namespaces() {
    assert!(check(|_, s| s.host_network = Some(false)).is_empty());
    let v = check(|_, s| s.host_ipc = Some(true));
    assert_eq!(rules(&v), [("spec.hostIPC", "baseline: host-namespaces")]);
    assert!(v[0].message.contains("--allow-host-ipc"), "{}", v[0]);
    let p = Policy {
        allow_host_ipc: true,
        ..Policy::default()
    };
    assert!(check_with(&p, |_, s| s.host_ipc = Some(true)).is_empty());
}

#[test]
fn privileged_in_every_kind_of_container() {
    assert!(check(|_, s| sc(s).privileged = Some(false)).is_empty());
    let privileged = SecurityContext {
        privileged: Some(true),
        ..Default::default()
    };
    let v = check(|_, s| {
        let mut init = s.containers[0].clone();
        init.name = "init".into();
        init.security_context = Some(privileged.clone());
        s.init_containers = Some(vec![init]);
        s.ephemeral_containers = Some(vec![EphemeralContainer {
            name: "debug".into(),
            security_context: Some(privileged.clone()),
            ..Default::default()
        }]);
    });
    assert_eq!(
        rules(&v),
        [
            (
                "spec.initContainers[0].securityContext.privileged",
                "baseline: privileged"
            ),
            (
                "spec.ephemeralContainers[0].securityContext.privileged",
                "baseline: privileged"
            ),
        ]
    );
}

#[test]
fn capabilities_within_the_baseline_set() {
    let add = |caps: &[&str]| Capabilities {
        add: Some(caps.iter().map(|c| c.to_string()).collect()),
        drop: None,
    };
    let all: Vec<&str> = BASELINE_CAPABILITIES.to_vec();
    assert!(check(|_, s| sc(s).capabilities = Some(add(&all))).is_empty());
    assert!(check(|_, s| sc(s).capabilities = Some(add(&["CAP_CHOWN"]))).is_empty());
    let v = check(|_, s| sc(s).capabilities = Some(add(&["CHOWN", "cap_net_admin"])));
    assert_eq!(
        rules(&v),
        [(
            "spec.containers[0].securityContext.capabilities.add[1]",
            "baseline: capabilities"
        )]
    );
    let mut p = Policy::default();
    p.extra_capabilities.insert("NET_ADMIN".into());
    assert!(
        check_with(&p, |_, s| sc(s).capabilities =
            Some(add(&["CAP_NET_ADMIN"])))
        .is_empty()
    );
}

#[test]
fn host_path_volumes() {
    let v = check(|_, s| {
        s.volumes = Some(vec![Volume {
            name: "root".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/".into(),
                ..Default::default()
            }),
            ..Default::default()
        }])
    });
    assert_eq!(
        rules(&v),
        [("spec.volumes[0].hostPath", "baseline: host-path-volumes")]
    );
}

#[test]
fn host_ports() {
    let port = |h| ContainerPort {
        container_port: 80,
        host_port: h,
        ..Default::default()
    };
    assert!(check(|_, s| s.containers[0].ports = Some(vec![port(None), port(Some(0))])).is_empty());
    let v = check(|_, s| s.containers[0].ports = Some(vec![port(Some(0)), port(Some(8080))]));
    assert_eq!(
        rules(&v),
        [(
            "spec.containers[0].ports[1].hostPort",
            "baseline: host-ports"
        )]
    );
}

#[test]
fn probes_and_hooks_only_probe_the_pod() {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let http = |host: Option<&str>| Probe {
        http_get: Some(HTTPGetAction {
            host: host.map(Into::into),
            port: IntOrString::Int(8080),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(
        check(|_, s| {
            s.containers[0].liveness_probe = Some(http(None));
            s.containers[0].readiness_probe = Some(http(Some("")));
        })
        .is_empty()
    );
    let v = check(|_, s| {
        s.containers[0].startup_probe = Some(http(Some("10.0.0.1")));
        s.containers[0].lifecycle = Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                tcp_socket: Some(TCPSocketAction {
                    host: Some("169.254.169.254".into()),
                    port: IntOrString::Int(80),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    });
    assert_eq!(
        rules(&v),
        [
            (
                "spec.containers[0].startupProbe.httpGet.host",
                "baseline: host-probes"
            ),
            (
                "spec.containers[0].lifecycle.preStop.tcpSocket.host",
                "baseline: host-probes"
            ),
        ]
    );
}

#[test]
fn app_armor_annotations_and_fields() {
    let key = "container.apparmor.security.beta.kubernetes.io/app";
    assert!(check(|m, _| annotate(m, key, "runtime/default")).is_empty());
    assert!(check(|m, _| annotate(m, key, "localhost/k8s-nginx")).is_empty());
    let v = check(|m, _| annotate(m, key, "unconfined"));
    assert_eq!(
        rules(&v),
        [(
            "metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]",
            "baseline: apparmor"
        )]
    );
    let profile = |t: &str| AppArmorProfile {
        type_: t.into(),
        ..Default::default()
    };
    assert!(check(|_, s| sc(s).app_armor_profile = Some(profile("RuntimeDefault"))).is_empty());
    let v = check(|_, s| pod_sc(s).app_armor_profile = Some(profile("Unconfined")));
    assert_eq!(
        rules(&v),
        [(
            "spec.securityContext.appArmorProfile.type",
            "baseline: apparmor"
        )]
    );
}

#[test]
fn se_linux_types_users_and_roles() {
    let opts = |t: Option<&str>, u: Option<&str>| SELinuxOptions {
        type_: t.map(Into::into),
        user: u.map(Into::into),
        level: Some("s0:c123,c456".into()),
        role: None,
    };
    assert!(
        check(|_, s| sc(s).se_linux_options = Some(opts(Some("container_t"), None))).is_empty()
    );
    let v = check(|_, s| {
        pod_sc(s).se_linux_options = Some(opts(Some("spc_t"), None));
        sc(s).se_linux_options = Some(opts(None, Some("system_u")));
    });
    assert_eq!(
        rules(&v),
        [
            (
                "spec.securityContext.seLinuxOptions.type",
                "baseline: selinux"
            ),
            (
                "spec.containers[0].securityContext.seLinuxOptions.user",
                "baseline: selinux"
            ),
        ]
    );
}

#[test]
fn proc_mount() {
    assert!(check(|_, s| sc(s).proc_mount = Some("Default".into())).is_empty());
    let v = check(|_, s| sc(s).proc_mount = Some("Unmasked".into()));
    assert_eq!(
        rules(&v),
        [(
            "spec.containers[0].securityContext.procMount",
            "baseline: proc-mount"
        )]
    );
}

#[test]
fn seccomp_fields_and_1_20_annotations() {
    let profile = |t: &str| SeccompProfile {
        type_: t.into(),
        ..Default::default()
    };
    assert!(check(|_, s| pod_sc(s).seccomp_profile = Some(profile("RuntimeDefault"))).is_empty());
    assert!(check(|m, _| annotate(m, SECCOMP_POD_ANNOTATION, "runtime/default")).is_empty());
    let v = check(|m, s| {
        pod_sc(s).seccomp_profile = Some(profile("Unconfined"));
        sc(s).seccomp_profile = Some(profile("Unconfined"));
        annotate(m, SECCOMP_POD_ANNOTATION, "unconfined");
        annotate(
            m,
            "container.seccomp.security.alpha.kubernetes.io/app",
            "unconfined",
        );
    });
    assert_eq!(
        rules(&v),
        [
            (
                "spec.securityContext.seccompProfile.type",
                "baseline: seccomp"
            ),
            (
                "spec.containers[0].securityContext.seccompProfile.type",
                "baseline: seccomp"
            ),
            (
                "metadata.annotations[seccomp.security.alpha.kubernetes.io/pod]",
                "baseline: seccomp"
            ),
            (
                "metadata.annotations[container.seccomp.security.alpha.kubernetes.io/app]",
                "baseline: seccomp"
            ),
        ]
    );
}

#[test]
fn sysctls_in_the_safe_set() {
    let sysctl = |n: &str| Sysctl {
        name: n.into(),
        value: "1".into(),
    };
    let safe: Vec<Sysctl> = SAFE_SYSCTLS.iter().map(|n| sysctl(n)).collect();
    assert!(check(|_, s| pod_sc(s).sysctls = Some(safe)).is_empty());
    let unsafe_one = || {
        Some(vec![
            sysctl("net.ipv4.tcp_syncookies"),
            sysctl("kernel.msgmax"),
        ])
    };
    let v = check(|_, s| pod_sc(s).sysctls = unsafe_one());
    assert_eq!(
        rules(&v),
        [("spec.securityContext.sysctls[1].name", "baseline: sysctls")]
    );
    let mut p = Policy::default();
    p.extra_sysctls.insert("kernel.msgmax".into());
    assert!(check_with(&p, |_, s| pod_sc(s).sysctls = unsafe_one()).is_empty());
}
