//! The loops around the pin: the key the gateway starts with, and the
//! follower that asks the plugin again every `--bastion-key-refresh`.

use std::sync::Arc;
use std::time::Duration;

use gateway_manager::GatewayManager;
use kube::runtime::events::EventType;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Decision, PinStore, REASON_REFUSED, REASON_ROTATED, Reporter, decide, fingerprint};
use crate::client::{PluginClient, PluginError};

/// How long a start with a fresh gateway waits for the plugin's first key.
const FIRST_KEY_WAIT: Duration = Duration::from_secs(10);

/// The key the gateway starts with: the pinned one; else the one the gateway
/// already authorizes (an upgrade from a release without pins: pinned now);
/// else the plugin's, if it answers within [`FIRST_KEY_WAIT`] (pinned on
/// first use). A pin that cannot be read pins nothing new.
pub async fn initial_key(
    store: &PinStore,
    authorized: Option<String>,
    plugin: &PluginClient,
) -> Option<String> {
    match store.load().await {
        Ok(Some(pin)) if pin.key.is_some() => return pin.key,
        Ok(_) => {}
        Err(e) => {
            warn!(error = %e, pin = store.name(), "cannot read the bastion key pin; keeping what the gateway authorizes");
            return authorized;
        }
    }
    let key = match authorized {
        Some(k) => Some(k),
        None => first_key(plugin).await,
    }?;
    match store.save(&key).await {
        Ok(()) => {
            info!(fingerprint = ?fingerprint(&key), pin = store.name(), "bastion key pinned on first use");
            Some(key)
        }
        Err(e) => {
            // Not pinned: the follower pins it (or refuses) once it can write.
            warn!(error = %e, pin = store.name(), "cannot pin the bastion key");
            Some(key)
        }
    }
}

/// The plugin's bastion key if it can tell within [`FIRST_KEY_WAIT`].
async fn first_key(plugin: &PluginClient) -> Option<String> {
    let ask = async {
        loop {
            match offered_key(plugin).await {
                Ok(k) => return Some(k),
                Err(e) if is_not_found(&e) => return None,
                Err(PluginError::Decode(e)) => {
                    warn!(error = %e, "the plugin's bastion key is not an OpenSSH public key");
                    return None;
                }
                Err(e) => debug!(error = %e, "no bastion key from the plugin yet"),
            }
            tokio::time::sleep(jitter(Duration::from_millis(500))).await;
        }
    };
    tokio::time::timeout(FIRST_KEY_WAIT, ask)
        .await
        .ok()
        .flatten()
}

/// The plugin's key, normalised (what the gateway and the pin hold).
async fn offered_key(plugin: &PluginClient) -> Result<String, PluginError> {
    let key = plugin.bastion_public_key().await?;
    offload_wire::tunnel::normalise_public_key(&key).map_err(|e| PluginError::Decode(e.to_string()))
}

fn is_not_found(e: &PluginError) -> bool {
    matches!(e, PluginError::Status { status: 404, .. })
}

/// Up to a fifth less, so many providers do not ask in lockstep.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.8..=1.0))
}

/// 0.5 s, 1 s, 2 s, ... up to 10 s.
fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(5);
    (Duration::from_millis(500) * 2u32.pow(exp)).min(Duration::from_secs(10))
}

/// The follower's state between two asks.
struct Follower {
    gm: Arc<GatewayManager>,
    store: PinStore,
    reporter: Reporter,
    /// What the gateway authorizes.
    current: Option<String>,
    /// The refused key last reported by an Event (one Event per key).
    reported: Option<String>,
}

