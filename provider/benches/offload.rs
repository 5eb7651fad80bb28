//! Offload benchmark: time from "pod bound to the virtual node" to "Running
//! reflected in the local cluster" (p50/p99), total time for a batch, and the
//! provider's RSS.
//!
//! Two setups:
//! - `--fake-plugin`: spawns the provider binary against an in-memory plugin
//!   (measures the provider and the local apiserver alone);
//! - otherwise: uses an already running provider (`--node`, `--provider-pid`)
//!   with whatever plugin/remote cluster it is configured for.
//!
//! `cargo bench -p offload-provider --bench offload -- --kubeconfig <local> --count 100 --fake-plugin`

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use testbed::fixtures;

#[derive(Parser, Debug)]
struct Args {
    /// Kubeconfig of the local cluster (taken from the testbed with --testbed).
    #[arg(long, env = "OFFLOAD_LOCAL_KUBECONFIG", default_value = "")]
    kubeconfig: String,
    /// Pods per round (repeatable: --count 100 --count 300).
    #[arg(long, default_values_t = vec![100usize])]
    count: Vec<usize>,
    /// Virtual node name (of a running provider; generated with --fake-plugin).
    #[arg(long, default_value = "virtual-node")]
    node: String,
    /// PID of the running provider, for its RSS.
    #[arg(long)]
    provider_pid: Option<u32>,
    /// Run the provider binary against an in-memory plugin.
    #[arg(long)]
    fake_plugin: bool,
    /// Use the two test clusters (testbed) and the real plugin (in-process,
    /// against the remote cluster); the provider binary runs as a subprocess.
    #[arg(long, conflicts_with = "fake_plugin")]
    testbed: bool,
    /// Provider binary to run with --fake-plugin/--testbed (default: this
    /// build's), e.g. an older build for before/after figures.
    #[arg(long)]
    provider_bin: Option<String>,
    /// Image of the pods.
    #[arg(long, default_value = "localhost/busybox:local")]
    image: String,
    /// Give up a round after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    #[arg(long, hide = true)]
    bench: bool,
}

fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((get("VmRSS:")?, get("VmHWM:")?))
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn bench_pod(name: &str, node: &str, image: &str) -> Pod {
    fixtures::pod(name)
        .label("bench", "offload")
        .node(node)
        .restart_policy("Never")
        .container(Container {
            image: Some(image.into()),
            command: Some(vec!["sleep".into(), "3600".into()]),
            ..fixtures::container("main")
        })
        .tolerate_all()
        .build()
}

