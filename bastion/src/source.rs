//! Where the desired forwards come from: the remote pods the plugin created
//! ([`watch_pods`]), or a JSON file for tests and manual use ([`watch_file`]).
//!
//! The plugin copies the local pod's annotations onto the remote pod, so the
//! tunnel annotations written by gateway-manager arrive with it. The bastion
//! watches pods labelled `interlink.io=offloading` (all namespaces, or one)
//! through a kube-runtime reflector and recomputes the desired set on every
//! change; a new forward is requested as soon as the pod has an IP.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{debug, warn};

use offload_wire::tunnel::{GatewayPort, split_host_port};

use crate::desired::{Desired, Forwards, Gateway, Target, from_pods};

/// Watch pods and publish the desired forwards until `desired` has no receivers.
pub async fn watch_pods(
    client: Client,
    namespace: Option<String>,
    label_selector: String,
    desired: watch::Sender<Desired>,
) {
    let api: Api<Pod> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let (store, writer) = reflector::store();
    let config = watcher::Config::default().labels(&label_selector);
    let stream = watcher(api, config).default_backoff().reflect(writer);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Err(e) => {
                warn!(error = %e, "pod watch error (retrying)");
                continue;
            }
            // Do not publish a half-listed state during a (re)list.
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(_) => {}
        }
        let pods = store.state();
        let (want, skipped) = from_pods(pods.iter().map(|p| p.as_ref()));
        for s in skipped {
            debug!(pod = %s.pod, reason = %s.reason, "pod tunnel annotations unusable");
        }
        desired.send_if_modified(|d| {
            let changed = *d != want;
            *d = want;
            changed
        });
        if desired.is_closed() {
            return;
        }
    }
}

/// One gateway of a forwards file.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileEntry {
    gateway: String,
    host_key: String,
    /// Gateway port -> `host:port` of the target.
    forwards: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("port {0:?}: not a port number")]
    Port(String),
    #[error("target {0:?} is not host:port")]
    Target(String),
}

/// The desired forwards of a forwards file: `[{"gateway": "host:port",
/// "hostKey": "ssh-ed25519 ...", "forwards": {"40000": "10.0.0.5:80"}}]`.
pub fn parse_forwards_file(text: &str) -> Result<Desired, FileError> {
    let entries: Vec<FileEntry> = serde_json::from_str(text)?;
    let mut desired = Desired::new();
    for e in entries {
        let mut f = Forwards::new();
        for (port, target) in e.forwards {
            let port: u16 = port.parse().map_err(|_| FileError::Port(port.clone()))?;
            let Some((host, tport)) = split_host_port(&target) else {
                return Err(FileError::Target(target));
            };
            let target = Target {
                host: host.to_owned(),
                port: tport,
            };
            f.insert(GatewayPort(port), target);
        }
        let gateway = Gateway {
            address: e.gateway,
            host_key: e.host_key,
        };
        desired.entry(gateway).or_default().extend(f);
    }
    Ok(desired)
}

/// Re-read `path` every half second and publish its forwards when it
/// changed; a broken file is logged and the last good forwards stay.
pub async fn watch_file(path: PathBuf, desired: watch::Sender<Desired>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn forwards_file() {
        let text = r#"[{"gateway": "127.0.0.1:2222", "hostKey": "ssh-ed25519 AAAA",
            "forwards": {"40000": "10.0.0.5:80", "40001": "[::1]:81"}}]"#;
        let gateway = Gateway {
            address: "127.0.0.1:2222".into(),
            host_key: "ssh-ed25519 AAAA".into(),
        };
        let target = |host: &str, port| Target {
            host: host.into(),
            port,
        };
        assert_eq!(
            parse_forwards_file(text).expect("parse"),
            Desired::from([(
                gateway,
                Forwards::from([
                    (GatewayPort(40000), target("10.0.0.5", 80)),
                    (GatewayPort(40001), target("::1", 81)),
                ])
            )])
        );
        for bad in [
            r#"[{"gateway": "g:1", "hostKey": "k", "forwards": {"x": "a:1"}}]"#,
            r#"[{"gateway": "g:1", "hostKey": "k", "forwards": {"1": "a"}}]"#,
            r#"[{"gateway": "g:1", "hostKey": "k", "forwards": {}, "extra": 1}]"#,
        ] {
            assert!(parse_forwards_file(bad).is_err(), "{bad}");
        }
    }
}
