//! The test ground: two real single-node Kubernetes 1.20 clusters on this machine,
//! "local" (where users' pods are created) and "remote" (where offloaded pods run),
//! brought up by `testbed/scripts/testbed.sh` and shared by every integration test.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let tb = testbed::testbed().await?;
//! let ns = tb.local.fresh_namespace("demo").await?;
//! let client = tb.local.client().await?;
//! # let _ = (ns, client);
//! # Ok(())
//! # }
//! ```
//!
//! The clusters are real: kubelets run containers with containerd + runc, kube-proxy
//! programs Services, the controller-manager deletes namespaces and collects garbage.
//! Limits worth knowing: the API is 1.20 (never send fields newer than 1.20), there is
//! no cluster DNS (use IPs, ClusterIPs and env vars), and only the images in [`images`]
//! exist (no registry).
//!
//! [`fixtures`] holds pure builders (pods, containers, container statuses) that the
//! unit tests of every crate share; they need no cluster.

pub mod fixtures;
mod layout;
pub mod pki;
mod pods;
mod wait;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::OnceCell;

pub use layout::{Info, namespace_name};
pub use pods::{busybox_pod, pod_logs, wait_for_pod_phase, wait_for_pod_running};
pub use wait::{GiveUp, give_up, wait_every, wait_for};

/// Images present in both clusters (imported at cluster start; see
/// `testbed/scripts/images.d/`). Tags are our recipe versions, never `latest`, so the
/// kubelet's default pull policy (IfNotPresent) never looks for a registry.
pub mod images {
    /// Debian's busybox-static: `sh`, `wget`, `httpd`, `nc`, ... Note that its
    /// `wget -T` segfaults: wrap calls in `timeout N wget ...` instead.
    pub const BUSYBOX: &str = "localhost/offload/busybox:1.0";
    /// The pod sandbox image, compiled from the Kubernetes source's `pause.c`.
    pub const PAUSE: &str = "localhost/offload/pause:1.0";
}

/// Path of the script that manages the clusters.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed.sh")
}

/// The testbed's state dir (kubeconfigs, logs), as the script computes it:
/// `$OFFLOAD_TESTBED_DIR`, else `<repo>/.state/testbed`.
pub fn state_dir() -> PathBuf {
    match std::env::var_os("OFFLOAD_TESTBED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.state/testbed"),
    }
}

/// Both clusters, as brought up for this machine.
#[derive(Debug, Clone)]
pub struct Testbed {
    pub local: Cluster,
    pub remote: Cluster,
}

/// One cluster of the test ground.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// "local" or "remote".
    pub name: String,
    /// Admin (system:masters) kubeconfig.
    pub kubeconfig: PathBuf,
    /// The single node's name.
    pub node_name: String,
    /// The node's InternalIP; NodePort Services of this cluster answer on it, also from
    /// the other cluster's pods.
    pub node_ip: IpAddr,
}

static TESTBED: OnceCell<Testbed> = OnceCell::const_new();

/// Brings both clusters up once per process (runs `testbed.sh up`, which reuses running
/// ones and serializes concurrent callers with a file lock), installs the rustls ring
/// provider.
///
/// Errors say what went wrong and where the logs are; integration tests must fail with
/// them, never skip.
pub async fn testbed() -> anyhow::Result<&'static Testbed> {
    install_crypto_provider();
    TESTBED.get_or_try_init(bring_up).await
}

/// Installs ring as the process-wide rustls provider; a second call (or a provider some
/// other code installed first) is fine.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Generous: a cold start is ~30 s, but another process may hold the lock while it brings
/// the clusters up on a machine busy compiling.
const UP_TIMEOUT: Duration = Duration::from_secs(900);

async fn bring_up() -> anyhow::Result<Testbed> {
    let script = script();
    let up = run_script(&script, "up", UP_TIMEOUT).await?;
    if !up.status.success() {
        bail!(
            "`{} up` failed ({}); its output:\n{}{}\nThe daemons' logs are in {}; run the script \
             by hand to reproduce. Missing binaries: testbed/scripts/install-deps.sh and \
             testbed/scripts/build-k8s.sh.",
            script.display(),
            up.status,
            String::from_utf8_lossy(&up.stdout),
            String::from_utf8_lossy(&up.stderr),
            state_dir().join("logs").display(),
        );
    }
    let info = run_script(&script, "info", Duration::from_secs(30)).await?;
    if !info.status.success() {
        bail!(
            "`{} info` failed right after `up`: {}",
            script.display(),
            String::from_utf8_lossy(&info.stderr)
        );
    }
    let info = Info::parse(&info.stdout)
        .with_context(|| format!("parsing the output of `{} info`", script.display()))?;
    Ok(Testbed {
        local: info.cluster("local")?,
        remote: info.cluster("remote")?,
    })
}

async fn run_script(
    script: &Path,
    command: &str,
    timeout: Duration,
) -> anyhow::Result<std::process::Output> {
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(script).arg(command).kill_on_drop(true);
    match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(out) => out.with_context(|| format!("running `{} {command}`", script.display())),
        Err(_) => bail!(
            "`{} {command}` did not finish within {}s; see the logs in {}",
            script.display(),
            timeout.as_secs(),
            state_dir().join("logs").display(),
        ),
    }
}

