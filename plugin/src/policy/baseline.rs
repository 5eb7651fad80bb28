//! The Baseline level of the Pod Security Standards: one function per
//! control, in the order of the Kubernetes page. Each pushes one
//! [`Violation`] per offending field.

use k8s_openapi::api::core::v1::{
    HTTPGetAction, LifecycleHandler, SELinuxOptions, SeccompProfile, TCPSocketAction,
};

use super::{ContainerView, PodView, Policy, Violation, annotation_path};

/// Capabilities a baseline pod may add.
pub const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls a baseline pod may set (namespaced and isolated from the node).
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
];

/// SELinux types a baseline pod may ask for.
const SELINUX_TYPES: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// The 1.20 annotations of seccomp and AppArmor (before the fields).
pub(super) const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
pub(super) const SECCOMP_CONTAINER_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";
const APPARMOR_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// Every Baseline control, exceptions of the operator applied.
pub(super) fn check(policy: &Policy, pod: &PodView<'_>, out: &mut Vec<Violation>) {
    host_process(pod, out);
    host_namespaces(policy, pod, out);
    if !policy.allow_privileged {
        privileged(pod, out);
    }
    capabilities(policy, pod, out);
    if !policy.allow_host_path {
        host_path_volumes(pod, out);
    }
    host_ports(pod, out);
    host_probes(pod, out);
    app_armor(pod, out);
    se_linux(pod, out);
    proc_mount(pod, out);
    seccomp(pod, out);
    sysctls(policy, pod, out);
}

fn rule(control: &str) -> String {
    format!("baseline: {control}")
}

/// Windows HostProcess containers run as the node.
pub(super) fn host_process(pod: &PodView<'_>, out: &mut Vec<Violation>) {
    let pod_level = pod
        .spec
        .security_context
        .as_ref()
        .and_then(|s| s.windows_options.as_ref())
        .and_then(|w| w.host_process);
    if pod_level == Some(true) {
        out.push(Violation::new(
            "spec.securityContext.windowsOptions.hostProcess",
            rule("host-process"),
            "HostProcess pods are not allowed",
        ));
    }
    for c in &pod.containers {
        let hp = c
            .security_context
            .and_then(|s| s.windows_options.as_ref())
            .and_then(|w| w.host_process);
        if hp == Some(true) {
            out.push(Violation::new(
                c.sc_path("windowsOptions.hostProcess"),
                rule("host-process"),
                format!("container {:?} asks for a HostProcess container", c.name),
            ));
        }
    }
}

/// hostNetwork, hostPID, hostIPC.
pub(super) fn host_namespaces(policy: &Policy, pod: &PodView<'_>, out: &mut Vec<Violation>) {
    let s = pod.spec;
    for (set, allowed, field, flag) in [
        (
            s.host_network,
            policy.allow_host_network,
            "hostNetwork",
            "--allow-host-network",
        ),
        (
            s.host_pid,
            policy.allow_host_pid,
            "hostPID",
            "--allow-host-pid",
        ),
        (
            s.host_ipc,
            policy.allow_host_ipc,
            "hostIPC",
            "--allow-host-ipc",
        ),
    ] {
        if set == Some(true) && !allowed {
            out.push(Violation::new(
                format!("spec.{field}"),
                rule("host-namespaces"),
                format!("sharing the node's namespaces is not allowed (the operator can allow it with {flag})"),
            ));
        }
    }
}

/// `securityContext.privileged` of every container.
pub(super) fn privileged(pod: &PodView<'_>, out: &mut Vec<Violation>) {
    for c in &pod.containers {
        if c.security_context.and_then(|s| s.privileged) == Some(true) {
            out.push(Violation::new(
                c.sc_path("privileged"),
                rule("privileged"),
                format!(
                    "container {:?} asks for privileged: true (the operator can allow it with --allow-privileged)",
                    c.name
                ),
            ));
        }
    }
}

/// `NET_ADMIN`, `cap_net_admin` and `CAP_NET_ADMIN` are one capability to
/// the container runtime: compare them as one.
pub(super) fn normalize_capability(c: &str) -> String {
    let up = c.trim().to_ascii_uppercase();
    up.strip_prefix("CAP_").map(str::to_owned).unwrap_or(up)
}

/// Whether a baseline pod may add `cap` (operator's extras included).
pub(super) fn capability_allowed(policy: &Policy, cap: &str) -> bool {
    let cap = normalize_capability(cap);
    BASELINE_CAPABILITIES.contains(&cap.as_str())
        || policy
            .extra_capabilities
            .iter()
            .any(|e| normalize_capability(e) == cap)
}

/// `capabilities.add` only within the baseline set.
pub(super) fn capabilities(policy: &Policy, pod: &PodView<'_>, out: &mut Vec<Violation>) {
    for c in &pod.containers {
        let add = c
            .security_context
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|caps| caps.add.as_ref());
        for (i, cap) in add.into_iter().flatten().enumerate() {
            if !capability_allowed(policy, cap) {
                out.push(Violation::new(
                    c.sc_path(&format!("capabilities.add[{i}]")),
                    rule("capabilities"),
                    format!(
                        "container {:?} adds capability {cap:?}, which is not in the baseline set (the operator can allow it with --allow-capabilities)",
                        c.name
                    ),
                ));
            }
        }
    }
}

