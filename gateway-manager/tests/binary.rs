//! The `gateway-manager` binary in standalone mode against the real local
//! apiserver: started as an operator would (flags and KUBECONFIG), it sets up
//! the gateway, makes its own CA and certificate, registers its
//! MutatingWebhookConfiguration (scoped to this test's namespace), and then a
//! pod created for the virtual node comes back annotated, gets its Service,
//! and loses it on delete; `/healthz` and `/metrics` answer on the admin port
//! and count the admission. The configuration is deleted at the end.

mod common;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use gateway_manager::objects::pod_service_name;
use gateway_manager::webhook;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use offload_wire::tunnel::TunnelAnnotations;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(90);

async fn free_port(ip: std::net::IpAddr) -> anyhow::Result<u16> {
    Ok(tokio::net::TcpListener::bind((ip, 0))
        .await?
        .local_addr()?
        .port())
}

async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await??;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_registers_its_webhook_and_tunnels_pods() -> anyhow::Result<()> {
    let common::Local {
        cluster,
        client,
        gw_ns,
        ns,
    } = common::local("gmbin-gw", "gmbin").await?;
    let scope_label = "offload.test/gm-binary";
    common::label_namespace(&client, &ns.name, scope_label).await?;
    let scope = format!("{scope_label}={}", ns.name);
    let node = format!("vn-{}", ns.name);
    let config = format!("offload-gm-bin-{}", ns.name);
    let ip = cluster.node_ip;
    let port = free_port(ip).await?;
    let admin = format!("127.0.0.1:{}", free_port("127.0.0.1".parse()?).await?);

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway-manager"))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("GATEWAY_MANAGER_NODE_NAME", &node)
        .args(["--namespace", &gw_ns.name])
        .args(["--public-address", "10.201.0.1:30222"])
        .args(["--port-range", "43200-43209"])
        .args(["--node-port", "0"])
        .args(["--listen", &format!("{ip}:{port}")])
        .args(["--admin-addr", &admin])
        .args(["--webhook-url", &format!("https://{ip}:{port}/mutate")])
        .args(["--webhook-config", &config])
        .args(["--namespace-selector", &scope])
        .args(["--failure-policy", "fail"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting gateway-manager")?;

    // Its logs, printed when the test fails.
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let logs = tokio::spawn(async move {
        let (mut a, mut b) = (String::new(), String::new());
        let _ = tokio::join!(out.read_to_string(&mut a), err.read_to_string(&mut b));
        a + &b
    });

    let result = async {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
        let p = common::pod_with_ports(
            "web",
            &[8080],
            Some((webhook::HOSTNAME_LABEL, node.as_str())),
        );
        // Registered once the gateway is set up and the webhook answers; the
        // apiserver then picks the configuration up asynchronously.
        testbed::wait_for(
            "the binary's webhook to patch a dry-run pod",
            WAIT,
            || async {
                let dry = PostParams {
                    dry_run: true,
                    ..Default::default()
                };
                let created = pods.create(&dry, &p).await?;
                Ok(TunnelAnnotations::from_map(created.annotations())?.map(|_| ()))
            },
        )
        .await?;
        let deps: Api<Deployment> = Api::namespaced(client.clone(), &gw_ns.name);
        ensure!(
            deps.get_opt("offload-gateway").await?.is_some(),
            "no gateway Deployment"
        );

        let web = pods.create(&PostParams::default(), &p).await?;
        let t = TunnelAnnotations::from_map(web.annotations())?.context("web was not annotated")?;
        ensure!(
            t.ports.len() == 1 && t.ports.values().all(|g| (43200..=43209).contains(&g.0)),
            "ports {:?}",
            t.ports
        );
        let svcs: Api<Service> = Api::namespaced(client.clone(), &ns.name);
        let svc = pod_service_name("web");
        testbed::wait_for("web's tunnel Service", WAIT, || async {
            Ok(svcs.get_opt(&svc).await?.map(|_| ()))
        })
        .await?;

        let health = http_get(&admin, "/healthz").await?;
        ensure!(health.starts_with("HTTP/1.0 200"), "healthz: {health}");
        let metrics = http_get(&admin, "/metrics").await?;
        ensure!(
            metrics.contains(r#"offload_gateway_manager_admissions_total{result="patched"}"#),
            "metrics: {metrics}"
        );

        pods.delete("web", &DeleteParams::default().grace_period(0))
            .await?;
        testbed::wait_for("web's tunnel Service to go", WAIT, || async {
            Ok(svcs.get_opt(&svc).await?.is_none().then_some(()))
        })
        .await?;
        anyhow::Ok(())
    }
    .await;

    let _ = child.start_kill();
    let _ = child.wait().await;
    if result.is_err()
        && let Ok(Ok(logs)) = tokio::time::timeout(Duration::from_secs(5), logs).await
    {
        eprintln!("gateway-manager logs:\n{logs}");
    }
    let unregistered = webhook::unregister(&client, &config).await;
    result?;
    unregistered.context("deleting the webhook configuration")?;
    Ok(())
}
