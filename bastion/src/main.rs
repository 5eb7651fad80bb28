//! offload-bastion: see the crate docs (`src/lib.rs`) and `README.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use prometheus_client::registry::Registry;
use russh::keys::PrivateKey;
use tokio::sync::watch;
use tracing::{info, warn};

use offload_bastion::desired::{Desired, Forwards, Gateway, Target};
use offload_bastion::leader::{self, LeaderMetrics, LeaseConfig};
use offload_bastion::metrics::Metrics;
use offload_bastion::supervisor::Supervisor;
use offload_bastion::tunnel::TunnelConfig;
use offload_bastion::{admin, source};
use offload_wire::tunnel::GatewayPort;

mod bench;

#[derive(Parser)]
#[command(name = "offload-bastion", version, about)]
struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true, env = "BASTION_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Hold the tunnels: one SSH connection per gateway, one forward per port.
    Run(Box<RunArgs>),
    /// Create the bastion key (OpenSSH ed25519) if absent and print its public key.
    Keygen {
        /// Where the private key is written (0600).
        #[arg(long, env = "BASTION_KEY_FILE")]
        out: PathBuf,
        /// Replace an existing key (rotation).
        #[arg(long)]
        force: bool,
    },
    /// Throughput and latency through our tunnel vs `ssh -N -R`, on loopback.
    Bench(bench::BenchArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// OpenSSH private key of the bastion (mounted from its Secret).
    #[arg(long, env = "BASTION_KEY_FILE")]
    key_file: PathBuf,
    /// Account on the gateways.
    #[arg(long, env = "BASTION_USER", default_value = "tunnel")]
    user: String,
    /// Address the gateways listen on for each forward.
    #[arg(long, env = "BASTION_LISTEN_HOST", default_value = "0.0.0.0")]
    listen_host: String,
    /// Admin server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "BASTION_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    admin_addr: SocketAddr,
    /// Watch pods of this namespace only (default: all namespaces).
    #[arg(long, env = "BASTION_NAMESPACE")]
    namespace: Option<String>,
    /// Which pods carry tunnels.
    #[arg(
        long,
        env = "BASTION_LABEL_SELECTOR",
        default_value = "interlink.io=offloading"
    )]
    label_selector: String,
    /// Instead of watching pods, read the desired forwards from this JSON file
    /// (re-read when it changes): `[{"gateway": "host:port", "hostKey":
    /// "ssh-ed25519 ...", "forwards": {"40000": "10.0.0.5:80"}}]`.
    #[arg(long, env = "BASTION_FORWARDS_FILE")]
    forwards_file: Option<PathBuf>,
    /// Seconds between keepalives when the gateway is silent.
    #[arg(long, env = "BASTION_KEEPALIVE_SECS", default_value_t = 3)]
    keepalive_secs: u64,
    /// Unanswered keepalives before the connection counts as dropped.
    #[arg(long, env = "BASTION_KEEPALIVE_MAX", default_value_t = 2)]
    keepalive_max: usize,
    /// Run as one of several replicas: only the holder of this
    /// coordination.k8s.io/v1 Lease holds the tunnels, the others stand by and
    /// take over when its Lease expires. Unset: no election, always active.
    #[arg(long, env = "BASTION_LEASE_NAME")]
    lease_name: Option<String>,
    /// Namespace of the Lease (the bastion's own namespace).
    #[arg(long, env = "BASTION_LEASE_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Seconds a Lease stays valid without renewal (a standby takes over that
    /// long after the leader died; a clean stop hands over at once).
    #[arg(long, env = "BASTION_LEASE_DURATION_SECS", default_value_t = 15)]
    lease_duration_secs: u64,
    /// This replica's identity in the Lease (unique per replica).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Cmd::Run(args) => rt.block_on(run(*args)),
        Cmd::Keygen { out, force } => keygen(&out, force),
        Cmd::Bench(args) => rt.block_on(bench::run(args)),
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,russh=warn"));
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn keygen(out: &Path, force: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if out.exists() && !force {
        let key =
            std::fs::read_to_string(out).with_context(|| format!("read {}", out.display()))?;
        let public = offload_wire::tunnel::public_of_private(&key)?;
        println!("{public}");
        return Ok(());
    }
    let (private, public) = offload_wire::tunnel::generate_ed25519("offload-bastion")?;
    let tmp = out.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(private.as_bytes())?;
    }
    std::fs::rename(&tmp, out)?;
    println!("{public}");
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let key_text = std::fs::read_to_string(&args.key_file)
        .with_context(|| format!("read key {}", args.key_file.display()))?;
    let key = PrivateKey::from_openssh(&key_text).context("parse bastion key")?;
    let mut config = TunnelConfig::new(args.user, key);
    config.listen_host = args.listen_host;
    config.keepalive_interval = Duration::from_secs(args.keepalive_secs.max(1));
    config.keepalive_max = args.keepalive_max.max(1);

    let metrics = Arc::new(Metrics::default());
    let leader_metrics = Arc::new(LeaderMetrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    leader_metrics.register(&mut registry);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // The source writes what should be forwarded; the gate passes it on to
    // the supervisor only while this replica leads.
    let (source_tx, source_rx) = watch::channel(Desired::new());
    let (desired_tx, desired_rx) = watch::channel(Desired::new());
    let (leader_tx, leader_rx) = watch::channel(args.lease_name.is_none());
    leader_metrics
        .leader
        .set(i64::from(args.lease_name.is_none()));
    let gate = tokio::spawn(leader::gate(source_rx, leader_rx.clone(), desired_tx));
    let (supervisor, ready) = Supervisor::new(Arc::new(config), Arc::clone(&metrics));

    let listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("bind admin {}", args.admin_addr))?;
    info!(addr = %args.admin_addr, "admin server listening");
    let app = admin::router(Arc::new(registry), ready).route(
        "/leader",
        axum::routing::get(move || {
            let leading = *leader_rx.borrow();
            async move { if leading { "leader" } else { "standby" } }
        }),
    );
    let mut admin_shutdown = shutdown_rx.clone();
    let admin = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = admin_shutdown.changed().await;
            })
            .await
    });

    let needs_client = args.forwards_file.is_none() || args.lease_name.is_some();
    let client = if needs_client {
        Some(
            kube::Client::try_default()
                .await
                .context("kube client (in-cluster or KUBECONFIG)")?,
        )
    } else {
        None
    };
    let election = match (&args.lease_name, &client) {
        (Some(name), Some(client)) => {
            let identity = match args.identity.clone().filter(|i| !i.is_empty()) {
                Some(i) => i,
                None => default_identity(),
            };
            info!(lease = %name, namespace = %args.lease_namespace, %identity, "leader election on");
            let cfg = LeaseConfig::new(args.lease_namespace.clone(), name.clone(), identity)
                .with_lease_duration(Duration::from_secs(args.lease_duration_secs.max(2)));
            Some(tokio::spawn(leader::run(
                client.clone(),
                cfg,
                leader_tx,
                Arc::clone(&leader_metrics),
                shutdown_rx.clone(),
            )))
        }
        _ => None,
    };
    let source = match (args.forwards_file, client) {
        (Some(path), _) => tokio::spawn(watch_file(path, source_tx)),
        (None, Some(client)) => tokio::spawn(source::watch_pods(
            client,
            args.namespace,
            args.label_selector,
            source_tx,
        )),
        (None, None) => bail!("no source of forwards"),
    };
    let sup = tokio::spawn(supervisor.run(desired_rx, shutdown_rx));

    shutdown_signal().await;
    info!("stopping: cancelling forwards");
    let _ = shutdown_tx.send(true);
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

