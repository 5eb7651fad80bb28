//! The life of one gateway task: connect (pinned host key, key auth) with
//! exponential backoff, hold the desired forwards on the connection
//! ([`Session`]), and start again after a drop.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use offload_wire::tunnel::{GatewayPort, split_host_port};
use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use super::{GatewayState, Handler, Targets, TunnelConfig, TunnelError};
use crate::desired::{Forwards, Gateway, Plan};
use crate::metrics::{GatewayLabels, Metrics};

/// How a connection ended.
enum Ended {
    /// The desired-forwards sender was dropped: stop for good.
    Shutdown,
    /// The connection dropped: reconnect.
    Dropped,
}

async fn connect(
    gateway: &Gateway,
    config: &TunnelConfig,
    handler: Handler,
) -> Result<client::Handle<Handler>, TunnelError> {
    let addr = gateway.address.clone();
    let (host, port) =
        split_host_port(&gateway.address).ok_or_else(|| TunnelError::Address(addr.clone()))?;
    let ssh = |source| TunnelError::Ssh {
        gateway: addr.clone(),
        source,
    };
    let fut = async {
        let mut handle = client::connect(Arc::new(config.ssh_config()), (host, port), handler)
            .await
            .map_err(|e| match e {
                russh::Error::UnknownKey => TunnelError::HostKeyMismatch(addr.clone()),
                e => ssh(e),
            })?;
        let auth = handle
            .authenticate_publickey(
                config.user.clone(),
                PrivateKeyWithHashAlg::new(Arc::clone(&config.key), None),
            )
            .await
            .map_err(ssh)?;
        if !auth.success() {
            return Err(TunnelError::AuthRefused(addr.clone()));
        }
        Ok(handle)
    };
    tokio::time::timeout(config.connect_timeout, fut)
        .await
        .map_err(|_| TunnelError::Timeout(addr.clone()))?
}

/// Resolves when the desired-forwards sender is gone.
async fn wait_closed(desired: &mut watch::Receiver<Forwards>) {
    while desired.changed().await.is_ok() {}
}

/// What one gateway task keeps across its connections.
struct GatewayRun {
    gateway: Gateway,
    pinned: PublicKey,
    config: Arc<TunnelConfig>,
    metrics: Arc<Metrics>,
    state: watch::Sender<GatewayState>,
    targets: Targets,
    labels: GatewayLabels,
}

/// The gateway task: runs until the desired-forwards sender is dropped.
pub(super) async fn run_gateway(
    gateway: Gateway,
    mut desired: watch::Receiver<Forwards>,
    config: Arc<TunnelConfig>,
    metrics: Arc<Metrics>,
    state: watch::Sender<GatewayState>,
) {
    let pinned = match PublicKey::from_openssh(gateway.host_key.trim()) {
        Ok(k) => k,
        Err(_) => {
            let e = TunnelError::PinnedKey(gateway.host_key.clone());
            warn!(gateway = %gateway.address, error = %e, "not connecting");
            state.send_modify(|s| s.last_error = Some(e.to_string()));
            // Nothing to do until we are told to stop.
            wait_closed(&mut desired).await;
            return;
        }
    };
    let run = GatewayRun {
        labels: Metrics::gateway(&gateway.address),
        gateway,
        pinned,
        config,
        metrics,
        state,
        targets: Arc::default(),
    };
    run.run(desired).await;
}

impl GatewayRun {
    async fn run(&self, mut desired: watch::Receiver<Forwards>) {
        let mut backoff = self.config.backoff_min;
        let mut connections: u64 = 0;
        loop {
            if desired.has_changed().is_err() {
                return;
            }
            let closed = Arc::new(Notify::new());
            let handle = match connect(&self.gateway, &self.config, self.handler(&closed)).await {
                Ok(h) => h,
                Err(e) => {
                    if !self.wait_backoff(e, backoff, &mut desired).await {
                        return;
                    }
                    backoff = (backoff * 2).min(self.config.backoff_max);
                    continue;
                }
            };
            connections += 1;
            self.connected(connections);
            let since = Instant::now();
            let ended = Session::new(self, &handle, &closed)
                .serve(&mut desired)
                .await;
            self.disconnected();
            if let Ended::Shutdown = ended {
                let _ = handle
                    .disconnect(russh::Disconnect::ByApplication, "bastion stopping", "")
                    .await;
                return;
            }
            warn!(gateway = %self.gateway.address, "connection to gateway dropped; reconnecting");
            if since.elapsed() > Duration::from_secs(30) {
                backoff = self.config.backoff_min;
            }
            tokio::time::sleep(self.config.backoff_min).await;
        }
    }

    fn handler(&self, closed: &Arc<Notify>) -> Handler {
        Handler {
            gateway: self.gateway.address.clone(),
            pinned: self.pinned.clone(),
            targets: Arc::clone(&self.targets),
            metrics: Arc::clone(&self.metrics),
            target_connect_timeout: self.config.target_connect_timeout,
            closed: Arc::clone(closed),
        }
    }

