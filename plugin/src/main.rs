//! `offload-plugin`: see `offload-plugin --help` and plugin/README.md.

use anyhow::Context;
use offload_plugin::{PluginConfig, start};
use offload_runtime::{shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One crypto provider for the whole process: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match PluginConfig::load(std::env::args_os()) {
        Ok(c) => c,
        Err(offload_plugin::config::ConfigError::Cli(e)) => e.exit(),
        Err(e) => return Err(e.into()),
    };
    telemetry::init(&telemetry::LogArgs::json(config.log_json))?;
    let stop = shutdown::on_signals();
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .context("loading kubeconfig")?
        }
        None => kube::Config::infer()
            .await
            .context("finding a kubeconfig or in-cluster config")?,
    };
    let client = kube::Client::try_from(kube_config).context("building the Kubernetes client")?;
    let plugin = start(config, client).await.context("starting the plugin")?;
    tracing::info!(addr = %plugin.addr(), "offload-plugin started");
    stop.cancelled().await;
    plugin.shutdown().await;
    Ok(())
}
