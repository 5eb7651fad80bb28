//! Streams through the virtual node with the Suite's kubectl: `exec` with
//! its exit code, and `cp` there and back.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use offload_e2e::conformance::*;

/// A running pod to stream into.
async fn running(s: &Suite, name: &str) -> Result<()> {
    s.apply(&s.pod(
        name,
        pod_spec("Never", &[sh("main", "sleep 3600")], serde_json::json!([])),
    ))
    .await?;
    s.wait_pod(name, "Running", Duration::from_secs(300), |p| {
        p.status.as_ref().and_then(|st| st.phase.as_deref()) == Some("Running")
    })
    .await
    .map(drop)
}

/// `kubectl -n <ns> ARGS`: exit code and stdout, whatever the exit code.
async fn kubectl_status(s: &Suite, args: &[&str]) -> Result<(i32, String, String)> {
    let mut c = tokio::process::Command::from(s.tb.local.kubectl());
    c.args(["-n", &s.ns]).args(args).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), c.output())
        .await
        .context("kubectl timed out")??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `kubectl exec` runs in the container, prints its output, and exits with
/// the process's code, as on a local node.
pub async fn exec_exit_code(s: &Suite) -> Result<()> {
    running(s, "exec-target").await?;
    let (code, out, err) = kubectl_status(
        s,
        &["exec", "exec-target", "--", "sh", "-c", "echo out; exit 3"],
    )
    .await?;
    expect_eq("stdout", out.as_str(), "out\n")?;
    ensure!(code == 3, "exit code {code}, want 3: {err}");
    let (code, out, err) = kubectl_status(s, &["exec", "exec-target", "--", "hostname"]).await?;
    ensure!(code == 0, "hostname failed: {err}");
    ensure!(!out.trim().is_empty(), "hostname printed nothing");
    Ok(())
}

/// Both: one case of the suite's list.
pub async fn exec_and_cp(s: &Suite) -> Result<()> {
    exec_exit_code(s).await?;
    cp_round_trip(s).await
}

/// A temporary directory, removed at the end.
struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `kubectl cp` into the pod and back gives the same bytes.
pub async fn cp_round_trip(s: &Suite) -> Result<()> {
    running(s, "cp-target").await?;
    let dir = Dir(std::env::temp_dir().join(format!("offload-cp-{}", s.ns)));
    std::fs::create_dir_all(&dir.0)?;
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let up = dir.0.join("up.bin");
    let down = dir.0.join("down.bin");
    std::fs::write(&up, &data)?;
    let remote = format!("{}/cp-target:/tmp/data.bin", s.ns);
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let (code, _, err) = kubectl_status(s, &["cp", &path(&up), &remote]).await?;
    ensure!(code == 0, "cp into the pod: {err}");
    let (code, _, err) = kubectl_status(s, &["cp", &remote, &path(&down)]).await?;
    ensure!(code == 0, "cp out of the pod: {err}");
    let got = std::fs::read(&down)?;
    ensure!(
        got == data,
        "cp round trip changed the bytes ({} of {})",
        got.len(),
        data.len()
    );
    Ok(())
}
