//! # offload-plugin
//!
//! The remote half of pod offloading: an HTTP server speaking the interLink
//! plugin API (`/create`, `/delete`, `/status`, `/getLogs`, plus `/ping`,
//! `/bastion/publicKey`, `/healthz`, `/readyz`, `/metrics`) that runs the pods on a remote
//! Kubernetes cluster through kube-rs. Drop-in for the Python interLink
//! Kubernetes plugin (same endpoints, same JSON), see `plugin/README.md`.
//! Our extensions, announced on `GET /capabilities` ([`capabilities`]):
//! `kubectl exec`, `attach` and `port-forward` as WebSocket streams
//! (`/stream/exec`, `/stream/attach`, `/stream/portforward`; [`stream`],
//! contract in `offload_wire::stream`); status changes as a stream
//! (`/status/watch`, [`watch`], contract in `offload_wire::watch`); remote
//! Events (`/events`, [`events`]); CPU and memory (`/stats/summary`,
//! [`stats`]).
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
//! Pure logic, no `kube::Client` in sight, unit-tested (tests of a module
//! in `<module>/tests.rs` when they are long):
//! - [`naming`]: remote names and namespaces (RFC 1123 labels, hashed when long);
//! - [`translate`]: `RetrievedPodData` -> remote pod, ConfigMaps and Secrets,
//!   one step per module (`validate`, `volumes`, `env`, `compat`, `pod`,
//!   `objects`, and `context` for the payload and its references);
//! - [`events`] (remote Events -> local pod, the bounded ring of `GET /events`),
//!   [`policy`] (what the remote operator allows), [`status`] (remote pod ->
//!   interLink `PodStatus`), [`logs`] (log options), [`capacity`] (the remote
//!   allocatable the ping reports; its node cache in `capacity/nodes.rs`),
//!   [`sweep`] (orphan decision,
//!   per caller), [`caller`] (who calls: principal + local node, the labels);
//! - [`config`]: the clap struct (`config/values.rs` the flag value types,
//!   `config/file.rs` the TOML/YAML config file; durations use
//!   `offload_runtime::duration`).
//!
//! Thin I/O around it: [`remote`] (kube-rs: watch cache, create (never over
//! a foreign object), delete (only ours), logs), [`http`] (axum: router and state; `http/handlers.rs`,
//! `http/body.rs` for JSON bodies, `http/middleware.rs` for authentication and
//! the access log, `http/limits.rs` for the server limits), [`error`] (the JSON error of every endpoint), [`serve`]
//! (listeners), [`stream`] (exec, attach and port-forward bridged to the
//! remote apiserver: `exec.rs`, `portforward.rs`, `frames.rs` the pure
//! framing), [`bastion`] (installs and keeps the bastion), the orphan-sweep
//! task (`sweeper.rs`), [`namespace_gc`] (deletes empty namespaces of ours),
//! [`watch`] (`/status/watch`: the journal of status changes the pod watch
//! feeds, resume tokens, the stream), [`capabilities`] and [`start`] below,
//! which wires them together.

pub mod bastion;
pub mod caller;
pub mod capabilities;
pub mod capacity;
pub mod config;
pub mod error;
pub mod events;
pub mod follow;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod namespace_gc;
pub mod naming;
pub mod policy;
pub mod remote;
pub mod serve;
pub mod stats;
pub mod status;
pub mod stream;
pub mod sweep;
mod sweeper;
pub mod token;
pub mod translate;
pub mod watch;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

pub use config::{Listen, PluginConfig};
use kube::Client;
use offload_runtime::admin::SharedRegistry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{metrics::Metrics, remote::Remote, sweep::Tracker};

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
    let token = config
        .auth_token()?
        .map(|t| Arc::new(token::TokenFile::new(config.token_file.clone(), t)));
    config.check_namespaces()?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            Some(serve::tls_config(cert, key, config.tls_client_ca.as_ref())?)
        }
        _ => None,
    };
    let remote_minor = match config.remote_minor_version {
        Some(m) => m,
        None => remote::remote_minor_version(&remote).await?,
    };
    info!(remote_minor, "remote apiserver version");
    log_policy(&config.policy());
    let metrics = Arc::new(Metrics::register(&SharedRegistry::default()));
    let cancel = CancellationToken::new();
    let status_watch = config.status_watch.then(|| {
        Arc::new(watch::StatusWatch::new(
            config.instance.clone(),
            config.status_watch_history as usize,
            config.max_watch_streams as usize,
            &metrics,
        ))
    });
    let tap = status_watch.clone().map(|w| -> remote::PodTap {
        Arc::new(move |event: &kube::runtime::watcher::Event<_>| w.tap(event))
    });
    let (remote, watch_task) = Remote::start(
        remote,
        metrics.clone(),
        remote_minor,
        config.namespace_ready_timeout,
        config.instance.clone(),
        tap,
        cancel.clone(),
    );
    let tracker = Arc::new(Mutex::new(Tracker::new(
        config.instance.clone(),
        config.sweep_policy(),
    )));
    let bastion_spec = config.bastion_spec();
    let bastion_key = Arc::new(match &bastion_spec {
        Some(spec) => bastion::BastionKey::pending(&spec.namespace),
        None => bastion::BastionKey::disabled(),
    });
    let events_ring = Arc::new(events::EventRing::new(events::RING_CAPACITY));
    let (capacity, capacity_task) = if config.no_remote_capacity {
        (capacity::RemoteCapacity::disabled(), None)
    } else {
        let (c, t) = capacity::RemoteCapacity::start(
            remote.client().clone(),
            config.capacity_reserve.clone(),
            metrics.clone(),
            cancel.clone(),
        );
        (c, Some(t))
    };
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
        limits: http::Limits::of(&config),
        stats: Default::default(),
        events: events_ring.clone(),
        capacity,
        streams: stream::Streams::new(config.max_open_streams as usize, metrics.registry()),
        watch: status_watch.clone(),
    });
    let app = http::router(state);
    let bound = serve::Bound::bind(&config.listen).await?;
    let addr = bound.addr();
    let server = tokio::spawn(serve::run(bound, tls, app, cancel.clone()));
    let mut tasks = vec![server, watch_task];
    tasks.push(events::spawn(
        remote.clone(),
        events_ring,
        config.instance.clone(),
        config.namespaces(),
        metrics.registry(),
        cancel.clone(),
    ));
    tasks.extend(capacity_task);
    if let Some(w) = status_watch {
        tasks.push(tokio::spawn(w.run_bookmarks(cancel.clone())));
    }
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
        tasks.push(tokio::spawn(sweeper::run(
            remote.clone(),
            config.namespaces(),
            tracker,
            config.sweep_interval,
            metrics.clone(),
            cancel.clone(),
        )));
    }
    if !config.namespace_gc_after.is_zero() {
        tasks.push(tokio::spawn(namespace_gc::run(
            remote.clone(),
            config.namespace_gc_config(),
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

/// The policy in force, at start; loudly when it checks nothing.
fn log_policy(p: &policy::Policy) {
    let volume_types = p.volume_types.iter().cloned().collect::<Vec<_>>().join(",");
    if p.level == policy::Level::Privileged {
        tracing::warn!(%volume_types, "pod security level privileged: remote pods may use the remote nodes' host namespaces, devices and files (--pod-security-level)");
    } else {
        info!(level = %p.level, %volume_types, "pod security policy");
    }
}