async fn round(
    client: &kube::Client,
    args: &Args,
    node: &str,
    n: usize,
    pid: Option<u32>,
) -> anyhow::Result<()> {
    let ns = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    labels: Some(BTreeMap::from([(RUN_LABEL.to_string(), node.to_string())])),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // Watch first so no transition is missed.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watch_api = pods.clone();
    let w = tokio::spawn(async move {
        let mut s = std::pin::pin!(
            watcher(watch_api, watcher::Config::default())
                .applied_objects()
                .default_backoff()
        );
        while let Some(Ok(p)) = s.next().await {
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                let _ = tx.send((p.metadata.name.clone().unwrap_or_default(), Instant::now()));
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    let mut bound: BTreeMap<String, Instant> = BTreeMap::new();
    let names: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
    let creates = futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let pods = pods.clone();
            let p = bench_pod(&name, node, &args.image);
            async move {
                for _ in 0..50 {
                    match pods.create(&PostParams::default(), &p).await {
                        Ok(_) => return Ok((name, Instant::now())),
                        Err(kube::Error::Api(e))
                            if (e.message.contains("serviceaccount")
                                || e.message.contains("service account")) =>
                        {
                            tokio::time::sleep(Duration::from_millis(200)).await
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok((name, Instant::now()))
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    for c in creates {
        let (name, at) = c?;
        bound.insert(name, at);
    }
    let created_in = t0.elapsed();
    let mut running: BTreeMap<String, Instant> = BTreeMap::new();
    let mut failure = None;
    let mut peak = rss_kib(pid.unwrap_or(0)).map(|r| r.0).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    while running.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            failure = Some(format!(
                "only {} of {n} pods Running after {}s",
                running.len(),
                args.timeout
            ));
            break;
        }
        if let Ok(Some((name, at))) =
            tokio::time::timeout(left.min(Duration::from_secs(1)), rx.recv()).await
        {
            running.entry(name).or_insert(at);
        }
        if let Some(p) = pid {
            peak = peak.max(rss_kib(p).map(|r| r.0).unwrap_or(0));
        }
    }
    let total = t0.elapsed();
    let mut lat: Vec<Duration> = running
        .iter()
        .filter_map(|(n, at)| Some(at.saturating_duration_since(*bound.get(n)?)))
        .collect();
    lat.sort();
    let rss = pid.and_then(rss_kib);
    println!(
        "pods={n} created_in={:.2}s all_running_in={:.2}s bound->Running p50={:.0}ms p99={:.0}ms max={:.0}ms provider_rss={} provider_rss_peak_in_round={} provider_hwm={}",
        created_in.as_secs_f64(),
        total.as_secs_f64(),
        pct(&lat, 0.5).as_secs_f64() * 1000.0,
        pct(&lat, 0.99).as_secs_f64() * 1000.0,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        rss.map(|r| format!("{}MiB", r.0 / 1024))
            .unwrap_or("-".into()),
        if pid.is_some() {
            format!("{}MiB", peak / 1024)
        } else {
            "-".into()
        },
        rss.map(|r| format!("{}MiB", r.1 / 1024))
            .unwrap_or("-".into()),
    );
    w.abort();
    // Clean up: delete the pods and wait until the provider removed them.
    let t1 = Instant::now();
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    while !pods.list(&ListParams::default()).await?.items.is_empty() {
        if t1.elapsed() > Duration::from_secs(args.timeout) {
            bail!("pods not deleted after {}s", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("pods={n} all_deleted_in={:.2}s", t1.elapsed().as_secs_f64());
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
    match failure {
        Some(f) => bail!(f),
        None => Ok(()),
    }
}

/// Label on each round's namespace: the bench's node, to clean up after an interruption.
const RUN_LABEL: &str = "offload.bench/node";

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

/// After an interruption: the round's pods (grace 0, the provider is stopped
/// next), its namespace and, with `--testbed`, the remote namespace the plugin
/// made for it, so a half-done round does not keep the remote node full.
async fn remove_interrupted_rounds(
    client: &kube::Client,
    remote: Option<&kube::Client>,
    node: &str,
) {
    let Ok(list) = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{RUN_LABEL}={node}")))
        .await
    else {
        eprintln!(
            "cannot list the bench namespaces; delete namespaces labelled {RUN_LABEL}={node} by hand"
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
        let _ = Api::<Pod>::namespaced(client.clone(), &name)
            .delete_collection(&force, &ListParams::default())
            .await;
        let _ = Api::<Namespace>::all(client.clone())
            .delete(&name, &DeleteParams::default())
            .await;
        if let Some(r) = remote {
            let remote_ns =
                offload_plugin::naming::NamespaceMapper::new("offloading", vec![]).remote(&name);
            let _ = Api::<Namespace>::all(r.clone())
                .delete(&remote_ns, &DeleteParams::default())
                .await;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = Args::parse();
    let mut _plugin = None;
    let mut plugin_url = None;
    let mut remote_client = None;
    let mut node_ip = "127.0.0.1".to_string();
    if args.testbed {
        let tb = testbed::testbed().await?;
        args.kubeconfig = tb.local.kubeconfig.display().to_string();
        if args.image == "localhost/busybox:local" {
            args.image = testbed::images::BUSYBOX.into();
        }
        node_ip = tb.local.node_ip.to_string();
        let remote = tb.remote.client().await?;
        remote_client = Some(remote.clone());
        let p = offload_plugin::start(offload_plugin::PluginConfig::for_tests(), remote).await?;
        p.wait_ready(Duration::from_secs(60)).await;
        plugin_url = Some(format!("http://{}", p.addr()));
        _plugin = Some(p);
    }
    let kc = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(cfg)?;
    let mut child = None;
    let mut _fake_handle = None;
    let (node, pid) = if args.fake_plugin || args.testbed {
        let addr = match plugin_url.clone() {
            Some(u) => u,
            None => {
                let fake = support::FakePlugin::default();
                let (addr, h) = fake.serve("127.0.0.1:0".parse()?).await;
                _fake_handle = Some((fake, h));
                format!("http://{addr}")
            }
        };
        let node = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let bin = args
            .provider_bin
            .clone()
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_offload-provider").to_string());
        let c = std::process::Command::new(bin)
            .args([
                "--node-name",
                &node,
                "--plugin-url",
                &addr,
                "--node-ip",
                &node_ip,
            ])
            .args(["--kubelet-addr", "0.0.0.0:0", "--admin-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", &args.kubeconfig)
            .env("RUST_LOG", "warn")
            .spawn()
            .context("spawn provider")?;
        let pid = c.id();
        child = Some(c);
        tokio::time::sleep(Duration::from_secs(2)).await;
        (node, Some(pid))
    } else {
        (args.node.clone(), args.provider_pid)
    };
    if let Some(p) = pid {
        println!(
            "provider pid={p} idle_rss={}MiB",
            rss_kib(p).map(|r| r.0 / 1024).unwrap_or(0)
        );
    }
    let rounds = async {
        for n in args.count.clone() {
            round(&client, &args, &node, n, pid).await?;
        }
        anyhow::Ok(())
    };
    let result = tokio::select! {
        r = rounds => r,
        _ = stop_signal() => {
            remove_interrupted_rounds(&client, remote_client.as_ref(), &node).await;
            Err(anyhow::anyhow!("interrupted"))
        }
    };
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
        let _ = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
            .delete(&node, &DeleteParams::default())
            .await;
    }
    result
}