/// hostPath volumes.
pub(super) fn host_path_volumes(pod: &PodView<'_>, out: &mut Vec<Violation>) {
    for (i, v) in pod.spec.volumes.iter().flatten().enumerate() {
        if v.host_path.is_some() {
            out.push(Violation::new(
                format!("spec.volumes[{i}].hostPath"),
                rule("host-path-volumes"),
                format!(
                    "volume {:?} is a hostPath (the operator can allow it with --allow-host-path)",
                    v.name
                ),
            ));
        }
    }
}

/// `ports[*].hostPort` other than 0.
pub(super) fn host_ports(pod: &PodView<'_>, out: &mut Vec<Violation>) {
    for c in &pod.containers {
        for (i, p) in c.ports.iter().enumerate() {
            if p.host_port.is_some_and(|h| h != 0) {
                out.push(Violation::new(
                    format!("{}.ports[{i}].hostPort", c.path),
                    rule("host-ports"),
                    format!("container {:?} binds a port of the node", c.name),
                ));
            }
        }
    }
}

/// Probes and lifecycle hooks aimed at another host than the pod: the
/// remote kubelet would connect from the node to any address the tenant
/// names (Baseline since Kubernetes 1.34).
pub(super) fn host_probes(pod: &PodView<'_>, out: &mut Vec<Violation>) {
    for c in &pod.containers {
        let mut hosts = Vec::new();
        for (kind, p) in &c.probes {
            for (action, host) in targets(p.http_get.as_ref(), p.tcp_socket.as_ref()) {
                hosts.push((format!("{}.{kind}.{action}.host", c.path), host));
            }
        }
        let hooks: [(&str, Option<&LifecycleHandler>); 2] = [
            ("postStart", c.lifecycle.and_then(|l| l.post_start.as_ref())),
            ("preStop", c.lifecycle.and_then(|l| l.pre_stop.as_ref())),
        ];
        for (hook, h) in hooks {
            let Some(h) = h else { continue };
            for (action, host) in targets(h.http_get.as_ref(), h.tcp_socket.as_ref()) {
                hosts.push((format!("{}.lifecycle.{hook}.{action}.host", c.path), host));
            }
        }
        for (field, host) in hosts {
            if let Some(host) = host.filter(|h| !h.is_empty()) {
                out.push(Violation::new(
                    field,
                    rule("host-probes"),
                    format!("container {:?} probes or hooks host {host:?}; only the pod itself may be probed", c.name),
                ));
            }
        }
    }
}

/// The `host` of an httpGet and a tcpSocket action.
fn targets<'a>(
    h: Option<&'a HTTPGetAction>,
    t: Option<&'a TCPSocketAction>,
) -> [(&'static str, Option<&'a str>); 2] {
    [
        ("httpGet", h.and_then(|h| h.host.as_deref())),
        ("tcpSocket", t.and_then(|t| t.host.as_deref())),
    ]
}

/// AppArmor: only the runtime's default or a profile loaded on the node
/// (annotation of 1.20, field of 1.30).
pub(super) fn app_armor(pod: &PodView<'_>, out: &mut Vec<Violation>) {
    for (container, value) in pod.annotations_with_prefix(APPARMOR_PREFIX) {
        let ok = value.is_empty() || value == "runtime/default" || value.starts_with("localhost/");
        if !ok {
            out.push(Violation::new(
                annotation_path(&format!("{APPARMOR_PREFIX}{container}")),
                rule("apparmor"),
                format!("AppArmor profile {value:?} is not allowed (runtime/default or localhost/<profile>)"),
            ));
        }
    }
    let pod_profile = pod
        .spec
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.as_ref());
    if pod_profile.is_some_and(|p| p.type_ == "Unconfined") {
        out.push(unconfined_apparmor(
            "spec.securityContext.appArmorProfile.type".into(),
        ));
    }
    for c in &pod.containers {
        let p = c
            .security_context
            .and_then(|s| s.app_armor_profile.as_ref());
        if p.is_some_and(|p| p.type_ == "Unconfined") {
            out.push(unconfined_apparmor(c.sc_path("appArmorProfile.type")));
        }
    }
}

fn unconfined_apparmor(field: String) -> Violation {
    Violation::new(
        field,
        rule("apparmor"),
        "AppArmor type Unconfined is not allowed (RuntimeDefault or Localhost)",
    )
}

/// SELinux: only the container types, no user or role.
pub(super) fn se_linux(pod: &PodView<'_>, out: &mut Vec<Violation>) {
    let pod_opts = pod
        .spec
        .security_context
        .as_ref()
        .and_then(|s| s.se_linux_options.as_ref());
    se_linux_options("spec.securityContext.seLinuxOptions", pod_opts, out);
    for c in &pod.containers {
        let opts = c.security_context.and_then(|s| s.se_linux_options.as_ref());
        se_linux_options(&c.sc_path("seLinuxOptions"), opts, out);
    }
}

