//! `offload-bastion run`: its flags ([`RunArgs`]) and how the pieces are
//! wired together ([`run`]).
//!
//! A source (the pod reflector, or a forwards file) publishes what should be
//! forwarded; a gate passes it on to the [`Supervisor`] only while this
//! replica leads (always, without `--lease-name`); the supervisor keeps one
//! gateway connection per gateway. Everything stops on the one shutdown
//! token: the source, the election (which releases the Lease, so a standby
//! takes over at once), the gateway connections (cancelling their forwards)
//! and the admin server.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use offload_runtime::admin::{self, Ready, SharedRegistry};
use offload_runtime::duration::parse_duration;
use offload_runtime::shutdown::CancellationToken;
use offload_wire::keys;
use russh::keys::PrivateKey;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::desired::{Desired, Gateway};
use crate::leader::{self, LeaderMetrics, LeaseConfig};
use crate::metrics::Metrics;
use crate::source;
use crate::supervisor::Supervisor;
use crate::tunnel::TunnelConfig;

/// The flags of `offload-bastion run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// OpenSSH private key of the bastion (mounted from its Secret).
    #[arg(long, env = "BASTION_KEY_FILE")]
    pub key_file: PathBuf,
    /// Account on the gateways.
    #[arg(long, env = "BASTION_USER", default_value = "tunnel")]
    pub user: String,
    /// Address the gateways listen on for each forward.
    #[arg(long, env = "BASTION_LISTEN_HOST", default_value = "0.0.0.0")]
    pub listen_host: String,
    /// Admin server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "BASTION_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,
    /// Watch pods of this namespace only (default: all namespaces).
    #[arg(long, env = "BASTION_NAMESPACE")]
    pub namespace: Option<String>,
    /// Which pods carry tunnels.
    #[arg(long, env = "BASTION_LABEL_SELECTOR", default_value = keys::OFFLOADING_SELECTOR)]
    pub label_selector: String,
    /// The gateways the bastion may dial, as JSON: `[{"address":
    /// "host:port", "hostKey": "ssh-ed25519 ..."}]`. The plugin writes it
    /// from what the authenticated provider handed it; a pod naming another
    /// gateway (or another host key) is ignored. Unset: nothing is forwarded.
    #[arg(long, env = "BASTION_GATEWAYS")]
    pub gateways: Option<String>,
    /// The plugin instance that installed this bastion: pods count only in
    /// namespaces labelled with it (`offload.dev/plugin-instance`), besides
    /// the plugin's managed-by label. Unset: the managed-by label suffices.
    #[arg(long, env = "BASTION_PLUGIN_INSTANCE")]
    pub plugin_instance: Option<String>,
    /// Instead of watching pods, read the desired forwards from this JSON file
    /// (re-read when it changes): `[{"gateway": "host:port", "hostKey":
    /// "ssh-ed25519 ...", "forwards": {"40000": "10.0.0.5:80"}}]`.
    #[arg(long, env = "BASTION_FORWARDS_FILE")]
    pub forwards_file: Option<PathBuf>,
    /// Time between keepalives when the gateway is silent (`3s`, `500ms`; a
    /// bare number is seconds).
    #[arg(long, env = "BASTION_KEEPALIVE_SECS", default_value = "3", value_parser = parse_duration)]
    pub keepalive_secs: Duration,
    /// Unanswered keepalives before the connection counts as dropped.
    #[arg(long, env = "BASTION_KEEPALIVE_MAX", default_value_t = 2)]
    pub keepalive_max: usize,
    /// Run as one of several replicas: only the holder of this
    /// coordination.k8s.io/v1 Lease holds the tunnels, the others stand by and
    /// take over when its Lease expires. Unset: no election, always active.
    #[arg(long, env = "BASTION_LEASE_NAME")]
    pub lease_name: Option<String>,
    /// Namespace of the Lease (the bastion's own namespace).
    #[arg(long, env = "BASTION_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// How long a Lease stays valid without renewal (`15s`; a bare number is
    /// seconds): a standby takes over that long after the leader died; a
    /// clean stop hands over at once.
    #[arg(long, env = "BASTION_LEASE_DURATION_SECS", default_value = "15", value_parser = parse_duration)]
    pub lease_duration_secs: Duration,
    /// This replica's identity in the Lease (unique per replica).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("read key {path}")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse bastion key {path}: {reason}")]
    ParseKey { path: PathBuf, reason: String },
    #[error(transparent)]
    Admin(#[from] admin::BindError),
    #[error("kube client (in-cluster or KUBECONFIG)")]
    Kube(#[from] kube::Error),
    #[error("no source of forwards")]
    NoSource,
    #[error("--gateways is not a JSON list of {{\"address\", \"hostKey\"}}: {0}")]
    Gateways(serde_json::Error),
}

impl RunArgs {
    /// How to talk to the gateways, with the key read from `--key-file`.
    pub fn tunnel_config(&self) -> Result<TunnelConfig, RunError> {
        let path = self.key_file.clone();
        let text = std::fs::read_to_string(&path).map_err(|source| RunError::ReadKey {
            path: path.clone(),
            source,
        })?;
        let key = PrivateKey::from_openssh(&text).map_err(|e| RunError::ParseKey {
            path,
            reason: e.to_string(),
        })?;
        let mut config = TunnelConfig::new(self.user.clone(), key);
        config.listen_host = self.listen_host.clone();
        config.keepalive_interval = self.keepalive_secs.max(Duration::from_secs(1));
        config.keepalive_max = self.keepalive_max.max(1);
        Ok(config)
    }

    /// The Lease to run for, when this replica takes part in an election.
    fn lease(&self) -> Option<LeaseConfig> {
        let name = self.lease_name.clone()?;
        let identity = match self.identity.clone().filter(|i| !i.is_empty()) {
            Some(i) => i,
            None => default_identity(),
        };
        info!(lease = %name, namespace = %self.lease_namespace, %identity, "leader election on");
        Some(
            LeaseConfig::new(self.lease_namespace.clone(), name, identity)
                .with_lease_duration(self.lease_duration_secs.max(Duration::from_secs(2))),
        )
    }

    /// A Kubernetes client is needed to watch pods or to hold a Lease.
    fn needs_client(&self) -> bool {
        self.forwards_file.is_none() || self.lease_name.is_some()
    }
}

/// `<hostname>-<random>`: unique even for two processes on one host.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bastion".to_owned());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// Hold the tunnels until `shutdown` is cancelled.
pub async fn run(args: RunArgs, shutdown: CancellationToken) -> Result<(), RunError> {
    let config = args.tunnel_config()?;
    let registry = SharedRegistry::default();
    let (metrics, leader_metrics) = registry.register("offload_bastion", |r| {
        (
            Arc::new(Metrics::registered(r)),
            Arc::new(LeaderMetrics::registered(r)),
        )
    });
    let always_leading = args.lease_name.is_none();
    let (source_tx, source_rx) = watch::channel(Desired::new());
    let (desired_tx, desired_rx) = watch::channel(Desired::new());
    let (leader_tx, leader_rx) = watch::channel(always_leading);
    leader_metrics.leader.set(i64::from(always_leading));
    let gate = tokio::spawn(leader::gate(source_rx, leader_rx.clone(), desired_tx));
    let (supervisor, ready) = Supervisor::new(Arc::new(config), Arc::clone(&metrics));
    let admin = spawn_admin(&args, registry, ready, leader_rx, &shutdown).await?;

    let client = match args.needs_client() {
        true => Some(kube::Client::try_default().await?),
        false => None,
    };
    // Without an election the sender stays here: the gate ends when it closes.
    let (election, _always) = match (args.lease(), &client) {
        (Some(lease), Some(client)) => {
            let task = leader::run(
                client.clone(),
                lease,
                leader_tx,
                leader_metrics,
                shutdown.clone(),
            );
            (Some(tokio::spawn(task)), None)
        }
        _ => (None, Some(leader_tx)),
    };
    let source = spawn_source(args, client, Arc::clone(&metrics), source_tx)?;
    let sup = tokio::spawn(supervisor.run(desired_rx, shutdown.clone()));

    shutdown.cancelled().await;
    info!("stopping: cancelling forwards");
    source.abort();
    if let Some(e) = election {
        // Releases the Lease, so the standby takes over at once.
        let _ = tokio::time::timeout(Duration::from_secs(5), e).await;
    }
    gate.abort();
    let _ = tokio::time::timeout(Duration::from_secs(10), sup).await;
    let _ = admin.await;
    Ok(())
}

/// The admin server: the runtime's router plus `/leader`.
async fn spawn_admin(
    args: &RunArgs,
    registry: SharedRegistry,
    ready: watch::Receiver<bool>,
    leader: watch::Receiver<bool>,
    shutdown: &CancellationToken,
) -> Result<JoinHandle<()>, RunError> {
    let listener = admin::bind(args.admin_addr).await?;
    info!(addr = %args.admin_addr, "admin server listening");
    let ready = Ready::watch(ready).with_bodies("ready", "forwards pending");
    let app = admin::router(registry, ready).route(
        "/leader",
        axum::routing::get(move || {
            let leading = *leader.borrow();
            async move { if leading { "leader" } else { "standby" } }
        }),
    );
    Ok(tokio::spawn(admin::serve_admin(
        listener,
        app,
        shutdown.clone(),
    )))
}

/// The `--gateways` list.
pub fn parse_gateways(text: &str) -> Result<BTreeSet<Gateway>, RunError> {
    let text = if text.trim().is_empty() { "[]" } else { text };
    let list: Vec<Gateway> = serde_json::from_str(text).map_err(RunError::Gateways)?;
    Ok(list.into_iter().collect())
}

/// Where the desired forwards come from: the file if given, else the pods.
fn spawn_source(
    args: RunArgs,
    client: Option<kube::Client>,
    metrics: Arc<Metrics>,
    desired: watch::Sender<Desired>,
) -> Result<JoinHandle<()>, RunError> {
    match (args.forwards_file, client) {
        (Some(path), _) => Ok(tokio::spawn(source::watch_file(path, desired))),
        (None, Some(client)) => {
            let pods = source::PodSource {
                namespace: args.namespace,
                label_selector: args.label_selector,
                gateways: parse_gateways(args.gateways.as_deref().unwrap_or_default())?,
                instance: args.plugin_instance.filter(|i| !i.is_empty()),
            };
            Ok(tokio::spawn(source::watch_pods(
                client, pods, metrics, desired,
            )))
        }
        (None, None) => Err(RunError::NoSource),
    }
}
