//! Liveness, readiness and startup probes, run by the remote kubelet, seen locally.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use offload_e2e::conformance::*;
use serde_json::json;

/// A liveness probe that starts failing gets the container restarted; the
/// restart count and the previous container's log show locally.
pub async fn liveness_probe(s: &Suite) -> Result<()> {
    // The second container (marker in the emptyDir) stays healthy.
    let mut c = sh(
        "main",
        "touch /tmp/alive; if [ -f /d/ran ]; then echo started again; sleep 3600; fi; \
         touch /d/ran; echo started; sleep 8; rm /tmp/alive; echo probe-will-fail; sleep 3600",
    );
    c["volumeMounts"] = mounts(&[("d", "/d")]);
    c["livenessProbe"] = json!({
        "exec": { "command": ["cat", "/tmp/alive"] },
        "periodSeconds": 2, "failureThreshold": 1,
    });
    s.apply(&s.pod(
        "liveness",
        pod_spec("Always", &[c], json!([{ "name": "d", "emptyDir": {} }])),
    ))
    .await?;
    s.wait_pod(
        "liveness",
        "restarted by its liveness probe, running again",
        START,
        |p| restarted_and_running(p, "main"),
    )
    .await?;
    let pod = s.get_pod("liveness").await?;
    expect_phase(&pod, "Running")?;
    let c = status(&pod, "main").context("no status for main")?;
    expect_eq("restart count", c.restart_count, 1)?;
    expect_eq(
        "kubectl get READY STATUS RESTARTS",
        s.get_columns("liveness").await?,
        ["1/1", "Running", "1"].map(String::from).to_vec(),
    )?;
    let last = c
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .context("no lastState.terminated after the restart")?;
    ensure!(
        last.exit_code == 137 || last.exit_code == 143,
        "the killed container's exit code is {} ({:?}), expected 137/143",
        last.exit_code,
        last.reason
    );
    expect_eq(
        "previous log",
        s.kubectl(&["logs", "liveness", "--previous"]).await?,
        "started\nprobe-will-fail\n".into(),
    )?;
    s.wait_log("liveness", &[], "started again\n").await
}

/// A readiness probe toggles the pod's Ready condition without restarts.
pub async fn readiness_probe(s: &Suite) -> Result<()> {
    let mut c = sh(
        "main",
        "sleep 2; while true; do touch /tmp/ready; sleep 12; rm -f /tmp/ready; sleep 12; done",
    );
    c["readinessProbe"] = json!({
        "exec": { "command": ["cat", "/tmp/ready"] },
        "periodSeconds": 1, "failureThreshold": 1, "successThreshold": 1,
    });
    s.apply(&s.pod(
        "readiness",
        json!({ "restartPolicy": "Always", "containers": [c] }),
    ))
    .await?;
    s.wait_pod("readiness", "Ready", START, is_ready).await?;
    s.wait_pod(
        "readiness",
        "not Ready again (probe failing) while Running",
        Duration::from_secs(120),
        |p| phase(p) == "Running" && !is_ready(p),
    )
    .await?;
    let pod = s.get_pod("readiness").await?;
    let c = status(&pod, "main").context("no status for main")?;
    ensure!(
        !c.ready && c.state.as_ref().is_some_and(|st| st.running.is_some()),
        "expected a running, unready container: {}",
        describe(&pod)
    );
    expect_eq("restart count", c.restart_count, 0)?;
    s.wait_pod(
        "readiness",
        "Ready again (probe passing)",
        Duration::from_secs(120),
        is_ready,
    )
    .await?;
    Ok(())
}

/// A startup probe holds readiness back until it passes (the container is
/// running, not started, not ready meanwhile).
pub async fn startup_probe(s: &Suite) -> Result<()> {
    let mut c = sh("main", "sleep 20; touch /tmp/started; sleep 3600");
    c["startupProbe"] = json!({
        "exec": { "command": ["cat", "/tmp/started"] },
        "periodSeconds": 1, "failureThreshold": 120,
    });
    // Always passing; it runs only once the startup probe passed. Without it,
    // kubelet 1.20 marks the container ready up to a minute after it started
    // (seen on the remote cluster directly: started at +10 s, ready at +76 s).
    c["readinessProbe"] = json!({
        "exec": { "command": ["true"] }, "periodSeconds": 1,
    });
    s.apply(&s.pod(
        "startup",
        json!({ "restartPolicy": "Always", "containers": [c] }),
    ))
    .await?;
    let saw_unstarted = AtomicBool::new(false);
    s.wait_pod("startup", "Ready after its startup probe", START, |p| {
        let unstarted = status(p, "main").is_some_and(|c| {
            c.state.as_ref().is_some_and(|st| st.running.is_some())
                && !c.ready
                && c.started != Some(true)
        });
        if unstarted {
            saw_unstarted.store(true, Ordering::Relaxed);
        }
        is_ready(p)
    })
    .await?;
    let pod = s.get_pod("startup").await?;
    let c = status(&pod, "main").context("no status for main")?;
    expect_eq("started", c.started, Some(true))?;
    expect_eq("restart count", c.restart_count, 0)?;
    let running_since = c
        .state
        .as_ref()
        .and_then(|st| st.running.as_ref())
        .and_then(|r| time(&r.started_at))
        .context("running container without startedAt")?;
    let ready_since = condition_time(&pod, "Ready").context("no Ready transition time")?;
    let held = ready_since
        .duration_since(running_since)
        .unwrap_or_default();
    ensure!(
        held.as_secs() >= 18,
        "Ready {held:?} after the container started: the startup probe (passing after 20 s) \
         did not hold readiness back"
    );
    ensure!(
        saw_unstarted.load(Ordering::Relaxed),
        "never saw the container running but not started/ready during the 20 s"
    );
    Ok(())
}
