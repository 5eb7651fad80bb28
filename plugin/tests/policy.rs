//! Baseline matrix on the real remote test cluster (Kubernetes 1.20, real
//! kubelet): the tenant of the local cluster plays the attacker, one create
//! per field the Pod Security Standards forbid. Each answers 403 naming the
//! field and the rule, and leaves nothing on the remote cluster (no pod, no
//! ConfigMap/Secret, not even the namespace). The allowed variants of the
//! same controls are created and run. Then Restricted, one case each way.
//!
//! Needs the test clusters (`bash testbed/scripts/testbed.sh up`).

mod common;

use std::time::Duration;

use anyhow::{Context, ensure};
use common::*;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use offload_plugin::{PluginConfig, policy::Level};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const RUN: Duration = Duration::from_secs(150);

/// A pod of two long-running containers (so a path can name
/// `containers[1]`) with a configMap volume whose data is shipped, so a
/// refusal that wrote anything would leave a ConfigMap behind.
fn base_pod(ns: &str, name: &str, uid: &str) -> Value {
    let container = |n: &str| {
        json!({"name": n, "image": testbed::images::BUSYBOX, "imagePullPolicy": "IfNotPresent",
               "command": ["sh", "-c", "sleep 3600"],
               "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]})
    };
    json!({
        "metadata": {"name": name, "namespace": ns, "uid": uid, "annotations": {}},
        "spec": {"nodeName": "virtual-node", "restartPolicy": "Never",
                 "terminationGracePeriodSeconds": 1,
                 "containers": [container("c"), container("d")],
                 "volumes": [{"name": "cfg", "configMap": {"name": "settings"}}]},
        "status": {"phase": "Pending"}
    })
}

/// The create body of `pod` (its configMap sent with every container).
fn create_body(pod: &Value) -> String {
    let cm = json!([{"metadata": {"name": "settings", "namespace": pod["metadata"]["namespace"]},
                     "data": {"mode": "fast"}}]);
    let containers: Vec<Value> = ["c", "d"]
        .iter()
        .map(|n| json!({"name": n, "configMaps": cm, "projectedvolumemaps": null, "secrets": null, "emptyDirs": null}))
        .collect();
    json!({"pod": pod, "container": containers}).to_string()
}

type Mutation = fn(&mut Value);

fn sc(pod: &mut Value, i: usize) -> &mut Value {
    &mut pod["spec"]["containers"][i]["securityContext"]
}

fn add_volume(pod: &mut Value, v: Value) {
    if let Some(list) = pod["spec"]["volumes"].as_array_mut() {
        list.push(v);
    }
}

fn annotate(pod: &mut Value, k: &str, v: &str) {
    pod["metadata"]["annotations"][k] = json!(v);
}

/// (what, the field the 403 must name, its rule, the change to the base pod)
fn forbidden() -> Vec<(&'static str, &'static str, &'static str, Mutation)> {
    vec![
        (
            "hostNetwork",
            "spec.hostNetwork",
            "baseline: host-namespaces",
            |p| p["spec"]["hostNetwork"] = json!(true),
        ),
        (
            "hostPID",
            "spec.hostPID",
            "baseline: host-namespaces",
            |p| p["spec"]["hostPID"] = json!(true),
        ),
        (
            "hostIPC",
            "spec.hostIPC",
            "baseline: host-namespaces",
            |p| p["spec"]["hostIPC"] = json!(true),
        ),
        (
            "privileged",
            "spec.containers[1].securityContext.privileged",
            "baseline: privileged",
            |p| *sc(p, 1) = json!({"privileged": true}),
        ),
        (
            "privileged init",
            "spec.initContainers[0].securityContext.privileged",
            "baseline: privileged",
            |p| p["spec"]["initContainers"] = json!([{"name": "init", "image": testbed::images::BUSYBOX, "securityContext": {"privileged": true}}]),
        ),
        (
            "privileged ephemeral",
            "spec.ephemeralContainers[0].securityContext.privileged",
            "baseline: privileged",
            |p| p["spec"]["ephemeralContainers"] = json!([{"name": "dbg", "image": testbed::images::BUSYBOX, "securityContext": {"privileged": true}}]),
        ),
        (
            "capability",
            "spec.containers[1].securityContext.capabilities.add[0]",
            "baseline: capabilities",
            |p| *sc(p, 1) = json!({"capabilities": {"add": ["NET_ADMIN"]}}),
        ),
        (
            "CAP_ spelled capability",
            "spec.containers[0].securityContext.capabilities.add[1]",
            "baseline: capabilities",
            |p| *sc(p, 0) = json!({"capabilities": {"add": ["CHOWN", "CAP_SYS_ADMIN"]}}),
        ),
        (
            "hostPath",
            "spec.volumes[1].hostPath",
            "baseline: host-path-volumes",
            |p| add_volume(p, json!({"name": "root", "hostPath": {"path": "/"}})),
        ),
        (
            "hostPort",
            "spec.containers[0].ports[0].hostPort",
            "baseline: host-ports",
            |p| {
                p["spec"]["containers"][0]["ports"] =
                    json!([{"containerPort": 8080, "hostPort": 8080}])
            },
        ),
        (
            "probe host",
            "spec.containers[0].livenessProbe.httpGet.host",
            "baseline: host-probes",
            |p| {
                p["spec"]["containers"][0]["livenessProbe"] =
                    json!({"httpGet": {"host": "169.254.169.254", "port": 80, "path": "/"}})
            },
        ),
        (
            "hook host",
            "spec.containers[1].lifecycle.preStop.tcpSocket.host",
            "baseline: host-probes",
            |p| {
                p["spec"]["containers"][1]["lifecycle"] =
                    json!({"preStop": {"tcpSocket": {"host": "10.202.0.254", "port": 26444}}})
            },
        ),
        (
            "AppArmor annotation",
            "metadata.annotations[container.apparmor.security.beta.kubernetes.io/c]",
            "baseline: apparmor",
            |p| {
                annotate(
                    p,
                    "container.apparmor.security.beta.kubernetes.io/c",
                    "unconfined",
                )
            },
        ),
        (
            "SELinux type",
            "spec.securityContext.seLinuxOptions.type",
            "baseline: selinux",
            |p| p["spec"]["securityContext"] = json!({"seLinuxOptions": {"type": "spc_t"}}),
        ),
        (
            "SELinux user",
            "spec.containers[0].securityContext.seLinuxOptions.user",
            "baseline: selinux",
            |p| *sc(p, 0) = json!({"seLinuxOptions": {"user": "system_u"}}),
        ),
        (
            "procMount",
            "spec.containers[0].securityContext.procMount",
            "baseline: proc-mount",
            |p| *sc(p, 0) = json!({"procMount": "Unmasked"}),
        ),
        (
            "seccomp pod field",
            "spec.securityContext.seccompProfile.type",
            "baseline: seccomp",
            |p| p["spec"]["securityContext"] = json!({"seccompProfile": {"type": "Unconfined"}}),
        ),
        (
            "seccomp container field",
            "spec.containers[1].securityContext.seccompProfile.type",
            "baseline: seccomp",
            |p| *sc(p, 1) = json!({"seccompProfile": {"type": "Unconfined"}}),
        ),
        (
            "seccomp pod annotation",
            "metadata.annotations[seccomp.security.alpha.kubernetes.io/pod]",
            "baseline: seccomp",
            |p| annotate(p, "seccomp.security.alpha.kubernetes.io/pod", "unconfined"),
        ),
        (
            "seccomp container annotation",
            "metadata.annotations[container.seccomp.security.alpha.kubernetes.io/d]",
            "baseline: seccomp",
            |p| {
                annotate(
                    p,
                    "container.seccomp.security.alpha.kubernetes.io/d",
                    "unconfined",
                )
            },
        ),
        (
            "sysctl",
            "spec.securityContext.sysctls[0].name",
            "baseline: sysctls",
            |p| {
                p["spec"]["securityContext"] =
                    json!({"sysctls": [{"name": "kernel.msgmax", "value": "65536"}]})
            },
        ),
        (
            "HostProcess",
            "spec.securityContext.windowsOptions.hostProcess",
            "baseline: host-process",
            |p| p["spec"]["securityContext"] = json!({"windowsOptions": {"hostProcess": true}}),
        ),
        (
            "gitRepo",
            "spec.volumes[1].gitRepo",
            "plugin: volume-types",
            |p| {
                add_volume(
                    p,
                    json!({"name": "src", "gitRepo": {"repository": "https://example.org/x.git"}}),
                )
            },
        ),
        ("nfs", "spec.volumes[1].nfs", "plugin: volume-types", |p| {
            add_volume(
                p,
                json!({"name": "n", "nfs": {"server": "10.202.0.1", "path": "/"}}),
            )
        }),
        (
            "iscsi",
            "spec.volumes[1].iscsi",
            "plugin: volume-types",
            |p| {
                add_volume(
                    p,
                    json!({"name": "i", "iscsi": {"targetPortal": "10.202.0.1:3260", "iqn": "iqn.2001-04.com.example:storage", "lun": 0}}),
                )
            },
        ),
        (
            "flexVolume",
            "spec.volumes[1].flexVolume",
            "plugin: volume-types",
            |p| {
                add_volume(
                    p,
                    json!({"name": "f", "flexVolume": {"driver": "example.com/lvm"}}),
                )
            },
        ),
        (
            "inline csi",
            "spec.volumes[1].csi",
            "plugin: volume-types",
            |p| {
                add_volume(
                    p,
                    json!({"name": "s", "csi": {"driver": "secrets-store.csi.k8s.io"}}),
                )
            },
        ),
    ]
}

/// POSTs the create and returns the 403's JSON, failing on anything else.
async fn refused(env: &Env, p: &Plugin, pod: &Value) -> anyhow::Result<Value> {
    let (st, text) = send(env, Method::POST, p.url("/create"), create_body(pod)).await?;
    ensure!(
        st == StatusCode::FORBIDDEN,
        "expected 403, got {st}: {text}"
    );
    let v: Value = serde_json::from_str(&text).context("403 body is JSON")?;
    ensure!(v["error"] == "policy", "error code: {text}");
    Ok(v)
}

/// The 403 names `field` with `rule`, in the list and in the message (the
/// message is what the provider puts on the local pod's event and status).
fn names(answer: &Value, field: &str, rule: &str) -> bool {
    let listed = answer["violations"]
        .as_array()
        .is_some_and(|l| l.iter().any(|x| x["field"] == field && x["rule"] == rule));
    let msg = answer["message"].as_str().unwrap_or_default();
    listed && msg.contains(field) && msg.contains(rule)
}

async fn nothing_remote(env: &Env, uid: &str) -> anyhow::Result<()> {
    let (pods, cms, secrets) = remote_objects(env, uid).await?;
    ensure!(
        pods.is_empty() && cms.is_empty() && secrets.is_empty(),
        "a refused pod left remote objects: {} pods, {} ConfigMaps, {} Secrets",
        pods.len(),
        cms.len(),
        secrets.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_matrix_refuses_each_forbidden_field_and_writes_nothing() -> anyhow::Result<()> {
    let env = env().await?;
    let scope = scope(&env, "policy-deny")?;
    let p = Plugin::start(&env, PluginConfig::for_tests()).await?;
    let mut failures = Vec::new();
    for (what, field, rule, mutate) in forbidden() {
        let uid = uid();
        let mut pod = base_pod(&scope.local_ns, "attacker", &uid);
        mutate(&mut pod);
        match refused(&env, &p, &pod).await {
            Ok(answer) if names(&answer, field, rule) => {}
            Ok(answer) => failures.push(format!(
                "{what}: 403 does not name {field} [{rule}]: {answer}"
            )),
            Err(e) => failures.push(format!("{what}: {e:#}")),
        }
        if let Err(e) = nothing_remote(&env, &uid).await {
            failures.push(format!("{what}: {e:#}"));
        }
    }

    // Every violation of one pod in one answer.
    let uid = uid();
    let mut pod = base_pod(&scope.local_ns, "attacker", &uid);
    pod["spec"]["hostNetwork"] = json!(true);
    *sc(&mut pod, 1) = json!({"privileged": true, "capabilities": {"add": ["SYS_ADMIN"]}});
    let answer = refused(&env, &p, &pod).await?;
    assert!(
        names(&answer, "spec.hostNetwork", "baseline: host-namespaces"),
        "{answer}"
    );
    assert!(
        names(
            &answer,
            "spec.containers[1].securityContext.privileged",
            "baseline: privileged"
        ),
        "{answer}"
    );
    assert!(
        names(
            &answer,
            "spec.containers[1].securityContext.capabilities.add[0]",
            "baseline: capabilities"
        ),
        "{answer}"
    );
    nothing_remote(&env, &uid).await?;

    // The operator sees the refusals per rule.
    let (_, metrics) = send(&env, Method::GET, p.url("/metrics"), String::new()).await?;
    for rule in ["baseline: capabilities", "plugin: volume-types"] {
        let line = format!("offload_plugin_policy_refusals_total{{rule=\"{rule}\"}}");
        assert!(metrics.contains(&line), "{line} not in /metrics");
    }

    // Not even the namespace was made for the refused pods.
    let namespaces: Api<Namespace> = Api::all(env.remote.clone());
    let ns = namespaces.get_opt(&scope.remote_ns).await?;
    assert!(
        ns.is_none(),
        "remote namespace {} was created for refused pods",
        scope.remote_ns
    );
    p.stop().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// (what, the change to the base pod): the allowed side of each control.
fn allowed() -> Vec<(&'static str, Mutation)> {
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

/// Creates `pod` and waits until its containers run remotely; returns the remote pod.
async fn runs(env: &Env, p: &Plugin, pod: &Value) -> anyhow::Result<Pod> {
    create(env, p, &create_body(pod)).await?;
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let st = wait_status(env, p, pod, "containers running", RUN, |s| {
        !s.containers.is_empty() && s.containers.iter().all(|c| state_of(c).0 == "running")
    })
    .await;
    let (pods, _, _) = remote_objects(env, uid).await?;
    st?;
    pods.into_iter().next().context("remote pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_allowed_variants_run() -> anyhow::Result<()> {
    let env = env().await?;
    let scope = scope(&env, "policy-allow")?;
    let p = Plugin::start(&env, PluginConfig::for_tests()).await?;
    let mut pods = Vec::new();
    for (i, (what, mutate)) in allowed().into_iter().enumerate() {
        let mut pod = base_pod(&scope.local_ns, &format!("ok-{i}"), &uid());
        mutate(&mut pod);
        pods.push((what, pod));
    }
    let mut failures = Vec::new();
    for (what, pod) in &pods {
        match runs(&env, &p, pod).await {
            Ok(remote) => {
                let ann = remote.metadata.annotations.clone().unwrap_or_default();
                if ann.keys().any(|k| k.contains("apparmor")) {
                    failures.push(format!("{what}: the AppArmor annotation crossed: {ann:?}"));
                }
                let d_seccomp = remote
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.iter().find(|c| c.name == "d"))
                    .and_then(|c| c.security_context.as_ref())
                    .and_then(|sc| sc.seccomp_profile.as_ref())
                    .map(|p| p.type_.clone());
                if what.contains("annotation alone")
                    && d_seccomp.as_deref() != Some("RuntimeDefault")
                {
                    failures.push(format!(
                        "{what}: remote container d has seccomp {d_seccomp:?}"
                    ));
                }
            }
            Err(e) => failures.push(format!("{what}: {e:#}")),
        }
    }
    for (_, pod) in &pods {
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        delete_and_wait(&env, &p, pod, uid).await?;
    }
    p.stop().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_refuses_a_baseline_pod_and_runs_a_hardened_one() -> anyhow::Result<()> {
    let env = env().await?;
    let scope = scope(&env, "policy-restricted")?;
    let mut cfg = PluginConfig::for_tests();
    cfg.pod_security.pod_security_level = Level::Restricted;
    let p = Plugin::start(&env, cfg).await?;

    // A pod Baseline lets through: refused, every missing hardening named.
    let plain_uid = uid();
    let pod = base_pod(&scope.local_ns, "plain", &plain_uid);
    let answer = refused(&env, &p, &pod).await?;
    for (field, rule) in [
        (
            "spec.containers[1].securityContext.allowPrivilegeEscalation",
            "restricted: privilege-escalation",
        ),
        (
            "spec.containers[0].securityContext.runAsNonRoot",
            "restricted: run-as-non-root",
        ),
        (
            "spec.containers[1].securityContext.seccompProfile.type",
            "restricted: seccomp",
        ),
        (
            "spec.containers[0].securityContext.capabilities.drop",
            "restricted: capabilities",
        ),
    ] {
        assert!(
            names(&answer, field, rule),
            "{field} [{rule}] not in {answer}"
        );
    }
    nothing_remote(&env, &plain_uid).await?;

    // The same pod hardened: runs.
    let uid = uid();
    let mut pod = base_pod(&scope.local_ns, "hardened", &uid);
    pod["spec"]["securityContext"] = json!({"runAsNonRoot": true, "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"}});
    for i in 0..2 {
        *sc(&mut pod, i) = json!({"allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}});
    }
    let result = runs(&env, &p, &pod).await;
    delete_and_wait(&env, &p, &pod, &uid).await?;
    p.stop().await;
    result?;
    Ok(())
}
