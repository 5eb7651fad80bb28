//! Small helpers for test pods.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};

use crate::images;
use crate::wait::wait_for;

/// A busybox pod running `sh -c script` once (restartPolicy Never), image pulled from
/// nowhere (the image is pre-imported), labelled `app: <name>`. Only 1.20 fields are set.
///
/// `script` reaches `sh` verbatim: every `$` is escaped as `$$`, since Kubernetes
/// would otherwise expand `$(VAR)` and turn `$$` into `$` in commands.
pub fn busybox_pod(name: &str, script: &str) -> Pod {
    let script = script.replace('$', "$$");
    // Built from JSON so it reads like the manifest a user would write; the struct is
    // statically valid, so the conversion cannot fail on our own input.
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "restartPolicy": "Never",
            // `sh` as PID 1 ignores SIGTERM; do not wait the default 30 s on delete.
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": images::BUSYBOX,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script],
            }],
        },
    }))
    .unwrap_or_default()
}

/// Waits until the pod reaches `phase` and returns it. Fails early, with the container
/// states, when the pod ends in another terminal phase or cannot start its containers.
pub async fn wait_for_pod_phase(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    phase: &str,
    timeout: Duration,
) -> anyhow::Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    wait_for_pod(&pods, name, phase, timeout, |pod| pod_phase(pod) == phase).await
}

/// Waits until the pod is Running with every container ready.
pub async fn wait_for_pod_running(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    wait_for_pod(&pods, name, "Running and ready", timeout, |pod| {
        pod_phase(pod) == "Running" && all_ready(pod)
    })
    .await
}

/// The pod has containers and every one is ready.
fn all_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready))
}

/// Waits until `done` holds for the pod; fails early when it ends (Succeeded or
/// Failed) without `done` holding or cannot start its containers.
async fn wait_for_pod(
    pods: &Api<Pod>,
    name: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&Pod) -> bool,
) -> anyhow::Result<Pod> {
    let namespace = pods.namespace().unwrap_or_default();
    let last = Mutex::new(String::from("pod not found"));
    wait_for(
        &format!("pod {namespace}/{name} to be {what}"),
        timeout,
        || async {
            let Some(pod) = pods.get_opt(name).await? else {
                return Ok(None);
            };
            remember(&last, &pod);
            if done(&pod) {
                return Ok(Some(pod));
            }
            let current = pod_phase(&pod);
            if matches!(current, "Succeeded" | "Failed") {
                bail!(
                    "pod {namespace}/{name} ended {current} instead of {what}: {}",
                    describe(&pod)
                );
            }
            if let Some(reason) = stuck_reason(&pod) {
                bail!(
                    "pod {namespace}/{name} cannot start ({reason}): {}",
                    describe(&pod)
                );
            }
            Ok(None)
        },
    )
    .await
    .with_context(|| last_seen(&last))
}

/// Keeps a one-line summary of the pod's state for the timeout message: "timed out"
/// alone does not say whether the pod was unschedulable (node full?), or waiting for
/// its containers.
fn remember(last: &Mutex<String>, pod: &Pod) {
    let status = pod.status.as_ref();
    let conditions = status
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .filter(|c| c.status != "True")
                .map(|c| {
                    format!(
                        "{}={} {}",
                        c.type_,
                        c.status,
                        c.message.as_deref().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    let waiting = status
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| {
            cs.iter()
                .filter_map(|c| {
                    let w = c.state.as_ref()?.waiting.as_ref()?;
                    Some(format!(
                        "{} waiting: {}",
                        c.name,
                        w.reason.as_deref().unwrap_or("?")
                    ))
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    let summary = format!("phase {:?}; {conditions}; {waiting}", pod_phase(pod));
    if let Ok(mut l) = last.lock() {
        *l = summary;
    }
}

fn last_seen(last: &Mutex<String>) -> String {
    let seen = last.lock().map(|l| l.clone()).unwrap_or_default();
    format!("last seen: {seen}")
}

/// The pod's (first container's) log.
pub async fn pod_logs(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.logs(name, &LogParams::default())
        .await
        .with_context(|| format!("reading the log of pod {namespace}/{name}"))
}

fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Waiting reasons that never resolve by themselves in the test ground (no registry).
fn stuck_reason(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        matches!(
            reason,
            "ErrImagePull"
                | "ImagePullBackOff"
                | "ErrImageNeverPull"
                | "InvalidImageName"
                | "CreateContainerConfigError"
                | "CreateContainerError"
        )
        .then(|| {
            format!(
                "{}: {reason} {}",
                c.name,
                waiting.message.as_deref().unwrap_or("")
            )
        })
    })
}

fn describe(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .unwrap_or_else(|| "no status".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_pod_is_a_one_shot_pod_of_the_local_image() {
        let pod = busybox_pod("hello", "echo hi");
        assert_eq!(pod.metadata.name.as_deref(), Some("hello"));
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some(images::BUSYBOX));
        assert_eq!(
            c.command.as_deref(),
            Some(&["sh".to_string(), "-c".into(), "echo hi".into()][..])
        );
    }

    #[test]
    fn busybox_pod_script_is_protected_from_kubernetes_expansion() {
        let pod = busybox_pod("x", "echo $$ $(hostname) $HOME");
        let command = pod.spec.expect("spec").containers[0].command.clone();
        assert_eq!(
            command.expect("command")[2],
            "echo $$$$ $$(hostname) $$HOME"
        );
    }

    #[test]
    fn image_pull_errors_are_stuck() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "status": { "phase": "Pending", "containerStatuses": [{
                "name": "main", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "waiting": { "reason": "ErrImageNeverPull", "message": "no image" } }
            }]}
        }))
        .expect("valid pod");
        let reason = stuck_reason(&pod).expect("stuck");
        assert!(reason.contains("ErrImageNeverPull"), "{reason}");
    }
}
