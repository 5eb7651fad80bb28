//! `/stats/summary` and `/metrics/resource` of the virtual node on the two
//! real clusters, through the real plugin: what `kubectl get --raw
//! /api/v1/nodes/<virtual node>/proxy/...` shows of a busy offloaded pod
//! (its CPU rising, its memory as the remote kubelet reports it), the
//! kubelet's authorization (`nodes/stats`, `nodes/metrics`), and a plugin
//! without the extension (empty figures, not an error).

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use offload_wire::stats::{PodStats, Summary};

const RUN: Duration = Duration::from_secs(300);

/// `kubectl get --raw` on the local cluster.
async fn raw(env: &Env, path: &str) -> String {
    let (ok, out, err) = kubectl(env, "default", &["get", "--raw", path]).await;
    assert!(ok, "kubectl get --raw {path}: {err}");
    out
}

async fn summary(env: &Env, node: &str) -> Summary {
    let out = raw(env, &format!("/api/v1/nodes/{node}/proxy/stats/summary")).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("summary {e}: {out}"))
}

fn pod_of<'a>(s: &'a Summary, ns: &str, name: &str) -> Option<&'a PodStats> {
    s.pods
        .iter()
        .find(|p| p.pod_ref.namespace == ns && p.pod_ref.name == name)
}

fn cpu_ns(p: &PodStats, container: &str) -> Option<u64> {
    let c = p.containers.iter().find(|c| c.name == container)?;
    c.cpu.as_ref()?.usage_core_nano_seconds
}

/// The value of the one sample of `metric` whose labels are `labels` in a
/// Prometheus text, with its timestamp.
fn sample(text: &str, metric: &str, labels: &str) -> Option<(f64, i64)> {
    let head = format!("{metric}{labels} ");
    let line = text.lines().find(|l| l.starts_with(&head))?;
    let mut rest = line[head.len()..].split(' ');
    let v = rest.next()?.parse().ok()?;
    let ts = rest.next()?.parse().ok()?;
    Some((v, ts))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pods_cpu_rises_and_its_memory_is_the_remote_kubelets() {
    let env = env().await;
    let mut plugin = Plugin::start(&env.remote).await;
    let node = node_name("vn-stats");
    let prov = start_provider(&env, provider_config(&env, &node, &plugin)).await;
    let (ns, _cleanup, pods) = test_namespace(&env, "prov-stats", &[&node]).await;
    let busy: Pod = pod(
        "busy",
        &node,
        "Never",
        None,
        container("main", "while :; do :; done"),
    );
    pods.create(&PostParams::default(), &busy)
        .await
        .expect("create busy");
    let local = wait_phase(&pods, "busy", "Running", RUN).await;

    // The remote kubelet needs a housekeeping round before it has figures.
    let first = wait_for("busy's CPU in the summary", RUN, async || {
        let s = summary(&env, &node).await;
        let p = pod_of(&s, &ns, "busy")?;
        cpu_ns(p, "main").filter(|n| *n > 0).map(|_| s.clone())
    })
    .await;
    let p1 = pod_of(&first, &ns, "busy").expect("busy");
    assert_eq!(p1.pod_ref.uid, uid(&local), "podRef names the local pod");
    assert_eq!(first.node.node_name, node);
    let c1 = cpu_ns(p1, "main").expect("cpu");
    let node_cpu = first
        .node
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds);
    assert!(
        node_cpu >= Some(c1),
        "the node sums its pods: {node_cpu:?} < {c1}"
    );
    // Rising: a spinning shell uses about one core.
    let second = wait_for("busy's CPU rising", Duration::from_secs(90), async || {
        let s = summary(&env, &node).await;
        let c = cpu_ns(pod_of(&s, &ns, "busy")?, "main")?;
        (c > c1 + 1_000_000_000).then_some(c)
    })
    .await;
    assert!(second > c1);

    // Memory as the remote kubelet reports it: same measurement, same bytes.
    let remote = remote_pods(&env.remote, &uid(&local)).await;
    let rp = remote.first().expect("remote pod");
    let (rns, rname) = (
        rp.metadata.namespace.clone().expect("ns"),
        rp.metadata.name.clone().expect("name"),
    );
    let rnode = rp
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .expect("remote node");
    let (ours, theirs) = wait_for("one memory measurement read both ways", RUN, async || {
        let req = http::Request::get(format!("/api/v1/nodes/{rnode}/proxy/stats/summary"))
            .body(Vec::new())
            .ok()?;
        let direct: Summary = env.remote.request(req).await.ok()?;
        let theirs = pod_of(&direct, &rns, &rname)?
            .containers
            .first()?
            .memory
            .clone()?;
        let s = summary(&env, &node).await;
        let ours = pod_of(&s, &ns, "busy")?
            .containers
            .first()?
            .memory
            .clone()?;
        (ours.time == theirs.time).then_some((ours, theirs))
    })
    .await;
    assert!(ours.working_set_bytes.is_some_and(|b| b > 0));
    assert_eq!(ours.working_set_bytes, theirs.working_set_bytes);
    assert_eq!(ours.usage_bytes, theirs.usage_bytes);
    assert_eq!(ours.rss_bytes, theirs.rss_bytes);

    // The same figures in the kubelet's Prometheus text.
    let labels = format!("{{container=\"main\",namespace=\"{ns}\",pod=\"busy\"}}");
    let path = format!("/api/v1/nodes/{node}/proxy/metrics/resource");
    let text = raw(&env, &path).await;
    let (cpu1, ts1) = sample(&text, "container_cpu_usage_seconds_total", &labels)
        .unwrap_or_else(|| panic!("container cpu in {text}"));
    let (mem, _) = sample(&text, "container_memory_working_set_bytes", &labels)
        .unwrap_or_else(|| panic!("container memory in {text}"));
    assert!(mem > 0.0, "{text}");
    assert!(text.contains("\nscrape_error 0\n"), "{text}");
    assert!(
        text.contains("# TYPE node_cpu_usage_seconds_total counter\n"),
        "{text}"
    );
    let pod_labels = format!("{{namespace=\"{ns}\",pod=\"busy\"}}");
    assert!(
        sample(&text, "pod_cpu_usage_seconds_total", &pod_labels).is_some(),
        "{text}"
    );
    let (cpu2, ts2) = wait_for(
        "cpu rising in /metrics/resource",
        Duration::from_secs(90),
        async || {
            let text = raw(&env, &path).await;
            sample(&text, "container_cpu_usage_seconds_total", &labels)
                .filter(|(v, _)| *v > cpu1 + 1.0)
        },
    )
    .await;
    assert!(cpu2 > cpu1 && ts2 > ts1, "{cpu1}@{ts1} -> {cpu2}@{ts2}");

    delete_all_pods(&pods, RUN).await;
    prov.shutdown().await;
    plugin.stop().await;
}
