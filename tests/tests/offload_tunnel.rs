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
//! Needs the images (`deploy/images/prepare-test-images.sh`), imported into
//! both clusters by the test. Run:
//! `cargo test -p offload-e2e --test offload_tunnel -- --nocapture`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use gateway_manager::annotations::TunnelAnnotations;
use gateway_manager::objects::pod_service_name;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Node, Pod, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use offload_plugin::PluginConfig;
use offload_provider::config::Config;
use offload_provider::provider::{RunningProvider, start};
use offload_provider::tunnel::CONDITION_TUNNEL_UP;
use offload_wire::keys;
use offload_wire::tunnel::{ContainerPort, GatewayPort};

const GATEWAY_IMAGE: &str = "localhost/offload/gateway:1.0";
const BASTION_IMAGE: &str = "localhost/offload/bastion:0.1.0";
const HTTP_PORT: u16 = 8080;
/// Generous: the testbed is shared, and remote containers start slowly under load.
const POD_START: Duration = Duration::from_secs(300);
/// Runs on the remote cluster; `$$` is Kubernetes' escape for `$`.
const HTTPD: &str = "mkdir -p /tmp/www && echo \"hello from $$(hostname)\" > /tmp/www/index.html \
                     && exec httpd -f -p 8080 -h /tmp/www";

/// 30222 (the default) when no Service holds it, else another free NodePort
/// of the local cluster (other tests run gateways too).
async fn free_node_port(tb: &testbed::Testbed, client: &Client) -> anyhow::Result<u16> {
    let used: BTreeSet<i32> = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|s| s.spec.as_ref()?.ports.as_ref())
        .flatten()
        .filter_map(|p| p.node_port)
        .collect();
    let range = tb.local.node_port_range();
    std::iter::once(30222)
        .chain(range.clone().rev().skip(20))
        .find(|p| range.contains(p) && !used.contains(&i32::from(*p)))
        .with_context(|| format!("no free NodePort in {range:?}"))
}

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
                "command": ["sh", "-c", HTTPD],
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

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
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

struct Env {
    tb: &'static testbed::Testbed,
    local: Client,
    remote: Client,
    /// Local namespace of the user's pods, the gateway and the client pod.
    lns: String,
    /// Remote namespace the plugin maps `lns` to.
    rns: String,
    node: String,
}

impl Env {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.local.clone(), &self.lns)
    }

    /// `sh -c script` in the local client pod.
    async fn client_sh(&self, script: &str) -> anyhow::Result<String> {
        self.tb
            .local
            .run_kubectl(&["-n", &self.lns, "exec", "client", "--", "sh", "-c", script])
            .await
    }

    /// From the client pod, through `service`, until the page says `expect`;
    /// returns when it did.
    async fn fetch_through(
        &self,
        service: &str,
        expect: &str,
        timeout: Duration,
    ) -> anyhow::Result<Instant> {
        let svcs: Api<Service> = Api::namespaced(self.local.clone(), &self.lns);
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            let ip = svcs
                .get_opt(service)
                .await?
                .and_then(|s| s.spec?.cluster_ip)
                .filter(|ip| !ip.is_empty() && ip != "None");
            if let Some(ip) = ip {
                match self
                    .client_sh(&format!(
                        "timeout 3 wget -q -O- http://{ip}:{HTTP_PORT}/ 2>&1; true"
                    ))
                    .await
                {
                    Ok(out) if out.contains(expect) => return Ok(Instant::now()),
                    Ok(out) => last = out,
                    Err(e) => last = format!("{e:#}"),
                }
            } else {
                last = format!("Service {service} does not exist (yet)");
            }
            if Instant::now() > deadline {
                bail!("{expect:?} not served through Service {service} after {timeout:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The remote pod of a local pod (by the owner label the plugin sets).
    async fn remote_pods_of(&self, uid: &str) -> anyhow::Result<Vec<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.remote.clone(), &self.rns);
        Ok(api
            .list(&ListParams::default().labels(&format!("{}={uid}", keys::LABEL_SOURCE_POD_UID)))
            .await?
            .items)
    }

    async fn diagnose(&self, bastion_ns: &str) {
        for (cl, ns) in [
            (&self.tb.local, self.lns.as_str()),
            (&self.tb.remote, bastion_ns),
            (&self.tb.remote, self.rns.as_str()),
        ] {
            let pods = cl
                .run_kubectl(&["-n", ns, "get", "pods,svc,endpoints", "-o", "wide"])
                .await
                .unwrap_or_else(|e| format!("{e:#}"));
            eprintln!("--- {} {ns}:\n{pods}", cl.name);
        }
        for (cl, ns, sel) in [
            (
                &self.tb.local,
                self.lns.as_str(),
                "app.kubernetes.io/name=offload-gateway",
            ),
            (
                &self.tb.remote,
                bastion_ns,
                "app.kubernetes.io/component=offload-bastion",
            ),
        ] {
            let logs = cl
                .run_kubectl(&["-n", ns, "logs", "-l", sel, "--tail", "40", "--timestamps"])
                .await
                .unwrap_or_else(|e| format!("{e:#}"));
            eprintln!("--- {} logs of {sel}:\n{logs}", cl.name);
        }
    }
}

