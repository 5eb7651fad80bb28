//! Forged tunnels: each step plays an attacker who writes tunnel annotations
//! (or names a Service) to take over a victim's gateway port, make the
//! bastion dial a host of their choice, or have a Service of theirs changed.
//!
//! Setup: the plugin keeps a bastion that watches *every* remote namespace
//! (so a pod in an unrelated namespace is in its view), the provider runs
//! the gateway, a victim pod `victim` is served through `victim-tunnel`.
//!
//! - (a) a pod on the virtual node with no containerPort, carrying the
//!   victim's tunnel annotations (signature included): the provider sends
//!   none of them, the remote pod carries none;
//! - (b) labelled pods created straight in an unrelated remote namespace,
//!   one naming a free gateway port of our gateway, one another gateway
//!   address: the bastion forwards neither and dials nothing new;
//! - (c) a pod on a real local node with the victim's annotations and one
//!   claiming more ports, then a provider restart: allocations unchanged;
//! - (d) a pod naming a foreign Service in `interlink.io/tunnel-service`
//!   (and a foreign `<pod>-tunnel`): Warning event, both Services exactly as
//!   they were, even after the pod is deleted.
//!
//! After each: the victim's Service still answers from the victim, and the
//! bastion's metrics say it holds only the victim's forward, to our gateway.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use gateway_manager::objects::pod_service_name;
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use offload_e2e::init_tracing;
use offload_e2e::tunnel::{
    BASTION_IMAGE, HTTP_PORT, HTTPD, exec_sh, free_node_port, start_scenario,
};
use offload_plugin::PluginConfig;
use offload_provider::config::Config;
use offload_provider::provider::{RunningProvider, start};
use offload_wire::keys;
use offload_wire::tunnel::{ContainerPort, GatewayPort, PortMap};

use crate::{
    POD_START, remove_node_and_remote_namespace, served, tunnel_of, wait_offloaded, web_pod,
};

/// A free port of the test's gateway range (40100-40199) nobody is given first.
const FREE_PORT: u16 = 40199;
/// An address no gateway listens on, for the bastion not to dial.
const ELSEWHERE: &str = "192.0.2.7:2222";

struct Env {
    tb: &'static testbed::Testbed,
    local: Client,
    remote: Client,
    lns: String,
    node: String,
    /// The bastion's namespace (a busybox `probe` there reads its metrics).
    bns: String,
    /// An unrelated remote namespace (not the plugin's).
    xns: String,
}

/// A user's pod with `annotations`: an httpd (on 8080, declared only when
/// `port`), on the virtual node `node` or, with `None`, on a real node.
fn user_pod(
    name: &str,
    node: Option<&str>,
    annotations: &BTreeMap<String, String>,
    port: bool,
) -> anyhow::Result<Pod> {
    let mut pod = web_pod(name, node.unwrap_or("unused"), None)?;
    pod.metadata.annotations = Some(annotations.clone());
    let spec = pod.spec.as_mut().context("spec")?;
    if node.is_none() {
        spec.node_selector = None;
        spec.tolerations = None;
    }
    if !port {
        spec.containers[0].ports = None;
    }
    Ok(pod)
}

