//! The Helm charts (`charts/`) with real Helm code, on the two testbed clusters.
//!
//! The tests themselves are Python (`charts/tests/test_charts.py`), because
//! the Helm v4 Go SDK is available here only through PyPI `helm-python-sdk`
//! (fetched once into `~/.cache/offload` by `charts/tests/helm-sdk.sh`).
//! This test brings the clusters up, imports the images of
//! `deploy/images/build.sh` into both, and runs `charts/tests/run.sh`:
//! strict lint, rendering with default and non-default values, then installs
//! the plugin chart (remote), the provider chart (local; its virtual node turns
//! Ready through the plugin's NodePort and token) and the tcp-tunnel gateway
//! (local) and bastion (remote) charts carrying a page between the clusters.
//!
//! Needs the images: `deploy/images/prepare-test-images.sh`.
//! Run: `cargo test -p offload-e2e --test charts -- --nocapture`.

use anyhow::{Context, ensure};
use offload_e2e::{import_images, repo_root};

/// The images the charts' defaults name, `deploy/images/build.sh` recipes.
const IMAGES: [&str; 4] = ["gateway", "bastion", "provider", "plugin"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_lint_render_and_install() -> anyhow::Result<()> {
    let tb = testbed::testbed().await?;
    import_images(tb, &IMAGES).await?;
    let range = |c: &testbed::Cluster| {
        let r = c.node_port_range();
        format!("{}-{}", r.start(), r.end())
    };
    let runner = repo_root().join("charts/tests/run.sh");
    let out = tokio::process::Command::new(&runner)
        .env("KUBECONFIG_LOCAL", &tb.local.kubeconfig)
        .env("KUBECONFIG_REMOTE", &tb.remote.kubeconfig)
        .env("OFFLOAD_KUBECTL", testbed::kubectl_binary())
        .env("OFFLOAD_NODE_PORTS_LOCAL", range(&tb.local))
        .env("OFFLOAD_NODE_PORTS_REMOTE", range(&tb.remote))
        .output()
        .await
        .with_context(|| format!("running {}", runner.display()))?;
    // unittest reports on stderr: show it (cargo test -- --nocapture).
    let report = String::from_utf8_lossy(&out.stderr);
    eprintln!("{}{report}", String::from_utf8_lossy(&out.stdout));
    ensure!(
        out.status.success(),
        "chart tests failed ({}); report above, last lines:\n{}",
        out.status,
        report
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    ensure!(
        report.contains("\nOK"),
        "the chart tests did not report OK:\n{report}"
    );
    Ok(())
}
