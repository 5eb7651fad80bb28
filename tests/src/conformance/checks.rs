//! Pure checks of the pods and Jobs `kubectl get -o json` returns, and the
//! container every case starts from.

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::BUSYBOX;

/// A busybox container running `sh -c script`; `$` is escaped as `$$` so the
/// script reaches `sh` verbatim (Kubernetes expands `$(VAR)` in commands).
pub fn sh(name: &str, script: &str) -> Value {
    json!({
        "name": name,
        "image": BUSYBOX,
        "command": ["sh", "-c", script.replace('$', "$$")],
    })
}

/// A ConfigMap `name` with `data`.
pub fn config_map(name: &str, data: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name }, "data": data })
}

/// A Secret `name` with `stringData`.
pub fn secret(name: &str, string_data: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name },
        "stringData": string_data,
    })
}

/// A pod spec: `containers` with their `volumes`, restarted as `restart_policy` says.
pub fn pod_spec(restart_policy: &str, containers: &[Value], volumes: Value) -> Value {
    json!({ "restartPolicy": restart_policy, "containers": containers, "volumes": volumes })
}

/// A container's `volumeMounts`: each `(volume, mountPath)`.
pub fn mounts(mounts: &[(&str, &str)]) -> Value {
    mounts
        .iter()
        .map(|(name, path)| json!({ "name": name, "mountPath": path }))
        .collect()
}

/// A pod spec that runs `containers` once (`restartPolicy: Never`).
pub fn run_once(containers: &[Value]) -> Value {
    json!({ "restartPolicy": "Never", "containers": containers })
}

pub use crate::phase;

pub fn expect_phase(pod: &Pod, want: &str) -> Result<()> {
    ensure!(
        phase(pod) == want,
        "pod {} is {:?}, expected {want}: {}",
        pod.metadata.name.as_deref().unwrap_or(""),
        phase(pod),
        describe(pod)
    );
    Ok(())
}

pub fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<()> {
    ensure!(got == want, "{what}: got {got:?}, expected {want:?}");
    Ok(())
}

pub fn status<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStatus> {
    let s = pod.status.as_ref()?;
    s.container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .find(|c| c.name == container)
}

pub fn terminated<'a>(pod: &'a Pod, container: &str) -> Result<&'a ContainerStateTerminated> {
    status(pod, container)
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .with_context(|| format!("container {container} not terminated: {}", describe(pod)))
}

/// READY, STATUS and RESTARTS of a `kubectl get pod --no-headers` line.
pub fn kubectl_columns(line: &str) -> Vec<String> {
    line.split_whitespace()
        .skip(1)
        .take(3)
        .map(String::from)
        .collect()
}

/// The container has been restarted at least once and runs again.
pub fn restarted_and_running(pod: &Pod, container: &str) -> bool {
    status(pod, container).is_some_and(|c| {
        c.restart_count >= 1 && c.state.as_ref().is_some_and(|st| st.running.is_some())
    })
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn condition_time(pod: &Pod, type_: &str) -> Option<std::time::SystemTime> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .and_then(|c| time(&c.last_transition_time))
}

pub fn time(t: &Option<Time>) -> Option<std::time::SystemTime> {
    t.as_ref().map(|t| std::time::SystemTime::from(t.0))
}

pub fn job_condition<'a>(
    status: &'a k8s_openapi::api::batch::v1::JobStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
}

pub fn describe(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .unwrap_or_else(|| "no status".into())
}