/// How long to wait for the controller-manager to create a namespace's `default`
/// ServiceAccount; pods created before it exists are refused.
const SERVICE_ACCOUNT_TIMEOUT: Duration = Duration::from_secs(60);

impl Cluster {
    /// A new client for this cluster. Create one per test (per tokio runtime): a client's
    /// connections belong to the runtime it was first used on.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        install_crypto_provider();
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading kubeconfig {}", self.kubeconfig.display()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", self.kubeconfig.display()))?;
        kube::Client::try_from(config)
            .with_context(|| format!("building a client for cluster {}", self.name))
    }

    /// Creates a fresh namespace named `<prefix>-<random>` and waits for its default
    /// ServiceAccount (and its token), so pods can be created in it right away.
    pub async fn fresh_namespace(&self, prefix: &str) -> anyhow::Result<String> {
        let client = self.client().await?;
        let name = namespace_name(prefix)?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "offload.testbed/fresh": "true" } }
        }))?;
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name} in cluster {}", self.name))?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
        wait_for(
            &format!("ServiceAccount {name}/default in cluster {}", self.name),
            SERVICE_ACCOUNT_TIMEOUT,
            // 1.20's ServiceAccount admission also refuses pods until the token
            // controller has added the account's token secret.
            || async {
                let account = accounts.get_opt("default").await?;
                Ok(account
                    .is_some_and(|a| a.secrets.is_some_and(|s| !s.is_empty()))
                    .then_some(()))
            },
        )
        .await?;
        Ok(name)
    }

    /// A fresh namespace that is deleted (without waiting) when the guard drops, unless
    /// `OFFLOAD_TESTBED_KEEP=1` is set to look at it after a failure.
    pub async fn test_namespace(&self, prefix: &str) -> anyhow::Result<TestNamespace> {
        let name = self.fresh_namespace(prefix).await?;
        Ok(TestNamespace {
            name,
            cluster: self.clone(),
        })
    }

    /// `kubectl` with KUBECONFIG set to this cluster (the kubectl 1.20.2 built with the
    /// clusters, see [`kubectl_binary`]).
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(kubectl_binary());
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Runs `kubectl ARGS` against this cluster and returns its stdout; a non-zero exit
    /// is an error that carries stderr.
    pub async fn run_kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.run_kubectl_with_input(args, None).await
    }

    /// Like [`Cluster::run_kubectl`], with `input` on stdin (e.g. a manifest for
    /// `kubectl apply -f -`).
    pub async fn run_kubectl_with_input(
        &self,
        args: &[&str],
        input: Option<&str>,
    ) -> anyhow::Result<String> {
        use std::process::Stdio;
        use tokio::io::AsyncWriteExt;

        let mut cmd = tokio::process::Command::from(self.kubectl());
        cmd.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running {}", kubectl_binary().display()))?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(input.as_bytes()).await?;
            // Dropping stdin closes it, so kubectl sees the end of the manifest.
        }
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .with_context(|| format!("kubectl {} ({}) timed out", args.join(" "), self.name))?
            .with_context(|| format!("running {}", kubectl_binary().display()))?;
        if !out.status.success() {
            bail!(
                "kubectl {} in cluster {} failed ({}): {}",
                args.join(" "),
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).context("kubectl printed non-UTF-8 output")
    }

    /// The NodePort range of this cluster's apiserver (the two clusters' ranges are
    /// disjoint, since NodePorts of the local cluster open on every host address).
    pub fn node_port_range(&self) -> std::ops::RangeInclusive<u16> {
        layout::node_port_range(&self.name)
    }
}

/// The kubectl to use: `$OFFLOAD_KUBECTL`, else the one build-k8s.sh caches (1.20.2, same
/// as the servers), else `kubectl` on PATH.
pub fn kubectl_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("OFFLOAD_KUBECTL") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("OFFLOAD_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/offload")));
    if let Some(cache) = cache {
        let built = cache.join("kubernetes-1.20.2/bin/kubectl");
        if built.is_file() {
            return built;
        }
    }
    PathBuf::from("kubectl")
}

/// A namespace for one test; deleted when dropped.
#[derive(Debug)]
pub struct TestNamespace {
    pub name: String,
    pub cluster: Cluster,
}

impl TestNamespace {
    /// `kubectl -n <this namespace> ARGS` against its cluster.
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        self.cluster.run_kubectl(&full).await
    }

    /// Deletes the namespace now and waits until it is gone.
    pub async fn delete(self) -> anyhow::Result<()> {
        let client = self.cluster.client().await?;
        let namespaces: Api<Namespace> = Api::all(client);
        namespaces
            .delete(&self.name, &DeleteParams::default())
            .await?;
        wait_for(
            &format!("namespace {} to be gone", self.name),
            Duration::from_secs(120),
            || async {
                Ok(namespaces
                    .get_opt(&self.name)
                    .await?
                    .is_none()
                    .then_some(()))
            },
        )
        .await
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("OFFLOAD_TESTBED_KEEP").is_some_and(|v| v == "1") {
            eprintln!(
                "testbed: keeping namespace {} in cluster {} (OFFLOAD_TESTBED_KEEP=1)",
                self.name, self.cluster.name
            );
            return;
        }
        // Drop cannot be async; kubectl returns as soon as the deletion is accepted.
        // Failure only leaves a namespace behind in a test cluster, so it is ignored.
        let _ = self
            .cluster
            .kubectl()
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
                "--request-timeout=10s",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
