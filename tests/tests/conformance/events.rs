//! The remote cluster's Events about a pod, read where a user reads them:
//! the Events of `kubectl describe pod` on the local cluster.

use std::time::Instant;

use anyhow::{Result, bail};
use offload_e2e::conformance::*;
use serde_json::json;

/// The Events section of `kubectl describe pod <name>`.
async fn described_events(s: &Suite, name: &str) -> String {
    s.kubectl(&["describe", "pod", name])
        .await
        .ok()
        .and_then(|out| out.split_once("\nEvents:").map(|(_, e)| e.to_string()))
        .unwrap_or_default()
}

/// Polls the pod's described Events until `seen` holds.
async fn wait_events(s: &Suite, name: &str, what: &str, seen: impl Fn(&str) -> bool) -> Result<()> {
    let began = Instant::now();
    loop {
        let events = described_events(s, name).await;
        if seen(&events) {
            return Ok(());
        }
        if began.elapsed() > START {
            bail!("{what}: not in `kubectl describe pod {name}` after {START:?}; Events:{events}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// An image that cannot be pulled shows the remote kubelet's `Failed`
/// events naming the image (`ErrImagePull`, then `ImagePullBackOff`), and a
/// failing readiness probe shows `Unhealthy`, as on a local node.
pub async fn remote_events(s: &Suite) -> Result<()> {
    let image = format!(
        "{BUSYBOX}-no-such-tag-{}",
        &s.ns[s.ns.len().saturating_sub(6)..]
    );
    let mut pull = sh("main", "true");
    pull["image"] = json!(image);
    let mut probe = sh("main", "sleep 3600");
    probe["readinessProbe"] = json!({
        "exec": { "command": ["sh", "-c", "echo not-ready; exit 1"] },
        "periodSeconds": 2,
    });
    s.apply_all(&[
        s.pod("no-such-image", run_once(&[pull])),
        s.pod("never-ready", run_once(&[probe])),
    ])
    .await?;
    wait_events(s, "no-such-image", "the remote pull failure", |ev| {
        ev.lines()
            .any(|l| l.contains("Warning") && l.contains("Failed") && l.contains(&image))
            && (ev.contains("ErrImagePull") || ev.contains("ImagePullBackOff"))
    })
    .await?;
    wait_events(s, "never-ready", "Unhealthy (readiness probe)", |ev| {
        ev.lines().any(|l| {
            l.contains("Warning") && l.contains("Unhealthy") && l.contains("Readiness probe failed")
        })
    })
    .await?;
    // Not a flood: the repeated probe failure is one line counted up.
    let ev = described_events(s, "never-ready").await;
    let lines = ev.lines().filter(|l| l.contains("Unhealthy")).count();
    if lines != 1 {
        bail!("one Unhealthy line expected (counted up), got {lines}:{ev}");
    }
    Ok(())
}
