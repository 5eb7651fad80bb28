//! Standalone mode, next to another Virtual Kubelet (for example
//! interLink's own): the flags of the `gateway-manager` binary ([`Args`])
//! and what it runs ([`run`]): the gateway, the admission webhook
//! ([`crate::webhook`]) on HTTPS, its pod watcher and reservation sweeper,
//! and optionally a plain-HTTP admin port, all stopped by one token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, ValueEnum};
use offload_runtime::admin::SharedRegistry;
use offload_runtime::shutdown::CancellationToken;
use offload_runtime::telemetry::LogArgs;
use offload_runtime::{admin, cli, tls};
use tokio::task::JoinSet;
use tracing::info;

use crate::args::{AddressError, DEFAULT_NAMESPACE, GatewayArgs, STANDALONE_FORMER_NAMES};
use crate::webhook::{self, Endpoint, Registration, ServingCert, TlsError, Webhook};
use crate::{GatewayManager, Settings};

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
///
/// The gateway flags are the provider's (`--gateway-*`, `GATEWAY_*`); their
/// former names here (`--public-address`, `--namespace`, `--node-port`,
/// `--port-range`, `--service-port`, `--image-pull-policy`, `--sync-secs`
/// and the `GATEWAY_MANAGER_*` variables) are still read.
#[derive(Parser, Debug)]
#[command(name = "gateway-manager", version, about, long_about)]
pub struct Args {
    /// Name of the virtual node whose pods are tunneled.
    #[arg(long, env = "GATEWAY_MANAGER_NODE_NAME")]
    pub node_name: String,

    #[command(flatten)]
    pub gateway: GatewayArgs,

    /// File with the bastion's OpenSSH public key (the one key allowed to log in).
    #[arg(long, env = "GATEWAY_MANAGER_BASTION_KEY_FILE")]
    pub bastion_key_file: Option<PathBuf>,

    /// HTTPS address of the webhook.
    #[arg(long, env = "GATEWAY_MANAGER_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Also serve `/healthz` and `/metrics` over plain HTTP here (for example 0.0.0.0:9090).
    #[arg(long, env = "GATEWAY_MANAGER_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// The webhook's serving certificate; without it a CA and a certificate
    /// for --tls-san are made at start.
    #[command(flatten)]
    pub serving: tls::ServingCertArgs,
    /// CA bundle for the webhook configuration (default: the certificate file).
    #[arg(long, env = "GATEWAY_MANAGER_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// DNS names and IPs of the self-made certificate (repeat, or comma-separated).
    /// Default: the Service name of --webhook-service, or the host of --webhook-url.
    #[arg(long, env = "GATEWAY_MANAGER_TLS_SAN", value_delimiter = ',')]
    pub tls_san: Vec<String>,

