//! What runs: the command, its arguments and environment expansion, the image's entrypoint, exit codes.

use anyhow::{Context, Result, ensure};
use offload_e2e::conformance::*;
use serde_json::json;

/// The smallest pod: runs, succeeds, its output is its log.
pub async fn hello(s: &Suite) -> Result<()> {
    let pod = s
        .run_succeeded("hello", run_once(&[sh("main", "echo hello world")]))
        .await?;
    let t = terminated(&pod, "main")?;
    expect_eq("exit code", t.exit_code, 0)?;
    expect_eq("reason", t.reason.as_deref(), Some("Completed"))?;
    expect_eq(
        "node",
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(s.node.as_str()),
    )?;
    expect_eq(
        "kubectl get: READY STATUS RESTARTS",
        s.get_columns("hello").await?,
        ["0/1", "Completed", "0"].map(String::from).to_vec(),
    )?;
    s.expect_log("hello", "hello world\n").await
}

/// `command` and `args` reach the process verbatim (no shell), with the
/// Kubernetes `$(VAR)` expansion and `$$` escape and nothing else.
pub async fn command_and_args(s: &Suite) -> Result<()> {
    let args = [
        "héllo wörld ✓ 日本語 🚀",
        "two  spaces\tand a tab",
        "'single' \"double\"",
        "`uname` $(GREETING) $$(GREETING) $HOME $(NOT_DEFINED)",
        "; rm -rf / && echo pwned | cat > x &",
        "* ? [a-z] ~ \\backslash\\ #hash !bang",
        "",
        "line\nbreak",
    ];
    let want: String = args
        .iter()
        .map(|a| {
            let expanded = a
                .replace("$$(GREETING)", "\u{0}")
                .replace("$(GREETING)", "hi there")
                .replace('\u{0}', "$(GREETING)");
            format!("[{expanded}]\n")
        })
        .collect();
    s.expect_success_log(
        "cmdargs",
        run_once(&[json!({
            "name": "main",
            "image": BUSYBOX,
            "command": ["printf", "[%s]\\n"],
            "args": args,
            "env": [{ "name": "GREETING", "value": "hi there" }],
        })]),
        want,
    )
    .await
}

/// No command and no args: the image's default (busybox: `sh`, which ends at
/// the end of its empty stdin; pause: its entrypoint `/pause`, which runs).
pub async fn default_entrypoint(s: &Suite) -> Result<()> {
    s.apply(&s.pod(
        "default-sh",
        json!({ "restartPolicy": "Never",
                "containers": [{ "name": "main", "image": BUSYBOX }] }),
    ))
    .await?;
    s.apply(&s.pod(
        "default-pause",
        json!({ "restartPolicy": "Always",
                "containers": [{ "name": "main", "image": PAUSE }] }),
    ))
    .await?;
    let pod = s.ended("default-sh", Some("Succeeded")).await?;
    expect_eq("exit code", terminated(&pod, "main")?.exit_code, 0)?;
    s.expect_log("default-sh", String::new()).await?;
    s.wait_pod("default-pause", "Running and Ready", START, is_ready)
        .await?;
    let pod = s.get_pod("default-pause").await?;
    expect_phase(&pod, "Running")?;
    expect_eq(
        "restart count",
        status(&pod, "main").map(|c| c.restart_count),
        Some(0),
    )?;
    s.kubectl(&["delete", "pod", "default-pause", "--timeout=120s"])
        .await?;
    Ok(())
}

/// `args` without `command`: the args replace the image's Cmd (busybox has no
/// entrypoint), with the image's PATH and working directory.
pub async fn args_only(s: &Suite) -> Result<()> {
    s.expect_success_log(
        "args-only",
        run_once(&[json!({
            "name": "main", "image": BUSYBOX,
            "args": ["sh", "-c", "echo PATH=$PATH; pwd; echo args-only"],
        })]),
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin\n/\nargs-only\n",
    )
    .await
}

/// A container exiting 42: the pod fails with that exit code.
pub async fn exit_42(s: &Suite) -> Result<()> {
    let pod = s
        .run_to_end(
            "exit42",
            run_once(&[sh(
                "main",
                "echo failing on purpose; echo 'the reason' > /dev/termination-log; exit 42",
            )]),
        )
        .await?;
    expect_phase(&pod, "Failed")?;
    let t = terminated(&pod, "main")?;
    expect_eq("exit code", t.exit_code, 42)?;
    expect_eq("reason", t.reason.as_deref(), Some("Error"))?;
    expect_eq(
        "termination message",
        t.message.as_deref(),
        Some("the reason\n"),
    )?;
    s.expect_status_column("exit42", "Error").await?;
    s.expect_log("exit42", "failing on purpose\n").await
}

/// A command that does not exist: as the image's runtime reports it (exec
/// fails: the remote kubelet's exit code and reason, message naming the
/// command), and through a shell (127, "not found" in the log).
pub async fn command_not_found(s: &Suite) -> Result<()> {
    s.apply(&s.pod(
        "noexec",
        json!({ "restartPolicy": "Never", "containers": [{
            "name": "main", "image": BUSYBOX, "command": ["no-such-command-xyz", "arg"],
        }] }),
    ))
    .await?;
    s.apply(&s.pod("noexec-sh", run_once(&[sh("main", "no-such-command-xyz")])))
        .await?;
    let pod = s.ended("noexec", Some("Failed")).await?;
    let t = terminated(&pod, "main")?;
    ensure!(
        t.exit_code != 0,
        "exit code 0 for a missing binary: {}",
        describe(&pod)
    );
    ensure!(
        t.message
            .as_deref()
            .is_some_and(|m| m.contains("no-such-command-xyz")),
        "the termination message does not name the missing command: {:?}",
        t.message
    );
    // Same as what the remote kubelet reported.
    if s.remote_side("exit code, reason and kubectl columns equal the remote pod's") {
        same_as_remote(s, &pod, t).await?;
    }
    println!(
        "conformance: a missing binary shows as exit code {} reason {:?}",
        t.exit_code, t.reason
    );

    let pod = s.ended("noexec-sh", Some("Failed")).await?;
    expect_eq("exit code", terminated(&pod, "main")?.exit_code, 127)?;
    let log = s.kubectl(&["logs", "noexec-sh"]).await?;
    ensure!(
        log.contains("no-such-command-xyz") && log.contains("not found"),
        "log: {log:?}"
    );
    Ok(())
}

/// The local pod's container `main` ended as the remote one: exit code, reason
/// and `kubectl get` columns.
async fn same_as_remote(
    s: &Suite,
    pod: &k8s_openapi::api::core::v1::Pod,
    t: &k8s_openapi::api::core::v1::ContainerStateTerminated,
) -> Result<()> {
    let remote = s.remote_pods_of(pod).await?;
    let remote_pod = remote.first().context("no remote pod for noexec")?;
    let rt = terminated(remote_pod, "main")?;
    expect_eq("exit code (local vs remote)", t.exit_code, rt.exit_code)?;
    expect_eq(
        "reason (local vs remote)",
        t.reason.clone(),
        rt.reason.clone(),
    )?;
    let remote_columns =
        s.tb.remote
            .run_kubectl(&[
                "-n",
                remote_pod.metadata.namespace.as_deref().unwrap_or_default(),
                "get",
                "pod",
                remote_pod.metadata.name.as_deref().unwrap_or_default(),
                "--no-headers",
            ])
            .await?;
    expect_eq(
        "kubectl get READY STATUS RESTARTS (local vs remote)",
        s.get_columns("noexec").await?,
        kubectl_columns(&remote_columns),
    )
}