impl Env {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.local.clone(), &self.lns)
    }

    /// The page through `service` from the local client pod (one try).
    async fn page(&self, service: &str) -> anyhow::Result<String> {
        let svcs: Api<Service> = Api::namespaced(self.local.clone(), &self.lns);
        let ip = svcs
            .get(service)
            .await?
            .spec
            .and_then(|s| s.cluster_ip)
            .context("cluster IP")?;
        let script = format!("timeout 3 wget -q -O- http://{ip}:{HTTP_PORT}/ 2>&1; true");
        exec_sh(&self.tb.local, &self.lns, "client", &script).await
    }

    /// The victim's Service answers, from the victim, several times in a row.
    async fn victim_still_answers(&self, after: &str) -> anyhow::Result<()> {
        self.victim_answers_within(after, Duration::from_secs(60))
            .await
    }

    async fn victim_answers_within(&self, after: &str, timeout: Duration) -> anyhow::Result<()> {
        let svc = pod_service_name("victim");
        testbed::wait_for(
            &format!("the victim's Service to answer after {after}"),
            timeout,
            || async {
                Ok(self
                    .page(&svc)
                    .await?
                    .contains("hello from victim")
                    .then_some(()))
            },
        )
        .await?;
        for _ in 0..5 {
            let page = self.page(&svc).await?;
            ensure!(
                page.contains("hello from victim"),
                "after {after}, {svc} answered {page:?}, not the victim"
            );
        }
        println!("offload-tunnel forged: after {after}: {svc} still answers from the victim");
        Ok(())
    }

    /// The leading bastion's `/metrics` (the standby holds nothing), read
    /// from a busybox pod next to it.
    async fn bastion_metrics(&self) -> anyhow::Result<String> {
        let pods: Api<Pod> = Api::namespaced(self.remote.clone(), &self.bns);
        let ips: Vec<String> = pods
            .list(&ListParams::default().labels("app.kubernetes.io/component=offload-bastion"))
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.status?.pod_ip)
            .collect();
        for ip in ips {
            let get =
                |path: &str| format!("timeout 5 wget -q -O- http://{ip}:9090/{path} 2>&1; true");
            let role = exec_sh(&self.tb.remote, &self.bns, "probe", &get("leader")).await?;
            if role.trim() == "leader" {
                return exec_sh(&self.tb.remote, &self.bns, "probe", &get("metrics")).await;
            }
        }
        bail!("no bastion pod leads")
    }

    /// The bastion holds exactly the victim's forward, to our gateway only,
    /// and has ignored at least `ignored` labelled pods for `reason`.
    async fn bastion_holds_only_the_victim(
        &self,
        gateway: &str,
        reason: Option<&str>,
    ) -> anyhow::Result<()> {
        let want_forwards = format!("offload_bastion_forwards{{gateway=\"{gateway}\"}} 1");
        let want_ignored =
            reason.map(|r| format!("offload_bastion_pods_ignored{{reason=\"{r}\"}}"));
        let metrics = testbed::wait_for(
            "the bastion's metrics to show the forged pods ignored",
            Duration::from_secs(60),
            || async {
                let m = self.bastion_metrics().await?;
                let ignored = want_ignored.as_ref().is_none_or(|w| {
                    m.lines()
                        .any(|l| l.starts_with(w.as_str()) && !l.ends_with(" 0"))
                });
                Ok((m.contains(&want_forwards) && ignored).then_some(m))
            },
        )
        .await?;
        for line in metrics.lines().filter(|l| !l.starts_with('#')) {
            let names_other =
                line.contains("gateway=\"") && !line.contains(&format!("gateway=\"{gateway}\""));
            ensure!(!names_other, "the bastion knows another gateway: {line}");
            if line.starts_with("offload_bastion_forwards_desired")
                || line.starts_with("offload_bastion_gateways_configured")
            {
                ensure!(line.ends_with(" 1"), "one gateway, one forward: {line}");
            }
        }
        Ok(())
    }

    async fn gateway_allocations(
        &self,
        prov: &RunningProvider,
    ) -> anyhow::Result<BTreeMap<String, PortMap>> {
        let gm = prov.tunnel.as_ref().context("tunnel")?;
        Ok(gm
            .tunnel_pods()
            .into_iter()
            .map(|t| (t.name, t.ports))
            .collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_tunnels_take_nothing_over() -> anyhow::Result<()> {
    init_tracing("warn,offload_plugin::bastion=info,gateway_manager=info");
    let (tb, local, remote, lns) = start_scenario("otun-forge").await?;
    let bns = tb.remote.test_namespace("otun-forge-b").await?;
    let xns = tb.remote.test_namespace("otun-forge-x").await?;

    // The plugin's bastion watches every namespace: the unrelated one too.
    let mut pcfg = PluginConfig::for_tests();
    let rns = pcfg.namespaces().remote(&lns.name);
    pcfg.no_bastion = false;
    pcfg.bastion_image = BASTION_IMAGE.into();
    pcfg.bastion_namespace = Some(bns.name.clone());
    pcfg.bastion_watch_namespace = None;
    pcfg.bastion_resync_interval = Duration::from_secs(10);
    let bastion_spec = pcfg.bastion_spec().context("bastion on")?;
    let plugin = offload_plugin::start(pcfg, remote.clone()).await?;
    ensure!(
        plugin.wait_ready(Duration::from_secs(60)).await,
        "plugin cache synced"
    );
    let plugin_url = format!("http://{}", plugin.addr());

    let node_port = free_node_port(tb, &local, None, 40).await?;
    let node = format!(
        "vn-otun-forge-{}",
        lns.name.rsplit('-').next().unwrap_or("x")
    );
    let cfg = served::provider_config(tb, &node, &plugin_url, &lns.name, node_port)?;
    let prov = start(cfg.clone(), local.clone(), tb.local.node_ip).await?;

    let env = Env {
        tb,
        local: local.clone(),
        remote: remote.clone(),
        lns: lns.name.clone(),
        node: node.clone(),
        bns: bns.name.clone(),
        xns: xns.name.clone(),
    };
    let result = scenario(&env, prov, cfg).await;
    if result.is_err() {
        let _ = tb
            .remote
            .run_kubectl(&[
                "-n",
                &bns.name,
                "logs",
                "-l",
                "app.kubernetes.io/component=offload-bastion",
                "--tail",
                "60",
            ])
            .await
            .map(|l| eprintln!("--- bastion logs:\n{l}"));
    }
    plugin.shutdown().await;
    let uninstalled = offload_bastion::install::uninstall(&remote, &bastion_spec).await;
    remove_node_and_remote_namespace(&local, &remote, &node, &rns).await;
    result?;
    uninstalled?;
    drop((lns, bns, xns));
    Ok(())
}

async fn scenario(env: &Env, prov: RunningProvider, cfg: Config) -> anyhow::Result<()> {
    let pods = env.pods();
    pods.create(
        &PostParams::default(),
        &testbed::busybox_pod("client", "sleep 3600"),
    )
    .await?;
    Api::<Pod>::namespaced(env.remote.clone(), &env.bns)
        .create(
            &PostParams::default(),
            &testbed::busybox_pod("probe", "sleep 3600"),
        )
        .await?;
    pods.create(&PostParams::default(), &web_pod("victim", &env.node, None)?)
        .await?;
    testbed::wait_for_pod_running(&env.local, &env.lns, "client", POD_START).await?;
    testbed::wait_for_pod_running(&env.remote, &env.bns, "probe", POD_START).await?;
    let victim = wait_offloaded(&pods, "victim", "the victim offloaded", POD_START).await?;
    let tunnel = tunnel_of(&victim)?;
    let gateway = tunnel.gateway_address.clone();
    // What an attacker copies: the victim's tunnel annotations (signature included).
    let victim_annotations: BTreeMap<String, String> = victim
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with(keys::tunnel::PREFIX))
        .collect();
    ensure!(
        victim_annotations.contains_key(keys::tunnel::ALLOCATION_SIGNATURE),
        "the victim's allocation is signed: {victim_annotations:?}"
    );
    env.victim_answers_within("the start", POD_START).await?;
    let before = env.gateway_allocations(&prov).await?;
    ensure!(
        before.keys().eq(["victim"]),
        "only the victim holds ports: {before:?}"
    );

    no_port_pod_sends_no_tunnel(env, &victim_annotations).await?;
    env.victim_still_answers("(a) a pod on the virtual node with the victim's annotations")
        .await?;
    ensure!(
        env.gateway_allocations(&prov).await? == before,
        "(a) allocations unchanged"
    );

    foreign_remote_pods_are_not_forwarded(env, &victim_annotations, &gateway).await?;
    env.victim_still_answers("(b) labelled pods in an unrelated remote namespace")
        .await?;
    env.bastion_holds_only_the_victim(&gateway, Some("foreign_namespace"))
        .await?;

    let prov = real_node_pod_then_restart(env, prov, cfg, &victim_annotations, &before).await?;
    env.victim_still_answers("(c) a real-node pod with the victim's annotations and a restart")
        .await?;

    foreign_services_are_left_alone(env).await?;
    env.victim_still_answers("(d) a tunnel-service naming a foreign Service")
        .await?;
    env.bastion_holds_only_the_victim(&gateway, None).await?;
    ensure!(
        env.gateway_allocations(&prov).await? == before,
        "allocations unchanged at the end"
    );
    pods.delete("victim", &DeleteParams::default()).await?;
    prov.shutdown().await;
    Ok(())
}

/// (a) No containerPort, the victim's annotations: nothing is allocated and
/// none of them reaches the remote pod.
async fn no_port_pod_sends_no_tunnel(
    env: &Env,
    victim: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let pods = env.pods();
    pods.create(
        &PostParams::default(),
        &user_pod("forge-a", Some(&env.node), victim, false)?,
    )
    .await?;
    let forged = wait_offloaded(&pods, "forge-a", "forge-a offloaded", POD_START).await?;
    let uid = forged.metadata.uid.context("uid")?;
    let remote: Api<Pod> = Api::all(env.remote.clone());
    let copies = remote
        .list(&ListParams::default().labels(&format!("{}={uid}", keys::LABEL_SOURCE_POD_UID)))
        .await?
        .items;
    ensure!(copies.len() == 1, "one remote copy of forge-a: {copies:?}");
    let sent = copies[0].metadata.annotations.clone().unwrap_or_default();
    let leaked: Vec<&String> = sent
        .keys()
        .filter(|k| k.starts_with(keys::tunnel::PREFIX))
        .collect();
    ensure!(
        leaked.is_empty(),
        "(a) user-written tunnel annotations reached the remote pod: {leaked:?}"
    );
    println!("offload-tunnel forged: (a) the remote copy of forge-a carries no tunnel annotation");
    Ok(())
}

/// (b) Labelled pods created straight in an unrelated remote namespace: one
/// claims a free port of our gateway, one names another gateway.
async fn foreign_remote_pods_are_not_forwarded(
    env: &Env,
    victim: &BTreeMap<String, String>,
    gateway: &str,
) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(env.remote.clone(), &env.xns);
    let ours_free: PortMap = BTreeMap::from([(ContainerPort(HTTP_PORT), GatewayPort(FREE_PORT))]);
    let mut claim = victim.clone();
    claim.insert(
        keys::tunnel::PORTS.into(),
        offload_wire::tunnel::encode_ports(&ours_free),
    );
    let mut dial = victim.clone();
    dial.insert(keys::tunnel::GATEWAY_ADDRESS.into(), ELSEWHERE.into());
    for (name, ann) in [("forge-b-claim", claim), ("forge-b-dial", dial)] {
        let mut pod = testbed::busybox_pod(name, HTTPD);
        pod.metadata.annotations = Some(ann);
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(keys::LABEL_OFFLOADING.into(), keys::OFFLOADING_VALUE.into());
        api.create(&PostParams::default(), &pod).await?;
        testbed::wait_for_pod_running(&env.remote, &env.xns, name, POD_START).await?;
    }
    env.bastion_holds_only_the_victim(gateway, Some("foreign_namespace"))
        .await?;
    let m = env.bastion_metrics().await?;
    ensure!(
        !m.contains(ELSEWHERE),
        "(b) the bastion knows the forged gateway {ELSEWHERE}: {m}"
    );
    println!(
        "offload-tunnel forged: (b) the bastion ignores the labelled pods of {} and dials nothing they name",
        env.xns
    );
    Ok(())
}

