//! `kubectl get --raw /api/v1/nodes/<node>/proxy/stats/summary` and
//! `.../metrics/resource`: a busy offloaded pod's CPU and memory, as on a
//! kubelet.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use offload_e2e::conformance::*;
use serde_json::Value;

/// The summary's entry for pod `name` of the suite's namespace.
async fn pod_summary(s: &Suite, name: &str) -> Result<Option<Value>> {
    let path = format!("/api/v1/nodes/{}/proxy/stats/summary", s.node);
    let out = s.kubectl(&["get", "--raw", &path]).await?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("summary: {out}"))?;
    ensure!(v["node"]["nodeName"] == s.node.as_str(), "node of {out}");
    Ok(v["pods"].as_array().and_then(|pods| {
        pods.iter()
            .find(|p| p["podRef"]["namespace"] == s.ns.as_str() && p["podRef"]["name"] == name)
            .cloned()
    }))
}

/// The cumulative CPU (core-nanoseconds) of container `main` in a pod entry.
fn main_cpu(pod: &Value) -> Option<u64> {
    pod["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "main")?["cpu"]["usageCoreNanoSeconds"]
        .as_u64()
}

/// A spinning container's CPU rises between two reads of the virtual node's
/// Summary, its memory is there, and `/metrics/resource` has its samples.
pub async fn stats_of_a_busy_pod(s: &Suite) -> Result<()> {
    s.apply(&s.pod("busy", run_once(&[sh("main", "while :; do :; done")])))
        .await?;
    let pod = s
        .wait_pod("busy", "Running", START, |p| phase(p) == "Running")
        .await?;
    let uid = pod.metadata.uid.clone().context("no uid")?;
    // The remote kubelet measures a new container after a housekeeping round.
    let mut first = None;
    let until = tokio::time::Instant::now() + START;
    while first.is_none() && tokio::time::Instant::now() < until {
        first = pod_summary(s, "busy")
            .await?
            .filter(|p| main_cpu(p).is_some_and(|n| n > 0));
        tokio::time::sleep(POLL).await;
    }
    let first = first.context("no CPU figure for pod busy in the node's Summary")?;
    expect_eq(
        "podRef uid",
        first["podRef"]["uid"].as_str(),
        Some(uid.as_str()),
    )?;
    let ws = first["containers"][0]["memory"]["workingSetBytes"].as_u64();
    ensure!(ws.is_some_and(|b| b > 0), "working set of busy: {first}");
    let before = main_cpu(&first).unwrap_or_default();
    let mut after = before;
    let until = tokio::time::Instant::now() + Duration::from_secs(120);
    while after <= before + 1_000_000_000 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some(p) = pod_summary(s, "busy").await? {
            after = main_cpu(&p).unwrap_or(after);
        }
    }
    ensure!(
        after > before + 1_000_000_000,
        "CPU of a spinning container did not rise by a second: {before} -> {after}"
    );
    let path = format!("/api/v1/nodes/{}/proxy/metrics/resource", s.node);
    let text = s.kubectl(&["get", "--raw", &path]).await?;
    let labels = format!(
        "{{container=\"main\",namespace=\"{}\",pod=\"busy\"}} ",
        s.ns
    );
    for metric in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
    ] {
        ensure!(
            text.lines()
                .any(|l| l.starts_with(&format!("{metric}{labels}"))),
            "no {metric} sample of busy in /metrics/resource:\n{text}"
        );
    }
    ensure!(
        text.lines()
            .any(|l| l.starts_with("node_cpu_usage_seconds_total ")),
        "no node CPU in /metrics/resource:\n{text}"
    );
    s.kubectl(&["delete", "pod", "busy", "--timeout=120s"])
        .await?;
    Ok(())
}
