//! Long partition, first half (the issue's "an outage must not delete
//! workloads"): the link between the provider and the plugin is cut by
//! stopping a TCP proxy between them for far longer than the offloaded pod
//! tolerates a `not-ready` / `unreachable` node, while the plugin itself keeps
//! running. The pod is neither evicted locally nor deleted remotely, the node
//! stays `Ready` with `PluginReachable=False` and the NoSchedule taint, a new
//! pod is not scheduled there, and everything resumes when the link is back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, Node, NodeCondition, Pod, Taint, Toleration, Volume,
};
use kube::api::{Api, DeleteParams, PostParams};
use offload_wire::keys::{CONDITION_PLUGIN_REACHABLE, TAINT_NO_SCHEDULE, TAINT_PLUGIN_UNREACHABLE};
use testbed::fixtures;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::common::*;

/// How long the link stays down: much longer than the pod's 5 s tolerations,
/// than the ping failure threshold and than a Lease renewal (10 s), and long
/// enough for dozens of status polls.
const PARTITION: Duration = Duration::from_secs(50);
const RUN: Duration = Duration::from_secs(300);

/// A TCP proxy to the plugin that can be cut (listener closed, open
/// connections dropped: connection refused, as a network partition with a
/// firewall answering RST) and restored on the same address.
struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    tasks: Option<JoinSet<()>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let mut p = Proxy {
            addr,
            upstream,
            tasks: None,
        };
        p.serve(listener);
        p
    }

    fn serve(&mut self, listener: TcpListener) {
        let upstream = self.upstream;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            // Each connection is a task of this accept loop's own set, so
            // aborting the loop drops them all.
            let mut conns = JoinSet::new();
            while let Ok((mut down, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn cut(&mut self) {
        if let Some(mut t) = self.tasks.take() {
            t.shutdown().await;
        }
    }

    async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind proxy");
        self.serve(listener);
    }
}

/// A pod bound to `node` (the scheduler is bypassed) tolerating the virtual
/// node's taint, and `not-ready` / `unreachable` NoExecute for 5 s only: the
/// testbed keeps Kubernetes' defaults (300 s, DefaultTolerationSeconds), and
/// these short tolerations make any eviction happen inside the test's
/// partition instead of five minutes later.
fn short_tolerations() -> Vec<Toleration> {
    let mut t = vec![Toleration {
        key: Some(TAINT_NO_SCHEDULE.into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }];
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        t.push(Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(5),
            ..Default::default()
        });
    }
    t
}

/// Counts seconds in a file of an emptyDir (so the count goes on across
/// restarts) and exits every 15 counts: the remote kubelet restarts it, so
/// the restart count moves while the link is down.
fn counter_pod(node: &str) -> Pod {
    let mut c = container(
        "counter",
        "n=$(cat /data/n 2>/dev/null || echo 0); while true; do n=$((n+1)); echo $n > /data/n; \
         echo count $n; if [ $((n % 15)) -eq 0 ]; then exit 1; fi; sleep 1; done",
    );
    c.volume_mounts = Some(vec![fixtures::mount("data", "/data")]);
    let mut p = fixtures::pod("counter")
        .node(node)
        .restart_policy("Always")
        .container(c)
        .volume(Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        })
        .build();
    if let Some(s) = p.spec.as_mut() {
        s.tolerations = Some(short_tolerations());
        s.termination_grace_period_seconds = Some(5);
    }
    p
}

/// A pod for the scheduler, aimed at `node` by hostname, tolerating only the
/// virtual node's own taint (not the outage taint).
fn scheduled_pod(node: &str) -> Pod {
    let mut p = fixtures::pod("newcomer")
        .restart_policy("Never")
        .container(container("main", "echo scheduled"))
        .build();
    if let Some(s) = p.spec.as_mut() {
        s.node_selector = Some([("kubernetes.io/hostname".to_string(), node.to_string())].into());
        s.tolerations = Some(short_tolerations());
    }
    p
}

fn condition(n: &Node, type_: &str) -> Option<NodeCondition> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

fn taints(n: &Node) -> Vec<Taint> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count)
}

