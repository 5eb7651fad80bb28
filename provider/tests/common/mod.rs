//! Shared harness of the real-plugin tests: both testbed clusters, the real
//! plugin (`offload_plugin::start`, in-process, against the remote cluster,
//! restartable on the same address), the provider (in-process or as a
//! killable subprocess) on the local cluster, pod builders and polling helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerStateTerminated, Node, Pod, Secret,
};
use kube::api::{Api, DeleteParams, ListParams};
use offload_plugin::{Listen, PluginConfig, RunningPlugin};
use offload_provider::config::Config;
use offload_provider::provider::{RunningProvider, start};
use offload_wire::keys::{ANNOTATION_JOB_ID, LABEL_SOURCE_POD_UID};
use serde::de::DeserializeOwned;
use testbed::fixtures;

/// Both clusters and a client for each.
pub struct Env {
    pub tb: &'static testbed::Testbed,
    pub local: kube::Client,
    pub remote: kube::Client,
}

/// Logging (RUST_LOG, default info for provider and plugin), testbed and clients.
pub async fn env() -> Env {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            std::env::var("RUST_LOG")
                .unwrap_or_else(|_| "offload_provider=info,offload_plugin=info".into()),
        )
        .try_init();
    let tb = testbed::testbed().await.expect("testbed");
    Env {
        tb,
        local: tb.local.client().await.expect("local client"),
        remote: tb.remote.client().await.expect("remote client"),
    }
}

/// The real plugin, stoppable and restartable on the same address.
pub struct Plugin {
    addr: SocketAddr,
    remote: kube::Client,
    status_watch: bool,
    tweak: fn(&mut PluginConfig),
    running: Option<RunningPlugin>,
}

/// Whether the in-process plugin offers the status stream: yes, unless
/// `OFFLOAD_STATUS_WATCH=false`, which runs every test of this crate against
/// a plugin polled through `/status` as interLink does.
pub fn status_watch_default() -> bool {
    std::env::var("OFFLOAD_STATUS_WATCH").map_or(true, |v| v != "false" && v != "0")
}

impl Plugin {
    pub async fn start(remote: &kube::Client) -> Plugin {
        Self::start_with_status_watch(remote, status_watch_default()).await
    }

    /// The plugin with its status stream on or off (`--status-watch`).
    pub async fn start_with_status_watch(remote: &kube::Client, status_watch: bool) -> Plugin {
        Self::start_with(remote, status_watch, |_| {}).await
    }

    /// The plugin with its status stream on or off and the test
    /// configuration changed by `tweak` (kept across restarts).
    pub async fn start_with(
        remote: &kube::Client,
        status_watch: bool,
        tweak: fn(&mut PluginConfig),
    ) -> Plugin {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let running = Self::run(remote, addr, status_watch, tweak).await;
        Plugin {
            addr: running.addr(),
            remote: remote.clone(),
            status_watch,
            tweak,
            running: Some(running),
        }
    }

    async fn run(
        remote: &kube::Client,
        addr: SocketAddr,
        status_watch: bool,
        tweak: fn(&mut PluginConfig),
    ) -> RunningPlugin {
        let mut config = PluginConfig::for_tests();
        config.listen = Listen::Tcp(addr);
        config.status_watch = status_watch;
        tweak(&mut config);
        let p = offload_plugin::start(config, remote.clone())
            .await
            .expect("plugin starts");
        assert!(
            p.wait_ready(Duration::from_secs(120)).await,
            "plugin's remote pod cache synced"
        );
        p
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server: the port refuses connections until [`Plugin::restart`].
    pub async fn stop(&mut self) {
        if let Some(p) = self.running.take() {
            p.shutdown().await;
        }
    }

    /// Starts a fresh plugin on the same address (state comes from the remote cluster).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.running =
            Some(Self::run(&self.remote, self.addr, self.status_watch, self.tweak).await);
    }
}

/// The local testbed CA's directory: `ca.crt` signs the apiserver's
/// `--kubelet-client-certificate`, `admin.crt/key` is a client of that CA.
pub fn local_pki(tb: &testbed::Testbed) -> PathBuf {
    tb.local
        .kubeconfig
        .parent()
        .map(|d| d.join("pki"))
        .unwrap_or_default()
}

pub fn node_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}

/// A provider config for the testbed: kubelet API reachable by the local
/// apiserver (all addresses, ephemeral port, local CA's client certificates),
/// fast status polls and pings, short backoff.
pub fn provider_config(env: &Env, node: &str, plugin: &Plugin) -> Config {
    let mut c = Config::for_node(node, &plugin.url());
    c.kubelet_addr = "0.0.0.0:0".parse().expect("addr");
    c.admin_addr = None;
    c.client_ca_file = Some(local_pki(env.tb).join("ca.crt"));
    c.status_interval = Duration::from_millis(500);
    c.ping_interval = Duration::from_millis(500);
    c.retry_base = Duration::from_millis(200);
    c.retry_max = Duration::from_secs(2);
    c.plugin_retries = 0;
    c.plugin_connect_timeout = Duration::from_secs(2);
    c
}

