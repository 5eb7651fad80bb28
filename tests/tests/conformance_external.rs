//! The conformance suite in external mode, as an operator runs it on their
//! clusters (`scripts/conformance`), against an installation of its own: the
//! release binaries `offload-plugin` and `offload-provider` as separate processes
//! (`offload_e2e::conformance::installation`), with their own plugin instance,
//! namespace prefix and virtual node. The suite is only given the local
//! kubeconfig, the node's name and (in one run) the remote kubeconfig; it finds
//! the remote namespace from the plugin's labels on remote pods.
//!
//! Also: the external mode's check of the node fails clearly, creating nothing.
//!
//! Run: `deploy/images/prepare-test-images.sh` (the release binaries; `scripts/test`
//! runs it), then `cargo test -p offload-e2e --test conformance_external --
//! --nocapture` (`OFFLOAD_CONFORMANCE_BIN_DIR=<dir>` takes the binaries from there).

// A few of the suite's cases; each module's other cases are not used here.
#[allow(dead_code)]
#[path = "conformance/logs.rs"]
mod logs;
#[allow(dead_code)]
#[path = "conformance/policy.rs"]
mod policy;
#[allow(dead_code)]
#[path = "conformance/process.rs"]
mod process;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, DeleteParams, PostParams};
use offload_e2e::conformance::installation::Installation;
use offload_e2e::conformance::{
    CLEANUP, Case, ExternalConfig, Report, Suite, Verdict, run_selected, start_external,
};
use offload_wire::keys;

fn cases(s: &Suite) -> Vec<Case<'_>> {
    vec![
        ("hello", Box::pin(process::hello(s))),
        ("exit-42", Box::pin(process::exit_42(s))),
        ("command-not-found", Box::pin(process::command_not_found(s))),
        ("logs-follow", Box::pin(logs::logs_follow(s))),
        ("delete", Box::pin(logs::delete_cleans_both_sides(s))),
        ("policy-refused", Box::pin(policy::refused_by_policy(s))),
    ]
}

fn config(tb: &testbed::Testbed, node: &str, remote: bool, prefix: &str) -> ExternalConfig {
    ExternalConfig {
        kubeconfig: tb.local.kubeconfig.clone(),
        node: node.into(),
        remote_kubeconfig: remote.then(|| tb.remote.kubeconfig.clone()),
        namespace_prefix: prefix.into(),
    }
}

/// Runs `names` of [`cases`] in external mode; the report and the suite's namespace.
async fn run(cfg: ExternalConfig, names: &[&str]) -> (Report, String) {
    let (suite, running) = start_external(cfg).await.expect("external mode starts");
    let only: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    let (results, took) = run_selected(cases(&suite), Some(&only)).await;
    let report = running.report(&suite, results, took).await;
    println!("{}\n{}", report.table(), report.summary);
    (report, suite.ns.clone())
}

fn verdict<'a>(report: &'a Report, name: &str) -> &'a Verdict {
    &report
        .row(name)
        .unwrap_or_else(|| panic!("no row {name} in {}", report.table()))
        .verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_installation_of_separate_processes_passes_the_suite_in_external_mode() {
    offload_e2e::init_tracing("warn");
    let tb = testbed::testbed().await.expect("testbed");
    let node = testbed::namespace_name("vn-ext").expect("node name");
    let instance = testbed::namespace_name("conf-ext").expect("instance");
    // Not the suite's nor the in-process plugin's `offloading`: the suite must
    // learn the remote namespace from the plugin's labels.
    let prefix = "confext";
    let inst = Installation::start(tb, &node, &instance, prefix)
        .await
        .expect("plugin and provider processes, node usable");

    let with_remote = [
        "hello",
        "exit-42",
        "command-not-found",
        "logs-follow",
        "delete",
        "policy-refused",
    ];
    let local_only = ["hello", "delete", "command-not-found"];
    let ((full, full_ns), (partial, partial_ns)) = tokio::join!(
        run(config(tb, &node, true, "conf-ext"), &with_remote),
        run(config(tb, &node, false, "conf-ext-local"), &local_only),
    );
    let context = format!("{}\n{}\n{}", full.table(), partial.table(), inst.logs());
    let remote_ns: Api<Namespace> = Api::all(tb.remote.client().await.expect("remote client"));
    let full_remote = remote_ns
        .get_opt(&format!("{prefix}-{full_ns}"))
        .await
        .expect("get the remote namespace");
    // That run could not delete its remote namespace (left to the plugin's GC).
    let _ = remote_ns
        .delete(&format!("{prefix}-{partial_ns}"), &DeleteParams::default())
        .await;

    with_the_remote_kubeconfig_everything_is_checked(&full, full_remote, &context);
    without_it_the_remote_checks_are_named_as_not_checked(&partial, &context);
    // Neither run touched the node.
    let nodes: Api<Node> = Api::all(tb.local.client().await.expect("local client"));
    let n = nodes
        .get(&node)
        .await
        .expect("the virtual node is still there");
    offload_e2e::conformance::check_virtual_node(&n).expect("and still usable");
    drop(inst);
}

