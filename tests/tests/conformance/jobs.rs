//! Jobs whose pods run on the virtual node: backoff limit and completions.

use std::time::Duration;

use anyhow::{Context, Result};
use offload_e2e::conformance::*;
use serde_json::json;

/// A Job (controller in the local cluster) whose pods land on the virtual node
/// and fail: backoffLimit 1 means two pods, then the Job fails.
pub async fn job_backoff_limit(s: &Suite) -> Result<()> {
    s.apply(&s.job(
        "job-fail",
        json!({ "backoffLimit": 1 }),
        run_once(&[sh("main", "echo attempt; exit 3")]),
    ))
    .await?;
    let job = s
        .wait_job("job-fail", "Failed", Duration::from_secs(600))
        .await?;
    let status = job.status.unwrap_or_default();
    let failed = job_condition(&status, "Failed").context("no Failed condition")?;
    expect_eq(
        "Failed reason",
        failed.reason.as_deref(),
        Some("BackoffLimitExceeded"),
    )?;
    expect_eq("status.failed", status.failed, Some(2))?;
    let pods = s.job_pods("job-fail").await?;
    expect_eq("number of pods", pods.len(), 2)?;
    for pod in &pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        expect_eq(
            "node",
            pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            Some(s.node.clone()),
        )?;
        expect_phase(pod, "Failed")?;
        expect_eq(
            &format!("{name} exit code"),
            terminated(pod, "main")?.exit_code,
            3,
        )?;
        expect_eq(
            &format!("{name} log"),
            s.kubectl(&["logs", &name]).await?,
            "attempt\n".into(),
        )?;
    }
    Ok(())
}

/// A Job with two completions run in parallel on the virtual node completes.
pub async fn job_completions(s: &Suite) -> Result<()> {
    s.apply(&s.job(
        "job-ok",
        json!({ "completions": 2, "parallelism": 2, "backoffLimit": 0 }),
        run_once(&[sh("main", "echo done")]),
    ))
    .await?;
    let job = s
        .wait_job("job-ok", "Complete", Duration::from_secs(600))
        .await?;
    expect_eq(
        "status.succeeded",
        job.status.as_ref().and_then(|s| s.succeeded),
        Some(2),
    )?;
    let pods = s.job_pods("job-ok").await?;
    expect_eq("number of pods", pods.len(), 2)?;
    for pod in &pods {
        expect_phase(pod, "Succeeded")?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        expect_eq(
            &format!("{name} log"),
            s.kubectl(&["logs", &name]).await?,
            "done\n".into(),
        )?;
    }
    Ok(())
}
