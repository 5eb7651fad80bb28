//! The cases of the Baseline matrix (tests/policy.rs): each forbidden field
//! as data, and the allowed variants.
#![allow(dead_code)]

use serde_json::{Value, json};

pub type Mutation = fn(&mut Value);

pub fn sc(pod: &mut Value, i: usize) -> &mut Value {
    &mut pod["spec"]["containers"][i]["securityContext"]
}

pub fn add_volume(pod: &mut Value, v: Value) {
    if let Some(list) = pod["spec"]["volumes"].as_array_mut() {
        list.push(v);
    }
}

pub fn annotate(pod: &mut Value, k: &str, v: &str) {
    pod["metadata"]["annotations"][k] = json!(v);
}

/// One forbidden field: what it is, the field the 403 must name, its rule,
/// and where (a JSON pointer into the base pod; `-` appends to a list) the
/// value goes.
pub struct Forbidden {
    pub what: &'static str,
    pub field: &'static str,
    pub rule: &'static str,
    pub at: &'static str,
    pub value: Value,
}

fn case(
    what: &'static str,
    field: &'static str,
    rule: &'static str,
    at: &'static str,
    value: Value,
) -> Forbidden {
    Forbidden {
        what,
        field,
        rule,
        at,
        value,
    }
}

/// Sets `value` at the JSON pointer `at` of `doc`, making objects on the way.
pub fn set_at(doc: &mut Value, at: &str, value: Value) {
    let unescape = |s: &str| s.replace("~1", "/").replace("~0", "~");
    let (parent, last) = at.rsplit_once('/').unwrap_or(("", at));
    let mut cur = doc;
    for part in parent.split('/').skip(1) {
        let key = unescape(part);
        cur = match cur {
            Value::Array(list) => {
                let i: usize = key.parse().unwrap_or(0);
                &mut list[i]
            }
            other => &mut other[key.as_str()],
        };
    }
    match cur {
        Value::Array(list) if last == "-" => list.push(value),
        other => other[unescape(last).as_str()] = value,
    }
}

/// The node's namespaces, ports and network, reached from the pod.
pub fn forbidden_host() -> Vec<Forbidden> {
    vec![
        case(
            "hostNetwork",
            "spec.hostNetwork",
            "baseline: host-namespaces",
            "/spec/hostNetwork",
            json!(true),
        ),
        case(
            "hostPID",
            "spec.hostPID",
            "baseline: host-namespaces",
            "/spec/hostPID",
            json!(true),
        ),
        case(
            "hostIPC",
            "spec.hostIPC",
            "baseline: host-namespaces",
            "/spec/hostIPC",
            json!(true),
        ),
        case(
            "hostPort",
            "spec.containers[0].ports[0].hostPort",
            "baseline: host-ports",
            "/spec/containers/0/ports",
            json!([{"containerPort": 8080, "hostPort": 8080}]),
        ),
        case(
            "probe host",
            "spec.containers[0].livenessProbe.httpGet.host",
            "baseline: host-probes",
            "/spec/containers/0/livenessProbe",
            json!({"httpGet": {"host": "169.254.169.254", "port": 80, "path": "/"}}),
        ),
        case(
            "hook host",
            "spec.containers[1].lifecycle.preStop.tcpSocket.host",
            "baseline: host-probes",
            "/spec/containers/1/lifecycle",
            json!({"preStop": {"tcpSocket": {"host": "10.202.0.254", "port": 26444}}}),
        ),
        case(
            "HostProcess",
            "spec.securityContext.windowsOptions.hostProcess",
            "baseline: host-process",
            "/spec/securityContext",
            json!({"windowsOptions": {"hostProcess": true}}),
        ),
    ]
}

/// Privileged containers (every kind), capabilities, /proc.
pub fn forbidden_privileges() -> Vec<Forbidden> {
    let img = testbed::images::BUSYBOX;
    vec![
        case(
            "privileged",
            "spec.containers[1].securityContext.privileged",
            "baseline: privileged",
            "/spec/containers/1/securityContext",
            json!({"privileged": true}),
        ),
        case(
            "privileged init",
            "spec.initContainers[0].securityContext.privileged",
            "baseline: privileged",
            "/spec/initContainers",
            json!([{"name": "init", "image": img, "securityContext": {"privileged": true}}]),
        ),
        case(
            "privileged ephemeral",
            "spec.ephemeralContainers[0].securityContext.privileged",
            "baseline: privileged",
            "/spec/ephemeralContainers",
            json!([{"name": "dbg", "image": img, "securityContext": {"privileged": true}}]),
        ),
        case(
            "capability",
            "spec.containers[1].securityContext.capabilities.add[0]",
            "baseline: capabilities",
            "/spec/containers/1/securityContext",
            json!({"capabilities": {"add": ["NET_ADMIN"]}}),
        ),
        case(
            "CAP_ spelled capability",
            "spec.containers[0].securityContext.capabilities.add[1]",
            "baseline: capabilities",
            "/spec/containers/0/securityContext",
            json!({"capabilities": {"add": ["CHOWN", "CAP_SYS_ADMIN"]}}),
        ),
        case(
            "procMount",
            "spec.containers[0].securityContext.procMount",
            "baseline: proc-mount",
            "/spec/containers/0/securityContext",
            json!({"procMount": "Unmasked"}),
        ),
    ]
}

