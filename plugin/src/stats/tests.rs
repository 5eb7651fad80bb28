use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use offload_wire::{
    keys,
    stats::{ContainerStats, CpuStats, MemoryStats, PodReference, PodStats, Summary},
};
use pretty_assertions::assert_eq;

use super::{NodeCache, cache::NodeStatsError, local_stats, owned_identity};

const UID: &str = "6f1c1f1e-0000-4000-8000-000000000001";

fn local() -> PodReference {
    PodReference {
        name: "busy".into(),
        namespace: "team-a".into(),
        uid: UID.into(),
    }
}

fn remote_pod(caller: &str, instance: &str) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some("busy-6f1c1f1e".into());
    p.metadata.namespace = Some("offloading-team-a".into());
    p.metadata.uid = Some("remote-uid-1".into());
    p.metadata.labels = Some(BTreeMap::from([
        (
            keys::LABEL_MANAGED_BY.into(),
            keys::MANAGED_BY_PLUGIN.into(),
        ),
        (keys::LABEL_SOURCE_POD_UID.into(), UID.into()),
        (keys::LABEL_PLUGIN_INSTANCE.into(), instance.into()),
        (keys::LABEL_CALLER.into(), caller.into()),
    ]));
    p.metadata.annotations = Some(BTreeMap::from([
        (keys::ANNOTATION_SOURCE_NAME.into(), "busy".into()),
        (keys::ANNOTATION_SOURCE_NAMESPACE.into(), "team-a".into()),
        (keys::ANNOTATION_SOURCE_UID.into(), UID.into()),
    ]));
    p
}

#[test]
fn only_this_instances_pods_of_this_caller_are_owned() {
    let p = remote_pod("c1", "inst");
    assert_eq!(owned_identity(&p, "c1", "inst"), Some(local()));
    assert_eq!(owned_identity(&p, "c2", "inst"), None, "another caller's");
    assert_eq!(
        owned_identity(&p, "c1", "other"),
        None,
        "another instance's"
    );
    let mut foreign = p.clone();
    if let Some(l) = foreign.metadata.labels.as_mut() {
        l.remove(keys::LABEL_MANAGED_BY);
    }
    assert_eq!(owned_identity(&foreign, "c1", "inst"), None, "not managed");
    let mut no_caller = p.clone();
    if let Some(l) = no_caller.metadata.labels.as_mut() {
        l.remove(keys::LABEL_CALLER);
    }
    assert_eq!(owned_identity(&no_caller, "c1", "inst"), None);
    // Annotations that name another UID than the label: not this pod's.
    let mut lying = p;
    if let Some(a) = lying.metadata.annotations.as_mut() {
        a.insert(keys::ANNOTATION_SOURCE_UID.into(), "someone-else".into());
    }
    assert_eq!(owned_identity(&lying, "c1", "inst"), None);
}

fn kubelet_summary() -> Summary {
    let figures = |ns: u64| ContainerStats {
        name: "main".into(),
        start_time: None,
        cpu: Some(CpuStats {
            time: None,
            usage_nano_cores: Some(ns),
            usage_core_nano_seconds: Some(ns * 10),
        }),
        memory: Some(MemoryStats {
            working_set_bytes: Some(4096),
            ..Default::default()
        }),
    };
    let pod = |name: &str, ns: &str, uid: &str, cores: u64| PodStats {
        pod_ref: PodReference {
            name: name.into(),
            namespace: ns.into(),
            uid: uid.into(),
        },
        containers: vec![figures(cores)],
        ..Default::default()
    };
    Summary {
        node: Default::default(),
        pods: vec![
            pod("other", "tenant-b", "x", 1),
            pod("busy-6f1c1f1e", "offloading-team-a", "remote-uid-1", 7),
        ],
    }
}

#[test]
fn a_remote_pods_figures_are_renamed_for_the_local_pod() {
    let s = kubelet_summary();
    let got = local_stats(&s, &remote_pod("c", "i"), local()).expect("found");
    assert_eq!(got.pod_ref, local());
    assert_eq!(got.containers[0].name, "main");
    assert_eq!(got.cpu.and_then(|c| c.usage_core_nano_seconds), Some(70));
    assert_eq!(got.memory.and_then(|m| m.working_set_bytes), Some(4096));
    // Recreated under the same name: not the pod we know.
    let mut recreated = remote_pod("c", "i");
    recreated.metadata.uid = Some("remote-uid-2".into());
    assert_eq!(local_stats(&s, &recreated, local()), None);
}

#[tokio::test]
async fn one_read_per_node_and_ttl_whatever_the_callers() {
    let cache = Arc::new(NodeCache::new(Duration::from_millis(300)));
    let reads = Arc::new(AtomicUsize::new(0));
    let fetch = |reads: Arc<AtomicUsize>| async move {
        reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, NodeStatsError>(kubelet_summary())
    };
    let many = (0..20).map(|_| {
        let (cache, reads) = (cache.clone(), reads.clone());
        async move { cache.get("n1", || fetch(reads)).await }
    });
    let results = futures::future::join_all(many).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(reads.load(Ordering::SeqCst), 1, "20 callers, one read");
    cache.get("n2", || fetch(reads.clone())).await.expect("n2");
    assert_eq!(
        reads.load(Ordering::SeqCst),
        2,
        "another node, another read"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    cache.get("n1", || fetch(reads.clone())).await.expect("n1");
    assert_eq!(reads.load(Ordering::SeqCst), 3, "read again after the TTL");

    // Failures are cached too.
    let fail = |reads: Arc<AtomicUsize>| async move {
        reads.fetch_add(1, Ordering::SeqCst);
        Err::<Summary, _>(NodeStatsError::other("r", "d"))
    };
    let before = reads.load(Ordering::SeqCst);
    for _ in 0..3 {
        let e = cache.get("bad", || fail(reads.clone())).await;
        assert_eq!(e.map(|_| ()).map_err(|e| e.reason), Err("r".to_string()));
    }
    assert_eq!(reads.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn a_refusal_is_kept_longer_than_other_failures() {
    let cache = NodeCache::new(Duration::from_millis(50));
    let reads = AtomicUsize::new(0);
    let refuse = || async {
        reads.fetch_add(1, Ordering::SeqCst);
        Err::<Summary, _>(NodeStatsError {
            reason: "forbidden".into(),
            detail: "403".into(),
            forbidden: true,
        })
    };
    assert!(cache.get("n", refuse).await.is_err());
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(cache.get("n", refuse).await.is_err());
    assert_eq!(
        reads.load(Ordering::SeqCst),
        1,
        "not asked again after the TTL"
    );
}
