//! One round: N pods kept Pending remotely plus a subset that runs and exits
//! at one moment, measured from watches on both clusters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use testbed::fixtures;

use crate::observe::{self, Observed, Shared, lags, pct};
use crate::procs::{self, CountingProxy, PluginChild, metric_sum, scrape};

/// Label on each round's namespace: the bench's node (cleanup after an interruption).
pub const RUN_LABEL: &str = "offload.bench/node";

pub struct Setup<'a> {
    pub local: kube::Client,
    pub remote: kube::Client,
    pub node: String,
    pub image: String,
    pub provider_pid: u32,
    pub admin: SocketAddr,
    pub plugin: &'a PluginChild,
    pub proxy: &'a CountingProxy,
    pub changing: usize,
    pub exit_after: Duration,
    pub idle: Duration,
    pub timeout: Duration,
}

/// Cumulative counters at one moment.
#[derive(Clone, Copy, Debug)]
struct Snap {
    at: Instant,
    bytes: u64,
    plugin_calls: f64,
    local_requests: f64,
    remote_requests: u64,
    provider: procs::Usage,
    plugin: procs::Usage,
}

async fn snap(s: &Setup<'_>) -> Snap {
    let page = scrape(s.admin).await;
    Snap {
        at: Instant::now(),
        bytes: s.proxy.bytes(),
        plugin_calls: metric_sum(&page, "offload_provider_plugin_call_duration_seconds_count")
            .unwrap_or(f64::NAN),
        // Absent from a provider built before the counter existed.
        local_requests: metric_sum(&page, "offload_provider_kube_requests_total")
            .unwrap_or(f64::NAN),
        remote_requests: s.plugin.kube_requests(),
        provider: procs::usage(s.provider_pid),
        plugin: procs::usage(s.plugin.pid()),
    }
}

/// A pod the remote scheduler cannot place (it asks for 1000 CPUs): Pending
/// remotely for as long as it lives, so the remote kubelet is not measured.
fn pending_pod(name: &str, s: &Setup<'_>) -> Pod {
    let c = Container {
        image: Some(s.image.clone()),
        command: Some(vec!["sleep".into(), "3600".into()]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".into(), Quantity("1000".into()))])),
            ..Default::default()
        }),
        ..fixtures::container("main")
    };
    bench_pod(name, s, c)
}

/// A pod that runs until the wall-clock second `at`, then exits `code`.
fn changing_pod(name: &str, s: &Setup<'_>, at: u64, code: i32) -> Pod {
    let script = format!(
        "now=$(date +%s); if [ {at} -gt $now ]; then sleep $(({at} - now)); fi; exit {code}"
    );
    let c = Container {
        image: Some(s.image.clone()),
        command: Some(vec!["sh".into(), "-c".into(), script]),
        ..fixtures::container("main")
    };
    bench_pod(name, s, c)
}

fn bench_pod(name: &str, s: &Setup<'_>, c: Container) -> Pod {
    let mut p = fixtures::pod(name)
        .label("bench", "scale")
        .node(&s.node)
        .restart_policy("Never")
        .container(c)
        .tolerate_all()
        .build();
    if let Some(spec) = p.spec.as_mut() {
        spec.termination_grace_period_seconds = Some(1);
    }
    p
}

