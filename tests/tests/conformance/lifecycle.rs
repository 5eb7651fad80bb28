//! A pod's life: init containers, hooks, the active deadline, OOM kills, restarts in a crash loop.

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use offload_e2e::conformance::*;
use serde_json::json;

/// Init containers run one after the other, before the main container; each
/// one's log is there with `kubectl logs -c`.
pub async fn init_containers(s: &Suite) -> Result<()> {
    let mount = mounts(&[("work", "/scratch")]);
    let mut i1 = sh("init-1", "echo first > /scratch/order; echo init-1 says hi");
    i1["volumeMounts"] = mount.clone();
    let mut i2 = sh(
        "init-2",
        "sleep 1; echo second >> /scratch/order; echo init-2 says hi",
    );
    i2["volumeMounts"] = mount.clone();
    let mut main = sh("main", "cat /scratch/order");
    main["volumeMounts"] = mount;
    let pod = s
        .run_succeeded(
            "init",
            json!({
                "restartPolicy": "Never",
                "initContainers": [i1, i2],
                "containers": [main],
                "volumes": [{ "name": "work", "emptyDir": {} }],
            }),
        )
        .await?;
    let first = terminated(&pod, "init-1")?;
    let second = terminated(&pod, "init-2")?;
    expect_eq("init-1 exit", first.exit_code, 0)?;
    expect_eq("init-2 exit", second.exit_code, 0)?;
    ensure!(
        time(&first.finished_at) <= time(&second.started_at),
        "init-1 finished at {:?}, after init-2 started at {:?}",
        first.finished_at,
        second.started_at
    );
    for (container, want) in [
        ("init-1", "init-1 says hi\n"),
        ("init-2", "init-2 says hi\n"),
        ("main", "first\nsecond\n"),
    ] {
        s.expect_container_log("init", container, want).await?;
    }
    Ok(())
}

/// A failing init container fails a restartPolicy Never pod; the main
/// container never runs.
pub async fn init_fails(s: &Suite) -> Result<()> {
    let pod = s
        .run_to_end(
            "init-fails",
            json!({
                "restartPolicy": "Never",
                "initContainers": [sh("setup", "echo setting up; exit 7")],
                "containers": [sh("main", "echo main ran")],
            }),
        )
        .await?;
    expect_phase(&pod, "Failed")?;
    expect_eq("init exit code", terminated(&pod, "setup")?.exit_code, 7)?;
    let main = status(&pod, "main").context("no status for main")?;
    ensure!(
        main.state.as_ref().is_some_and(|st| st.waiting.is_some()),
        "main container ran after a failed init container: {}",
        describe(&pod)
    );
    s.expect_status_column("init-fails", "Init:Error").await?;
    expect_eq(
        "init log",
        s.kubectl(&["logs", "init-fails", "-c", "setup"]).await?,
        "setting up\n".into(),
    )
}

/// postStart runs alongside the container's start; preStop runs before the
/// container is killed (here: by a failing liveness probe; the hook leaves a
/// note in an emptyDir that the next container prints).
pub async fn lifecycle_hooks(s: &Suite) -> Result<()> {
    let mut c = sh(
        "main",
        "touch /tmp/alive; again=; \
         if [ -f /shared/prestop ]; then again=1; printf 'found: '; cat /shared/prestop; fi; \
         until [ -f /tmp/post ]; do sleep 0.2; done; printf 'main saw: '; cat /tmp/post; \
         if [ -z \"$again\" ]; then sleep 3; rm /tmp/alive; fi; sleep 3600",
    );
    c["volumeMounts"] = mounts(&[("shared", "/shared")]);
    c["lifecycle"] = json!({
        "postStart": { "exec": { "command": ["sh", "-c", "echo poststart-ran > /tmp/post"] } },
        "preStop": { "exec": { "command": ["sh", "-c", "echo prestop-ran > /shared/prestop"] } },
    });
    c["livenessProbe"] = json!({
        "exec": { "command": ["cat", "/tmp/alive"] },
        "periodSeconds": 2, "failureThreshold": 1,
    });
    s.apply(&s.pod(
        "hooks",
        json!({
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 3,
            "containers": [c],
            "volumes": [{ "name": "shared", "emptyDir": {} }],
        }),
    ))
    .await?;
    s.wait_pod("hooks", "restarted once, running again", START, |p| {
        restarted_and_running(p, "main")
    })
    .await?;
    expect_eq(
        "previous log (postStart ran)",
        s.kubectl(&["logs", "hooks", "--previous"]).await?,
        "main saw: poststart-ran\n".into(),
    )?;
    s.wait_log(
        "hooks",
        &[],
        "found: prestop-ran\nmain saw: poststart-ran\n",
    )
    .await?;
    // The second container stays healthy: one restart, by the probe only.
    let pod = s.get_pod("hooks").await?;
    expect_eq(
        "restart count",
        status(&pod, "main").map(|c| c.restart_count),
        Some(1),
    )
}

/// activeDeadlineSeconds: the pod is stopped and fails with DeadlineExceeded,
/// whatever its restart policy.
pub async fn active_deadline(s: &Suite) -> Result<()> {
    // Long enough for the pods to be Running first, unless the machine is very
    // busy (the deadline counts from the pod's start time, as on a kubelet).
    for (name, policy) in [("deadline", "Never"), ("deadline-always", "Always")] {
        s.apply(&s.pod(
            name,
            json!({
                "restartPolicy": policy,
                "activeDeadlineSeconds": 40,
                "containers": [sh("main", "echo running; sleep 3600")],
            }),
        ))
        .await?;
    }
    for name in ["deadline", "deadline-always"] {
        let pod = s.ended(name, Some("Failed")).await?;
        expect_eq(
            &format!("{name} status.reason"),
            pod.status.as_ref().and_then(|s| s.reason.as_deref()),
            Some("DeadlineExceeded"),
        )?;
        // kubectl's STATUS column shows a waiting container's reason over the
        // pod's (a container the loaded remote node had not started yet).
        let waiting = status(&pod, "main")
            .and_then(|c| c.state.as_ref())
            .and_then(|st| st.waiting.as_ref())
            .and_then(|w| w.reason.clone());
        expect_eq(
            &format!("{name} kubectl get STATUS"),
            s.get_columns(name).await?[1].clone(),
            waiting.unwrap_or_else(|| "DeadlineExceeded".into()),
        )?;
    }
    Ok(())
}

