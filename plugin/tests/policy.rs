//! Baseline matrix on the real remote test cluster (Kubernetes 1.20, real
//! kubelet): the tenant of the local cluster plays the attacker, one create
//! per field the Pod Security Standards forbid. Each answers 403 naming the
//! field and the rule, and leaves nothing on the remote cluster (no pod, no
//! ConfigMap/Secret, not even the namespace). The allowed variants of the
//! same controls are created and run. Then Restricted, one case each way.
//!
//! Needs the test clusters (`bash testbed/scripts/testbed.sh up`).

mod common;
mod policy_cases;

use std::time::Duration;

use anyhow::{Context, ensure};
use common::*;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use offload_plugin::{PluginConfig, policy::Level};
use policy_cases::*;
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
    let cases = [
        forbidden_host(),
        forbidden_privileges(),
        forbidden_confinement(),
        forbidden_volumes(),
    ];
    for c in cases.into_iter().flatten() {
        let uid = uid();
        let mut pod = base_pod(&scope.local_ns, "attacker", &uid);
        set_at(&mut pod, c.at, c.value);
        let (what, field, rule) = (c.what, c.field, c.rule);
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
