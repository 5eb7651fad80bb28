//! The [`Suite`] methods the cases use: `kubectl` in the case namespace, apply,
//! waits (API polling every [`POLL`]) and the remote objects of a local pod.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams};
use offload_wire::keys;
use serde_json::{Value, json};

use super::{
    POLL, START, Suite, describe, expect_eq, expect_phase, job_condition, kubectl_columns, phase,
};

/// The last thing a wait saw, for its error message when it times out.
#[derive(Default)]
pub struct LastSeen(Mutex<String>);

impl LastSeen {
    pub fn set(&self, seen: String) {
        if let Ok(mut l) = self.0.lock() {
            *l = seen;
        }
    }

    pub fn get(&self) -> String {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Suite {
    /// `kubectl -n <ns> ARGS` against the local cluster.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.ns.as_str()];
        full.extend_from_slice(args);
        self.tb.local.run_kubectl(&full).await
    }

    /// Applies several objects at once (a `v1` `List` of `items`).
    pub async fn apply_all(&self, items: &[Value]) -> Result<()> {
        self.apply(&json!({ "apiVersion": "v1", "kind": "List", "items": items }))
            .await
    }

    pub async fn apply(&self, manifest: &Value) -> Result<()> {
        self.tb
            .local
            .run_kubectl_with_input(
                &["-n", &self.ns, "apply", "-f", "-"],
                Some(&manifest.to_string()),
            )
            .await
            .map(drop)
    }

    /// A pod spec placed on the virtual node the way a user would: a
    /// nodeSelector and a toleration of the virtual node's taint.
    pub fn placed(&self, mut spec: Value) -> Value {
        if let Some(o) = spec.as_object_mut() {
            o.entry("nodeSelector")
                .or_insert(json!({ "kubernetes.io/hostname": self.node }));
            o.entry("tolerations").or_insert(json!([{
                "key": keys::TAINT_NO_SCHEDULE, "operator": "Exists", "effect": "NoSchedule",
            }]));
            // `sh` as PID 1 ignores SIGTERM: do not wait 30 s on each delete.
            o.entry("terminationGracePeriodSeconds").or_insert(json!(2));
        }
        spec
    }

    /// A Job `name` with `spec` (completions, backoffLimit...) whose pod
    /// template is `pod_spec` placed on the virtual node.
    pub fn job(&self, name: &str, mut spec: Value, pod_spec: Value) -> Value {
        spec["template"] = json!({ "spec": self.placed(pod_spec) });
        json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": name },
            "spec": spec,
        })
    }

    pub fn pod(&self, name: &str, spec: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "labels": { "case": name } },
            "spec": self.placed(spec),
        })
    }

    /// READY, STATUS and RESTARTS of `kubectl get pod NAME`.
    pub async fn get_columns(&self, name: &str) -> Result<Vec<String>> {
        let line = self.kubectl(&["get", "pod", name, "--no-headers"]).await?;
        let columns = kubectl_columns(&line);
        ensure!(columns.len() == 3, "kubectl get pod {name}: {line:?}");
        Ok(columns)
    }

    /// The STATUS column of `kubectl get pod NAME` is `want`.
    pub async fn expect_status_column(&self, name: &str, want: impl Into<String>) -> Result<()> {
        expect_eq(
            "kubectl get STATUS",
            self.get_columns(name).await?[1].clone(),
            want.into(),
        )
    }

    /// The pod as `kubectl get pod -o json` shows it.
    pub async fn get_pod(&self, name: &str) -> Result<Pod> {
        let out = self.kubectl(&["get", "pod", name, "-o", "json"]).await?;
        serde_json::from_str(&out).with_context(|| format!("parsing kubectl's pod {name}"))
    }

    /// Waits (API polling) until `ok` holds for the pod; fails early when the
    /// pod ends in a terminal phase that does not satisfy it.
    pub async fn wait_pod(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&Pod) -> bool,
    ) -> Result<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.local.clone(), &self.ns);
        let last = LastSeen::default();
        last.set("pod not found".into());
        let ok = &ok;
        let last_ref = &last;
        let pods = &pods;
        testbed::wait_every(
            POLL,
            &format!("pod {name}: {what}"),
            timeout,
            || async move {
                let Some(pod) = pods.get_opt(name).await? else {
                    return Ok(None);
                };
                last_ref.set(describe(&pod));
                if ok(&pod) {
                    return Ok(Some(pod));
                }
                if matches!(phase(&pod), "Succeeded" | "Failed") {
                    return Err(testbed::give_up(format!(
                        "pod {name} ended {} before {what}: {}",
                        phase(&pod),
                        describe(&pod)
                    )));
                }
                Ok(None)
            },
        )
        .await
        .with_context(|| format!("last seen status of {name}: {}", last.get()))
    }

    /// Applies pod `name` (placed by [`Suite::pod`]), waits until it ends and returns
    /// it as `kubectl get pod -o json` shows it.
    pub async fn run_to_end(&self, name: &str, spec: Value) -> Result<Pod> {
        self.apply(&self.pod(name, spec)).await?;
        self.ended(name, None).await
    }

    /// [`Suite::run_to_end`] of a pod that must end Succeeded.
    pub async fn run_succeeded(&self, name: &str, spec: Value) -> Result<Pod> {
        let pod = self.run_to_end(name, spec).await?;
        expect_phase(&pod, "Succeeded")?;
        Ok(pod)
    }

    /// [`Suite::run_succeeded`], then `kubectl logs NAME` prints exactly `want`.
    pub async fn expect_success_log(
        &self,
        name: &str,
        spec: Value,
        want: impl Into<String>,
    ) -> Result<()> {
        self.run_succeeded(name, spec).await?;
        self.expect_log(name, want).await
    }

    /// Waits until the applied pod `name` ends, checks it ended in phase
    /// `want` (when given) and returns it as `kubectl get pod -o json` shows it.
    pub async fn ended(&self, name: &str, want: Option<&str>) -> Result<Pod> {
        self.wait_finished(name).await?;
        let pod = self.get_pod(name).await?;
        if let Some(want) = want {
            expect_phase(&pod, want)?;
        }
        Ok(pod)
    }

    /// `kubectl logs NAME` prints exactly `want`.
    pub async fn expect_log(&self, name: &str, want: impl Into<String>) -> Result<()> {
        expect_eq("log", self.kubectl(&["logs", name]).await?, want.into())
    }

    pub async fn wait_finished(&self, name: &str) -> Result<Pod> {
        self.wait_pod(name, "Succeeded or Failed", START, |p| {
            matches!(phase(p), "Succeeded" | "Failed")
        })
        .await
    }

    /// `kubectl logs POD -c CONTAINER` prints exactly `want`.
    pub async fn expect_container_log(&self, pod: &str, container: &str, want: &str) -> Result<()> {
        expect_eq(
            &format!("{container} log"),
            self.kubectl(&["logs", pod, "-c", container]).await?,
            want.into(),
        )
    }

    /// Waits until `kubectl logs NAME ARGS` prints exactly `want`.
    pub async fn wait_log(&self, name: &str, args: &[&str], want: &str) -> Result<()> {
        let last = LastSeen::default();
        let last_ref = &last;
        let mut full = vec!["logs", name];
        full.extend_from_slice(args);
        let full = &full;
        testbed::wait_every(
            POLL,
            &format!("kubectl logs {} to be {want:?}", full[1..].join(" ")),
            Duration::from_secs(120),
            || async move {
                let log = self.kubectl(full).await?;
                let done = log == want;
                last_ref.set(log);
                Ok(done.then_some(()))
            },
        )
        .await
        .with_context(|| format!("last log: {:?}", last.get()))
    }

    pub async fn wait_job(&self, name: &str, condition: &str, timeout: Duration) -> Result<Job> {
        let jobs: Api<Job> = Api::namespaced(self.local.clone(), &self.ns);
        let jobs = &jobs;
        testbed::wait_every(
            POLL,
            &format!("job {name} condition {condition}"),
            timeout,
            || async move {
                let job = jobs.get(name).await?;
                let status = job.status.clone().unwrap_or_default();
                if let Some(c) = job_condition(&status, "Failed").filter(|_| condition != "Failed")
                {
                    return Err(testbed::give_up(format!(
                        "job {name} failed: {:?} {:?}",
                        c.reason, c.message
                    )));
                }
                Ok(job_condition(&status, condition).is_some().then_some(()))
            },
        )
        .await?;
        let out = self.kubectl(&["get", "job", name, "-o", "json"]).await?;
        serde_json::from_str(&out).context("parsing kubectl's job")
    }

    /// The Job's pods as `kubectl get pods -l job-name=NAME` lists them.
    pub async fn job_pods(&self, job: &str) -> Result<Vec<Pod>> {
        let out = self
            .kubectl(&[
                "get",
                "pods",
                "-l",
                &format!("job-name={job}"),
                "-o",
                "json",
            ])
            .await?;
        let list: Value = serde_json::from_str(&out)?;
        list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|p| serde_json::from_value(p).context("parsing a pod"))
            .collect()
    }

    /// The remote pods made for the local `pod`.
    pub async fn remote_pods_of(&self, pod: &Pod) -> Result<Vec<Pod>> {
        self.remote_pods(pod.metadata.uid.as_deref().unwrap_or_default())
            .await
    }

    pub async fn remote_pods(&self, uid: &str) -> Result<Vec<Pod>> {
        let pods = Api::<Pod>::all(self.remote.clone())
            .list(&by_source(uid))
            .await?
            .items;
        self.saw_remote_pods(&pods);
        Ok(pods)
    }

    /// Remembers the namespaces of remote pods (the plugin's mapping, whatever its
    /// configuration), to delete them at the end.
    fn saw_remote_pods(&self, pods: &[Pod]) {
        for ns in pods.iter().filter_map(|p| p.metadata.namespace.clone()) {
            self.saw_remote_namespace(ns);
        }
    }

    /// The remote pod, ConfigMaps and Secrets made for a local pod.
    pub async fn remote_objects(
        &self,
        uid: &str,
    ) -> Result<(Vec<Pod>, Vec<ConfigMap>, Vec<Secret>)> {
        let lp = by_source(uid);
        Ok((
            self.remote_pods(uid).await?,
            Api::<ConfigMap>::all(self.remote.clone())
                .list(&lp)
                .await?
                .items,
            Api::<Secret>::all(self.remote.clone())
                .list(&lp)
                .await?
                .items,
        ))
    }

    pub async fn wait_node_ready(&self) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.local.clone());
        let nodes = &nodes;
        testbed::wait_every(
            POLL,
            &format!("virtual node {} Ready", self.node),
            Duration::from_secs(120),
            || async move {
                let Some(node) = nodes.get_opt(&self.node).await? else {
                    return Ok(None);
                };
                let ready = node
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                Ok(ready.then_some(()))
            },
        )
        .await
    }

    /// Deletes the local namespace (the provider deletes what is left on the
    /// remote side), checks the remote side is empty, then deletes the remote
    /// namespaces the plugin created for it (the plugin leaves empty namespaces to
    /// its namespace GC).
    pub async fn cleanup(&self, ns: testbed::TestNamespace) -> Result<()> {
        self.clean_up(ns).await.map(drop)
    }

    /// [`Suite::cleanup`], returning what it could not check (no remote kubeconfig).
    pub async fn clean_up(&self, ns: testbed::TestNamespace) -> Result<Vec<String>> {
        if !self.has_remote() {
            ns.delete().await?;
            return Ok(vec![
                "the remote pods of the namespace are gone; its remote namespace is left to the \
                 plugin's namespace GC (no remote kubeconfig)"
                    .into(),
            ]);
        }
        // Seen now, before the deletes: the namespaces to delete afterwards.
        self.remote_pods_of_namespace().await?;
        ns.delete().await?;
        testbed::wait_every(
            POLL,
            "the remote pods of the deleted namespace to be gone",
            Duration::from_secs(180),
            || async move {
                Ok(self
                    .remote_pods_of_namespace()
                    .await?
                    .is_empty()
                    .then_some(()))
            },
        )
        .await?;
        let seen = self
            .remote_namespaces
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        for n in seen {
            self.delete_remote_namespace(&n).await?;
        }
        Ok(Vec::new())
    }

    /// Deletes remote namespace `name` if the plugin made it (its managed-by
    /// label): nothing else, even in a namespace named like ours.
    async fn delete_remote_namespace(&self, name: &str) -> Result<()> {
        let api: Api<Namespace> = Api::all(self.remote.clone());
        let Some(ns) = api.get_opt(name).await? else {
            return Ok(());
        };
        let plugins = ns
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(keys::LABEL_MANAGED_BY))
            .is_some_and(|v| v == keys::MANAGED_BY_PLUGIN);
        if !plugins {
            eprintln!("conformance: leaving remote namespace {name}: not labelled as the plugin's");
            return Ok(());
        }
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting remote namespace {name}")),
        }
    }

    /// The offloaded pods on the remote cluster whose source is this run's
    /// local namespace.
    async fn remote_pods_of_namespace(&self) -> Result<Vec<Pod>> {
        let ours = ListParams::default().labels(&format!(
            "{}={}",
            keys::LABEL_OFFLOADING,
            keys::OFFLOADING_VALUE
        ));
        let from_ns = |p: &Pod| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(keys::ANNOTATION_SOURCE_NAMESPACE))
                .is_some_and(|n| *n == self.ns)
        };
        let pods: Vec<Pod> = Api::<Pod>::all(self.remote.clone())
            .list(&ours)
            .await?
            .items
            .into_iter()
            .filter(from_ns)
            .collect();
        self.saw_remote_pods(&pods);
        Ok(pods)
    }
}

fn by_source(uid: &str) -> ListParams {
    ListParams::default().labels(&format!("{}={uid}", keys::LABEL_SOURCE_POD_UID))
}
