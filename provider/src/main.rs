//! offload-provider binary: a thin main around [`offload_provider::provider::start`].

use anyhow::Context as _;
use clap::Parser;
use offload_provider::config::Config;
use offload_provider::provider::{local_ip_towards, start};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One crypto provider for the whole process, before anything builds a TLS config.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if config.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
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
    let client = kube::Client::try_from(kube_config).context("cannot build the kube client")?;
    let running = start(config, client, node_ip).await?;
    let cancel = running.cancel_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        cancel.cancel();
    });
    running.wait().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
