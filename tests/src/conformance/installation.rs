//! An installation as an operator runs one, for the external mode's own test: the
//! release binaries `offload-plugin` (against the remote cluster) and
//! `offload-provider` (against the local cluster) as separate processes, with a
//! bearer token between them and their own plugin instance, namespace prefix and
//! virtual node. Killed, and its node deleted, when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;

use super::{POLL, check_virtual_node};

/// Directory of prebuilt `offload-provider` and `offload-plugin` binaries; unset,
/// [`release_binaries`] builds them.
pub const ENV_BIN_DIR: &str = "OFFLOAD_CONFORMANCE_BIN_DIR";

/// The plugin and provider processes of one installation.
pub struct Installation {
    /// The virtual node.
    pub node: String,
    /// The plugin's `--instance`.
    pub instance: String,
    /// The plugin's `--namespace-prefix` (the suite must not need to know it).
    pub namespace_prefix: String,
    dir: tempfile::TempDir,
    plugin: Child,
    provider: Child,
    local: testbed::Cluster,
}

/// The directory of the release binaries: `$OFFLOAD_CONFORMANCE_BIN_DIR`, else
/// `<target>/release`, where `deploy/images/prepare-test-images.sh` (run by
/// `scripts/test` before the tests) builds them. Not built from here: a nested
/// `cargo build` in the test's environment rebuilds the workspace crates (the
/// environment differs from a shell's), minutes each time.
pub fn release_binaries() -> Result<PathBuf> {
    let dir = match std::env::var_os(ENV_BIN_DIR) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::repo_root().join("target"))
            .join("release"),
    };
    for bin in ["offload-provider", "offload-plugin"] {
        if !dir.join(bin).is_file() {
            bail!(
                "{} is missing: run deploy/images/prepare-test-images.sh (builds the release \
                 binaries), or set {ENV_BIN_DIR}",
                dir.join(bin).display()
            );
        }
    }
    Ok(dir)
}

impl Installation {
    /// Starts the plugin (its own `instance` and `namespace_prefix`) and the
    /// provider of virtual node `node`, and waits until the node passes the
    /// external mode's check.
    pub async fn start(
        tb: &testbed::Testbed,
        node: &str,
        instance: &str,
        namespace_prefix: &str,
    ) -> Result<Installation> {
        let bin = release_binaries()?;
        let dir = tempfile::tempdir()?;
        let token = dir.path().join("token");
        std::fs::write(&token, uuid::Uuid::new_v4().simple().to_string())?;
        // A free port for the plugin: its address goes on the provider's command line.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let plugin = spawn(
            Command::new(bin.join("offload-plugin"))
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .arg("--kubeconfig")
                .arg(&tb.remote.kubeconfig)
                .arg("--token-file")
                .arg(&token)
                .args([
                    "--instance",
                    instance,
                    "--namespace-prefix",
                    namespace_prefix,
                ])
                .arg("--no-bastion"),
            &dir.path().join("plugin.log"),
        )?;
        let ca = tb
            .local
            .kubeconfig
            .parent()
            .map(|d| d.join("pki/ca.crt"))
            .unwrap_or_default();
        let provider = spawn(
            Command::new(bin.join("offload-provider"))
                .args(["--node-name", node])
                .args(["--plugin-url", &format!("http://127.0.0.1:{port}")])
                .arg("--plugin-token-file")
                .arg(&token)
                .args(["--node-ip", &tb.local.node_ip.to_string()])
                .args(["--kubelet-addr", "0.0.0.0:0", "--admin-addr", "127.0.0.1:0"])
                .arg("--client-ca-file")
                .arg(ca)
                .env("KUBECONFIG", &tb.local.kubeconfig),
            &dir.path().join("provider.log"),
        )?;
        let mut installation = Installation {
            node: node.into(),
            instance: instance.into(),
            namespace_prefix: namespace_prefix.into(),
            dir,
            plugin,
            provider,
            local: tb.local.clone(),
        };
        installation.wait_usable().await?;
        Ok(installation)
    }

    /// Until the node passes [`check_virtual_node`]; fails at once when a process ends.
    async fn wait_usable(&mut self) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.local.client().await?);
        let mut last = String::from("node not registered yet");
        for _ in 0..(120 / POLL.as_secs().max(1)) {
            let exited = [
                ("plugin", self.plugin.try_wait()?),
                ("provider", self.provider.try_wait()?),
            ];
            if let Some((what, Some(status))) = exited.iter().find(|(_, s)| s.is_some()) {
                bail!("the {what} exited ({status}):\n{}", self.logs());
            }
            if let Some(node) = nodes.get_opt(&self.node).await? {
                match check_virtual_node(&node) {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e,
                }
            }
            tokio::time::sleep(POLL).await;
        }
        bail!(
            "node {} not usable within 120 s: {last}\n{}",
            self.node,
            self.logs()
        )
    }

    /// The last lines of both processes' logs, for failure messages.
    pub fn logs(&self) -> String {
        ["plugin", "provider"]
            .iter()
            .map(|what| {
                let log = std::fs::read_to_string(self.dir.path().join(format!("{what}.log")))
                    .unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                format!("--- {what} log (last 30 lines) ---\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .env(
            "RUST_LOG",
            std::env::var("OFFLOAD_CONFORMANCE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))
}

impl Drop for Installation {
    fn drop(&mut self) {
        for child in [&mut self.provider, &mut self.plugin] {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Drop cannot be async; a failure only leaves a NotReady node in a test cluster.
        let _ = self
            .local
            .kubectl()
            .args([
                "delete",
                "node",
                &self.node,
                "--wait=false",
                "--ignore-not-found",
            ])
            .arg("--request-timeout=20s")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