/// Every case passed but the policy one, skipped with its reason; both sides
/// were cleaned up (`remote_ns`: the remote namespace of the run, now).
fn with_the_remote_kubeconfig_everything_is_checked(
    report: &Report,
    remote_ns: Option<Namespace>,
    context: &str,
) {
    for name in [
        "hello",
        "exit-42",
        "command-not-found",
        "logs-follow",
        "delete",
        CLEANUP,
    ] {
        assert_eq!(verdict(report, name), &Verdict::Pass, "{name}: {context}");
    }
    match verdict(report, "policy-refused") {
        Verdict::Skipped(why) => assert!(why.contains("pod security level"), "{why}"),
        v => panic!("policy-refused: {v:?}, expected skipped: {context}"),
    }
    assert!(
        remote_ns.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        "the remote namespace was not deleted: {context}"
    );
}

/// Without the remote kubeconfig the rows say what was not checked; nothing
/// passes unseen.
fn without_it_the_remote_checks_are_named_as_not_checked(report: &Report, context: &str) {
    assert_eq!(verdict(report, "hello"), &Verdict::Pass, "{context}");
    for name in ["delete", "command-not-found", CLEANUP] {
        let row = report.row(name).expect("row");
        assert_eq!(row.verdict, Verdict::PassPartly, "{name}: {context}");
        assert!(
            row.notes().contains("not checked:") && row.notes().contains("no remote kubeconfig"),
            "{name}: {}",
            row.notes()
        );
    }
    assert!(
        report.table().contains("| delete | pass, partly |"),
        "{}",
        report.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_not_a_ready_virtual_node_of_ours_is_refused_creating_nothing() {
    let tb = testbed::testbed().await.expect("testbed");
    let local = tb.local.client().await.expect("local client");
    // A Node object with our labels that no provider serves: never Ready.
    let fake = testbed::namespace_name("vn-fake").expect("name");
    let nodes: Api<Node> = Api::all(local.clone());
    let object: Node = serde_json::from_value(serde_json::json!({
        "metadata": { "name": fake, "labels": {
            "type": "virtual-kubelet", keys::LABEL_NODE_TYPE: keys::NODE_TYPE_VALUE,
        } },
    }))
    .expect("node");
    nodes
        .create(&PostParams::default(), &object)
        .await
        .expect("create the fake node");

    let prefix = testbed::namespace_name("conf-pre").expect("prefix");
    let missing = testbed::namespace_name("no-such-node").expect("name");
    let refusals = [
        (missing.as_str(), "does not exist"),
        (
            tb.local.node_name.as_str(),
            "is not a virtual node of offload-provider",
        ),
        (fake.as_str(), "is not Ready"),
    ];
    for (node, want) in refusals {
        let err = match start_external(config(tb, node, true, &prefix)).await {
            Ok(_) => panic!("node {node} accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains(want) && err.contains(node),
            "node {node}: {err}"
        );
        println!("node {node}: {err}");
    }
    let _ = nodes.delete(&fake, &DeleteParams::default()).await;
    let created: Vec<String> = Api::<Namespace>::all(local)
        .list(&Default::default())
        .await
        .expect("namespaces")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(created.is_empty(), "namespaces created: {created:?}");
}

/// `scripts/conformance` refuses what is not a complete installation to check,
/// before running anything (with valid arguments it runs the suite: by hand).
#[test]
fn the_script_refuses_incomplete_arguments() {
    let script = offload_e2e::repo_root().join("scripts/conformance");
    let missing = offload_e2e::repo_root().join("no-such-kubeconfig");
    let missing = missing.to_string_lossy();
    let cases: [(&[&str], &str); 4] = [
        (&[], "--kubeconfig PATH --node NAME"),
        (&["--node", "vn"], "--kubeconfig PATH --node NAME"),
        (&["--kubeconfig", &missing, "--node", "vn"], "cannot read"),
        (&["--node"], "--node needs a value"),
    ];
    for (args, want) in cases {
        let out = std::process::Command::new("bash")
            .arg(&script)
            .args(args)
            .env_remove("OFFLOAD_CONFORMANCE_KUBECONFIG")
            .output()
            .expect("run scripts/conformance");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}
