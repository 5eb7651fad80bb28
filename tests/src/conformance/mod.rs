//! The conformance suite's machinery (the cases are in `tests/tests/conformance/`):
//! [`Suite`] is what every case gets (clients, the fresh local namespace, the
//! virtual node), [`start`] brings up one plugin and one provider in-process for it
//! or, when `OFFLOAD_CONFORMANCE_KUBECONFIG` and `OFFLOAD_CONFORMANCE_NODE` are set,
//! checks an existing installation's virtual node instead ([`start_external`],
//! [`ExternalConfig`]), [`run_cases`] runs the cases concurrently, each within
//! [`CASE_LIMIT`], and [`Running::finish`] cleans up both sides, prints the summary
//! table and fails naming every failed case.
//!
//! Two modes ([`Mode`]):
//! - in-process (the default, `cargo test --test conformance`): the suite starts the
//!   plugin and provider of a fresh virtual node on the testbed and stops them;
//! - external (`scripts/conformance --kubeconfig PATH --node NAME
//!   [--remote-kubeconfig PATH]`): the suite starts nothing and touches nothing but
//!   the fresh namespace it creates (and, given the remote kubeconfig, the remote
//!   namespace the plugin made for it); it first checks that the node exists, is
//!   Ready and is a virtual node of ours. Without the remote kubeconfig, checks of
//!   the remote side do not run and the table says so per case
//!   ([`Suite::remote_side`]); cases that need the in-process components are skipped
//!   with their reason ([`Suite::in_process_only`]). Never a silent pass.
//!
//! Case helpers: the `Suite` methods in `harness.rs` (kubectl, apply, waits,
//! remote objects) and the pure pod checks in `checks.rs` (phase, container
//! states, `expect_eq`).

mod checks;
mod external;
mod harness;
pub mod installation;
mod report;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, DeleteParams};

pub use checks::*;
pub use external::{ExternalConfig, check_virtual_node, start_external};
pub use harness::LastSeen;
pub use report::{CLEANUP, Report, Row, Skipped, Verdict};

pub const BUSYBOX: &str = testbed::images::BUSYBOX;
pub const PAUSE: &str = testbed::images::PAUSE;
/// From `kubectl apply` to the state a case waits for: generous, the remote
/// kubelet starts ~20 pods at once on a busy 2-core machine.
pub const START: Duration = Duration::from_secs(300);
/// Per case, everything included.
pub const CASE_LIMIT: Duration = Duration::from_secs(900);
/// How often waits look at the local pod (20 cases poll at once).
pub const POLL: Duration = Duration::from_secs(1);

/// How the suite reaches the installation it checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The suite started the plugin and provider itself (testbed only).
    InProcess,
    /// An existing installation, given by a kubeconfig and a node name; `remote`
    /// says whether the remote cluster's kubeconfig was given too.
    External { remote: bool },
}

/// Everything the cases share.
pub struct Suite {
    /// The clusters' kubeconfigs: the testbed's in-process; in external mode the
    /// given ones (`node_name` is then the virtual node, `node_ip` its address).
    pub tb: &'static testbed::Testbed,
    pub local: Client,
    /// The remote cluster; in external mode without a remote kubeconfig, a client
    /// whose every call fails saying so (guard remote checks with
    /// [`Suite::remote_side`]).
    pub remote: Client,
    /// The fresh local namespace every case creates its objects in.
    pub ns: String,
    /// The virtual node's name (fresh per run in-process, the given one external).
    pub node: String,
    pub mode: Mode,
    /// Remote namespaces seen holding pods of [`Suite::ns`] (from the plugin's
    /// labels and annotations on remote pods), deleted at the end.
    remote_namespaces: Mutex<BTreeSet<String>>,
}

/// One case: runs, checks, fails with what differed.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// A case's name (for `OFFLOAD_CONFORMANCE_CASES` and the table) and its run.
pub type Case<'a> = (&'static str, CaseFuture<'a>);

/// A case's outcome: name, how long it took, result, and what it could not check
/// (see [`Suite::remote_side`]).
pub struct Outcome {
    pub name: &'static str,
    pub took: Duration,
    pub result: Result<()>,
    pub not_checked: Vec<String>,
}

