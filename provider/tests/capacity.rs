//! The virtual node's capacity follows the remote cluster, on the two real
//! clusters with the real plugin: the plugin's ping reports the remote
//! allocatable (minus its `--capacity-reserve`), the provider advertises it
//! unless a flag pins a resource. The remote node gets an extended resource
//! patched onto its status (as a device plugin or an operator would) and
//! loses it again; the node is restored exactly at the end.

// Not every helper of the shared harness is used here.
#[allow(unused_imports)]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, Patch, PatchParams};
use offload_plugin::capacity::{Amount, parse_reserve};
use offload_plugin::{Listen, PluginConfig};

const FOLLOW: Duration = Duration::from_secs(60);

type Resources = BTreeMap<String, Quantity>;

fn allocatable(n: &Node) -> Resources {
    n.status
        .as_ref()
        .and_then(|s| s.allocatable.clone())
        .unwrap_or_default()
}

fn capacity(n: &Node) -> Resources {
    n.status
        .as_ref()
        .and_then(|s| s.capacity.clone())
        .unwrap_or_default()
}

fn amount(r: &Resources, k: &str) -> Option<Amount> {
    r.get(k).and_then(|q| q.0.parse().ok())
}

/// Adds (`Some`) or removes (`None`) an extended resource on the remote
/// node's status (capacity and allocatable), through the status subresource.
async fn set_remote_resource(remote: &kube::Client, node: &str, name: &str, value: Option<&str>) {
    let patch = serde_json::json!({"status": {
        "capacity": {name: value},
        "allocatable": {name: value},
    }});
    Api::<Node>::all(remote.clone())
        .patch_status(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch the remote node's status");
}

/// Takes the extended resource off the remote node even when the test
/// panics (a leftover would be advertised by every virtual node).
struct RemoteResourceGuard {
    remote: kube::Client,
    node: String,
    name: String,
}

impl Drop for RemoteResourceGuard {
    fn drop(&mut self) {
        let (remote, node, name) = (self.remote.clone(), self.node.clone(), self.name.clone());
        // Drop cannot be async, and the test's runtime may be going away.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(set_remote_resource(&remote, &node, &name, None));
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_node_allocatable_follows_the_remote_cluster() {
    let env = env().await;
    let mut config = PluginConfig::for_tests();
    config.listen = Listen::Tcp(([127, 0, 0, 1], 0).into());
    config.capacity_reserve = parse_reserve("cpu=100m").expect("reserve");
    let plugin = offload_plugin::start(config, env.remote.clone())
        .await
        .expect("plugin starts");
    assert!(plugin.wait_ready(Duration::from_secs(120)).await);
    let url = format!("http://{}", plugin.addr());

    let node = node_name("vn-cap");
    let _cleanup = Cleanup::new(&env, &node_name("prov-cap"), &[&node]);
    let mut pc = offload_provider::config::Config::for_node(&node, &url);
    pc.kubelet_addr = "0.0.0.0:0".parse().expect("addr");
    pc.admin_addr = None;
    pc.client_ca_file = Some(local_pki(env.tb).join("ca.crt"));
    pc.ping_interval = Duration::from_millis(500);
    // Pinned by the operator: wins over the remote figure.
    pc.pods = Some("42".into());
    let prov = start_provider(&env, pc).await;

    let remote_nodes = Api::<Node>::all(env.remote.clone());
    let remote_name = env.tb.remote.node_name.clone();
    let before = remote_nodes.get(&remote_name).await.expect("remote node");
    let remote_cpu = amount(&allocatable(&before), "cpu").expect("remote cpu");
    let locals = Api::<Node>::all(env.local.clone());

    // The remote cluster's allocatable (one node), minus the reserve.
    let want_cpu = remote_cpu.minus("100m".parse().expect("100m"));
    let vn = wait_for(
        "the virtual node to advertise the remote cpu",
        FOLLOW,
        async || {
            let n = locals.get_opt(&node).await.ok()??;
            (amount(&allocatable(&n), "cpu")? == want_cpu).then_some(n)
        },
    )
    .await;
    let a = allocatable(&vn);
    eprintln!("remote cpu {remote_cpu}, virtual node {a:?}");
    assert_eq!(
        amount(&a, "memory"),
        amount(&allocatable(&before), "memory"),
        "memory as the remote node's"
    );
    assert_eq!(
        a.get("pods"),
        Some(&Quantity("42".into())),
        "pinned pods win"
    );
    assert_eq!(allocatable(&vn), capacity(&vn), "capacity = allocatable");

    // An extended resource appears on the remote node: it appears here.
    let widget = format!("example.com/widget-{}", &node[node.len() - 6..]);
    let guard = RemoteResourceGuard {
        remote: env.remote.clone(),
        node: remote_name.clone(),
        name: widget.clone(),
    };
    set_remote_resource(&env.remote, &remote_name, &widget, Some("4")).await;
    wait_for("the widget on the virtual node", FOLLOW, async || {
        let n = locals.get_opt(&node).await.ok()??;
        (allocatable(&n).get(&widget) == Some(&Quantity("4".into()))
            && capacity(&n).get(&widget) == Some(&Quantity("4".into())))
        .then_some(())
    })
    .await;

    // ... and goes when it goes.
    set_remote_resource(&env.remote, &remote_name, &widget, None).await;
    wait_for(
        "the widget gone from the virtual node",
        FOLLOW,
        async || {
            let n = locals.get_opt(&node).await.ok()??;
            (!allocatable(&n).contains_key(&widget) && !capacity(&n).contains_key(&widget))
                .then_some(())
        },
    )
    .await;
    drop(guard);

    // The remote node is as it was (the kubelet may have refreshed values
    // meanwhile, so compare the resource names and cpu).
    let after = remote_nodes.get(&remote_name).await.expect("remote node");
    assert_eq!(
        capacity(&after).keys().collect::<Vec<_>>(),
        capacity(&before).keys().collect::<Vec<_>>(),
        "remote node capacity restored"
    );
    assert_eq!(
        allocatable(&after).keys().collect::<Vec<_>>(),
        allocatable(&before).keys().collect::<Vec<_>>(),
        "remote node allocatable restored"
    );
    assert_eq!(amount(&allocatable(&after), "cpu"), Some(remote_cpu));
    prov.shutdown().await;
    plugin.shutdown().await;
}
