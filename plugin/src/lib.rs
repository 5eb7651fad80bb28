//! # offload-plugin
//!
//! The remote half of pod offloading: an HTTP server speaking the interLink
//! plugin API (`/create`, `/delete`, `/status`, `/getLogs`, plus `/ping`,
//! `/bastion/publicKey`, `/healthz`, `/readyz`, `/metrics`) that runs the pods on a remote
//! Kubernetes cluster through kube-rs. Drop-in for the Python interLink
//! Kubernetes plugin (same endpoints, same JSON), see `plugin/README.md`.
//!
//! ## Library API (used by the provider's integration tests)
//!
//! ```no_run
//! # async fn demo(remote: kube::Client) -> Result<(), offload_plugin::Error> {
//! use offload_plugin::{PluginConfig, start};
//! let mut config = PluginConfig::for_tests(); // 127.0.0.1:0, no auth, prefix "offloading", no sweep
//! config.namespace_prefix = "offloading".into();
//! let plugin = start(config, remote).await?;  // binds, starts the pod watch, server and sweeper
//! let base = format!("http://{}", plugin.addr());
//! // ... call {base}/create, /status, /getLogs, /delete ...
//! plugin.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! - [`PluginConfig`] is the clap struct of the binary (every field public);
//!   [`PluginConfig::load`] parses args + env + config file,
//!   [`PluginConfig::for_tests`] gives a test configuration.
//! - [`start`] needs the rustls ring provider installed by the caller
//!   (`rustls::crypto::ring::default_provider().install_default()`), as every
//!   binary and test harness of the workspace does.
//! - [`RunningPlugin::addr`] is the bound TCP address (`0.0.0.0:0` for a unix
//!   socket); [`RunningPlugin::shutdown`] stops server, watch and sweeper.
//! - [`RunningPlugin::wait_ready`] waits until the remote pod cache is synced.
//! - Unless `--no-bastion` ([`PluginConfig::for_tests`] sets it), [`start`]
//!   also installs and keeps the bastion on the remote cluster ([`bastion`]);
//!   its public key is served on `GET /bastion/publicKey`.
//!
//! ## Layout
//! Pure logic, no `kube::Client` in sight, unit-tested: [`naming`],
//! [`translate`] (spec translation), [`policy`], [`status`] (status mapping),
//! [`logs`] (log options), [`sweep`] (orphan decision), [`config`].
//! Thin I/O: [`remote`] (kube-rs), [`http`] (axum), [`serve`] (listeners).

pub mod bastion;
pub mod config;
pub mod error;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod naming;
pub mod policy;
pub mod remote;
pub mod serve;
pub mod status;
pub mod sweep;
pub mod translate;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub use config::{Listen, PluginConfig};
use kube::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    metrics::Metrics,
    remote::Remote,
    sweep::{RemotePodInfo, SweepPolicy, Tracker},
};

/// Why the plugin could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
    #[error("asking the remote apiserver for its version: {0}")]
    Remote(#[from] remote::RemoteError),
}

/// A started plugin.
pub struct RunningPlugin {
    addr: SocketAddr,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    remote: Arc<Remote>,
}

impl RunningPlugin {
    /// The bound TCP address (`0.0.0.0:0` when listening on a unix socket).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits at most `timeout` for the remote pod cache's first sync.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        self.remote.wait_ready(timeout).await
    }

    /// Stops the server (in-flight requests finish), the watch and the sweeper.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds the listener, starts the remote pod watch, the HTTP server and the