/// `<hostname>-<random>`: unique even for two processes on one host.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bastion".to_owned());
    format!("{host}-{:08x}", rand::random::<u32>())
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

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileEntry {
    gateway: String,
    host_key: String,
    forwards: BTreeMap<String, String>,
}

fn parse_forwards_file(text: &str) -> anyhow::Result<Desired> {
    let entries: Vec<FileEntry> = serde_json::from_str(text)?;
    let mut desired = Desired::new();
    for e in entries {
        let mut f = Forwards::new();
        for (port, target) in e.forwards {
            let port: u16 = port.parse().with_context(|| format!("port {port:?}"))?;
            let port = GatewayPort(port);
            let Some((host, tport)) = offload_wire::tunnel::split_host_port(&target) else {
                bail!("target {target:?} is not host:port");
            };
            f.insert(
                port,
                Target {
                    host: host.to_owned(),
                    port: tport,
                },
            );
        }
        desired
            .entry(Gateway {
                address: e.gateway,
                host_key: e.host_key,
            })
            .or_default()
            .extend(f);
    }
    Ok(desired)
}

async fn watch_file(path: PathBuf, desired: watch::Sender<Desired>) {
    let mut last: Option<String> = None;
    loop {
        match tokio::fs::read_to_string(&path).await {
            Ok(text) if last.as_deref() != Some(text.as_str()) => {
                match parse_forwards_file(&text) {
                    Ok(d) => {
                        desired.send_replace(d);
                    }
                    Err(e) => warn!(path = %path.display(), error = %e, "bad forwards file"),
                }
                last = Some(text);
            }
            Ok(_) => {}
            Err(e) => warn!(path = %path.display(), error = %e, "cannot read forwards file"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
