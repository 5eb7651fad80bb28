//! The streaming tests' harness: plugin, provider, namespace and pods;
//! kubectl of either version; the virtual node's open-stream gauge; `ps` in
//! the remote pod; `kubectl port-forward` on a free port.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kube::api::{Api, PostParams};
use offload_provider::provider::RunningProvider;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::common::*;

pub const RUN: Duration = Duration::from_secs(300);
/// The newer kubectl: WebSocket first for exec, attach and cp.
pub const NEW_KUBECTL: &str = "/usr/bin/kubectl";
pub const BIG: usize = 100 << 20;

/// Both kubectl binaries; the newer one must exist (a missing one fails).
pub fn kubectls() -> Vec<PathBuf> {
    let new = PathBuf::from(NEW_KUBECTL);
    assert!(new.is_file(), "{NEW_KUBECTL} (kubectl 1.32) is required");
    vec![testbed::kubectl_binary(), new]
}

pub struct Setup {
    pub env: Env,
    _plugin: Plugin,
    _provider: RunningProvider,
    pub node: String,
    pub ns: String,
    pub pods: Api<k8s_openapi::api::core::v1::Pod>,
    _cleanup: Cleanup,
}

/// Plugin, provider, a namespace, and `pods` (name, script) Running.
pub async fn setup(prefix: &str, pods_: &[(&str, &str)]) -> Setup {
    let env = env().await;
    let plugin = Plugin::start(&env.remote).await;
    let node = node_name(prefix);
    let provider = start_provider(&env, provider_config(&env, &node, &plugin)).await;
    let (ns, cleanup, pods) = test_namespace(&env, prefix, &[&node]).await;
    for (name, script) in pods_ {
        pods.create(
            &PostParams::default(),
            &pod(name, &node, "Never", None, container("main", script)),
        )
        .await
        .expect("create pod");
    }
    for (name, _) in pods_ {
        wait_phase(&pods, name, "Running", RUN).await;
    }
    Setup {
        env,
        _plugin: plugin,
        _provider: provider,
        node,
        ns,
        pods,
        _cleanup: cleanup,
    }
}

impl Setup {
    pub fn cmd(&self, bin: &Path) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(bin);
        c.env("KUBECONFIG", &self.env.tb.local.kubeconfig)
            .args(["-n", &self.ns])
            .kill_on_drop(true);
        c
    }

    /// kubectl `args` with `input` on stdin: (exit code, stdout, stderr).
    pub async fn run(
        &self,
        bin: &Path,
        args: &[&str],
        input: Option<&[u8]>,
    ) -> (i32, Vec<u8>, String) {
        let mut c = self.cmd(bin);
        c.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn kubectl");
        // stdin stays open until kubectl exits: a 1.20 remote apiserver
        // cannot carry its end to the remote process, and the plugin ends the
        // remote stream there (docs/troubleshooting.md).
        let mut stdin = child.stdin.take();
        if let (Some(data), Some(w)) = (input, stdin.as_mut()) {
            w.write_all(data).await.expect("write stdin");
            w.flush().await.expect("flush stdin");
        }
        let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
            .expect("kubectl output");
        drop(stdin);
        (
            out.status.code().unwrap_or(-1),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The open-stream gauge of `kind`, read as a user does: the virtual
    /// node's `/metrics` through the apiserver.
    pub async fn open_streams(&self, kind: &str) -> i64 {
        let path = format!("/api/v1/nodes/{}/proxy/metrics", self.node);
        let text = self
            .env
            .tb
            .local
            .run_kubectl(&["get", "--raw", &path])
            .await
            .expect("node metrics");
        let key = format!("offload_provider_kubelet_streams_open{{kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `ps` in the remote pod of local pod `name`.
    pub async fn remote_ps(&self, name: &str) -> String {
        let p = self.pods.get(name).await.expect("pod");
        let remote = remote_pods(&self.env.remote, &uid(&p)).await;
        let rp = remote.first().expect("the remote pod");
        let rns = rp.metadata.namespace.clone().expect("ns");
        let rname = rp.metadata.name.clone().expect("name");
        self.env
            .tb
            .remote
            .run_kubectl(&["-n", &rns, "exec", &rname, "--", "ps", "-o", "args"])
            .await
            .expect("remote ps")
    }
}

pub fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

/// busybox httpd on 8080: `/index.html` (`ok`), `/big` (100 MiB), and
/// `/cgi-bin/slow`, which answers after 3 s.
pub const HTTPD: &str = "mkdir -p /www/cgi-bin && echo ok > /www/index.html && \
     printf '#!/bin/sh\\nsleep 3\\necho Content-Type: text/plain\\necho\\necho slow\\n' \
       > /www/cgi-bin/slow && chmod +x /www/cgi-bin/slow && \
     head -c 104857600 /dev/urandom > /www/big && touch /www/ready && httpd -f -p 8080 -h /www";

/// `kubectl port-forward` on a free local port: the child and the port.
pub async fn port_forward(s: &Setup, bin: &Path, pod: &str) -> (tokio::process::Child, u16) {
    let mut c = s.cmd(bin);
    c.args(["port-forward", pod, ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = c.spawn().expect("port-forward");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("out")).lines();
    let port = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(l)) = lines.next_line().await {
            // "Forwarding from 127.0.0.1:40123 -> 8080"
            if let Some(rest) = l.strip_prefix("Forwarding from 127.0.0.1:") {
                return rest.split(' ').next().and_then(|p| p.parse().ok());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("kubectl port-forward listens");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}