tokio::task_local! {
    /// What the running case could not check; set by [`run_selected`] per case.
    static NOT_CHECKED: Arc<Mutex<Vec<String>>>;
}

/// What runs for the suite and is stopped by [`Running::finish`].
pub struct Running {
    began: Instant,
    setup: Duration,
    ns: testbed::TestNamespace,
    /// The in-process plugin and provider; `None` in external mode (nothing to stop).
    components: Option<InProcess>,
}

struct InProcess {
    plugin: offload_plugin::RunningPlugin,
    provider: offload_provider::provider::RunningProvider,
}

/// Starts the suite: external mode when `OFFLOAD_CONFORMANCE_KUBECONFIG` and
/// `OFFLOAD_CONFORMANCE_NODE` are set ([`ExternalConfig::from_env`]), else the
/// in-process plugin and provider on the testbed. Panics saying what is wrong.
pub async fn start() -> (Suite, Running) {
    match ExternalConfig::from_env() {
        Ok(Some(cfg)) => start_external(cfg)
            .await
            .unwrap_or_else(|e| panic!("conformance (external mode): {e:#}")),
        Ok(None) => start_in_process().await,
        Err(e) => panic!("conformance: {e:#}"),
    }
}

/// Brings up the plugin (remote cluster) and the provider (local cluster) of a
/// fresh virtual node, a fresh local namespace, and waits for the node to be Ready.
pub async fn start_in_process() -> (Suite, Running) {
    crate::init_tracing("offload_provider=warn,offload_plugin=warn");
    let began = Instant::now();
    let tb = testbed::testbed().await.expect("testbed");
    let local = tb.local.client().await.expect("local client");
    let remote = tb.remote.client().await.expect("remote client");

    let plugin_cfg = offload_plugin::PluginConfig::for_tests();
    let mapper = plugin_cfg.namespaces();
    let plugin = offload_plugin::start(plugin_cfg, remote.clone())
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
    let suite = Suite::new(tb, local, remote, ns.name.clone(), node, Mode::InProcess);
    // The in-process plugin's mapping, in case no pod is left to name it.
    suite.saw_remote_namespace(mapper.remote(&suite.ns));
    suite
        .wait_node_ready()
        .await
        .expect("virtual node becomes Ready");
    let running = Running {
        began,
        setup: began.elapsed(),
        ns,
        components: Some(InProcess { plugin, provider }),
    };
    (suite, running)
}

impl Suite {
    fn new(
        tb: &'static testbed::Testbed,
        local: Client,
        remote: Client,
        ns: String,
        node: String,
        mode: Mode,
    ) -> Suite {
        Suite {
            tb,
            local,
            remote,
            ns,
            node,
            mode,
            remote_namespaces: Mutex::default(),
        }
    }

    /// Whether the suite checks an existing installation (started nothing).
    pub fn external(&self) -> bool {
        matches!(self.mode, Mode::External { .. })
    }

    /// Whether the remote cluster can be looked at.
    pub fn has_remote(&self) -> bool {
        !matches!(self.mode, Mode::External { remote: false })
    }

    /// Guards a check of the remote side: true when the remote cluster can be
    /// looked at; else records that `what` was not checked (the table shows it on
    /// the case's row) and returns false.
    pub fn remote_side(&self, what: &str) -> bool {
        if self.has_remote() {
            return true;
        }
        not_checked(format!("{what} (no remote kubeconfig)"));
        false
    }

    /// Fails with [`Skipped`] in external mode: the case needs the in-process
    /// components (`why` says what of them), so it is skipped there, with `why`
    /// in the table.
    pub fn in_process_only(&self, why: &str) -> Result<()> {
        if self.external() {
            return Err(Skipped(why.to_string()).into());
        }
        Ok(())
    }

    fn saw_remote_namespace(&self, ns: String) {
        if let Ok(mut seen) = self.remote_namespaces.lock() {
            seen.insert(ns);
        }
    }
}

