//! End-to-end tests across the local and remote clusters live in `tests/tests/`;
//! this library holds what several of them share: [`conformance`] (the suite
//! type, its setup, case runner and helpers; the cases are in
//! `tests/tests/conformance/`; in-process on the testbed, or against an existing
//! installation with `scripts/conformance`), image import and the helpers of the
//! tunnel scenarios.

pub mod conformance;
pub mod tunnel;

use std::path::PathBuf;

use anyhow::{Context, ensure};

/// The root of the repository.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `cmd`, failing with its stderr unless it succeeds; its stdout.
pub async fn output(cmd: &mut tokio::process::Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .await
        .with_context(|| format!("running {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Imports the images of the `deploy/images/build.sh` recipes `names`
/// (`gateway`, `bastion`, `provider`, `plugin`) into both clusters'
/// containerd. Cheap and idempotent; a cold testbed start wipes containerd.
/// Fails, saying what to run, when one is not built.
pub async fn import_images(tb: &testbed::Testbed, names: &[&str]) -> anyhow::Result<()> {
    let build = repo_root().join("deploy/images/build.sh");
    let built = output(
        tokio::process::Command::new(&build).arg("list"),
        "deploy/images/build.sh list",
    )
    .await?;
    for name in names {
        let want = output(
            tokio::process::Command::new(&build).args(["ref", name]),
            "deploy/images/build.sh ref",
        )
        .await?;
        ensure!(
            built.lines().any(|l| l.trim() == want.trim()),
            "image {} is not built (built: {built:?}); run deploy/images/prepare-test-images.sh first",
            want.trim()
        );
    }
    for cluster in [&tb.local, &tb.remote] {
        let sock = testbed::state_dir()
            .join(&cluster.name)
            .join("containerd/containerd.sock");
        output(
            tokio::process::Command::new(&build)
                .arg("import")
                .arg(&sock)
                .args(names),
            &format!("importing the images into the {} cluster", cluster.name),
        )
        .await?;
    }
    Ok(())
}

/// The pod's phase, "" before it has one.
pub fn phase(pod: &k8s_openapi::api::core::v1::Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Test logging: `RUST_LOG`, else `default` (an env-filter), to the test writer.
pub fn init_tracing(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_test_writer()
        .try_init();
}