/// (c) A pod on a real node with the victim's annotations (signature
/// included) and one claiming another port with a made-up signature; then
/// the provider restarts: the same allocations come back, no more.
async fn real_node_pod_then_restart(
    env: &Env,
    prov: RunningProvider,
    cfg: Config,
    victim: &BTreeMap<String, String>,
    before: &BTreeMap<String, PortMap>,
) -> anyhow::Result<RunningProvider> {
    let pods = env.pods();
    let mut more = victim.clone();
    more.insert(
        keys::tunnel::PORTS.into(),
        format!(r#"{{"8080":{FREE_PORT},"9090":40198}}"#),
    );
    more.insert(
        keys::tunnel::ALLOCATION_SIGNATURE.into(),
        format!("v1.{}", "00".repeat(32)),
    );
    for (name, ann) in [("forge-c-copy", victim), ("forge-c-more", &more)] {
        pods.create(&PostParams::default(), &user_pod(name, None, ann, true)?)
            .await?;
        let p = testbed::wait_for_pod_running(&env.local, &env.lns, name, POD_START).await?;
        let on = p.spec.and_then(|s| s.node_name).unwrap_or_default();
        if on == env.node {
            bail!("{name} was meant for a real node, not the virtual one");
        }
    }
    prov.shutdown().await;
    let prov = start(cfg, env.local.clone(), env.tb.local.node_ip).await?;
    let after = env.gateway_allocations(&prov).await?;
    ensure!(
        &after == before,
        "(c) a restart took back more than the victim's allocation: {after:?} (before {before:?})"
    );
    println!(
        "offload-tunnel forged: (c) after a restart the allocations are the victim's only: {after:?}"
    );
    for name in ["forge-c-copy", "forge-c-more"] {
        pods.delete(name, &DeleteParams::default()).await?;
    }
    Ok(prov)
}

/// (d) `interlink.io/tunnel-service` names a Service of the user's, and
/// `<pod>-tunnel` exists already, not ours: an event, both untouched, also
/// after the pod is deleted.
async fn foreign_services_are_left_alone(env: &Env) -> anyhow::Result<()> {
    let svcs: Api<Service> = Api::namespaced(env.local.clone(), &env.lns);
    let foreign = |name: &str| -> anyhow::Result<Service> {
        Ok(serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": name, "labels": { "owner": "someone-else" } },
            "spec": { "selector": { "app": "nothing" }, "ports": [{ "port": 8080, "name": "http" }] },
        }))?)
    };
    let mut kept = Vec::new();
    for name in ["theirs", &pod_service_name("forge-d")] {
        kept.push(svcs.create(&PostParams::default(), &foreign(name)?).await?);
    }
    let ann = BTreeMap::from([(keys::tunnel::SERVICE.to_owned(), "theirs".to_owned())]);
    let pods = env.pods();
    pods.create(
        &PostParams::default(),
        &user_pod("forge-d", Some(&env.node), &ann, true)?,
    )
    .await?;
    let events: Api<Event> = Api::namespaced(env.local.clone(), &env.lns);
    let note = testbed::wait_for(
        "the foreign-Service event on forge-d",
        POD_START,
        || async {
            Ok(events
                .list(&ListParams::default().fields("involvedObject.name=forge-d"))
                .await?
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("TunnelServiceNotManaged"))
                .find_map(|e| e.message))
        },
    )
    .await?;
    println!("offload-tunnel forged: (d) event on forge-d: {note}");
    wait_offloaded(&pods, "forge-d", "forge-d offloaded", POD_START).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    pods.delete("forge-d", &DeleteParams::default()).await?;
    testbed::wait_for("forge-d gone", Duration::from_secs(120), || async {
        Ok(pods.get_opt("forge-d").await?.is_none().then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for was in kept {
        let name = was.metadata.name.clone().unwrap_or_default();
        let now = svcs
            .get_opt(&name)
            .await?
            .with_context(|| format!("(d) Service {name} was deleted"))?;
        ensure!(
            now.metadata.resource_version == was.metadata.resource_version
                && now.metadata.labels == was.metadata.labels
                && now.spec == was.spec,
            "(d) Service {name} was changed: {now:?}"
        );
        let eps =
            Api::<k8s_openapi::api::core::v1::Endpoints>::namespaced(env.local.clone(), &env.lns)
                .get_opt(&name)
                .await?;
        let gateway_ports = eps
            .iter()
            .flat_map(|e| e.subsets.iter().flatten())
            .flat_map(|s| s.ports.iter().flatten())
            .any(|p| p.port >= 40100);
        ensure!(
            !gateway_ports,
            "(d) the Endpoints of {name} point at gateway ports: {eps:?}"
        );
    }
    println!(
        "offload-tunnel forged: (d) the foreign Services are as they were after forge-d is gone"
    );
    Ok(())
}