/// Records, for the case running on this task, that `what` was not checked.
pub fn not_checked(what: String) {
    let recorded = NOT_CHECKED.try_with(|n| {
        if let Ok(mut n) = n.lock() {
            n.push(what.clone());
        }
    });
    if recorded.is_err() {
        eprintln!("conformance: not checked (outside a case): {what}");
    }
}

/// Runs `all` concurrently (only the ones `OFFLOAD_CONFORMANCE_CASES=a,b` names, when
/// set), each within [`CASE_LIMIT`].
pub async fn run_cases(all: Vec<Case<'_>>) -> (Vec<Outcome>, Duration) {
    let only: Option<BTreeSet<String>> = std::env::var("OFFLOAD_CONFORMANCE_CASES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    run_selected(all, only.as_ref()).await
}

/// Runs the cases of `all` that `only` names (all when `None`) concurrently, each
/// within [`CASE_LIMIT`]. Panics when `only` names an unknown case or none.
pub async fn run_selected(
    all: Vec<Case<'_>>,
    only: Option<&BTreeSet<String>>,
) -> (Vec<Outcome>, Duration) {
    if let Some(only) = only {
        let known: BTreeSet<&str> = all.iter().map(|(n, _)| *n).collect();
        let unknown: Vec<&String> = only
            .iter()
            .filter(|n| !known.contains(n.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "unknown case(s) {unknown:?}; the cases are: {}",
            known.into_iter().collect::<Vec<_>>().join(",")
        );
    }
    let cases: Vec<_> = all
        .into_iter()
        .filter(|(name, _)| only.is_none_or(|o| o.contains(*name)))
        .map(|(name, fut)| async move {
            let notes = Arc::new(Mutex::new(Vec::new()));
            let t = Instant::now();
            let limited = tokio::time::timeout(CASE_LIMIT, fut);
            let result = match NOT_CHECKED.scope(notes.clone(), limited).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!(
                    "case did not finish within {}s",
                    CASE_LIMIT.as_secs()
                )),
            };
            let not_checked = notes.lock().map(|n| n.clone()).unwrap_or_default();
            Outcome {
                name,
                took: t.elapsed(),
                result,
                not_checked,
            }
        })
        .collect();
    assert!(!cases.is_empty(), "OFFLOAD_CONFORMANCE_CASES names no case");
    let cases_began = Instant::now();
    let results = futures::future::join_all(cases).await;
    (results, cases_began.elapsed())
}

impl Running {
    /// Deletes the namespace (every pod left goes through the provider: the remote
    /// side must end up empty as well), stops provider and plugin (in-process),
    /// deletes the virtual node (in-process only), prints the table and fails
    /// naming every failed case.
    pub async fn finish(self, suite: &Suite, results: Vec<Outcome>, cases_took: Duration) {
        let report = self.report(suite, results, cases_took).await;
        println!("{}", report.table());
        println!("{}", report.summary);
        let failures = report.failures();
        assert!(
            failures.is_empty(),
            "{} failed:\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }

    /// [`Running::finish`] without printing or failing: cleans up and returns the
    /// table's rows.
    pub async fn report(
        self,
        suite: &Suite,
        results: Vec<Outcome>,
        cases_took: Duration,
    ) -> Report {
        let cleanup_began = Instant::now();
        let cleanup = suite.clean_up(self.ns).await;
        if let Some(c) = self.components {
            c.provider.shutdown().await;
            c.plugin.shutdown().await;
            let _ = Api::<Node>::all(suite.local.clone())
                .delete(&suite.node, &DeleteParams::default())
                .await;
        }
        let mut rows: Vec<Row> = results.into_iter().map(Row::from).collect();
        rows.push(Row::cleanup(cleanup_began.elapsed(), cleanup));
        let summary = format!(
            "conformance ({}): setup {:.1}s, {} cases concurrently {:.1}s, total {:.1}s",
            report::describe_mode(suite),
            self.setup.as_secs_f64(),
            rows.len() - 1,
            cases_took.as_secs_f64(),
            self.began.elapsed().as_secs_f64()
        );
        Report { rows, summary }
    }
}
