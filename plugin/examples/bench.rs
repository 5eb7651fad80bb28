//! Benchmark of the plugin on the remote test cluster (a command, not a test).
//!
//! ```sh
//! bash testbed/scripts/testbed.sh up
//! CARGO_TARGET_DIR=target/plugin cargo run -p offload-plugin --example bench --release -- [--sizes 10,100,1000] [--cordon]
//! ```
//!
//! For 10, 100 and 1,000 pods it measures create throughput (16 concurrent
//! callers), `/status` latency the way the Virtual Kubelet polls (one pod per
//! request) and for one request naming every pod, and counts the HTTP
//! requests the plugin makes to the remote apiserver in each phase (a
//! counting layer under the plugin's kube client; the long-running watch
//! counts once). The pods never run: by default they carry a nodeSelector no
//! node has (so other users of the test cluster are not disturbed); with
//! `--cordon` the remote node is cordoned instead (and uncordoned after).
//!
//! `--status-store 1000,10000` measures instead the interLink `/status` path
//! (1,000 pods in one request) and the status watch's full replay with that
//! many remote pods in the plugin's cache (`bench/status_store.rs`).

#[path = "bench/status_store.rs"]
mod status_store;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{StreamExt, stream};
use offload_plugin::{PluginConfig, start};
use serde_json::{Value, json};

#[derive(Default)]
struct Calls {
    total: AtomicU64,
    by_kind: Mutex<BTreeMap<String, u64>>,
}

impl Calls {
    fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }
    fn take_kinds(&self) -> BTreeMap<String, u64> {
        self.by_kind
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

fn kind_of(req: &http::Request<kube::client::Body>) -> String {
    let path = req.uri().path();
    let resource = path
        .rsplit('/')
        .find(|s| {
            [
                "pods",
                "namespaces",
                "serviceaccounts",
                "configmaps",
                "secrets",
                "version",
            ]
            .contains(s)
        })
        .unwrap_or("other");
    let watch = req.uri().query().is_some_and(|q| q.contains("watch=true"));
    format!(
        "{} {}{}",
        req.method(),
        resource,
        if watch { " (watch)" } else { "" }
    )
}

async fn counting_client(
    cluster: &testbed::Cluster,
    calls: Arc<Calls>,
) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(&cluster.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        calls.total.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut m) = calls.by_kind.lock() {
            *m.entry(kind_of(&req)).or_default() += 1;
        }
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

fn pod_body(ns: &str, i: usize, uid: &str) -> Value {
    let spec = json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "c", "image": testbed::images::BUSYBOX, "command": ["sleep", "3600"]}],
    });
    json!({
        "pod": {"metadata": {"name": format!("bench-{i}"), "namespace": ns, "uid": uid}, "spec": spec, "status": {"phase": "Pending"}},
        "container": [{"name": "c", "configMaps": null, "projectedvolumemaps": null, "secrets": null, "emptyDirs": null}],
        "jobConfig": {}
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    testbed::install_crypto_provider();
    let args: Vec<String> = std::env::args().collect();
    let cordon = args.iter().any(|a| a == "--cordon");
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1000]);
    let tb = testbed::testbed().await?;
    let calls = Arc::new(Calls::default());
    let client = counting_client(&tb.remote, calls.clone()).await?;
    if let Some(sizes) = args
        .iter()
        .position(|a| a == "--status-store")
        .and_then(|i| args.get(i + 1))
    {
        let sizes: Vec<usize> = sizes
            .split(',')
            .filter_map(|x| x.trim().parse().ok())
            .collect();
        return status_store::run(tb, client, &sizes).await;
    }
    if cordon {
        tb.remote
            .run_kubectl(&["cordon", &tb.remote.node_name])
            .await?;
    }
    let result = run(tb, client, calls, &sizes, !cordon).await;
    if cordon {
        tb.remote
            .run_kubectl(&["uncordon", &tb.remote.node_name])
            .await
            .context("UNCORDON THE REMOTE NODE BY HAND")?;
    }
    result
}

