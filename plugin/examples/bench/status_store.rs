//! `--status-store N,...`: the interLink `/status` path and the status
//! watch's full replay with N remote pods in the plugin's cache (issue 13:
//! 1,000 pods in one `/status` request in < 50 ms at 10,000 pods).
//!
//! The N remote pods are created straight through the remote apiserver (32
//! at a time), labelled and annotated as the plugin labels its own, with a
//! scheduler name no scheduler has: they stay Pending at no cost to the
//! scheduler, the kubelet or the other users of the test cluster. Their
//! namespace is deleted at the end.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::{Api, api::PostParams};
use offload_plugin::{
    PluginConfig,
    caller::Principal,
    naming::{NameKind, remote_name},
    start,
};
use offload_wire::keys;
use serde_json::{Value, json};

use super::{ms, percentile};

const INSTANCE: &str = "bench-status";

/// The pod as interLink sends it to `/status` (the whole local pod).
fn local_pod(ns: &str, node: &str, i: usize, uid: &str) -> Value {
    json!({
        "metadata": {"name": format!("s-{i}"), "namespace": ns, "uid": uid,
                     "labels": {"app": "bench", "run": format!("s-{i}")},
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x".repeat(300)}},
        "spec": {"nodeName": node, "restartPolicy": "Never",
                 "containers": [{"name": "c", "image": testbed::images::BUSYBOX,
                                 "command": ["sh", "-c", "sleep 3600"],
                                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
        "status": {"phase": "Pending"}
    })
}

/// The remote pod the plugin would have made of it.
fn remote_pod(local: &Value, remote_ns: &str, caller: &str) -> anyhow::Result<Pod> {
    let m = &local["metadata"];
    let (name, uid) = (
        m["name"].as_str().unwrap_or(""),
        m["uid"].as_str().unwrap_or(""),
    );
    Ok(serde_json::from_value(json!({
        "metadata": {
            "name": remote_name(NameKind::Pod, name, uid),
            "namespace": remote_ns,
            "labels": {
                keys::LABEL_MANAGED_BY: keys::MANAGED_BY_PLUGIN,
                keys::LABEL_SOURCE_POD_UID: uid,
                keys::LABEL_PLUGIN_INSTANCE: INSTANCE,
                keys::LABEL_CALLER: caller,
            },
            "annotations": {
                keys::ANNOTATION_SOURCE_UID: uid,
                keys::ANNOTATION_SOURCE_NAME: name,
                keys::ANNOTATION_SOURCE_NAMESPACE: m["namespace"],
            },
        },
        "spec": {
            // No scheduler has this name: Pending, and nobody works on it.
            "schedulerName": "offload-bench-no-scheduler",
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": local["spec"]["containers"],
        },
    }))?)
}

/// Resident memory of this process (plugin and bench together), in MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub async fn run(
    tb: &testbed::Testbed,
    client: kube::Client,
    sizes: &[usize],
) -> anyhow::Result<()> {
    let principal = Principal::of(&http::Request::new(()).into_parts().0);
    println!(
        "{:>6} | {:>10} | {:>13} | {:>13} | {:>13} | {:>12} | {:>9}",
        "pods",
        "created/s",
        "status 1k p50",
        "status 1k p99",
        "status 1k max",
        "watch replay",
        "RSS MiB"
    );
    for &n in sizes {
        let local_ns = testbed::namespace_name("bench-status")?;
        let remote_ns = format!("offloading-{local_ns}");
        // A virtual node (so a caller) of its own: pods of an earlier run
        // may still be terminating in the cache.
        let node = format!("node-{local_ns}");
        let caller = principal.caller(&node);
        let _guard = testbed::TestNamespace {
            name: remote_ns.clone(),
            cluster: tb.remote.clone(),
        };
        let locals: Vec<Value> = (0..n)
            .map(|i| local_pod(&local_ns, &node, i, &uuid::Uuid::new_v4().to_string()))
            .collect();
        let started = Instant::now();
        create_remote(tb, &client, &remote_ns, &locals, &caller).await?;
        let create_rate = n as f64 / started.elapsed().as_secs_f64();

        let mut config = PluginConfig::for_tests();
        config.instance = INSTANCE.into();
        let plugin = start(config, client.clone()).await?;
        if !plugin.wait_ready(Duration::from_secs(120)).await {
            bail!("plugin cache did not sync");
        }
        let base = format!("http://{}", plugin.addr());
        let http = reqwest::Client::new();
        let lat = status_latency(&http, &base, &locals[..n.min(1000)]).await?;
        let replay_time = replay(&http, &base, &node, n).await?;
        println!(
            "{:>6} | {:>10.1} | {:>13} | {:>13} | {:>13} | {:>12} | {:>9.1}",
            n,
            create_rate,
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            ms(*lat.last().unwrap_or(&Duration::ZERO)),
            ms(replay_time),
            rss_mib(),
        );
        plugin.shutdown().await;
    }
    Ok(())
}

/// Creates the remote namespace and the remote pods of `locals`, 32 at a time.
async fn create_remote(
    tb: &testbed::Testbed,
    client: &kube::Client,
    remote_ns: &str,
    locals: &[Value],
    caller: &str,
) -> anyhow::Result<()> {
    tb.remote
        .run_kubectl(&["create", "namespace", remote_ns])
        .await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), remote_ns);
    testbed::wait_for(
        "the default ServiceAccount",
        Duration::from_secs(60),
        // Before 1.24 pods are refused until its token Secret exists.
        || async {
            let sa = accounts.get_opt("default").await?;
            Ok(sa
                .filter(|a| a.secrets.as_ref().is_some_and(|s| !s.is_empty()))
                .map(|_| ()))
        },
    )
    .await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), remote_ns);
    let created: Vec<anyhow::Result<()>> = stream::iter(locals)
        .map(|l| {
            let api = api.clone();
            let pod = remote_pod(l, remote_ns, caller);
            async move {
                api.create(&PostParams::default(), &pod?).await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    created.into_iter().collect()
}

/// 30 `/status` requests naming all of `pods`, sorted latencies.
async fn status_latency(
    http: &reqwest::Client,
    base: &str,
    pods: &[Value],
) -> anyhow::Result<Vec<Duration>> {
    let body = serde_json::to_vec(pods)?;
    let mut lat = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let r = http
            .get(format!("{base}/status"))
            .body(body.clone())
            .send()
            .await?;
        let ok = r.status() == reqwest::StatusCode::OK;
        let answer = r.bytes().await?;
        lat.push(t.elapsed());
        let v: Vec<Value> = serde_json::from_slice(&answer)?;
        if !ok || v.len() != pods.len() || !v.iter().all(|s| s["JID"] != "") {
            bail!("status answered {} entries, ok {ok}", v.len());
        }
    }
    lat.sort();
    Ok(lat)
}

/// How long the watch's full replay of the `n` pods of `node` takes, until Synced.
async fn replay(
    http: &reqwest::Client,
    base: &str,
    node: &str,
    n: usize,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut replay = http
        .get(format!("{base}/status/watch?node={node}"))
        .send()
        .await?
        .bytes_stream();
    let (mut lines, mut tail) = (0usize, Vec::new());
    'read: while let Some(chunk) = replay.next().await {
        tail.extend_from_slice(&chunk?);
        while let Some(nl) = tail.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = tail.drain(..=nl).collect();
            lines += 1;
            if line.starts_with(b"{\"type\":\"synced\"") {
                break 'read;
            }
        }
    }
    if lines != n + 1 {
        bail!("replay of {n} pods had {lines} lines");
    }
    Ok(t.elapsed())
}