/// AppArmor, SELinux, seccomp (fields and 1.20 annotations), sysctls.
pub fn forbidden_confinement() -> Vec<Forbidden> {
    vec![
        case(
            "AppArmor annotation",
            "metadata.annotations[container.apparmor.security.beta.kubernetes.io/c]",
            "baseline: apparmor",
            "/metadata/annotations/container.apparmor.security.beta.kubernetes.io~1c",
            json!("unconfined"),
        ),
        case(
            "SELinux type",
            "spec.securityContext.seLinuxOptions.type",
            "baseline: selinux",
            "/spec/securityContext",
            json!({"seLinuxOptions": {"type": "spc_t"}}),
        ),
        case(
            "SELinux user",
            "spec.containers[0].securityContext.seLinuxOptions.user",
            "baseline: selinux",
            "/spec/containers/0/securityContext",
            json!({"seLinuxOptions": {"user": "system_u"}}),
        ),
        case(
            "seccomp pod field",
            "spec.securityContext.seccompProfile.type",
            "baseline: seccomp",
            "/spec/securityContext",
            json!({"seccompProfile": {"type": "Unconfined"}}),
        ),
        case(
            "seccomp container field",
            "spec.containers[1].securityContext.seccompProfile.type",
            "baseline: seccomp",
            "/spec/containers/1/securityContext",
            json!({"seccompProfile": {"type": "Unconfined"}}),
        ),
        case(
            "seccomp pod annotation",
            "metadata.annotations[seccomp.security.alpha.kubernetes.io/pod]",
            "baseline: seccomp",
            "/metadata/annotations/seccomp.security.alpha.kubernetes.io~1pod",
            json!("unconfined"),
        ),
        case(
            "seccomp container annotation",
            "metadata.annotations[container.seccomp.security.alpha.kubernetes.io/d]",
            "baseline: seccomp",
            "/metadata/annotations/container.seccomp.security.alpha.kubernetes.io~1d",
            json!("unconfined"),
        ),
        case(
            "sysctl",
            "spec.securityContext.sysctls[0].name",
            "baseline: sysctls",
            "/spec/securityContext",
            json!({"sysctls": [{"name": "kernel.msgmax", "value": "65536"}]}),
        ),
    ]
}

/// hostPath and the volume types outside the allowlist.
pub fn forbidden_volumes() -> Vec<Forbidden> {
    vec![
        case(
            "hostPath",
            "spec.volumes[1].hostPath",
            "baseline: host-path-volumes",
            "/spec/volumes/-",
            json!({"name": "root", "hostPath": {"path": "/"}}),
        ),
        case(
            "gitRepo",
            "spec.volumes[1].gitRepo",
            "plugin: volume-types",
            "/spec/volumes/-",
            json!({"name": "src", "gitRepo": {"repository": "https://example.org/x.git"}}),
        ),
        case(
            "nfs",
            "spec.volumes[1].nfs",
            "plugin: volume-types",
            "/spec/volumes/-",
            json!({"name": "n", "nfs": {"server": "10.202.0.1", "path": "/"}}),
        ),
        case(
            "iscsi",
            "spec.volumes[1].iscsi",
            "plugin: volume-types",
            "/spec/volumes/-",
            json!({"name": "i", "iscsi": {"targetPortal": "10.202.0.1:3260", "iqn": "iqn.2001-04.com.example:storage", "lun": 0}}),
        ),
        case(
            "flexVolume",
            "spec.volumes[1].flexVolume",
            "plugin: volume-types",
            "/spec/volumes/-",
            json!({"name": "f", "flexVolume": {"driver": "example.com/lvm"}}),
        ),
        case(
            "inline csi",
            "spec.volumes[1].csi",
            "plugin: volume-types",
            "/spec/volumes/-",
            json!({"name": "s", "csi": {"driver": "secrets-store.csi.k8s.io"}}),
        ),
        case(
            "emptyDir hiding an nfs",
            "spec.volumes[1].nfs",
            "plugin: volume-types",
            "/spec/volumes/-",
            json!({"name": "two", "emptyDir": {}, "nfs": {"server": "10.202.0.1", "path": "/"}}),
        ),
    ]
}

/// (what, the change to the base pod): the allowed side of each control.
pub fn allowed() -> Vec<(&'static str, Mutation)> {
    vec![
        (
            "baseline capabilities",
            |p| *sc(p, 0) = json!({"capabilities": {"add": ["CHOWN", "NET_BIND_SERVICE", "CAP_KILL"]}, "privileged": false}),
        ),
        ("RuntimeDefault seccomp", |p| {
            p["spec"]["securityContext"] = json!({"seccompProfile": {"type": "RuntimeDefault"}});
            annotate(
                p,
                "seccomp.security.alpha.kubernetes.io/pod",
                "runtime/default",
            );
        }),
        // What a direct caller could send (the local 1.20 apiserver would
        // have filled the field): the annotation alone, carried into the
        // field, so the remote container is not left unconfined.
        ("runtime/default seccomp annotation alone", |p| {
            annotate(
                p,
                "container.seccomp.security.alpha.kubernetes.io/d",
                "runtime/default",
            );
        }),
        (
            "safe sysctl",
            |p| p["spec"]["securityContext"] = json!({"sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "32768 60999"}]}),
        ),
        ("hostPort 0", |p| {
            p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8080, "hostPort": 0}])
        }),
        ("allowed volume types and AppArmor runtime/default", |p| {
            add_volume(p, json!({"name": "scratch", "emptyDir": {}}));
            add_volume(
                p,
                json!({"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}),
            );
            p["spec"]["containers"][1]["volumeMounts"] = json!([{"name": "scratch", "mountPath": "/scratch"}, {"name": "info", "mountPath": "/info"}]);
            // Dropped on the way (the remote node need not have AppArmor).
            annotate(
                p,
                "container.apparmor.security.beta.kubernetes.io/c",
                "runtime/default",
            );
        }),
    ]
}