    /// After a failed connect: count, log, and wait `backoff` plus up to 20%
    /// jitter. `false` when told to stop meanwhile.
    async fn wait_backoff(
        &self,
        e: TunnelError,
        backoff: Duration,
        desired: &mut watch::Receiver<Forwards>,
    ) -> bool {
        self.metrics
            .connect_failures
            .get_or_create(&self.labels)
            .inc();
        warn!(gateway = %self.gateway.address, error = %e, retry_in = ?backoff, "cannot connect to gateway");
        self.state
            .send_modify(|s| s.last_error = Some(e.to_string()));
        let jitter = backoff.mul_f64(rand::random::<f64>() * 0.2);
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => true,
            () = wait_closed(desired) => false,
        }
    }

    fn connected(&self, connections: u64) {
        if connections > 1 {
            self.metrics.reconnects.get_or_create(&self.labels).inc();
        }
        self.metrics.connected.get_or_create(&self.labels).set(1);
        info!(gateway = %self.gateway.address, connections, "connected to gateway");
        self.state.send_modify(|s| {
            s.connected = true;
            s.connections = connections;
            s.last_error = None;
        });
    }

    fn disconnected(&self) {
        self.metrics.connected.get_or_create(&self.labels).set(0);
        self.metrics.forwards.get_or_create(&self.labels).set(0);
        self.state.send_modify(|s| {
            s.connected = false;
            s.active.clear();
        });
    }
}

/// One connection: the forwards the gateway granted on it and those it
/// refused (retried every `retry_interval`: after a silent drop the gateway
/// still holds the old session's ports until its `ClientAlive` check reaps it).
struct Session<'a> {
    run: &'a GatewayRun,
    handle: &'a client::Handle<Handler>,
    closed: &'a Notify,
    active: BTreeSet<GatewayPort>,
    refused: BTreeSet<GatewayPort>,
}

impl<'a> Session<'a> {
    fn new(run: &'a GatewayRun, handle: &'a client::Handle<Handler>, closed: &'a Notify) -> Self {
        Self {
            run,
            handle,
            closed,
            active: BTreeSet::new(),
            refused: BTreeSet::new(),
        }
    }

    /// Reconcile the granted forwards with the desired ones on every change
    /// until the connection drops or the task is told to stop.
    async fn serve(mut self, desired: &mut watch::Receiver<Forwards>) -> Ended {
        loop {
            let want = desired.borrow_and_update().clone();
            if let Ok(mut t) = self.run.targets.write() {
                *t = want.iter().map(|(p, t)| (*p, t.clone())).collect();
            }
            let plan = Plan::diff(&self.active, &want);
            if !self.cancel(&plan.cancel).await {
                return Ended::Dropped;
            }
            let alive = self.request(&plan.request).await;
            self.refused.retain(|p| want.contains_key(p));
            self.publish(&want);
            if !alive || self.handle.is_closed() {
                return Ended::Dropped;
            }
            if let Some(ended) = self.wait(desired).await {
                return ended;
            }
        }
    }

    /// Cancel forwards no longer desired; `false` when the connection failed.
    async fn cancel(&mut self, ports: &[GatewayPort]) -> bool {
        let (handle, host) = (self.handle, self.run.config.listen_host.as_str());
        let address = &self.run.gateway.address;
        let results = per_port(ports, |p| handle.cancel_tcpip_forward(host, p)).await;
        for (port, r) in ports.iter().zip(results) {
            self.active.remove(port);
            match r {
                Ok(()) => debug!(gateway = %address, port = port.0, "forward cancelled"),
                Err(russh::Error::RequestDenied) => {
                    debug!(gateway = %address, port = port.0, "cancel refused (already gone)")
                }
                Err(e) => {
                    debug!(gateway = %address, error = %e, "cancel failed");
                    return false;
                }
            }
        }
        true
    }

    /// Request new forwards; `false` when the connection failed.
    async fn request(&mut self, ports: &[GatewayPort]) -> bool {
        let (handle, host) = (self.handle, self.run.config.listen_host.as_str());
        let address = &self.run.gateway.address;
        let results = per_port(ports, |p| handle.tcpip_forward(host, p)).await;
        let mut alive = true;
        for (port, r) in ports.iter().zip(results) {
            match r {
                Ok(_) => {
                    self.active.insert(*port);
                    if self.refused.remove(port) {
                        info!(gateway = %address, port = port.0, "forward granted after retry");
                    }
                }
                Err(russh::Error::RequestDenied) => self.refused_forward(*port),
                Err(e) => {
                    debug!(gateway = %address, error = %e, "forward request failed");
                    alive = false;
                }
            }
        }
        alive
    }

    fn refused_forward(&mut self, port: GatewayPort) {
        let run = self.run;
        run.metrics
            .forward_refusals
            .get_or_create(&run.labels)
            .inc();
        if self.refused.insert(port) {
            // The reason is only in the gateway's log: name the port here.
            warn!(
                gateway = %run.gateway.address, port = port.0,
                "gateway refused the forward (outside the key's permitlisten, \
                 or still held by a stale session); retrying"
            );
        }
    }

    fn publish(&self, want: &Forwards) {
        let run = self.run;
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        run.metrics
            .forwards
            .get_or_create(&run.labels)
            .set(count(self.active.len()));
        run.metrics
            .forwards_desired
            .get_or_create(&run.labels)
            .set(count(want.len()));
        run.state.send_modify(|s| {
            s.active = self.active.clone();
            s.refused = self.refused.clone();
        });
    }

    /// Until something changes: `Some` when the session is over.
    async fn wait(&self, desired: &mut watch::Receiver<Forwards>) -> Option<Ended> {
        tokio::select! {
            r = desired.changed() => r.is_err().then_some(Ended::Shutdown),
            _ = tokio::time::sleep(self.run.config.retry_interval), if !self.refused.is_empty() => None,
            _ = self.closed.notified() => Some(Ended::Dropped),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                self.handle.is_closed().then_some(Ended::Dropped)
            }
        }
    }
}

/// Sends one request per port, all at once; the answers in `ports` order.
async fn per_port<T, F: Future<Output = T>>(
    ports: &[GatewayPort],
    send: impl Fn(u32) -> F,
) -> Vec<T> {
    join_all(ports.iter().map(|p| send(u32::from(*p)))).await
}