impl Follower {
    async fn authorize(&mut self, key: &str) -> Result<(), ()> {
        if self.current.as_deref() == Some(key) {
            return Ok(());
        }
        match self.gm.set_bastion_key(key).await {
            Ok(()) => {
                info!(fingerprint = ?fingerprint(key), "bastion key authorized on the gateway");
                self.current = Some(key.to_owned());
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "cannot authorize the bastion key on the gateway; retrying");
                Err(())
            }
        }
    }

    /// One offered key: decide against the pin and act.
    async fn offered(&mut self, key: &str) -> Result<(), ()> {
        let pin = self.store.load().await.map_err(|e| {
            warn!(error = %e, pin = self.store.name(), "cannot read the bastion key pin; retrying");
        })?;
        match decide(pin.as_ref(), key) {
            Decision::Keep => {
                self.reporter.metrics.mismatch.set(0);
                self.reported = None;
                self.authorize(key).await
            }
            Decision::PinFirst | Decision::Rotate => {
                let rotated = pin.as_ref().and_then(|p| p.key.as_ref()).is_some();
                // Pin first: a key is never authorized without being pinned.
                self.store.save(key).await.map_err(|e| {
                    warn!(error = %e, pin = self.store.name(), "cannot pin the bastion key; retrying");
                })?;
                self.authorize(key).await?;
                self.reporter.metrics.mismatch.set(0);
                self.reported = None;
                if rotated {
                    let note = format!(
                        "bastion key rotated to {} (accepted by the {} annotation)",
                        fingerprint(key).unwrap_or_default(),
                        super::ACCEPT_ANNOTATION
                    );
                    info!(note, "bastion key rotated");
                    self.reporter
                        .event(EventType::Normal, REASON_ROTATED, note)
                        .await;
                }
                Ok(())
            }
            Decision::Refuse { pinned, offered } => {
                self.reporter.metrics.refused.inc();
                self.reporter.metrics.mismatch.set(1);
                if self.reported.as_deref() != Some(key) {
                    let note = format!(
                        "the plugin offers bastion key {offered}, but {pinned} is pinned: refused, the \
                         gateway keeps the pinned key. If the bastion's key was rotated on purpose, \
                         annotate ConfigMap {} with {}={offered} (or delete it); otherwise the link \
                         to the plugin may be tampered with",
                        self.store.name(),
                        super::ACCEPT_ANNOTATION
                    );
                    warn!(%pinned, %offered, "bastion key refused: not the pinned one");
                    self.reporter
                        .event(EventType::Warning, REASON_REFUSED, note)
                        .await;
                    self.reported = Some(key.to_owned());
                }
                // The gateway holds the pinned key (also after a restart
                // that found another one authorized).
                match pin.and_then(|p| p.key) {
                    Some(k) => self.authorize(&k).await,
                    None => Ok(()),
                }
            }
        }
    }
}

/// Asks the plugin for the bastion key until cancelled: a new key is pinned
/// on first use, the pinned one is kept, any other is refused unless the
/// operator accepted it (module docs).
pub async fn follow(
    gm: Arc<GatewayManager>,
    plugin: PluginClient,
    store: PinStore,
    reporter: Reporter,
    initial: Option<String>,
    refresh: Duration,
    cancel: CancellationToken,
) {
    let mut f = Follower {
        gm,
        store,
        reporter,
        current: initial,
        reported: None,
    };
    let mut failures: u32 = 0;
    loop {
        let delay = match offered_key(&plugin).await {
            Ok(key) => match f.offered(&key).await {
                Ok(()) => {
                    failures = 0;
                    refresh
                }
                Err(()) => {
                    failures = failures.saturating_add(1);
                    backoff(failures)
                }
            },
            Err(e) => {
                failures = failures.saturating_add(1);
                if f.current.is_none() && (failures == 1 || failures.is_multiple_of(10)) {
                    warn!(error = %e, attempts = failures, "no bastion key from the plugin yet; tunnels wait for it");
                } else {
                    debug!(error = %e, "bastion key refresh failed");
                }
                if f.current.is_some() {
                    refresh
                } else if is_not_found(&e) {
                    // A plugin without a bastion: it may be reconfigured; ask rarely.
                    Duration::from_secs(30)
                } else {
                    backoff(failures)
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(jitter(delay)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(30), Duration::from_secs(10));
    }

    #[test]
    fn jitter_takes_at_most_a_fifth_off() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(60));
            assert!(
                d <= Duration::from_secs(60) && d >= Duration::from_secs(48),
                "{d:?}"
            );
        }
    }
}