fn provider_config(
    tb: &testbed::Testbed,
    node: &str,
    plugin_url: &str,
    lns: &str,
    node_port: u16,
) -> anyhow::Result<Config> {
    let mut cfg = Config::for_node(node, plugin_url);
    cfg.kubelet_addr = "0.0.0.0:0".parse()?;
    cfg.admin_addr = None;
    cfg.status_interval = Duration::from_millis(500);
    // The tunnel: the bastion reaches the gateway on the local node's IP.
    cfg.gateway_address = Some(tb.local.node_ip.to_string());
    cfg.gateway_node_port = node_port;
    cfg.gateway_namespace = Some(lns.to_owned());
    cfg.gateway_image = GATEWAY_IMAGE.into();
    cfg.gateway_port_range = "40100-40199".parse()?;
    cfg.gateway_sync_interval = Duration::from_millis(500);
    Ok(cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offloaded_pods_are_served_locally_through_the_tunnel() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "warn,offload_provider::tunnel=info,offload_plugin::bastion=info",
                )
            }),
        )
        .with_test_writer()
        .try_init();
    let tb = testbed::testbed().await?;
    offload_e2e::import_images(tb, &["gateway", "bastion"]).await?;
    let local = tb.local.client().await?;
    let remote = tb.remote.client().await?;
    let lns = tb.local.test_namespace("otun").await?;
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
    let node_port = free_node_port(tb, &local).await?;
    let node = format!("vn-otun-{}", lns.name.rsplit('-').next().unwrap_or("x"));
    let cfg = provider_config(tb, &node, &plugin_url, &lns.name, node_port)?;
    let prov = start(cfg.clone(), local.clone(), tb.local.node_ip).await?;

    let env = Env {
        tb,
        local: local.clone(),
        remote: remote.clone(),
        lns: lns.name.clone(),
        rns: rns.clone(),
        node: node.clone(),
    };
    let result = scenario(&env, prov, cfg, &plugin_url, &bns.name).await;
    if result.is_err() {
        env.diagnose(&bns.name).await;
    }
    plugin.shutdown().await;
    let uninstalled = offload_bastion::install::uninstall(&remote, &bastion_spec).await;
    let _ = Api::<Node>::all(local.clone())
        .delete(&node, &DeleteParams::default())
        .await;
    // The plugin never deletes the namespaces it maps to; this test does.
    let _ = Api::<Namespace>::all(remote.clone())
        .delete(&rns, &DeleteParams::default())
        .await;
    result?;
    uninstalled?;
    drop((lns, bns));
    Ok(())
}

