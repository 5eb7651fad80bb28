//! Keeps one [`GatewayTask`] per gateway that has desired forwards.

use std::collections::BTreeMap;
use std::sync::Arc;

use offload_runtime::shutdown::CancellationToken;
use tokio::sync::watch;
use tracing::info;

use crate::desired::{Desired, Gateway};
use crate::metrics::Metrics;
use crate::tunnel::{GatewayTask, TunnelConfig};

pub struct Supervisor {
    config: Arc<TunnelConfig>,
    metrics: Arc<Metrics>,
    tasks: BTreeMap<Gateway, GatewayTask>,
    ready: watch::Sender<bool>,
}

impl Supervisor {
    pub fn new(config: Arc<TunnelConfig>, metrics: Arc<Metrics>) -> (Self, watch::Receiver<bool>) {
        let (ready, rx) = watch::channel(false);
        (
            Self {
                config,
                metrics,
                tasks: BTreeMap::new(),
                ready,
            },
            rx,
        )
    }

    /// Follow `desired` until it closes or `shutdown` is cancelled, then stop every
    /// gateway task (cancelling its forwards).
    pub async fn run(mut self, mut desired: watch::Receiver<Desired>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            let want = desired.borrow_and_update().clone();
            self.apply(want);
            tokio::select! {
                r = desired.changed() => if r.is_err() { break },
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.update_ready(),
            }
        }
        for (gateway, task) in std::mem::take(&mut self.tasks) {
            info!(gateway = %gateway.address, "stopping gateway connection");
            task.stop().await;
        }
    }

    /// Start, feed or stop gateway tasks so they match `want`. A gateway
    /// with no forwards left is disconnected: an idle bastion holds nothing.
    pub fn apply(&mut self, want: Desired) {
        let gone: Vec<Gateway> = self
            .tasks
            .keys()
            .filter(|g| want.get(*g).is_none_or(|f| f.is_empty()))
            .cloned()
            .collect();
        for g in gone {
            if let Some(task) = self.tasks.remove(&g) {
                info!(gateway = %g.address, "no forwards left; disconnecting");
                tokio::spawn(task.stop());
            }
        }
        for (gateway, forwards) in want {
            if forwards.is_empty() {
                continue;
            }
            match self.tasks.get(&gateway) {
                Some(task) => {
                    task.forwards.send_if_modified(|f| {
                        let changed = *f != forwards;
                        if changed {
                            *f = forwards;
                        }
                        changed
                    });
                }
                None => {
                    info!(gateway = %gateway.address, forwards = forwards.len(), "connecting to gateway");
                    let task = GatewayTask::spawn(
                        gateway.clone(),
                        forwards,
                        Arc::clone(&self.config),
                        Arc::clone(&self.metrics),
                    );
                    self.tasks.insert(gateway, task);
                }
            }
        }
        self.update_ready();
    }

    fn update_ready(&self) {
        let ready = self.tasks.values().all(|t| {
            let f = t.forwards.borrow();
            t.state.borrow().ready(&f)
        });
        self.ready.send_if_modified(|r| {
            let changed = *r != ready;
            *r = ready;
            changed
        });
    }
}
