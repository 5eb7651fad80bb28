//! `kubectl logs -f` and deleting: what the user sees on both sides.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use offload_e2e::conformance::*;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

/// `kubectl logs -f` streams lines as they are written and ends with the
/// container.
pub async fn logs_follow(s: &Suite) -> Result<()> {
    s.apply(&s.pod(
        "follow",
        run_once(&[sh(
            "main",
            "sleep 3; i=1; while [ $i -le 30 ]; do echo line-$i; i=$((i+1)); sleep 1; done",
        )]),
    ))
    .await?;
    s.wait_pod("follow", "Running", START, |p| phase(p) == "Running")
        .await?;
    let mut cmd = tokio::process::Command::from(s.tb.local.kubectl());
    cmd.args(["-n", &s.ns, "logs", "-f", "follow"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("running kubectl logs -f")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let began = Instant::now();
    let mut lines = BufReader::new(stdout).lines();
    let mut got: Vec<(Duration, String)> = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(line) = lines.next_line().await? {
            got.push((began.elapsed(), line));
        }
        anyhow::Ok(())
    })
    .await;
    ensure!(
        read.is_ok(),
        "kubectl logs -f still streaming after 180 s; got {got:?}"
    );
    read.ok().transpose()?;
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("kubectl logs -f did not exit after its stdout closed")??;
    ensure!(
        out.status.success(),
        "kubectl logs -f: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text: Vec<&str> = got.iter().map(|(_, l)| l.as_str()).collect();
    let want: Vec<String> = (1..=30).map(|i| format!("line-{i}")).collect();
    expect_eq("followed lines", text.join("\n"), want.join("\n"))?;
    // Lines written before kubectl started come in one burst (a busy machine
    // can take many seconds to show the pod Running); the later ones must come
    // as they are written, not at the end.
    let bursts = 1 + got
        .windows(2)
        .filter(|w| w[1].0.saturating_sub(w[0].0) >= Duration::from_millis(500))
        .count();
    ensure!(
        bursts >= 3,
        "the lines (written 1 s apart) arrived in {bursts} burst(s): not streamed; {got:?}"
    );
    // It ended with the container.
    let pod = s.wait_finished("follow").await?;
    expect_phase(&pod, "Succeeded")?;
    expect_eq(
        "kubectl logs --tail=3",
        s.kubectl(&["logs", "follow", "--tail=3"]).await?,
        "line-28\nline-29\nline-30\n".into(),
    )
}

/// Deleting a pod removes it locally and its remote pod, ConfigMaps and Secrets
/// (the remote side only when the suite can see it).
pub async fn delete_cleans_both_sides(s: &Suite) -> Result<()> {
    s.apply_all(&[
        config_map("del-cm", json!({ "k": "v" })),
        secret("del-secret", json!({ "k": "v" })),
    ])
    .await?;
    let mut c = sh("main", "echo up; sleep 3600");
    c["env"] = json!([{ "name": "S", "valueFrom": { "secretKeyRef": { "name": "del-secret", "key": "k" } } }]);
    c["volumeMounts"] = mounts(&[("cfg", "/cfg")]);
    s.apply(&s.pod(
        "deleteme",
        pod_spec(
            "Always",
            &[c],
            json!([{ "name": "cfg", "configMap": { "name": "del-cm" } }]),
        ),
    ))
    .await?;
    s.wait_pod("deleteme", "Running and Ready", START, is_ready)
        .await?;
    let pod = s.get_pod("deleteme").await?;
    let uid = pod.metadata.uid.clone().context("no uid")?;
    let remote = s.remote_side("the remote pod, ConfigMap and Secret exist, then are deleted too");
    if remote {
        let (pods, cms, secrets) = s.remote_objects(&uid).await?;
        expect_eq("remote pods", pods.len(), 1)?;
        ensure!(!cms.is_empty(), "no remote ConfigMap for the pod");
        ensure!(!secrets.is_empty(), "no remote Secret for the pod");
    }

    s.kubectl(&["delete", "pod", "deleteme", "--timeout=120s"])
        .await?;
    let gone = s
        .kubectl(&["get", "pod", "deleteme", "--ignore-not-found", "-o", "name"])
        .await?;
    expect_eq("local pod after delete", gone, String::new())?;
    if !remote {
        return Ok(());
    }
    let left = LastSeen::default();
    let left_ref = &left;
    let uid = &uid;
    testbed::wait_every(
        POLL,
        "remote pod, ConfigMaps and Secrets gone",
        Duration::from_secs(180),
        || async move {
            let (p, c, s) = s.remote_objects(uid).await?;
            let names = p
                .iter()
                .map(|p| {
                    format!(
                        "pod {} (phase {}, deletionTimestamp {:?})",
                        p.metadata.name.as_deref().unwrap_or(""),
                        phase(p),
                        p.metadata.deletion_timestamp
                    )
                })
                .chain(
                    c.iter()
                        .map(|c| format!("configmap {}", c.metadata.name.as_deref().unwrap_or(""))),
                )
                .chain(
                    s.iter()
                        .map(|s| format!("secret {}", s.metadata.name.as_deref().unwrap_or(""))),
                )
                .collect::<Vec<_>>();
            let done = names.is_empty();
            left_ref.set(names.join(", "));
            Ok(done.then_some(()))
        },
    )
    .await
    .with_context(|| format!("left on the remote cluster: {}", left.get()))
}