/// Over its memory limit, the container is OOM-killed: Failed, 137, OOMKilled.
/// (`exec` so that the process the kernel kills is the container's PID 1: a
/// child killed under `sh` would leave `sh` exiting 0.)
pub async fn oom_killed(s: &Suite) -> Result<()> {
    let mut c = sh(
        "main",
        "echo allocating; sleep 3; exec dd if=/dev/zero of=/dev/null bs=64M count=1",
    );
    c["resources"] = json!({ "limits": { "memory": "20Mi" }, "requests": { "memory": "20Mi" } });
    // cgroup v1 (this testbed), two ways to lose the OOMKilled reason, both
    // seen with a plain kubelet too (exit 137, reason "Error" on the remote pod
    // itself): containerd watches a container's memory.oom_control only once
    // the task has started, so a process killed within its first moments
    // leaves no TaskOOM event at all (hence the `sleep` before allocating);
    // and the kubelet also limits the pod's cgroup, to
    // the same 20 MiB here, and the pause container's memory counts there too.
    // When the pod cgroup hits its limit first, containerd sees the OOM on the
    // sandbox, not on the container, and the container ends "Error" 137 (seen
    // in the remote containerd's log: TaskOOM for the sandbox id only). An
    // init container with a higher limit raises the pod's limit, so the
    // container's own limit is the one that triggers, as on a typical node.
    let mut headroom = sh("headroom", "true");
    headroom["resources"] = json!({ "limits": { "memory": "64Mi" } });
    let pod = s
        .run_to_end(
            "oom",
            json!({ "restartPolicy": "Never", "initContainers": [headroom], "containers": [c] }),
        )
        .await?;
    expect_phase(&pod, "Failed")?;
    let t = terminated(&pod, "main")?;
    expect_eq("exit code", t.exit_code, 137)?;
    if t.reason.as_deref() != Some("OOMKilled") {
        // Say what the remote kubelet shows now, to tell a lost update from a
        // runtime that never reported the OOM kill.
        let remote = s.remote_pods_of(&pod).await.unwrap_or_default();
        let remote_reason = remote
            .first()
            .and_then(|p| terminated(p, "main").ok())
            .map(|t| (t.exit_code, t.reason.clone()));
        bail!(
            "reason {:?}, expected OOMKilled; the remote pod's container now: {remote_reason:?}",
            t.reason
        );
    }
    s.expect_status_column("oom", "OOMKilled").await?;
    s.expect_log("oom", "allocating\n").await
}

/// restartPolicy Always and a container that keeps crashing: the restart count
/// grows, the pod stays Running (kubelet's phase), the previous run's log shows.
pub async fn crash_loop(s: &Suite) -> Result<()> {
    let mut c = sh(
        "main",
        "n=$(cat /d/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /d/n; echo run-$n; exit 1",
    );
    c["volumeMounts"] = mounts(&[("d", "/d")]);
    s.apply(&s.pod(
        "crashloop",
        pod_spec("Always", &[c], json!([{ "name": "d", "emptyDir": {} }])),
    ))
    .await?;
    // Between two runs the pod waits in CrashLoopBackOff (what `kubectl get
    // pods` shows). Right after a crash the remote kubelet 1.20 itself shows
    // the container terminated for a few seconds and answers `--previous` with
    // "unable to retrieve container logs" (the older container is gone): the
    // log is read while backing off, as a user would after seeing the status.
    let crashloop = |p: &Pod| {
        status(p, "main").is_some_and(|c| {
            c.restart_count >= 2
                && c.state
                    .as_ref()
                    .and_then(|st| st.waiting.as_ref())
                    .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
        })
    };
    s.wait_pod(
        "crashloop",
        "restarted at least twice, in CrashLoopBackOff",
        START,
        crashloop,
    )
    .await?;
    let pod = s.get_pod("crashloop").await?;
    expect_phase(&pod, "Running")?;
    ensure!(!is_ready(&pod), "a crash-looping pod is Ready");
    let c = status(&pod, "main").context("no status for main")?;
    let last = c
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .context("no lastState.terminated")?;
    expect_eq("last exit code", last.exit_code, 1)?;
    let columns = s.get_columns("crashloop").await?;
    expect_eq(
        "kubectl get STATUS",
        columns[1].as_str(),
        "CrashLoopBackOff",
    )?;
    expect_eq(
        "kubectl get RESTARTS",
        columns[2].clone(),
        c.restart_count.to_string(),
    )?;
    let before = c.restart_count;
    let previous = s.kubectl(&["logs", "crashloop", "--previous"]).await?;
    let after = s
        .get_pod("crashloop")
        .await
        .ok()
        .and_then(|p| status(&p, "main").map(|c| c.restart_count))
        .unwrap_or(before);
    // Run k prints run-k; while backing off after restart r, r+1 runs ended.
    let run: i32 = previous
        .trim()
        .strip_prefix("run-")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("previous log {previous:?} is not `run-N`"))?;
    ensure!(
        run >= before && run <= after + 1,
        "previous log is run {run}, restart count was {before}..{after}"
    );
    Ok(())
}