fn se_linux_options(path: &str, opts: Option<&SELinuxOptions>, out: &mut Vec<Violation>) {
    let Some(o) = opts else { return };
    if let Some(t) = o.type_.as_deref().filter(|t| !t.is_empty())
        && !SELINUX_TYPES.contains(&t)
    {
        out.push(Violation::new(
            format!("{path}.type"),
            rule("selinux"),
            format!(
                "SELinux type {t:?} is not allowed ({})",
                SELINUX_TYPES.join(", ")
            ),
        ));
    }
    for (field, value) in [("user", &o.user), ("role", &o.role)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            out.push(Violation::new(
                format!("{path}.{field}"),
                rule("selinux"),
                format!("SELinux {field} {v:?} is not allowed (must be empty)"),
            ));
        }
    }
}

/// `procMount` other than Default unmasks /proc.
pub(super) fn proc_mount(pod: &PodView<'_>, out: &mut Vec<Violation>) {
    for c in &pod.containers {
        if let Some(m) = c.security_context.and_then(|s| s.proc_mount.as_deref())
            && m != "Default"
        {
            out.push(Violation::new(
                c.sc_path("procMount"),
                rule("proc-mount"),
                format!(
                    "container {:?} asks for procMount {m:?} (only Default)",
                    c.name
                ),
            ));
        }
    }
}

/// Seccomp: never Unconfined, in the fields or in the 1.20 annotations.
pub(super) fn seccomp(pod: &PodView<'_>, out: &mut Vec<Violation>) {
    let unconfined = |p: Option<&SeccompProfile>| p.is_some_and(|p| p.type_ == "Unconfined");
    let pod_sc = pod.spec.security_context.as_ref();
    if unconfined(pod_sc.and_then(|s| s.seccomp_profile.as_ref())) {
        out.push(unconfined_seccomp(
            "spec.securityContext.seccompProfile.type".into(),
        ));
    }
    for c in &pod.containers {
        if unconfined(c.security_context.and_then(|s| s.seccomp_profile.as_ref())) {
            out.push(unconfined_seccomp(c.sc_path("seccompProfile.type")));
        }
    }
    if pod
        .annotation(SECCOMP_POD_ANNOTATION)
        .is_some_and(is_unconfined_annotation)
    {
        out.push(unconfined_seccomp(annotation_path(SECCOMP_POD_ANNOTATION)));
    }
    for (container, value) in pod.annotations_with_prefix(SECCOMP_CONTAINER_PREFIX) {
        if is_unconfined_annotation(value) {
            out.push(unconfined_seccomp(annotation_path(&format!(
                "{SECCOMP_CONTAINER_PREFIX}{container}"
            ))));
        }
    }
}

fn is_unconfined_annotation(value: &str) -> bool {
    value.trim() == "unconfined"
}

fn unconfined_seccomp(field: String) -> Violation {
    Violation::new(
        field,
        rule("seccomp"),
        "seccomp profile Unconfined is not allowed (RuntimeDefault or Localhost)",
    )
}

/// Sysctls: the safe set (and the operator's extras).
pub(super) fn sysctls(policy: &Policy, pod: &PodView<'_>, out: &mut Vec<Violation>) {
    let list = pod
        .spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref());
    for (i, s) in list.into_iter().flatten().enumerate() {
        if !SAFE_SYSCTLS.contains(&s.name.as_str()) && !policy.extra_sysctls.contains(&s.name) {
            out.push(Violation::new(
                format!("spec.securityContext.sysctls[{i}].name"),
                rule("sysctls"),
                format!(
                    "sysctl {:?} is not in the safe set (the operator can allow it with --allow-sysctls)",
                    s.name
                ),
            ));
        }
    }
}

/// A container's own seccomp type (field, else its 1.20 annotation), if set.
pub(super) fn container_seccomp<'a>(pod: &PodView<'a>, c: &ContainerView<'a>) -> Option<String> {
    c.security_context
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.clone())
        .or_else(|| {
            pod.annotation(&format!("{SECCOMP_CONTAINER_PREFIX}{}", c.name))
                .map(annotation_to_type)
        })
}

/// The pod's seccomp (field, else the 1.20 annotation) as a field type.
pub(super) fn pod_seccomp(pod: &PodView<'_>) -> Option<String> {
    pod.spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.clone())
        .or_else(|| {
            pod.annotation(SECCOMP_POD_ANNOTATION)
                .map(annotation_to_type)
        })
}

/// `runtime/default` -> `RuntimeDefault` (what 1.19+ apiservers do).
fn annotation_to_type(v: &str) -> String {
    super::annotations::profile_of(v)
        .map(|p| p.type_)
        .unwrap_or_else(|| v.trim().into())
}

#[cfg(test)]
#[path = "baseline_tests.rs"]
mod tests;