async fn scenario(
    env: &Env,
    prov: RunningProvider,
    cfg: Config,
    plugin_url: &str,
    bastion_ns: &str,
) -> anyhow::Result<()> {
    let pods = env.pods();
    let gm = prov
        .tunnel
        .clone()
        .context("the provider runs the tunnel")?;
    // Nobody copies keys: the plugin installed the bastion and serves its
    // public key, the provider authorized it on the gateway.
    let key = testbed::wait_for(
        "the plugin to serve the bastion's public key",
        Duration::from_secs(60),
        || async {
            let answer = http_get(&format!("{plugin_url}/bastion/publicKey")).await?;
            Ok(answer
                .split_once("\r\n\r\n")
                .filter(|(head, _)| {
                    head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")
                })
                .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
                .and_then(|v| v["publicKey"].as_str().map(str::to_owned)))
        },
    )
    .await?;
    let cms: Api<ConfigMap> = Api::namespaced(env.local.clone(), &env.lns);
    testbed::wait_for(
        "the gateway to authorize the bastion's key",
        Duration::from_secs(60),
        || async {
            let ak = cms
                .get_opt("offload-gateway")
                .await?
                .and_then(|c| c.data)
                .and_then(|mut d| d.remove("authorized_keys"))
                .unwrap_or_default();
            Ok(ak.contains(&key).then_some(()))
        },
    )
    .await?;
    println!(
        "offload-tunnel: bastion key {key} fetched from the plugin and authorized on the gateway"
    );

    pods.create(
        &PostParams::default(),
        &testbed::busybox_pod("client", "sleep 3600"),
    )
    .await?;
    testbed::wait_for_pod_running(&env.local, &env.lns, "client", POD_START).await?;

    // 1. One pod, through its own Service; timed from the user's create.
    let created = Instant::now();
    pods.create(&PostParams::default(), &web_pod("web", &env.node, None)?)
        .await?;
    let milestones = watch_milestones(pods.clone(), "web".into(), created);
    let served = env
        .fetch_through(&pod_service_name("web"), "hello from web", POD_START)
        .await?;
    let m = milestones.await?;
    let total = served - created;
    println!(
        "offload-tunnel: web: pod created -> page served through Service {} from a local client pod: {total:?} \
         (Running locally after {:?}, so {:?} of it after the remote container ran; \
         condition {CONDITION_TUNNEL_UP}=True after {:?})",
        pod_service_name("web"),
        m.running,
        m.running.map(|r| total.saturating_sub(r)),
        m.tunnel_up,
    );
    if std::env::var_os("OFFLOAD_TUNNEL_DEBUG").is_some() {
        env.diagnose(bastion_ns).await;
    }
    let web = pods.get("web").await?;
    let web_tunnel = tunnel_of(&web)?;
    ensure!(
        web_tunnel.ports.contains_key(&ContainerPort(HTTP_PORT)),
        "8080 has a gateway port: {web_tunnel:?}"
    );
    let web_uid = web.metadata.uid.clone().context("uid")?;
    let remote_web = env.remote_pods_of(&web_uid).await?;
    ensure!(remote_web.len() == 1, "one remote pod: {remote_web:?}");
    let remote_tunnel = tunnel_of(&remote_web[0])?;
    ensure!(
        remote_tunnel == web_tunnel,
        "the remote pod carries the local pod's tunnel annotations"
    );
    testbed::wait_for(
        "the web pod's tunnel condition",
        Duration::from_secs(30),
        || async { Ok(tunnel_up(&pods.get("web").await?).then_some(())) },
    )
    .await?;

    // 2. The provider restarts: the allocation comes from the cluster, the
    // gateway keeps running with the same key, the page is still served.
    let gateway_pods = || async {
        let api: Api<Pod> = Api::namespaced(env.local.clone(), &env.lns);
        let uids: BTreeSet<String> = api
            .list(&ListParams::default().labels("app.kubernetes.io/name=offload-gateway"))
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.uid)
            .collect();
        anyhow::Ok(uids)
    };
    let gateway_before = gateway_pods().await?;
    drop(gm);
    prov.shutdown().await;
    let prov = start(cfg, env.local.clone(), env.tb.local.node_ip).await?;
    let gm = prov.tunnel.clone().context("tunnel after restart")?;
    let rebuilt = gm
        .tunnel_pods()
        .into_iter()
        .find(|t| t.uid == web_uid)
        .context("the restarted provider knows web's tunnel")?;
    ensure!(
        rebuilt.ports == web_tunnel.ports,
        "same ports after a restart: {:?} vs {:?}",
        rebuilt.ports,
        web_tunnel.ports
    );
    env.fetch_through(
        &pod_service_name("web"),
        "hello from web",
        Duration::from_secs(30),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let gateway_after = gateway_pods().await?;
    ensure!(
        gateway_after == gateway_before,
        "the gateway pod was not restarted by the provider restart ({gateway_before:?} -> {gateway_after:?})"
    );
    println!("offload-tunnel: provider restarted: same gateway pod, same ports, page still served");

    // 3. A 2-replica workload behind one stable Service name.
    let started = Instant::now();
    for i in 0..2 {
        pods.create(
            &PostParams::default(),
            &web_pod(&format!("app-{i}"), &env.node, Some("app"))?,
        )
        .await?;
    }
    for i in 0..2 {
        env.fetch_through(
            &pod_service_name(&format!("app-{i}")),
            &format!("hello from app-{i}"),
            POD_START,
        )
        .await?;
    }
    let mut ports = BTreeSet::new();
    for i in 0..2 {
        let t = tunnel_of(&pods.get(&format!("app-{i}")).await?)?;
        ports.insert(
            *t.ports
                .get(&ContainerPort(HTTP_PORT))
                .context("gateway port")?,
        );
    }
    ports.insert(
        *web_tunnel
            .ports
            .get(&ContainerPort(HTTP_PORT))
            .context("gateway port")?,
    );
    ensure!(
        ports.len() == 3,
        "three pods, three gateway ports: {ports:?}"
    );
    let eps: Api<Endpoints> = Api::namespaced(env.local.clone(), &env.lns);
    testbed::wait_for(
        "Endpoints app to list both replicas' gateway ports",
        Duration::from_secs(30),
        || async {
            let listed: BTreeSet<i32> = eps
                .get_opt("app")
                .await?
                .and_then(|e| e.subsets)
                .unwrap_or_default()
                .iter()
                .filter(|s| s.addresses.as_ref().is_some_and(|a| !a.is_empty()))
                .flat_map(|s| s.ports.clone().unwrap_or_default())
                .map(|p| p.port)
                .collect();
            Ok((listed.len() == 2).then_some(()))
        },
    )
    .await?;
    let served = env
        .fetch_through("app", "hello from app-", Duration::from_secs(60))
        .await?;
    // Load-balanced: each replica answers through the one stable Service
    // (all behind the gateway pod's IP, each on its own gateway port).
    for i in 0..2 {
        env.fetch_through(
            "app",
            &format!("hello from app-{i}"),
            Duration::from_secs(60),
        )
        .await?;
    }
    println!(
        "offload-tunnel: workload app (2 replicas): created -> served through Service app: {:?}",
        served - started
    );

    // 4. Delete: the Services go locally, the pods remotely.
    let mut uids = vec![web_uid];
    for i in 0..2 {
        uids.push(
            pods.get(&format!("app-{i}"))
                .await?
                .metadata
                .uid
                .context("uid")?,
        );
    }
    for name in ["web", "app-0", "app-1"] {
        pods.delete(name, &DeleteParams::default()).await?;
    }
    let svcs: Api<Service> = Api::namespaced(env.local.clone(), &env.lns);
    testbed::wait_for(
        "local pods, their Services and the remote pods to be gone",
        Duration::from_secs(120),
        || async {
            for name in ["web", "app-0", "app-1"] {
                if pods.get_opt(name).await?.is_some()
                    || svcs.get_opt(&pod_service_name(name)).await?.is_some()
                {
                    return Ok(None);
                }
            }
            if svcs.get_opt("app").await?.is_some() {
                return Ok(None);
            }
            for uid in &uids {
                if !env.remote_pods_of(uid).await?.is_empty() {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await?;
    ensure!(
        gm.tunnel_pods().is_empty(),
        "every port released: {:?}",
        gm.tunnel_pods()
    );
    println!(
        "offload-tunnel: deleted: tunnel Services gone locally, pods gone remotely, ports released"
    );
    prov.shutdown().await;
    Ok(())
}

/// A plain HTTP GET from the test process (the plugin has no auth in tests).
async fn http_get(url: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").context("http URL")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf).to_string())
}

/// A full gateway port range is a Warning event and a waiting status on the
/// pod that finds it full, not a hang: the pod is offloaded as soon as a port
/// is released, by a delete or by a pod that finished. (No bastion and no
/// NodePort here: only allocation matters.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_port_range_is_an_event_and_the_pod_waits_for_a_port() -> anyhow::Result<()> {
    let tb = testbed::testbed().await?;
    offload_e2e::import_images(tb, &["gateway", "bastion"]).await?;
    let local = tb.local.client().await?;
    let remote = tb.remote.client().await?;
    let lns = tb.local.test_namespace("otun-full").await?;
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
    cfg.gateway_address = Some("192.0.2.1:2222".into());
    cfg.gateway_node_port = 0;
    cfg.gateway_namespace = Some(lns.name.clone());
    cfg.gateway_image = GATEWAY_IMAGE.into();
    cfg.gateway_port_range = "40200-40200".parse()?;
    let prov = start(cfg, local.clone(), tb.local.node_ip).await?;

    let result = async {
        let pods: Api<Pod> = Api::namespaced(local.clone(), &lns.name);
        pods.create(&PostParams::default(), &web_pod("first", &node, None)?)
            .await?;
        let first = testbed::wait_for(
            "first to be offloaded with the only gateway port",
            POD_START,
            || async {
                let p = pods.get("first").await?;
                let offloaded = p
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(keys::ANNOTATION_JOB_ID));
                Ok(offloaded.then_some(p))
            },
        )
        .await?;
        ensure!(
            tunnel_of(&first)?.ports.values().eq([&GatewayPort(40200)]),
            "first holds 40200"
        );

        // second runs for a while and then ends (restartPolicy Never).
        pods.create(
            &PostParams::default(),
            &short_lived(web_pod("second", &node, None)?, "sleep 10"),
        )
        .await?;
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(local.clone(), &lns.name);
        let note = testbed::wait_for(
            "a TunnelPortsExhausted event on second",
            Duration::from_secs(60),
            || async {
                let list = events
                    .list(&ListParams::default().fields("involvedObject.name=second"))
                    .await?;
                Ok(list
                    .items
                    .into_iter()
                    .find(|e| e.reason.as_deref() == Some("TunnelPortsExhausted"))
                    .and_then(|e| e.message))
            },
        )
        .await?;
        ensure!(
            note.contains("40200-40200"),
            "event names the range: {note}"
        );
        let waiting = testbed::wait_for(
            "second's waiting status",
            Duration::from_secs(30),
            || async {
                let p = pods.get("second").await?;
                let reason = p
                    .status
                    .and_then(|s| s.container_statuses)
                    .and_then(|c| c.into_iter().next())
                    .and_then(|c| c.state?.waiting?.reason);
                Ok(reason.filter(|r| r == "TunnelPortsExhausted"))
            },
        )
        .await?;
        println!("offload-tunnel: port range full: event {note:?}, status waiting {waiting}");
        let second = pods.get("second").await?;
        ensure!(
            second
                .metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.contains_key(keys::ANNOTATION_JOB_ID)),
            "second is not offloaded without a port"
        );

        // The port comes back with the first pod's delete; second gets it
        // right away (woken by the release, not at its next backoff retry).
        tokio::time::sleep(Duration::from_secs(8)).await;
        pods.delete("first", &DeleteParams::default()).await?;
        let released = Instant::now();
        let second = testbed::wait_for(
            "second to be offloaded once first released its port",
            Duration::from_secs(90),
            || async {
                let p = pods.get("second").await?;
                let offloaded = p
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(keys::ANNOTATION_JOB_ID));
                Ok(offloaded.then_some(p))
            },
        )
        .await?;
        let handed_over = released.elapsed();
        ensure!(
            tunnel_of(&second)?.ports.values().eq([&GatewayPort(40200)]),
            "second holds 40200"
        );
        // Its backoff had grown past 8 s; the wake-up makes it much less.
        ensure!(
            handed_over < Duration::from_secs(8),
            "second waited {handed_over:?} after the release"
        );
        println!(
            "offload-tunnel: the port released by a delete went to the waiting pod {handed_over:?} later"
        );

        // A pod that finishes gives its ports back too.
        pods.create(&PostParams::default(), &web_pod("third", &node, None)?)
            .await?;
        testbed::wait_for(
            "third to wait for a port",
            Duration::from_secs(30),
            || async {
                let p = pods.get("third").await?;
                let reason = p
                    .status
                    .and_then(|s| s.container_statuses)
                    .and_then(|c| c.into_iter().next())
                    .and_then(|c| c.state?.waiting?.reason);
                Ok(reason.filter(|r| r == "TunnelPortsExhausted"))
            },
        )
        .await?;
        let third = testbed::wait_for(
            "second to finish and third to get its port",
            Duration::from_secs(120),
            || async {
                let p = pods.get("third").await?;
                let offloaded = p
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(keys::ANNOTATION_JOB_ID));
                Ok(offloaded.then_some(p))
            },
        )
        .await?;
        ensure!(
            phase(&pods.get("second").await?) == "Succeeded",
            "second finished"
        );
        ensure!(
            tunnel_of(&third)?.ports.values().eq([&GatewayPort(40200)]),
            "third holds 40200"
        );
        println!("offload-tunnel: the port of a pod that finished went to the waiting pod");
        for name in ["second", "third"] {
            pods.delete(name, &DeleteParams::default()).await?;
        }
        testbed::wait_for("second and third to be gone", Duration::from_secs(60), || async {
            let second = pods.get_opt("second").await?;
            let third = pods.get_opt("third").await?;
            Ok((second.is_none() && third.is_none()).then_some(()))
        })
        .await?;
        anyhow::Ok(())
    }
    .await;
    prov.shutdown().await;
    plugin.shutdown().await;
    let _ = Api::<Node>::all(local.clone())
        .delete(&node, &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(remote.clone())
        .delete(&rns, &DeleteParams::default())
        .await;
    drop(lns);
    result
}
