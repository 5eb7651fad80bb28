//! Standalone mode against the real local apiserver (Kubernetes 1.20): the
//! admission webhook runs in this process on the host, the apiserver calls it
//! at `https://<local node IP>:<port>/mutate` (URL clientConfig, caBundle of a
//! CA made at start). The webhook configuration is cluster-wide, so it only
//! matches this test's namespace (namespaceSelector on a label only that
//! namespace has) and is deleted at the end, pass or fail.
//!
//! Checked, as a user would: a pod created while no webhook is registered
//! (gateway-manager down, failurePolicy Ignore) is given ports and its
//! Service by the watcher afterwards; a pod pinned to the virtual node (nodeSelector
//! or nodeName, named or generateName) comes back from `create` with the
//! tunnel annotations and distinct ports of the range (a forged ports
//! annotation is overwritten); a pod for another node, and one without
//! ports, are untouched; the watcher then gives each tunneled pod its
//! `<pod>-tunnel` Service owned by the pod's UID and the reservation becomes
//! the pod's; a reservation whose create failed (name taken) expires;
//! deleting a pod releases its ports and Service.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use gateway_manager::objects::{GatewaySpec, pod_service_name};
use gateway_manager::webhook::{self, Endpoint, Registration, ServingCert, Webhook};
use gateway_manager::{GatewayManager, Settings};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};
use offload_wire::keys::tunnel;
use offload_wire::tunnel::TunnelAnnotations;
use offload_wire::tunnel::{GatewayPort, PortMap};
use tokio_util::sync::CancellationToken;

const PUBLIC_ADDRESS: &str = "10.201.0.1:30222";
const RANGE: &str = "43100-43119";
const RESERVATION_TTL: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(90);

mod common;

fn pod(name: &str, node_name: Option<&str>, hostname: Option<&str>, ports: &[i32]) -> Pod {
    let mut p = common::pod_with_ports(name, ports, hostname.map(|h| (webhook::HOSTNAME_LABEL, h)));
    if let Some(spec) = p.spec.as_mut() {
        spec.node_name = node_name.map(str::to_owned);
    }
    p
}

fn generated(prefix: &str, node_name: &str, ports: &[i32]) -> Pod {
    let mut p = pod("x", Some(node_name), None, ports);
    p.metadata.name = None;
    p.metadata.generate_name = Some(prefix.into());
    p
}

fn tunnel_of(p: &Pod) -> anyhow::Result<Option<TunnelAnnotations>> {
    Ok(TunnelAnnotations::from_map(p.annotations())?)
}

