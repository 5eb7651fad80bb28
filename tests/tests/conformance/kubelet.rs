//! What a kubelet does that users read: the reason `kubectl logs` gives for
//! a container that has not started, the order of container statuses (which
//! `kubectl get pod` reads), and image pull Secrets reaching the remote pull.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use offload_e2e::conformance::*;
use serde_json::json;

/// `kubectl logs` of a container whose image cannot be pulled tells why, as
/// a kubelet does (not `The pods/log "..." is invalid`).
pub async fn logs_of_unstarted_container(s: &Suite) -> Result<()> {
    let mut c = sh("app", "echo never");
    // No registry serves this name: the pull fails for good.
    c["image"] = json!("registry.invalid/offload/nope:1");
    s.apply(&s.pod("unpullable", run_once(&[c]))).await?;
    let last = LastSeen::default();
    let last_ref = &last;
    testbed::wait_every(
        POLL,
        "kubectl logs to tell the pull failure",
        START,
        || async move {
            let err = match s.kubectl(&["logs", "unpullable"]).await {
                Ok(out) => {
                    return Err(testbed::give_up(format!(
                        "kubectl logs of a container that never started succeeded: {out:?}"
                    )));
                }
                Err(e) => e.to_string(),
            };
            last_ref.set(err.clone());
            Ok(err.contains("can't be pulled").then_some(()))
        },
    )
    .await
    .with_context(|| format!("last kubectl logs error: {}", last.get()))?;
    let err = last.get();
    ensure!(
        err.contains(
            "Error from server (BadRequest): container \"app\" in pod \"unpullable\" is waiting to start: image can't be pulled"
        ),
        "kubectl logs says: {err}"
    );
    s.kubectl(&["delete", "pod", "unpullable", "--wait=false"])
        .await
        .map(drop)
}

/// `kubectl logs` of a pod whose create waits for a missing ConfigMap tells
/// the waiting reason, as a kubelet does of a container it has not started.
pub async fn logs_while_waiting_for_config(s: &Suite) -> Result<()> {
    let mut c = sh("main", "echo \"$V\"");
    c["env"] = json!([{ "name": "V", "valueFrom": { "configMapKeyRef": { "name": "logs-wait-cm", "key": "v" } } }]);
    s.apply(&s.pod("logs-wait", run_once(&[c]))).await?;
    let last = LastSeen::default();
    let last_ref = &last;
    testbed::wait_every(
        POLL,
        "kubectl logs to tell the waiting reason",
        START,
        || async move {
            let err = match s.kubectl(&["logs", "logs-wait"]).await {
                Ok(out) => {
                    return Err(testbed::give_up(format!(
                        "kubectl logs of a pod waiting for its ConfigMap succeeded: {out:?}"
                    )));
                }
                Err(e) => e.to_string(),
            };
            last_ref.set(err.clone());
            Ok(err.contains("CreateContainerConfigError").then_some(()))
        },
    )
    .await
    .with_context(|| format!("last kubectl logs error: {}", last.get()))?;
    let err = last.get();
    ensure!(
        err.contains(
            "Error from server (BadRequest): container \"main\" in pod \"logs-wait\" is waiting to start: CreateContainerConfigError"
        ),
        "kubectl logs says: {err}"
    );
    // Once the ConfigMap is there the pod runs and its log is readable.
    s.apply(&config_map("logs-wait-cm", json!({ "v": "arrived" })))
        .await?;
    s.ended("logs-wait", Some("Succeeded")).await?;
    s.expect_log("logs-wait", "arrived\n").await
}

/// Regular containers' statuses are sorted by name, as the kubelet does: with
/// `success-sidecar` (exit 0) and `main-app` (exit 1) `kubectl get pod` reads
/// `Error`, not `Completed`.
pub async fn sidecar_status_order(s: &Suite) -> Result<()> {
    let pod = s
        .run_to_end(
            "sidecar-order",
            run_once(&[
                sh("success-sidecar", "exit 0"),
                sh("main-app", "sleep 2; exit 1"),
            ]),
        )
        .await?;
    expect_phase(&pod, "Failed")?;
    let names: Vec<&str> = pod
        .status
        .as_ref()
        .and_then(|st| st.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    expect_eq(
        "container status order",
        names,
        vec!["main-app", "success-sidecar"],
    )?;
    s.expect_status_column("sidecar-order", "Error").await
}

/// A pod's `imagePullSecrets` are shipped: the remote pod references a copy
/// with the same type and data.
pub async fn image_pull_secrets(s: &Suite) -> Result<()> {
    let config = r#"{"auths":{"registry.example:5000":{"auth":"dXNlcjpzM2NyZXQ="}}}"#;
    s.apply(&json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "regcred" },
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": { ".dockerconfigjson": config },
    }))
    .await?;
    let mut spec = run_once(&[sh("main", "echo pulled")]);
    spec["imagePullSecrets"] = json!([{ "name": "regcred" }]);
    let pod = s.run_succeeded("pull-secret", spec).await?;
    if !s.remote_side("the remote copy of the pull Secret") {
        return Ok(());
    }
    let remote = s
        .remote_pods_of(&pod)
        .await?
        .into_iter()
        .next()
        .context("no remote pod")?;
    let refs: Vec<String> = remote
        .spec
        .as_ref()
        .and_then(|sp| sp.image_pull_secrets.clone())
        .into_iter()
        .flatten()
        .map(|r| r.name)
        .collect();
    expect_eq("remote imagePullSecrets", refs.len(), 1)?;
    let rns = remote.metadata.namespace.clone().unwrap_or_default();
    let shipped = tokio::time::timeout(
        Duration::from_secs(30),
        Api::<Secret>::namespaced(s.remote.clone(), &rns).get(&refs[0]),
    )
    .await
    .context("reading the shipped Secret timed out")??;
    expect_eq(
        "shipped type",
        shipped.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson"),
    )?;
    let data = shipped
        .data
        .and_then(|d| d.get(".dockerconfigjson").cloned())
        .context("no .dockerconfigjson in the shipped Secret")?;
    expect_eq("shipped data", data.0, config.as_bytes().to_vec())
}