/// orphan sweeper. Returns once the listener is bound.
pub async fn start(config: PluginConfig, remote: Client) -> Result<RunningPlugin, Error> {
    let token = config.auth_token()?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(serve::tls_acceptor(
            cert,
            key,
            config.tls_client_ca.as_ref(),
        )?),
        _ => None,
    };
    let remote_minor = match config.remote_minor_version {
        Some(m) => m,
        None => remote::remote_minor_version(&remote).await?,
    };
    info!(remote_minor, "remote apiserver version");
    let metrics = Arc::new(Metrics::new());
    let cancel = CancellationToken::new();
    let (remote, watch_task) = Remote::start(
        remote,
        metrics.clone(),
        remote_minor,
        config.namespace_ready_timeout,
        cancel.clone(),
    );
    let tracker = Arc::new(Mutex::new(Tracker::new(Instant::now())));
    let bastion_spec = config.bastion_spec();
    let bastion_key = Arc::new(match &bastion_spec {
        Some(spec) => bastion::BastionKey::pending(&spec.namespace),
        None => bastion::BastionKey::disabled(),
    });
    let state = Arc::new(http::AppState {
        remote: remote.clone(),
        metrics: metrics.clone(),
        translate: config.translate_config(remote_minor),
        token,
        tracker: tracker.clone(),
        observed: Mutex::new(std::collections::HashMap::new()),
        body_limit: config.body_limit,
        shutdown: cancel.clone(),
        bastion: bastion_key.clone(),
    });
    let app = http::router(state);
    let bound = serve::Bound::bind(&config.listen).await?;
    let addr = bound.addr();
    let server = tokio::spawn(serve::run(bound, tls, app, cancel.clone()));
    let mut tasks = vec![server, watch_task];
    if let Some(spec) = bastion_spec {
        info!(namespace = %spec.namespace, image = %spec.image, "keeping the bastion");
        tasks.push(tokio::spawn(bastion::keep(
            remote.client().clone(),
            spec,
            bastion_key,
            config.bastion_resync_interval,
            metrics.clone(),
            cancel.clone(),
        )));
    }
    if !config.no_sweep {
        tasks.push(tokio::spawn(sweeper(
            remote.clone(),
            config.namespaces(),
            tracker,
            config.sweep_policy(),
            config.sweep_interval,
            metrics,
            cancel.clone(),
        )));
    }
    Ok(RunningPlugin {
        addr,
        cancel,
        tasks,
        remote,
    })
}

fn pod_info(p: &k8s_openapi::api::core::v1::Pod) -> Option<RemotePodInfo> {
    let uid = p
        .metadata
        .labels
        .as_ref()?
        .get(offload_wire::keys::LABEL_SOURCE_POD_UID)?
        .clone();
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    Some(RemotePodInfo {
        uid,
        terminal: phase == "Succeeded" || phase == "Failed",
    })
}

/// Periodically deletes remote pods whose local pod is gone (see [`sweep`]).
async fn sweeper(
    remote: Arc<Remote>,
    namespaces: naming::NamespaceMapper,
    tracker: Arc<Mutex<Tracker>>,
    policy: SweepPolicy,
    every: Duration,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !remote.is_ready() {
            continue;
        }
        let pods: Vec<_> = remote
            .store()
            .state()
            .into_iter()
            .filter(|p| {
                p.metadata
                    .namespace
                    .as_deref()
                    .is_some_and(|ns| namespaces.may_own(ns))
            })
            .collect();
        let infos: Vec<RemotePodInfo> = pods.iter().filter_map(|p| pod_info(p)).collect();
        let orphans = match tracker.lock() {
            Ok(mut t) => {
                t.retain(
                    &infos,
                    Instant::now(),
                    policy.active_after.min(policy.finished_after),
                );
                t.orphans(&infos, &policy, Instant::now())
            }
            Err(_) => continue,
        };
        for uid in orphans {
            let Some(p) = pods
                .iter()
                .find(|p| pod_info(p).is_some_and(|i| i.uid == uid))
            else {
                continue;
            };
            let (Some(ns), Some(name)) =
                (p.metadata.namespace.as_deref(), p.metadata.name.as_deref())
            else {
                continue;
            };
            info!(uid = %uid, pod = name, namespace = ns, "orphan sweep: deleting remote pod");
            match remote.delete(ns, name, &uid).await {
                Ok(_) => {
                    metrics.orphans_deleted.inc();
                    if let Ok(mut t) = tracker.lock() {
                        t.forget(&uid);
                    }
                }
                Err(e) => warn!(uid = %uid, error = %e, "orphan sweep: delete failed"),
            }
        }
    }
}