/// A virtual node like a Virtual Kubelet registers (tainted, so nothing else
/// lands on it); it has no kubelet, pods on it stay Pending. It exists so the
/// pod garbage collector does not delete pods bound to it.
async fn create_node(client: &Client, name: &str) -> anyhow::Result<()> {
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "labels": { webhook::HOSTNAME_LABEL: name, "type": "virtual-kubelet" },
        },
        "spec": { "taints": [{
            "key": offload_wire::keys::TAINT_NO_SCHEDULE, "value": "true", "effect": "NoSchedule",
        }] },
    }))?;
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .with_context(|| format!("creating virtual node {name}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_annotates_pods_of_the_virtual_node_and_releases_them() -> anyhow::Result<()> {
    let common::Local {
        cluster,
        client,
        gw_ns,
        ns,
    } = common::local("gmwh-gw", "gmwh").await?;
    let scope_label = "offload.test/gm-webhook";
    common::label_namespace(&client, &ns.name, scope_label).await?;
    let node = format!("vn-{}", ns.name);
    let config_name = format!("offload-gm-test-{}", ns.name);
    create_node(&client, &node).await?;

    let stop = CancellationToken::new();
    let result = scenario(
        cluster,
        &client,
        &gw_ns.name,
        &ns.name,
        &node,
        &config_name,
        BTreeMap::from([(scope_label.to_owned(), ns.name.clone())]),
        stop.clone(),
    )
    .await;

    stop.cancel();
    // Cleanup whatever happened: the configuration is cluster-wide.
    let unregistered = webhook::unregister(&client, &config_name).await;
    let node_deleted = Api::<Node>::all(client.clone())
        .delete(&node, &DeleteParams::default())
        .await;
    result?;
    unregistered.context("deleting the webhook configuration")?;
    node_deleted.context("deleting the virtual node")?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn scenario(
    cluster: &testbed::Cluster,
    client: &Client,
    gw_ns: &str,
    ns: &str,
    node: &str,
    config_name: &str,
    namespace_labels: BTreeMap<String, String>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut s = Settings::new(
        GatewaySpec {
            namespace: gw_ns.into(),
            name: "offload-gateway".into(),
            image: gateway_manager::DEFAULT_GATEWAY_IMAGE.into(),
            image_pull_policy: "IfNotPresent".into(),
            service_port: 2222,
            node_port: None,
        },
        PUBLIC_ADDRESS,
    );
    s.range = RANGE.parse()?;
    let range = s.range;
    let gm = GatewayManager::start(client.clone(), s).await?;
    let host_key = gm.host_key().context("host key after start")?;
    let wh = Arc::new(Webhook::new(Arc::clone(&gm), node, RESERVATION_TTL));

    // The webhook, on the host address the local apiserver reaches.
    let ip = cluster.node_ip;
    let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
    let port = listener.local_addr()?.port();
    let cert = ServingCert::self_signed(&[ip.to_string()])?;
    let app = webhook::router_with_admin(Arc::clone(&wh), Default::default());
    tokio::spawn(webhook::serve_tls_until(
        listener,
        cert.server_config()?,
        app,
        stop.clone(),
    ));
    tokio::spawn(Arc::clone(&wh).watch_pods_until(client.clone(), stop.clone()));
    tokio::spawn(Arc::clone(&wh).sweep_until(Duration::from_secs(1), stop.clone()));
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns);

    // 0. A pod created while no webhook is registered (gateway-manager down
    //    with failurePolicy Ignore): the watcher gives it ports afterwards.
    let early = pods
        .create(
            &PostParams::default(),
            &pod("early", None, Some(node), &[7000]),
        )
        .await?;
    ensure!(tunnel_of(&early)?.is_none(), "annotated without a webhook?");
    let early_t = testbed::wait_for("the watcher to annotate the early pod", WAIT, || async {
        tunnel_of(&pods.get("early").await?)
    })
    .await?;
    ensure!(
        early_t.ports.keys().map(|p| p.0).collect::<Vec<_>>() == vec![7000]
            && early_t.ports.values().all(|p| range.contains(*p)),
        "early ports {:?}",
        early_t.ports
    );
    testbed::wait_for("the early pod's Service", WAIT, || async {
        Ok(svcs.get_opt(&pod_service_name("early")).await?.map(|_| ()))
    })
    .await?;

    Registration {
        config_name: config_name.into(),
        endpoint: Endpoint::Url(format!("https://{ip}:{port}{}", webhook::MUTATE_PATH)),
        ca_pem: cert.ca_pem.clone(),
        // In the test a webhook the apiserver cannot call must fail loudly.
        failure_policy: "Fail".into(),
        namespace_labels,
        object_labels: BTreeMap::new(),
        timeout_seconds: 10,
    }
    .apply(client)
    .await?;

    // The apiserver picks the configuration up asynchronously: dry-run
    // creates (no reservation kept) until one comes back patched.
    let probe = pod("probe", None, Some(node), &[80]);
    testbed::wait_for("the webhook to patch pods", WAIT, || async {
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let p = pods.create(&dry, &probe).await?;
        Ok(tunnel_of(&p)?.map(|_| ()))
    })
    .await?;
    ensure!(
        wh.pending().is_empty(),
        "a dry run left a reservation: {:?}",
        wh.pending()
    );

    // 1. Pinned by nodeSelector, named, with a forged ports annotation.
    let mut web = pod("web", None, Some(node), &[80, 8080]);
    web.metadata.annotations = Some(BTreeMap::from([
        (tunnel::PORTS.to_owned(), r#"{"80":43119}"#.to_owned()),
        ("team".to_owned(), "a/b".to_owned()),
    ]));
    let created_at = std::time::Instant::now();
    let web = pods.create(&PostParams::default(), &web).await?;
    println!("create through the webhook: {:?}", created_at.elapsed());
    let web_t = tunnel_of(&web)?.context("web has no tunnel annotations")?;
    ensure!(
        web_t.ports.keys().map(|p| p.0).collect::<Vec<_>>() == vec![80, 8080],
        "web ports: {:?}",
        web_t.ports
    );
    ensure!(web_t.gateway_address == PUBLIC_ADDRESS);
    ensure!(web_t.gateway_host_key == host_key, "host key differs");
    ensure!(web.annotations().get("team").map(String::as_str) == Some("a/b"));

    // 2. Pinned by nodeName, generateName.
    let gen_pod = pods
        .create(&PostParams::default(), &generated("gen-", node, &[9000]))
        .await?;
    let gen_t = tunnel_of(&gen_pod)?.context("generated pod has no tunnel annotations")?;

    let mut all: Vec<GatewayPort> = early_t
        .ports
        .values()
        .chain(web_t.ports.values())
        .chain(gen_t.ports.values())
        .copied()
        .collect();
    ensure!(
        all.iter().all(|p| range.contains(*p)),
        "ports outside {range}: {all:?}"
    );
    all.sort_unstable();
    all.dedup();
    ensure!(all.len() == 4, "ports are not distinct: {all:?}");

    // 3. Not ours: another node; ours but no port.
    let other = pods
        .create(
            &PostParams::default(),
            &pod("other", None, Some("elsewhere"), &[80]),
        )
        .await?;
    ensure!(
        !other
            .annotations()
            .keys()
            .any(|k| k.starts_with("tunnel.offload.dev/")),
        "pod for another node was annotated: {:?}",
        other.annotations()
    );
    let portless = pods
        .create(
            &PostParams::default(),
            &pod("portless", None, Some(node), &[]),
        )
        .await?;
    ensure!(
        tunnel_of(&portless)?.is_none(),
        "portless pod was annotated"
    );

    // 4. After creation: Services owned by the pods, reservations handed over.
    for (p, t) in [(&web, &web_t), (&gen_pod, &gen_t)] {
        let uid = p.uid().context("uid")?;
        let svc_name = pod_service_name(&p.name_any());
        let svc = testbed::wait_for(&format!("Service {svc_name}"), WAIT, || async {
            Ok(svcs.get_opt(&svc_name).await?)
        })
        .await?;
        if p.name_any() == "web" {
            println!(
                "pod created -> its tunnel Service exists: {:?}",
                created_at.elapsed()
            );
        }
        let owners: Vec<String> = svc
            .owner_references()
            .iter()
            .map(|o| o.uid.clone())
            .collect();
        ensure!(owners == vec![uid.clone()], "{svc_name} owners {owners:?}");
        let svc_ports: Vec<i32> = svc
            .spec
            .and_then(|s| s.ports)
            .unwrap_or_default()
            .iter()
            .map(|p| p.port)
            .collect();
        let want: Vec<i32> = t.ports.keys().map(|p| i32::from(*p)).collect();
        ensure!(
            svc_ports == want,
            "{svc_name} ports {svc_ports:?}, want {want:?}"
        );
        ensure!(
            gm.allocation(&uid).as_ref() == Some(&t.ports),
            "allocation of {} is {:?}, annotations say {:?}",
            p.name_any(),
            gm.allocation(&uid),
            t.ports
        );
        // The annotations written at admission were never changed.
        let now = pods.get(&p.name_any()).await?;
        ensure!(tunnel_of(&now)?.as_ref() == Some(t), "annotations changed");
    }
    ensure!(wh.pending().is_empty(), "left: {:?}", wh.pending());
    ensure!(svcs.get_opt(&pod_service_name("other")).await?.is_none());
    ensure!(svcs.get_opt(&pod_service_name("portless")).await?.is_none());

    // 5. A create that fails after admission (name taken): its reservation
    //    expires, web keeps its ports.
    let again = pods
        .create(&PostParams::default(), &pod("web", None, Some(node), &[80]))
        .await;
    ensure!(
        matches!(&again, Err(kube::Error::Api(e)) if e.code == 409),
        "second web: {again:?}"
    );
    ensure!(
        wh.pending() == vec![format!("admission:{ns}/web")],
        "pending: {:?}",
        wh.pending()
    );
    testbed::wait_for(
        "the failed create's reservation to expire",
        WAIT,
        || async { Ok(wh.pending().is_empty().then_some(())) },
    )
    .await?;
    ensure!(gm.allocation(&format!("admission:{ns}/web")).is_none());
    let web_uid = web.uid().context("uid")?;
    ensure!(gm.allocation(&web_uid).as_ref() == Some(&web_t.ports));

    // 6. Delete: ports and Services released.
    for (p, t) in [(&web, &web_t), (&gen_pod, &gen_t), (&early, &early_t)] {
        let name = p.name_any();
        let uid = p.uid().context("uid")?;
        pods.delete(&name, &DeleteParams::default().grace_period(0))
            .await?;
        released(&gm, &svcs, &name, &uid, &t.ports).await?;
    }
    ensure!(
        gm.tunnel_pods().iter().all(|t| t.namespace != ns),
        "still tracked: {:?}",
        gm.tunnel_pods()
    );
    Ok(())
}

async fn released(
    gm: &GatewayManager,
    svcs: &Api<Service>,
    name: &str,
    uid: &str,
    ports: &PortMap,
) -> anyhow::Result<()> {
    let svc_name = pod_service_name(name);
    testbed::wait_for(
        &format!("{name}'s ports and Service released"),
        WAIT,
        || async {
            let gone = svcs.get_opt(&svc_name).await?.is_none()
                && gm.allocation(uid).is_none()
                && ports.values().all(|p| gm.owner_of(*p).is_none());
            Ok(gone.then_some(()))
        },
    )
    .await
}