/// Waits until `done(observed)` or the round's timeout.
async fn until(s: &Setup<'_>, obs: &Shared, what: &str, done: impl Fn(&Observed) -> bool) -> bool {
    let deadline = Instant::now() + s.timeout;
    loop {
        if done(&obs.lock().unwrap_or_else(|e| e.into_inner())) {
            return true;
        }
        if Instant::now() > deadline {
            eprintln!("timed out waiting for {what}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_all(pods: &Api<Pod>, list: Vec<Pod>) -> anyhow::Result<Vec<String>> {
    let made = futures::stream::iter(list)
        .map(|p| {
            let pods = pods.clone();
            async move {
                for _ in 0..50 {
                    match pods.create(&PostParams::default(), &p).await {
                        Ok(p) => return Ok(p.metadata.uid.unwrap_or_default()),
                        // The namespace's service account is not there yet,
                        // or the apiserver (its etcd) is overloaded: again.
                        Err(kube::Error::Api(e))
                            if e.message.contains("serviceaccount")
                                || e.code >= 500
                                || e.code == 429 =>
                        {
                            tokio::time::sleep(Duration::from_millis(200)).await
                        }
                        // Already made by an attempt whose answer was lost.
                        Err(kube::Error::Api(e)) if e.code == 409 => {
                            let name = p.metadata.name.as_deref().unwrap_or_default();
                            let got = pods.get(name).await?;
                            return Ok(got.metadata.uid.unwrap_or_default());
                        }
                        Err(e) => return Err(anyhow::Error::from(e)),
                    }
                }
                bail!("namespace's service account never came")
            }
        })
        // In order: the first ones are the changing pods.
        .buffered(32)
        .collect::<Vec<_>>()
        .await;
    made.into_iter().collect()
}

fn rate(n: f64, d: Duration) -> f64 {
    n / d.as_secs_f64().max(1e-9)
}

pub async fn round(s: &Setup<'_>, n: usize) -> anyhow::Result<()> {
    let ns = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let labels = BTreeMap::from([(RUN_LABEL.to_string(), s.node.clone())]);
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(s.local.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let result = measure(s, &ns, n).await;
    if result.is_err() {
        // Nothing waits for a graceful delete on a failed round.
        let force = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        let _ = Api::<Pod>::namespaced(s.local.clone(), &ns)
            .delete_collection(&force, &ListParams::default())
            .await;
    }
    let _ = Api::<Namespace>::all(s.local.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
    // The bench's plugin has no namespace GC: its remote namespace too.
    let remote_ns = offload_plugin::naming::NamespaceMapper::new("offloading", vec![]).remote(&ns);
    let _ = Api::<Namespace>::all(s.remote.clone())
        .delete(&remote_ns, &DeleteParams::default())
        .await;
    result
}

async fn measure(s: &Setup<'_>, ns: &str, n: usize) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(s.local.clone(), ns);
    let remote_ns = offload_plugin::naming::NamespaceMapper::new("offloading", vec![]).remote(ns);
    let obs = Shared::default();
    let watches = [
        observe::spawn_watch(pods.clone(), obs.clone(), false),
        observe::spawn_watch(
            Api::namespaced(s.remote.clone(), &remote_ns),
            obs.clone(),
            true,
        ),
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = n + s.changing;
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let exit_at = (unix + s.exit_after).as_secs();
    let mut list: Vec<Pod> = (0..s.changing)
        .map(|i| changing_pod(&format!("c{i}"), s, exit_at, (i % 3) as i32))
        .collect();
    list.extend((0..n).map(|i| pending_pod(&format!("p{i}"), s)));
    let t0 = Instant::now();
    let s0 = snap(s).await;
    let uids = create_all(&pods, list).await?;
    let local_created = t0.elapsed();
    let changing: Vec<String> = uids[..s.changing].to_vec();
    let all_remote = until(s, &obs, "every remote pod", |o| {
        uids.iter()
            .all(|u| o.remote.get(u).is_some_and(|r| r.exists.is_some()))
    })
    .await;
    let remote_created = t0.elapsed();
    let s1 = snap(s).await;
    let finished = until(s, &obs, "the changing pods final locally", |o| {
        changing
            .iter()
            .all(|u| o.local.get(u).is_some_and(|l| l.finished.is_some()))
    })
    .await;
    if !finished {
        explain(s, &pods, &remote_ns, &obs, &changing).await;
    }
    let s2 = snap(s).await;
    // Idle: nothing changes any more.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let i0 = snap(s).await;
    tokio::time::sleep(s.idle).await;
    let i1 = snap(s).await;
    let t1 = Instant::now();
    // Retried: with 10,000 pods the apiserver's etcd may time out.
    let mut attempt = 0;
    while let Err(e) = pods
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
    {
        attempt += 1;
        if attempt >= 10 {
            return Err(e.into());
        }
        eprintln!("delete of the round's pods failed ({e}); again");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let all_gone = until(s, &obs, "every pod gone on both sides", |o| {
        uids.iter().all(|u| {
            o.remote.get(u).is_some_and(|r| r.gone.is_some())
                && o.local.get(u).is_some_and(|l| l.gone.is_some())
        })
    })
    .await;
    let deleted = t1.elapsed();
    for w in watches {
        w.abort();
    }
    let o = obs.lock().unwrap_or_else(|e| e.into_inner());
    let start = lags(&o, &changing, |x| x.running);
    let exit = lags(&o, &changing, |x| x.finished);
    let wrong_codes = changing
        .iter()
        .filter(|u| {
            let r = o.remote.get(*u).and_then(|x| x.exit_code);
            let l = o.local.get(*u).and_then(|x| x.exit_code);
            let wrong = r.is_none() || r != l;
            if wrong {
                eprintln!(
                    "exit code of {u}: remote {r:?} local {l:?} (remote seen {:?}, local seen {:?})",
                    o.remote.get(*u),
                    o.local.get(*u)
                );
            }
            wrong
        })
        .count();
    let idle = i1.at - i0.at;
    let mins = idle.as_secs_f64() / 60.0;
    println!(
        "pods={n} changing={} created_local_in={:.1}s remote_create_rate={:.1}/s \
         start_lag_ms p50={:.0} p99={:.0} exit_lag_ms p50={:.0} p99={:.0} (n={}) wrong_exit_codes={wrong_codes} \
         idle_bytes_per_s={:.0} idle_plugin_requests_per_s={:.2} \
         idle_cpu_s_per_min provider={:.2} plugin={:.2} \
         rss_mib provider={} plugin={} peak provider={} plugin={} \
         idle_apiserver_requests_per_s local={:.2} remote={:.2} \
         create_phase_requests local={:.0} remote={} change_phase_requests local={:.0} remote={} \
         delete_rate={:.1}/s",
        s.changing,
        local_created.as_secs_f64(),
        rate(total as f64, remote_created),
        pct(&start, 0.5),
        pct(&start, 0.99),
        pct(&exit, 0.5),
        pct(&exit, 0.99),
        exit.len(),
        rate((i1.bytes - i0.bytes) as f64, idle),
        rate(i1.plugin_calls - i0.plugin_calls, idle),
        (i1.provider.cpu_s - i0.provider.cpu_s) / mins,
        (i1.plugin.cpu_s - i0.plugin.cpu_s) / mins,
        i1.provider.rss_kib / 1024,
        i1.plugin.rss_kib / 1024,
        i1.provider.hwm_kib / 1024,
        i1.plugin.hwm_kib / 1024,
        rate(i1.local_requests - i0.local_requests, idle),
        rate((i1.remote_requests - i0.remote_requests) as f64, idle),
        s1.local_requests - s0.local_requests,
        s1.remote_requests - s0.remote_requests,
        s2.local_requests - s1.local_requests,
        s2.remote_requests - s1.remote_requests,
        rate(total as f64, deleted),
    );
    if !(all_remote && finished && all_gone) {
        bail!("round of {n} pods did not complete (see above)");
    }
    Ok(())
}

/// What the changing pods that did not end locally look like on both sides.
async fn explain(s: &Setup<'_>, pods: &Api<Pod>, remote_ns: &str, obs: &Shared, uids: &[String]) {
    let unfinished: Vec<String> = {
        let o = obs.lock().unwrap_or_else(|e| e.into_inner());
        uids.iter()
            .filter(|u| o.local.get(*u).is_none_or(|l| l.finished.is_none()))
            .cloned()
            .collect()
    };
    let state = |p: &Pod| {
        let st = p.status.as_ref();
        format!(
            "phase={:?} containers={}",
            st.and_then(|s| s.phase.clone()),
            serde_json::to_string(&st.and_then(|s| s.container_statuses.clone()))
                .unwrap_or_default()
        )
    };
    let local = pods
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let remote = Api::<Pod>::namespaced(s.remote.clone(), remote_ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    for u in unfinished {
        for p in local
            .iter()
            .filter(|p| p.metadata.uid.as_deref() == Some(&u))
        {
            eprintln!("local {:?}: {}", p.metadata.name, state(p));
        }
        let src = offload_wire::keys::LABEL_SOURCE_POD_UID;
        for p in remote
            .iter()
            .filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get(src)) == Some(&u))
        {
            eprintln!("remote {:?}: {}", p.metadata.name, state(p));
        }
    }
}