/// The highest `count N` line of the pod's current log.
async fn last_count(env: &Env, ns: &str) -> Option<u64> {
    let (ok, out, _) = kubectl(env, ns, &["logs", "counter"]).await;
    ok.then(|| {
        out.lines()
            .filter_map(|l| l.strip_prefix("count ")?.trim().parse().ok())
            .max()
    })?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_partition_keeps_pods_taints_the_node_and_resumes() {
    let env = env().await;
    let mut plugin = Plugin::start(&env.remote).await;
    let upstream: SocketAddr = plugin
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("plugin addr");
    let mut proxy = Proxy::start(upstream).await;
    let node = node_name("vn-partition");
    let (ns, _cleanup, pods) = test_namespace(&env, "prov-partition", &[&node]).await;
    let mut config = provider_config(&env, &node, &plugin);
    config.plugin_url = proxy.url();
    let prov = start_provider(&env, config.clone()).await;
    let nodes = Api::<Node>::all(env.local.clone());
    // A taint of the user's own, which the outage taint must leave alone.
    let user_taint = Taint {
        key: "example.com/user-owned".into(),
        value: Some("kept".into()),
        effect: "PreferNoSchedule".into(),
        time_added: None,
    };
    wait_for("node Ready", Duration::from_secs(60), async || {
        let (s, r, _) = node_ready(&env.local, &node).await?;
        (s == "True" && r == "PluginReachable").then_some(())
    })
    .await;
    let (ok, _, err) = kubectl(
        &env,
        &ns,
        &[
            "taint",
            "node",
            &node,
            "example.com/user-owned=kept:PreferNoSchedule",
        ],
    )
    .await;
    assert!(ok, "kubectl taint: {err}");

    pods.create(&PostParams::default(), &counter_pod(&node))
        .await
        .expect("create counter");
    let running = wait_phase(&pods, "counter", "Running", RUN).await;
    let local_uid = uid(&running);
    let remote_uid = wait_for("remote pod", RUN, async || {
        let p = remote_pods(&env.remote, &local_uid).await;
        (p.len() == 1).then(|| p[0].metadata.uid.clone())?
    })
    .await;
    let count_before = wait_for("counter logs", RUN, async || last_count(&env, &ns).await).await;

    // The link goes down.
    proxy.cut().await;
    let cut_at = Instant::now();
    let restarts_at_cut = restarts(&pods.get("counter").await.expect("counter"));
    let down = wait_for(
        "PluginReachable=False",
        Duration::from_secs(30),
        async || {
            let n = nodes.get(&node).await.ok()?;
            let c = condition(&n, CONDITION_PLUGIN_REACHABLE)?;
            (c.status == "False").then_some(n)
        },
    )
    .await;
    let c = condition(&down, CONDITION_PLUGIN_REACHABLE).expect("condition");
    assert_eq!(c.reason.as_deref(), Some("PluginUnreachable"));
    assert!(
        c.message
            .as_deref()
            .is_some_and(|m| m.contains("plugin unreachable")),
        "the condition says what fails: {c:?}"
    );
    let down = wait_for("outage taint", Duration::from_secs(30), async || {
        let n = nodes.get(&node).await.ok()?;
        taints(&n)
            .iter()
            .any(|t| t.key == TAINT_PLUGIN_UNREACHABLE && t.effect == "NoSchedule")
            .then_some(n)
    })
    .await;
    let t = taints(&down);
    assert!(
        t.iter().any(|t| t.key == TAINT_NO_SCHEDULE),
        "interLink's taint kept: {t:?}"
    );
    assert!(
        t.iter()
            .any(|t| t.key == user_taint.key && t.value == user_taint.value),
        "the user's taint kept: {t:?}"
    );
    wait_for(
        "Warning event on the node",
        Duration::from_secs(30),
        async || {
            let e = events(&env.local, "default", &node, "PluginUnreachable").await;
            (!e.is_empty()).then_some(())
        },
    )
    .await;

    // A new pod is not scheduled on the tainted node.
    pods.create(&PostParams::default(), &scheduled_pod(&node))
        .await
        .expect("create newcomer");

    // The partition lasts: nothing is evicted, nothing deleted, the node stays Ready.
    while cut_at.elapsed() < PARTITION {
        let p = pods.get("counter").await.expect("counter is still there");
        assert!(
            p.metadata.deletion_timestamp.is_none(),
            "counter evicted after {:?}",
            cut_at.elapsed()
        );
        assert_eq!(phase(&p), "Running", "last known status kept");
        let n = nodes.get(&node).await.expect("node");
        let ready = condition(&n, "Ready").expect("Ready");
        assert_eq!(ready.status, "True", "Ready during the outage: {ready:?}");
        let t = taints(&n);
        assert!(
            !t.iter().any(|t| t.effect == "NoExecute"),
            "no NoExecute taint: {t:?}"
        );
        let remote = remote_pods(&env.remote, &local_uid).await;
        assert_eq!(remote.len(), 1, "remote pod kept");
        assert_eq!(
            remote[0].metadata.uid.as_deref(),
            Some(remote_uid.as_str()),
            "the same remote pod, not a new one"
        );
        let newcomer = pods.get("newcomer").await.expect("newcomer");
        assert!(
            newcomer
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_none(),
            "scheduled onto a tainted node"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let newcomer = pods.get("newcomer").await.expect("newcomer");
    assert_eq!(phase(&newcomer), "Pending");
    let unschedulable = newcomer
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        unschedulable.contains(TAINT_PLUGIN_UNREACHABLE),
        "the scheduler names the taint: {unschedulable}"
    );
    let remote_restarts = remote_pods(&env.remote, &local_uid)
        .await
        .first()
        .map_or(0, restarts);
    eprintln!("restarts at the cut {restarts_at_cut}, remotely now {remote_restarts}");
    assert!(
        remote_restarts > restarts_at_cut,
        "the remote container went on (and restarted) during the partition"
    );

    // The link returns: reachable, untainted, statuses and logs resume.
    proxy.restore().await;
    wait_for(
        "PluginReachable=True and the taint gone",
        Duration::from_secs(60),
        async || {
            let n = nodes.get(&node).await.ok()?;
            let up = condition(&n, CONDITION_PLUGIN_REACHABLE)?.status == "True";
            let t = taints(&n);
            (up && !t.iter().any(|t| t.key == TAINT_PLUGIN_UNREACHABLE)).then_some(t)
        },
    )
    .await;
    let t = taints(&nodes.get(&node).await.expect("node"));
    assert!(
        t.iter().any(|t| t.key == user_taint.key),
        "the user's taint kept: {t:?}"
    );
    wait_for(
        "Normal event on the node",
        Duration::from_secs(30),
        async || {
            let e = events(&env.local, "default", &node, "PluginReachable").await;
            (!e.is_empty()).then_some(())
        },
    )
    .await;
    let resumed = wait_for("restart count resumes", RUN, async || {
        // At least what the remote side had counted by the end of the cut.
        let local = pods.get("counter").await.ok()?;
        (restarts(&local) >= remote_restarts).then_some(local)
    })
    .await;
    assert_eq!(uid(&resumed), local_uid, "the same local pod");
    let count_after = wait_for("logs resume", RUN, async || {
        last_count(&env, &ns).await.filter(|c| *c > count_before)
    })
    .await;
    eprintln!("count before the cut {count_before}, after {count_after}");
    assert!(
        count_after >= count_before + 10,
        "the container counted on during the partition"
    );
    // The newcomer is scheduled once the taint is gone.
    wait_for("newcomer scheduled", Duration::from_secs(120), async || {
        let p = pods.get("newcomer").await.ok()?;
        (p.spec?.node_name.as_deref() == Some(node.as_str())).then_some(())
    })
    .await;

    for n in ["counter", "newcomer"] {
        pods.delete(n, &DeleteParams::default())
            .await
            .expect("delete");
    }
    for n in ["counter", "newcomer"] {
        wait_gone(&pods, n, Duration::from_secs(120)).await;
    }
    // A provider restart registers the node again: the user's taint stays.
    prov.shutdown().await;
    let prov = start_provider(&env, config).await;
    let t = wait_for(
        "registered again, Ready",
        Duration::from_secs(60),
        async || {
            let n = nodes.get(&node).await.ok()?;
            let ready = condition(&n, "Ready")?;
            (ready.status == "True" && ready.reason.as_deref() == Some("PluginReachable"))
                .then(|| taints(&n))
        },
    )
    .await;
    assert!(
        t.iter()
            .any(|t| t.key == user_taint.key && t.value == user_taint.value),
        "the user's taint survives a registration: {t:?}"
    );
    assert!(t.iter().any(|t| t.key == TAINT_NO_SCHEDULE), "{t:?}");
    prov.shutdown().await;
    proxy.cut().await;
    plugin.stop().await;
}
