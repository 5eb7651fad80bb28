//! The first test's steps: the bastion's key, one pod through its Service, a
//! provider restart, a workload through its stable Service, deleting.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use gateway_manager::objects::pod_service_name;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use offload_e2e::tunnel::{GATEWAY_IMAGE, HTTP_PORT, exec_sh, http_get, wait_endpoint_ports};
use offload_provider::config::Config;
use offload_provider::provider::{RunningProvider, start};
use offload_provider::tunnel::CONDITION_TUNNEL_UP;
use offload_wire::keys;
use offload_wire::tunnel::TunnelAnnotations;

use crate::{POD_START, tunnel_of, tunnel_up, watch_milestones, web_pod};

pub struct Env {
    pub tb: &'static testbed::Testbed,
    pub local: Client,
    pub remote: Client,
    /// Local namespace of the user's pods, the gateway and the client pod.
    pub lns: String,
    /// Remote namespace the plugin maps `lns` to.
    pub rns: String,
    pub node: String,
}

impl Env {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.local.clone(), &self.lns)
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
                let script = format!("timeout 3 wget -q -O- http://{ip}:{HTTP_PORT}/ 2>&1; true");
                match exec_sh(&self.tb.local, &self.lns, "client", &script).await {
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

    pub async fn diagnose(&self, bastion_ns: &str) {
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

pub fn provider_config(
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
    cfg.gateway.address = Some(tb.local.node_ip.to_string());
    cfg.gateway.node_port = node_port;
    cfg.gateway.namespace = Some(lns.to_owned());
    cfg.gateway.image = GATEWAY_IMAGE.into();
    cfg.gateway.port_range = "40100-40199".parse()?;
    cfg.gateway.sync_interval = Duration::from_millis(500);
    Ok(cfg)
}

/// The steps, in order; each one leaves what the next one needs.
pub async fn scenario(
    env: &Env,
    prov: RunningProvider,
    cfg: Config,
    plugin_url: &str,
    bastion_ns: &str,
) -> anyhow::Result<()> {
    prov.tunnel
        .as_ref()
        .context("the provider runs the tunnel")?;
    bastion_key_is_authorized_on_the_gateway(env, plugin_url).await?;
    env.pods()
        .create(
            &PostParams::default(),
            &testbed::busybox_pod("client", "sleep 3600"),
        )
        .await?;
    testbed::wait_for_pod_running(&env.local, &env.lns, "client", POD_START).await?;
    let web = one_pod_through_its_service(env, bastion_ns).await?;
    let prov = provider_restart_keeps_the_tunnel(env, prov, cfg, &web).await?;
    workload_through_its_stable_service(env, &web.tunnel).await?;
    delete_removes_services_and_remote_pods(env, &prov, web.uid).await?;
    prov.shutdown().await;
    Ok(())
}

/// Nobody copies keys: the plugin installed the bastion and serves its public key,
/// the provider authorized it on the gateway.
async fn bastion_key_is_authorized_on_the_gateway(
    env: &Env,
    plugin_url: &str,
) -> anyhow::Result<()> {
    let plugin_addr = plugin_url.strip_prefix("http://").context("http URL")?;
    let key = testbed::wait_for(
        "the plugin to serve the bastion's public key",
        Duration::from_secs(60),
        || async {
            let answer =
                http_get(plugin_addr, "/bastion/publicKey", Duration::from_secs(10)).await?;
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
    Ok(())
}

/// The pod `web` of step 1, as later steps need it.
struct Web {
    uid: String,
    tunnel: TunnelAnnotations,
}

/// Step 1: one pod, through its own Service; timed from the user's create. The
/// remote pod carries the local pod's tunnel annotations.
async fn one_pod_through_its_service(env: &Env, bastion_ns: &str) -> anyhow::Result<Web> {
    let pods = env.pods();
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
        web_tunnel
            .ports
            .contains_key(&offload_wire::tunnel::ContainerPort(HTTP_PORT)),
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
    Ok(Web {
        uid: web_uid,
        tunnel: web_tunnel,
    })
}

/// The uids of the gateway pods that are not being deleted.
async fn gateway_pods(env: &Env) -> anyhow::Result<BTreeSet<String>> {
    let api: Api<Pod> = Api::namespaced(env.local.clone(), &env.lns);
    Ok(api
        .list(&ListParams::default().labels("app.kubernetes.io/name=offload-gateway"))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.uid)
        .collect())
}

/// Step 2: the provider restarts: the allocation comes from the cluster, the
/// gateway keeps running with the same key, the page is still served. Returns the
/// new provider.
async fn provider_restart_keeps_the_tunnel(
    env: &Env,
    prov: RunningProvider,
    cfg: Config,
    web: &Web,
) -> anyhow::Result<RunningProvider> {
    let gateway_before = gateway_pods(env).await?;
    prov.shutdown().await;
    let prov = start(cfg, env.local.clone(), env.tb.local.node_ip).await?;
    let gm = prov.tunnel.clone().context("tunnel after restart")?;
    let rebuilt = gm
        .tunnel_pods()
        .into_iter()
        .find(|t| t.uid == web.uid)
        .context("the restarted provider knows web's tunnel")?;
    ensure!(
        rebuilt.ports == web.tunnel.ports,
        "same ports after a restart: {:?} vs {:?}",
        rebuilt.ports,
        web.tunnel.ports
    );
    env.fetch_through(
        &pod_service_name("web"),
        "hello from web",
        Duration::from_secs(30),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let gateway_after = gateway_pods(env).await?;
    ensure!(
        gateway_after == gateway_before,
        "the gateway pod was not restarted by the provider restart ({gateway_before:?} -> {gateway_after:?})"
    );
    println!("offload-tunnel: provider restarted: same gateway pod, same ports, page still served");
    Ok(prov)
}

/// Step 3: a 2-replica workload behind one stable Service name, load-balanced.
async fn workload_through_its_stable_service(
    env: &Env,
    web_tunnel: &TunnelAnnotations,
) -> anyhow::Result<()> {
    let pods = env.pods();
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
                .get(&offload_wire::tunnel::ContainerPort(HTTP_PORT))
                .context("gateway port")?,
        );
    }
    ports.insert(
        *web_tunnel
            .ports
            .get(&offload_wire::tunnel::ContainerPort(HTTP_PORT))
            .context("gateway port")?,
    );
    ensure!(
        ports.len() == 3,
        "three pods, three gateway ports: {ports:?}"
    );
    wait_endpoint_ports(&env.local, &env.lns, "app", 2, Duration::from_secs(30)).await?;
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
    Ok(())
}

/// Step 4: deleting the pods removes their Services locally, the pods remotely and
/// releases every gateway port.
async fn delete_removes_services_and_remote_pods(
    env: &Env,
    prov: &RunningProvider,
    web_uid: String,
) -> anyhow::Result<()> {
    let pods = env.pods();
    let gm = prov.tunnel.clone().context("tunnel after restart")?;
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
    Ok(())
}
