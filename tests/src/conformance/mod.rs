//! The conformance suite's machinery (the cases are in `tests/tests/conformance/`):
//! [`Suite`] is what every case gets (clients, the fresh local namespace, the
//! virtual node), [`start`] brings up one plugin and one provider in-process for it,
//! [`run_cases`] runs the cases concurrently, each within [`CASE_LIMIT`], and
//! [`Running::finish`] cleans up both sides, prints the summary table and fails
//! naming every failed case.
//!
//! Case helpers: the `Suite` methods in `harness.rs` (kubectl, apply, waits,
//! remote objects) and the pure pod checks in `checks.rs` (phase, container
//! states, `expect_eq`).

mod checks;
mod harness;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, DeleteParams};

pub use checks::*;
pub use harness::LastSeen;

pub const BUSYBOX: &str = testbed::images::BUSYBOX;
pub const PAUSE: &str = testbed::images::PAUSE;
/// From `kubectl apply` to the state a case waits for: generous, the remote
/// kubelet starts ~20 pods at once on a busy 2-core machine.
pub const START: Duration = Duration::from_secs(300);
/// Per case, everything included.
pub const CASE_LIMIT: Duration = Duration::from_secs(900);
/// How often waits look at the local pod (20 cases poll at once).
pub const POLL: Duration = Duration::from_secs(1);

/// Everything the cases share.
pub struct Suite {
    pub tb: &'static testbed::Testbed,
    pub local: Client,
    pub remote: Client,
    /// The fresh local namespace every case creates its objects in.
    pub ns: String,
    /// The virtual node's name (fresh per run).
    pub node: String,
}

/// One case: runs, checks, fails with what differed.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// A case's name (for `OFFLOAD_CONFORMANCE_CASES` and the table) and its run.
pub type Case<'a> = (&'static str, CaseFuture<'a>);

/// A case's outcome: name, how long it took, result.
pub type Outcome = (&'static str, Duration, Result<()>);

/// What runs for the suite and is stopped by [`Running::finish`].
pub struct Running {
    began: Instant,
    setup: Duration,
    ns: testbed::TestNamespace,
    plugin: offload_plugin::RunningPlugin,
    provider: offload_provider::provider::RunningProvider,
}

/// Brings up the plugin (remote cluster) and the provider (local cluster) of a
/// fresh virtual node, a fresh local namespace, and waits for the node to be Ready.
pub async fn start() -> (Suite, Running) {
    crate::init_tracing("offload_provider=warn,offload_plugin=warn");
    let began = Instant::now();
    let tb = testbed::testbed().await.expect("testbed");
    let local = tb.local.client().await.expect("local client");
    let remote = tb.remote.client().await.expect("remote client");

    let plugin = offload_plugin::start(offload_plugin::PluginConfig::for_tests(), remote.clone())
        .await
        .expect("plugin starts against the remote cluster");
    assert!(
        plugin.wait_ready(Duration::from_secs(60)).await,
        "plugin: remote pod cache not synced within 60 s"
    );
    let node = testbed::namespace_name("vn-conf").expect("node name");
    let mut cfg =
        offload_provider::config::Config::for_node(&node, &format!("http://{}", plugin.addr()));
    cfg.kubelet_addr = "0.0.0.0:0".parse().expect("addr");
    cfg.admin_addr = None;
    // `kubectl logs` goes apiserver -> provider: the apiserver presents a client
    // certificate of the local cluster CA.
    cfg.client_ca_file = Some(
        tb.local
            .kubeconfig
            .parent()
            .map(|d| d.join("pki/ca.crt"))
            .unwrap_or_default(),
    );
    cfg.status_interval = Duration::from_millis(500);
    let provider = offload_provider::provider::start(cfg, local.clone(), tb.local.node_ip)
        .await
        .expect("provider starts against the local cluster");

    let ns = tb
        .local
        .test_namespace("conformance")
        .await
        .expect("local namespace");
    let suite = Suite {
        tb,
        local,
        remote,
        ns: ns.name.clone(),
        node,
    };
    suite
        .wait_node_ready()
        .await
        .expect("virtual node becomes Ready");
    let running = Running {
        began,
        setup: began.elapsed(),
        ns,
        plugin,
        provider,
    };
    (suite, running)
}

/// Runs `all` concurrently (only the ones `OFFLOAD_CONFORMANCE_CASES=a,b` names, when
/// set), each within [`CASE_LIMIT`].
pub async fn run_cases(all: Vec<Case<'_>>) -> (Vec<Outcome>, Duration) {
    let only: Option<BTreeSet<String>> = std::env::var("OFFLOAD_CONFORMANCE_CASES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let cases: Vec<_> = all
        .into_iter()
        .filter(|(name, _)| only.as_ref().is_none_or(|o| o.contains(*name)))
        .map(|(name, fut)| async move {
            let t = Instant::now();
            let r = match tokio::time::timeout(CASE_LIMIT, fut).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!(
                    "case did not finish within {}s",
                    CASE_LIMIT.as_secs()
                )),
            };
            (name, t.elapsed(), r)
        })
        .collect();
    assert!(!cases.is_empty(), "OFFLOAD_CONFORMANCE_CASES names no case");
    let cases_began = Instant::now();
    let results = futures::future::join_all(cases).await;
    (results, cases_began.elapsed())
}

impl Running {
    /// Deletes the namespace (every pod left goes through the provider: the remote
    /// side must end up empty as well), stops provider and plugin, deletes the
    /// virtual node, prints the table and fails naming every failed case.
    pub async fn finish(self, suite: &Suite, results: Vec<Outcome>, cases_took: Duration) {
        let cleanup_began = Instant::now();
        let cleanup = suite.cleanup(self.ns).await;
        self.provider.shutdown().await;
        self.plugin.shutdown().await;
        let _ = Api::<Node>::all(suite.local.clone())
            .delete(&suite.node, &DeleteParams::default())
            .await;

        let mut table = String::from("\n| case | result | seconds |\n|---|---|---:|\n");
        for (name, took, r) in &results {
            let verdict = if r.is_ok() { "pass" } else { "FAIL" };
            table.push_str(&format!(
                "| {name} | {verdict} | {:.1} |\n",
                took.as_secs_f64()
            ));
        }
        table.push_str(&format!(
            "| cleanup (namespace delete, both sides) | {} | {:.1} |\n",
            if cleanup.is_ok() { "pass" } else { "FAIL" },
            cleanup_began.elapsed().as_secs_f64()
        ));
        println!("{table}");
        println!(
            "conformance: setup {:.1}s, {} cases concurrently {:.1}s, total {:.1}s",
            self.setup.as_secs_f64(),
            results.len(),
            cases_took.as_secs_f64(),
            self.began.elapsed().as_secs_f64()
        );
        let mut failures: Vec<String> = results
            .into_iter()
            .filter_map(|(name, _, r)| r.err().map(|e| format!("{name}: {e:#}")))
            .collect();
        if let Err(e) = cleanup {
            failures.push(format!("cleanup: {e:#}"));
        }
        assert!(
            failures.is_empty(),
            "{} failed:\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}
