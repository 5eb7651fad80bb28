//! `gateway-manager`: the tunnel's local half in standalone mode, next to
//! another Virtual Kubelet (for example interLink's own). See
//! `gateway_manager::webhook` for what it does and why.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use gateway_manager::objects::GatewaySpec;
use gateway_manager::ports::PortRange;
use gateway_manager::webhook::{self, Endpoint, Registration, ServingCert, Webhook};
use gateway_manager::{GatewayManager, Settings};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{info, warn};

/// Run the SSH gateway of the offload tunnel next to another Virtual Kubelet.
///
/// gateway-manager keeps the gateway (an OpenSSH Deployment, its Services,
/// config and host key) in the local cluster, and serves a mutating admission
/// webhook: every pod created for the virtual node (`spec.nodeName` = the
/// node, or `nodeSelector` `kubernetes.io/hostname` = the node) with TCP
/// containerPorts gets gateway ports and the `tunnel.offload.dev/*`
/// annotations the plugin and the bastion read. A pod watcher then creates
/// the pod's `<pod>-tunnel` Service and releases ports and Services when the
/// pod goes. `/healthz` and `/metrics` are served on the webhook port (HTTPS)
/// and, with --admin-addr, over plain HTTP.
#[derive(Parser, Debug)]
#[command(name = "gateway-manager", version, about, long_about)]
struct Cli {
    /// Name of the virtual node whose pods are tunneled.
    #[arg(long, env = "GATEWAY_MANAGER_NODE_NAME")]
    node_name: String,

    /// Namespace of the gateway objects.
    #[arg(
        long,
        env = "GATEWAY_MANAGER_NAMESPACE",
        default_value = "offload-system"
    )]
    namespace: String,
    /// Name of the gateway Deployment/Services.
    #[arg(
        long,
        env = "GATEWAY_MANAGER_GATEWAY_NAME",
        default_value = "offload-gateway"
    )]
    gateway_name: String,
    /// Image of the gateway (OpenSSH sshd).
    #[arg(
        long,
        env = "GATEWAY_MANAGER_GATEWAY_IMAGE",
        default_value = "localhost/offload/gateway:1.0"
    )]
    gateway_image: String,
    #[arg(
        long,
        env = "GATEWAY_MANAGER_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    image_pull_policy: String,
    /// Port of the gateway's ClusterIP Service.
    #[arg(long, env = "GATEWAY_MANAGER_SERVICE_PORT", default_value_t = 2222)]
    service_port: u16,
    /// NodePort of the gateway (how the remote bastion reaches it); 0: no NodePort Service.
    #[arg(long, env = "GATEWAY_MANAGER_NODE_PORT", default_value_t = 30222)]
    node_port: u16,
    /// `host:port` the remote side reaches the gateway at (written into every pod).
    #[arg(long, env = "GATEWAY_MANAGER_PUBLIC_ADDRESS")]
    public_address: String,
    /// Gateway ports handed out to pods, FIRST-LAST.
    #[arg(
        long,
        env = "GATEWAY_MANAGER_PORT_RANGE",
        default_value = "40000-40999"
    )]
    port_range: PortRange,
    /// File with the bastion's OpenSSH public key (the one key allowed to log in).
    #[arg(long, env = "GATEWAY_MANAGER_BASTION_KEY_FILE")]
    bastion_key_file: Option<PathBuf>,

    /// HTTPS address of the webhook.
    #[arg(long, env = "GATEWAY_MANAGER_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Also serve `/healthz` and `/metrics` over plain HTTP here (for example 0.0.0.0:9090).
    #[arg(long, env = "GATEWAY_MANAGER_ADMIN_ADDR")]
    admin_addr: Option<SocketAddr>,
    /// Serving certificate (PEM); without it a CA and a certificate are made at start.
    #[arg(long, env = "GATEWAY_MANAGER_TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "GATEWAY_MANAGER_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// CA bundle for the webhook configuration (default: the certificate file).
    #[arg(long, env = "GATEWAY_MANAGER_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// DNS names and IPs of the self-made certificate (repeat, or comma-separated).
    /// Default: the Service name of --webhook-service, or the host of --webhook-url.
    #[arg(long, env = "GATEWAY_MANAGER_TLS_SAN", value_delimiter = ',')]
    tls_san: Vec<String>,

    /// Register (and update) the MutatingWebhookConfiguration at start.
    #[arg(long, env = "GATEWAY_MANAGER_REGISTER", default_value_t = true, action = clap::ArgAction::Set)]
    register: bool,
    /// Name of the MutatingWebhookConfiguration.
    #[arg(
        long,
        env = "GATEWAY_MANAGER_WEBHOOK_CONFIG",
        default_value = "offload-gateway-manager"
    )]
    webhook_config: String,
    /// The apiserver calls the webhook through this Service, NAMESPACE/NAME:PORT.
    #[arg(
        long,
        env = "GATEWAY_MANAGER_WEBHOOK_SERVICE",
        conflicts_with = "webhook_url"
    )]
    webhook_service: Option<String>,
    /// ... or at this URL (`https://HOST:PORT/mutate`).
    #[arg(long, env = "GATEWAY_MANAGER_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// What the apiserver does when the webhook cannot be reached (Ignore: the
    /// watcher still reconciles the pod after creation; Fail: pods matched by
    /// the selectors cannot be created while gateway-manager is down).
    #[arg(
        long,
        env = "GATEWAY_MANAGER_FAILURE_POLICY",
        value_enum,
        default_value = "ignore"
    )]
    failure_policy: FailurePolicy,
    /// Only call the webhook for namespaces with these labels, k=v[,k=v].
    #[arg(long, env = "GATEWAY_MANAGER_NAMESPACE_SELECTOR", default_value = "")]
    namespace_selector: String,
    /// Only call the webhook for pods with these labels, k=v[,k=v].
    #[arg(long, env = "GATEWAY_MANAGER_OBJECT_SELECTOR", default_value = "")]
    object_selector: String,
    /// Release ports reserved at admission when no pod shows up within this time.
    #[arg(
        long,
        env = "GATEWAY_MANAGER_RESERVATION_TTL_SECS",
        default_value_t = 120
    )]
    reservation_ttl_secs: u64,
    /// Seconds between tunnel probes (Endpoints of the tunnel Services).
    #[arg(long, env = "GATEWAY_MANAGER_SYNC_SECS", default_value_t = 2)]
    sync_secs: u64,
    /// Log as JSON lines.
    #[arg(long, env = "GATEWAY_MANAGER_LOG_JSON")]
    log_json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FailurePolicy {
    Ignore,
    Fail,
}

