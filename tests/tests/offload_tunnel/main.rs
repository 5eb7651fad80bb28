//! The whole thing on the two testbed clusters: what the README's demo does.
//!
//! The provider (in-process, `offload_provider::provider::start`) runs the
//! virtual node in the local cluster with the tunnel on (gateway-manager: an
//! OpenSSH gateway pod, its NodePort on the local node's IP, port allocation,
//! tunnel Services); the plugin (in-process, `offload_plugin::start`) runs
//! against the remote cluster and installs the bastion there. Nothing is
//! wired by hand: the provider fetches the bastion's public key from the
//! plugin, the plugin copies the tunnel annotations onto the remote pods, the
//! bastion forwards them.
//!
//! A user creates a `busybox httpd` pod with `containerPort: 8080` that the
//! scheduler binds to the virtual node; a client pod in the local cluster
//! fetches its page through the Service `<pod>-tunnel`; the time from "pod
//! created" to "page served" is printed. The provider is restarted: the
//! allocation comes back from the cluster, the gateway pod is not restarted
//! and the page is still served. Then a 2-replica workload (annotation
//! `interlink.io/tunnel-service: app`) is reached through its stable
//! Service. Deleting the pods removes the Services locally and the pods
//! remotely.
//!
//! A second test fills a one-port range: the pod that finds it full gets a
//! `TunnelPortsExhausted` Warning event and a waiting status, and is
//! offloaded as soon as a port comes back (a delete, or a pod that finished).
//!
//! The steps of the first test are in `served.rs`, those of the second in
//! `full_range.rs`. `forged.rs` plays the attacker who forges tunnel
//! annotations or names a foreign Service (issue 11).
//!
//! Needs the images (`deploy/images/prepare-test-images.sh`), imported into
//! both clusters by the test. Run:
//! `cargo test -p offload-e2e --test offload_tunnel -- --nocapture`.

mod forged;
mod full_range;
mod served;

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use kube::api::DeleteParams;
use kube::{Api, Client};
use offload_e2e::tunnel::{
    BASTION_IMAGE, GATEWAY_IMAGE, HTTP_PORT, HTTPD, free_node_port, start_scenario,
};
use offload_e2e::{init_tracing, phase};
use offload_plugin::PluginConfig;
use offload_provider::config::Config;
use offload_provider::provider::start;
use offload_provider::tunnel::CONDITION_TUNNEL_UP;
use offload_wire::keys;
use offload_wire::tunnel::TunnelAnnotations;

/// Generous: the testbed is shared, and remote containers start slowly under load.
const POD_START: Duration = Duration::from_secs(300);
/// The gateway port range of the test that fills it: one port.
const ONLY_PORT: u16 = 40200;

/// What a user writes: an httpd on 8080, sent to the virtual node by
/// nodeSelector and toleration (the scheduler binds it).
fn web_pod(name: &str, node: &str, workload: Option<&str>) -> anyhow::Result<Pod> {
    let annotations = match workload {
        Some(w) => serde_json::json!({ (keys::tunnel::SERVICE): w }),
        None => serde_json::json!({}),
    };
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": name }, "annotations": annotations },
        "spec": {
            "nodeSelector": { "kubernetes.io/hostname": node },
            "tolerations": [{ "key": keys::TAINT_NO_SCHEDULE, "operator": "Exists", "effect": "NoSchedule" }],
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "web",
                "image": testbed::images::BUSYBOX,
                "imagePullPolicy": "IfNotPresent",
                // `$$` is Kubernetes' escape for `$`.
                "command": ["sh", "-c", HTTPD.replace('$', "$$")],
                "ports": [{ "containerPort": HTTP_PORT, "protocol": "TCP" }],
            }],
        },
    }))?)
}

/// The pod running `script` once instead of the httpd (it still declares
/// the port, so it still holds a gateway port while it runs).
fn short_lived(mut pod: Pod, script: &str) -> Pod {
    if let Some(spec) = pod.spec.as_mut() {
        spec.restart_policy = Some("Never".into());
        if let Some(c) = spec.containers.first_mut() {
            c.command = Some(vec!["sh".into(), "-c".into(), script.into()]);
        }
    }
    pod
}

fn tunnel_up(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == CONDITION_TUNNEL_UP && c.status == "True")
        })
}

fn tunnel_of(p: &Pod) -> anyhow::Result<TunnelAnnotations> {
    TunnelAnnotations::from_map(&p.metadata.annotations.clone().unwrap_or_default())?
        .context("the pod has no tunnel annotations")
}

/// The provider offloaded the pod (it carries the remote job id).
fn is_offloaded(p: &Pod) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(keys::ANNOTATION_JOB_ID))
}

/// Waits until pod `name` is offloaded; returns it.
async fn wait_offloaded(
    pods: &Api<Pod>,
    name: &str,
    what: &str,
    timeout: Duration,
) -> anyhow::Result<Pod> {
    testbed::wait_for(what, timeout, || async {
        let p = pods.get(name).await?;
        Ok(is_offloaded(&p).then_some(p))
    })
    .await
}

/// Waits until the first container of pod `name` waits for a gateway port; returns
/// the reason.
async fn wait_for_port(pods: &Api<Pod>, name: &str, what: &str) -> anyhow::Result<String> {
    testbed::wait_for(what, Duration::from_secs(30), || async {
        let p = pods.get(name).await?;
        let reason = p
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.into_iter().next())
            .and_then(|c| c.state?.waiting?.reason);
        Ok(reason.filter(|r| r == "TunnelPortsExhausted"))
    })
    .await
}

