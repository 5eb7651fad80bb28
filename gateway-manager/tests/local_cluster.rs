//! gateway-manager against the real local apiserver (Kubernetes 1.20) of the
//! testbed: gateway objects created once and updated idempotently;
//! annotations, Services and Endpoints for a 1-port pod, a 2-port pod and a
//! 3-replica workload; everything removed on delete; allocations rebuilt from
//! the cluster after a "restart".

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use gateway_manager::objects::{GatewaySpec, pod_service_name};
use gateway_manager::{GatewayManager, Settings};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Pod, Secret, Service};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use offload_wire::keys::tunnel;
use offload_wire::tunnel::TunnelAnnotations;

mod common;

fn pod(name: &str, ports: &[i32], service: Option<&str>) -> Pod {
    // Never scheduled: only the objects matter here.
    let mut p = common::pod_with_ports(name, ports, Some(("offload.test/none", "x")));
    if let Some(s) = service {
        p.metadata.annotations = Some(BTreeMap::from([(tunnel::SERVICE.into(), s.into())]));
    }
    p
}

fn settings(ns: &str) -> Settings {
    let mut s = Settings::new(
        GatewaySpec {
            namespace: ns.into(),
            name: "offload-gateway".into(),
            image: gateway_manager::DEFAULT_GATEWAY_IMAGE.into(),
            image_pull_policy: "IfNotPresent".into(),
            service_port: 2222,
            node_port: None,
        },
        "10.201.0.1:30222",
    );
    s.range = "41000-41009".parse().expect("range");
    s
}

async fn svc_ports(client: &Client, ns: &str, name: &str) -> anyhow::Result<BTreeSet<i32>> {
    let svc = Api::<Service>::namespaced(client.clone(), ns)
        .get(name)
        .await?;
    Ok(svc
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .iter()
        .map(|p| p.port)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_objects_annotations_services_and_cleanup() -> anyhow::Result<()> {
    let common::Local {
        client, gw_ns, ns, ..
    } = common::local("gw", "gwpods").await?;
    let bastion_key = offload_wire::tunnel::generate_ed25519("bastion")?.1;
    let mut s = settings(&gw_ns.name);
    s.bastion_public_key = Some(bastion_key.clone());

    // Gateway objects: created once, then idempotent (host key kept).
    let gm = GatewayManager::start(client.clone(), s.clone()).await?;
    let host_key = gm.host_key().context("host key")?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &gw_ns.name);
    let secret_rv = secrets
        .get("offload-gateway-host-key")
        .await?
        .metadata
        .resource_version;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &gw_ns.name);
    // Generation, not resourceVersion: the Deployment's status moves on its
    // own as the gateway pod becomes ready; only a spec change bumps this.
    let dep_generation = deps.get("offload-gateway").await?.metadata.generation;
    let again = GatewayManager::start(client.clone(), s.clone()).await?;
    assert_eq!(again.host_key(), Some(host_key.clone()));
    assert_eq!(
        secrets
            .get("offload-gateway-host-key")
            .await?
            .metadata
            .resource_version,
        secret_rv
    );
    assert_eq!(
        deps.get("offload-gateway").await?.metadata.generation,
        dep_generation
    );
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &gw_ns.name)
        .get("offload-gateway")
        .await?;
    let data = cm.data.unwrap_or_default();
    assert!(data["sshd_config"].contains("GatewayPorts clientspecified"));
    assert!(data["authorized_keys"].contains("permitlisten=\"0.0.0.0:41009\""));
    assert!(data["authorized_keys"].contains(&bastion_key));
    assert_eq!(
        svc_ports(&client, &gw_ns.name, "offload-gateway").await?,
        BTreeSet::from([2222])
    );

    // Pods: 1 port, 2 ports, and a 3-replica workload behind one Service.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let mut created = Vec::new();
    for p in [
        pod("one", &[80], None),
        pod("two", &[80, 8080], None),
        pod("web-a", &[8080], Some("web")),
        pod("web-b", &[8080], Some("web")),
        pod("web-c", &[8080], Some("web")),
        pod("none", &[], None),
    ] {
        created.push(pods.create(&PostParams::default(), &p).await?);
    }
    let mut used = BTreeSet::new();
    for p in &created {
        let name = p.metadata.name.clone().unwrap_or_default();
        let t = gm.prepare_pod(p).await?;
        if name == "none" {
            assert!(t.is_none());
            continue;
        }
        let t = t.context("tunnel")?;
        // Idempotent.
        let fresh = pods.get(&name).await?;
        assert_eq!(gm.prepare_pod(&fresh).await?.as_ref(), Some(&t));
        let on_pod = TunnelAnnotations::from_map(&fresh.metadata.annotations.unwrap_or_default())?;
        assert_eq!(on_pod.as_ref(), Some(&t));
        assert_eq!(t.gateway_host_key, host_key);
        assert_eq!(t.gateway_address, "10.201.0.1:30222");
        for gw in t.ports.values() {
            assert!(used.insert(*gw), "port {gw} given twice");
            assert!((41000..=41009).contains(&gw.0));
        }
        let expect: BTreeSet<i32> = t.ports.keys().map(|p| i32::from(*p)).collect();
        assert_eq!(
            svc_ports(&client, &ns.name, &pod_service_name(&name)).await?,
            expect
        );
    }
    assert_eq!(used.len(), 6);
    assert_eq!(
        svc_ports(&client, &ns.name, "web").await?,
        BTreeSet::from([8080])
    );

    // No gateway pod is ready (no image here): Endpoints exist, list nothing,
    // and every tunnel is down.
    let up = gm.sync().await?;
    assert_eq!(up.len(), 5);
    assert!(up.values().all(|u| !u));
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(eps.get("web").await?.subsets.unwrap_or_default().len(), 0);

    // Exhaustion: 4 ports left, a 5-port pod gets a clear error, no ports.
    let big = pods
        .create(&PostParams::default(), &pod("big", &[1, 2, 3, 4, 5], None))
        .await?;
    let err = gm.prepare_pod(&big).await.expect_err("exhausted");
    assert!(err.to_string().contains("exhausted"), "{err}");

    // Restart: a new manager rebuilds the same allocations from the pods.
    let restarted = GatewayManager::start(client.clone(), s.clone()).await?;
    for p in &created {
        let fresh = pods
            .get(p.metadata.name.as_deref().unwrap_or_default())
            .await?;
        let before =
            TunnelAnnotations::from_map(&fresh.metadata.annotations.clone().unwrap_or_default())?;
        assert_eq!(restarted.prepare_pod(&fresh).await?, before);
    }

    // Delete: Services go; the workload Service goes with its last replica.
    for p in &created {
        let name = p.metadata.name.clone().unwrap_or_default();
        restarted.release_pod(p).await?;
        pods.delete(&name, &DeleteParams::default()).await?;
        let svcs: Api<Service> = Api::namespaced(client.clone(), &ns.name);
        assert!(svcs.get_opt(&pod_service_name(&name)).await?.is_none());
        let web = svcs.get_opt("web").await?.is_some();
        // Created in the order one, two, web-a, web-b, web-c, none.
        let replicas_left = !matches!(name.as_str(), "web-c" | "none");
        assert_eq!(web, replicas_left, "after {name}");
    }
    // Ports are free again.
    let big = pods.get("big").await?;
    assert_eq!(
        restarted.prepare_pod(&big).await?.map(|t| t.ports.len()),
        Some(5)
    );
    Ok(())
}