async fn run(
    tb: &testbed::Testbed,
    client: kube::Client,
    calls: Arc<Calls>,
    sizes: &[usize],
    pin_nowhere: bool,
) -> anyhow::Result<()> {
    let mut config = PluginConfig::for_tests();
    if pin_nowhere {
        // The remote placement comes from the plugin's configuration.
        config.node_selector = offload_plugin::config::KeyValues(
            [("offload.bench/pool".to_string(), "nowhere".to_string())].into(),
        );
    }
    let plugin = start(config, client).await?;
    if !plugin.wait_ready(Duration::from_secs(60)).await {
        bail!("plugin cache did not sync");
    }
    let base = format!("http://{}", plugin.addr());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    println!(
        "remote node {} ({})",
        tb.remote.node_name,
        if pin_nowhere {
            "pods pinned to no node"
        } else {
            "node cordoned"
        }
    );
    println!(
        "{:>6} | {:>10} | {:>12} | {:>11} | {:>11} | {:>11} | {:>13} | {:>13} | {:>10}",
        "pods",
        "create/s",
        "calls/create",
        "status p50",
        "status p99",
        "status max",
        "status all-N",
        "calls/status",
        "delete/s"
    );
    for &n in sizes {
        let local_ns = testbed::namespace_name("bench")?;
        let remote_ns = format!("offloading-{local_ns}");
        let _guard = testbed::TestNamespace {
            name: remote_ns,
            cluster: tb.remote.clone(),
        };
        let bodies: Vec<Value> = (0..n)
            .map(|i| pod_body(&local_ns, i, &uuid::Uuid::new_v4().to_string()))
            .collect();

        // Create: 16 concurrent callers. The first create also makes the namespace.
        calls.take_kinds();
        let before = calls.total();
        let started = Instant::now();
        post_all(&http, &format!("{base}/create"), &bodies).await?;
        let create_secs = started.elapsed().as_secs_f64();
        let create_calls = calls.total() - before;
        let create_kinds = calls.take_kinds();

        // Let the watch cache catch up (status would report "not created" otherwise).
        testbed::wait_for(
            "cache to hold every pod",
            Duration::from_secs(120),
            || async {
                let r = http
                    .get(format!("{base}/metrics"))
                    .send()
                    .await?
                    .text()
                    .await?;
                let managed = r
                    .lines()
                    .find(|l| l.starts_with("offload_plugin_pods_managed "))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                Ok((managed >= n).then_some(()))
            },
        )
        .await?;

        // Status as the VK does it: one pod per request, sequentially.
        let pods: Vec<Value> = bodies.iter().map(|b| b["pod"].clone()).collect();
        let samples = n.clamp(200, 1000);
        let before = calls.total();
        let mut lat = Vec::with_capacity(samples);
        for i in 0..samples {
            let body = serde_json::to_vec(&[&pods[i % n]])?;
            let t = Instant::now();
            let r = http.get(format!("{base}/status")).body(body).send().await?;
            let ok = r.status() == reqwest::StatusCode::OK;
            let text = r.text().await?;
            lat.push(t.elapsed());
            if !ok || !text.contains("\"waiting\"") {
                bail!("status of a pending pod: {text}");
            }
        }
        lat.sort();
        // One request naming all N pods.
        let t = Instant::now();
        let r = http
            .get(format!("{base}/status"))
            .body(serde_json::to_vec(&pods)?)
            .send()
            .await?;
        let all: Vec<Value> = r.json().await?;
        let all_n = t.elapsed();
        if all.len() != n {
            bail!("status for {n} pods answered {}", all.len());
        }
        let status_calls = calls.total() - before;

        // Delete all (16 concurrent callers).
        let started = Instant::now();
        post_all(&http, &format!("{base}/delete"), &pods).await?;
        let delete_secs = started.elapsed().as_secs_f64();
        calls.take_kinds();

        println!(
            "{:>6} | {:>10.1} | {:>12.2} | {:>11} | {:>11} | {:>11} | {:>13} | {:>13} | {:>10.1}",
            n,
            n as f64 / create_secs,
            create_calls as f64 / n as f64,
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            ms(*lat.last().unwrap_or(&Duration::ZERO)),
            ms(all_n),
            format!("{status_calls} / {}", samples + 1),
            n as f64 / delete_secs,
        );
        println!("         remote calls during create: {create_kinds:?}");
    }
    plugin.shutdown().await;
    Ok(())
}

/// POSTs every item to `url`, 16 at a time (16 concurrent callers), and
/// fails on the first answer that is not 200.
async fn post_all(http: &reqwest::Client, url: &str, items: &[Value]) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = stream::iter(items)
        .map(|item| async move {
            let r = http.post(url).json(item).send().await?;
            if r.status() != reqwest::StatusCode::OK {
                bail!(
                    "{url}: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
            }
            Ok(())
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect()
}
