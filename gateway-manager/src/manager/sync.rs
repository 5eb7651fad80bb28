//! Every interval: probe every tunnel, take the Endpoints plan
//! ([`crate::plan`]), write the Endpoints that changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Endpoints;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Error, GatewayManager, lock};
use crate::plan::{PortProbe, endpoints_plan, probes_of};

impl GatewayManager {
    /// Probe every tunnel (TCP connect to the gateway pod on its gateway
    /// port: sshd listens there only while the bastion's forward is up) and
    /// write the Endpoints of every tunnel Service so they list only tunnels
    /// that are up. Returns pod UID -> all its ports up.
    pub async fn sync(&self) -> Result<BTreeMap<String, bool>, Error> {
        let ips = self.gateway_ips().await?;
        let timeout = self.settings().probe_timeout;
        let pods = self.tunnel_pods();
        let probes = join_all(probes_of(&pods).map(|p| probe_port(p, &ips, timeout))).await;
        let plan = endpoints_plan(&pods, &ips, &probes);
        for ((ns, name), eps) in plan.endpoints {
            self.write_endpoints(ns, name, eps).await;
        }
        lock(&self.index).up = plan.up.clone().into_iter().collect();
        Ok(plan.up)
    }

    /// Write one tunnel Service's Endpoints unless we wrote the same last
    /// time. A failure is logged: the next sync tries again.
    async fn write_endpoints(&self, ns: String, name: String, eps: Endpoints) {
        if self.is_foreign(&ns, &name) {
            return;
        }
        let key = (ns, name);
        if lock(&self.index).written.get(&key) == Some(&eps) {
            return;
        }
        let (ns, name) = (&key.0, &key.1);
        match self.apply(&eps).await {
            Ok(_) => {
                debug!(namespace = %ns, service = %name, "tunnel endpoints written");
                lock(&self.index).written.insert(key, eps);
            }
            Err(e) => {
                warn!(namespace = %ns, service = %name, error = %e, "cannot write tunnel endpoints")
            }
        }
    }

    /// Run [`sync`](Self::sync) every `interval` until `cancel`.
    pub async fn run_until(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.sync().await {
                        warn!(error = %e, "tunnel sync failed");
                    }
                }
                _ = cancel.cancelled() => return,
            }
        }
    }
}

/// `probe` with `up` set: does some gateway pod answer on its gateway port?
async fn probe_port(probe: PortProbe, ips: &[String], timeout: Duration) -> PortProbe {
    for ip in ips {
        if connects(ip, probe.gateway_port.0, timeout).await {
            return PortProbe { up: true, ..probe };
        }
    }
    PortProbe { up: false, ..probe }
}

async fn connects(ip: &str, port: u16, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect((ip, port))).await,
        Ok(Ok(_))
    )
}
