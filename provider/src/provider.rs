//! Wiring: every long-running task under one supervisor, stopped together.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::client::{ClientSettings, PluginClient, PluginError};
use crate::config::Config;
use crate::controller::{self, Context, State};
use crate::kubelet_api::{self, KubeletState};
use crate::metrics::Metrics;
use crate::node::NodeSpecInput;
use crate::node_controller::NodeController;
use crate::retry::Backoff;
use crate::tls::self_signed;
use crate::tunnel::{self, TunnelError};
use gateway_manager::GatewayManager;
use offload_runtime::admin;
use offload_runtime::tls::{self, ClientAuth, HANDSHAKE_TIMEOUT, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("setting up the plugin client: {0}")]
    Plugin(#[from] PluginError),
    #[error("kubelet API certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("setting up the tunnel gateway: {0}")]
    Tunnel(#[from] TunnelError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running provider.
pub struct RunningProvider {
    kubelet_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    pub metrics: Metrics,
    pub pods: reflector::Store<Pod>,
    /// The tunnel's local half, when `--gateway-address` is set.
    pub tunnel: Option<Arc<GatewayManager>>,
}

impl RunningProvider {
    /// Where the kubelet API listens.
    pub fn kubelet_addr(&self) -> SocketAddr {
        self.kubelet_addr
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stop every task and wait for them (the node is left NotReady).
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Wait until every task ended (after the token was cancelled elsewhere).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The local address used to reach `host:port` (no packet is sent).
pub fn local_ip_towards(host: &str, port: u16) -> Option<IpAddr> {
    use std::net::ToSocketAddrs;
    let target = (host, port).to_socket_addrs().ok()?.next()?;
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let sock = std::net::UdpSocket::bind(bind).ok()?;
    sock.connect(target).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// The cluster CA a pod's service account sees; the default client CA of the
/// kubelet API in a pod (the apiserver's kubelet client certificate is signed
/// by it in kubeadm-style clusters).
const IN_CLUSTER_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ProviderError> {
    let listen = |source| ProviderError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(listen)?;
    let bound = listener.local_addr().map_err(listen)?;
    Ok((listener, bound))
}

/// The kubelet API's TLS: the given certificate or a self-signed one, and
/// client certificates checked against `--client-ca-file` or, in a pod, the
/// cluster CA.
fn kubelet_tls(
    config: &Config,
    node_ip: IpAddr,
) -> Result<Arc<rustls::ServerConfig>, ProviderError> {
    let (certs, key) = match config.serving.files() {
        Some((c, k)) => (tls::load_certs(c)?, tls::load_key(k)?),
        None => self_signed(&[
            config.node_name.clone(),
            node_ip.to_string(),
            "localhost".into(),
        ])?,
    };
    let client_ca = config.client_ca_file.clone().or_else(|| {
        let in_cluster = std::path::Path::new(IN_CLUSTER_CA);
        in_cluster.is_file().then(|| {
            info!(
                ca = IN_CLUSTER_CA,
                "kubelet API: accepting client certificates signed by the cluster CA"
            );
            in_cluster.to_path_buf()
        })
    });
    // Client certificates are verified but not required: bearer tokens are
    // the other way in, and the handler decides on 401.
    let client = client_ca
        .as_deref()
        .map_or(ClientAuth::None, ClientAuth::Optional);
    Ok(tls::server_config(certs, key, client)?)
}

/// The plain admin port (`/metrics`, `/healthz`, `/readyz`), if configured.
async fn spawn_admin(
    config: &Config,
    metrics: &Metrics,
    ready: &Arc<AtomicBool>,
    tasks: &mut JoinSet<()>,
    cancel: &CancellationToken,
) -> Result<Option<SocketAddr>, ProviderError> {
    let Some(addr) = config.admin_addr else {
        return Ok(None);
    };
    let (l, bound) = bind(addr).await?;
    let app = admin::router(
        metrics.registry().clone(),
        admin::Ready::flag(Arc::clone(ready)),
    );
    // Drains like every other server (a scrape left open cannot hold the stop).
    tasks.spawn(admin::serve_admin(l, app, cancel.clone()));
    Ok(Some(bound))
}

/// The pod Controller, the handling of vanished pods and, once the pod cache is
/// synced (`/readyz` turns ready), status following (stream or poller). The Controller's pod
/// store is returned (the kubelet API and the tests read it).
fn spawn_pod_machinery(
    base: Shared,
    ready: Arc<AtomicBool>,
    tasks: &mut JoinSet<()>,
    cancel: &CancellationToken,
) -> reflector::Store<Pod> {
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let (pods, taps) = controller::pod_controller(
        &base.client,
        &base.config.node_name,
        base.config.workers,
        woken,
    );
    let store = pods.store();
    let ctx = Arc::new(Context {
        recorder: controller::recorder(&base.client, &base.config.node_name),
        retry: Backoff::new(base.config.retry_base, base.config.retry_max),
        client: base.client,
        plugin: base.plugin,
        config: base.config,
        metrics: base.metrics,
        pods: store.clone(),
        host_ip: base.host_ip,
        started: Timestamp::now(),
        tunnel: base.tunnel,
        wake,
        state: State::default(),
    });
    tasks.spawn(controller::run(pods, Arc::clone(&ctx), cancel.clone()));
    tasks.spawn(controller::run_vanished(
        Arc::clone(&ctx),
        taps.gone,
        cancel.clone(),
    ));
    let (c, poller_ctx, s) = (cancel.clone(), Arc::clone(&ctx), store.clone());
    let mut synced = taps.synced;
    tasks.spawn(async move {
        tokio::select! {
            _ = controller::wait_ready(&mut synced) => {}
            _ = c.cancelled() => return,
        }
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        info!(
            pods = s.state().len(),
            "pod cache synced; state rebuilt from the node's pods"
        );
        controller::run_status_updates(poller_ctx, c).await;
    });
    store
}

/// What the pod machinery is built from (the rest of [`Context`] is its own).
struct Shared {
    client: kube::Client,
    plugin: PluginClient,
    config: Arc<Config>,
    metrics: Metrics,
    host_ip: String,
    tunnel: Option<Arc<GatewayManager>>,
}

/// Start the provider against the local cluster `client`.
pub async fn start(
    config: Config,
    client: kube::Client,
    node_ip: IpAddr,
) -> Result<RunningProvider, ProviderError> {
    let config = Arc::new(config);
    let cancel = CancellationToken::new();
    let metrics = Metrics::new();
    let plugin = PluginClient::new(ClientSettings::from_config(&config), Some(metrics.clone()))?;
    let mut tasks = JoinSet::new();

    // Kubelet API first: the node must advertise the bound port.
    let (listener, kubelet_addr) = bind(config.kubelet_addr).await?;
    let server_tls = kubelet_tls(&config, node_ip)?;

    // The tunnel before the controller: its first creates need the gateway.
    let tunnel = tunnel::start(&config, &client, &plugin, &mut tasks, &cancel).await?;
    if let Some(gm) = &tunnel {
        // The embedded gateway-manager's metrics, on the same /metrics.
        gateway_manager::metrics::register_embedded(metrics.registry(), gm);
    }

    let ready = Arc::new(AtomicBool::new(false));
    let store = spawn_pod_machinery(
        Shared {
            client: client.clone(),
            plugin: plugin.clone(),
            config: Arc::clone(&config),
            metrics: metrics.clone(),
            host_ip: node_ip.to_string(),
            tunnel: tunnel.clone(),
        },
        Arc::clone(&ready),
        &mut tasks,
        &cancel,
    );

    let kstate = KubeletState::new(
        config.node_name.clone(),
        store.clone(),
        plugin.clone(),
        metrics.clone(),
        kubelet_api::Auth::new(
            config.node_name.clone(),
            Some(client.clone()),
            config.token_review,
            config.kubelet_auth.clone(),
            metrics.registry(),
        ),
    )
    .with_client(client.clone());
    info!(addr = ?listener.local_addr().ok(), "kubelet API listening");
    tasks.spawn(tls::serve_tls(
        listener,
        server_tls,
        kubelet_api::router(kstate),
        cancel.clone(),
        HANDSHAKE_TIMEOUT,
    ));
    let admin_addr = spawn_admin(&config, &metrics, &ready, &mut tasks, &cancel).await?;
    let events = crate::remote_events::RemoteEvents {
        client: client.clone(),
        plugin: plugin.clone(),
        node: config.node_name.clone(),
        pods: store.clone(),
        synced: Arc::clone(&ready),
    };
    tasks.spawn(crate::remote_events::run(
        events,
        metrics.registry().clone(),
        cancel.clone(),
    ));

    let advertised = config
        .kubelet_advertised_port
        .unwrap_or(kubelet_addr.port());
    let node = Arc::new(NodeController {
        client: client.clone(),
        plugin: plugin.clone(),
        input: NodeSpecInput::from_config(&config, node_ip, advertised),
        metrics: metrics.clone(),
        ping_interval: config.ping_interval,
        ping_failures: config.ping_failures,
        lease_duration: config.lease_duration_seconds,
        delete_on_shutdown: config.delete_node_on_shutdown,
    });
    tasks.spawn(node.run(cancel.clone()));
    info!(node = %config.node_name, %kubelet_addr, %node_ip, "provider started");
    Ok(RunningProvider {
        kubelet_addr,
        admin_addr,
        cancel,
        tasks,
        metrics,
        pods: store,
        tunnel,
    })
}
