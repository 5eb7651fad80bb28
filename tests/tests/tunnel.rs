//! The tunnel for real, on the two testbed clusters.
//!
//! Local cluster: the OpenSSH gateway pod (`localhost/offload/gateway`, non-root)
//! that gateway-manager runs, "virtual" pods (plain Pods that are never
//! scheduled: gateway-manager only reads and annotates them) and a client pod.
//! Remote cluster: the bastion pod (`localhost/offload/bastion`, installed with
//! `offload_bastion::install`) and `busybox httpd` pods carrying the labels and
//! annotations the plugin would copy onto them. Bytes go client pod -> tunnel
//! Service -> gateway pod -> SSH reverse forward -> bastion pod -> httpd pod.
//!
//! Checked: one pod through its `<pod>-tunnel` Service; a 3-replica workload
//! through its stable `interlink.io/tunnel-service` Service (every replica
//! answers); deleting the gateway pod, then the bastion pod, brings every
//! forward back by itself within 10 s of the new pod running. Measured and
//! printed: "pod Running remotely" -> "gateway port answers", and the two
//! recovery times.
//!
//! Needs the images: `deploy/images/prepare-test-images.sh` (release bastion
//! binary + gateway and bastion images); this test imports them into both
//! clusters itself. Run: `cargo test -p offload-e2e --test tunnel -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use gateway_manager::objects::{GatewaySpec, pod_service_name};
use gateway_manager::{GatewayManager, Settings};
use k8s_openapi::api::core::v1::{ContainerPort, Pod, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use offload_bastion::install::{self, BastionSpec};
use offload_e2e::tunnel::{
    BASTION_IMAGE, GATEWAY_IMAGE, HTTP_PORT, HTTPD, exec_sh, free_node_port, http_get,
    start_scenario, wait_endpoint_ports,
};
use offload_e2e::{init_tracing, phase};
use offload_wire::keys;
use offload_wire::tunnel::TunnelAnnotations;

/// What the design promises after a gateway or bastion restart.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);
const POD_START: Duration = Duration::from_secs(120);

fn with_http_port(mut pod: Pod) -> Pod {
    if let Some(c) = pod.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        c.ports = Some(vec![ContainerPort {
            container_port: i32::from(HTTP_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]);
    }
    pod
}

/// The virtual pod on the local side: never scheduled (no node matches), so
/// it stays Pending like a pod bound to a node no kubelet runs.
fn local_pod(name: &str, workload_service: Option<&str>) -> Pod {
    let mut p = with_http_port(testbed::busybox_pod(name, "sleep 3600"));
    if let Some(spec) = p.spec.as_mut() {
        spec.node_selector = Some(BTreeMap::from([(
            "offload.test/virtual".into(),
            "none".into(),
        )]));
    }
    if let Some(s) = workload_service {
        p.metadata.annotations = Some(BTreeMap::from([(keys::tunnel::SERVICE.into(), s.into())]));
    }
    p
}

/// The remote pod as the plugin makes it (plugin/src/translate.rs): owner
/// labels, the local pod's annotations (the tunnel ones among them) and the
/// source annotations.
fn remote_pod(local: &Pod, local_ns: &str) -> anyhow::Result<Pod> {
    let name = local.metadata.name.clone().context("local pod name")?;
    let uid = local.metadata.uid.clone().context("local pod uid")?;
    let mut p = with_http_port(testbed::busybox_pod(&name, HTTPD));
    let labels = p.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(keys::LABEL_OFFLOADING.into(), keys::OFFLOADING_VALUE.into());
    labels.insert(keys::LABEL_SOURCE_POD_UID.into(), uid.clone());
    labels.insert(
        keys::LABEL_MANAGED_BY.into(),
        keys::MANAGED_BY_PLUGIN.into(),
    );
    let mut ann = local.metadata.annotations.clone().unwrap_or_default();
    ann.insert(keys::ANNOTATION_SOURCE_UID.into(), uid);
    ann.insert(keys::ANNOTATION_SOURCE_NAME.into(), name);
    ann.insert(keys::ANNOTATION_SOURCE_NAMESPACE.into(), local_ns.into());
    p.metadata.annotations = Some(ann);
    Ok(p)
}

fn pod_ip(p: &Pod) -> Option<String> {
    p.status.as_ref()?.pod_ip.clone()
}

/// Poll (50 ms) until a pod matching `selector` other than `not` is Running;
/// returns it and when it was first seen Running.
async fn wait_new_running(
    api: &Api<Pod>,
    selector: &str,
    not: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<(Pod, Instant)> {
    let deadline = Instant::now() + timeout;
    loop {
        let list = api.list(&ListParams::default().labels(selector)).await?;
        if let Some(p) = list.items.into_iter().find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.metadata.name.as_deref() != not
                && phase(p) == "Running"
                && pod_ip(p).is_some()
        }) {
            return Ok((p, Instant::now()));
        }
        if Instant::now() > deadline {
            bail!("no new Running pod for {selector} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Poll (20 ms) until every `(address, expected text)` serves its page
/// through the gateway; returns when the last one did.
async fn wait_all_answer(
    targets: &[(SocketAddr, String)],
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<&(SocketAddr, String)> = targets.iter().collect();
    loop {
        let mut still = Vec::new();
        for t in pending {
            match http_get(&t.0.to_string(), "/", Duration::from_secs(2)).await {
                Ok(body) if body.contains(&t.1) => {}
                _ => still.push(t),
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("gateway ports not answering after {timeout:?}: {pending:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Env {
    tb: &'static testbed::Testbed,
    local: Client,
    remote: Client,
    lns: String,
    rns: String,
    gm: Arc<GatewayManager>,
    gateway: GatewaySpec,
    bastion: BastionSpec,
}

fn selector_string(sel: &BTreeMap<String, String>) -> String {
    sel.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Env {
    fn gateway_selector(&self) -> String {
        selector_string(&self.gateway.selector())
    }

    fn bastion_selector(&self) -> String {
        selector_string(&self.bastion.selector())
    }

    async fn gateway_pod(&self) -> anyhow::Result<(Pod, Instant)> {
        let api = Api::<Pod>::namespaced(self.local.clone(), &self.lns);
        wait_new_running(&api, &self.gateway_selector(), None, POD_START).await
    }

    /// Create the virtual pod, let gateway-manager prepare it, create the
    /// remote pod; returns the local pod (annotated) and its tunnel.
    async fn offload(
        &self,
        name: &str,
        workload: Option<&str>,
    ) -> anyhow::Result<(Pod, TunnelAnnotations)> {
        let lpods = Api::<Pod>::namespaced(self.local.clone(), &self.lns);
        let created = lpods
            .create(&PostParams::default(), &local_pod(name, workload))
            .await?;
        let tunnel = self
            .gm
            .prepare_pod(&created)
            .await?
            .context("a pod with a TCP port gets a tunnel")?;
        let annotated = lpods.get(name).await?;
        let rpods = Api::<Pod>::namespaced(self.remote.clone(), &self.rns);
        rpods
            .create(&PostParams::default(), &remote_pod(&annotated, &self.lns)?)
            .await?;
        Ok((annotated, tunnel))
    }

    /// Wait until the remote pod runs, then until its gateway port serves the
    /// page; returns that second wait.
    async fn running_to_answering(
        &self,
        name: &str,
        tunnel: &TunnelAnnotations,
        gateway_ip: &str,
    ) -> anyhow::Result<Duration> {
        let rpods = Api::<Pod>::namespaced(self.remote.clone(), &self.rns);
        let (_, running) =
            wait_new_running(&rpods, &format!("app={name}"), None, POD_START).await?;
        let gw = *tunnel
            .ports
            .get(&offload_wire::tunnel::ContainerPort(HTTP_PORT))
            .context("gateway port of 8080")?;
        let addr: SocketAddr = format!("{gateway_ip}:{gw}").parse()?;
        let answered = wait_all_answer(
            &[(addr, format!("hello from {name}"))],
            Duration::from_secs(30),
        )
        .await?;
        Ok(answered - running)
    }

    /// `sh -c script` in the local client pod.
    async fn client_sh(&self, script: &str) -> anyhow::Result<String> {
        exec_sh(&self.tb.local, &self.lns, "client", script).await
    }

    async fn cluster_ip(&self, service: &str) -> anyhow::Result<String> {
        Api::<Service>::namespaced(self.local.clone(), &self.lns)
            .get(service)
            .await?
            .spec
            .and_then(|s| s.cluster_ip)
            .with_context(|| format!("Service {service} has no ClusterIP"))
    }

    /// From the client pod, fetch through `service` until every one of
    /// `expect` has answered (kube-proxy balances over the replicas).
    async fn fetch_through_service(
        &self,
        service: &str,
        expect: &[String],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let ip = self.cluster_ip(service).await?;
        let script = format!(
            "for i in $(seq 1 {n}); do timeout 3 wget -q -O- http://{ip}:{HTTP_PORT}/; done; true",
            n = 10 * expect.len()
        );
        let deadline = Instant::now() + timeout;
        let mut seen = BTreeSet::new();
        loop {
            let out = self.client_sh(&script).await.unwrap_or_default();
            for e in expect {
                if out.contains(&format!("{e}\n")) {
                    seen.insert(e.clone());
                }
            }
            if seen.len() == expect.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "through Service {service} ({ip}:{HTTP_PORT}) only {seen:?} of {expect:?} answered"
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The 3-replica workload from the client pod: every replica through its
    /// own Service, the stable `app` Service answering, and its Endpoints
    /// listing every replica's gateway port.
    ///
    /// Every replica must answer through `app`: they all sit behind the
    /// gateway pod's IP on different ports (the testbed's kube-proxy reads
    /// Endpoints, see testbed.sh on kubernetes/kubernetes#101935).
    async fn check_workload(&self, names: &[String]) -> anyhow::Result<()> {
        for (i, n) in names.iter().enumerate() {
            self.fetch_through_service(
                &pod_service_name(&format!("app-{i}")),
                std::slice::from_ref(n),
                Duration::from_secs(30),
            )
            .await?;
        }
        wait_endpoint_ports(
            &self.local,
            &self.lns,
            "app",
            names.len(),
            Duration::from_secs(30),
        )
        .await?;
        self.fetch_through_service("app", names, Duration::from_secs(60))
            .await?;
        println!(
            "tunnel: client pod reached each replica through its Service, and all {} through \
             the workload's Service app (load-balanced); Endpoints app list them all",
            names.len()
        );
        Ok(())
    }

    async fn diagnose(&self) {
        for (cl, ns, sel) in [
            (&self.tb.local, &self.lns, self.gateway_selector()),
            (&self.tb.remote, &self.rns, self.bastion_selector()),
        ] {
            let logs = cl
                .run_kubectl(&["-n", ns, "logs", "-l", &sel, "--tail", "60"])
                .await
                .unwrap_or_else(|e| format!("(no logs: {e:#})"));
            eprintln!("--- {} logs of {sel}:\n{logs}", cl.name);
            let pods = cl
                .run_kubectl(&["-n", ns, "get", "pods", "-o", "wide"])
                .await
                .unwrap_or_default();
            eprintln!("--- {} pods in {ns}:\n{pods}", cl.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_end_to_end_on_two_clusters() -> anyhow::Result<()> {
    init_tracing("warn");
    let (tb, local, remote, lns) = start_scenario("tunnel-e2e").await?;
    let rns = tb.remote.test_namespace("tunnel-e2e").await?;

    // Remote: the bastion, watching the test namespace only (a Role).
    let mut bastion = BastionSpec::new(rns.name.clone(), BASTION_IMAGE);
    bastion.watch_namespace = Some(rns.name.clone());
    let bastion_key = install::apply(&remote, &bastion).await?;
    // Idempotent: the same key, nothing regenerated.
    ensure!(install::apply(&remote, &bastion).await? == bastion_key);

    // Local: the gateway, reachable from remote pods on the node IP.
    let node_port = free_node_port(tb, &local, None, 0).await?;
    let gateway = GatewaySpec {
        namespace: lns.name.clone(),
        name: "offload-gateway".into(),
        image: GATEWAY_IMAGE.into(),
        image_pull_policy: "IfNotPresent".into(),
        service_port: 2222,
        node_port: Some(node_port),
    };
    let mut settings = Settings::new(gateway.clone(), format!("{}:{node_port}", tb.local.node_ip));
    settings.range = "40000-40099".parse()?;
    settings.bastion_public_key = Some(bastion_key.clone());
    let public_address = settings.public_address.clone();
    let gm = GatewayManager::start(local.clone(), settings).await?;
    // The bastion dials only the gateways it is configured with (what the
    // plugin does from the provider's create requests).
    bastion.gateways = [offload_bastion::desired::Gateway {
        address: public_address,
        host_key: gm.host_key().context("gateway host key")?,
    }]
    .into();
    ensure!(install::apply(&remote, &bastion).await? == bastion_key);
    let stop = tokio_util::sync::CancellationToken::new();
    let sync = tokio::spawn(Arc::clone(&gm).run_until(Duration::from_millis(500), stop.clone()));

    let env = Env {
        tb,
        local,
        remote,
        lns: lns.name.clone(),
        rns: rns.name.clone(),
        gm,
        gateway,
        bastion,
    };
    let result = scenario(&env).await;
    if result.is_err() {
        env.diagnose().await;
    }
    stop.cancel();
    let _ = sync.await;
    let uninstalled = install::uninstall(&env.remote, &env.bastion).await;
    result?;
    uninstalled?;
    drop((lns, rns));
    Ok(())
}

/// The steps, in order; each one leaves what the next one needs.
async fn scenario(env: &Env) -> anyhow::Result<()> {
    let gw_pod = gateway_bastion_and_client_run(env).await?;
    let gw_ip = pod_ip(&gw_pod).context("gateway pod IP")?;
    let web = one_pod_through_its_service(env, &gw_ip).await?;
    let replicas = workload_through_its_stable_service(env, &gw_ip).await?;
    let names = replica_pages();
    let mut all: Vec<(String, u16)> = vec![("web".into(), gw_port(&web.1)?)];
    for (pod, tunnel) in &replicas {
        all.push((
            pod.metadata.name.clone().unwrap_or_default(),
            gw_port(tunnel)?,
        ));
    }
    let (gw_recovery, new_ip) = gateway_pod_replaced(env, &gw_pod, &all, &names).await?;
    let b_recovery = bastion_pod_replaced(env, &new_ip, &all, &names).await?;
    ensure!(
        gw_recovery <= RECOVERY_LIMIT,
        "forwards back {gw_recovery:?} after the new gateway pod ran (limit {RECOVERY_LIMIT:?})"
    );
    ensure!(
        b_recovery <= RECOVERY_LIMIT,
        "forwards back {b_recovery:?} after the new bastion pod ran (limit {RECOVERY_LIMIT:?})"
    );
    release_everything(env, std::iter::once(&web).chain(replicas.iter())).await
}

/// The local client pod, the gateway pod and the bastion pod all run; returns the
/// gateway pod.
async fn gateway_bastion_and_client_run(env: &Env) -> anyhow::Result<Pod> {
    let lpods = Api::<Pod>::namespaced(env.local.clone(), &env.lns);
    lpods
        .create(
            &PostParams::default(),
            &testbed::busybox_pod("client", "sleep 3600"),
        )
        .await?;
    let (gw_pod, _) = env.gateway_pod().await?;
    let rbpods = Api::<Pod>::namespaced(env.remote.clone(), &env.rns);
    wait_new_running(&rbpods, &env.bastion_selector(), None, POD_START).await?;
    testbed::wait_for_pod_running(&env.local, &env.lns, "client", POD_START).await?;
    Ok(gw_pod)
}

/// One pod, through its own Service.
async fn one_pod_through_its_service(
    env: &Env,
    gw_ip: &str,
) -> anyhow::Result<(Pod, TunnelAnnotations)> {
    let (web, web_tunnel) = env.offload("web", None).await?;
    let web_latency = env.running_to_answering("web", &web_tunnel, gw_ip).await?;
    println!("tunnel: web: pod Running remotely -> gateway port answers: {web_latency:?}");
    env.fetch_through_service(
        &pod_service_name("web"),
        &["hello from web".into()],
        Duration::from_secs(30),
    )
    .await?;
    println!(
        "tunnel: client pod fetched web through Service {}",
        pod_service_name("web")
    );
    Ok((web, web_tunnel))
}

/// The pages of the 3 replicas of the workload `app`.
fn replica_pages() -> Vec<String> {
    (0..3).map(|i| format!("hello from app-{i}")).collect()
}

/// A 3-replica workload, through its stable Service name.
async fn workload_through_its_stable_service(
    env: &Env,
    gw_ip: &str,
) -> anyhow::Result<Vec<(Pod, TunnelAnnotations)>> {
    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(env.offload(&format!("app-{i}"), Some("app")).await?);
    }
    for (pod, tunnel) in &replicas {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let d = env.running_to_answering(&name, tunnel, gw_ip).await?;
        println!("tunnel: {name}: pod Running remotely -> gateway port answers: {d:?}");
    }
    env.check_workload(&replica_pages()).await?;
    Ok(replicas)
}

/// Every forward (pod name, gateway port) on the gateway pod at `ip`, with the page it
/// serves.
fn targets(all: &[(String, u16)], ip: &str) -> anyhow::Result<Vec<(SocketAddr, String)>> {
    all.iter()
        .map(|(n, p)| Ok((format!("{ip}:{p}").parse()?, format!("hello from {n}"))))
        .collect()
}

/// Fault 1: the gateway pod goes; the Deployment makes a new one and the bastion
/// reconnects and restores every forward by itself. Returns the recovery time and
/// the new gateway pod's IP.
async fn gateway_pod_replaced(
    env: &Env,
    gw_pod: &Pod,
    all: &[(String, u16)],
    names: &[String],
) -> anyhow::Result<(Duration, String)> {
    let lpods = Api::<Pod>::namespaced(env.local.clone(), &env.lns);
    let old = gw_pod.metadata.name.clone().unwrap_or_default();
    lpods.delete(&old, &DeleteParams::default()).await?;
    let (new_gw, running) =
        wait_new_running(&lpods, &env.gateway_selector(), Some(&old), POD_START).await?;
    let new_ip = pod_ip(&new_gw).context("new gateway IP")?;
    let back = wait_all_answer(&targets(all, &new_ip)?, Duration::from_secs(60)).await?;
    let gw_recovery = back - running;
    println!(
        "tunnel: gateway pod replaced: new pod Running -> all {} forwards answer: {gw_recovery:?}",
        all.len()
    );
    env.fetch_through_service(
        &pod_service_name("web"),
        &["hello from web".into()],
        Duration::from_secs(30),
    )
    .await?;
    env.check_workload(names).await?;
    println!("tunnel: Services follow the new gateway pod");
    Ok((gw_recovery, new_ip))
}

/// Fault 2: the bastion pod goes. Returns the recovery time.
async fn bastion_pod_replaced(
    env: &Env,
    gw_ip: &str,
    all: &[(String, u16)],
    names: &[String],
) -> anyhow::Result<Duration> {
    let rbpods = Api::<Pod>::namespaced(env.remote.clone(), &env.rns);
    let (old_b, _) = wait_new_running(&rbpods, &env.bastion_selector(), None, POD_START).await?;
    let old_b = old_b.metadata.name.unwrap_or_default();
    rbpods.delete(&old_b, &DeleteParams::default()).await?;
    let (new_b, running) =
        wait_new_running(&rbpods, &env.bastion_selector(), Some(&old_b), POD_START).await?;
    let back = wait_all_answer(&targets(all, gw_ip)?, Duration::from_secs(60)).await?;
    let b_recovery = back - running;
    println!(
        "tunnel: bastion pod replaced: new pod Running -> all {} forwards answer: {b_recovery:?}",
        all.len()
    );
    env.check_workload(names).await?;
    if let Some(ip) = pod_ip(&new_b)
        && let Ok(m) = http_get(&format!("{ip}:9090"), "/metrics", Duration::from_secs(2)).await
    {
        for l in m
            .lines()
            .filter(|l| l.starts_with("offload_bastion_forwards"))
        {
            println!("tunnel: bastion metrics: {l}");
        }
    }
    Ok(b_recovery)
}

/// Teardown as the provider and plugin would do it: remote pods, then release; the
/// tunnel Services go with the release.
async fn release_everything(
    env: &Env,
    offloaded: impl Iterator<Item = &(Pod, TunnelAnnotations)>,
) -> anyhow::Result<()> {
    let lpods = Api::<Pod>::namespaced(env.local.clone(), &env.lns);
    let rpods = Api::<Pod>::namespaced(env.remote.clone(), &env.rns);
    for (pod, _) in offloaded {
        let name = pod.metadata.name.clone().unwrap_or_default();
        rpods.delete(&name, &DeleteParams::default()).await?;
        env.gm.release_pod(pod).await?;
        lpods.delete(&name, &DeleteParams::default()).await?;
    }
    let svcs = Api::<Service>::namespaced(env.local.clone(), &env.lns);
    for s in [pod_service_name("web"), "app".into()] {
        ensure!(
            svcs.get_opt(&s).await?.is_none(),
            "Service {s} still there after release"
        );
    }
    Ok(())
}

fn gw_port(t: &TunnelAnnotations) -> anyhow::Result<u16> {
    t.ports
        .get(&offload_wire::tunnel::ContainerPort(HTTP_PORT))
        .map(|p| p.0)
        .context("gateway port of 8080")
}