pub async fn start_provider(env: &Env, config: Config) -> RunningProvider {
    start(config, env.local.clone(), env.tb.local.node_ip)
        .await
        .expect("provider starts")
}

/// The provider binary as a subprocess (SIGKILL on drop), logging to stderr.
pub struct ProviderProcess(pub std::process::Child);

impl ProviderProcess {
    pub fn spawn(env: &Env, node: &str, plugin: &Plugin, workers: usize) -> ProviderProcess {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_offload-provider"))
            .args(["--node-name", node, "--plugin-url", &plugin.url()])
            .args(["--node-ip", &env.tb.local.node_ip.to_string()])
            .args(["--kubelet-addr", "0.0.0.0:0", "--admin-addr", "127.0.0.1:0"])
            .args(["--workers", &workers.to_string()])
            .args(["--status-interval", "500ms", "--ping-interval", "1s"])
            .env("KUBECONFIG", &env.tb.local.kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("PROVIDER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn the provider binary");
        ProviderProcess(child)
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(mut self) {
        self.0.kill().expect("kill the provider");
        let _ = self.0.wait();
    }
}

impl Drop for ProviderProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A busybox container running `sh -c script` (`$` escaped for the kubelet's
/// `$(VAR)` expansion, as a user writes `$$` in a manifest).
pub use testbed::fixtures::sh_container as container;

/// A pod bound to `node` (the scheduler is bypassed, as the "bound"),
/// tolerating the virtual node's taint.
pub fn pod(name: &str, node: &str, restart: &str, init: Option<Container>, main: Container) -> Pod {
    let mut fixture = fixtures::pod(name)
        .node(node)
        .restart_policy(restart)
        .container(main)
        .tolerate_all();
    if let Some(init) = init {
        fixture = fixture.init_container(init);
    }
    let mut pod = fixture.build();
    if let Some(spec) = pod.spec.as_mut() {
        spec.termination_grace_period_seconds = Some(30);
    }
    pod
}

/// Polls `f` every 250 ms until it returns `Some`, panicking with `what` after `timeout`.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

pub fn job_id(p: &Pod) -> Option<&str> {
    p.metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_JOB_ID)
        .map(String::as_str)
}

pub fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().expect("pod uid")
}

/// Waits until pod `name` has `phase` and returns it.
pub async fn wait_phase(pods: &Api<Pod>, name: &str, phase_: &str, timeout: Duration) -> Pod {
    wait_for(&format!("pod {name} {phase_}"), timeout, async || {
        let p = pods.get(name).await.ok()?;
        (phase(&p) == phase_).then_some(p)
    })
    .await
}

pub async fn wait_gone(pods: &Api<Pod>, name: &str, timeout: Duration) {
    wait_for(&format!("pod {name} gone"), timeout, async || {
        pods.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await
}

/// Delete every pod of `pods`' namespace and wait until none is left.
pub async fn delete_all_pods(pods: &Api<Pod>, timeout: Duration) {
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete all");
    wait_for("local pods gone", timeout, async || {
        pods.list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await
}

/// The node's Ready condition: (status, reason, message).
pub async fn node_ready(c: &kube::Client, node: &str) -> Option<(String, String, String)> {
    node_condition(c, node, "Ready").await
}

/// A condition of the node: (status, reason, message).
pub async fn node_condition(
    c: &kube::Client,
    node: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let n = Api::<Node>::all(c.clone()).get_opt(node).await.ok()??;
    let cond = n
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == type_)?;
    Some((
        cond.status,
        cond.reason.unwrap_or_default(),
        cond.message.unwrap_or_default(),
    ))
}

/// Remote objects of kind `K` created for the local pod `uid` (label
/// `interlink.io/source.pod_uid`), in every namespace.
async fn remote_of<K>(remote: &kube::Client, uid: &str) -> Vec<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let by_source_uid = ListParams::default().labels(&format!("{LABEL_SOURCE_POD_UID}={uid}"));
    Api::<K>::all(remote.clone())
        .list(&by_source_uid)
        .await
        .unwrap_or_else(|e| panic!("list remote {}: {e}", K::plural(&())))
        .items
}

/// Remote pods created for the local pod `uid`.
pub async fn remote_pods(remote: &kube::Client, uid: &str) -> Vec<Pod> {
    remote_of(remote, uid).await
}

/// Remote (ConfigMaps, Secrets) created for the local pod `uid`.
pub async fn remote_owned(remote: &kube::Client, uid: &str) -> (usize, usize) {
    let cms = remote_of::<ConfigMap>(remote, uid).await.len();
    let secrets = remote_of::<Secret>(remote, uid).await.len();
    (cms, secrets)
}

/// The termination of the pod's first container (it must have one).
pub fn first_terminated(p: &Pod) -> ContainerStateTerminated {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.clone())
        .expect("first container terminated")
}

/// Count of remote pods per source uid in the remote namespace of local `ns`.
pub async fn remote_pods_by_uid(env: &Env, ns: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let list = Api::<Pod>::namespaced(env.remote.clone(), &remote_namespace(ns))
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    for p in list {
        let uid = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SOURCE_POD_UID))
            .cloned()
            .unwrap_or_default();
        *counts.entry(uid).or_default() += 1;
    }
    counts
}

