//! Scale benchmark (issue: scale): N pods on one virtual node kept Pending
//! remotely (they ask for more CPU than the remote cluster has, so the
//! remote kubelet is not what is measured), plus a subset that runs and
//! exits at one wall-clock second (100 state changes within about a second).
//!
//! Per N it prints: create throughput (local create -> remote pod exists),
//! status lag p50/p99 (remote transition -> local status, both seen through
//! watches by this process), idle bytes/s and requests/s between provider
//! and plugin (a counting proxy sits between them; requests from the
//! provider's metrics), idle CPU s/min and RSS of both (the provider binary
//! and the plugin are child processes), apiserver requests/s on both sides
//! (client-side counts: the provider's `offload_provider_kube_requests_total`,
//! the plugin's client in the child), and delete throughput.
//!
//! `cargo bench -p offload-provider --bench scale -- --counts 1000`
//! (`--provider-bin` runs another provider build, e.g. the one before this
//! benchmark existed; `--provider-arg=--status-watch=false` polls instead.)

mod observe;
mod procs;
mod round;

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams};

#[derive(Parser, Debug)]
struct Args {
    /// Pods kept Pending per round (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1000usize])]
    counts: Vec<usize>,
    /// Pods that run and exit at one moment, per round.
    #[arg(long, default_value_t = 100)]
    changing: usize,
    /// Seconds after the round starts at which the changing pods exit
    /// (enough for the remote node to start them all).
    #[arg(long, default_value_t = 150)]
    exit_after: u64,
    /// Seconds of the idle measure.
    #[arg(long, default_value_t = 60)]
    idle: u64,
    /// Give up a phase after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Provider binary (default: this build's).
    #[arg(long)]
    provider_bin: Option<String>,
    /// Extra provider flag (repeatable), e.g. `--provider-arg=--status-watch=false`.
    #[arg(long, allow_hyphen_values = true)]
    provider_arg: Vec<String>,
    /// Extra plugin flag (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    plugin_arg: Vec<String>,
    /// Internal: run as the plugin child.
    #[arg(long, hide = true)]
    plugin_child: bool,
    #[arg(long, hide = true, default_value = "")]
    remote_kubeconfig: String,
    #[arg(long, hide = true)]
    bench: bool,
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// After an interruption: the rounds' namespaces on both sides (pods with
/// grace 0: the provider is stopped next).
async fn remove_rounds(local: &kube::Client, remote: &kube::Client, node: &str) {
    let sel = ListParams::default().labels(&format!("{}={node}", round::RUN_LABEL));
    let Ok(list) = Api::<Namespace>::all(local.clone()).list(&sel).await else {
        eprintln!(
            "cannot list the bench namespaces; delete those labelled {}={node}",
            round::RUN_LABEL
        );
        return;
    };
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    for ns in list.items {
        let name = ns.metadata.name.unwrap_or_default();
        eprintln!("interrupted: removing namespace {name}");
        let _ = Api::<Pod>::namespaced(local.clone(), &name)
            .delete_collection(&force, &ListParams::default())
            .await;
        let _ = Api::<Namespace>::all(local.clone())
            .delete(&name, &DeleteParams::default())
            .await;
        let remote_ns =
            offload_plugin::naming::NamespaceMapper::new("offloading", vec![]).remote(&name);
        let _ = Api::<Namespace>::all(remote.clone())
            .delete(&remote_ns, &DeleteParams::default())
            .await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if args.plugin_child {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .with_writer(std::io::stderr)
            .try_init();
        return procs::plugin_child_main(&args.remote_kubeconfig, &args.plugin_arg).await;
    }
    let tb = testbed::testbed().await?;
    let local = tb.local.client().await?;
    let remote = tb.remote.client().await?;
    let remote_kubeconfig = tb.remote.kubeconfig.display().to_string();
    let plugin = procs::PluginChild::spawn(&remote_kubeconfig, &args.plugin_arg).await?;
    let proxy = procs::CountingProxy::start(plugin.addr).await?;
    let node = format!("scale-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let admin_port = procs::free_port()?;
    let bin = args
        .provider_bin
        .clone()
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_offload-provider").to_string());
    let mut provider = tokio::process::Command::new(&bin)
        .args([
            "--node-name",
            &node,
            "--plugin-url",
            &format!("http://{}", proxy.addr),
        ])
        .args(["--node-ip", &tb.local.node_ip.to_string()])
        .args(["--kubelet-addr", "0.0.0.0:0"])
        .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
        .args(&args.provider_arg)
        .env("KUBECONFIG", &tb.local.kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("PROVIDER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .kill_on_drop(true)
        .spawn()
        .context("spawn provider")?;
    let provider_pid = provider.id().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "provider={bin} args={:?} plugin_args={:?} provider_pid={provider_pid} plugin_pid={}",
        args.provider_arg,
        args.plugin_arg,
        plugin.pid()
    );
    let setup = round::Setup {
        local: local.clone(),
        remote: remote.clone(),
        node: node.clone(),
        image: testbed::images::BUSYBOX.into(),
        provider_pid,
        admin: ([127, 0, 0, 1], admin_port).into(),
        plugin: &plugin,
        proxy: &proxy,
        changing: args.changing,
        exit_after: Duration::from_secs(args.exit_after),
        idle: Duration::from_secs(args.idle),
        timeout: Duration::from_secs(args.timeout),
    };
    let rounds = async {
        for n in args.counts.clone() {
            round::round(&setup, n).await?;
        }
        anyhow::Ok(())
    };
    let result = tokio::select! {
        r = rounds => r,
        _ = stop_signal() => {
            remove_rounds(&local, &remote, &node).await;
            Err(anyhow::anyhow!("interrupted"))
        }
    };
    let _ = provider.kill().await;
    let _ = Api::<Node>::all(local.clone())
        .delete(&node, &DeleteParams::default())
        .await;
    result
}