impl FailurePolicy {
    fn as_k8s(self) -> &'static str {
        match self {
            FailurePolicy::Ignore => "Ignore",
            FailurePolicy::Fail => "Fail",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    tokio::runtime::Runtime::new()?.block_on(run(cli))
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn parse_service(s: &str) -> anyhow::Result<Endpoint> {
    let err = || format!("--webhook-service {s:?} is not NAMESPACE/NAME:PORT");
    let (ns, rest) = s.split_once('/').with_context(err)?;
    let (name, port) = rest.split_once(':').with_context(err)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0).with_context(err)?;
    if ns.is_empty() || name.is_empty() {
        bail!(err());
    }
    Ok(Endpoint::Service {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        port,
    })
}

/// The host of `https://host[:port]/path`.
fn url_host(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("https://")
        .with_context(|| format!("--webhook-url {url:?} must start with https://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() {
        bail!("--webhook-url {url:?} has no host");
    }
    Ok(host.to_owned())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let endpoint = match (&cli.webhook_service, &cli.webhook_url) {
        (Some(s), _) => Some(parse_service(s)?),
        (None, Some(u)) => {
            url_host(u)?;
            Some(Endpoint::Url(u.clone()))
        }
        (None, None) => None,
    };
    if cli.register && endpoint.is_none() {
        bail!("--register needs --webhook-service or --webhook-url (how the apiserver reaches us)");
    }
    let namespace_labels = webhook::parse_labels(&cli.namespace_selector)
        .map_err(|e| anyhow::anyhow!("--namespace-selector: {e}"))?;
    let object_labels = webhook::parse_labels(&cli.object_selector)
        .map_err(|e| anyhow::anyhow!("--object-selector: {e}"))?;

    let cert = match (&cli.tls_cert_file, &cli.tls_key_file) {
        (Some(c), Some(k)) => ServingCert::from_files(c, k, cli.tls_ca_file.as_deref())?,
        _ => {
            let mut names = cli.tls_san.clone();
            if names.is_empty() {
                match &endpoint {
                    Some(Endpoint::Service {
                        namespace, name, ..
                    }) => {
                        names.push(format!("{name}.{namespace}.svc"));
                        names.push(format!("{name}.{namespace}.svc.cluster.local"));
                    }
                    Some(Endpoint::Url(u)) => names.push(url_host(u)?),
                    None => bail!("give --tls-san (or --tls-cert-file/--tls-key-file)"),
                }
            }
            info!(names = ?names, "made a CA and a serving certificate");
            ServingCert::self_signed(&names)?
        }
    };
    let tls = cert.server_config()?;

    let client = kube::Client::try_default()
        .await
        .context("kube client (in-cluster or KUBECONFIG)")?;
    let mut settings = Settings::new(
        GatewaySpec {
            namespace: cli.namespace.clone(),
            name: cli.gateway_name.clone(),
            image: cli.gateway_image.clone(),
            image_pull_policy: cli.image_pull_policy.clone(),
            service_port: cli.service_port,
            node_port: (cli.node_port != 0).then_some(cli.node_port),
        },
        cli.public_address.clone(),
    );
    settings.range = cli.port_range;
    if let Some(f) = &cli.bastion_key_file {
        let key = std::fs::read_to_string(f)
            .with_context(|| format!("reading the bastion key {}", f.display()))?;
        settings.bastion_public_key = Some(key.trim().to_owned());
    }
    let gm = GatewayManager::start(client.clone(), settings)
        .await
        .context("setting up the gateway")?;
    let wh = Arc::new(Webhook::new(
        Arc::clone(&gm),
        cli.node_name.clone(),
        Duration::from_secs(cli.reservation_ttl_secs.max(1)),
    ));
    let mut registry = Registry::default();
    wh.metrics.register(&mut registry);
    let registry = Arc::new(registry);
    let app = webhook::router(Arc::clone(&wh), Arc::clone(&registry));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(Arc::clone(&gm).run(
        Duration::from_secs(cli.sync_secs.max(1)),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(
        Arc::clone(&wh).watch_pods(client.clone(), shutdown_rx.clone()),
    ));
    tasks.push(tokio::spawn(
        Arc::clone(&wh).run_sweeper(Duration::from_secs(5), shutdown_rx.clone()),
    ));
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding the webhook address {}", cli.listen))?;
    info!(addr = %cli.listen, node = %cli.node_name, "webhook listening (HTTPS)");
    tasks.push(tokio::spawn(webhook::serve_tls(
        listener,
        tls,
        app.clone(),
        shutdown_rx.clone(),
    )));
    if let Some(addr) = cli.admin_addr {
        let admin = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the admin address {addr}"))?;
        info!(addr = %addr, "admin server listening (HTTP)");
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(admin, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await
            {
                warn!(error = %e, "admin server failed");
            }
        }));
    }
    // Register once we answer, so the apiserver never calls a closed port.
    if cli.register
        && let Some(endpoint) = endpoint
    {
        Registration {
            config_name: cli.webhook_config.clone(),
            endpoint,
            ca_pem: cert.ca_pem.clone(),
            failure_policy: cli.failure_policy.as_k8s().to_owned(),
            namespace_labels,
            object_labels,
            timeout_seconds: 10,
        }
        .apply(&client)
        .await
        .context("registering the MutatingWebhookConfiguration")?;
    }

    shutdown_signal().await;
    info!("stopping");
    let _ = shutdown_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_parses_endpoints() {
        Cli::command().debug_assert();
        assert_eq!(
            parse_service("offload-system/gm:443").expect("service"),
            Endpoint::Service {
                namespace: "offload-system".into(),
                name: "gm".into(),
                port: 443
            }
        );
        for bad in ["gm:443", "ns/gm", "ns/gm:0", "/gm:443", "ns/:1"] {
            assert!(parse_service(bad).is_err(), "{bad}");
        }
        assert_eq!(
            url_host("https://10.201.0.1:8443/mutate").expect("host"),
            "10.201.0.1"
        );
        assert_eq!(url_host("https://[::1]:8443/mutate").expect("host"), "::1");
        assert_eq!(
            url_host("https://gm.example/mutate").expect("host"),
            "gm.example"
        );
        assert!(url_host("http://x/mutate").is_err());
    }
}