/// The remote namespace the plugin (test config, prefix `offloading`) uses for local `ns`.
pub fn remote_namespace(ns: &str) -> String {
    offload_plugin::naming::NamespaceMapper::new("offloading", vec![]).remote(ns)
}

/// Events of `ns` with `reason` (core/v1 events, as `kubectl get events` shows them),
/// about object `name`: their messages.
pub async fn events(c: &kube::Client, ns: &str, name: &str, reason: &str) -> Vec<String> {
    messages(Api::namespaced(c.clone(), ns), name, reason).await
}

/// Events about `node` with `reason`, in any namespace (a Node is cluster-scoped;
/// the provider writes them in `default`, as the kubelet does).
pub async fn node_events(c: &kube::Client, node: &str, reason: &str) -> Vec<String> {
    messages(Api::all(c.clone()), node, reason).await
}

async fn messages(
    api: Api<k8s_openapi::api::core::v1::Event>,
    name: &str,
    reason: &str,
) -> Vec<String> {
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason) && e.involved_object.name.as_deref() == Some(name)
        })
        .map(|e| e.message.unwrap_or_default())
        .collect()
}

/// Runs the testbed's kubectl against the local cluster in `ns`:
/// (success, stdout, stderr).
pub async fn kubectl(env: &Env, ns: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::from(env.tb.local.kubectl());
    cmd.args(["-n", ns]).args(args).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
        .expect("run kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Removes what a test leaves, also when it panics: the pods of the local
/// namespace (grace 0: their provider may be gone), the local and remote
/// namespaces (not waited for) and the virtual nodes. Set
/// `OFFLOAD_TESTBED_KEEP=1` to keep them for a look after a failure.
pub struct Cleanup {
    pub local: testbed::Cluster,
    pub remote: testbed::Cluster,
    pub namespace: String,
    pub nodes: Vec<String>,
}

impl Cleanup {
    pub fn new(env: &Env, namespace: &str, nodes: &[&str]) -> Cleanup {
        Cleanup {
            local: env.tb.local.clone(),
            remote: env.tb.remote.clone(),
            namespace: namespace.into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        }
    }
}

/// A fresh local namespace `prefix-…` for a test of `nodes`: its name, the
/// guard that removes it and the nodes at the end, and its pods API.
pub async fn test_namespace(
    env: &Env,
    prefix: &str,
    nodes: &[&str],
) -> (String, Cleanup, Api<Pod>) {
    let ns = env.tb.local.fresh_namespace(prefix).await.expect("ns");
    let cleanup = Cleanup::new(env, &ns, nodes);
    let pods = Api::namespaced(env.local.clone(), &ns);
    (ns, cleanup, pods)
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::env::var_os("OFFLOAD_TESTBED_KEEP").is_some_and(|v| v == "1") {
            eprintln!(
                "keeping namespace {} and nodes {:?} (OFFLOAD_TESTBED_KEEP=1)",
                self.namespace, self.nodes
            );
            return;
        }
        // Drop cannot be async; failures only leave objects in a test cluster.
        let run = |mut cmd: std::process::Command, args: &[&str]| {
            let _ = cmd
                .args(args)
                .arg("--request-timeout=20s")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        };
        let ns = self.namespace.as_str();
        run(
            self.local.kubectl(),
            &[
                "-n",
                ns,
                "delete",
                "pods",
                "--all",
                "--grace-period=0",
                "--force",
            ],
        );
        run(
            self.local.kubectl(),
            &[
                "delete",
                "namespace",
                ns,
                "--wait=false",
                "--ignore-not-found",
            ],
        );
        run(
            self.remote.kubectl(),
            &[
                "delete",
                "namespace",
                &remote_namespace(ns),
                "--wait=false",
                "--ignore-not-found",
            ],
        );
        for n in &self.nodes {
            run(
                self.local.kubectl(),
                &["delete", "node", n, "--wait=false", "--ignore-not-found"],
            );
        }
    }
}
