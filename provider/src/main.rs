//! offload-provider binary: a thin main around [`offload_provider::provider::start`].

use anyhow::Context as _;
use clap::Parser;
use offload_provider::config::Config;
use offload_provider::kube_requests;
use offload_provider::provider::{local_ip_towards, start};
use offload_runtime::{shutdown, telemetry};

/// jemalloc with its background threads: what a burst of creates allocated
/// (whole pods, payloads, queued status writes) goes back to the system
/// within seconds once freed. With glibc's malloc the resident size stayed
/// at the burst's peak for good (at 10,000 pods, well above what the pod
/// store then holds).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One crypto provider for the whole process, before anything builds a TLS config.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::parse();
    telemetry::init(&config.log)?;
    let stop = shutdown::on_signals();
    let kube_config = kube::Config::infer()
        .await
        .context("cannot load a kubeconfig for the local cluster")?;
    let node_ip = match config.node_ip {
        Some(ip) => ip,
        None => {
            let url = &kube_config.cluster_url;
            let host = url.host().unwrap_or("127.0.0.1").trim_matches(['[', ']']);
            let port = url.port_u16().unwrap_or(443);
            local_ip_towards(host, port).context("cannot determine the node IP; pass --node-ip")?
        }
    };
    let client = kube::client::ClientBuilder::try_from(kube_config)
        .context("cannot build the kube client")?
        .with_layer(&kube_requests::layer(kube_requests::process_counter()))
        .build();
    let running = start(config, client, node_ip).await?;
    stop.cancelled().await;
    running.shutdown().await;
    Ok(())
}
