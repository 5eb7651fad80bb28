//! What the integration tests of gateway-manager share.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerPort, Pod};

/// A busybox pod (`sleep 3600`) declaring the TCP `ports`, with
/// `node_selector` (key, value) if given.
pub fn pod_with_ports(name: &str, ports: &[i32], node_selector: Option<(&str, &str)>) -> Pod {
    let mut p = testbed::busybox_pod(name, "sleep 3600");
    if let Some(spec) = p.spec.as_mut() {
        spec.node_selector =
            node_selector.map(|(k, v)| BTreeMap::from([(k.to_owned(), v.to_owned())]));
        if let Some(c) = spec.containers.first_mut() {
            c.ports = Some(
                ports
                    .iter()
                    .map(|p| ContainerPort {
                        container_port: *p,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            );
        }
    }
    p
}

/// What every test starts from on the local cluster: a client, a namespace
/// for the gateway and one for the pods.
pub struct Local {
    // Each test binary compiles this module; local_cluster never reads it.
    #[allow(dead_code)]
    pub cluster: &'static testbed::Cluster,
    pub client: kube::Client,
    pub gw_ns: testbed::TestNamespace,
    pub ns: testbed::TestNamespace,
}

pub async fn local(gw_prefix: &str, pods_prefix: &str) -> anyhow::Result<Local> {
    let tb = testbed::testbed().await?;
    Ok(Local {
        cluster: &tb.local,
        client: tb.local.client().await?,
        gw_ns: tb.local.test_namespace(gw_prefix).await?,
        ns: tb.local.test_namespace(pods_prefix).await?,
    })
}

/// Label the namespace `ns` with `key: ns`, so that a webhook whose
/// namespaceSelector is `key=ns` sees this test's pods and no other's.
// Each test binary compiles this module; local_cluster never calls it.
#[allow(dead_code)]
pub async fn label_namespace(client: &kube::Client, ns: &str, key: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, Patch, PatchParams};
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "metadata": { "labels": { key: ns } } })),
        )
        .await?;
    Ok(())
}
