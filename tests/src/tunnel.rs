//! What the tunnel scenarios (`tests/tests/tunnel.rs`, `tests/tests/offload_tunnel/`)
//! share: their start (testbed, images, clients, a local namespace), the images, the
//! httpd every offloaded test pod runs, a free NodePort for a gateway, plain HTTP from
//! the test process and the waits on a workload's Endpoints.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::Client;
use kube::api::{Api, ListParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The gateway image of `deploy/images/gateway.sh` (Debian's OpenSSH sshd).
pub const GATEWAY_IMAGE: &str = gateway_manager::DEFAULT_GATEWAY_IMAGE;
/// The bastion image of `deploy/images/bastion.sh`: tagged with the workspace version.
pub const BASTION_IMAGE: &str = concat!("localhost/offload/bastion:", env!("CARGO_PKG_VERSION"));
/// The port every test httpd listens on.
pub const HTTP_PORT: u16 = 8080;
/// A busybox httpd on [`HTTP_PORT`] whose page says `hello from <hostname>` (the pod
/// name). As `sh` must see it: through [`testbed::busybox_pod`] (which escapes `$`)
/// as is, in a manifest written by hand with every `$` doubled.
pub const HTTPD: &str = "mkdir -p /tmp/www && echo \"hello from $(hostname)\" > /tmp/www/index.html \
                         && exec httpd -f -p 8080 -h /tmp/www";

/// Where every tunnel scenario starts: the testbed, with the gateway and bastion
/// images imported, a client of the local and of the remote cluster, and a fresh
/// local namespace named after `local_ns`.
pub async fn start_scenario(
    local_ns: &str,
) -> anyhow::Result<(
    &'static testbed::Testbed,
    Client,
    Client,
    testbed::TestNamespace,
)> {
    let tb = testbed::testbed().await?;
    crate::import_images(tb, &["gateway", "bastion"]).await?;
    let local = tb.local.client().await?;
    let remote = tb.remote.client().await?;
    Ok((tb, local, remote, tb.local.test_namespace(local_ns).await?))
}

/// A NodePort of the local cluster that no Service holds (other tests run gateways
/// too): `preferred` when it is free, else the highest free one below the top `skip`
/// ports of the range.
pub async fn free_node_port(
    tb: &testbed::Testbed,
    client: &Client,
    preferred: Option<u16>,
    skip: usize,
) -> anyhow::Result<u16> {
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
    preferred
        .into_iter()
        .chain(range.clone().rev().skip(skip))
        .find(|p| range.contains(p) && !used.contains(&i32::from(*p)))
        .with_context(|| format!("no free NodePort in {range:?}"))
}

/// One HTTP/1.0 GET of `path` from this process to `addr` (`host:port`), all within
/// `timeout`: the whole answer (head and body).
pub async fn http_get(addr: &str, path: &str, timeout: Duration) -> anyhow::Result<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(String::from_utf8_lossy(&buf).to_string())
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .context("timeout")?
}

/// Waits until the Endpoints of Service `ns/service` list `count` ports with
/// addresses: a workload's Service with every replica behind the gateway.
pub async fn wait_endpoint_ports(
    client: &Client,
    ns: &str,
    service: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let eps = Api::<Endpoints>::namespaced(client.clone(), ns);
    testbed::wait_for(
        &format!("Endpoints {service} to list {count} gateway ports"),
        timeout,
        || async {
            let ports: BTreeSet<i32> = eps
                .get_opt(service)
                .await?
                .and_then(|e| e.subsets)
                .unwrap_or_default()
                .iter()
                .filter(|s| s.addresses.as_ref().is_some_and(|a| !a.is_empty()))
                .flat_map(|s| s.ports.clone().unwrap_or_default())
                .map(|p| p.port)
                .collect();
            Ok((ports.len() == count).then_some(()))
        },
    )
    .await
}

/// `sh -c script` in pod `ns/pod` of `cluster` (`kubectl exec`): its stdout.
pub async fn exec_sh(
    cluster: &testbed::Cluster,
    ns: &str,
    pod: &str,
    script: &str,
) -> anyhow::Result<String> {
    cluster
        .run_kubectl(&["-n", ns, "exec", pod, "--", "sh", "-c", script])
        .await
}