    /// Register (and update) the MutatingWebhookConfiguration at start.
    #[arg(long, env = "GATEWAY_MANAGER_REGISTER", default_value_t = true, action = clap::ArgAction::Set)]
    pub register: bool,
    /// Name of the MutatingWebhookConfiguration.
    #[arg(
        long,
        env = "GATEWAY_MANAGER_WEBHOOK_CONFIG",
        default_value = "offload-gateway-manager"
    )]
    pub webhook_config: String,
    /// The apiserver calls the webhook through this Service, NAMESPACE/NAME:PORT.
    #[arg(
        long,
        env = "GATEWAY_MANAGER_WEBHOOK_SERVICE",
        conflicts_with = "webhook_url"
    )]
    pub webhook_service: Option<String>,
    /// ... or at this URL (`https://HOST:PORT/mutate`).
    #[arg(long, env = "GATEWAY_MANAGER_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// What the apiserver does when the webhook cannot be reached (Ignore: the
    /// watcher still reconciles the pod after creation; Fail: pods matched by
    /// the selectors cannot be created while gateway-manager is down).
    #[arg(
        long,
        env = "GATEWAY_MANAGER_FAILURE_POLICY",
        value_enum,
        default_value = "ignore"
    )]
    pub failure_policy: FailurePolicy,
    /// Only call the webhook for namespaces with these labels, k=v[,k=v].
    #[arg(long, env = "GATEWAY_MANAGER_NAMESPACE_SELECTOR", default_value = "")]
    pub namespace_selector: String,
    /// Only call the webhook for pods with these labels, k=v[,k=v].
    #[arg(long, env = "GATEWAY_MANAGER_OBJECT_SELECTOR", default_value = "")]
    pub object_selector: String,
    /// Release ports reserved at admission when no pod shows up within this time.
    #[arg(
        long,
        env = "GATEWAY_MANAGER_RESERVATION_TTL_SECS",
        default_value_t = 120
    )]
    pub reservation_ttl_secs: u64,

    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FailurePolicy {
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

impl Args {
    /// The clap command: the shared gateway flags with this binary's
    /// defaults (a required address, `offload-system`, probes every 2 s) and
    /// former names.
    pub fn command() -> clap::Command {
        let cmd = cli::old_names(<Args as CommandFactory>::command(), STANDALONE_FORMER_NAMES);
        cli::log_env(cmd, "GATEWAY_MANAGER_LOG_JSON")
            .mut_arg("address", |a| a.required(true))
            .mut_arg("namespace", |a| a.default_value(DEFAULT_NAMESPACE))
            .mut_arg("sync_interval", |a| a.default_value("2s"))
    }

    /// Parses the process's arguments and environment (exits on error).
    pub fn parse_env() -> Self {
        cli::parse(Self::command(), STANDALONE_FORMER_NAMES)
    }

    /// Parses `args`, looking former variables up with `env` (tests).
    pub fn try_parse_with(
        args: &[&str],
        env: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self, clap::Error> {
        cli::try_parse_from(
            Self::command(),
            args.iter().copied(),
            STANDALONE_FORMER_NAMES,
            env,
        )
    }
}

/// Why the standalone gateway-manager cannot run.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error("--webhook-service {0:?} is not NAMESPACE/NAME:PORT")]
    Service(String),
    #[error("--webhook-url {0:?} must start with https://")]
    UrlScheme(String),
    #[error("--webhook-url {0:?} has no host")]
    UrlHost(String),
    #[error("--register needs --webhook-service or --webhook-url (how the apiserver reaches us)")]
    NoEndpoint,
    #[error("give --tls-san (or --tls-cert-file/--tls-key-file)")]
    NoSan,
    #[error("--{flag}: {reason}")]
    Selector { flag: &'static str, reason: String },
    #[error("--gateway-address is required")]
    NoAddress,
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("reading the bastion key {path}: {source}")]
    BastionKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Bind(#[from] admin::BindError),
    #[error("kube client (in-cluster or KUBECONFIG): {0}")]
    Client(#[source] kube::Error),
    #[error("setting up the gateway: {0}")]
    Gateway(#[from] crate::Error),
    #[error("registering the MutatingWebhookConfiguration: {0}")]
    Register(#[source] offload_runtime::kubeapi::Error),
}

fn parse_service(s: &str) -> Result<Endpoint, StandaloneError> {
    let err = || StandaloneError::Service(s.to_owned());
    let (ns, rest) = s.split_once('/').ok_or_else(err)?;
    let (name, port) = rest.split_once(':').ok_or_else(err)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(err)?;
    if ns.is_empty() || name.is_empty() {
        return Err(err());
    }
    Ok(Endpoint::Service {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        port,
    })
}

/// The host of `https://host[:port]/path`.
fn url_host(url: &str) -> Result<String, StandaloneError> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| StandaloneError::UrlScheme(url.to_owned()))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() {
        return Err(StandaloneError::UrlHost(url.to_owned()));
    }
    Ok(host.to_owned())
}

/// How the apiserver reaches us, if it is told.
fn endpoint(args: &Args) -> Result<Option<Endpoint>, StandaloneError> {
    match (&args.webhook_service, &args.webhook_url) {
        (Some(s), _) => parse_service(s).map(Some),
        (None, Some(u)) => {
            url_host(u)?;
            Ok(Some(Endpoint::Url(u.clone())))
        }
        (None, None) => Ok(None),
    }
}

/// The serving certificate: from files, or a fresh CA and certificate for
/// `--tls-san` (default: the names the apiserver dials).
fn serving_cert(args: &Args, endpoint: Option<&Endpoint>) -> Result<ServingCert, StandaloneError> {
    if let Some((c, k)) = args.serving.files() {
        return Ok(ServingCert::from_files(c, k, args.tls_ca_file.as_deref())?);
    }
    let mut names = args.tls_san.clone();
    if names.is_empty() {
        match endpoint {
            Some(Endpoint::Service {
                namespace, name, ..
            }) => {
                names.push(format!("{name}.{namespace}.svc"));
                names.push(format!("{name}.{namespace}.svc.cluster.local"));
            }
            Some(Endpoint::Url(u)) => names.push(url_host(u)?),
            None => return Err(StandaloneError::NoSan),
        }
    }
    info!(names = ?names, "made a CA and a serving certificate");
    Ok(ServingCert::self_signed(&names)?)
}

fn settings(args: &Args) -> Result<Settings, StandaloneError> {
    let g = &args.gateway;
    let public_address = g.public_address()?.ok_or(StandaloneError::NoAddress)?;
    let mut settings = Settings::new(g.spec(g.namespace_or(|| None)), public_address);
    settings.range = g.port_range;
    settings.node_name = Some(args.node_name.clone());
    if let Some(path) = &args.bastion_key_file {
        let key = std::fs::read_to_string(path).map_err(|source| StandaloneError::BastionKey {
            path: path.clone(),
            source,
        })?;
        settings.bastion_public_key = Some(key.trim().to_owned());
    }
    Ok(settings)
}

/// Runs the standalone gateway-manager until `shutdown` is cancelled.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<(), StandaloneError> {
    let endpoint = endpoint(&args)?;
    if args.register && endpoint.is_none() {
        return Err(StandaloneError::NoEndpoint);
    }
    let selector = |flag, s: &str| {
        webhook::parse_labels(s).map_err(|reason| StandaloneError::Selector { flag, reason })
    };
    let namespace_labels = selector("namespace-selector", &args.namespace_selector)?;
    let object_labels = selector("object-selector", &args.object_selector)?;
    let cert = serving_cert(&args, endpoint.as_ref())?;
    let server_tls = cert.server_config()?;

    let client = kube::Client::try_default()
        .await
        .map_err(StandaloneError::Client)?;
    let gm = GatewayManager::start(client.clone(), settings(&args)?).await?;
    let ttl = Duration::from_secs(args.reservation_ttl_secs.max(1));
    let wh = Arc::new(Webhook::new(Arc::clone(&gm), args.node_name.clone(), ttl));
    let registry = SharedRegistry::default();
    registry.with_root(|r| wh.metrics.register(r));
    let app = webhook::router_with_admin(Arc::clone(&wh), registry);

    // `--sync-secs 0` used to mean 1 s; a zero interval would not tick.
    let sync = match args.gateway.sync_interval {
        Duration::ZERO => Duration::from_secs(1),
        d => d,
    };
    let mut tasks = JoinSet::new();
    tasks.spawn(Arc::clone(&gm).run_until(sync, shutdown.clone()));
    tasks.spawn(Arc::clone(&wh).watch_pods_until(client.clone(), shutdown.clone()));
    tasks.spawn(Arc::clone(&wh).sweep_until(Duration::from_secs(5), shutdown.clone()));
    let listener = admin::bind(args.listen).await?;
    info!(addr = %args.listen, node = %args.node_name, "webhook listening (HTTPS)");
    tasks.spawn(tls::serve_tls(
        listener,
        server_tls,
        app.clone(),
        shutdown.clone(),
        tls::HANDSHAKE_TIMEOUT,
    ));
    if let Some(addr) = args.admin_addr {
        let admin = admin::bind(addr).await?;
        info!(addr = %addr, "admin server listening (HTTP)");
        tasks.spawn(tls::serve(admin, app, shutdown.clone()));
    }
    // Register once we answer, so the apiserver never calls a closed port.
    if args.register
        && let Some(endpoint) = endpoint
    {
        Registration {
            config_name: args.webhook_config.clone(),
            endpoint,
            ca_pem: cert.ca_pem.clone(),
            failure_policy: args.failure_policy.as_k8s().to_owned(),
            namespace_labels,
            object_labels,
            timeout_seconds: 10,
        }
        .apply(&client)
        .await
        .map_err(StandaloneError::Register)?;
    }

    shutdown.cancelled().await;
    info!("stopping");
    let all = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(tls::DRAIN_TIMEOUT + Duration::from_secs(5), all).await;
    Ok(())
}

#[cfg(test)]
mod tests;