/// When a pod was first seen Running locally and when its tunnel condition
/// first turned True, measured from `created`.
#[derive(Debug, Default, Clone, Copy)]
struct Milestones {
    running: Option<Duration>,
    tunnel_up: Option<Duration>,
}

/// Poll the local pod every 100 ms in the background.
fn watch_milestones(
    pods: Api<Pod>,
    name: String,
    created: Instant,
) -> tokio::task::JoinHandle<Milestones> {
    tokio::spawn(async move {
        let mut m = Milestones::default();
        while created.elapsed() < POD_START && (m.running.is_none() || m.tunnel_up.is_none()) {
            if let Ok(p) = pods.get(&name).await {
                if m.running.is_none() && phase(&p) == "Running" {
                    m.running = Some(created.elapsed());
                }
                if m.tunnel_up.is_none() && tunnel_up(&p) {
                    m.tunnel_up = Some(created.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        m
    })
}

/// Best effort, after a test: the virtual node the provider registered and the remote
/// namespace the plugin mapped the test namespace to (the plugin never deletes the
/// namespaces it maps to; the tests do).
async fn remove_node_and_remote_namespace(local: &Client, remote: &Client, node: &str, rns: &str) {
    let _ = Api::<Node>::all(local.clone())
        .delete(node, &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(remote.clone())
        .delete(rns, &DeleteParams::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offloaded_pods_are_served_locally_through_the_tunnel() -> anyhow::Result<()> {
    init_tracing("warn,offload_provider::tunnel=info,offload_plugin::bastion=info");
    let (tb, local, remote, lns) = start_scenario("otun").await?;
    let bns = tb.remote.test_namespace("otun-bastion").await?;

    // Remote: the plugin, keeping the bastion in `bns`, forwarding the pods of
    // this test's remote namespace only (other tests run bastions too).
    let mut pcfg = PluginConfig::for_tests();
    let rns = pcfg.namespaces().remote(&lns.name);
    pcfg.no_bastion = false;
    pcfg.bastion_image = BASTION_IMAGE.into();
    pcfg.bastion_namespace = Some(bns.name.clone());
    pcfg.bastion_watch_namespace = Some(rns.clone());
    pcfg.bastion_resync_interval = Duration::from_secs(10);
    let bastion_spec = pcfg.bastion_spec().context("bastion on")?;
    let plugin = offload_plugin::start(pcfg, remote.clone()).await?;
    ensure!(
        plugin.wait_ready(Duration::from_secs(60)).await,
        "plugin cache synced"
    );
    let plugin_url = format!("http://{}", plugin.addr());

    // Local: the provider with the gateway.
    let node_port = free_node_port(tb, &local, Some(30222), 20).await?;
    let node = format!("vn-otun-{}", lns.name.rsplit('-').next().unwrap_or("x"));
    let cfg = served::provider_config(tb, &node, &plugin_url, &lns.name, node_port)?;
    let prov = start(cfg.clone(), local.clone(), tb.local.node_ip).await?;

    let env = served::Env {
        tb,
        local: local.clone(),
        remote: remote.clone(),
        lns: lns.name.clone(),
        rns: rns.clone(),
        node: node.clone(),
    };
    let result = served::scenario(&env, prov, cfg, &plugin_url, &bns.name).await;
    if result.is_err() {
        env.diagnose(&bns.name).await;
    }
    plugin.shutdown().await;
    let uninstalled = offload_bastion::install::uninstall(&remote, &bastion_spec).await;
    remove_node_and_remote_namespace(&local, &remote, &node, &rns).await;
    result?;
    uninstalled?;
    drop((lns, bns));
    Ok(())
}

/// A full gateway port range is a Warning event and a waiting status on the
/// pod that finds it full, not a hang: the pod is offloaded as soon as a port
/// is released, by a delete or by a pod that finished. (No bastion and no
/// NodePort here: only allocation matters.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_port_range_is_an_event_and_the_pod_waits_for_a_port() -> anyhow::Result<()> {
    let (tb, local, remote, lns) = start_scenario("otun-full").await?;
    let pcfg = PluginConfig::for_tests();
    let rns = pcfg.namespaces().remote(&lns.name);
    let plugin = offload_plugin::start(pcfg, remote.clone()).await?;
    ensure!(
        plugin.wait_ready(Duration::from_secs(60)).await,
        "plugin cache synced"
    );
    let node = format!(
        "vn-otun-full-{}",
        lns.name.rsplit('-').next().unwrap_or("x")
    );
    let mut cfg = Config::for_node(&node, &format!("http://{}", plugin.addr()));
    cfg.kubelet_addr = "0.0.0.0:0".parse()?;
    cfg.admin_addr = None;
    cfg.status_interval = Duration::from_millis(500);
    cfg.gateway.address = Some("192.0.2.1:2222".into());
    cfg.gateway.node_port = 0;
    cfg.gateway.namespace = Some(lns.name.clone());
    cfg.gateway.image = GATEWAY_IMAGE.into();
    cfg.gateway.port_range = format!("{ONLY_PORT}-{ONLY_PORT}").parse()?;
    let prov = start(cfg, local.clone(), tb.local.node_ip).await?;

    let pods: Api<Pod> = Api::namespaced(local.clone(), &lns.name);
    let events: Api<Event> = Api::namespaced(local.clone(), &lns.name);
    let result = full_range::scenario(&pods, &events, &node).await;
    prov.shutdown().await;
    plugin.shutdown().await;
    remove_node_and_remote_namespace(&local, &remote, &node, &rns).await;
    drop(lns);
    result
}
