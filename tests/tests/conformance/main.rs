//! Offloading conformance on real pods: what a user sees with `kubectl` in the
//! local cluster when their pods run on the virtual node.
//!
//! One provider (`offload_provider::provider::start`, in-process, against the
//! local cluster) and one plugin (`offload_plugin::start`, in-process, against the
//! remote cluster) serve a virtual node with a fresh name per run; every case
//! creates its objects with `kubectl apply` in one fresh local namespace, waits
//! (API polling, once a second) and then checks phase, container states and logs
//! with the real `kubectl` (`get -o json`, `logs`, `logs -c`, `logs -f`,
//! `logs --previous`, `delete`). The remote cluster is only looked at to check
//! that deleting cleans up there too, and to compare what the remote kubelet
//! reported.
//!
//! The cases run concurrently; the summary table (case, result, seconds, notes)
//! is printed at the end, and the test fails naming every failed case.
//! `OFFLOAD_CONFORMANCE_CASES=hello,oom` runs only the named cases.
//!
//! External mode: with `OFFLOAD_CONFORMANCE_KUBECONFIG` and
//! `OFFLOAD_CONFORMANCE_NODE` (and optionally
//! `OFFLOAD_CONFORMANCE_REMOTE_KUBECONFIG`) set, as `scripts/conformance` does,
//! the same cases run against that installation's virtual node and nothing is
//! started. A case guards its checks of the remote side with
//! `s.remote_side("what")` (without the remote kubeconfig the row says what was
//! not checked) and starts with `s.in_process_only("why")?` when it needs the
//! components the in-process mode starts (skipped there, with the reason).
//! `tests/tests/conformance_external.rs` runs this mode against the release
//! binaries started as separate processes.
//!
//! The cases are grouped in the modules below; the suite (setup, runner,
//! helpers) is `offload_e2e::conformance`.
//!
//! Run: `cargo test -p offload-e2e --test conformance -- --nocapture`.

mod env;
mod events;
mod jobs;
mod kubelet;
mod lifecycle;
mod logs;
mod policy;
mod probes;
mod process;
mod stats;
mod streaming;
mod volumes;

use offload_e2e::conformance::{Case, Suite, run_cases, start};

/// Every case, with the name `OFFLOAD_CONFORMANCE_CASES` and the table use.
fn cases(s: &Suite) -> Vec<Case<'_>> {
    vec![
        ("hello", Box::pin(process::hello(s))),
        ("command-args", Box::pin(process::command_and_args(s))),
        ("env-values", Box::pin(env::env_values(s))),
        ("env-from", Box::pin(env::env_from(s))),
        ("volumes-items", Box::pin(volumes::volumes_with_items(s))),
        ("shared-emptydir", Box::pin(volumes::shared_empty_dir(s))),
        ("init-containers", Box::pin(lifecycle::init_containers(s))),
        ("init-fails", Box::pin(lifecycle::init_fails(s))),
        ("identity", Box::pin(env::pod_identity(s))),
        ("missing-configmap", Box::pin(env::missing_config_map(s))),
        ("binary-data", Box::pin(volumes::binary_data(s))),
        ("active-deadline", Box::pin(lifecycle::active_deadline(s))),
        ("projected", Box::pin(volumes::projected_volume(s))),
        ("liveness", Box::pin(probes::liveness_probe(s))),
        ("readiness", Box::pin(probes::readiness_probe(s))),
        ("startup", Box::pin(probes::startup_probe(s))),
        ("hooks", Box::pin(lifecycle::lifecycle_hooks(s))),
        (
            "default-entrypoint",
            Box::pin(process::default_entrypoint(s)),
        ),
        ("args-only", Box::pin(process::args_only(s))),
        ("exit-42", Box::pin(process::exit_42(s))),
        ("command-not-found", Box::pin(process::command_not_found(s))),
        ("oom", Box::pin(lifecycle::oom_killed(s))),
        ("job-backoff", Box::pin(jobs::job_backoff_limit(s))),
        ("job-complete", Box::pin(jobs::job_completions(s))),
        ("crashloop", Box::pin(lifecycle::crash_loop(s))),
        ("logs-follow", Box::pin(logs::logs_follow(s))),
        ("delete", Box::pin(logs::delete_cleans_both_sides(s))),
        ("policy-refused", Box::pin(policy::refused_by_policy(s))),
        ("stats", Box::pin(stats::stats_of_a_busy_pod(s))),
        ("remote-events", Box::pin(events::remote_events(s))),
        (
            "logs-unstarted",
            Box::pin(kubelet::logs_of_unstarted_container(s)),
        ),
        (
            "logs-waiting",
            Box::pin(kubelet::logs_while_waiting_for_config(s)),
        ),
        ("status-order", Box::pin(kubelet::sidecar_status_order(s))),
        (
            "image-pull-secrets",
            Box::pin(kubelet::image_pull_secrets(s)),
        ),
        ("exec-cp", Box::pin(streaming::exec_and_cp(s))),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offloaded_pods_behave_like_local_pods() {
    let (suite, running) = start().await;
    let (results, cases_took) = run_cases(cases(&suite)).await;
    running.finish(&suite, results, cases_took).await;
}
